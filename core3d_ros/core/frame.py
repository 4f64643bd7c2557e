"""One synchronised RGB-D observation with its camera pose."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import CameraIntrinsics, is_valid_pose


class FrameError(ValueError):
    """A frame that must not enter the map. ``reason`` is a short stable code for counters."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Frame:
    rgb: np.ndarray  # HxWx3 uint8 RGB
    depth: np.ndarray  # HxW float32 metres, 0 = invalid
    intrinsics: CameraIntrinsics
    pose: np.ndarray  # 4x4 float64 camera-to-world, OpenCV optical axes
    stamp: float = 0.0  # seconds
    index: int = 0
    # Ground truth, when a dataset supplies it (oracle segmenter, evaluation).
    instance_ids: np.ndarray | None = None  # HxW int32, 0 = no instance
    instance_classes: dict[int, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape[:2]

    def validate(self) -> None:
        """Raise FrameError with a reason code when the frame would corrupt the map."""
        if not isinstance(self.rgb, np.ndarray) or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise FrameError("bad_color", f"colour must be HxWx3, got {getattr(self.rgb, 'shape', None)}")
        if self.rgb.dtype != np.uint8:
            raise FrameError("bad_color", f"colour must be uint8, got {self.rgb.dtype}")
        if not isinstance(self.depth, np.ndarray) or self.depth.ndim != 2 or self.depth.dtype != np.float32:
            raise FrameError("bad_depth", "depth must be an HxW float32 array in metres")
        if self.rgb.shape[:2] != self.depth.shape:
            raise FrameError(
                "size_mismatch", f"colour {self.rgb.shape[:2]} and depth {self.depth.shape} differ"
            )
        try:
            self.intrinsics.validate()
        except ValueError as e:
            raise FrameError("bad_intrinsics", str(e)) from None
        if (self.intrinsics.height, self.intrinsics.width) != self.depth.shape:
            raise FrameError(
                "size_mismatch",
                f"camera info {self.intrinsics.width}x{self.intrinsics.height} does not match "
                f"image {self.depth.shape[1]}x{self.depth.shape[0]}",
            )
        if not is_valid_pose(self.pose):
            raise FrameError("bad_pose", "pose must be a finite rigid 4x4 transform")
        if not np.all(np.isfinite(self.depth)):
            raise FrameError("bad_depth", "depth must be decoded (NaN/inf replaced by 0)")
        if not np.any(self.depth > 0):
            raise FrameError("no_valid_depth", "no valid depth pixel in the frame")
        if self.instance_ids is not None and self.instance_ids.shape != self.depth.shape:
            raise FrameError("size_mismatch", "instance id image does not match depth")
