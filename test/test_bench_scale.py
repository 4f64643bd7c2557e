"""core3d bench scale: the figures are computed from the run (small map, CPU)."""
import numpy as np

from core3d_ros.tools.bench.scale import bench_scale


def test_scale_bench_reports_tenths_and_the_hierarchy_on_the_same_trajectory():
    r = bench_scale(voxels=4000, voxel_size=0.08, frames_per_room=3, width=64, height=48, hierarchy=True)
    assert r["voxels"] >= 4000 and r["rooms"] % 10 == 0 and r["frames"] == 9 * r["rooms"]
    for k, v in r["tenths"].items():
        assert len(v) == 10 and all(x > 0 for x in v), k
    h = r["hierarchy"]
    assert set(h["tenths"]) == {"tsdf_ms", "feed_ms", "update_ms"}
    assert all(len(v) == 10 and all(x > 0 for x in v) for v in h["tenths"].values())
    assert h["update_ms_worst"] >= max(h["tenths"]["update_ms"])
    # the rooms stand in a row on one floor: the builder finds that floor
    assert h["floors"] == 1 and h["rooms"] >= 1
    assert np.isclose(r["last_over_first"]["fusion_ms"], r["tenths"]["fusion_ms"][-1] / r["tenths"]["fusion_ms"][0])
