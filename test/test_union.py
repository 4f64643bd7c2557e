"""Several robots' maps served as one (core/mapping/union.py), on hand-computed voxel samples."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.core.mapping.mirror import MapMirror, MapVersion, StreamedObject
from core3d_ros.core.hierarchy.graph import Floor, Room, SceneGraph
from core3d_ros.core.mapping.union import MapUnion, compare_cell, sample_iov, union_scene_graph
from core3d_ros.core.objects import OrientedBox

V = 0.1  # voxel size of both robots' maps


def slab(oid: int, x0: int, nx: int, ny: int = 10, y0: int = 0, voxels: int | None = None, step: int = 1) -> StreamedObject:
    """A one-voxel-thick slab of nx * ny voxel centres from voxel (x0, y0, 0); ``step``: every
    step-th voxel along x is in the sample, ``voxels``: the object's full voxel count."""
    ii, jj = np.meshgrid(np.arange(x0, x0 + nx, step), np.arange(y0, y0 + ny), indexing="ij")
    pts = (np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], axis=1) + 0.5) * V
    pts = pts.astype(np.float32)
    return StreamedObject(
        id=oid, points=pts, colors=np.full((len(pts), 3), 90, np.uint8),
        box=OrientedBox(pts.mean(axis=0).astype(float), np.eye(3), np.ptp(pts, axis=0).astype(float) + V),
        num_observations=3, first_seen=0.0, last_seen=1.0, label="board",
        full_centroid=pts.mean(axis=0), full_num_voxels=voxels or len(pts), full_mean_color=np.full(3, 0.35),
    )


def served(u: MapUnion) -> list[tuple[str, int, list[tuple[str, int]]]]:
    out = []
    for o in u.snapshot().objects:
        origin = u.origin(o.id)
        out.append((origin.robot, origin.id, origin.merged))
    return out


def test_sample_iov_by_hand() -> None:
    a = slab(1, 0, 10)  # 100 voxels, x 0..9
    b = slab(1, 2, 10)  # x 2..11: 80 shared
    assert sample_iov(a, b, V) == pytest.approx((0.8, 0.8))
    c = slab(2, 3, 3, ny=3, y0=3)  # 9 voxels inside a
    assert sample_iov(c, a, V) == pytest.approx((1.0, 0.09))
    # a sample of every 4th voxel along x of a 100-voxel object: compared on ceil(2 sqrt(4)) = 4 voxels
    assert compare_cell(slab(1, 0, 16, step=4, voxels=160), a, V) == pytest.approx(0.4)
    assert compare_cell(a, b, V) == pytest.approx(V)
    # beyond the packed key range (kilometres at 1 cm) the cells are compared as rows
    far = slab(3, 0, 10)
    far.points = far.points + np.float32(30000.0)
    near_far = slab(4, 2, 10)
    near_far.points = near_far.points + np.float32(30000.0)
    assert sample_iov(far, near_far, 0.001) == sample_iov(a, b, 0.001)


def test_two_samples_of_one_big_object_meet_on_the_coarser_grid() -> None:
    # a 40 x 40 voxel board (1,600 voxels) that each robot streams as every 4th voxel along x,
    # robot1 from x = 0, robot2 from x = 2: no voxel in common, yet one board
    a = slab(1, 0, 40, ny=40, step=4, voxels=1600)
    b = slab(1, 2, 38, ny=40, step=4, voxels=1600)
    assert len(a.points) == len(b.points) == 400
    assert compare_cell(a, b, V) == pytest.approx(4 * V)  # ceil(2 sqrt(1600 / 400)) = 4 voxels
    assert sample_iov(a, b, V) == pytest.approx((1.0, 1.0))  # x cells 0..9 and y cells 0..9 in both
    fine = StreamedObject(**{**a.__dict__, "full_num_voxels": 400})  # as if the samples were whole objects
    assert sample_iov(fine, StreamedObject(**{**b.__dict__, "full_num_voxels": 400}), V) == (0.0, 0.0)
    u = MapUnion(["robot1", "robot2"])
    u.update("robot1", [a], full=True, voxel_size=V)
    u.update("robot2", [b], full=True, voxel_size=V)
    assert served(u) == [("robot1", 1, [("robot2", 1)])]


def test_overlapping_objects_of_two_robots_are_merged_far_ones_not() -> None:
    u = MapUnion(["robot1", "robot2"])
    u.update("robot1", [slab(1, 0, 10), slab(2, 40, 10)], full=True, voxel_size=V)
    u.update("robot2", [slab(1, 2, 10, voxels=120), slab(7, 80, 10)], full=True, voxel_size=V)
    # robot2's object 1 overlaps robot1's 1 (IoV 0.8 both ways): one object, served as robot2's
    # (the bigger: 120 voxels); robot1's 2 and robot2's 7 lie apart
    assert sorted(served(u)) == [
        ("robot1", 2, []), ("robot2", 1, [("robot1", 1)]), ("robot2", 7, []),
    ]
    s = u.stats()
    assert (s.objects, s.merged, s.groups, s.per_robot) == (3, 1, 1, {"robot1": 2, "robot2": 2})
    assert s.pair_tests == 1  # only the pair whose boxes overlap was tested
    assert u.group_of("robot1", 1).robot == "robot2"


def test_unbalanced_or_small_overlap_is_not_merged() -> None:
    u = MapUnion(["a", "b"])
    u.update("a", [slab(1, 0, 10)], full=True, voxel_size=V)
    # a patch inside the slab: IoV 1.0 one way, 0.09 the other (the cushion on the sofa)
    u.update("b", [slab(1, 3, 3, ny=3, y0=3), slab(2, 6, 10)], full=True, voxel_size=V)
    # b's 2 shares x 6..9 with a's 1: IoV 0.4 both ways, below gamma 0.5
    assert len(u.snapshot().objects) == 3 and u.stats().merged == 0
    assert u.stats().pair_tests == 2


def test_ids_are_namespaced_by_robot() -> None:
    u = MapUnion(["robot1", "robot2"])
    u.update("robot1", [slab(5, 0, 10)], full=True, voxel_size=V)
    u.update("robot2", [slab(5, 50, 10)], full=True, voxel_size=V)
    snap = u.snapshot()
    assert [o.id for o in snap.objects] == [10, 11]  # id * 2 + robot number
    assert [(u.origin(o.id).robot, u.origin(o.id).id) for o in snap.objects] == [("robot1", 5), ("robot2", 5)]
    assert u.get("robot2", 5).points[0, 0] == pytest.approx(5.05)
    assert u.get("robot3", 5) is None and u.origin(12) is None
    # one robot: the ids are its own
    one = MapUnion([""])
    one.update("", [slab(5, 0, 10)], full=True, voxel_size=V)
    assert [o.id for o in one.snapshot().objects] == [5] and one.origin(5).robot == ""


def test_removal_from_one_robot_unmerges_and_changes_retest_only_overlapping_objects() -> None:
    u = MapUnion(["robot1", "robot2"])
    u.update("robot1", [slab(1, 0, 10), slab(2, 40, 10)], full=True, voxel_size=V)
    u.update("robot2", [slab(3, 1, 10)], full=True, voxel_size=V)
    assert u.stats().merged == 1
    tests = u.stats().pair_tests
    u.update("robot2", [slab(4, 100, 10)])  # far from everything: nothing tested
    assert u.stats().pair_tests == tests and len(u.snapshot().objects) == 3
    u.update("robot1", [], removed=[1])  # the merged partner leaves robot1's map
    assert sorted(served(u)) == [("robot1", 2, []), ("robot2", 3, []), ("robot2", 4, [])]
    u.update("robot1", [slab(1, 0, 10, voxels=300)])  # it comes back, bigger: robot1's again
    assert sorted(served(u))[0] == ("robot1", 1, [("robot2", 3)])
    assert u.stats().pair_tests == tests + 1
    u.update("robot2", [slab(3, 41, 10)])  # robot2's 3 moves onto robot1's 2: re-merged there
    assert sorted(served(u)) == [("robot1", 1, []), ("robot1", 2, [("robot2", 3)]), ("robot2", 4, [])]
    u.update("robot2", [slab(4, 100, 10)], full=True)  # a full state without 3: it leaves
    assert sorted(served(u)) == [("robot1", 1, []), ("robot1", 2, []), ("robot2", 4, [])]


def test_three_robots_chain_into_one_group() -> None:
    u = MapUnion(["r1", "r2", "r3"])
    u.update("r1", [slab(1, 0, 10)], full=True, voxel_size=V)
    u.update("r2", [slab(1, 1, 10, voxels=200)], full=True, voxel_size=V)
    u.update("r3", [slab(1, 2, 10)], full=True, voxel_size=V)
    assert served(u) == [("r2", 1, [("r1", 1), ("r3", 1)])]
    u.update("r2", [], removed=[1])  # r1 and r3 still overlap (IoV 0.8): they stay merged
    assert served(u) == [("r1", 1, [("r3", 1)])]


def test_mirror_changes_feed_the_union() -> None:
    m = MapMirror()
    m.apply_state(MapVersion("/m", 1, 0, True, objects=[slab(1, 0, 10)]))
    ch = m.take_changes()
    assert ch.full and list(ch.objects) == [1] and not m.take_changes()
    m.offer(MapVersion("/m", 1, 1, False, objects=[slab(2, 20, 10)]))
    m.offer(MapVersion("/m", 1, 2, False, objects=[slab(3, 40, 10)], removed=[2, 1]))
    ch = m.take_changes()
    assert (ch.full, sorted(ch.objects), sorted(ch.removed)) == (False, [3], [1, 2])
    u = MapUnion(["x"])
    u.update("x", [slab(1, 0, 10)], full=True)
    u.update("x", ch.objects.values(), ch.removed)
    assert [o.id for o in u.snapshot().objects] == [3]


def test_an_object_with_huge_bounds_stays_out_of_the_grid_and_is_still_merged() -> None:
    u = MapUnion(["robot1", "robot2"], cell=0.1)
    u.update("robot1", [slab(1, 0, 10)], full=True, voxel_size=V)  # 1 m square: 11 x 11 cells
    blown = slab(1, 2, 10)
    blown.box = OrientedBox(blown.box.center, np.eye(3), np.array([1000.0, 1000.0, 1.0]))  # an outlier's box
    u.update("robot2", [blown], full=True, voxel_size=V)
    assert u._large == {(1, 1)} and all((1, 1) not in c for c in u._grid.values())
    assert served(u) == [("robot1", 1, [("robot2", 1)])] and u.stats().pair_tests == 1
    u.update("robot1", [slab(2, 400, 10)])  # 40 m away, inside the blown box: tested against it only
    assert u.stats().pair_tests == 2 and len(u.snapshot().objects) == 2
    u.update("robot2", [], removed=[1])
    assert u._large == set() and sorted(served(u)) == [("robot1", 1, []), ("robot1", 2, [])]


def test_readers_get_the_last_view_while_a_change_is_applied() -> None:
    import threading

    u = MapUnion(["a", "b"])
    u.update("a", [slab(1, 0, 10)], full=True, voxel_size=V)
    before = u.view()
    got: list = []
    with u._lock:  # a change being applied holds the lock
        t = threading.Thread(target=lambda: got.append(u.view()))
        t.start()
        t.join(2.0)
    assert got == [before]  # answered from the last view, without waiting
    u.update("b", [slab(1, 1, 10)], voxel_size=V)
    after = u.view()
    assert after is not before and after.groups[("b", 1)] == after.groups[("a", 1)]
    assert [o.id for o in before.snapshot.objects] == [2]  # the old view is unchanged


def test_robots_must_be_distinct() -> None:
    with pytest.raises(ValueError):
        MapUnion(["a", "a"])
    with pytest.raises(ValueError):
        MapUnion([])


def test_query_namespaces_and_timeout_are_checked_at_start_up() -> None:
    from core3d_ros.config import ConfigError, from_dict

    assert from_dict({"query": {"namespaces": ["robot1", "/robot2", "fleet/r3"]}}).query.namespaces[1] == "/robot2"
    with pytest.raises(ConfigError, match=r"^query.namespaces\[1\]: '/robot1' is listed twice"):
        from_dict({"query": {"namespaces": ["robot1", "/robot1"]}})
    with pytest.raises(ConfigError, match=r"^query.namespaces\[0\]: '2nd robot' is not a ROS namespace"):
        from_dict({"query": {"namespaces": ["2nd robot"]}})
    with pytest.raises(ConfigError, match=r"^query.fetch_timeout must be in \[0.001, 60.0\], got 0.0"):
        from_dict({"query": {"fetch_timeout": 0.0}})


def graph(rooms: dict[int, tuple[str, list[int]]], note: str = "") -> SceneGraph:
    """One floor (id 1) with ``rooms``: {room id: (label, object ids)}."""
    return SceneGraph(
        note=note, version=3, floors=[Floor(id=1, height=0.0, ceiling=2.5, room_ids=sorted(rooms))],
        rooms=[Room(id=i, floor_id=1, outline=np.zeros((0, 3)), area=1.0, centroid=np.zeros(3), label=lab, object_ids=ids)
               for i, (lab, ids) in rooms.items()],
    )


def test_robots_scene_graphs_side_by_side_on_served_ids() -> None:
    u = MapUnion(["robot1", "robot2"])
    u.update("robot1", [slab(1, 0, 10), slab(2, 30, 10)], full=True, voxel_size=V)
    u.update("robot2", [slab(1, 2, 12), slab(5, 60, 10)], full=True, voxel_size=V)  # its 1 is robot1's 1, bigger
    view = u.view()
    assert view.groups[("robot1", 1)].robot == "robot2"  # merged into robot2's, the bigger
    g = union_scene_graph(view, {
        "robot1": graph({1: ("kitchen", [1, 2]), 2: ("office", [])}, note="one room"),
        "robot2": graph({1: ("kitchen", [5]), 4: ("hall", [1, 99])}),  # 99: not in robot2's table
    }, ["robot1", "robot2"])
    # ids as object ids: id * 2 + robot number; robot1's 1 is served as robot2's 1 (id 3)
    assert [(r.id, r.floor_id, r.label, r.object_ids) for r in g.rooms] == [
        (2, 2, "kitchen", [3, 4]), (4, 2, "office", []), (3, 3, "kitchen", [11]), (9, 3, "hall", [3]),
    ]
    assert [(f.id, f.room_ids) for f in g.floors] == [(2, [2, 4]), (3, [3, 9])]
    assert g.note == "robot1: one room" and g.version == 6
    # a robot without a graph yet adds nothing; none at all: no graph
    only = union_scene_graph(view, {"robot1": None, "robot2": graph({7: ("hall", [5])})}, ["robot1", "robot2"])
    assert [(r.id, r.object_ids) for r in only.rooms] == [(15, [11])]
    assert union_scene_graph(view, {"robot1": None}, ["robot1", "robot2"]) is None
