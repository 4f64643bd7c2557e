"""Keyframe selection by camera motion."""
from __future__ import annotations

import math

import numpy as np

from core3d_ros.config import KeyframeConfig
from core3d_ros.core.keyframes import KeyframeSelector, rotation_angle_deg


def pose(tx=0.0, ty=0.0, tz=0.0, yaw_deg=0.0) -> np.ndarray:
    a = math.radians(yaw_deg)
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    T[:3, 3] = [tx, ty, tz]
    return T


CFG = KeyframeConfig(min_translation=0.1, min_rotation_deg=10.0, max_interval=5)


def test_first_frame_is_keyframe():
    sel = KeyframeSelector(CFG)
    assert sel.is_keyframe(pose(), 0)
    assert not sel.is_keyframe(pose(), 1)


def test_translation_threshold_measured_from_last_keyframe():
    sel = KeyframeSelector(CFG)
    assert sel.is_keyframe(pose(), 0)
    assert not sel.is_keyframe(pose(tx=0.05), 1)
    assert not sel.is_keyframe(pose(tx=0.09), 2)  # still < 0.1 from frame 0
    assert sel.is_keyframe(pose(tx=0.10), 3)  # >= threshold
    assert not sel.is_keyframe(pose(tx=0.15), 4)  # 0.05 from the new keyframe
    assert sel.is_keyframe(pose(tx=0.1, ty=0.08, tz=0.08), 5)  # |(0, .08, .08)| = 0.113


def test_rotation_threshold():
    sel = KeyframeSelector(CFG)
    assert sel.is_keyframe(pose(), 0)
    assert not sel.is_keyframe(pose(yaw_deg=9.0), 1)
    assert sel.is_keyframe(pose(yaw_deg=10.5), 2)
    assert not sel.is_keyframe(pose(yaw_deg=15.0), 3)
    assert sel.is_keyframe(pose(yaw_deg=0.0), 4)  # 10.5 degrees back
    assert math.isclose(rotation_angle_deg(pose(yaw_deg=30)[:3, :3], pose(yaw_deg=-60)[:3, :3]), 90.0, abs_tol=1e-6)


def test_max_interval():
    sel = KeyframeSelector(CFG)
    keys = [i for i in range(16) if sel.is_keyframe(pose(), i)]
    assert keys == [0, 5, 10, 15]
    no_interval = KeyframeSelector(KeyframeConfig(max_interval=0))
    assert [i for i in range(30) if no_interval.is_keyframe(pose(), i)] == [0]


def test_disabled_and_restart_and_bad_pose():
    sel = KeyframeSelector(KeyframeConfig(enabled=False))
    assert all(sel.is_keyframe(pose(), i) for i in range(5))
    sel = KeyframeSelector(CFG)
    assert sel.is_keyframe(pose(), 10)
    assert not sel.is_keyframe(pose(), 11)
    assert sel.is_keyframe(pose(), 3)  # index went back: a new sequence
    bad = pose()
    bad[0, 3] = np.nan
    assert not sel.is_keyframe(bad, 4)
    assert sel.last_index == 3 and sel.count == 2
    sel.reset()
    assert sel.is_keyframe(pose(tx=5.0), 4)
