"""Fusion core: the DBSCAN split against scikit-learn, association, balance test, merging, bounds."""
import numpy as np
import pytest
from sklearn.cluster import DBSCAN

from core3d_ros.config import FusionConfig
from core3d_ros.core.masks import paint_largest_first
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.core.fusion.blocks import FrameVoxels
from core3d_ros.core.fusion.dbscan import dbscan_padded, neighbour_offsets
from core3d_ros.core.fusion.voxels import pack, unpack, voxel_keys
from fusion_reference import array_vote

VS = 0.05


def box_surface(lo, hi, step=VS / 2):
    """Points on the six faces of an axis-aligned box."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    axes = [np.arange(lo[i], hi[i] + 1e-9, step) for i in range(3)]
    pts = []
    for i in range(3):
        j, k = [a for a in range(3) if a != i]
        gj, gk = np.meshgrid(axes[j], axes[k], indexing="ij")
        for v in (lo[i], hi[i]):
            p = np.zeros((gj.size, 3))
            p[:, i], p[:, j], p[:, k] = v, gj.ravel(), gk.ravel()
            pts.append(p)
    return np.concatenate(pts).astype(np.float32)


def integrate(omap, parts, stamp=0.0):
    """One frame whose visible points are the union of parts, one mask per part (labels painted
    larger masks first, so that a smaller mask lying on a larger one stays visible)."""
    pts = np.concatenate(parts)
    sizes = [len(p) for p in parts]
    masks, start = [], 0
    for n in sizes:
        m = np.zeros(len(pts), bool)
        m[start : start + n] = True
        masks.append(m)
        start += n
    labels = paint_largest_first(masks, (len(pts),), np.int32)
    colors = np.full((len(pts), 3), 128, np.uint8)
    return omap.integrate_points(pts, colors, labels, stamp)


def cfg(**kw):
    base = dict(voxel_size=VS, merge_interval=0, min_object_observations=1, min_segment_voxels=5)
    base.update(kw)
    return FusionConfig(**base)


def test_voxel_key_round_trip():
    coords = np.array([[0, 0, 0], [-5, 7, 1000], [1048575, -1048576, 3]])
    assert np.array_equal(unpack(pack(coords)), coords)
    with pytest.raises(ValueError):
        pack(np.array([[1 << 21, 0, 0]]))


def assert_same_dbscan(ours, points, eps, min_samples):
    """``ours`` (labels, -1 = noise) is a DBSCAN clustering of ``points`` (eps in the points'
    units): the same core points as scikit-learn's, grouped into the same clusters (up to the
    numbering), the same noise, and every border point in a cluster that has a core point within
    eps of it (DBSCAN leaves the choice among those clusters to the visiting order). Returns the
    number of border points."""
    ref = DBSCAN(eps=eps, min_samples=min_samples).fit(points)
    sk = ref.labels_
    core = np.zeros(len(points), bool)
    core[ref.core_sample_indices_] = True
    ours = np.asarray(ours)
    assert np.array_equal(ours < 0, sk < 0), "noise differs"
    # core points: a bijection between our clusters and scikit-learn's
    pairs = set(zip(ours[core].tolist(), sk[core].tolist()))
    assert len(pairs) == len(set(ours[core].tolist())) == len(set(sk[core].tolist())), "core partition differs"
    assert set(ours[ours >= 0].tolist()) == set(ours[core].tolist()), "a cluster without a core point"
    border = np.flatnonzero((ours >= 0) & ~core)
    if len(border):
        d = np.linalg.norm(points[border, None, :] - points[None, core, :], axis=-1)
        core_labels = ours[core]
        for i, row in zip(border, d):
            allowed = set(core_labels[row <= eps].tolist())
            assert ours[i] in allowed, f"border point {i} in cluster {ours[i]}, not one of {allowed}"
    return len(border)


def dbscan_split(coords, labels, eps, min_samples, min_size=1):
    """The engine's DBSCAN split of (N, 3) distinct voxel coordinates, one label each; returns
    the voxel coordinates in the frame's order and their segments."""
    fv = FrameVoxels(np.ascontiguousarray(np.asarray(coords).T, dtype=np.int32))
    seg = dbscan_padded(fv.voxel, fv._vlut, fv.block_neighbours(), np.asarray(labels, np.int64)[fv.rep],
                        neighbour_offsets(eps), min_samples, min_size)
    return fv.voxel_coords(), seg


@pytest.mark.parametrize("eps,min_samples", [(1.0, 1), (1.75, 1), (1.0, 3), (1.75, 3), (1.75, 4), (1.75, 6), (2.5, 6)])
def test_dbscan_split_matches_sklearn(eps, min_samples):
    rng = np.random.default_rng(0)
    coords = np.unique(rng.integers(0, 14, size=(700, 3)), axis=0)
    vox, ours = dbscan_split(coords, np.ones(len(coords)), eps, min_samples)
    n_border = assert_same_dbscan(ours, ((vox + 0.5) * VS).astype(np.float64), eps * VS + 1e-6, min_samples)
    if min_samples == 1:
        assert n_border == 0  # every point is a core point: identical partitions
    else:
        assert n_border > 0  # the case exercises the border rule


def test_split_separates_blobs_and_drops_small():
    a = voxel_keys(box_surface([0, 0, 0], [0.3, 0.3, 0.3]), VS)
    b = voxel_keys(box_surface([1, 0, 0], [1.3, 0.3, 0.3]), VS)
    speck = voxel_keys(np.array([[3.0, 3.0, 3.0]]), VS)
    keys = np.unique(np.concatenate([a, b, speck]))
    _, seg = dbscan_split(unpack(keys), np.ones(len(keys)), 1.75, 1, min_size=5)
    assert seg.max() == 1 and (seg == -1).sum() == 1  # two parts, the speck dropped
    assert sorted(np.bincount(seg[seg >= 0]).tolist()) == sorted([len(np.unique(a)), len(np.unique(b))])


def test_same_object_over_frames_is_one_instance():
    omap = ObjectMap(cfg())
    box = box_surface([0, 0, 0], [0.5, 0.4, 0.6])
    for t in range(5):
        integrate(omap, [box], stamp=float(t))
    assert len(omap.objects) == 1
    obj = next(iter(omap.objects.values()))
    assert obj.num_observations == 5 and obj.first_seen == 0.0 and obj.last_seen == 4.0


def test_partial_view_associates_with_visible_part():
    omap = ObjectMap(cfg())
    box = box_surface([0, 0, 0], [1.0, 1.0, 0.5])
    integrate(omap, [box])
    top = box[box[:, 2] > 0.5 - 1e-6]  # a later view sees only the top face
    stats = integrate(omap, [top])
    assert stats.associated == 1 and stats.created == 0
    assert len(omap.objects) == 1


def test_balance_test_keeps_small_object_on_large_one():
    omap = ObjectMap(cfg())
    sofa = box_surface([0, 0, 0], [2.0, 1.0, 0.5])
    integrate(omap, [sofa])  # first seen as one blob
    on_cushion = (sofa[:, 0] < 0.4) & (sofa[:, 1] < 0.4)
    stats = integrate(omap, [sofa[~on_cushion], sofa[on_cushion]])
    assert stats.created == 1 and stats.associated == 1
    assert len(omap.objects) == 2


def test_separate_objects_stay_separate():
    omap = ObjectMap(cfg())
    a = box_surface([0, 0, 0], [0.4, 0.4, 0.4])
    b = box_surface([1.0, 0, 0], [1.4, 0.4, 0.4])
    for _ in range(3):
        integrate(omap, [a, b])
    assert len(omap.objects) == 2
    inst = omap.instance_voxels()
    (ka, kb) = inst.values()
    assert len(np.intersect1d(ka, kb)) == 0


def test_merge_pass_merges_balanced_duplicates_only():
    omap = ObjectMap(cfg(gamma=0.5, delta=0.3))
    big = box_surface([0, 0, 0], [1.0, 1.0, 1.0])
    integrate(omap, [big])
    keys = np.unique(voxel_keys(big, VS))
    rows = omap.lookup(keys)
    # A duplicate holding 90% of the same voxels, and a small part inside the big object.
    dup, small = omap.next_id, omap.next_id + 1
    from core3d_ros.core.fusion.object_map import ObjectState

    omap.objects[dup] = ObjectState(id=dup, num_observations=1)
    omap.objects[small] = ObjectState(id=small, num_observations=1)
    omap.next_id += 2
    array_vote(omap, rows[: int(0.9 * len(rows))], dup)
    array_vote(omap, rows[-20:], small)
    merged = omap.merge_objects()
    assert merged == 1
    assert dup not in omap.objects or 1 not in omap.objects
    assert small in omap.objects
    survivor = [o for o in omap.objects if o != small][0]
    assert omap.objects[survivor].num_voxels == len(rows)
    assert omap.objects[survivor].num_observations == 2


def test_max_voxels_bound_is_respected_and_counted():
    omap = ObjectMap(cfg(max_voxels=100))
    stats = integrate(omap, [box_surface([0, 0, 0], [1.0, 1.0, 1.0])])
    assert omap.num_voxels == 100
    assert stats.dropped_voxels > 0


def test_snapshot_partitions_voxels_and_reports_boxes():
    omap = ObjectMap(cfg())
    a = box_surface([0, 0, 0], [0.4, 0.4, 0.4])
    b = box_surface([1.0, 0, 0], [1.6, 0.4, 0.4])
    integrate(omap, [a, b])
    snap = omap.snapshot(up=[0.0, 0.0, 1.0])
    assert len(snap.objects) == 2
    for obj in snap.objects:
        assert obj.box.contains(obj.points, margin=1e-4).all()
    ext = sorted(float(o.box.extent.max()) for o in snap.objects)
    assert ext[0] == pytest.approx(0.45, abs=0.06) and ext[1] == pytest.approx(0.65, abs=0.06)
    for obj in snap.objects:  # gravity-aligned: the third axis is up
        assert np.allclose(obj.box.rotation[:, 2], [0, 0, 1])
    assert omap.snapshot(up=[0.0, 0.0, 1.0]) is snap  # cached until the map changes


def test_union_rule_unites_objects_one_segment_covers():
    """Two pieces of one surface, first seen apart, then seen whole in one mask."""
    omap = ObjectMap(cfg(union_min_share=0.2))
    plate = box_surface([0, 0, 0], [2.0, 1.0, 0.05])
    left, right = plate[plate[:, 0] < 0.9], plate[plate[:, 0] > 1.1]
    integrate(omap, [left, right])
    assert len(omap.objects) == 2
    stats = integrate(omap, [plate])
    assert stats.merged == 1 and len(omap.objects) == 1


def test_union_rule_off_keeps_pieces_apart():
    omap = ObjectMap(cfg(union_min_share=0.0))
    plate = box_surface([0, 0, 0], [2.0, 1.0, 0.05])
    integrate(omap, [plate[plate[:, 0] < 0.9], plate[plate[:, 0] > 1.1]])
    stats = integrate(omap, [plate])
    assert stats.merged == 0
