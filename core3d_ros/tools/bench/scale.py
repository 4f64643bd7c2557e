"""``core3d bench scale``: how per-frame fusion, snapshot and merge costs move as one map grows
to millions of voxels."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from ...config import MapperConfig, up_vector
from ...core.fusion.object_map import ObjectMap, warm_up
from .common import machine_info, peak_rss_mb


def bench_scale(
    voxels: int = 2_000_000,
    voxel_size: float = 0.01,
    frames_per_room: int = 6,
    width: int = 640,
    height: int = 480,
    cfg: MapperConfig | None = None,
    progress: Callable | None = None,
    hierarchy: bool = False,
) -> dict:
    """Grow one map to at least ``voxels`` voxels and report how per-frame fusion, snapshot and
    merge costs move as it grows (mean per tenth of the run).

    The trajectory visits a row of identical synthetic rooms (one rendered room, its frames
    replayed with each room's offset, 15 m apart), so every tenth of the run sees the same
    content and only the map's size differs. Masks are the frames' instance ids (the oracle),
    fused as label images. After every frame the snapshot is taken (objects changed since the
    previous one are rebuilt); after each room's frames the merge pass runs, timed on its own.

    ``hierarchy``: the mapping node's scene-graph work on the same trajectory, timed apart: every
    frame into the geometry layer (TSDF, the same voxel size), its changed blocks' surface fed
    to the hierarchy builder with the camera centre (per-frame overhead), and the builder's
    update after each room (per call). The rooms lie on one floor, so the floor grows with
    the map: this shows what an update of a growing floor costs.
    """
    from ...core.datasets import make_scene

    cfg = cfg or MapperConfig()
    # No voxel cap in this run: the map must grow past the target, whatever the room yields.
    fusion = replace(cfg.fusion, voxel_size=voxel_size, pixel_stride=1, max_voxels=max(cfg.fusion.max_voxels, 20 * voxels))
    merge_every = frames_per_room  # one pass per room, so every tenth has passes to time
    fusion = replace(fusion, merge_interval=0)  # the bench runs (and times) the merge pass itself
    scene = make_scene(seed=0, num_frames=frames_per_room, width=width, height=height)
    room = [scene[i] for i in range(len(scene))]
    omap = ObjectMap(fusion)
    # Warm-up (compiled kernels, the merge pass's too) on a scratch map.
    warm_up(fusion)
    warm = room[0]
    omap.__class__(fusion).integrate_frame(warm.depth, warm.intrinsics, warm.pose, warm.rgb, warm.instance_ids.astype(np.uint16), 0.0)

    def room_frames(k: int):
        """The room's frames forward, backward and forward again (a revisit adds no voxels
        but gives every tenth more frames to average over)."""
        shift = np.eye(4)
        shift[0, 3] = 15.0 * k
        for f in [*room, *room[::-1], *room]:
            yield f, shift @ f.pose

    fusion_ms, snapshot_ms, merge_ms, merge_frame = [], [], [], []
    hier: dict[str, list[float]] = {"tsdf_ms": [], "feed_ms": [], "update_ms": []}
    layer = builder = None
    if hierarchy:
        from ...core.hierarchy.builder import HierarchyBuilder
        from ...core.tsdf import GeometryLayer

        g = cfg.geometry
        layer = GeometryLayer(
            voxel_size, cfg.depth.max_depth, trunc_voxels=g.trunc_voxels, clear=g.clear, max_weight=g.max_weight,
            carve=g.clear and g.carve, carve_interval=g.carve_interval,
        )
        builder = HierarchyBuilder(cfg.hierarchy, voxel_size, up=up_vector(cfg.retrieval.up_axis))
    cpu: dict[str, list[float]] = {"fusion_ms": [], "snapshot_ms": [], "merge_ms": []}
    frame_no = 0

    def run_room(k: int) -> None:
        nonlocal frame_no
        for f, pose in room_frames(k):
            labels = f.instance_ids.astype(np.uint16)
            t0, c0 = time.perf_counter(), time.process_time()
            omap.integrate_frame(f.depth, f.intrinsics, pose, f.rgb, labels, float(frame_no))
            t1, c1 = time.perf_counter(), time.process_time()
            omap.snapshot(up=up_vector(cfg.retrieval.up_axis))
            t2, c2 = time.perf_counter(), time.process_time()
            fusion_ms.append((t1 - t0) * 1e3)
            snapshot_ms.append((t2 - t1) * 1e3)
            cpu["fusion_ms"].append((c1 - c0) * 1e3)
            cpu["snapshot_ms"].append((c2 - c1) * 1e3)
            if layer is not None:
                t4 = time.perf_counter()
                layer.integrate(replace(f, pose=pose))
                t5 = time.perf_counter()
                blocks = layer.take_dirty()
                points, _, block_of = layer.surface(blocks)  # the surface publisher's work, shared
                builder.add_surface(blocks, points, block_of)
                builder.add_camera(pose[:3, 3])
                hier["tsdf_ms"].append((t5 - t4) * 1e3)
                hier["feed_ms"].append((time.perf_counter() - t5) * 1e3)
            frame_no += 1
            if layer is not None and frame_no % merge_every == 0:
                t6 = time.perf_counter()
                builder.update([], now=float(frame_no), force=True)
                hier["update_ms"].append((time.perf_counter() - t6) * 1e3)
            if frame_no % merge_every == 0:
                t3, c3 = time.perf_counter(), time.process_time()
                omap.merge_objects()
                merge_ms.append((time.perf_counter() - t3) * 1e3)
                cpu["merge_ms"].append((time.process_time() - c3) * 1e3)
                merge_frame.append(frame_no - 1)

    run_room(0)
    per_room = max(omap.num_voxels, 1)
    rooms = 10 * int(np.ceil(voxels / (10 * per_room)))  # a whole number of rooms per tenth
    # The map grows as the node grows it: its arrays reserved for max_voxels and written a chunk
    # at a time as it fills them (storage.py), so whatever growth costs is in the figures.
    it = range(1, rooms)
    for k in progress(it) if progress else it:
        run_room(k)
    n = len(fusion_ms)
    bounds = np.linspace(0, n, 11).astype(int)

    def tenths(values: list[float], at: list[int] | None = None, how=np.mean) -> list[float]:
        v = np.asarray(values, np.float64)
        pos = np.arange(len(v)) if at is None else np.asarray(at)
        return [float(how(v[(pos >= a) & (pos < b)])) if np.any((pos >= a) & (pos < b)) else 0.0 for a, b in zip(bounds[:-1], bounds[1:])]

    result = {
        "benchmark": "scale",
        "voxels": int(omap.num_voxels),
        "voxels_target": int(voxels),
        "voxel_size": voxel_size,
        "fusion_threads": omap.threads,
        "rooms": rooms,
        "frames": n,
        "image_size": [width, height],
        "objects": len(omap.objects),
        "bytes_per_voxel": omap.memory_bytes() / max(omap.num_voxels, 1),
        "map_mb": omap.memory_bytes() / 2**20,
        "tenths": {
            "fusion_ms": tenths(fusion_ms),
            "snapshot_ms": tenths(snapshot_ms),
            "merge_ms": tenths(merge_ms, merge_frame),
        },
        # the worst single call in each tenth, beside the mean (a growth copy shows here)
        "tenths_worst": {
            "fusion_ms": tenths(fusion_ms, how=np.max),
            "snapshot_ms": tenths(snapshot_ms, how=np.max),
            "merge_ms": tenths(merge_ms, merge_frame, how=np.max),
        },
        "worst_ms": {
            "fusion_ms": float(max(fusion_ms)),
            "snapshot_ms": float(max(snapshot_ms)),
            "merge_ms": float(max(merge_ms)) if merge_ms else 0.0,
        },
        # The same, in this process's CPU time: on a machine shared with other work, wall-clock
        # means move with the neighbours' load; CPU time shows what the map's size costs.
        "tenths_cpu": {
            "fusion_ms": tenths(cpu["fusion_ms"]),
            "snapshot_ms": tenths(cpu["snapshot_ms"]),
            "merge_ms": tenths(cpu["merge_ms"], merge_frame),
        },
        # the worst single call per tenth in CPU time: a growth copy shows here even under load
        "tenths_worst_cpu": {
            "fusion_ms": tenths(cpu["fusion_ms"], how=np.max),
            "snapshot_ms": tenths(cpu["snapshot_ms"], how=np.max),
            "merge_ms": tenths(cpu["merge_ms"], merge_frame, how=np.max),
        },
        "merge_every_frames": merge_every,
        "peak_rss_mb": peak_rss_mb(),
        "note": "identical rooms 15 m apart, oracle masks as label images, stride 1; snapshot after every frame; "
        "the map grows from empty as in the node (address space reserved for max_voxels, written as reached)",
        "machine": machine_info(),
    }
    if layer is not None:
        result["hierarchy"] = {
            "tenths": {
                "tsdf_ms": tenths(hier["tsdf_ms"]),
                "feed_ms": tenths(hier["feed_ms"]),
                "update_ms": tenths(hier["update_ms"], merge_frame),
            },
            "update_ms_worst": float(max(hier["update_ms"])) if hier["update_ms"] else 0.0,
            "floors": len(builder.graph.floors),
            "rooms": len(builder.graph.rooms),
            "note": "feed: surface of the frame's changed TSDF blocks + builder.add_surface/add_camera (per frame); "
            "update: builder.update after each room (per call); one floor that grows with the map",
        }
        h = result["hierarchy"]["tenths"]
        result["hierarchy"]["last_over_first"] = {k: (v[-1] / v[0] if v[0] > 0 else None) for k, v in h.items()}
    t = result["tenths"]
    result["last_over_first"] = {k: (v[-1] / v[0] if v[0] > 0 else None) for k, v in t.items()}
    result["last_over_first_cpu"] = {k: (v[-1] / v[0] if v[0] > 0 else None) for k, v in result["tenths_cpu"].items()}
    return result
