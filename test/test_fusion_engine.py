"""The block-based fusion engine: hand-computed cases, compiled kernels against the array code,
incremental snapshot and merge, bad input."""
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import DBSCAN

from core3d_ros.config import FusionConfig, MapperConfig
from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.datasets import make_scene
from core3d_ros.core.frame import Frame, FrameError
from core3d_ros.core.fusion import map_kernels
from core3d_ros.core.fusion.blocks import FrameVoxels, dedupe_kernel
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.core.fusion.dbscan import neighbour_offsets
from core3d_ros.core.fusion.voxels import pack
from core3d_ros.core.mapper import Mapper, label_image
from core3d_ros.config import with_overrides
from core3d_ros.tools.runs import map_frames
from core3d_ros.core.segment.base import Mask2D
from fusion_reference import array_blend_colors, array_vote, backproject_kernel, dbscan_kernel


def cfg(**kw):
    base = dict(voxel_size=1.0, merge_interval=0, min_object_observations=1, min_segment_voxels=1, dbscan_min_samples=1)
    base.update(kw)
    return FusionConfig(**base)


def line(x0, n, y=0.5, z=0.5):
    """Points at the centres of n voxels along x, starting at voxel x0 (voxel size 1)."""
    return np.stack([np.arange(x0, x0 + n) + 0.5, np.full(n, y), np.full(n, z)], axis=1).astype(np.float32)


def fuse(omap, parts, stamp=0.0):
    pts = np.concatenate(parts)
    labels = np.concatenate([np.full(len(p), i + 1, np.int32) for i, p in enumerate(parts)])
    return omap.integrate_points(pts, np.full((len(pts), 3), 100, np.uint8), labels, stamp)


# ------------------------------------------------------------------ hand-computed cases


def test_two_masks_two_objects_and_their_votes():
    omap = ObjectMap(cfg())
    a, b = line(0, 10), line(20, 6)
    s = fuse(omap, [a, b])
    assert (s.segments, s.created, s.associated) == (2, 2, 0)
    assert omap.num_voxels == 16
    rows_a, rows_b = omap.lookup(pack(np.floor(a).astype(np.int64))), omap.lookup(pack(np.floor(b).astype(np.int64)))
    assert np.all(rows_a >= 0) and np.all(rows_b >= 0)
    ida, idb = int(omap.ids[rows_a[0], 0]), int(omap.ids[rows_b[0], 0])
    assert ida != idb
    # Every voxel: one slot with its object and one hit.
    assert np.all(omap.ids[rows_a, 0] == ida) and np.all(omap.hits[rows_a, 0] == 1) and np.all(omap.ids[rows_a, 1:] == -1)
    s = fuse(omap, [a, b])
    assert (s.created, s.associated) == (0, 2)
    assert np.all(omap.hits[rows_a, 0] == 2) and np.all(omap.hits[rows_b, 0] == 2)
    assert omap.objects[ida].num_voxels == 10 and omap.objects[idb].num_voxels == 6
    assert omap.objects[ida].num_observations == 2


def test_slot_replacement_rule():
    """K = 1: a voxel with one hit is taken over; with two hits it loses one instead."""
    omap = ObjectMap(cfg(slots_per_voxel=1))
    a = line(0, 4)
    fuse(omap, [a])
    rows = omap.lookup(pack(np.floor(a).astype(np.int64)))
    first = int(omap.ids[rows[0], 0])
    other = omap.next_id
    from core3d_ros.core.fusion.object_map import ObjectState

    omap.objects[other] = ObjectState(id=other, num_observations=1)
    omap.next_id += 1
    vote = lambda r, oid: omap._vote(r, np.full(len(r), oid, np.int32), np.zeros((len(r), 3), np.uint8))
    vote(rows[:2], other)  # one hit each: replaced
    assert list(omap.ids[rows, 0]) == [other, other, first, first]
    assert omap.objects[first].num_voxels == 2 and omap.objects[other].num_voxels == 2
    vote(rows[2:], first)  # now two hits
    vote(rows[2:], other)  # loses a hit, keeps its id
    assert list(omap.ids[rows, 0]) == [other, other, first, first]
    assert list(omap.hits[rows, 0]) == [1, 1, 1, 1]


def test_segment_side_counts_known_voxels_only():
    """A view that extends an object into unseen space still finds it (known-only IoV); with
    the plain IoV it founds a new object."""
    for known_only, created in ((True, 0), (False, 1)):
        omap = ObjectMap(cfg(iov_known_only=known_only))
        fuse(omap, [line(0, 10)])
        s = fuse(omap, [line(5, 20)])  # 5 known voxels, 15 new
        assert s.created == created


def test_dbscan_split_and_min_segment_size():
    omap = ObjectMap(cfg(min_segment_voxels=3))
    mask = np.concatenate([line(0, 5), line(10, 5), line(30, 2)])  # two parts and a speck
    s = fuse(omap, [mask])
    assert s.segments == 2 and s.created == 2 and omap.num_voxels == 10
    omap = ObjectMap(cfg(min_segment_voxels=3, dbscan_split=False))
    s = fuse(omap, [mask])
    assert s.segments == 1 and omap.num_voxels == 12


def sheet(z, rows=6, cols=6, x0=0, y0=0):
    """Points at the centres of a rows x cols patch of voxels in the plane of voxel layer z."""
    y, x = np.mgrid[y0 : y0 + rows, x0 : x0 + cols]
    return np.stack([x.ravel() + 0.5, y.ravel() + 0.5, np.full(x.size, z + 0.5)], axis=1).astype(np.float32)


def test_the_hidden_side_of_a_thin_thing_joins_its_front():
    front, back = sheet(0), sheet(2)  # the two faces of a board, one empty voxel layer between
    omap = ObjectMap(cfg(co_mask_votes=0))
    fuse(omap, [front])
    s = fuse(omap, [back])  # seen from behind: the front is hidden
    assert s.created == 0 and len(omap.objects) == 1 and omap.num_voxels == 72
    omap = ObjectMap(cfg(co_mask_votes=0, hidden_side_voxels=0))
    fuse(omap, [front])
    assert fuse(omap, [back]).created == 1 and len(omap.objects) == 2
    # The back first seen in part (too little of the front lies next to it), then whole: the
    # view that shows mostly new space joins the two.
    omap = ObjectMap(cfg(co_mask_votes=0))
    fuse(omap, [front])
    assert fuse(omap, [sheet(2, rows=2)]).created == 1 and len(omap.objects) == 2
    s = fuse(omap, [back])
    assert s.merged == 1 and len(omap.objects) == 1


def test_a_neighbour_seen_in_the_same_frame_is_no_hidden_side():
    table, book = sheet(0, rows=4, cols=4), sheet(2, rows=4, cols=4)
    omap = ObjectMap(cfg(co_mask_votes=0))
    fuse(omap, [table])
    assert fuse(omap, [table, book]).created == 1  # both in view: two things
    fuse(omap, [sheet(2, rows=8, cols=4)])  # the book alone, mostly new space, table hidden
    assert len(omap.objects) == 2
    # A small new piece next to a large hidden object does not join it (balanced test).
    omap = ObjectMap(cfg(co_mask_votes=0))
    fuse(omap, [sheet(0, rows=12, cols=12)])
    assert fuse(omap, [sheet(2, rows=2, cols=2)]).created == 1 and len(omap.objects) == 2


def test_parts_of_a_mask_share_its_embedding_by_size():
    from core3d_ros.core.fusion.object_map import SegmentObservation

    omap = ObjectMap(cfg(co_mask_votes=0))
    pts = np.concatenate([line(0, 6), line(20, 2)])
    e = np.array([1.0, 0.0], np.float32)
    omap.integrate_points(pts, np.zeros((8, 3), np.uint8), np.ones(8, np.int32), 0.0, [SegmentObservation(embedding=e)])
    weights = sorted(s.embedding_weight for s in omap.objects.values())
    assert weights == pytest.approx([2 / 8, 6 / 8])


def test_pieces_seen_in_one_mask_more_often_than_apart_are_merged():
    a, b = line(0, 5), line(10, 5)  # one object cut in two (by an occluder, say)
    ab = np.concatenate([a, b])
    omap = ObjectMap(cfg(co_mask_votes=2))
    s = fuse(omap, [ab])  # one mask, two 3-D parts: two new objects, together once
    assert s.created == 2 and s.merged == 0 and len(omap.objects) == 2
    fuse(omap, [a, b])  # two masks: apart once
    s = fuse(omap, [ab])  # together twice > apart once: merged
    assert s.merged == 1 and len(omap.objects) == 1
    (only,) = omap.objects.values()
    assert only.num_voxels == 10 and only.num_observations == 2 + 2 + 1  # summed on merge, then this frame
    # Apart as often as together: kept apart.
    omap = ObjectMap(cfg(co_mask_votes=2))
    fuse(omap, [ab])
    fuse(omap, [a, b])
    fuse(omap, [a, b])
    s = fuse(omap, [ab])
    assert s.merged == 0 and len(omap.objects) == 2
    # Evidence apart counts also before the pair was first seen together.
    omap = ObjectMap(cfg(co_mask_votes=1))
    fuse(omap, [a, b])  # apart once
    assert fuse(omap, [ab]).merged == 0  # together once, apart once
    assert fuse(omap, [ab]).merged == 1  # together twice
    # With co_mask_votes 1 (the default) the first frame merges them; 0 never does.
    omap = ObjectMap(cfg(co_mask_votes=1))
    assert fuse(omap, [ab]).merged == 1 and len(omap.objects) == 1
    omap = ObjectMap(cfg(co_mask_votes=0))
    for _ in range(3):
        fuse(omap, [ab])
    assert len(omap.objects) == 2


def test_label_image_paints_small_masks_over_large_ones():
    big = np.zeros((4, 4), bool)
    big[:, :] = True
    small = np.zeros((4, 4), bool)
    small[1, 1] = True
    lab = label_image([Mask2D(small), Mask2D(big)], (4, 4))
    assert lab[1, 1] == 1 and lab[0, 0] == 2 and lab.dtype == np.uint16


# ------------------------------------------------------------------ compiled kernels = array code


def _frame_coords(seed=0, n=20000):
    rng = np.random.default_rng(seed)
    return rng.integers(-40, 40, size=(3, n)).astype(np.int32)


def test_compiled_dedupe_matches_array_code():
    coords = _frame_coords()
    a, b = FrameVoxels(coords, compiled=False), FrameVoxels(coords, compiled=True)
    assert len(a) == len(b)

    def voxel_keys(fv):
        return pack(fv.voxel_coords())

    ka, kb = voxel_keys(a), voxel_keys(b)
    assert np.array_equal(np.sort(ka), np.sort(kb))
    # Each compiled voxel's representative point lies in that voxel.
    rep_coords = coords[:, b.rep].T.astype(np.int64)
    assert np.array_equal(pack(rep_coords), kb)
    # And find() agrees.
    assert np.array_equal(kb[b.find(rep_coords)], kb)


@pytest.mark.parametrize("min_samples", [1, 3, 5])
def test_reference_dbscan_kernel_matches_sklearn(min_samples):
    # sparse enough (a sixth of a 16^3 box, 2 x 2 x 2 blocks) for several clusters per label,
    # border points, and (min_samples 5) border points next to core points of two clusters
    rng = np.random.default_rng(1)
    pts = np.unique(rng.integers(0, 16, size=(700, 3)), axis=0).T.astype(np.int32)
    fv = FrameVoxels(pts, compiled=True)
    labels = np.where(fv.voxel_coords()[:, 0] < 8, 1, 2).astype(np.int64)
    off = neighbour_offsets(1.75)
    ours = dbscan_kernel(fv.voxel, fv._vlut, fv.block_neighbours(), labels, off, min_samples, 1)
    coords = fv.voxel_coords().astype(np.float64)
    n_border = 0
    for lab in (1, 2):
        sel = labels == lab
        n_border += _assert_same_dbscan(ours[sel], coords[sel], 1.75 + 1e-6, min_samples)
    # min_samples 1: every point is a core point, so the partitions are identical; otherwise
    # the case has border points, which exercise DBSCAN's choice rule.
    assert (n_border == 0) if min_samples == 1 else (n_border > 0)


def _assert_same_dbscan(ours, points, eps, min_samples):
    """``ours`` (labels, -1 = noise) is a DBSCAN clustering of ``points``: the same core points as
    scikit-learn's, grouped into the same clusters (up to the numbering), the same noise, and
    every border point in a cluster that has a core point within eps of it (DBSCAN leaves the
    choice among those clusters to the visiting order). Returns the number of border points."""
    ref = DBSCAN(eps=eps, min_samples=min_samples).fit(points)
    sk = ref.labels_
    core = np.zeros(len(points), bool)
    core[ref.core_sample_indices_] = True
    assert np.array_equal(ours < 0, sk < 0), "noise differs"
    pairs = set(zip(ours[core].tolist(), sk[core].tolist()))  # core points: a bijection of clusters
    assert len(pairs) == len(set(ours[core].tolist())) == len(set(sk[core].tolist())), "core partition differs"
    assert set(ours[ours >= 0].tolist()) == set(ours[core].tolist()), "a cluster without a core point"
    border = np.flatnonzero((ours >= 0) & ~core)
    if len(border):
        d = np.linalg.norm(points[border, None, :] - points[None, core, :], axis=-1)
        for i, row in zip(border, d):
            allowed = set(ours[core][row <= eps].tolist())
            assert ours[i] in allowed, f"border point {i} in cluster {ours[i]}, not one of {allowed}"
    return len(border)


def test_compiled_vote_matches_array_vote():
    rng = np.random.default_rng(2)
    maps = [ObjectMap(cfg(slots_per_voxel=3)) for _ in range(2)]
    for m in maps:
        fuse(m, [line(0, 50)])
        from core3d_ros.core.fusion.object_map import ObjectState

        for oid in range(m.next_id, m.next_id + 4):
            m.objects[oid] = ObjectState(id=oid, num_observations=1)
        m.next_id += 4
    rows = maps[0].lookup(pack(np.floor(line(0, 50)).astype(np.int64)))
    for _ in range(12):
        r = rng.permutation(rows)[:30]
        t = rng.integers(1, maps[0].next_id, size=30).astype(np.int32)
        col = rng.integers(0, 255, size=(30, 3)).astype(np.uint8)
        array_vote(maps[0], r, t)
        array_blend_colors(maps[0], r, col)
        maps[1]._vote(r, t, col)
    a, b = maps
    n = a.rows_used
    assert n == b.rows_used
    assert np.array_equal(a.ids[:n], b.ids[:n]) and np.array_equal(a.hits[:n], b.hits[:n])
    assert np.array_equal(a.owner[:n], b.owner[:n]) and np.allclose(a.colors[:n], b.colors[:n])
    assert {k: v.num_voxels for k, v in a.objects.items()} == {k: v.num_voxels for k, v in b.objects.items()}


# ------------------------------------------------------------------ incremental output and merge


def _full_snapshot(omap):
    live = omap.live_rows()
    cold = ObjectMap.from_arrays(
        omap.cfg, omap.keys[live], omap.ids[live], omap.hits[live], omap.colors[live], omap.color_n[live],
        [type(s)(**{**s.__dict__}) for s in omap.objects.values()], omap.next_id, omap.frames,
    )
    return cold.snapshot()


def test_incremental_snapshot_equals_a_full_rebuild():
    scene = make_scene(seed=1, num_frames=8)
    c = FusionConfig(merge_interval=3)
    omap = ObjectMap(c)
    for i in range(len(scene)):
        f = scene[i]
        omap.integrate_frame(f.depth, f.intrinsics, f.pose, f.rgb, f.instance_ids.astype(np.uint16), float(i))
        inc = omap.snapshot()
        full = _full_snapshot(omap)
        assert [o.id for o in inc.objects] == [o.id for o in full.objects]
        for x, y in zip(inc.objects, full.objects):
            assert np.array_equal(np.sort(pack(np.floor(x.points / c.voxel_size).astype(np.int64))),
                                  np.sort(pack(np.floor(y.points / c.voxel_size).astype(np.int64))))
            assert x.num_observations == y.num_observations


def test_snapshot_rebuilds_only_changed_objects():
    omap = ObjectMap(cfg())
    fuse(omap, [line(0, 10), line(20, 10)])
    first = omap.snapshot()
    fuse(omap, [line(20, 10)])  # only the second object changes
    second = omap.snapshot()
    a0, b0 = first.objects
    a1, b1 = second.objects
    assert a1 is a0 and b1 is not b0


def test_merge_pass_only_looks_at_what_was_touched():
    omap = ObjectMap(cfg(gamma=0.5, delta=0.3))
    a = line(0, 20)
    fuse(omap, [a])
    omap.merge_objects()  # consumes what the first frame touched
    rows = omap.lookup(pack(np.floor(a).astype(np.int64)))
    from core3d_ros.core.fusion.object_map import ObjectState

    dup = omap.next_id
    omap.objects[dup] = ObjectState(id=dup, num_observations=1)
    omap.next_id += 1
    array_vote(omap, rows, dup)  # a duplicate, made outside a frame: nothing touched
    assert omap.merge_objects() == 0 and len(omap.objects) == 2
    fuse(omap, [line(0, 3)])  # a frame touches three of its voxels
    assert omap.merge_objects() == 1 and len(omap.objects) == 1


# ------------------------------------------------------------------ bad input


def _frame(depth, pose=None, index=0):
    h, w = depth.shape
    intr = CameraIntrinsics(w, h, 100.0, 100.0, w / 2, h / 2)
    return Frame(rgb=np.zeros((h, w, 3), np.uint8), depth=depth.astype(np.float32), intrinsics=intr,
                 pose=np.eye(4) if pose is None else pose, stamp=float(index), index=index)


class _AllPixels:
    name = "all"

    def segment(self, frame):
        return [Mask2D(np.ones(frame.depth.shape, bool))]


@pytest.mark.parametrize(
    "depth,pose,reason",
    [
        (np.where(np.arange(64 * 48).reshape(48, 64) < 20, 2.0, 0.0), None, "few_valid_depth"),  # 20 valid pixels
        (np.full((48, 64), 0.02), None, "few_valid_depth"),  # camera inside a wall: all below min_depth
        (np.full((48, 64), 2.0), "jump", "pose_jump"),  # 100 m from the previous frame
    ],
)
def test_bad_frames_are_counted_and_leave_the_map_unchanged(depth, pose, reason):
    c = with_overrides(MapperConfig(), keyframes={"enabled": False}, fusion={"min_object_observations": 1})
    mapper = Mapper(c, segmenter=_AllPixels())
    mapper.process(_frame(np.full((48, 64), 2.0)))
    before = (mapper.map.version, mapper.map.num_voxels, len(mapper.map.objects))
    p = np.eye(4)
    if pose == "jump":
        p[0, 3] = 100.0
    with pytest.raises(FrameError) as e:
        mapper.process(_frame(depth, p, index=1))
    assert e.value.reason == reason
    assert (mapper.map.version, mapper.map.num_voxels, len(mapper.map.objects)) == before
    # Counted by reason in an offline run; nothing escapes.
    frames = [_frame(np.full((48, 64), 2.0)), _frame(depth, p, index=1)]
    summary = map_frames(Mapper(c, segmenter=_AllPixels()), frames)
    assert summary.rejected[reason] == 1 and summary.processed == 1


def test_mask_without_depth_contributes_nothing():
    depth = np.full((48, 64), 2.0)
    depth[:, :10] = 0.0
    m = np.zeros((48, 64), bool)
    m[:, :10] = True  # only invalid-depth pixels

    class Seg:
        name = "s"

        def segment(self, frame):
            return [Mask2D(m), Mask2D(~m)]

    mapper = Mapper(with_overrides(MapperConfig(), keyframes={"enabled": False}), segmenter=Seg())
    stats = mapper.process(_frame(depth))
    assert stats.segments == 1 and stats.created == 1


def test_out_of_range_coordinates_are_refused():
    omap = ObjectMap(cfg(voxel_size=0.01))
    pose = np.eye(4)
    pose[0, 3] = 1e5  # 10 million voxels away: beyond the 21-bit key range
    f = _frame(np.full((48, 64), 2.0), pose)
    s = omap.integrate_frame(f.depth, f.intrinsics, f.pose, f.rgb, np.ones((48, 64), np.uint16), 0.0)
    assert s.rejected == "out_of_range" and omap.num_voxels == 0 and omap.version == 0


def test_default_thresholds_can_act():
    """delta can reject a pair only if delta < 1 - gamma (both IoVs lie in (gamma, 1]);
    tau_cer can remove a SAM-family mask only if the generator's own filter lets through
    masks scored below it."""
    from core3d_ros.config import ProgressiveConfig, SegmenterConfig

    f = FusionConfig()
    assert f.delta < 1 - f.gamma
    assert SegmenterConfig().pred_iou_thresh < ProgressiveConfig().tau_cer
    # The balance test at the defaults rejects an unbalanced pair both of whose IoVs pass gamma.
    from core3d_ros.core.fusion.association import balanced

    assert not balanced(0.95, 0.55, f.gamma, f.delta) and balanced(0.8, 0.7, f.gamma, f.delta)
    # tau_cer removes a mask the generator kept.
    from core3d_ros.core.segment.progressive import progressive_merge

    m = np.zeros((20, 20), bool)
    m[:, :15] = True
    low = Mask2D(m, score=0.45)
    assert progressive_merge([low], ProgressiveConfig(min_mask_pixels=1)) == []


@pytest.mark.parametrize("field,value", [("device", "tpu"), ("pixel_stride", -1), ("co_mask_votes", -2), ("slots_per_voxel", 0)])
def test_bad_fusion_config_fails_with_the_parameter_name(field, value):
    with pytest.raises(ValueError, match=f"fusion.{field}"):
        ObjectMap(FusionConfig(**{field: value}))


def test_cuda_device_works_or_is_refused_with_the_parameter_name():
    """On a machine with CUDA the map builds its block hash there; elsewhere start-up fails with
    one ValueError naming fusion.device (never a raw Open3D RuntimeError)."""
    try:
        omap = ObjectMap(cfg(device="cuda"))
    except ValueError as e:
        assert "fusion.device" in str(e)
        return
    s = fuse(omap, [line(0, 10)])
    assert s.created == 1 and omap.num_voxels == 10


# ------------------------------------------------------------------ faster kernels = reference kernels


@pytest.mark.parametrize("seed,min_samples,eps", [(0, 1, 1.75), (1, 3, 1.75), (2, 5, 1.75), (3, 3, 2.5), (4, 4, 1.0)])
def test_fast_dbscan_equals_reference_kernel(seed, min_samples, eps):
    """Same segment of every voxel (numbering included) as the reference dbscan_kernel, on sparse
    random voxels with three labels and unlabelled ones, where border voxels are common."""
    from core3d_ros.core.fusion import dbscan

    rng = np.random.default_rng(seed)
    pts = np.unique(rng.integers(-6, 12, size=(9000, 3)), axis=0)
    pts = pts[rng.permutation(len(pts))].T.astype(np.int32)  # first-appearance order is random
    fv = FrameVoxels(pts, compiled=True)
    labels = rng.integers(0, 4, size=len(fv)).astype(np.int64)
    off = neighbour_offsets(eps)
    nbr = fv.block_neighbours()
    for min_size in (1, 4):
        ref = dbscan_kernel(fv.voxel, fv._vlut, nbr, labels, off, min_samples, min_size)
        ours = dbscan.dbscan_padded(fv.voxel, fv._vlut, nbr, labels, off, min_samples, min_size)
        assert np.array_equal(ref, ours)
        assert ref.max() >= 1  # the case has several segments


def test_fast_dbscan_hand_case():
    """Two runs of voxels along x, 6-neighbourhood, min_samples 3: inner voxels are core, the
    ends are border voxels of their run; segments are numbered in order of first voxel."""
    from core3d_ros.core.fusion import dbscan

    xs = [6, 7, 8, 0, 1, 2, 3]
    pts = np.stack([np.array(xs), np.zeros(7, int), np.zeros(7, int)]).astype(np.int32)
    fv = FrameVoxels(pts, compiled=True)
    labels = np.ones(len(fv), np.int64)
    args = (fv.voxel, fv._vlut, fv.block_neighbours(), labels, neighbour_offsets(1.0), 3, 1)
    ref, ours = dbscan_kernel(*args), dbscan.dbscan_padded(*args)
    assert np.array_equal(ref, ours)
    seg = dict(zip(fv.voxel_coords()[:, 0].tolist(), ours.tolist()))
    assert seg == {6: 0, 7: 0, 8: 0, 0: 1, 1: 1, 2: 1, 3: 1}
    # min_size 4 drops the three-voxel run.
    ours = dbscan.dbscan_padded(*args[:-1], 4)
    assert dict(zip(fv.voxel_coords()[:, 0].tolist(), ours.tolist())) == {6: -1, 7: -1, 8: -1, 0: 0, 1: 0, 2: 0, 3: 0}


def test_block_neighbours_kernel_equals_the_general_path():
    """The frame's block grid (compiled) and the general path (sorted block keys) name the same
    neighbouring block at every column, or none."""
    coords = _frame_coords(5, 5000)
    fast, general = FrameVoxels(coords, compiled=True), FrameVoxels(coords, compiled=False)
    assert fast._grid and not general._grid
    a, b = fast.block_neighbours(), general.block_neighbours()
    assert a.shape == b.shape == (len(fast.blocks), 27) and (a < 0).any() and (a >= 0).any()
    # the same block coordinates, numbered differently: compare the neighbours' coordinates
    order = np.lexsort(fast.blocks.T[::-1])
    assert np.array_equal(fast.blocks[order], general.blocks)

    def coords_of(nb, blocks):
        return np.where(nb[..., None] >= 0, blocks[np.maximum(nb, 0)], -(1 << 30))
    assert np.array_equal(coords_of(a, fast.blocks)[order], coords_of(b, general.blocks))


def test_pair_codes_kernel_equals_array_code():
    """The merge pass's object pairs = those of every two slots of each row, in array code."""
    rng = np.random.default_rng(6)
    ids = rng.integers(-1, 9, size=(300, 4)).astype(np.int32)
    ids[rng.random((300, 4)) < 0.4] = -1
    rows = rng.integers(0, 300, size=900)
    sub = ids[rows]
    ref = []
    for i in range(4):
        for j in range(i + 1, 4):
            a, b = sub[:, i], sub[:, j]
            ok = (a >= 0) & (b >= 0)
            ref.append((np.minimum(a[ok], b[ok]).astype(np.int64) << 32) | np.maximum(a[ok], b[ok]).astype(np.int64))
    assert np.array_equal(np.unique(map_kernels.pair_codes_kernel(rows, ids)), np.unique(np.concatenate(ref)))


# ------------------------------------------------------------------ label image in, masks not painted


def _random_masks(rng, shape, n):
    out = []
    for _ in range(n):
        m = np.zeros(shape, bool)
        y0, x0 = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        m[y0 : y0 + rng.integers(2, shape[0] - y0), x0 : x0 + rng.integers(2, shape[1] - x0)] = True
        out.append(Mask2D(m, score=float(rng.random())))
    return out


def test_observation_labels_equal_the_painted_record_masks():
    from dataclasses import replace as dc_replace

    from core3d_ros.core.observation import Observation
    from core3d_ros.core.mapper import observation_labels

    rng = np.random.default_rng(3)
    for _ in range(20):
        masks = _random_masks(rng, (30, 40), int(rng.integers(0, 8)))
        obs = Observation.from_masks(0.0, 0, np.eye(4), masks) if masks else None
        if obs is None:
            continue
        # records in another order and with other label values than 1..N: the renumbering must follow
        perm = rng.permutation(len(obs.masks))
        values = rng.choice(np.arange(1, 200), size=len(obs.masks), replace=False)
        lut = np.zeros(int(obs.labels.max()) + 1, np.uint16)
        recs = []
        for k, i in enumerate(perm):
            lut[obs.masks[i].label] = values[k]
            recs.append(dc_replace(obs.masks[i], label=int(values[k])))
        obs2 = dc_replace(obs, labels=lut[obs.labels], masks=recs)
        old = label_image([Mask2D(obs2.labels == r.label) for r in obs2.masks], obs2.labels.shape)
        assert np.array_equal(observation_labels(obs2), old)
    # hand case: value 7 is record 1 (pixel 1), value 2 record 2, value 5 described by no record (0)
    obs = Observation(stamp=0.0, frame_index=0, pose=np.eye(4), labels=np.array([[0, 7, 2, 5]], np.uint16),
                      masks=[dc_replace(Observation.from_masks(0.0, 0, np.eye(4), [Mask2D(np.ones((1, 4), bool))]).masks[0], label=v) for v in (7, 2)])
    assert observation_labels(obs).tolist() == [[0, 1, 2, 0]]


def _map_state(omap):
    n = omap.num_voxels
    return [omap.ids[:n].copy(), omap.hits[:n].copy(), omap.owner[:n].copy(), omap.colors[:n].copy(),
            sorted((k, v.num_voxels, v.num_observations) for k, v in omap.objects.items())]


def test_fuse_frame_from_the_label_image_equals_fusing_the_masks():
    from core3d_ros.core.mapper import fuse_frame

    scene = make_scene(seed=5, num_frames=6)
    rng = np.random.default_rng(0)
    c = FusionConfig(merge_interval=2, min_segment_voxels=5)
    a, b = ObjectMap(c), ObjectMap(c)
    for i in range(len(scene)):
        f = scene[i]
        frame = Frame(rgb=f.rgb, depth=f.depth, intrinsics=f.intrinsics, pose=f.pose, stamp=float(i), index=i)
        ids = f.instance_ids
        masks = [Mask2D(ids == v) for v in np.unique(ids) if v > 0] + _random_masks(rng, ids.shape, 3)
        sa = fuse_frame(a, frame, masks)
        sb = fuse_frame(b, frame, None, labels=label_image(masks, ids.shape))
        assert (sa.segments, sa.created, sa.associated, sa.merged) == (sb.segments, sb.created, sb.associated, sb.merged)
    for x, y in zip(_map_state(a), _map_state(b)):
        assert np.array_equal(np.asarray(x, dtype=object) if isinstance(x, list) else x, np.asarray(y, dtype=object) if isinstance(y, list) else y)


# ------------------------------------------------------------------ threaded per-pixel stage = reference


def _reference_depth_voxels(depth, rxs, rys, M, t, labels):
    """The one-thread reference: back-projection, then the compiled dedupe, pixel by pixel."""
    h, w = depth.shape
    rx, ry = np.tile(rxs, h), np.repeat(rys, w)
    flat = depth.reshape(-1)
    work = [np.empty(flat.size, np.int32) for _ in range(3)] + [np.empty(flat.size, np.int64)]
    k, _, _ = backproject_kernel(flat, rx, ry, M, t, *work)
    cx, cy, cz, valid = (a[:k] for a in work)
    ok, blocks, voxel, vlabel, _, rep, _, vlut, _, _ = dedupe_kernel(cx, cy, cz, 1 << 22, labels.reshape(-1), valid)
    assert ok
    return k, blocks, voxel, vlabel, valid[rep], vlut


def _depth_image(rng, h, w, holes=0.3):
    """Piecewise-smooth depth (planes and steps, as a room gives) with holes."""
    v, u = np.mgrid[0:h, 0:w]
    d = 1.0 + 2.0 * (u / w) + 0.5 * (v / h) + np.where(u > w // 2, 0.7, 0.0)
    d = d + 0.01 * rng.standard_normal((h, w))
    d[rng.random((h, w)) < holes] = 0
    return d.astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_threaded_depth_voxels_equal_reference(seed, threads):
    """Same blocks, voxels (and their order), last pixels, majority labels and voxel table as the
    one-thread reference, for any number of threads."""
    from core3d_ros.core.fusion.pixels import depth_voxels
    from core3d_ros.core.fusion.threads import ThreadTeam

    rng = np.random.default_rng(seed)
    h, w = (48, 64) if seed % 2 else (120, 160)
    depth = _depth_image(rng, h, w)
    rxs = ((np.arange(w) - w / 2) / (0.9 * w)).astype(np.float32)
    rys = ((np.arange(h) - h / 2) / (0.9 * w)).astype(np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    voxel = (0.01, 0.025, 0.05, 0.2)[seed]
    M, t = q / voxel, rng.standard_normal(3) * 3 / voxel
    labels = rng.integers(0, 4, size=(h, w)).astype(np.uint16)
    labels[: h // 2, : w // 2] = 2  # a large region of one label, as masks give
    team = ThreadTeam(threads)
    if seed == 0:
        team.sizes["vlut_row"] = 512  # one block per thread's voxel table: the stage must grow it and redo the pass
    try:
        got = depth_voxels(team, depth, rxs, rys, M, t, labels.reshape(-1), 1, (1 << 20) - 9, 1 << 22)
    finally:
        team.close()
    assert seed != 0 or team.sizes["vlut_row"] > 512
    n, blocks, vox, vlabel, rep, vlut = _reference_depth_voxels(depth, rxs, rys, M, t, labels)
    assert got.status == "ok" and got.points == n == int(np.count_nonzero(depth > 0))
    assert np.array_equal(got.blocks, blocks)
    assert np.array_equal(got.voxel, vox) and np.array_equal(got.label, vlabel) and np.array_equal(got.rep, rep)
    nb = len(blocks)  # the voxel table: the reference's, then one block of -1 (the absent block)
    assert np.array_equal(got.vlut[: nb * 512], vlut) and np.all(got.vlut[nb * 512 :] == -1)
    # the grid holds every block
    rel = blocks.astype(np.int64) - got.lo
    assert np.all((rel >= 0) & (rel < got.dims))
    assert np.array_equal(got.cell_block[np.ravel_multi_index(rel.T, tuple(got.dims))], np.arange(nb))


REDKITCHEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "7scenes-redkitchen"


@pytest.mark.skipif(not REDKITCHEN.is_dir(), reason="needs ../shared/data/7scenes-redkitchen (the real RGB-D sequence)")
def test_threaded_depth_voxels_equal_reference_on_real_frames():
    from core3d_ros.core.datasets import iter_frames, open_dataset
    from core3d_ros.core.fusion import dbscan
    from core3d_ros.core.fusion.integration import _ray_axes
    from core3d_ros.core.fusion.pixels import depth_voxels
    from core3d_ros.core.fusion.threads import ThreadTeam

    frames = list(iter_frames(open_dataset(str(REDKITCHEN), max_frames=40), []))[::8]
    team = ThreadTeam(2)
    try:
        for voxel in (0.025, 0.01):
            for f in frames:
                M, t = f.pose[:3, :3] / voxel, f.pose[:3, 3] / voxel
                rxs, rys = _ray_axes(f.intrinsics, 1)
                depth = np.ascontiguousarray(f.depth, np.float32)
                labels = (np.arange(depth.size) // 4000 % 7).astype(np.uint16).reshape(depth.shape)
                got = depth_voxels(team, depth, rxs, rys, M, t, labels.reshape(-1), 1, (1 << 20) - 9, 1 << 22)
                n, blocks, vox, vlabel, rep, _ = _reference_depth_voxels(depth, rxs, rys, M, t, labels)
                assert got.status == "ok" and got.points == n
                assert np.array_equal(got.blocks, blocks) and np.array_equal(got.voxel, vox)
                assert np.array_equal(got.label, vlabel) and np.array_equal(got.rep, rep)
                # the DBSCAN split on the team: the reference kernel's segments
                fv = FrameVoxels.from_depth(got)
                args = (fv.voxel, fv._vlut, fv.block_neighbours(), fv.label.astype(np.int64), neighbour_offsets(1.75), 3, 15)
                assert np.array_equal(dbscan.dbscan_padded(*args, team=team), dbscan_kernel(*args))
    finally:
        team.close()


def test_fusion_threads_give_the_same_map():
    """One thread or three: the same map, frame by frame (the per-pixel stage and the
    block look-up beside the DBSCAN split run on the workers)."""
    from core3d_ros.core.mapper import fuse_frame

    scene = make_scene(seed=3, num_frames=8)
    maps = [ObjectMap(FusionConfig(threads=n, merge_interval=3)) for n in (1, 3)]
    for i in range(len(scene)):
        f = scene[i]
        frame = Frame(rgb=f.rgb, depth=f.depth, intrinsics=f.intrinsics, pose=f.pose, stamp=float(i), index=i)
        ids = f.instance_ids
        masks = [Mask2D(ids == v) for v in np.unique(ids) if v > 0]
        stats = [fuse_frame(m, frame, masks) for m in maps]
        assert len({(s.points, s.voxels, s.segments, s.created, s.merged) for s in stats}) == 1
    for x, y in zip(_map_state(maps[0]), _map_state(maps[1])):
        assert np.array_equal(np.asarray(x, dtype=object) if isinstance(x, list) else x, np.asarray(y, dtype=object) if isinstance(y, list) else y)
    assert maps[0].num_voxels > 0


def test_depth_voxels_hand_case():
    """Four pixels of a 1x4 image, identity pose, 1 m voxels: pixel 0 and 3 at voxel (0, 0, 2),
    pixel 1 without depth, pixel 2 at voxel (9, 0, 2) (another block). Labels 1, 5, 2, 1."""
    from core3d_ros.core.fusion.pixels import depth_voxels
    from core3d_ros.core.fusion.threads import ThreadTeam

    depth = np.array([[2.5, 0.0, 2.5, 2.5]], np.float32)
    rxs = np.array([0.1, 0.0, 3.7, 0.2], np.float32)  # x = rx * z: 0.25, -, 9.25, 0.5
    rys = np.zeros(1, np.float32)
    labels = np.array([1, 5, 2, 1], np.uint16)
    for threads in (1, 2):
        got = depth_voxels(ThreadTeam(threads), depth, rxs, rys, np.eye(3), np.zeros(3), labels, 1, (1 << 20) - 9, 1 << 22)
        assert got.status == "ok" and got.points == 3
        assert got.blocks.tolist() == [[0, 0, 0], [1, 0, 0]]
        assert got.voxel.tolist() == [2, (1 << 9) | (1 << 6) | 2]  # block << 9 | x << 6 | y << 3 | z
        assert got.rep.tolist() == [3, 2] and got.label.tolist() == [1, 2]


def test_depth_voxels_votes_runs_as_their_pixels():
    """Runs of pixels with one label are voted on at once: for label sequences with runs
    longer, as long as and shorter than the votes against them, interrupted by pixels without
    depth and by another voxel, the label is the pixel-by-pixel Boyer-Moore candidate."""
    from core3d_ros.core.fusion.pixels import depth_voxels
    from core3d_ros.core.fusion.threads import ThreadTeam

    def boyer_moore(seq):
        cand, votes = 0, 0
        for x in seq:
            if votes == 0:
                cand, votes = x, 1
            else:
                votes += 1 if x == cand else -1
        return cand

    rng = np.random.default_rng(7)
    cases = [[1, 1, 1, 2, 2, 2], [1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 3], [2, 1, 1, 3, 3, 3, 3, 1], [4] * 5 + [5] * 9 + [4] * 3]
    cases += [rng.choice([1, 2, 3], size=int(rng.integers(1, 30)), p=[0.5, 0.3, 0.2]).tolist() for _ in range(200)]
    cases += [np.repeat(rng.integers(1, 4, 8), rng.integers(1, 6, 8)).tolist() for _ in range(200)]
    teams = [ThreadTeam(1), ThreadTeam(2)]
    for seq in cases:
        n = len(seq)
        # pixels of one voxel (x = 0.5), one in four without depth, every fifth in another voxel
        depth = np.full((1, 2 * n), 2.5, np.float32)
        depth[0, 3::4] = 0.0
        rxs = np.full(2 * n, 0.2, np.float32)
        rxs[4::5] = 3.7
        mine = np.flatnonzero((depth[0] > 0) & (rxs == np.float32(0.2)))[:n]
        labels = np.full(2 * n, 9, np.uint16)
        labels[mine] = seq
        for team in teams:
            got = depth_voxels(team, depth, rxs, np.zeros(1, np.float32), np.eye(3), np.zeros(3), labels, 1, (1 << 20) - 9, 1 << 22)
            vox = int(np.flatnonzero(got.voxel == ((0 << 6) | 2))[0])  # voxel (0, 0, 2) of block 0
            own = labels[(depth[0] > 0) & (rxs == np.float32(0.2))]
            assert got.label[vox] == boyer_moore(own.tolist()), (seq, team.threads)
    for team in teams:
        team.close()


def test_depth_voxels_refusals():
    from core3d_ros.core.fusion.pixels import depth_voxels
    from core3d_ros.core.fusion.threads import ThreadTeam

    team = ThreadTeam(2)
    rxs, rys, lab = np.zeros(4, np.float32), np.zeros(1, np.float32), np.zeros(4, np.uint16)
    run = lambda d, t=np.zeros(3), cells=1 << 22: depth_voxels(team, np.array([d], np.float32), rxs, rys, np.eye(3) * 40, t, lab, 2, (1 << 20) - 9, cells)
    assert run([0, 0, 0, 0]).status == "few_valid_depth"
    assert run([0, 1, 0, 0]).status == "few_valid_depth"  # one valid pixel, two needed
    assert run([1, np.inf, 1, 1]).status == "out_of_range"
    assert run([1, 1, 1, 1], t=np.array([2e6, 0, 0])).status == "out_of_range"
    assert run([1, 1, 1, 1], cells=2).status == "too_large"
    assert run([1, 1, 1, 1]).status == "ok"
    team.close()


def test_map_neighbour_rows_kernel_equals_lookup():
    """The hidden-side join's neighbour rows by block arithmetic = ObjectMap.lookup of the
    neighbours' coordinates, across block boundaries and where the map has nothing."""
    from core3d_ros.core.fusion.association import _BLOCK_STEPS
    from core3d_ros.core.fusion.map_kernels import map_neighbour_rows_kernel

    rng = np.random.default_rng(4)
    omap = ObjectMap(FusionConfig(voxel_size=0.05, min_segment_voxels=1))
    pts = rng.uniform(-0.6, 0.6, size=(3000, 3))
    omap.integrate_points(pts, np.zeros((3000, 3), np.uint8), np.ones(3000, np.int32), 0.0)
    assert omap.num_voxels > 500
    frame = np.unique(np.floor(rng.uniform(-0.9, 0.9, size=(2000, 3)) / 0.05).astype(np.int32), axis=0)
    fv = FrameVoxels(np.ascontiguousarray(frame.T), compiled=True)
    offs = np.array([[1, 0, 0], [0, -2, 0], [0, 0, 8], [-8, 0, 0], [3, -1, 2]], np.int64)
    map_nbr = omap._blocks.find((fv.blocks[:, None, :] + _BLOCK_STEPS[None]).reshape(-1, 3)).reshape(len(fv.blocks), 27)
    got = map_neighbour_rows_kernel(fv.voxel, map_nbr, omap._btable, offs)
    coords = fv.voxel_coords()
    want = omap.lookup(pack((coords[:, None, :] + offs[None]).reshape(-1, 3))).reshape(len(coords), len(offs))
    assert np.array_equal(got, want) and (want >= 0).sum() > 100 and (want < 0).sum() > 100


@pytest.mark.parametrize("T", [1, 2, 3])
def test_vote_in_ranges_equals_one_pass(T):
    """Voting the rows in T ranges (a team's threads) leaves the map arrays as one pass does
    and gives the same gained, lost and owner-change lists, concatenated in range order."""
    rng = np.random.default_rng(T)
    n, K, R = 400, 4, 300
    ids = np.where(rng.random((n, K)) < 0.5, rng.integers(0, 6, size=(n, K)), -1).astype(np.int32)
    hits = rng.integers(0, 4, size=(n, K)).astype(np.int32)
    owner = rng.integers(-1, 6, size=n).astype(np.int32)
    colors = rng.random((n, 3)).astype(np.float32) * 255
    color_n = rng.integers(0, 30, size=n).astype(np.int32)
    rows = rng.choice(n, size=R, replace=False).astype(np.int64)
    oid = rng.integers(0, 8, size=R).astype(np.int32)
    fc = rng.integers(0, 256, size=(R, 3)).astype(np.uint8)
    a = [x.copy() for x in (ids, hits, owner, colors, color_n)]
    b = [x.copy() for x in (ids, hits, owner, colors, color_n)]
    want = map_kernels.vote_kernel(rows, oid, *a, fc, 20)
    out = (np.empty(R, np.int64),) + tuple(np.empty(R, np.int32) for _ in range(4))
    counts = np.zeros((T, 3), np.int64)
    for k in range(T):
        map_kernels.vote_part_kernel(k, T, rows, oid, *b, fc, 20, *out, counts)
    step = (R + T - 1) // T
    got = [np.concatenate([out[i][k * step : k * step + counts[k, col]] for k in range(T)]) for i, col in enumerate((0, 0, 1, 2, 2))]
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    for x, y in zip(want, got):
        assert np.array_equal(x, y)
    assert len(want[0]) > 10 and len(want[2]) > 0 and len(want[3]) > 10


def test_gather_rows_kernel_equals_fancy_indexing():
    from core3d_ros.core.fusion.blocks import gather_rows_kernel

    rng = np.random.default_rng(2)
    colors = rng.integers(0, 256, size=(500, 3)).astype(np.uint8)
    pix = rng.integers(0, 500, size=300).astype(np.int64)
    rep = rng.integers(0, 300, size=100).astype(np.int64)
    assert np.array_equal(gather_rows_kernel(colors, pix[rep]), colors[pix[rep]])
    assert gather_rows_kernel(colors, pix[rep[:0]]).shape == (0, 3)


# ------------------------------------------------------------------ branch-free DBSCAN = reference


@pytest.mark.parametrize("seed,min_samples,eps", [(0, 1, 1.75), (1, 3, 1.75), (2, 5, 1.75), (3, 3, 2.5), (4, 4, 1.0), (5, 3, 1.75)])
def test_padded_dbscan_equals_reference_kernels(seed, min_samples, eps):
    """Same segment of every voxel as the reference dbscan_kernel, with the
    voxel table padded (as the per-pixel stage makes it) and with an unpadded one (copied), on
    one to three threads."""
    from core3d_ros.core.fusion import dbscan
    from core3d_ros.core.fusion.threads import ThreadTeam

    rng = np.random.default_rng(seed)
    pts = np.unique(rng.integers(-6, 12, size=(9000, 3)), axis=0)
    pts = pts[rng.permutation(len(pts))].T.astype(np.int32)
    pts = np.ascontiguousarray(pts)
    plain = FrameVoxels(pts, compiled=True)
    padded_vlut = np.concatenate([plain._vlut, np.full(512, -1, plain._vlut.dtype)])  # as depth_voxels makes it
    labels = rng.integers(0, 4, size=len(plain)).astype(np.int64)
    off = neighbour_offsets(eps)
    nbr = plain.block_neighbours()
    teams = [ThreadTeam(t) for t in (1, 2, 3)]
    for min_size in (1, 4):
        ref = dbscan_kernel(plain.voxel, plain._vlut, nbr, labels, off, min_samples, min_size)
        assert np.array_equal(ref, dbscan.dbscan_padded(plain.voxel, plain._vlut, nbr, labels, off, min_samples, min_size))
        for team in teams:  # the neighbour search in parts, the clusters beside other work
            got, side = dbscan.dbscan_padded(plain.voxel, padded_vlut, nbr, labels, off, min_samples, min_size, team=team, beside=lambda: "side")
            assert np.array_equal(ref, got) and side == "side", team.threads
        assert ref.max() >= 1
    for team in teams:
        team.close()


def test_padded_dbscan_hand_case():
    """As test_fast_dbscan_hand_case, across a block boundary (x = 6..9) and with a gap."""
    from core3d_ros.core.fusion import dbscan

    xs = [6, 7, 8, 9, 0, 1, 2, 3, 12]
    pts = np.stack([np.array(xs), np.zeros(9, int), np.zeros(9, int)]).astype(np.int32)
    fv = FrameVoxels(pts, compiled=True)
    labels = np.ones(len(fv), np.int64)
    seg = dbscan.dbscan_padded(fv.voxel, fv._vlut, fv.block_neighbours(), labels, neighbour_offsets(1.0), 3, 1)
    assert dict(zip(fv.voxel_coords()[:, 0].tolist(), seg.tolist())) == {6: 0, 7: 0, 8: 0, 9: 0, 0: 1, 1: 1, 2: 1, 3: 1, 12: -1}
    empty = np.zeros(0, np.int64)
    assert len(dbscan.dbscan_padded(empty, np.full(512, -1, np.int32), np.zeros((0, 27), np.int64), empty, neighbour_offsets(1.75), 3, 1)) == 0


def test_warm_up_reaches_every_kernel():
    """After warm_up, fusing a room (associations, hidden sides, votes in one range and in the
    team's ranges, merge passes) compiles nothing more: a first real frame must not pay a
    kernel's compilation (0.2-0.7 s each on a cold cache). warm_up makes its own frames: fusion
    does not import the datasets. In a fresh process, so that other tests' frames do not
    count."""
    import subprocess
    import sys

    code = """
import sys
from core3d_ros.config import FusionConfig
from core3d_ros.core.fusion import object_map as om

def compiled():
    return {f"{n}.{k}": len(v.signatures) for n, m in list(sys.modules.items()) if n.startswith("core3d_ros")
            for k, v in vars(m).items() if hasattr(v, "signatures") and hasattr(v, "py_func")}

om.warm_up(FusionConfig(threads=2))
assert not [n for n in sys.modules if n.startswith("core3d_ros.core.datasets")], "warm_up imported the datasets"
before = compiled()
from core3d_ros.core.datasets.synthetic import make_scene
scene = make_scene(seed=1, num_frames=24)
omap = om.ObjectMap(FusionConfig(merge_interval=4, threads=2))
for i in range(len(scene)):
    f = scene[i]
    omap.integrate_frame(f.depth, f.intrinsics, f.pose, f.rgb, f.instance_ids.astype("uint16"), float(i))
f = scene[0]
depth = f.depth.copy()
depth[:, 24:] = 0  # a view with few voxels: the votes in one range
s = omap.integrate_frame(depth, f.intrinsics, f.pose, f.rgb, f.instance_ids.astype("uint16"), 24.0)
assert omap.frames == 25 and omap.num_voxels > 0 and 0 < s.voxels < 4096, s
print(sorted(k for k, v in compiled().items() if v != before.get(k, 0)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout[-2000:]


def test_voxel_rows_kernel_equals_array_code():
    """The map row of each frame voxel, compiled, equals the numpy gather it replaces (absent
    blocks give -1)."""
    rng = np.random.default_rng(3)
    btable = rng.integers(-1, 10_000, size=(50, 512)).astype(np.int32)
    block_number = rng.integers(-1, 50, size=30)
    vb, vo = rng.integers(0, 30, size=4000), rng.integers(0, 512, size=4000)
    want = np.where(block_number[vb] >= 0, btable[np.maximum(block_number[vb], 0), vo], -1)
    got = map_kernels.voxel_rows_kernel(block_number, vb, vo, btable)
    assert got.dtype == np.int64 and np.array_equal(got, want) and (got == -1).any() and (got >= 0).any()
