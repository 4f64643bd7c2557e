"""Free-space evidence (core/fusion/free_space.py) on small scenes computed by hand: a camera at
the origin looking down +z (pose identity), 64x48 pixels, f = 50, voxels of 5 cm.

A wall at z = 2.01 m fills the view; a box's front face at z = 1.01 m fills the centre 20x20
pixels (0.4 m x 0.4 m at 1 m: 8 x 8 voxels). Frames fuse labels 1 (box) and 2 (wall)."""
import numpy as np

from core3d_ros.config import FusionConfig
from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.core.fusion.voxels import unpack

W, H = 64, 48
INTR = CameraIntrinsics(width=W, height=H, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
BOX = (slice(14, 34), slice(22, 42))  # rows, columns
WALL_Z, BOX_Z = 2.01, 1.01
RGB = np.full((H, W, 3), 128, np.uint8)


def cfg(**kw):
    base = dict(voxel_size=0.05, merge_interval=0, min_object_observations=1, min_valid_pixels=10, free_interval=1)
    base.update(kw)
    return FusionConfig(**base)


def frame(box=True, hole=None):
    """Depth and labels: the wall, the box in front of it when ``box``; ``hole`` (a value put
    where the box was: 0, NaN) replaces the depth there."""
    depth = np.full((H, W), WALL_Z, np.float32)
    labels = np.full((H, W), 2, np.int32)
    if box:
        depth[BOX] = BOX_Z
        labels[BOX] = 1
    if hole is not None:
        depth[BOX] = hole
        labels[BOX] = 0
    return depth, labels


def fuse(omap, depth, labels, pose=None, stamp=0.0):
    return omap.integrate_frame(depth, INTR, np.eye(4) if pose is None else pose, RGB, labels, stamp)


def mapped(n=3, **kw):
    omap = ObjectMap(cfg(**kw))
    for i in range(n):
        fuse(omap, *frame(box=True), stamp=float(i))
    return omap


def box_and_wall(omap):
    """(box id, wall id): the objects whose voxels lie at z = 1 m and at z = 2 m."""
    inst = omap.instance_voxels()
    by_z = {oid: int(np.median(unpack(k)[:, 2])) for oid, k in inst.items()}
    box = [o for o, z in by_z.items() if z == 20]
    wall = [o for o, z in by_z.items() if z == 40]
    return (box[0] if box else None), (wall[0] if wall else None)


def test_mapping_the_box_and_the_wall():
    omap = mapped()
    box, wall = box_and_wall(omap)
    assert box is not None and wall is not None
    # The box face: 20 pixels at 1.01 m span 0.404 m, 8 or 9 voxels of 5 cm each way.
    assert 64 <= omap.objects[box].num_voxels <= 81
    # Every box voxel was voted 3 times.
    rows = omap.member_rows(box)
    assert (omap.hits[rows].max(axis=1) == 3).all()


def test_a_removed_box_is_cleared_after_enough_frames_see_through_it():
    omap = mapped()
    box, wall = box_and_wall(omap)
    wall_voxels = omap.objects[wall].num_voxels
    n_box = omap.objects[box].num_voxels
    before = {o.id for o in omap.snapshot().objects}
    assert box in before
    # Box voxels hold 3 hits: they need max(3 observations, ceil(0.5 * 3) = 2) = 3 frames.
    depth, labels = frame(box=False)
    s1 = fuse(omap, depth, labels, stamp=3.0)
    # All box voxels are seen through (the wall lies 1 m behind them, margin 10 cm).
    assert s1.free_voxels == n_box
    assert s1.cleared_voxels == 0
    s2 = fuse(omap, depth, labels, stamp=4.0)
    assert s2.cleared_voxels == 0 and box in omap.objects
    s3 = fuse(omap, depth, labels, stamp=5.0)
    assert s3.cleared_voxels == n_box
    assert s3.removed_objects == [box]
    assert box not in omap.objects
    # The wall lost nothing (the new wall voxels the box hid were added, none taken).
    assert omap.objects[wall].num_voxels >= wall_voxels
    assert omap.objects[wall].cleared_voxels == 0
    # The next snapshot no longer holds the box: publishers send DELETE for ids that left.
    after = {o.id for o in omap.snapshot().objects}
    assert box not in after and wall in after


def test_seen_occupied_again_restarts_the_count():
    omap = mapped()
    box, _ = box_and_wall(omap)
    empty, box_frame = frame(box=False), frame(box=True)
    for f in (empty, empty, box_frame, empty, empty):
        s = fuse(omap, *f)
        assert s.cleared_voxels == 0
    assert box in omap.objects
    assert fuse(omap, *empty).cleared_voxels > 0  # the third see-through in a row


def test_holes_in_depth_are_no_evidence():
    omap = mapped()
    box, _ = box_and_wall(omap)
    n_box = omap.objects[box].num_voxels
    for hole in (0.0, np.nan, np.inf):
        for _ in range(4):
            s = fuse(omap, *frame(box=False, hole=hole))
            assert s.free_voxels == 0 and s.cleared_voxels == 0
    assert omap.objects[box].num_voxels == n_box
    # A hole over part of the box: only voxels whose whole footprint has depth count.
    depth, labels = frame(box=False)
    depth[BOX[0], 22:32] = 0.0  # left half of the box's pixels
    s = fuse(omap, depth, labels)
    assert 0 < s.free_voxels < n_box


def test_depth_just_behind_a_voxel_is_no_evidence():
    """A surface 5 cm (one voxel) behind the box face is within the 2-voxel margin."""
    omap = mapped()
    box, _ = box_and_wall(omap)
    depth, labels = frame(box=True)
    depth[BOX] = BOX_Z + 0.06
    labels[BOX] = 0
    for _ in range(5):
        assert fuse(omap, depth, labels).cleared_voxels == 0
    assert box in omap.objects


def test_switched_off_the_map_only_grows():
    omap = mapped(free_space=False)
    box, _ = box_and_wall(omap)
    for _ in range(5):
        s = fuse(omap, *frame(box=False))
        assert s.free_voxels == 0 and s.cleared_voxels == 0
    assert box in omap.objects


def _floor_frame(height=0.5, max_depth=4.0):
    """A floor 0.5 m below the camera (camera y points down): depth h / ((v - cy) / fy) below the
    horizon, 0 (no reading) above it and beyond max_depth."""
    ry = (np.arange(H) - INTR.cy) / INTR.fy
    z = np.where(ry > 0, height / np.where(ry > 0, ry, 1.0), 0.0)
    z = np.where(z <= max_depth, z, 0.0)
    depth = np.repeat(z[:, None], W, axis=1).astype(np.float32)
    return depth, np.where(depth > 0, 1, 0).astype(np.int32)


def _pose(x=0.0, z=0.0, yaw=0.0, pitch=0.0):
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    T = np.eye(4)
    T[:3, :3] = Ry @ Rx
    T[:3, 3] = [x, 0.0, z]
    return T


def test_a_floor_seen_at_grazing_angles_does_not_erode():
    """The floor is seen down to 7 degrees (0.5 m below, 4 m away); the camera moves and turns
    over it for 30 frames: no floor voxel is ever taken as seen through."""
    omap = ObjectMap(cfg(voxel_size=0.025))
    depth, labels = _floor_frame()
    for _ in range(3):
        fuse(omap, depth, labels, _pose())
    n0 = omap.num_voxels
    rng = np.random.default_rng(0)
    for i in range(30):
        pose = _pose(x=rng.uniform(-0.3, 0.3), z=rng.uniform(-0.3, 0.3), yaw=rng.uniform(-0.2, 0.2))
        # The same floor from another place: depth is a property of the plane, not the pose,
        # for a level camera at the same height.
        s = fuse(omap, depth, labels, pose, stamp=float(i))
        assert s.cleared_voxels == 0
    assert (omap.owner[: omap.num_voxels] >= 0).sum() >= n0


def test_a_thin_pole_in_front_of_a_wall_does_not_erode():
    """A pole one pixel column wide (2 cm at 1 m) in front of the wall, seen for 10 frames."""
    omap = ObjectMap(cfg(voxel_size=0.02, min_segment_voxels=3))
    depth = np.full((H, W), WALL_Z, np.float32)
    labels = np.full((H, W), 2, np.int32)
    depth[:, 31] = BOX_Z
    labels[:, 31] = 1
    for i in range(10):
        s = fuse(omap, depth, labels, stamp=float(i))
        assert s.cleared_voxels == 0
    pole = [o for o, k in omap.instance_voxels().items() if np.median(unpack(k)[:, 2]) < 60]
    assert pole


def test_evidence_is_looked_for_every_free_interval_frames():
    omap = mapped(free_interval=2)  # 3 frames fused: the next is the 4th
    looked = [fuse(omap, *frame(box=False)).free_voxels > 0 for _ in range(4)]
    assert looked == [True, False, True, False]
