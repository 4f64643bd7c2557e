"""TUM RGB-D benchmark sequences.

Layout::

    rgb.txt           "timestamp rgb/<stamp>.png" per line, '#' comments
    depth.txt         "timestamp depth/<stamp>.png"
    groundtruth.txt   "timestamp tx ty tz qx qy qz qw" (pose of the colour camera's optical
                      centre in the world, i.e. camera-to-world in OpenCV axes)
    rgb/, depth/      images; depth uint16 with 5000 units per metre

Colour, depth and pose are associated by nearest time stamp (one-to-one, within
``max_time_diff`` = 0.02 s); colour frames without both partners are dropped and counted in
``unmatched``. Each frame is stamped with its colour time stamp.

Intrinsics: the ROS default fx = fy = 525, cx = 319.5, cy = 239.5 (which the benchmark documents
for its registered depth), unless a camera file is present in the folder: ``camera.txt``,
``intrinsics.txt``, ``calibration.txt`` or ``camera-intrinsics.txt`` holding either
"fx fy cx cy [d0 d1 d2 d3 d4]" or a 3x3 K matrix. Lens distortion is not removed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import DepthConfig
from ..camera import CameraIntrinsics
from .base import DatasetError, FolderDataset, FrameRecord, quaternion_pose, read_numbers, register_dataset

CAMERA_FILES = ("camera.txt", "intrinsics.txt", "calibration.txt", "camera-intrinsics.txt")
DEFAULT_INTRINSICS = (525.0, 525.0, 319.5, 239.5)


def is_tum(path: Path) -> bool:
    return (path / "rgb.txt").is_file() and (path / "depth.txt").is_file()


def read_file_list(path: Path) -> list[tuple[float, list[str]]]:
    """Parse a TUM list file: (timestamp, remaining fields) per non-comment line, sorted by time."""
    if not path.is_file():
        raise DatasetError(f"missing file: {path}", path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}", path) from None
    out = []
    for lineno, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        fields = line.split()
        try:
            t = float(fields[0])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: bad time stamp {fields[0]!r}", path) from None
        out.append((t, fields[1:]))
    out.sort(key=lambda item: item[0])
    return out


def associate(a: np.ndarray, b: np.ndarray, max_diff: float) -> list[tuple[int, int]]:
    """One-to-one nearest-time matching of two stamp arrays (greedy by time difference).

    Returns index pairs (i into ``a``, j into ``b``) with |a[i] - b[j]| <= max_diff, sorted by i.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return []
    order = np.argsort(b)
    bs = b[order]
    candidates = []
    for i, t in enumerate(a):
        k = int(np.searchsorted(bs, t))
        for kk in range(max(0, k - 2), min(len(bs), k + 2)):
            d = abs(bs[kk] - t)
            if d <= max_diff:
                candidates.append((d, i, int(order[kk])))
    candidates.sort()
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs = []
    for _, i, j in candidates:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j))
    pairs.sort()
    return pairs


def nearest(a: np.ndarray, b: np.ndarray, max_diff: float) -> np.ndarray:
    """For each stamp in ``a`` the index of the nearest stamp in sorted ``b`` (-1 if too far)."""
    b = np.asarray(b, dtype=np.float64)
    out = np.full(len(a), -1, dtype=np.int64)
    if b.size == 0:
        return out
    k = np.searchsorted(b, a)
    lo = np.clip(k - 1, 0, len(b) - 1)
    hi = np.clip(k, 0, len(b) - 1)
    pick = np.where(np.abs(b[lo] - a) <= np.abs(b[hi] - a), lo, hi)
    ok = np.abs(b[pick] - a) <= max_diff
    out[ok] = pick[ok]
    return out


def read_camera_file(path: Path) -> tuple[float, float, float, float]:
    values = read_numbers(path)
    if values.size == 9 and values[1] == 0 and values[3] == 0 and values[6] == 0 and values[7] == 0 and values[8] == 1:
        return float(values[0]), float(values[4]), float(values[2]), float(values[5])
    if values.size >= 4:
        return float(values[0]), float(values[1]), float(values[2]), float(values[3])
    raise DatasetError(f"camera file must hold 'fx fy cx cy' or a 3x3 matrix: {path}", path)


@register_dataset("tum", detect=is_tum, order=1, layout="TUM RGB-D (rgb.txt, depth.txt, groundtruth.txt)")
class TUMRGBD(FolderDataset):
    kind = "tum"
    depth_scale = 5000.0

    def __init__(
        self,
        root: str | Path,
        depth: DepthConfig | None = None,
        max_frames: int | None = None,
        stride: int = 1,
        max_time_diff: float = 0.02,
    ):
        super().__init__(root, depth=depth, max_frames=max_frames, stride=stride)
        self.pose_source = self.root / "groundtruth.txt"
        rgb = read_file_list(self.root / "rgb.txt")
        dep = read_file_list(self.root / "depth.txt")
        gt = read_file_list(self.pose_source)
        lists = ((self.root / "rgb.txt", rgb, 1), (self.root / "depth.txt", dep, 1), (self.pose_source, gt, 7))
        for path, items, n in lists:
            for t, fields in items:
                if len(fields) < n:
                    raise DatasetError(f"{path}: line at time {t} has {len(fields)} fields, expected {n}", path)
        gt_t = np.array([t for t, _ in gt], dtype=np.float64)
        gt_vals = np.array(
            [[float(v) if _is_number(v) else np.nan for v in f[:7]] for _, f in gt], dtype=np.float64
        ).reshape(-1, 7)

        pairs = associate(np.array([t for t, _ in rgb]), np.array([t for t, _ in dep]), max_time_diff)
        pose_idx = nearest(np.array([rgb[i][0] for i, _ in pairs]), gt_t, max_time_diff)
        records = []
        for (i, j), g in zip(pairs, pose_idx):
            if g < 0:
                continue
            try:
                pose = quaternion_pose(gt_vals[g, :3], gt_vals[g, 3:7])
            except ValueError:
                pose = np.full((4, 4), np.nan)  # reported when the frame is read
            records.append(
                FrameRecord(
                    number=i,
                    color=self.root / rgb[i][1][0],
                    depth=self.root / dep[j][1][0],
                    pose=pose,
                    stamp=rgb[i][0],
                )
            )
        self.unmatched = len(rgb) - len(records)
        if not records:
            raise DatasetError(
                f"no colour frame of {self.root} has depth and ground-truth pose within {max_time_diff} s", self.root
            )
        width, height = self._size_from_first_depth(records)
        fx, fy, cx, cy = DEFAULT_INTRINSICS
        for name in CAMERA_FILES:
            if (self.root / name).is_file():
                fx, fy, cx, cy = read_camera_file(self.root / name)
                break
        self.intrinsics = CameraIntrinsics(width, height, fx, fy, cx, cy)
        try:
            self.intrinsics.validate()
        except ValueError as e:
            raise DatasetError(f"bad intrinsics for {self.root}: {e}", self.root) from None
        self.records = self._select(records)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
