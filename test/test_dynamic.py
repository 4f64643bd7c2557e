"""A room that changes: the synthetic scene with objects removed or moved, and the dynamic
evaluation (`core3d eval --dynamic`) on a short flight."""
import numpy as np
import pytest

from core3d_ros.config import MapperConfig, with_overrides
from core3d_ros.core.datasets import make_scene
from core3d_ros.tools.dynamic import evaluate_dynamic


def test_a_changed_room_keeps_poses_and_every_other_object():
    a = make_scene(seed=0, num_frames=8)
    b = make_scene(seed=0, num_frames=8, remove=["sofa"], move={"mug": (-0.6, 0.0, 0.0)})
    np.testing.assert_array_equal(a.poses, b.poses)
    sofa = a.objects_of_class("sofa")[0]
    assert not b.objects_of_class("sofa") and sofa.id not in b.instance_classes
    mug_a, mug_b = a.objects_of_class("mug")[0], b.objects_of_class("mug")[0]
    assert mug_a.id == mug_b.id
    np.testing.assert_allclose(mug_b.center - mug_a.center, [-0.6, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(mug_b.size, mug_a.size)
    others = lambda s: {o.id: (o.class_name, tuple(o.center)) for o in s.instances if o.class_name not in ("sofa", "mug")}
    assert others(a) == others(b)
    # The sofa no longer shows in any frame.
    assert all(sofa.id not in np.unique(b[i].instance_ids) for i in range(len(b)))


def test_a_change_naming_nothing_is_refused():
    with pytest.raises(ValueError, match="unicorn"):
        make_scene(seed=0, num_frames=2, remove=["unicorn"])
    with pytest.raises(ValueError, match="3 finite"):
        make_scene(seed=0, num_frames=2, move={"mug": (0.0, np.nan, 0.0)})


@pytest.fixture(scope="module")
def runs():
    """The dynamic evaluation on a 30-frame flight, oracle masks, with and without free space
    (and TSDF clearing), looked for in every frame (the 60-frame evaluation runs the default,
    every 2nd)."""
    out = {}
    for free_space in (True, False):
        base = with_overrides(MapperConfig(), fusion={"free_space": free_space, "free_interval": 1}, geometry={"clear": free_space})
        out[free_space] = evaluate_dynamic(base, ["oracle"], [0], frames=30)["segmenters"]["oracle"]["per_seed"][0]
    return out


def test_removed_and_moved_objects_leave_the_map(runs):
    r = runs[True]
    p1, p2 = r["passes"]
    assert p1["ghost_voxels"] > 1000 and p1["ghost_objects"] == 1  # the sofa, mapped
    assert p2["ghost_voxels"] == 0 and p2["ghost_objects"] == 0
    assert p1["moved_old_place_objects"] == 1 and p1["moved_new_place_objects"] == 0
    assert p2["moved_old_place_voxels"] == 0 and p2["moved_new_place_objects"] == 1
    # The TSDF surface of the sofa (the geometry layer) is cleared too, all but a few samples.
    assert p1["tsdf_ghost_voxels"] > 1000 and p2["tsdf_ghost_voxels"] <= 0.05 * p1["tsdf_ghost_voxels"]
    # The mug at its new place says it moved, from its old place (its centre, within a voxel);
    # nothing else says so.
    assert not p1["moved_reported"] and p2["moved_reported"]
    assert p2["moved_from_error_m"] < 0.025 and p1["other_moved_objects"] == p2["other_moved_objects"] == 0


def test_without_free_space_the_ghosts_stay(runs):
    p2 = runs[False]["passes"][1]
    assert p2["ghost_voxels"] > 1000 and p2["moved_old_place_objects"] == 1
    assert p2["tsdf_ghost_voxels"] > 0.8 * runs[False]["passes"][0]["tsdf_ghost_voxels"]
    assert not p2["moved_reported"]  # nothing was removed, so nothing moved


def test_clearing_takes_nothing_from_static_objects(runs):
    """Every static object's IoU in the changed run is the same with and without clearing.
    (Against the control run, 30 frames of the changed room alone split the wall behind the
    sofa; the 60-frame evaluation is within 0.01.)"""
    on, off = runs[True]["static_iou"], runs[False]["static_iou"]
    assert on.keys() == off.keys() and len(on) >= 10
    for g in on:
        assert on[g]["changed"] >= off[g]["changed"] - 0.01, (g, on[g], off[g])


def test_the_mapper_reports_what_free_space_removed():
    from core3d_ros.core.mapper import Mapper
    from core3d_ros.tools.dynamic import _Pass

    cfg = with_overrides(MapperConfig(), segmenter={"name": "oracle"}, keyframes={"enabled": False}, fusion={"free_interval": 1})
    before = make_scene(seed=0, num_frames=30)
    after = make_scene(seed=0, num_frames=30, remove=["sofa"], move={"mug": (-0.6, 0.0, 0.0)})
    mapper = Mapper(cfg)
    first = [mapper.process(f) for f in _Pass(before, 0)]
    assert sum(s.cleared_voxels for s in first) == 0 and not any(s.removed_objects for s in first)
    ids = {o.id for o in mapper.snapshot().objects}
    second = [mapper.process(f) for f in _Pass(after, 1)]
    removed = {o for s in second for o in s.removed_objects}
    assert sum(s.cleared_voxels for s in second) > 1000
    left = {o.id for o in mapper.snapshot().objects}
    # What was reported removed and was in the map before has left the snapshot.
    assert removed & ids and not (removed & left)


def test_the_command(tmp_path):
    import json

    from core3d_ros.cli import main

    out = tmp_path / "dynamic.json"
    assert main(["eval", "--dynamic", "--segmenters", "oracle", "--frames", "8", "--seeds", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["remove"] == ["sofa"] and report["move"] == {"mug": [-0.6, 0.0, 0.0]}
    assert len(report["segmenters"]["oracle"]["per_seed"]["0"]["passes"]) == 2
    for bad in (["--move", "mug=1,2"], ["--move", "mug=a,b,c"], ["--remove", "unicorn"], ["--passes", "1"]):
        with pytest.raises(SystemExit):
            main(["eval", "--dynamic", "--segmenters", "oracle", "--frames", "4", "--seeds", "0", *bad])
