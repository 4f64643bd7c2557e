"""``core3d bench versions``: what the queries right after a map update cost the query node.

Each map version (an update from the stream) is a new MapSnapshot that shares its unchanged
objects with the last one. A query on a new version used to derive per-object values (refined
geometry from the points, mean colours) for every object again: a pass over the whole map's
samples on the query path, after every update. Now a new version's index carries what the last
one derived of the shared objects (SnapshotIndex.carry). Side by side in one run, on the same
versions: ``carried`` (the engine as the query node runs it) and ``rebuilt`` (the engine's
cache emptied before each version: every index built afresh, as before).

Per version: ``changed`` objects replaced by moved copies; the bench's query texts are asked
once on the version (``first_ms``: their total, what the queries after an update pay) and again
(``steady_ms``).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ...config import RetrievalConfig
from ...core.objects import MapSnapshot
from ...core.retrieval.engine import QueryEngine
from ..nodes import QUERIES
from .common import machine_info, percentile
from .query import FakeTextEncoder, random_snapshot


def _next(snap: MapSnapshot, rng: np.random.Generator, changed: int) -> MapSnapshot:
    objs = list(snap.objects)
    for i in rng.choice(len(objs), size=min(changed, len(objs)), replace=False).tolist():
        o = objs[i]
        shift = np.float32([0.01, 0.0, 0.0])
        objs[i] = dataclasses.replace(o, points=o.points + shift, box=dataclasses.replace(o.box, center=o.box.center + shift))
    return MapSnapshot(objects=objs, voxel_size=snap.voxel_size, stamp=snap.stamp + 1, frames=snap.frames + 1)


def bench_versions(objects=(300, 1000), versions: int = 20, changed: int = 10, points: int = 2000, seed: int = 0) -> dict:
    """See the module docstring. ``points``: voxels per object (the stream's sample bound)."""
    rows = {}
    for n in objects:
        snap = random_snapshot(int(n), dim=512, seed=seed, points_per_object=points)
        rng = np.random.default_rng(seed)
        chain = [snap]
        for _ in range(versions):
            chain.append(_next(chain[-1], rng, changed))
        out = {}
        for mode in ("carried", "rebuilt"):
            engine = QueryEngine(RetrievalConfig(), FakeTextEncoder(512))
            for q in QUERIES:  # warm: the text cache and the first version
                engine.answer(chain[0], q, top_k=5)
            first, steady = [], []
            for v in chain[1:]:
                if mode == "rebuilt":
                    engine._cache = []  # noqa: SLF001 - no last index to carry from
                t0 = time.perf_counter()
                for q in QUERIES:
                    engine.answer(v, q, top_k=5)
                t1 = time.perf_counter()
                for q in QUERIES:
                    engine.answer(v, q, top_k=5)
                t2 = time.perf_counter()
                first.append((t1 - t0) * 1e3)
                steady.append((t2 - t1) * 1e3)
            out[mode] = {
                "first_ms_p50": percentile(first, 50),
                "first_ms_max": max(first),
                "steady_ms_p50": percentile(steady, 50),
            }
        rows[str(n)] = out
    return {
        "benchmark": "versions",
        "objects": list(objects),
        "versions": versions,
        "changed_per_version": changed,
        "points_per_object": points,
        "queries": list(QUERIES),
        "per_objects": rows,
        "note": "first_ms: the bench's queries, once each, on a new version (what follows an update); steady_ms: "
        "the same again; carried: the index takes the last version's derived values; rebuilt: as before, afresh",
        "machine": machine_info(),
    }
