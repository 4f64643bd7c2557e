"""The geometry layer (TSDF at sensor rate) against Open3D's own integration and the true surface."""
from __future__ import annotations

import numpy as np
import pytest

o3d = pytest.importorskip("open3d")
import open3d.core as o3c  # noqa: E402

from core3d_ros.core.camera import backproject  # noqa: E402
from core3d_ros.core.datasets import make_scene  # noqa: E402
from core3d_ros.core.tsdf import GeometryError, GeometryLayer  # noqa: E402

VOXEL = 0.05


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=0, num_frames=6)


def _reference_vbg(scene, frames):
    """Open3D's own TSDF integration of the frames, fed metres and float colours directly."""
    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)),
        voxel_size=VOXEL,
        block_resolution=8,
        block_count=1000,
        device=o3c.Device("CPU:0"),
    )
    for i in frames:
        f = scene[i]
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(f.depth, np.float32)))
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(f.rgb, np.float32)))
        K = o3c.Tensor(f.intrinsics.matrix, o3c.float64)
        E = o3c.Tensor(np.linalg.inv(f.pose), o3c.float64)
        blocks = vbg.compute_unique_block_coordinates(depth, K, E, 1.0, 5.0, 4.0)
        vbg.integrate(blocks, depth, color, K, E, 1.0, 5.0, 4.0)
    return vbg


def test_tsdf_matches_open3ds_own_integration(scene):
    layer = GeometryLayer(VOXEL, max_depth=5.0, clear=False)  # clearing integrates more blocks
    for i in range(len(scene)):
        layer.integrate(scene[i])
    ref = _reference_vbg(scene, range(len(scene)))
    assert layer.num_blocks == int(ref.hashmap().size())
    keys = ref.hashmap().key_tensor()[ref.hashmap().active_buf_indices().to(o3c.int64)]
    ours_buf, ok = layer.vbg.hashmap().find(keys)
    assert bool(ok.all().item())
    ref_buf, _ = ref.hashmap().find(keys)
    ours = layer.vbg.attribute("tsdf")[ours_buf.to(o3c.int64)].numpy().ravel()
    theirs = ref.attribute("tsdf")[ref_buf.to(o3c.int64)].numpy().ravel()
    w_ours = layer.vbg.attribute("weight")[ours_buf.to(o3c.int64)].numpy().ravel()
    w_theirs = ref.attribute("weight")[ref_buf.to(o3c.int64)].numpy().ravel()
    # The same voxels observed, and the same signed distances, up to the millimetre rounding of
    # our uint16 depth input (which moves a few voxels across the truncation boundary).
    assert np.count_nonzero((w_ours > 0) != (w_theirs > 0)) <= 1e-3 * np.count_nonzero(w_theirs > 0)
    both = (w_ours > 0) & (w_theirs > 0)
    assert np.percentile(np.abs(ours[both] - theirs[both]), 99) < 5e-3


def test_surface_lies_on_the_true_surface(scene):
    from scipy.spatial import cKDTree

    layer = GeometryLayer(VOXEL, max_depth=5.0)
    truth = []
    for i in range(len(scene)):
        f = scene[i]
        layer.integrate(f)
        truth.append(backproject(f.depth, f.intrinsics, f.pose, stride=2)[0])
    points, colors, _ = layer.surface(layer.take_dirty())
    assert len(points) > 5000 and colors.dtype == np.uint8
    d, _ = cKDTree(np.concatenate(truth)).query(points)
    assert np.percentile(d, 95) < VOXEL  # within a voxel of a measured point
    assert np.median(d) < VOXEL / 3


def test_only_dirty_blocks_are_read(scene):
    layer = GeometryLayer(VOXEL, max_depth=5.0, clear=False)
    for i in range(4):
        layer.integrate(scene[i])
    everything = layer.take_dirty()
    assert len(layer.take_dirty()) == 0  # taken
    touched = layer.integrate(scene[4])
    dirty = layer.take_dirty()
    assert len(dirty) == touched < len(everything) + touched
    _, _, block_of = layer.surface(dirty)
    assert set(block_of.tolist()) <= set(range(len(dirty)))
    # the frame's own blocks, as Open3D computes them
    f = scene[4]
    depth = o3d.t.geometry.Image(o3c.Tensor(np.round(f.depth * 1000).astype(np.uint16)))
    expect = layer.vbg.compute_unique_block_coordinates(
        depth, o3c.Tensor(f.intrinsics.matrix, o3c.float64), o3c.Tensor(np.linalg.inv(f.pose), o3c.float64), 1000.0, 5.0, 4.0
    ).numpy()
    assert {tuple(b) for b in dirty.tolist()} == {tuple(b) for b in expect.tolist()}


def test_save_and_load_round_trip(scene, tmp_path):
    layer = GeometryLayer(VOXEL, max_depth=5.0)
    for i in range(3):
        layer.integrate(scene[i])
    path = layer.save(tmp_path / "map.geometry.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.geometry.npz"]  # no temporary left
    loaded = GeometryLayer.load(path, max_depth=5.0)
    assert loaded.num_blocks == layer.num_blocks and loaded.voxel_size == pytest.approx(VOXEL)
    blocks = layer.take_dirty()
    a, _, _ = layer.surface(blocks)
    b, _, _ = loaded.surface(blocks)
    assert np.array_equal(a, b)


def test_an_empty_layer_saves_and_loads(tmp_path):
    path = GeometryLayer(VOXEL, max_depth=5.0).save(tmp_path / "empty.geometry.npz")
    loaded = GeometryLayer.load(path, max_depth=5.0)
    assert loaded.num_blocks == 0 and loaded.voxel_size == pytest.approx(VOXEL)


def test_damaged_geometry_files_are_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GeometryError, match="cannot read"):
        GeometryLayer.load(bad, max_depth=5.0)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(GeometryError, match="not a geometry file"):
        GeometryLayer.load(tmp_path / "other.npz", max_depth=5.0)
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as z:
        z.write(tmp_path / "pickled.npy", "voxel_size.npy")
    with pytest.raises(GeometryError):
        GeometryLayer.load(tmp_path / "pickled.npz", max_depth=5.0)
    with pytest.raises(GeometryError, match="no geometry file"):
        GeometryLayer.load(tmp_path / "missing.npz", max_depth=5.0)


@pytest.mark.skipif(o3c.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(GeometryError, match="geometry.device='cuda'"):
        GeometryLayer(VOXEL, max_depth=5.0, device="cuda")


def test_mapper_saves_and_loads_its_tsdf_beside_the_map(scene, tmp_path):
    from core3d_ros.config import MapperConfig
    from core3d_ros.core.mapper import Mapper, geometry_path

    cfg = MapperConfig()
    cfg.fusion.voxel_size = VOXEL
    mapper = Mapper(cfg, segment=False)
    for i in range(3):
        mapper.integrate_geometry(scene[i])
    written = mapper.save(str(tmp_path / "room"))
    assert written.endswith("room.npz") and (tmp_path / "room.geometry.npz").is_file()
    assert geometry_path(written) == str(tmp_path / "room.geometry.npz")
    other = Mapper(cfg, segment=False)
    other.load(written)
    assert other.geometry.num_blocks == mapper.geometry.num_blocks > 0
    assert mapper.geometry.carve and other.geometry.carve  # geometry.carve reaches the layer, loaded or not
    assert mapper.geometry.carve_interval == other.geometry.carve_interval == cfg.geometry.carve_interval
    (tmp_path / "room.geometry.npz").write_bytes(b"damaged")
    before = other.geometry
    with pytest.raises(ValueError, match="geometry"):
        other.load(written)
    assert other.geometry is before  # a damaged TSDF leaves the loaded map as it was


# TSDF clearing on a scene computed by hand: a camera at the origin looking down +z (pose
# identity), 64x48 pixels, f = 50, voxels of 5 cm (blocks of 0.4 m), truncation 4 voxels (0.2 m).
# A wall at z = 2.01 m fills the view; a box's front face at z = 1.01 m fills the centre 20x20
# pixels (0.4 m x 0.4 m).
def _box_frame(box: bool):
    from core3d_ros.core.camera import CameraIntrinsics
    from core3d_ros.core.frame import Frame

    intr = CameraIntrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=31.5, cy=23.5)
    depth = np.full((48, 64), 2.01, np.float32)
    if box:
        depth[14:34, 22:42] = 1.01
    return Frame(rgb=np.full((48, 64, 3), 128, np.uint8), depth=depth, intrinsics=intr, pose=np.eye(4))


def _box_run(boxed: int, empty: int, **kw):
    """Surface points (z < 1.5 m: the box's; z ~ 2 m inside the box's shadow: the wall behind
    it) after ``boxed`` frames with the box and ``empty`` frames without."""
    layer = GeometryLayer(VOXEL, max_depth=5.0, trunc_voxels=4.0, min_weight=1.0, **kw)
    for i in range(boxed + empty):
        layer.integrate(_box_frame(box=i < boxed))
    blocks = np.array(list(layer._dirty), np.int32)  # every block ever touched
    points, _, block_of = layer.surface(blocks)
    shadow = (np.abs(points[:, 0]) < 0.15) & (np.abs(points[:, 1]) < 0.15)
    return layer, int((points[:, 2] < 1.5).sum()), int(((points[:, 2] > 1.9) & shadow).sum())


def test_a_removed_box_leaves_the_tsdf_surface():
    # Three frames with the box: its face is the sample plane z = 1.00 (signed distance 1 cm,
    # 0.05 of the truncation), 9 x 9 samples (x, y from -0.20 to 0.20), and no wall behind it.
    _, box, wall = _box_run(3, 0)
    assert 64 <= box <= 81 and wall == 0
    # Without clearing, frames of the empty room never revisit the box's block (z 0.8-1.2 m;
    # Open3D integrates only the blocks within 0.2 m of the measured 2.01 m): the face stays.
    _, box, wall = _box_run(3, 4, clear=False)
    assert 64 <= box <= 81 and wall > 0
    # With clearing the box's block is in view, and each voxel in front of the wall moves to
    # +1. The slowest, z = 1.20 (tsdf -0.95 at weight 3): after n frames (3 * -0.95 + n) / (3 + n),
    # 0.025 at n = 3 (still within the surface band 0.125), 0.16 at n = 4: gone.
    _, box, wall = _box_run(3, 3)
    assert box > 0
    layer, box, wall = _box_run(3, 4)
    assert box == 0 and wall > 0 and layer.cleared_blocks > 0


def test_weight_cap_bounds_the_frames_a_surface_takes_to_clear():
    # Seen 20 times, z = 1.20 needs (20 * -0.95 + n) / (20 + n) > 0.125: n >= 22 frames; with
    # weights capped at 3 it clears in 4 as above.
    _, box, _ = _box_run(20, 4)
    assert box > 0
    layer, box, _ = _box_run(20, 4, max_weight=3.0)
    assert box == 0
    assert float(layer.vbg.attribute("weight").numpy().max()) == 3.0


def test_carving_restarts_a_vanished_box_in_one_frame():
    # With carving, the first empty frame sees the wall (2.01 m) beyond every box voxel (z 1.00 to
    # 1.20, tsdf 0.05 to -0.95, all <= the band's 0.125) by more than 2 voxels (0.10 m): each is
    # reset and integrated afresh at min(2.01 - z, 0.2) / 0.2 = +1. Without it, 4 frames (above).
    layer, box, wall = _box_run(3, 1, carve=True)
    assert box == 0 and wall > 0 and layer.carved_voxels > 0
    _, box, _ = _box_run(3, 1)
    assert box > 0
    # geometry.carve_interval 2: carving looks in frames 0, 2, 4, ... of the layer; the first
    # empty frame (3) only averages, the second (4) carves what is still in the band.
    layer, box, _ = _box_run(3, 1, carve=True, carve_interval=2)
    assert box > 0 and layer.carved_voxels == 0
    layer, box, _ = _box_run(3, 2, carve=True, carve_interval=2)
    assert box == 0 and layer.carved_voxels > 0


def _wall_frame(z: float):
    f = _box_frame(box=False)
    f.depth[:] = z
    return f


def _wall_surface(layer):
    points = layer.surface(np.array(list(layer._dirty), np.int32))[0]
    return points[np.argsort(points.view("f4,f4,f4").ravel(), kind="stable")]


def test_carving_leaves_a_seen_surface_alone():
    # The same wall seen 6 times: each voxel on it has depth within half a voxel of its own, far
    # short of the 2-voxel margin: nothing carved, the surface is the averaging one.
    carved, plain = (GeometryLayer(VOXEL, max_depth=5.0, trunc_voxels=4.0, min_weight=1.0, carve=c) for c in (True, False))
    for _ in range(6):
        for layer in (carved, plain):
            layer.integrate(_wall_frame(2.01))
    assert carved.carved_voxels == 0
    np.testing.assert_array_equal(_wall_surface(carved), _wall_surface(plain))
    # The wall measured 4 cm further (within the 10 cm margin): still no carving (depth noise,
    # or a surface refined); 30 cm further: the old surface (samples at z = 2.00) is seen through.
    carved.integrate(_wall_frame(2.05))
    assert carved.carved_voxels == 0
    carved.integrate(_wall_frame(2.31))
    assert carved.carved_voxels > 0
    assert not (np.abs(_wall_surface(carved)[:, 2] - 2.0) < 1e-3).any()


def test_carving_needs_valid_depth_over_the_whole_footprint():
    # The wall seen, the box's pixels holes: the box's voxels whose footprint touches a hole are
    # not carved, and the box's centre stays as in test_holes_clear_nothing.
    layer = GeometryLayer(VOXEL, max_depth=5.0, trunc_voxels=4.0, min_weight=1.0, carve=True)
    for _ in range(3):
        layer.integrate(_box_frame(box=True))
    blocks = np.array(list(layer._dirty), np.int32)
    for _ in range(5):
        f = _box_frame(box=False)
        f.depth[14:34, 22:42] = np.nan
        layer.integrate(f)
    points = layer.surface(blocks)[0]
    centre = (np.abs(points[:, 0]) <= 0.15) & (np.abs(points[:, 1]) <= 0.15) & (points[:, 2] < 1.5)
    assert centre.sum() == 49


def test_holes_clear_nothing():
    layer = GeometryLayer(VOXEL, max_depth=5.0, trunc_voxels=4.0, min_weight=1.0)
    for _ in range(3):
        layer.integrate(_box_frame(box=True))
    blocks = np.array(list(layer._dirty), np.int32)
    before = layer.surface(blocks)[0]
    for _ in range(5):  # frames without any valid depth (0, NaN, beyond max_depth): skipped
        f = _box_frame(box=False)
        f.depth[:] = 0.0
        f.depth[:4] = np.nan
        f.depth[4:8] = 7.0
        assert layer.integrate(f) == 0
    assert layer.empty_frames == 5
    assert np.array_equal(before, layer.surface(blocks)[0])
    for _ in range(5):  # the wall seen, the box's pixels holes: the box's centre stays
        f = _box_frame(box=False)
        f.depth[14:34, 22:42] = np.nan
        layer.integrate(f)
    points = layer.surface(blocks)[0]
    centre = (np.abs(points[:, 0]) <= 0.15) & (np.abs(points[:, 1]) <= 0.15) & (points[:, 2] < 1.5)
    assert centre.sum() == 49  # 7 x 7 samples, x and y from -0.15 to 0.15


def test_the_vanished_surface_is_deleted_downstream():
    pytest.importorskip("visualization_msgs")
    from visualization_msgs.msg import Marker

    from core3d_ros.ros.conversions.surface import ShownBlocks, block_marker_id, select_blocks, surface_markers

    layer = GeometryLayer(VOXEL, max_depth=5.0, trunc_voxels=4.0, min_weight=1.0)
    shown = ShownBlocks()

    def publish():
        blocks = layer.take_dirty()
        points, colors, block_of = layer.surface(blocks)
        rows = shown.to_send(blocks, block_of)
        msg = surface_markers(*select_blocks(rows, blocks, points, colors, block_of), voxel_size=VOXEL, frame_id="map")
        return {m.id: m for m in msg.markers}

    for _ in range(3):
        layer.integrate(_box_frame(box=True))
    first = publish()
    box_block = block_marker_id(np.array([0, 0, 2]))  # the box face at z = 1.00: block z 0.8-1.2 m
    assert first[box_block].action == Marker.ADD and len(first[box_block].points) > 0
    assert all(m.action == Marker.ADD for m in first.values())  # empty blocks send nothing
    for _ in range(4):
        layer.integrate(_box_frame(box=False))
    later = publish()
    assert later[box_block].action == Marker.DELETE  # the box's surface is gone downstream
    assert box_block not in publish()  # and is not deleted again


def test_the_mapping_nodes_surface_topic_deletes_a_vanished_block():
    """MapPublisher.publish_surface end to end (a stand-in node that records what is published)."""
    pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh)")
    from types import SimpleNamespace

    from visualization_msgs.msg import Marker

    from core3d_ros.config import MapperConfig
    from core3d_ros.ros.conversions.surface import block_marker_id
    from core3d_ros.ros.publishing import MapPublisher

    class Pub:
        def __init__(self, topic):
            self.topic, self.sent = topic, []

        def publish(self, msg):
            self.sent.append(msg)

        def get_subscription_count(self):
            return 1

    class Node:
        def create_publisher(self, _type, topic, _qos):
            return Pub(topic)

    layer = GeometryLayer(VOXEL, max_depth=5.0, trunc_voxels=4.0, min_weight=1.0)
    pub = MapPublisher(Node(), MapperConfig(), SimpleNamespace(geometry=layer), report=lambda: None)
    box_block = block_marker_id(np.array([0, 0, 2]))
    for _ in range(3):
        layer.integrate(_box_frame(box=True))
    pub.publish_surface(0.0)
    first = pub.surface_pub.sent[-1].markers
    assert first[0].action == Marker.DELETEALL  # a first publication starts afresh
    assert any(m.id == box_block and m.action == Marker.ADD for m in first)
    for _ in range(4):
        layer.integrate(_box_frame(box=False))
    pub.publish_surface(1.0)
    later = {m.id: m for m in pub.surface_pub.sent[-1].markers}
    assert later[box_block].action == Marker.DELETE
    shown = {m.id for m in first if m.action == Marker.ADD}
    deleted = {i for i, m in later.items() if m.action == Marker.DELETE}
    assert box_block in deleted and deleted <= shown  # DELETE only for blocks that had a marker
    n = len(pub.surface_pub.sent)
    pub.publish_surface(2.0)  # nothing changed since: nothing sent
    assert len(pub.surface_pub.sent) == n
