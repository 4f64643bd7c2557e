"""A small run of ``core3d bench online``: perception and mapping in two processes, frames
replayed on their topics, queries meanwhile; the JSON's invariants (not its timings)."""
from __future__ import annotations

import json
import math
import os

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d.msg is not built: run scripts/setup.sh and use scripts/in-env")

from core3d_ros.tools.bench.online import bench_online  # noqa: E402

DOMAIN_ID = 150 + os.getpid() % 40


def test_online_bench_small(tmp_path) -> None:
    r = bench_online(
        frames=24, rate=4.0, segmenter="geometric", encoder="mean_color", qps=5.0, width=320, height=240,
        workdir=str(tmp_path), progress=False, domain_id=DOMAIN_ID, settle_s=60.0,
    )
    json.dumps(r, allow_nan=True)  # plain data
    assert r["frames_published"] == 24 and r["exit_codes"] == [0, 0], r
    assert r["frames_integrated"] >= 20 and 0.8 <= r["integrated_fraction"] <= 1.0, r
    assert r["keyframes_inferred"] >= 1
    # every observation published was fused or refused with a reason; none was malformed
    rejected = r["observations_rejected"]
    assert not {k for k in rejected if not k.endswith(("late", "unknown_stamp"))}, rejected
    assert r["observations_fused"] + sum(int(v) for v in rejected.values()) == r["keyframes_inferred"], r
    assert r["observation_bytes_per_keyframe"] > 0
    assert math.isfinite(r["staleness_s_p95"]) and r["staleness_s_p95"] >= r["staleness_s_p50"] >= 0
    # no observation dropped as late at this rate; late drops would be in the staleness figures
    assert r["late_drops"] == 0 and "observations_rejected_late" not in rejected, r
    assert r["staleness_samples"] == r["observations_fused"] + r["late_drops"], r
    # inference timed on every keyframe (masks or none), not the last one only
    assert r["keyframes_timed"] >= r["keyframes_inferred"] and r["keyframe_inference_over"] == "all keyframes", r
    assert r["keyframe_inference_s_max"] >= r["keyframe_inference_s_p95"] >= r["keyframe_inference_s_p50"] > 0, r
    assert r["queries_during_mapping"] > 0 and r["queries_failed"] == 0
    assert not r["errors"]["mapping"] and not r["errors"]["perception"], r["errors"]


def test_stand_in_segmenter_pays_the_model_and_hands_on_the_stand_in_masks() -> None:
    from core3d_ros.core.datasets import make_scene
    from core3d_ros.core.segment.base import Mask2D
    from core3d_ros.tools.bench.online import StandInSegmenter

    frame = make_scene(seed=0, num_frames=1, width=64, height=48)[0]
    calls = []

    class Model:
        name = "sam"

        def segment(self, f):
            calls.append(f.index)
            return []  # an untrained generator: nothing passes its filters

    class Geometric:
        name = "geometric"

        def segment(self, f):
            return [Mask2D(mask=f.depth > 0, score=1.0)]

    seg = StandInSegmenter(Model(), Geometric())
    masks = seg.segment(frame)
    assert calls == [frame.index] and len(masks) == 1 and masks[0].mask.shape == frame.depth.shape
    assert seg.name == "sam+geometric_masks"
