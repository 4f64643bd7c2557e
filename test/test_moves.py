"""Moved objects (core/fusion/moves.py) on a scene computed by hand: a camera at the origin
looking down +z (pose identity), 64x48 pixels, f = 50, voxels of 5 cm, every frame a look for
free space. A wall at z = 2.01 m fills the view; a box's front face at z = 1.01 m covers 20x20
pixels, first at place A (columns 22-41, the centre), later at place B (columns 42-61).

At A the face spans x, y in about [-0.19, 0.19] m: voxel centres from -0.175 to 0.175, so its
centroid is (0, 0, 1.025) (z: voxel 20, 1.00-1.05 m) to within a voxel's rounding. B spans x in
[0.21, 0.62]: 0.4 m to the right, same y and z."""
import numpy as np
import pytest

from core3d_ros.config import FusionConfig
from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.core.fusion.records import SegmentObservation

W, H = 64, 48
INTR = CameraIntrinsics(width=W, height=H, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
ROWS = slice(14, 34)
A, B = slice(22, 42), slice(42, 62)
GREY, RED = (128, 128, 128), (200, 30, 30)


def cfg(**kw):
    base = dict(voxel_size=0.05, merge_interval=0, min_object_observations=1, min_valid_pixels=10, free_interval=1)
    base.update(kw)
    return FusionConfig(**base)


def fuse(omap, place, stamp, color=GREY, embeddings=None):
    depth = np.full((H, W), 2.01, np.float32)
    labels = np.full((H, W), 2, np.int32)
    rgb = np.full((H, W, 3), 90, np.uint8)  # the wall
    depth[ROWS, place] = 1.01
    labels[ROWS, place] = 1
    rgb[ROWS, place] = color
    obs = None
    if embeddings is not None:
        obs = [SegmentObservation(embedding=np.asarray(e, np.float32)) for e in embeddings]
    return omap.integrate_frame(depth, INTR, np.eye(4), rgb, labels, float(stamp), obs)


def run(before=3, after=6, gap=0.0, color_after=GREY, emb_before=None, emb_after=None, **kw):
    """The box at A for ``before`` frames (stamps 0, 1, ...), then at B for ``after`` frames
    (stamps continue, ``gap`` seconds later). Returns the map, the box's id at A and the ids
    of every object moved, with its (object, removed object) pairs from the stats."""
    omap = ObjectMap(cfg(**kw))
    for i in range(before):
        fuse(omap, A, i, embeddings=emb_before)
    inst = omap.instance_voxels()
    a_id = min(inst, key=lambda o: len(inst[o]))  # the box (the wall is bigger)
    pairs = []
    for i in range(after):
        s = fuse(omap, B, before + gap + i, color=color_after, embeddings=emb_after)
        pairs += s.moved_objects
    return omap, a_id, pairs


def test_a_box_carried_to_another_place_is_reported_moved():
    omap, a_id, pairs = run()
    assert a_id not in omap.objects or omap.objects[a_id].num_voxels == 0  # removed by free space
    assert len(pairs) == 1
    b_id, gone = pairs[0]
    assert gone == a_id and b_id != a_id
    info = omap.snapshot().by_id()[b_id]
    np.testing.assert_allclose(info.moved_from, [0.0, 0.0, 1.025], atol=0.03)
    np.testing.assert_allclose(info.centroid, [0.4, 0.0, 1.025], atol=0.05)
    # A's voxels see through from stamp 3 on: 3 looks (stamps 3, 4, 5) clear it at stamp 5
    assert info.moved_at == pytest.approx(5.0)
    assert a_id not in omap.snapshot().by_id()


def test_another_colour_is_not_the_same_box():
    # mean colours (128, 128, 128) and (200, 30, 30) / 255 lie 0.49 apart, above 0.12
    omap, a_id, pairs = run(color_after=RED)
    assert pairs == [] and all(o.moved_from is None for o in omap.snapshot().objects)


def test_an_appearance_outside_the_window_is_not_a_move():
    # B is first seen at stamp 3, A removed at stamp 5: 2 s apart
    omap, _, pairs = run(move_window=1.0)
    assert pairs == []
    omap, _, pairs = run(move_window=2.0)
    assert len(pairs) == 1


def test_moves_off():
    _, _, pairs = run(move_window=0.0)
    assert pairs == []


def test_embeddings_decide_when_both_have_them():
    e = np.eye(4, dtype=np.float32)
    # the same embedding (cosine 1) and another colour: moved (embeddings outrank colour)
    _, _, pairs = run(color_after=RED, emb_before=[e[0], e[3]], emb_after=[e[0], e[3]])
    assert len(pairs) == 1
    # an orthogonal embedding (cosine 0 < 0.85), same colour: not moved
    _, _, pairs = run(emb_before=[e[0], e[3]], emb_after=[e[1], e[3]])
    assert pairs == []


def test_the_same_place_seen_again_is_not_a_move():
    """A box removed and a new alike box at the same place (within move_min_distance) is the
    place seen again, not a move: with a 0.5 m minimum, B (0.4 m away) is not a move."""
    _, _, pairs = run(move_min_distance=0.5)
    assert pairs == []


def test_moved_from_reaches_the_ros_message():
    pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh)")
    from core3d_ros.ros.conversions import objects as conv

    omap, _, pairs = run()
    snap = omap.snapshot()
    moved = conv.object_to_msg(snap.by_id()[pairs[0][0]])
    assert moved.has_moved_from
    np.testing.assert_allclose([moved.moved_from.x, moved.moved_from.y, moved.moved_from.z], [0.0, 0.0, 1.025], atol=0.03)
    assert moved.moved_at.sec == 5 and moved.moved_at.nanosec == 0
    others = [conv.object_to_msg(o) for o in snap.objects if o.id != pairs[0][0]]
    assert others and not any(m.has_moved_from for m in others)
