"""ScanNet scenes exported from .sens files (ScanNet's SensReader layout).

Layout::

    color/N.jpg                     colour, 1296x968
    depth/N.png                     uint16 millimetres, 640x480
    pose/N.txt                      4x4 camera-to-world, OpenCV axes; frames with lost tracking
                                    hold -inf/NaN and raise DatasetError when read
    intrinsic/intrinsic_depth.txt   4x4 (upper-left 3x3 is K of the depth camera)
    intrinsic/intrinsic_color.txt   4x4, used (rescaled) only when the depth one is missing

Depth is registered to colour but has a lower resolution: colour is resized to the depth size
and the depth intrinsics describe the frame. Frames are stamped ``N / fps`` (30 Hz).
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from ...config import DepthConfig
from ..camera import CameraIntrinsics
from .base import DatasetError, FolderDataset, FrameRecord, image_size, read_color, read_numbers, register_dataset

_NUM_RE = re.compile(r"^(\d+)\.png$")


def is_scannet(path: Path) -> bool:
    return all((path / d).is_dir() for d in ("color", "depth", "pose"))


def _read_k(path: Path) -> np.ndarray:
    """3x3 K from a 4x4 (ScanNet) or 3x3 intrinsic matrix file."""
    values = read_numbers(path)
    if values.size == 16:
        return values.reshape(4, 4)[:3, :3]
    if values.size == 9:
        return values.reshape(3, 3)
    raise DatasetError(f"expected a 4x4 or 3x3 intrinsic matrix, found {values.size} numbers: {path}", path)


@register_dataset("scannet", detect=is_scannet, order=3, layout="a ScanNet export (color/, depth/, pose/, intrinsic/)")
class ScanNet(FolderDataset):
    kind = "scannet"
    up = (0.0, 0.0, 1.0)  # ScanNet reconstructions (and their camera poses) are z-up
    depth_scale = 1000.0

    def __init__(
        self,
        root: str | Path,
        depth: DepthConfig | None = None,
        max_frames: int | None = None,
        stride: int = 1,
        fps: float = 30.0,
    ):
        super().__init__(root, depth=depth, max_frames=max_frames, stride=stride)
        for d in ("color", "depth", "pose"):
            if not (self.root / d).is_dir():
                raise DatasetError(f"missing folder: {self.root / d}", self.root / d)
        numbers: list[tuple[int, str]] = []
        for p in (self.root / "depth").iterdir():
            m = _NUM_RE.match(p.name)
            if m:
                numbers.append((int(m.group(1)), m.group(1)))
        numbers.sort()
        if not numbers:
            raise DatasetError(f"no N.png depth images in {self.root / 'depth'}", self.root / "depth")
        color_names = {p.name for p in (self.root / "color").iterdir()}
        records = []
        for n, digits in numbers:
            only_png = f"{digits}.png" in color_names and f"{digits}.jpg" not in color_names
            records.append(
                FrameRecord(
                    number=n,
                    color=self.root / "color" / (f"{digits}.png" if only_png else f"{digits}.jpg"),
                    depth=self.root / "depth" / f"{digits}.png",
                    pose=self.root / "pose" / f"{digits}.txt",
                    stamp=n / float(fps),
                )
            )
        width, height = self._size_from_first_depth(records)
        k_depth = self.root / "intrinsic" / "intrinsic_depth.txt"
        k_color = self.root / "intrinsic" / "intrinsic_color.txt"
        if k_depth.is_file():
            K = _read_k(k_depth)
            source = k_depth
        elif k_color.is_file():
            # Colour intrinsics rescaled to the depth resolution (same field of view).
            K = _read_k(k_color).copy()
            cw, ch = self._color_size(records)
            K[0] *= width / cw
            K[1] *= height / ch
            source = k_color
        else:
            raise DatasetError(f"missing file: {k_depth}", k_depth)
        self.intrinsics = CameraIntrinsics.from_matrix(K, width, height)
        try:
            self.intrinsics.validate()
        except ValueError as e:
            raise DatasetError(f"{source}: {e}", source) from None
        self.records = self._select(records)

    def _color_size(self, records: list[FrameRecord]) -> tuple[int, int]:
        last: DatasetError | None = None
        for rec in records[:10]:
            try:
                return image_size(rec.color)
            except DatasetError as e:
                last = e
        raise DatasetError(f"cannot determine the colour image size of {self.root}: {last}", self.root)

    def _load_color(self, rec: FrameRecord, shape: tuple[int, int]) -> np.ndarray:
        rgb = read_color(rec.color)
        if rgb.shape[:2] != shape:
            rgb = cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        return rgb
