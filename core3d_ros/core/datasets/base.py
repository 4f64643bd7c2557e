"""Common interface of RGB-D sequence readers, shared file helpers, and the registry of formats
that picks a reader by name or by detection (``open_dataset``).

Every reader yields :class:`~core3d_ros.core.frame.Frame` objects in the project conventions:
colour HxWx3 uint8 RGB, depth HxW float32 metres (0 = invalid) decoded with
:func:`~core3d_ros.core.camera.decode_depth`, pose 4x4 float64 camera-to-world in OpenCV optical
axes, ``stamp`` in seconds and ``index`` = position in the (strided, truncated) dataset.

A damaged or missing file of one frame raises :class:`DatasetError` naming the file, so callers
can skip the frame and count it (see :func:`iter_frames`). A folder that matches no known
format also raises :class:`DatasetError`.

Each reader registers itself (``register_dataset``) with a ``detect(path)`` predicate; the
package's ``__init__`` imports the readers, so this module imports none of them.

Integer depth units per metre are a property of each format (7-Scenes and ScanNet millimetres,
TUM 5000, Replica 6553.5), so readers take only ``min_depth``/``max_depth`` from the
:class:`~core3d_ros.config.DepthConfig` they are given.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from ...config import DepthConfig
from ..camera import CameraIntrinsics, DepthError, decode_depth
from ..frame import Frame
from ..registry import Registry
from ..transforms import pose_matrix


class DatasetError(ValueError):
    """A dataset folder or one of its files cannot be used. ``path`` names the culprit."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


@runtime_checkable
class Dataset(Protocol):
    """A finite, random-access sequence of RGB-D frames sharing one camera."""

    name: str
    intrinsics: CameraIntrinsics

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Frame: ...


def iter_frames(dataset: Dataset, errors: list[DatasetError] | None = None) -> Iterator[Frame]:
    """Iterate over a dataset, skipping frames whose files are damaged.

    Each skipped frame's :class:`DatasetError` is appended to ``errors`` when given.
    """
    for i in range(len(dataset)):
        try:
            frame = dataset[i]
        except DatasetError as e:
            if errors is not None:
                errors.append(e)
            continue
        yield frame


# --------------------------------------------------------------------------------------------
# File helpers: every failure becomes a DatasetError naming the file.


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"missing file: {path}", path) from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}", path) from None
    if data.size == 0:
        raise DatasetError(f"empty file: {path}", path)
    return data


def read_color(path: str | Path) -> np.ndarray:
    """Read a colour image as HxWx3 uint8 RGB (grey and 16-bit images are converted)."""
    path = Path(path)
    data = _read_bytes(path)
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        # libjpeg decodes a truncated file with a grey tail and only a warning.
        raise DatasetError(f"truncated JPEG file: {path}", path)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot decode image {path}", path)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DatasetError(f"unsupported colour image type {img.dtype} in {path}", path)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise DatasetError(f"unsupported colour image with {img.shape[2]} channels: {path}", path)


def read_depth_raw(path: str | Path) -> np.ndarray:
    """Read a 16-bit single-channel depth PNG as a uint16 array."""
    path = Path(path)
    data = _read_bytes(path)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot decode depth image {path}", path)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise DatasetError(
            f"depth image must be single-channel uint16, got {img.dtype} shape {img.shape}: {path}", path
        )
    return img


def read_depth(path: str | Path, scale: float, depth: DepthConfig) -> np.ndarray:
    """Read and decode a uint16 depth PNG to float32 metres (0 = invalid)."""
    raw = read_depth_raw(path)
    try:
        return decode_depth(raw, "16UC1", depth_scale=scale, min_depth=depth.min_depth, max_depth=depth.max_depth)
    except DepthError as e:  # pragma: no cover - read_depth_raw already checked the type
        raise DatasetError(f"{path}: {e}", path) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file (decodes it)."""
    data = _read_bytes(Path(path))
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot decode image {path}", path)
    return int(img.shape[1]), int(img.shape[0])


def read_numbers(path: str | Path) -> np.ndarray:
    """All whitespace/comma separated numbers of a text file, as float64 (``#`` comments skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise DatasetError(f"missing file: {path}", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}", path) from None
    values: list[float] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].replace(",", " ").strip()
        for tok in line.split():
            try:
                values.append(float(tok))
            except ValueError:
                raise DatasetError(f"not a number {tok!r} in {path}", path) from None
    return np.asarray(values, dtype=np.float64)


def read_matrix(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A fixed-shape matrix stored as text (row-major)."""
    values = read_numbers(path)
    n = shape[0] * shape[1]
    if values.size != n:
        raise DatasetError(f"expected {n} numbers ({shape[0]}x{shape[1]} matrix), found {values.size}: {path}", path)
    return values.reshape(shape)


def checked_pose(pose: np.ndarray, path: str | Path, tol: float = 1e-2) -> np.ndarray:
    """Validate a camera-to-world pose read from ``path``.

    Raises DatasetError for non-finite values (ScanNet marks lost tracking with ``-inf``), a
    wrong last row or a rotation far from orthonormal; small numerical drift (< ``tol``) is
    removed by projecting the rotation onto SO(3).
    """
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4):
        raise DatasetError(f"pose must be 4x4, got {pose.shape}: {path}", path)
    if not np.all(np.isfinite(pose)):
        raise DatasetError(f"invalid pose (inf/NaN): {path}", path)
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise DatasetError(f"pose last row must be 0 0 0 1: {path}", path)
    R = pose[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or np.linalg.det(R) <= 0:
        raise DatasetError(f"pose rotation is not a rotation matrix: {path}", path)
    U, _, Vt = np.linalg.svd(R)
    out = np.eye(4)
    out[:3, :3] = U @ Vt
    out[:3, 3] = pose[:3, 3]
    return out


def quaternion_pose(t: Sequence[float], q_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 transform from a translation and a quaternion (x, y, z, w); TransformError (a
    ValueError) when either is not finite or the quaternion is zero."""
    return pose_matrix(t, q_xyzw)


# --------------------------------------------------------------------------------------------
# A base class for folder readers: a list of per-frame records, selected by stride/max_frames.


@dataclass(frozen=True)
class FrameRecord:
    """Files of one frame. ``number`` is its position in the original sequence."""

    number: int
    color: Path
    depth: Path
    pose: Any  # a Path to a pose file, or an already parsed 4x4 array
    stamp: float


class FolderDataset:
    """Shared machinery of the folder readers (subclasses fill ``records`` and ``intrinsics``)."""

    kind = ""
    # World up where the format defines it (None: it does not; core/hierarchy/up.py estimates it).
    up: tuple[float, float, float] | None = None
    depth_scale = 1000.0  # raw integer units per metre of this format
    pose_source: Path | None = None  # file named in errors about poses parsed up front

    name: str
    intrinsics: CameraIntrinsics

    def __init__(
        self,
        root: str | Path,
        depth: DepthConfig | None = None,
        max_frames: int | None = None,
        stride: int = 1,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder does not exist: {self.root}", self.root)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        self.depth_config = depth if depth is not None else DepthConfig()
        self.stride = int(stride)
        self.max_frames = max_frames
        self.name = self.root.name
        self.records: list[FrameRecord] = []

    def _select(self, records: list[FrameRecord]) -> list[FrameRecord]:
        records = records[:: self.stride]
        if self.max_frames is not None:
            records = records[: self.max_frames]
        return records

    def __len__(self) -> int:
        return len(self.records)

    def _record(self, i: int) -> FrameRecord:
        n = len(self.records)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} out of range for {n} frames")
        return self.records[i % n]

    def pose(self, i: int) -> np.ndarray:
        """Camera-to-world pose of frame ``i`` without reading its images."""
        rec = self._record(i)
        if isinstance(rec.pose, Path):
            return checked_pose(read_matrix(rec.pose, (4, 4)), rec.pose)
        return checked_pose(rec.pose, self.pose_source or rec.depth)

    def stamp(self, i: int) -> float:
        return self._record(i).stamp

    def _load_color(self, rec: FrameRecord, shape: tuple[int, int]) -> np.ndarray:
        rgb = read_color(rec.color)
        if rgb.shape[:2] != shape:
            raise DatasetError(
                f"colour image {rgb.shape[1]}x{rgb.shape[0]} does not match depth {shape[1]}x{shape[0]}: {rec.color}",
                rec.color,
            )
        return rgb

    def __getitem__(self, i: int) -> Frame:
        i = int(i)
        rec = self._record(i)
        index = i % len(self.records)
        pose = self.pose(index)  # first: cheap, and lost-tracking frames skip the image decoding
        depth = read_depth(rec.depth, self.depth_scale, self.depth_config)
        expected = (self.intrinsics.height, self.intrinsics.width)
        if depth.shape != expected:
            raise DatasetError(
                f"depth image {depth.shape[1]}x{depth.shape[0]} does not match the camera "
                f"{expected[1]}x{expected[0]}: {rec.depth}",
                rec.depth,
            )
        rgb = self._load_color(rec, depth.shape)
        return Frame(rgb=rgb, depth=depth, intrinsics=self.intrinsics, pose=pose, stamp=float(rec.stamp), index=index)

    def _size_from_first_depth(self, records: list[FrameRecord]) -> tuple[int, int]:
        """(width, height) from the first readable depth image among ``records``."""
        last: DatasetError | None = None
        for rec in records[:10]:
            try:
                d = read_depth_raw(rec.depth)
                return int(d.shape[1]), int(d.shape[0])
            except DatasetError as e:
                last = e
        if last is None:
            raise DatasetError(f"no frames found in {self.root}", self.root)
        raise DatasetError(f"cannot determine the image size of {self.root}: {last}", self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, frames={len(self)})"


# --------------------------------------------------------------------------------------------
# The formats by name, detection and the single entry point.

DatasetFactory = Callable[..., Dataset]  # (path, depth=, max_frames=, stride=[, sequence=]) -> Dataset

DATASETS: Registry[DatasetFactory] = Registry("dataset kind", "--kind", error=DatasetError, also=("auto",))


def register_dataset(
    name: str, *, detect: Callable[[Path], bool], order: int, layout: str = "", sequences: bool = False
) -> Callable[[DatasetFactory], DatasetFactory]:
    """Register a reader (a class or function taking ``path, depth=, max_frames=, stride=``).

    ``detect(path)`` says whether ``path`` holds this format; detection tries the readers by
    ``order``, lowest first. ``layout`` describes the folder for the error when none matches.
    ``sequences``: the reader also takes ``sequence=`` (one sequence of a scene folder).
    """
    return DATASETS.register(name, detect=detect, order=order, layout=layout, sequences=sequences)


def _by_order() -> list[str]:
    return sorted(DATASETS.names(), key=lambda name: DATASETS.info(name)["order"])


def detect_format(path: str | Path) -> str:
    """Name of the dataset format at ``path`` (see ``DATASETS``: 7scenes, tum, ..., synthetic)."""
    p = Path(path)
    for name in _by_order():
        if DATASETS.info(name)["detect"](p):
            return name
    if not p.exists():
        raise DatasetError(f"dataset path does not exist: {p}", p)
    if not p.is_dir():
        raise DatasetError(f"dataset path is not a folder: {p}", p)
    layouts = [DATASETS.info(name)["layout"] for name in _by_order() if DATASETS.info(name)["layout"]]
    expected = ", ".join(layouts[:-1]) + f" or {layouts[-1]}" if len(layouts) > 1 else "".join(layouts)
    raise DatasetError(f"{p} matches no known dataset format: expected {expected}", p)


def open_dataset(
    path: str | Path,
    kind: str = "auto",
    depth: DepthConfig | None = None,
    max_frames: int | None = None,
    stride: int = 1,
    sequence: str | None = None,
) -> Dataset:
    """Open an RGB-D sequence.

    ``kind`` is ``auto`` (detect) or a registered name: ``7scenes``, ``3dmatch``, ``tum``,
    ``replica``, ``scannet`` or ``synthetic`` (``path`` then is ``synthetic`` or
    ``synthetic:SEED``); an unknown one is a DatasetError listing them. ``stride`` keeps every
    n-th frame, then ``max_frames`` truncates. ``sequence`` picks one ``seq-NN`` folder of a
    3DMatch (or 7-Scenes) scene folder; a scene with several sequences and none chosen is a
    DatasetError naming them.
    """
    if kind == "auto":
        kind = detect_format(path)
    reader = DATASETS.get(kind)
    if sequence is None:
        return reader(path, depth=depth, max_frames=max_frames, stride=stride)
    if not DATASETS.info(kind)["sequences"]:
        raise DatasetError(f"a sequence ({sequence!r}) can only be chosen in a 3DMatch scene folder, not in a {kind} dataset")
    return reader(path, depth=depth, max_frames=max_frames, stride=stride, sequence=sequence)
