"""Keyframe selection by camera motion (segmentation and embedding run on keyframes only).

A frame is a keyframe when it is the first one, when the camera has moved at least
``min_translation`` metres or turned at least ``min_rotation_deg`` degrees since the last
keyframe, or when ``max_interval`` frames have passed since it (``max_interval <= 0`` disables
that rule). With ``enabled: false`` every frame is a keyframe.

A frame index lower than the last keyframe's (a restarted sequence, a looped bag) starts over:
that frame is a keyframe. A pose that is not a finite 4x4 matrix is never a keyframe.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import KeyframeConfig


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of the relative rotation between two rotation matrices, in degrees."""
    c = (float(np.trace(R_a.T @ R_b)) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


class KeyframeSelector:
    def __init__(self, cfg: KeyframeConfig | None = None):
        self.cfg = cfg or KeyframeConfig()
        self.last_pose: np.ndarray | None = None
        self.last_index: int | None = None
        self.count = 0  # keyframes selected so far

    def reset(self) -> None:
        self.last_pose = None
        self.last_index = None

    def motion_since_last(self, pose: np.ndarray) -> tuple[float, float]:
        """(translation metres, rotation degrees) from the last keyframe; (inf, inf) if none."""
        if self.last_pose is None:
            return math.inf, math.inf
        T = np.asarray(pose, dtype=np.float64)
        t = float(np.linalg.norm(T[:3, 3] - self.last_pose[:3, 3]))
        return t, rotation_angle_deg(self.last_pose[:3, :3], T[:3, :3])

    def is_keyframe(self, pose: np.ndarray, index: int) -> bool:
        """Decide for one frame; a True answer makes this frame the new reference."""
        T = np.asarray(pose, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            return False
        cfg = self.cfg
        index = int(index)
        if not cfg.enabled or self.last_pose is None or self.last_index is None or index < self.last_index:
            key = True
        else:
            trans, rot = self.motion_since_last(T)
            key = (
                trans >= cfg.min_translation
                or rot >= cfg.min_rotation_deg
                or (cfg.max_interval > 0 and index - self.last_index >= cfg.max_interval)
            )
        if key:
            self.last_pose = T.copy()
            self.last_index = index
            self.count += 1
        return key
