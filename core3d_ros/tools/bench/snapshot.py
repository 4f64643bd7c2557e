"""``core3d bench snapshot``: what a snapshot costs as one room's map grows, with the per-object
summaries kept by change (core/fusion/snapshot.py) against rebuilding each changed object from
all its voxels (how snapshots were built before), side by side on the same map.

Frames of a dataset are fused one by one (the geometric segmenter's masks, computed before the
timing) and after every ``--every``-th frame a snapshot is taken. Before it, on the same map
state, the full rebuild of the objects the map marked dirty is timed (``full_ms``: each
object's rows found and filtered by owner, voxel centres, colours and its oriented box from all
its points, as the snapshot did before); then the incremental snapshot (``incremental_ms``).
Both are wall-clock and process CPU time per call; figures are given per fifth of the run with
the map's size, so their growth with the map shows.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from ...config import MapperConfig
from ...core.datasets import iter_frames, open_dataset
from ...core.fusion.object_map import ObjectMap, warm_up
from ...core.mapper import fuse_frame, label_image
from ...core.objects import OrientedBox
from ...core.segment.base import make_segmenter
from ...core.segment.progressive import progressive_merge
from .common import machine_info, peak_rss_mb, percentile


def full_rebuild(omap: ObjectMap, oids, up) -> int:
    """The objects ``oids`` rebuilt from all their voxels (the snapshot before summaries were
    kept by change): rows, owner filter, centres, colours, box. Returns the voxels read."""
    from ...core.fusion.voxels import key_centers

    read = 0
    for oid in oids:
        st = omap.objects.get(oid)
        if st is None or st.num_observations < omap.cfg.min_object_observations:
            continue
        rows = omap.member_rows(oid)
        rows = rows[omap.owner[rows] == oid]
        if len(rows) < omap.cfg.min_segment_voxels:
            continue
        pts = key_centers(omap.keys[rows].copy(), omap.voxel_size)
        np.clip(omap.colors[rows], 0, 255).astype(np.uint8)
        OrientedBox.from_points(pts, up=up, min_extent=omap.voxel_size)
        pts.mean(axis=0)
        read += len(rows)
    return read


def bench_snapshot(
    data: str,
    frames: int | None = None,
    voxel: float = 0.01,
    every: int = 1,
    cfg: MapperConfig | None = None,
    progress: Callable | None = None,
) -> dict:
    cfg = cfg or MapperConfig()
    cfg = replace(cfg, fusion=replace(cfg.fusion, voxel_size=voxel))
    up = cfg.retrieval.up_axis
    dataset = open_dataset(data, depth=cfg.depth, max_frames=frames)
    errors: list = []
    loaded = list(iter_frames(dataset, errors))
    if not loaded:
        raise ValueError(f"no readable frames in {data}")
    segmenter = make_segmenter(cfg.segmenter)
    inputs = []
    for frame in progress(loaded) if progress else loaded:
        masks = progressive_merge(segmenter.segment(frame), cfg.segmenter.progressive)
        inputs.append((frame, label_image(masks, frame.depth.shape)))
    warm_up(cfg.fusion)
    omap = ObjectMap(cfg.fusion)
    rec = {k: [] for k in ("voxels", "objects", "changed", "marked_rows", "full_ms", "full_cpu_ms", "full_voxels_read",
                            "incremental_ms", "incremental_cpu_ms", "box_passes", "box_pass_voxels")}
    for i, (frame, labels) in enumerate(inputs):
        fuse_frame(omap, frame, None, labels=labels)
        if (i + 1) % max(1, every):
            continue
        dirty = set(omap._dirty)
        t0, c0 = time.perf_counter(), time.process_time()
        read = full_rebuild(omap, dirty, up)
        t1, c1 = time.perf_counter(), time.process_time()
        marked = sum(len(r) for r in omap._marked_rows)
        fits, scanned = omap.box_passes, omap.box_pass_points
        snap = omap.snapshot(up=up)
        t2, c2 = time.perf_counter(), time.process_time()
        rec["voxels"].append(omap.num_voxels)
        rec["objects"].append(len(snap.objects))
        rec["changed"].append(len(dirty))
        rec["marked_rows"].append(marked)
        rec["full_ms"].append((t1 - t0) * 1e3)
        rec["full_cpu_ms"].append((c1 - c0) * 1e3)
        rec["full_voxels_read"].append(read)
        rec["incremental_ms"].append((t2 - t1) * 1e3)
        rec["incremental_cpu_ms"].append((c2 - c1) * 1e3)
        rec["box_passes"].append(omap.box_passes - fits)
        rec["box_pass_voxels"].append(omap.box_pass_points - scanned)
    n = len(rec["voxels"])
    bounds = np.linspace(0, n, 6).astype(int)
    fifths = {
        k: [float(np.mean(v[a:b])) if b > a else 0.0 for a, b in zip(bounds[:-1], bounds[1:])]
        for k, v in rec.items()
    }
    last = slice(bounds[-2], bounds[-1])
    return {
        "benchmark": "snapshot",
        "data": str(data),
        "frames": len(loaded),
        "snapshots": n,
        "every": every,
        "voxel_size": voxel,
        "segmenter": cfg.segmenter.name,
        "map_voxels": omap.num_voxels,
        "objects": rec["objects"][-1] if n else 0,
        "fifths": fifths,  # mean per fifth of the run: map size, objects, both timings
        "last_fifth": {
            "voxels": fifths["voxels"][-1],
            "full_ms_p50": percentile(rec["full_ms"][last], 50),
            "incremental_ms_p50": percentile(rec["incremental_ms"][last], 50),
            "incremental_ms_p95": percentile(rec["incremental_ms"][last], 95),
            "incremental_ms_max": float(max(rec["incremental_ms"][last])) if n else 0.0,
        },
        "summary_mb": omap.summary_bytes() / 2**20,  # a part of map_mb
        "map_mb": omap.memory_bytes() / 2**20,
        "peak_rss_mb": peak_rss_mb(),
        "note": "full_ms: the changed objects rebuilt from all their voxels (the snapshot before), on the same "
        "map state just before the incremental snapshot; both single-threaded Python/numpy",
        "machine": machine_info(),
    }
