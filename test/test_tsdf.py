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
    layer = GeometryLayer(VOXEL, max_depth=5.0)
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
    layer = GeometryLayer(VOXEL, max_depth=5.0)
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
    (tmp_path / "room.geometry.npz").write_bytes(b"damaged")
    before = other.geometry
    with pytest.raises(ValueError, match="geometry"):
        other.load(written)
    assert other.geometry is before  # a damaged TSDF leaves the loaded map as it was
