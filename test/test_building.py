"""The synthetic two-storey building (core/datasets/building.py) and the hierarchy built on it."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.config import HierarchyConfig
from core3d_ros.core.datasets import make_building, open_dataset
from core3d_ros.core.datasets.building import FURNITURE, STOREY_HEIGHT


@pytest.fixture(scope="module")
def small():
    return make_building(seed=1, frames_per_room=4, width=64, height=48)


def test_building_ground_truth_is_consistent(small):
    s = small
    assert len(s.rooms) == 6 and [r.floor for r in s.rooms] == [0, 0, 0, 1, 1, 1]
    assert s.floor_heights == [0.0, STOREY_HEIGHT] and s.up == (0.0, 0.0, 1.0)
    for a in s.rooms:  # rooms of one storey do not overlap
        for b in s.rooms:
            if a.id < b.id and a.floor == b.floor:
                overlap = np.minimum(a.hi, b.hi) - np.maximum(a.lo, b.lo)
                assert not np.all(overlap > 0), (a, b)
    assert {r for r in s.frame_room if r is not None} == {r.id for r in s.rooms}  # the walk visits every room
    furniture = {o.id for o in s.objects}
    assert set(s.object_room) == furniture
    for o in s.objects:
        room = s.room(s.object_room[o.id])
        assert room.contains(*o.center[:2]) and room.height <= o.bbox_min[2] + 1e-6 < room.height + 1.3  # vases on cabinets
        assert o.class_name in {c for c, on in FURNITURE[room.kind]} | {x for c, on in FURNITURE[room.kind] for x in on}
    assert len({r.kind for r in s.rooms}) == 6


def test_building_is_a_registered_dataset_with_instances():
    s = open_dataset("synthetic-building:2", stride=6, max_frames=10)
    assert len(s) == 10 and s.seed == 2
    f = s[3]
    assert f.instance_ids is not None and f.depth.shape == (240, 320) and (f.depth > 0).mean() > 0.9
    assert {f.instance_classes[i] for i in np.unique(f.instance_ids) if i} & {"wall", "floor"}
    with pytest.raises(ValueError, match="integer"):
        open_dataset("synthetic-building:x")


def test_the_walk_goes_through_doorways_not_walls():
    s = make_building(seed=1, frames_per_room=16, width=32, height=24)
    # consecutive poses on one storey never jump more than a step (0.2 m along the walk, a loop's
    # chord inside a room); the one jump is the 3 m ride up
    steps = np.linalg.norm(np.diff(s.poses[:, :3, 3], axis=0), axis=1)
    big = np.flatnonzero(steps > 1.0)
    assert len(big) == 1 and abs(s.poses[big[0] + 1, 2, 3] - s.poses[big[0], 2, 3] - STOREY_HEIGHT) < 0.2


def test_hierarchy_on_the_building_finds_its_floors_rooms_and_objects():
    """The TSDF of the whole walk (5 cm, 160x120) fed block-wise every 10 frames."""
    from core3d_ros.core.tsdf import GeometryLayer
    from core3d_ros.core.hierarchy.builder import HierarchyBuilder
    from core3d_ros.tools.rooms_eval import score

    s = make_building(seed=0, frames_per_room=10, width=160, height=120)
    geo = GeometryLayer(0.05, 5.0, min_weight=2.0)
    b = HierarchyBuilder(HierarchyConfig(), 0.05, up=s.up, up_source="dataset")
    for i in range(len(s)):
        f = s[i]
        geo.integrate(f)
        b.add_camera(f.pose[:3, 3])
        if i % 10 == 9 or i == len(s) - 1:
            blocks = geo.take_dirty()
            points, _, block_of = geo.surface(blocks)
            b.add_surface(blocks, points, block_of)

    class Obj:  # each piece of furniture as the points of its boxes' tops and sides
        def __init__(self, o):
            self.id = o.id
            rng = np.random.default_rng(o.id)
            self.points = rng.uniform(o.bbox_min, o.bbox_max, (300, 3))

    objects = [Obj(o) for o in s.objects]
    g = b.update(objects, now=0.0, force=True)
    assert [round(f.height, 1) for f in g.floors] == [0.0, 3.0]
    r = score(b, s, [], {x.id for x in s.rooms})
    assert r["rooms_found"] == 6 and r["floors_found"] == 2
    assert r["mean_iou"] > 0.85, r["iou_per_room"]
    # objects by their true instance ids (score() maps mapped objects; here they are the truth)
    truth_of_pred = {}
    for pred in g.rooms:
        centre = pred.centroid[:2]
        true = [t.id for t in s.rooms if t.floor == [f.id for f in g.floors].index(pred.floor_id) and t.contains(*centre)]
        truth_of_pred[pred.id] = true[0] if true else None
    right = sum(truth_of_pred.get(b.object_room(o.id)) == s.object_room[o.id] for o in s.objects)
    assert right / len(s.objects) >= 0.95


def test_cli_parses_eval_rooms():
    from core3d_ros.cli import build_parser

    args = build_parser().parse_args(["eval", "--rooms", "--seeds", "0", "1", "--frames-per-room", "12", "--json", "x.json"])
    assert args.rooms and args.seeds == [0, 1] and args.frames_per_room == 12
