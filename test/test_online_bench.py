"""A small run of ``core3d bench online``: perception and mapping in two processes, frames
replayed on their topics, queries meanwhile; the JSON's invariants (not its timings)."""
from __future__ import annotations

import json
import math
import os

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d.msg is not built: run scripts/setup.sh and use scripts/in-env")

from core3d_ros.ros.online import bench_online  # noqa: E402

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
    assert r["queries_during_mapping"] > 0 and r["queries_failed"] == 0
    assert not r["errors"]["mapping"] and not r["errors"]["perception"], r["errors"]
