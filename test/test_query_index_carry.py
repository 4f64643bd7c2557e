"""A new map version's query index takes what the last version's queries derived of the objects
the two share (QueryEngine.index -> SnapshotIndex.carry): the values equal a fresh index's, the
changed objects are derived anew, and answers are the same as a fresh engine's."""
from __future__ import annotations

import dataclasses

import numpy as np

from core3d_ros.config import RetrievalConfig
from core3d_ros.core.objects import MapSnapshot
from core3d_ros.core.retrieval.engine import QueryEngine
from core3d_ros.tools.bench.query import FakeTextEncoder, random_snapshot
from core3d_ros.tools.nodes import QUERIES

GEOMETRY = ("z_lo", "z_hi", "foot_half", "foot_center", "center")


def _next_version(snap: MapSnapshot, moved: int, voxel_size: float | None = None) -> MapSnapshot:
    """The same objects (the same ObjectInfo) but ``moved``, which is a new object 0.4 m higher."""
    objs = list(snap.objects)
    o = objs[moved]
    objs[moved] = dataclasses.replace(
        o, points=o.points + np.float32([0, 0, 0.4]), box=dataclasses.replace(o.box, center=o.box.center + [0, 0, 0.4])
    )
    vs = snap.voxel_size if voxel_size is None else voxel_size
    return MapSnapshot(objects=objs, voxel_size=vs, stamp=snap.stamp + 1, frames=snap.frames + 1)


def _engine() -> QueryEngine:
    return QueryEngine(RetrievalConfig(), FakeTextEncoder(64))


def test_a_new_version_carries_the_refined_geometry_of_its_unchanged_objects():
    snap = random_snapshot(40, dim=64, points_per_object=50)
    engine = _engine()
    engine.answer(snap, "the largest object", top_k=3)  # a superlative refines every object
    first = engine.index(snap)
    assert first.geometry.refined.all()
    first.mean_colors(np.arange(len(first)))
    nxt = _next_version(snap, moved=5)
    idx = engine.index(nxt)
    assert idx is not first
    refined = idx.geometry.refined
    assert not refined[5] and refined[np.arange(len(idx)) != 5].all()
    assert np.isnan(idx._colors[5]).all() and not np.isnan(np.delete(idx._colors, 5, axis=0)).any()
    # what was carried equals what a fresh index derives; the moved object is derived anew
    fresh = _engine().index(nxt)
    fresh.refine(np.arange(len(fresh)))
    idx.refine(np.arange(len(idx)))
    for name in GEOMETRY:
        assert np.allclose(getattr(idx.geometry, name), getattr(fresh.geometry, name)), name
    assert np.isclose(idx.geometry.z_lo[5], first.geometry.z_lo[5] + 0.4)
    assert np.allclose(idx.mean_colors(np.arange(len(idx))), fresh.mean_colors(np.arange(len(fresh))))


def test_answers_on_a_carried_index_equal_a_fresh_engines():
    snap = random_snapshot(60, dim=64, points_per_object=40, seed=3)
    engine = _engine()
    for q in QUERIES:
        engine.answer(snap, q, top_k=5)
    nxt = _next_version(snap, moved=0)
    for q in QUERIES:
        a, b = engine.answer(nxt, q, top_k=5), _engine().answer(nxt, q, top_k=5)
        assert [r.object_id for r in a.results] == [r.object_id for r in b.results], q
        assert np.allclose([r.score for r in a.results], [r.score for r in b.results]), q


def test_nothing_is_carried_across_another_voxel_size():
    snap = random_snapshot(20, dim=64, points_per_object=30)
    engine = _engine()
    engine.answer(snap, "the largest object", top_k=3)
    idx = engine.index(_next_version(snap, moved=0, voxel_size=snap.voxel_size * 2))  # another pad
    assert not idx.geometry.refined.any()


def test_the_versions_bench_times_both_ways_on_the_same_versions():
    from core3d_ros.tools.bench.versions import bench_versions

    r = bench_versions(objects=(30,), versions=2, changed=3, points=20)
    row = r["per_objects"]["30"]
    assert r["versions"] == 2 and set(row) == {"carried", "rebuilt"}
    for mode in row.values():
        assert 0 < mode["first_ms_p50"] <= mode["first_ms_max"] and mode["steady_ms_p50"] > 0
