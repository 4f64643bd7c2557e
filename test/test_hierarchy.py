"""Floors, rooms and room keyframes (core/hierarchy/) on hand-made surfaces, and the up direction."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.config import ConfigError, HierarchyConfig, from_dict
from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.hierarchy.builder import HierarchyBuilder
from core3d_ros.core.hierarchy.keyframes import RoomKeyframes, visible_objects
from core3d_ros.core.hierarchy.up import camera_up, estimate_up, refine_with_planes, resolve_up

S = 0.05  # spacing of the hand-made surface points (the "voxel size")


def floor_pts(x0, y0, x1, y1, z=0.0):
    x, y = np.meshgrid(np.arange(x0, x1, S), np.arange(y0, y1, S))
    return np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], axis=1)


def wall_pts(p, q, z=0.0, height=2.6, door=None):
    """A vertical sheet from p to q (x, y); ``door`` = (centre along the wall in metres, width):
    no points there below 2.1 m."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    length = np.linalg.norm(q - p)
    s, h = np.meshgrid(np.arange(0.0, length, S), np.arange(0.0, height, S))
    s, h = s.ravel(), h.ravel()
    if door is not None:
        c, w = door
        keep = ~((np.abs(s - c) < w / 2) & (h < 2.1))
        s, h = s[keep], h[keep]
    xy = p + np.outer(s / length, q - p)
    return np.column_stack([xy, z + h])


def box_walls(x0, y0, x1, y1, z=0.0):
    return [wall_pts((x0, y0), (x1, y0), z), wall_pts((x1, y0), (x1, y1), z), wall_pts((x1, y1), (x0, y1), z), wall_pts((x0, y1), (x0, y0), z)]


def feed(builder, points, block=(0, 0, 0)):
    """All points as one block (re-sent blocks replace their rows)."""
    pts = np.asarray(points, float)
    builder.add_surface(np.array([block]), pts, np.zeros(len(pts), np.int64))


class Obj:
    def __init__(self, oid, points):
        self.id, self.points = oid, np.asarray(points, float)


def two_rooms(z=0.0):
    """Rooms A = [0, 4] x [0, 3] and B = [4, 8] x [0, 3], a 0.9 m door between them."""
    return np.concatenate([
        floor_pts(0, 0, 8, 3, z), *box_walls(0, 0, 8, 3, z), wall_pts((4, 0), (4, 3), z, door=(1.5, 0.9)),
    ])


def builder_with(points, cameras, cfg=None, block=(0, 0, 0)):
    b = HierarchyBuilder(cfg or HierarchyConfig(), S)
    feed(b, points, block)
    for c in cameras:
        b.add_camera(np.asarray(c, float))
    return b


def loop(cx, cy, z=1.4, r=0.6, n=12):
    return [(cx + r * np.cos(t), cy + r * np.sin(t), z) for t in np.linspace(0, 2 * np.pi, n, endpoint=False)]


def test_two_rooms_joined_by_a_door_are_two_rooms_and_objects_go_to_theirs():
    b = builder_with(two_rooms(), loop(2, 1.5) + loop(6, 1.5))
    chair = Obj(7, floor_pts(6.2, 1.0, 6.6, 1.4, 0.45))  # in B
    lamp = Obj(8, floor_pts(0.5, 0.5, 0.8, 0.8, 1.2))  # in A
    g = b.update([chair, lamp], now=0.0)
    assert g is not None and len(g.floors) == 1 and abs(g.floors[0].height) < 0.03
    assert len(g.rooms) == 2, g.note
    a, bb = sorted(g.rooms, key=lambda r: r.centroid[0])
    for room, x in ((a, 2.0), (bb, 6.0)):
        assert abs(room.area - 12.0) < 1.5, room.area  # 4 x 3 m, the wall cells shared out
        assert abs(room.centroid[0] - x) < 0.3 and abs(room.centroid[1] - 1.5) < 0.3
        assert abs(room.outline[:, 2]).max() < 0.03  # drawn at the floor's height
    assert b.object_room(7) == bb.id and bb.object_ids == [7]
    assert b.object_room(8) == a.id and a.object_ids == [8]
    assert g.note == "" and g.splits == 0 and g.merges == 0
    # the outline is counter-clockwise seen from above (z up)
    x, y = bb.outline[:, 0], bb.outline[:, 1]
    assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0


def test_a_saved_and_loaded_hierarchy_keeps_its_floor_and_room_ids(tmp_path):
    import copy

    from core3d_ros.core.mapio import hierarchy_arrays, load_hierarchy

    cams = loop(2, 1.5) + loop(6, 1.5)
    b = builder_with(two_rooms(), cams)
    chair, lamp = Obj(7, floor_pts(6.2, 1.0, 6.6, 1.4, 0.45)), Obj(8, floor_pts(0.5, 0.5, 0.8, 0.8, 1.2))
    g = copy.deepcopy(b.update([chair, lamp], now=0.0))
    assert len(g.camera_path) == len(cams) and np.allclose(g.camera_path, cams)  # 0.31 m apart: all kept
    # ids a new builder would not give: floor 3, rooms 4 (west) and 7 (east)
    west, east = sorted(g.rooms, key=lambda r: r.centroid[0])
    west.id, east.id = 4, 7
    for r in g.rooms:
        r.floor_id = 3
    g.floors[0].id, g.floors[0].room_ids = 3, [4, 7]
    np.savez(tmp_path / "h.npz", **hierarchy_arrays(g))
    loaded = load_hierarchy(tmp_path / "h.npz")
    assert np.array_equal(loaded.camera_path, g.camera_path)
    # a new builder seeded with it, fed the map's surface (no camera yet): the same floor and rooms
    seeded = HierarchyBuilder(HierarchyConfig(), S)
    assert seeded.seed(loaded) == ""
    feed(seeded, two_rooms())
    again = seeded.update([chair, lamp], now=0.0)
    assert [(f.id, f.room_ids) for f in again.floors] == [(3, [4, 7])], again.note
    assert (seeded.object_room(8), seeded.object_room(7)) == (4, 7)
    for r in again.rooms:
        old = loaded.room(r.id)
        assert abs(r.area - old.area) < 1e-9 and np.allclose(r.centroid, old.centroid)
    # without the seed: the same rooms under new ids, and a floor found without a camera path
    fresh = HierarchyBuilder(HierarchyConfig(), S)
    feed(fresh, two_rooms())
    g_fresh = fresh.update([], now=0.0)
    assert [r.id for r in g_fresh.rooms] == [1, 2] and [f.id for f in g_fresh.floors] == [1] and "no camera path" in g_fresh.note
    # a hierarchy of another up is not used
    tilted = copy.deepcopy(loaded)
    tilted.up = np.array([0.0, 1.0, 0.0])
    other = HierarchyBuilder(HierarchyConfig(), S)
    assert "is not this map's" in other.seed(tilted) and len(other._cameras) == 0


def test_rooms_in_a_map_whose_up_is_not_z():
    """The two rooms in a 7-Scenes-like frame (up = -y) and in an arbitrary rotation."""
    for R in (np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]), _rotation(5)):
        up = R @ [0.0, 0.0, 1.0]
        b = HierarchyBuilder(HierarchyConfig(), S, up=up, up_source="dataset")
        feed(b, two_rooms() @ R.T)
        for c in loop(2, 1.5) + loop(6, 1.5):
            b.add_camera(R @ np.asarray(c))
        chair = Obj(7, floor_pts(6.2, 1.0, 6.6, 1.4, 0.45) @ R.T)
        g = b.update([chair], now=0.0)
        assert len(g.floors) == 1 and abs(g.floors[0].height) < 0.03 and len(g.rooms) == 2
        assert g.up_source == "dataset" and np.allclose(g.up, up)
        room_b = g.room(b.object_room(7))
        assert abs(room_b.area - 12.0) < 1.5
        assert np.allclose(R.T @ room_b.centroid, [6.0, 1.5, 0.0], atol=0.3)
        assert np.allclose(room_b.outline @ up, 0.0, atol=0.03)


def test_open_plan_is_one_room_with_a_note():
    pts = np.concatenate([floor_pts(0, 0, 8, 4), *box_walls(0, 0, 8, 4)])
    g = builder_with(pts, loop(2, 2) + loop(6, 2)).update([], now=0.0)
    assert len(g.floors) == 1 and len(g.rooms) == 1
    assert abs(g.rooms[0].area - 32.0) < 2.5
    assert "one room" in g.note


def test_no_floor_surface_gives_one_floor_and_one_room_with_a_note():
    table = floor_pts(0, 0, 1.0, 0.6, 0.75)  # a table top seen from a hand-held camera
    g = builder_with(table, loop(0.5, 0.3, z=1.3, r=0.2)).update([Obj(1, table)], now=0.0)
    assert len(g.floors) == 1 and len(g.rooms) == 1
    assert "no floor surface" in g.note
    assert g.rooms[0].object_ids == [1]


def test_nothing_fed_is_an_empty_graph_with_a_note():
    g = HierarchyBuilder(HierarchyConfig(), S).update([], now=0.0, force=True)
    assert g.floors == [] and g.rooms == [] and "no surface" in g.note


def test_two_storeys_are_two_floors_each_with_its_rooms():
    pts = np.concatenate([two_rooms(0.0), floor_pts(0, 0, 8, 3, 2.7), two_rooms(3.0), floor_pts(0, 0, 8, 3, 5.7)])
    cams = loop(2, 1.5) + loop(6, 1.5) + loop(2, 1.5, z=4.4) + loop(6, 1.5, z=4.4)
    b = builder_with(pts, cams)
    g = b.update([Obj(3, floor_pts(6.2, 1.0, 6.6, 1.4, 3.45))], now=0.0)
    assert [round(f.height, 2) for f in g.floors] == [0.0, 3.0]
    assert abs(g.floors[0].ceiling - 3.0) < 0.03 and abs(g.floors[1].ceiling - 5.7) < 0.03
    assert [len(f.room_ids) for f in g.floors] == [2, 2]
    upstairs = g.room(b.object_room(3))
    assert upstairs.floor_id == g.floors[1].id and upstairs.centroid[0] > 4
    # a point above the top floor's ceiling is in no room
    assert b.room_at(np.array([[6.0, 1.5, 7.5]])).tolist() == [0]


def test_a_camera_on_the_stairs_between_storeys_adds_no_floor_and_is_said():
    pts = np.concatenate([two_rooms(0.0), floor_pts(0, 0, 8, 3, 2.7), two_rooms(3.0), floor_pts(0, 0, 8, 3, 5.7)])
    stairs = [(7.0, 0.5 + 2.0 * t, 1.4 + 3.0 * t) for t in np.linspace(0, 1, 16)]
    cams = loop(2, 1.5) + loop(6, 1.5) + stairs + loop(2, 1.5, z=4.4) + loop(6, 1.5, z=4.4)
    g = builder_with(pts, cams).update([], now=0.0)
    assert [round(f.height, 2) for f in g.floors] == [0.0, 3.0]
    assert "stairs" in g.note and [len(f.room_ids) for f in g.floors] == [2, 2]


def test_room_ids_stay_when_a_room_grows_and_a_new_room_gets_a_new_id():
    cfg = HierarchyConfig(period=1.0)
    b = HierarchyBuilder(cfg, S)
    # first only room A's floor and walls, door opening onto unknown space
    a_only = np.concatenate([floor_pts(0, 0, 3, 3), wall_pts((0, 0), (4, 0)), wall_pts((0, 3), (4, 3)), wall_pts((0, 0), (0, 3)),
                             wall_pts((4, 0), (4, 3), door=(1.5, 0.9))])
    feed(b, floor_pts(0, 0, 2, 3), block=(0, 0, 0))
    feed(b, a_only, block=(1, 0, 0))
    for c in loop(2, 1.5):
        b.add_camera(np.asarray(c))
    g1 = b.update([], now=0.0)
    assert len(g1.rooms) == 1
    rid = g1.rooms[0].id
    area1 = g1.rooms[0].area
    # the rest of A is seen: block 0 is re-sent with all of A's floor (replacing its rows)
    feed(b, floor_pts(0, 0, 4, 3), block=(0, 0, 0))
    assert b.update([], now=0.5) is None  # not due yet (hierarchy.period)
    g2 = b.update([], now=1.0)
    assert [r.id for r in g2.rooms] == [rid] and g2.rooms[0].area > area1 + 1.0
    # then room B behind the door
    feed(b, np.concatenate([floor_pts(4, 0, 8, 3), wall_pts((4, 0), (8, 0)), wall_pts((8, 0), (8, 3)), wall_pts((8, 3), (4, 3))]), block=(2, 0, 0))
    for c in loop(6, 1.5):
        b.add_camera(np.asarray(c))
    g3 = b.update([], now=2.0)
    assert len(g3.rooms) == 2
    a = g3.room(rid)
    assert a is not None and a.centroid[0] < 4
    assert [r.id for r in g3.rooms if r.id != rid][0] > rid
    assert g3.splits == 0 and g3.merges == 0 and g3.version == 3


def test_a_wall_built_across_an_open_room_is_a_split_event():
    cfg = HierarchyConfig(period=0.0)
    open_plan = np.concatenate([floor_pts(0, 0, 8, 3), *box_walls(0, 0, 8, 3)])
    b = builder_with(open_plan, loop(2, 1.5) + loop(6, 1.5), cfg)
    left, right = Obj(1, floor_pts(1.0, 1.0, 1.4, 1.4, 0.45)), Obj(2, floor_pts(6.2, 1.0, 6.6, 1.4, 0.45))
    g1 = b.update([left, right], now=0.0)
    assert len(g1.rooms) == 1 and g1.rooms[0].object_ids == [1, 2]
    feed(b, wall_pts((4, 0), (4, 3), door=(1.5, 0.9)), block=(5, 0, 0))
    g2 = b.update([left, right], now=1.0)  # the objects did not change; their rooms did
    assert len(g2.rooms) == 2 and g2.splits == 1
    assert g1.rooms[0].id in [r.id for r in g2.rooms]  # one part keeps the id
    assert b.object_room(1) != b.object_room(2)
    assert g2.room(b.object_room(2)).centroid[0] > 4 and g2.room(b.object_room(1)).centroid[0] < 4


def test_room_outline_area_and_centroid_from_a_hand_made_label_grid():
    """A floor grid of 7 x 9 cells (b rows, a columns) at global cell (10, -3), cells of 0.1 m,
    up z (ground a, b = x, y). Room 1: cells b 0-2, a 0-3 (against the grid's top and left edges).
    Room 3 (there is no room 2): a 3 x 3 block at b 4-6, a 6-8 (the bottom-right corner) and a
    lone cell at b 0, a 8; its outline is the block's."""
    from core3d_ros.core.hierarchy.builder import _FloorState

    b = HierarchyBuilder(HierarchyConfig(cell_size=0.1), S)
    labels = np.zeros((7, 9), np.int32)
    labels[0:3, 0:4] = 1
    labels[4:7, 6:9] = 3
    labels[0, 8] = 3
    b._floors = [_FloorState(id=1, height=0.5, ceiling=3.0, origin=np.array([10, -3]), labels=labels, room_ids=[1, 3])]
    rooms = {r.id: r for r in b._build_graph("").rooms}
    assert sorted(rooms) == [1, 3]

    def at(a, bb):  # the centre of cell (a, b) of the grid, in metres at the floor's height
        return ((a + 10 + 0.5) * 0.1, (bb - 3 + 0.5) * 0.1, 0.5)

    expect = {1: (12, (1.5, 1.0), [(0, 0), (3, 0), (3, 2), (0, 2)]), 3: (10, (7.1, 4.5), [(6, 4), (8, 4), (8, 6), (6, 6)])}
    for rid, (cells, (ca, cb), corners) in expect.items():
        r = rooms[rid]
        assert np.isclose(r.area, cells * 0.01)
        assert np.allclose(r.centroid, at(ca, cb))
        assert sorted(map(tuple, np.round(r.outline, 6))) == sorted(tuple(np.round(at(a, bb), 6)) for a, bb in corners)
        x, y = r.outline[:, 0], r.outline[:, 1]
        assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # counter-clockwise


def test_a_stray_point_far_away_does_not_blow_up_the_grid():
    pts = np.concatenate([two_rooms(), [[5000.0, -3000.0, 0.5]]])
    g = builder_with(pts, loop(2, 1.5) + loop(6, 1.5)).update([], now=0.0)
    assert len(g.rooms) == 2 and "clipped" in g.note


def test_re_sent_blocks_replace_their_rows():
    b = HierarchyBuilder(HierarchyConfig(), S)
    feed(b, floor_pts(0, 0, 2, 2))
    once = b._hist.copy()
    feed(b, floor_pts(0, 0, 2, 2))
    assert np.array_equal(b._hist, once)
    feed(b, np.zeros((0, 3)))  # the block emptied
    assert b._hist.sum() == 0 and b.stats["blocks"] == 0


def test_bad_surface_input_is_refused_or_skipped():
    b = HierarchyBuilder(HierarchyConfig(), S)
    with pytest.raises(ValueError):
        b.add_surface(np.zeros((1, 3)), np.zeros((3, 3)), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        b.add_surface(np.zeros((1, 3)), np.zeros((1, 3)), np.array([3]))
    b.add_surface(np.zeros((1, 3)), np.array([[np.nan, 0, 0], [1.0, 1.0, 0.0]]), np.zeros(2, np.int64))
    assert b._hist.sum() == 1
    b.add_camera(np.array([np.inf, 0.0, 0.0]))
    assert len(b._cameras) == 0


# ------------------------------------------------------------------------------ up direction
def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    return q * np.sign(np.linalg.det(q))


def _angle(a, b):
    return np.degrees(np.arccos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


@pytest.fixture(scope="module")
def room():
    from core3d_ros.core.datasets import make_scene

    return make_scene(seed=0, num_frames=24, width=96, height=72)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_up_is_estimated_from_rotated_cameras_and_floor(room, seed):
    R = _rotation(seed)
    T = np.eye(4)
    T[:3, :3] = R
    frames = [room[i] for i in range(0, len(room), 4)]
    poses = [T @ room.pose(i) for i in range(len(room))]
    for f in frames:
        f.pose = T @ f.pose
    truth = R @ np.array([0.0, 0.0, 1.0])
    cam, agreement = camera_up(poses)
    assert agreement > 0.8 and _angle(cam, truth) < 10  # the loop's cameras pitch down, evenly
    up, detail = estimate_up(poses, frames)
    assert _angle(up, truth) < 1.0, detail
    assert "refined" in detail


def test_refinement_needs_horizontal_planes():
    up = np.array([0.0, 0.0, 1.0])
    walls = np.array([[1.0, 0.0, 0.0]] * 500 + [[0.0, 1.0, 0.0]] * 500)
    same, used = refine_with_planes(up, walls)
    assert used == 0 and np.allclose(same, up)
    # the room tilted by 0.1 rad about y from the guess: floor and walls alike
    c, s = np.cos(0.1), np.sin(0.1)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    floor = np.tile(R @ up, (500, 1))
    got, used = refine_with_planes(up, np.concatenate([walls @ R.T, floor]))
    assert used == 500 and _angle(got, R @ up) < 0.1


def test_rolling_cameras_cannot_say_and_up_falls_back_to_z():
    poses = []
    for a in np.linspace(0, 2 * np.pi, 8, endpoint=False):  # image-down all around the horizon
        T = np.eye(4)
        c, s = np.cos(a), np.sin(a)
        T[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        poses.append(T)
    assert estimate_up(poses) is None

    class Rolling:
        def __len__(self):
            return len(poses)

        def pose(self, i):
            return poses[i]

        def __getitem__(self, i):
            raise ValueError("no images")

    up, source, _ = resolve_up([0.0, 0.0, 0.0], Rolling())
    assert source == "default" and np.allclose(up, [0, 0, 1])


def test_resolve_up_parameter_dataset_default(room):
    up, source, _ = resolve_up([0.0, 2.0, 0.0], room)
    assert source == "parameter" and np.allclose(up, [0, 1, 0])
    up, source, _ = resolve_up([0.0, 0.0, 0.0], room)
    assert source == "dataset" and np.allclose(up, [0, 0, 1])
    up, source, _ = resolve_up([0.0, 0.0, 0.0], None)
    assert source == "default" and np.allclose(up, [0, 0, 1])


def test_seven_scenes_says_up_is_minus_y():
    from core3d_ros.core.datasets.sevenscenes import SevenScenes

    assert SevenScenes.up == (0.0, -1.0, 0.0)


def test_up_and_hierarchy_parameters_are_validated():
    assert from_dict({"retrieval": {"up_axis": [0.0, 0.0, 0.0]}}).retrieval.up_axis == [0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="retrieval.up_axis"):
        from_dict({"retrieval": {"up_axis": [0.0, 1.0]}})
    with pytest.raises(ConfigError, match="retrieval.up_axis"):
        from_dict({"retrieval": {"up_axis": [1e-9, 0.0, 0.0]}})
    with pytest.raises(ConfigError, match="hierarchy.wall_low"):
        from_dict({"hierarchy": {"wall_low": 2.0, "wall_high": 1.5}})
    with pytest.raises(ConfigError, match="hierarchy.min_camera_height"):
        from_dict({"hierarchy": {"min_camera_height": 2.5}})


# ------------------------------------------------------------------------------ room keyframes
K = CameraIntrinsics(64, 48, 40.0, 40.0, 31.5, 23.5)


def looking_down(x, y, z=1.4, yaw=0.0):
    """Camera-to-world pose at (x, y, z) looking straight down (image x along yaw)."""
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, 0] = [c, s, 0]
    T[:3, 1] = [s, -c, 0]
    T[:3, 2] = [0, 0, -1]
    T[:3, 3] = [x, y, z]
    return T


def test_room_keyframes_cover_each_room_with_a_bounded_set():
    b = builder_with(two_rooms(), loop(2, 1.5) + loop(6, 1.5))
    chair = Obj(7, floor_pts(1.9, 1.4, 2.1, 1.6, 0.0))
    b.update([chair], now=0.0)
    rk = RoomKeyframes(HierarchyConfig(keyframes_per_room=2))
    high, low = np.full((48, 64), 1.4, np.float32), np.full((48, 64), 1.0, np.float32)  # the floor below
    # 1.0 m above the floor the view is 1.6 m wide: x in [1.2, 2.8] of room A = [0, 4]
    first = rk.offer(0.0, looking_down(2.0, 1.5, z=1.0), K, low, b, objects=[chair], stride=2)
    a = int(b.room_at(np.array([[2.0, 1.5, 0.0]]))[0])
    assert first is not None and first.room_id == a and first.object_ids == [7]
    assert rk.offer(0.1, looking_down(2.0, 1.5, z=1.0), K, low, b, stride=2) is None  # nothing new
    other = rk.offer(0.2, looking_down(6.0, 1.5), K, high, b, stride=2)
    assert other is not None and other.room_id not in (0, a) and other.object_ids == []
    # 1.4 m up: 2.24 m wide. [0, 2.02] adds [0, 1.2]: kept, room A is full (2)
    second = rk.offer(0.3, looking_down(0.9, 1.5), K, high, b, stride=2)
    assert second is not None and len(rk.of_room(a)) == 2
    # [1.98, 4] adds [2.8, 4] (1.2 m), more than the first covers alone ([2.02, 2.8]): it goes
    third = rk.offer(0.4, looking_down(3.1, 1.5), K, high, b, stride=2)
    assert third is not None and rk.stats["replaced"] == 1
    assert [k.id for k in rk.of_room(a)] == [second.id, third.id]
    g = rk.apply(b.graph)
    assert g.room(a).keyframe_ids == [second.id, third.id] and g.room(other.room_id).keyframe_ids == [other.id]
    # a byte budget below two views keeps one
    small = RoomKeyframes(HierarchyConfig(keyframe_bytes=first.nbytes + 10))
    small.offer(0.0, looking_down(2.0, 1.5, z=1.0), K, low, b, stride=2)
    small.offer(0.2, looking_down(6.0, 1.5), K, high, b, stride=2)
    assert len(small.frames) == 1 and small.stats["dropped_for_bytes"] == 1


def test_a_view_before_any_room_is_not_kept():
    b = HierarchyBuilder(HierarchyConfig(), S)
    rk = RoomKeyframes(HierarchyConfig())
    assert rk.offer(0.0, looking_down(2.0, 1.5), K, np.full((48, 64), 1.4, np.float32), b) is None
    assert rk.stats["no_room"] == 1


def test_visible_objects_respects_occlusion():
    depth = np.full((48, 64), 1.4, np.float32)
    on_floor = Obj(1, floor_pts(1.9, 1.4, 2.1, 1.6, 0.0))
    under_floor = Obj(2, floor_pts(1.9, 1.4, 2.1, 1.6, -0.5))  # behind the surface the depth sees
    behind_camera = Obj(3, floor_pts(1.9, 1.4, 2.1, 1.6, 2.0))
    assert visible_objects([on_floor, under_floor, behind_camera], looking_down(2.0, 1.5), K, depth) == [1]
