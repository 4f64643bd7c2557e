"""Microsoft 7-Scenes / 3DMatch sequence folders.

Layout (one sequence per folder)::

    frame-000000.color.jpg | .color.png   colour, 640x480
    frame-000000.depth.png                uint16 millimetres, 0 (or 65535) = invalid
    frame-000000.pose.txt                 4x4 camera-to-world, OpenCV camera axes
    camera-intrinsics.txt                 3x3 K (optional; the original 7-Scenes release has
                                          none and uses fx = fy = 585, cx = 320, cy = 240)

The data carry no time stamps; frames are stamped ``frame number / fps`` (30 Hz Kinect).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...config import DepthConfig
from ..camera import CameraIntrinsics
from .base import DatasetError, FolderDataset, FrameRecord, read_matrix, register_dataset

_DEPTH_RE = re.compile(r"^frame-(\d+)\.depth\.png$")
DEFAULT_K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])


def is_sevenscenes(path: Path) -> bool:
    return path.is_dir() and any(path.glob("frame-*.depth.png"))


@register_dataset("7scenes", detect=is_sevenscenes, order=4, layout="7-Scenes (frame-NNNNNN.depth.png + camera-intrinsics.txt)")
class SevenScenes(FolderDataset):
    kind = "7scenes"
    # The KinectFusion world of 7-Scenes: the cameras' image-down axis is about +y.
    up = (0.0, -1.0, 0.0)
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
        numbers: list[tuple[int, str]] = []
        for p in self.root.iterdir():
            m = _DEPTH_RE.match(p.name)
            if m:
                numbers.append((int(m.group(1)), m.group(1)))
        if not numbers:
            hint = ""
            if any(self.root.glob("seq-*/frame-*.depth.png")):
                hint = " (a scene folder of seq-NN sequences: open the scene folder itself, kind 3dmatch)"
            raise DatasetError(f"no frame-NNNNNN.depth.png files in {self.root}{hint}", self.root)
        numbers.sort()
        names = {p.name for p in self.root.iterdir()}
        records = []
        for n, digits in numbers:
            stem = f"frame-{digits}"
            # .jpg unless only a .png exists (a missing file is reported when the frame is read)
            only_png = f"{stem}.color.png" in names and f"{stem}.color.jpg" not in names
            color = f"{stem}.color.png" if only_png else f"{stem}.color.jpg"
            records.append(
                FrameRecord(
                    number=n,
                    color=self.root / color,
                    depth=self.root / f"{stem}.depth.png",
                    pose=self.root / f"{stem}.pose.txt",
                    stamp=n / float(fps),
                )
            )
        width, height = self._size_from_first_depth(records)
        self.records = self._select(records)
        k_path = self.root / "camera-intrinsics.txt"
        K = read_matrix(k_path, (3, 3)) if k_path.exists() else DEFAULT_K
        self.intrinsics = CameraIntrinsics.from_matrix(K, width, height)
        try:
            self.intrinsics.validate()
        except ValueError as e:
            raise DatasetError(f"{k_path}: {e}", k_path) from None
