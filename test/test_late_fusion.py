"""Late fusion (core3d_ros.core.mapping.late_fusion.LateFusion, ROS-free, driven directly with a
stand-in mapper): observations matched with their own frame by stamp, waiting for a frame that
has not arrived yet, and the staleness accounting: an observation dropped as late enters the
distribution and the ``staleness_late_drops`` counter, timed from its frame's arrival or, when
that is not known, from its stamp."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pytest

from core3d_ros.core.datasets import make_scene
from core3d_ros.core.mapping.late_fusion import FUSED, WAITING, LateFusion
from core3d_ros.core.observation import Observation
from core3d_ros.core.segment.base import Mask2D


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
    return dataclasses.replace(base, stamp=stamp)


def _obs(frame: Any, stamp: float) -> Observation:
    mask = np.zeros(frame.shape, bool)
    mask[10:20, 10:30] = True
    return Observation.from_masks(stamp, 0, frame.pose, [Mask2D(mask=mask, score=1.0)])


def _late_fusion(mapper: _Mapper, frame_buffer: int, now_s: float = 0.0) -> LateFusion:
    return LateFusion(mapper, frame_buffer=frame_buffer, max_pinned=1, clock=lambda: now_s)


def test_a_late_observation_enters_the_staleness_distribution_and_the_counter(scene_frame) -> None:
    mapper = _Mapper()
    late = _late_fusion(mapper, frame_buffer=2)
    assert late.counters()["staleness_late_drops"] == 0 and late.counters()["staleness_samples"] == 0
    late.add_frame(_frame(scene_frame, 1.0))
    time.sleep(0.2)
    for s in (2.0, 3.0):  # the buffer keeps 2: the frame of 1.0 leaves
        late.add_frame(_frame(scene_frame, s))
    assert late.offer(1.0, _obs(scene_frame, 1.0))[0] == "late"
    c = late.counters()
    assert mapper.fused == []
    assert c["observations_rejected_late"] == 1 and c["staleness_late_drops"] == 1, c
    assert c["staleness_samples"] == 1
    # from its frame's arrival (remembered after the frame left) to the drop
    assert 0.2 <= float(c["staleness_s_p50"]) == float(c["staleness_s_p95"]) == float(c["staleness_s_max"]) < 10.0, c

    assert late.offer(3.0, _obs(scene_frame, 3.0)) == (FUSED, "")  # a fused one joins the same distribution
    c = late.counters()
    assert mapper.fused == [3.0] and c["observations_fused"] == 1
    assert c["staleness_samples"] == 2 and c["staleness_late_drops"] == 1, c
    assert float(c["staleness_s_max"]) >= 0.2 and float(c["staleness_s_p95"]) > float(c["staleness_s_p50"]) >= 0, c


def test_a_late_observation_of_unknown_arrival_counts_from_its_stamp(scene_frame) -> None:
    late = _late_fusion(_Mapper(), frame_buffer=1, now_s=20.0)
    for s in (10.0, 11.0, 12.0):  # 10 and 11 leave the buffer
        late.add_frame(_frame(scene_frame, s))
    late.offer(10.5, _obs(scene_frame, 10.5))  # older than a dropped frame: late; never buffered here
    c = late.counters()
    assert c["observations_rejected_late"] == 1 and c["staleness_late_drops"] == 1, c
    assert float(c["staleness_s_p50"]) == pytest.approx(9.5, abs=1e-3)  # the node's clock minus its stamp


def test_an_unknown_stamp_is_not_a_late_drop(scene_frame) -> None:
    late = _late_fusion(_Mapper(), frame_buffer=4, now_s=20.0)
    late.add_frame(_frame(scene_frame, 10.0))
    late.offer(5.0, _obs(scene_frame, 5.0))  # older than anything buffered, nothing ever dropped
    c = late.counters()
    assert c["observations_rejected_unknown_stamp"] == 1
    assert c["staleness_late_drops"] == 0 and c["staleness_samples"] == 0, c


def test_an_observation_faster_than_its_frame_waits_for_it(scene_frame) -> None:
    mapper = _Mapper()
    late = _late_fusion(mapper, frame_buffer=4)
    late.add_frame(_frame(scene_frame, 1.0))
    obs = _obs(scene_frame, 2.0)
    assert late.offer(2.0, obs) == (WAITING, "") and mapper.fused == []
    ready = late.add_frame(_frame(scene_frame, 2.0))  # its frame arrives: handed back to be offered
    assert ready == [(2.0, obs)]
    assert late.offer(*ready[0]) == (FUSED, "") and mapper.fused == [2.0]
    # early ones wait as long as the frame buffer has room for them (4 here); one more is refused
    for s in (5.0, 6.0, 7.0, 8.0):
        assert late.offer(s, _obs(scene_frame, s)) == (WAITING, "")
    assert late.offer(9.0, _obs(scene_frame, 9.0))[0] == "unknown_stamp"
    assert late.counters()["observations_rejected_unknown_stamp"] == 1


def test_a_wrong_size_observation_is_refused_and_its_frame_stays_unfused(scene_frame) -> None:
    mapper = _Mapper()
    late = _late_fusion(mapper, frame_buffer=4)
    late.add_frame(_frame(scene_frame, 1.0))
    small = Observation.from_masks(1.0, 0, scene_frame.pose, [Mask2D(mask=np.ones((8, 8), bool), score=1.0)])
    assert late.offer(1.0, small)[0] == "size_mismatch" and mapper.fused == []
    assert late.counters()["observations_rejected_size_mismatch"] == 1


def test_perception_inference_stats_cover_every_keyframe_in_the_window() -> None:
    from collections import deque

    pytest.importorskip("core3d.msg", reason="core3d.msg is not built: run scripts/setup.sh and use scripts/in-env")
    from core3d_ros.ros.perception_node import INFERENCE_WINDOW, inference_stats

    assert inference_stats(deque(), 0) == {"inference_count": 0, "inference_window": 0}
    times = deque([100.0] * 19 + [1000.0], maxlen=INFERENCE_WINDOW)
    s = inference_stats(times, 20)
    assert s["inference_count"] == 20 and s["inference_window"] == 20
    assert s["inference_ms_p50"] == 100.0 and s["inference_ms_max"] == 1000.0
    assert 100.0 < s["inference_ms_p95"] <= 1000.0  # the one slow keyframe shows, unlike the last sample alone
    assert INFERENCE_WINDOW >= 400  # a default `core3d bench online` run (400 frames) fits
