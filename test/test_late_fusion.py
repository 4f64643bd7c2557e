"""Late fusion's staleness accounting (core3d_ros.ros.late_fusion.LateFusion, driven directly with
a stand-in node and mapper): an observation dropped as late enters the staleness distribution
and the ``staleness_late_drops`` counter, timed from its frame's arrival or, when that is not
known, from its stamp."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d.msg is not built: run scripts/setup.sh and use scripts/in-env")

from core3d_ros.config import RosConfig  # noqa: E402
from core3d_ros.core.datasets import make_scene  # noqa: E402
from core3d_ros.core.observation import Observation  # noqa: E402
from core3d_ros.core.segment.base import Mask2D  # noqa: E402
from core3d_ros.ros.late_fusion import LateFusion  # noqa: E402
from core3d_ros.ros.observation_msgs import observation_to_msg  # noqa: E402


class _Clock:
    def __init__(self, now_s: float):
        self.now_s = now_s

    def now(self) -> Any:
        return type("Time", (), {"nanoseconds": int(round(self.now_s * 1e9))})()


class _Logger:
    def __init__(self):
        self.lines: list[str] = []

    def warning(self, text: str) -> None:
        self.lines.append(text)

    error = info = warning


class _Node:
    """What LateFusion touches of an rclpy node."""

    def __init__(self, now_s: float = 0.0):
        self.clock, self.logger = _Clock(now_s), _Logger()

    def create_subscription(self, *args: Any, **kwargs: Any) -> object:
        return object()

    def get_logger(self) -> _Logger:
        return self.logger

    def get_clock(self) -> _Clock:
        return self.clock


class _Mapper:
    encoder = None

    def __init__(self):
        self.fused: list[float] = []

    def integrate_geometry(self, frame: Any) -> Any:
        return frame

    def fuse_observation(self, frame: Any, obs: Any) -> None:
        self.fused.append(frame.stamp)


@pytest.fixture
def scene_frame():
    return make_scene(seed=0, num_frames=1, width=64, height=48)[0]


def _frame(base: Any, stamp: float) -> Any:
    import dataclasses

    return dataclasses.replace(base, stamp=stamp)


def _msg(frame: Any, stamp: float) -> Any:
    mask = np.zeros(frame.shape, bool)
    mask[10:20, 10:30] = True
    obs = Observation.from_masks(stamp, 0, frame.pose, [Mask2D(mask=mask, score=1.0)])
    return observation_to_msg(obs, frame_id="camera")


def _late_fusion(node: _Node, mapper: _Mapper, frame_buffer: int) -> LateFusion:
    return LateFusion(node, RosConfig(frame_buffer=frame_buffer, max_pinned_frames=1), mapper, lambda key: True)


def test_a_late_observation_enters_the_staleness_distribution_and_the_counter(scene_frame) -> None:
    mapper = _Mapper()
    late = _late_fusion(_Node(), mapper, frame_buffer=2)
    try:
        assert late.counters()["staleness_late_drops"] == 0 and late.counters()["staleness_samples"] == 0
        late.add_frame(_frame(scene_frame, 1.0))
        time.sleep(0.2)
        for s in (2.0, 3.0):  # the buffer keeps 2: the frame of 1.0 leaves
            late.add_frame(_frame(scene_frame, s))
        late._fuse(_msg(scene_frame, 1.0))
        c = late.counters()
        assert mapper.fused == []
        assert c["observations_rejected_late"] == 1 and c["staleness_late_drops"] == 1, c
        assert c["staleness_samples"] == 1
        # from its frame's arrival (remembered after the frame left) to the drop
        assert 0.2 <= float(c["staleness_s_p50"]) == float(c["staleness_s_p95"]) == float(c["staleness_s_max"]) < 10.0, c

        late._fuse(_msg(scene_frame, 3.0))  # a fused one joins the same distribution
        c = late.counters()
        assert mapper.fused == [3.0] and c["observations_fused"] == 1
        assert c["staleness_samples"] == 2 and c["staleness_late_drops"] == 1, c
        assert float(c["staleness_s_max"]) >= 0.2 and float(c["staleness_s_p95"]) > float(c["staleness_s_p50"]) >= 0, c
    finally:
        late.stop()


def test_a_late_observation_of_unknown_arrival_counts_from_its_stamp(scene_frame) -> None:
    node = _Node(now_s=20.0)
    late = _late_fusion(node, _Mapper(), frame_buffer=1)
    try:
        for s in (10.0, 11.0, 12.0):  # 10 and 11 leave the buffer
            late.add_frame(_frame(scene_frame, s))
        late._fuse(_msg(scene_frame, 10.5))  # older than a dropped frame: late; never buffered here
        c = late.counters()
        assert c["observations_rejected_late"] == 1 and c["staleness_late_drops"] == 1, c
        assert float(c["staleness_s_p50"]) == pytest.approx(9.5, abs=1e-3)  # the node's clock minus its stamp
    finally:
        late.stop()


def test_an_unknown_stamp_is_not_a_late_drop(scene_frame) -> None:
    late = _late_fusion(_Node(now_s=20.0), _Mapper(), frame_buffer=4)
    try:
        late.add_frame(_frame(scene_frame, 10.0))
        late._fuse(_msg(scene_frame, 5.0))  # older than anything buffered, nothing ever dropped
        c = late.counters()
        assert c["observations_rejected_unknown_stamp"] == 1
        assert c["staleness_late_drops"] == 0 and c["staleness_samples"] == 0, c
    finally:
        late.stop()


def test_perception_inference_stats_cover_every_keyframe_in_the_window() -> None:
    from collections import deque

    from core3d_ros.ros.perception_node import INFERENCE_WINDOW, inference_stats

    assert inference_stats(deque(), 0) == {"inference_count": 0, "inference_window": 0}
    times = deque([100.0] * 19 + [1000.0], maxlen=INFERENCE_WINDOW)
    s = inference_stats(times, 20)
    assert s["inference_count"] == 20 and s["inference_window"] == 20
    assert s["inference_ms_p50"] == 100.0 and s["inference_ms_max"] == 1000.0
    assert 100.0 < s["inference_ms_p95"] <= 1000.0  # the one slow keyframe shows, unlike the last sample alone
    assert INFERENCE_WINDOW >= 400  # a default `core3d bench online` run (400 frames) fits
