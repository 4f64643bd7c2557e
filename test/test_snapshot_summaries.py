"""Incremental per-object summaries (core/fusion/snapshot.py): every snapshot equals one
recomputed from scratch from the map's rows (points, colours, centroid, mean colour, the same
objects; the box a full fit's up to rounding), whatever mix of
votes, ownership flips, merges, removals and clearing happened in between."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.config import FusionConfig
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.core.fusion.records import IntegrationStats
from core3d_ros.core.fusion.snapshot import _Summary
from core3d_ros.core.fusion.voxels import key_centers
from core3d_ros.core.objects import OrientedBox

VS = 0.05
UP = np.array([0.0, 0.0, 1.0])
BOX_TOL = 1e-5  # metres: the kept box is a full fit's, up to rounding


def _cfg(**kw):
    base = dict(voxel_size=VS, merge_interval=0, min_object_observations=1, min_segment_voxels=5, dbscan_split=False, slots_per_voxel=2)
    base.update(kw)
    return FusionConfig(**base)


def _from_scratch(omap: ObjectMap, up):
    """The snapshot's objects recomputed from the map's rows: id -> (points, colours, box)."""
    n = omap.rows_used  # live rows lie below it (released ones hold no owner)
    out = {}
    for oid, st in omap.objects.items():
        rows = np.flatnonzero(omap.owner[:n] == oid)
        if st.num_observations < omap.cfg.min_object_observations or len(rows) < omap.cfg.min_segment_voxels:
            continue
        pts = key_centers(omap.keys[rows], omap.voxel_size)
        cols = np.clip(omap.colors[rows], 0, 255).astype(np.uint8)
        out[oid] = (pts, cols, OrientedBox.from_points(pts, up=up, min_extent=omap.voxel_size))
    return out


def _sorted(pts, cols):
    order = np.lexsort(pts.T)
    return pts[order], cols[order]


def _corners(box: OrientedBox) -> np.ndarray:
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    return box.center + (signs * box.extent / 2) @ box.rotation.T


def _check(omap: ObjectMap, snap, up=UP) -> None:
    ref = _from_scratch(omap, up)
    got = {o.id: o for o in snap.objects}
    assert set(got) == set(ref)
    for oid, (pts, cols, box) in ref.items():
        o = got[oid]
        gp, gc = _sorted(o.points, o.colors)
        rp, rc = _sorted(pts, cols)
        assert np.array_equal(gp, rp), oid
        assert np.array_equal(gc, rc), oid
        assert np.allclose(o.centroid, pts.mean(axis=0), atol=1e-5)
        assert np.allclose(o.mean_color, cols.mean(axis=0) / 255.0, atol=1e-9)
        # The box holds every point and is tight: each face touches one.
        local = (pts.astype(np.float64) - o.box.center) @ o.box.rotation
        half = o.box.extent / 2
        assert np.all(np.abs(local) <= half + 1e-6)
        span = local.max(axis=0) - local.min(axis=0)
        assert np.allclose(np.maximum(span, VS), o.box.extent, atol=1e-6)
        # ... and lies within a voxel of a full fit (corners matched up to the box's symmetry).
        a, b = _corners(o.box), _corners(box)
        d = np.linalg.norm(a[:, None] - b[None], axis=2)
        assert d.min(axis=1).max() <= BOX_TOL, (oid, d.min(axis=1).max())


def _cuboid(rng, lo, size, n):
    return np.asarray(lo) + rng.random((n, 3)) * np.asarray(size)


def test_random_adds_and_removes_match_a_snapshot_from_scratch():
    rng = np.random.default_rng(3)
    omap = ObjectMap(_cfg())
    # Three cuboids, two of them overlapping so that votes move voxels between owners.
    boxes = [([0, 0, 0], [1.2, 0.4, 0.3]), ([0.9, 0.1, 0], [0.6, 0.8, 0.5]), ([3, 3, 0], [0.5, 0.5, 1.0])]
    for step in range(40):
        pts, labels = [], []
        for i, (lo, size) in enumerate(boxes):
            if rng.random() < 0.8:
                p = _cuboid(rng, lo, size, int(rng.integers(200, 900)))
                pts.append(p)
                labels.append(np.full(len(p), i + 1))
        if not pts:
            continue
        pts = np.concatenate(pts)
        cols = rng.integers(0, 256, (len(pts), 3)).astype(np.uint8)
        omap.integrate_points(pts, cols, np.concatenate(labels), float(step))
        action = rng.random()
        n = omap.num_voxels
        if action < 0.2 and n:  # free space: random rows cleared
            omap._clear_rows(rng.choice(n, size=min(n, 60), replace=False).astype(np.int64), IntegrationStats())
        elif action < 0.3 and len(omap.objects) > 1:  # one object taken out of its voxels
            omap._remove_object(int(rng.choice(sorted(omap.objects))))
            omap._drop_empty()
            omap.version += 1
        elif action < 0.4 and len(omap.objects) > 1:  # a merge
            keep, gone = rng.choice(sorted(omap.objects), size=2, replace=False).tolist()
            omap._merge_pair(int(keep), int(gone))
        if rng.random() < 0.5:
            _check(omap, omap.snapshot(up=UP))
    _check(omap, omap.snapshot(up=UP))
    # A different view (no up vector: principal axes) refits every box.
    _check(omap, omap.snapshot(), up=None)


def test_loaded_and_cleared_maps_start_their_summaries_over():
    rng = np.random.default_rng(0)
    omap = ObjectMap(_cfg())
    p = _cuboid(rng, [0, 0, 0], [1, 1, 1], 3000)
    omap.integrate_points(p, rng.integers(0, 256, (len(p), 3)).astype(np.uint8), np.ones(len(p), int), 0.0)
    n = omap.num_voxels
    loaded = ObjectMap.from_arrays(
        omap.cfg, omap.keys[:n], omap.ids[:n], omap.hits[:n], omap.colors[:n], omap.color_n[:n],
        [s for s in omap.objects.values()], omap.next_id, omap.frames,
    )
    _check(loaded, loaded.snapshot(up=UP))
    loaded.clear()
    assert loaded.snapshot(up=UP).objects == []
    q = _cuboid(rng, [5, 5, 5], [0.5, 0.5, 0.5], 500)
    loaded.integrate_points(q, np.zeros((len(q), 3), np.uint8), np.ones(len(q), int), 1.0)
    _check(loaded, loaded.snapshot(up=UP))


def _grid_object(nx, ny, nz):
    """Points at voxel centres of an nx x ny x nz block of voxels (one per voxel)."""
    g = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), axis=-1).reshape(-1, 3)
    return (g + 0.5) * VS


def test_box_passes_over_the_object_only_when_its_outline_loses_a_point():
    omap = ObjectMap(_cfg(min_segment_voxels=1))
    pts = _grid_object(20, 10, 4)
    inner = np.all(np.isclose(pts, [10.5 * VS, 5.5 * VS, 1.5 * VS]), axis=1)
    pts = pts[~inner]  # one interior voxel left empty
    grey = np.full((len(pts), 3), 100, np.uint8)
    omap.integrate_points(pts, grey, np.ones(len(pts), int), 0.0)
    first = omap.snapshot(up=UP).objects[0]
    summary: _Summary = omap._summaries[first.id]
    assert summary.outline.voxel == VS  # up along z: voxel columns counted in a grid
    passes = summary.passes
    assert np.allclose(sorted(first.box.extent), sorted([19 * VS, 9 * VS, 3 * VS]))

    def row_at(x, y, z):
        centres = key_centers(omap.keys[: omap.rows_used], VS)
        return np.flatnonzero(np.all(np.isclose(centres, np.array([x, y, z]) * VS), axis=1)).astype(np.int64)

    def add(x, y, z, t):  # with the object's voxels, so that the frame's segment joins it
        p = np.concatenate([pts, np.array([[x, y, z]]) * VS])
        omap.integrate_points(p, np.full((len(p), 3), 100, np.uint8), np.ones(len(p), int), t)

    add(10.5, 5.5, 1.5, 1.0)  # inside
    assert len(omap.snapshot(up=UP).objects[0].points) == len(pts) + 1
    _check(omap, omap.snapshot(up=UP))
    omap._clear_rows(row_at(10.5, 5.5, 1.5), IntegrationStats())  # removed from inside
    _check(omap, omap.snapshot(up=UP))
    add(20.5, 2.5, 1.5, 2.0)  # outside: the hull takes it, no pass over the object
    wide = omap.snapshot(up=UP).objects[0]
    assert np.isclose(max(wide.box.extent), 20 * VS)
    _check(omap, omap.snapshot(up=UP))
    assert summary.passes == passes
    omap._clear_rows(row_at(20.5, 2.5, 1.5), IntegrationStats())  # a hull vertex: the hull is rebuilt
    back = omap.snapshot(up=UP).objects[0]
    assert summary.passes == passes + 1 and np.isclose(max(back.box.extent), 19 * VS)
    _check(omap, omap.snapshot(up=UP))
    # One voxel of the corner column and one of the top layer: others stay there, no pass.
    omap._clear_rows(np.concatenate([row_at(0.5, 0.5, 0.5), row_at(5.5, 5.5, 3.5)]), IntegrationStats())
    _check(omap, omap.snapshot(up=UP))
    assert summary.passes == passes + 1
    # The rest of the top layer: the up range is redone (one pass), the box is a layer lower.
    centres = key_centers(omap.keys[: omap.rows_used], VS)
    top = np.flatnonzero(np.isclose(centres[:, 2], 3.5 * VS) & (omap.owner[: omap.rows_used] == first.id))
    omap._clear_rows(top.astype(np.int64), IntegrationStats())
    low = omap.snapshot(up=UP).objects[0]
    assert summary.passes == passes + 2 and np.isclose(min(low.box.extent), 2 * VS)
    _check(omap, omap.snapshot(up=UP))


def test_a_snapshot_reads_only_the_rows_that_changed():
    """After a frame that touches one small object, the snapshot applies that object's rows
    only; a large object that nothing touched keeps its ObjectInfo (the same object)."""
    rng = np.random.default_rng(1)
    omap = ObjectMap(_cfg())
    big = _cuboid(rng, [0, 0, 0], [2, 2, 1], 40000)
    omap.integrate_points(big, np.zeros((len(big), 3), np.uint8), np.ones(len(big), int), 0.0)
    s1 = omap.snapshot(up=UP)
    small = _cuboid(rng, [5, 5, 0], [0.3, 0.3, 0.3], 400)
    omap.integrate_points(small, np.zeros((len(small), 3), np.uint8), np.full(len(small), 2), 1.0)
    marked = sum(len(r) for r in omap._marked_rows)
    assert 0 < marked <= len(small)
    s2 = omap.snapshot(up=UP)
    assert s2.objects[0] is s1.objects[0]
    assert len(s2.objects) == 2
    _check(omap, s2)


@pytest.mark.parametrize("seed", [11, 12])
def test_votes_that_move_voxels_between_objects_keep_both_summaries_exact(seed):
    rng = np.random.default_rng(seed)
    omap = ObjectMap(_cfg(slots_per_voxel=1))
    base = _cuboid(rng, [0, 0, 0], [1, 1, 0.5], 4000)
    for step in range(12):
        label = 1 + (step % 3 == 2)  # every third frame the same voxels are seen as object 2
        sel = base[rng.random(len(base)) < 0.6]
        omap.integrate_points(sel, rng.integers(0, 256, (len(sel), 3)).astype(np.uint8), np.full(len(sel), label), float(step))
        _check(omap, omap.snapshot(up=UP))


def test_a_copy_with_other_points_computes_its_own_centroid():
    import dataclasses

    rng = np.random.default_rng(5)
    omap = ObjectMap(_cfg())
    p = _cuboid(rng, [0, 0, 0], [0.5, 0.5, 0.5], 2000)
    omap.integrate_points(p, rng.integers(0, 256, (len(p), 3)).astype(np.uint8), np.ones(len(p), int), 0.0)
    o = omap.snapshot(up=UP).objects[0]
    assert np.allclose(o.centroid, o.points.mean(axis=0), atol=1e-5)
    moved = dataclasses.replace(o, points=o.points + np.float32([1, 0, 0]), colors=np.zeros_like(o.colors))
    assert np.allclose(moved.centroid, o.centroid + [1, 0, 0], atol=1e-5)
    assert np.allclose(moved.mean_color, 0.0)


def test_a_tilted_up_vector_keeps_exact_boxes_without_the_grid():
    """Up off the grid axes: ground points are not voxel columns, the hull is kept from the
    points themselves (the general path); boxes still equal a full fit's."""
    tilted = np.array([0.2, -0.1, 1.0]) / np.linalg.norm([0.2, -0.1, 1.0])
    rng = np.random.default_rng(9)
    omap = ObjectMap(_cfg())
    for step in range(12):
        p = np.concatenate([_cuboid(rng, [0, 0, 0], [1.0, 0.5, 0.4], 900), _cuboid(rng, [0.8, 0, 0], [0.5, 0.6, 0.3], 600)])
        labels = np.concatenate([np.ones(900, int), np.full(600, 2)])
        omap.integrate_points(p, rng.integers(0, 256, (len(p), 3)).astype(np.uint8), labels, float(step))
        if step % 3 == 2 and omap.num_voxels:
            omap._clear_rows(rng.choice(omap.num_voxels, size=40, replace=False).astype(np.int64), IntegrationStats())
        _check(omap, omap.snapshot(up=tilted), up=tilted)
    assert all(s.outline is not None and not s.outline.voxel for s in omap._summaries.values())


def test_a_released_row_that_returns_as_another_voxel_of_the_same_object():
    # Free space clears a voxel (its row is released: storage.py) and, before the next snapshot,
    # the object gains a voxel elsewhere, which takes that very row: the summary must lose the
    # old point and gain the new one, not keep the old point with the new colour.
    omap = ObjectMap(_cfg(min_segment_voxels=1))
    pts = _grid_object(6, 4, 2)
    omap.integrate_points(pts, np.full((len(pts), 3), 100, np.uint8), np.ones(len(pts), int), 0.0)
    _check(omap, omap.snapshot(up=UP))
    corner = np.flatnonzero(np.all(np.isclose(key_centers(omap.keys[: omap.rows_used], VS), pts[0]), axis=1))
    omap._clear_rows(corner.astype(np.int64), IntegrationStats())
    assert omap.num_voxels == len(pts) - 1
    extra = np.array([[6.5, 1.5, 0.5]]) * VS  # beside the block: joins the object
    p = np.concatenate([pts[1:], extra])
    omap.integrate_points(p, np.full((len(p), 3), 100, np.uint8), np.ones(len(p), int), 1.0)
    assert omap.lookup(omap.keys[corner])[0] == corner[0]  # the released row came back ...
    assert np.allclose(key_centers(omap.keys[corner], VS), extra)  # ... as the new voxel
    snap = omap.snapshot(up=UP)
    _check(omap, snap)
    assert not np.any(np.all(np.isclose(snap.objects[0].points, pts[0]), axis=1))
