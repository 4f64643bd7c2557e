"""``core3d bench fusion``: our fusion stage against Open3D's TSDF integration, set up as the
node's geometry layer, on the same frames at the same voxel size.

Timings are wall-clock per call (``time.perf_counter``), taken side by side in one run on the
same inputs, alternating frame by frame so that machine noise hits both.

Beside the ratio: the free-space pass's own time inside ours (``free_space``), what it removed
(on a static sequence every removal is erosion), and the geometry layer with and without TSDF
clearing (``geometry_clearing``: every allocated block in view integrated and, with
``geometry.carve``, voxels seen through reset, core/tsdf.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from ...config import MapperConfig, up_vector
from ...core.datasets import iter_frames, open_dataset
from ...core.frame import Frame
from ...core.fusion.object_map import ObjectMap, warm_up
from ...core.fusion.voxels import pack, unpack
from ...core.mapper import fuse_frame, label_image
from ...core.segment.base import make_segmenter
from ...core.segment.progressive import progressive_merge
from .common import machine_info, peak_rss_mb


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    q = max(1, len(a) // 4)
    return {
        "ms_per_frame": float(a.mean()),
        "ms_median": float(np.median(a)),
        "ms_p90": float(np.percentile(a, 90)),
        "ms_max": float(a.max()),
        "ms_first_quarter": float(a[:q].mean()),
        "ms_last_quarter": float(a[-q:].mean()),
    }


class Open3DTSDF:
    """Open3D's VoxelBlockGrid TSDF integration (the peer we compare with), set up as the node's
    geometry layer is: the same truncation band, depth scale, depth range, initial block count
    and device (``like_node``). Its input is Open3D's native one (uint16 millimetres, uint8
    colour), built outside the timing by :meth:`prepare`."""

    def __init__(
        self,
        voxel_size: float,
        depth_max: float,
        trunc_voxels: float,
        block_count: int,
        device: str = "cpu",
        block_resolution: int = 8,
    ):
        import open3d as o3d
        import open3d.core as o3c

        from ...core.tsdf import DEPTH_SCALE, _device

        self.o3d, self.o3c = o3d, o3c
        self.device = _device(device)
        self.voxel_size = float(voxel_size)
        self.depth_max = float(depth_max)
        self.depth_scale = DEPTH_SCALE
        self.trunc_voxels = float(trunc_voxels)
        self.block_count = int(block_count)
        self.block_resolution = int(block_resolution)
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=self.voxel_size,
            block_resolution=self.block_resolution,
            block_count=self.block_count,
            device=self.device,
        )

    @classmethod
    def like_node(cls, cfg: MapperConfig) -> "Open3DTSDF":
        """The geometry layer's settings (``geometry.*``, ``depth.max_depth``) at the object
        map's voxel size."""
        g = cfg.geometry
        return cls(cfg.fusion.voxel_size, cfg.depth.max_depth, g.trunc_voxels, g.block_count, g.device)

    def settings(self) -> dict:
        return {
            "voxel_size": self.voxel_size,
            "trunc_voxels": self.trunc_voxels,
            "depth_scale": self.depth_scale,
            "depth_max": self.depth_max,
            "block_resolution": self.block_resolution,
            "block_count_initial": self.block_count,
            "device": str(self.device),
            "attributes": "tsdf, weight, color (float32)",
        }

    def prepare(self, frame: Frame):
        o3c, o3d = self.o3c, self.o3d
        depth_mm = np.round(np.nan_to_num(frame.depth, nan=0.0, posinf=0.0) * self.depth_scale)
        return (
            o3d.t.geometry.Image(o3c.Tensor(np.clip(depth_mm, 0, 65535).astype(np.uint16)).to(self.device)),
            o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(frame.rgb)).to(self.device)),
            o3c.Tensor(frame.intrinsics.matrix, o3c.float64),
            o3c.Tensor(np.linalg.inv(frame.pose), o3c.float64),
        )

    def integrate(self, prepared) -> None:
        depth, color, K, extrinsic = prepared
        args = (K, extrinsic, self.depth_scale, self.depth_max, self.trunc_voxels)
        blocks = self.vbg.compute_unique_block_coordinates(depth, *args)
        self.vbg.integrate(blocks, depth, color, *args)

    @property
    def num_blocks(self) -> int:
        return int(self.vbg.hashmap().size())


class _Run:
    """One timed run: our fusion stage and Open3D's integration, each into its own fresh map."""

    def __init__(self, omap: ObjectMap, peer: Open3DTSDF):
        self.omap, self.peer = omap, peer
        self.ours_ms: list[float] = []
        self.peer_ms: list[float] = []
        self.ours_cpu: list[float] = []
        self.peer_cpu: list[float] = []
        self.strides: list[int] = []
        self.points: list[int] = []
        self.free_ms: list[float] = []
        self.cleared_voxels = 0
        self.cleared_keys: list[np.ndarray] = []
        self.removed_objects: list[int] = []
        fs = omap._free_space

        def timed_free_space(*args, **kwargs):  # the free-space pass's share of ours
            t = time.perf_counter()
            try:
                return fs(*args, **kwargs)
            finally:
                self.free_ms.append((time.perf_counter() - t) * 1e3)

        omap._free_space = timed_free_space

    def ours(self, frame: Frame, masks, labels) -> None:
        t, c = time.perf_counter(), time.process_time()
        fused = fuse_frame(self.omap, frame, masks, labels=labels)
        self.ours_ms.append((time.perf_counter() - t) * 1e3)
        self.ours_cpu.append((time.process_time() - c) * 1e3)
        self.strides.append(fused.stride)
        self.points.append(fused.points)
        self.cleared_voxels += fused.cleared_voxels
        self.cleared_keys.append(fused.cleared_keys)
        self.removed_objects += list(fused.removed_objects)

    def theirs(self, frame: Frame, masks, labels) -> None:
        prepared = self.peer.prepare(frame)  # Open3D's input format, built outside its timing
        t, c = time.perf_counter(), time.process_time()
        self.peer.integrate(prepared)
        self.peer_ms.append((time.perf_counter() - t) * 1e3)
        self.peer_cpu.append((time.process_time() - c) * 1e3)

    def figures(self) -> dict:
        ours, theirs = np.asarray(self.ours_ms), np.asarray(self.peer_ms)
        return {
            "ours": _stats(self.ours_ms),
            "open3d": _stats(self.peer_ms),
            "ratio": float(ours.mean() / theirs.mean()),
            "ratio_of_frame_medians": float(np.median(ours) / np.median(theirs)),
            "cpu_ratio": float(np.mean(self.ours_cpu) / max(np.mean(self.peer_cpu), 1e-9)),
            "ours_cpu_ms_per_frame": float(np.mean(self.ours_cpu)),
            "open3d_cpu_ms_per_frame": float(np.mean(self.peer_cpu)),
            "free_space_ms_per_frame": float(np.sum(self.free_ms) / max(1, len(self.ours_ms))),
        }


def _geometry_clearing(cfg: MapperConfig, frames: list[Frame]) -> dict:
    """The geometry layer (core/tsdf.py) with TSDF clearing (every allocated block in view
    integrated, weights capped) and without, each into its own fresh grid, frames interleaved
    one by one (which goes first alternates)."""
    from ...core.tsdf import GeometryLayer

    g = cfg.geometry
    layers, ms, blocks = {}, {"clear": [], "plain": []}, {"clear": [], "plain": []}
    for name, clear in (("clear", True), ("plain", False)):
        layers[name] = GeometryLayer(
            cfg.fusion.voxel_size, cfg.depth.max_depth, device=g.device, block_count=g.block_count,
            trunc_voxels=g.trunc_voxels, min_weight=g.min_weight, clear=clear, max_weight=g.max_weight if clear else 0.0,
            carve=clear and g.carve, carve_interval=g.carve_interval,
        )
    for i, frame in enumerate(frames):
        for name in ("clear", "plain") if i % 2 == 0 else ("plain", "clear"):
            t = time.perf_counter()
            blocks[name].append(layers[name].integrate(frame))
            ms[name].append((time.perf_counter() - t) * 1e3)
    clear_ms, plain_ms = float(np.mean(ms["clear"][1:] or ms["clear"])), float(np.mean(ms["plain"][1:] or ms["plain"]))
    return {
        "what": "GeometryLayer.integrate per frame (uint16 conversion, block coordinates, integration), with "
        "geometry.clear (+ rays through the min-pooled depth, hash-map look-up, weight cap) and without; "
        "the first frame (compilation, first allocations) left out",
        "clear_ms_per_frame": clear_ms,
        "plain_ms_per_frame": plain_ms,
        "ratio": clear_ms / max(plain_ms, 1e-9),
        "clear_blocks_per_frame": float(np.mean(blocks["clear"])),
        "plain_blocks_per_frame": float(np.mean(blocks["plain"])),
        "blocks_added_for_clearing_per_frame": layers["clear"].cleared_blocks / max(1, len(frames)),
        "max_weight": g.max_weight,
        "carve": g.carve,
        # on a static sequence a carved voxel is one a frame saw through though the map held it on
        # or behind a surface (noise, pose error, or the far side of a thin band seen from afar)
        "carved_voxels_per_frame": layers["clear"].carved_voxels / max(1, len(frames)),
        "grid_blocks": layers["clear"].num_blocks,
    }


def _near_map(omap: ObjectMap, keys: np.ndarray, r: int) -> dict:
    """Of the distinct voxel ``keys``, how many have a voxel held by an object in ``omap``
    within ``r`` voxels (Chebyshev); costs (2r + 1)^3 look-ups per key."""
    c = unpack(np.unique(keys))
    near = np.zeros(len(c), bool)
    for d in np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 3):
        rows = omap.lookup(pack(c + d))
        ok = rows >= 0
        ok[ok] = (omap.ids[rows[ok]] >= 0).any(axis=1)
        near |= ok
    return {"distinct": len(c), "near_map": int(near.sum())}


def bench_fusion(
    data: str,
    frames: int | None = None,
    voxel: float | None = None,
    cfg: MapperConfig | None = None,
    runs: int = 5,
    progress: Callable | None = None,
) -> dict:
    """Our fusion stage (geometric segmenter's masks) vs Open3D's TSDF integration set up as
    the node's geometry layer, on the same frames at the same voxel size.

    ``runs`` whole runs, each into a fresh map on both sides, frames interleaved one by one, and
    which side goes first alternates from run to run; the figures are the median over runs of
    each run's mean, beside the worst run and the worst single frame. ``ours`` is the fusion
    stage alone (back-projection, voxel hashing, DBSCAN split, association, voting, merging)
    from the label image, which the perception node sends; the masks are computed once, before
    the timed runs (their time is ``segment_ms_per_frame``).
    """
    from ...core.tsdf import DEPTH_SCALE

    cfg = cfg or MapperConfig()
    if voxel is not None:
        cfg = replace(cfg, fusion=replace(cfg.fusion, voxel_size=voxel))
    runs = max(1, int(runs))
    dataset = open_dataset(data, depth=cfg.depth, max_frames=frames)
    errors: list = []
    loaded = list(iter_frames(dataset, errors))  # decode outside the timed region
    if not loaded:
        raise ValueError(f"no readable frames in {data}")
    segmenter = make_segmenter(cfg.segmenter)
    inputs, seg_ms = [], []
    for frame in progress(loaded) if progress else loaded:
        t0 = time.perf_counter()
        masks = progressive_merge(segmenter.segment(frame), cfg.segmenter.progressive)
        # the fusion stage's input is the label image, painted here as the perception node does
        inputs.append((frame, masks, label_image(masks, frame.depth.shape)))
        seg_ms.append((time.perf_counter() - t0) * 1e3)
    # Warm-up outside the timing, for both: our compiled kernels (numba cache, the merge pass's
    # too, which one frame does not reach) and Open3D's first allocations.
    warm_up(cfg.fusion)
    frame, masks, labels = inputs[0]
    fuse_frame(ObjectMap(cfg.fusion), frame, masks, labels=labels)
    scratch = Open3DTSDF.like_node(cfg)
    scratch.integrate(scratch.prepare(frame))

    per_run: list[dict] = []
    for r in range(runs):
        omap, peer = ObjectMap(cfg.fusion), Open3DTSDF.like_node(cfg)
        run = _Run(omap, peer)
        order = (run.ours, run.theirs) if r % 2 == 0 else (run.theirs, run.ours)
        for item in inputs:
            for side in order:
                side(*item)
        per_run.append({"first": "ours" if r % 2 == 0 else "open3d", **run.figures()})
    strides, points_n = run.strides, run.points
    geometry = _geometry_clearing(cfg, loaded) if cfg.geometry.enabled else None
    ratios = [p["ratio"] for p in per_run]
    ours_mean = float(np.median([p["ours"]["ms_per_frame"] for p in per_run]))
    peer_mean = float(np.median([p["open3d"]["ms_per_frame"] for p in per_run]))
    quarter = max(1, len(points_n) // 4)
    snap = omap.snapshot(up=up_vector(cfg.retrieval.up_axis))
    return {
        "benchmark": "fusion",
        "data": str(data),
        "frames": len(loaded),
        "frames_unreadable": len(errors),
        "runs": runs,
        "image_size": [loaded[0].intrinsics.width, loaded[0].intrinsics.height],
        "voxel_size": cfg.fusion.voxel_size,
        "pixel_stride": cfg.fusion.pixel_stride,
        "pixel_stride_mean": float(np.mean(strides)),
        "segmenter": cfg.segmenter.name,
        # the figures: median over runs of each run's mean (ratio: median of the runs' ratios)
        "ours_ms_per_frame": ours_mean,
        "open3d_ms_per_frame": peer_mean,
        "ratio": ours_mean / peer_mean,
        "ratio_median_of_runs": float(np.median(ratios)),
        "ratio_worst_run": float(max(ratios)),
        "ratio_best_run": float(min(ratios)),
        "ratios": ratios,
        # the typical frame, without growth spikes (Open3D's hash map rehashes as it grows from
        # geometry.block_count, as the node's does; ours doubles its arrays)
        "ratio_of_frame_medians": float(np.median([p["ratio_of_frame_medians"] for p in per_run])),
        "cpu_ratio": float(np.median([p["cpu_ratio"] for p in per_run])),
        "ours_cpu_ms_per_frame": float(np.median([p["ours_cpu_ms_per_frame"] for p in per_run])),
        "open3d_cpu_ms_per_frame": float(np.median([p["open3d_cpu_ms_per_frame"] for p in per_run])),
        "free_space": {
            "enabled": cfg.fusion.free_space,
            "interval": cfg.fusion.free_interval,
            "ms_per_frame": float(np.median([p["free_space_ms_per_frame"] for p in per_run])),
            "ms_per_frame_note": "the free-space pass inside ours (median over runs of the mean over all frames; it looks every fusion.free_interval-th)",
            # a static sequence: everything free space removes is erosion (last run)
            "eroded_voxels": run.cleared_voxels,
            "eroded_voxels_fraction": run.cleared_voxels / max(1, omap.num_voxels + run.cleared_voxels),
            "eroded_objects": len(set(run.removed_objects)),
            # thinning or a hole: how many of them still have a voxel of the final map within 2 voxels
            "eroded_near_map": _near_map(omap, np.concatenate([np.zeros(0, np.int64), *run.cleared_keys]), 2),
            "erosion_note": "voxels and objects free space removed in the last run; on a static sequence every removal is erosion; "
            "eroded_near_map: of the distinct voxels eroded, those with a voxel held at the end within 2 voxels (a thinner or shifted surface, not a hole)",
        },
        "geometry_clearing": geometry,
        "ours_worst_frame_ms": float(max(p["ours"]["ms_max"] for p in per_run)),
        "open3d_worst_frame_ms": float(max(p["open3d"]["ms_max"] for p in per_run)),
        "ms_first_quarter": float(np.median([p["ours"]["ms_first_quarter"] for p in per_run])),
        "ms_last_quarter": float(np.median([p["ours"]["ms_last_quarter"] for p in per_run])),
        "per_run": per_run,
        "segment_ms_per_frame": float(np.mean(seg_ms)),
        "what_each_side_computes": {
            "ours": "the fusion stage from the label image: back-projection of every "
            f"{cfg.fusion.pixel_stride or 'auto'}-th pixel, voxel hashing, DBSCAN split, association, "
            "votes and the merge pass every fusion.merge_interval frames (the TSDF is not included)",
            "open3d": "VoxelBlockGrid.compute_unique_block_coordinates + integrate (TSDF, weight, colour) "
            "of every pixel, from uint16 millimetres",
        },
        "threads": {
            "ours": f"fusion.threads={cfg.fusion.threads} (used: {omap.threads}) for the compiled passes; the rest in one Python thread",
            "open3d": "OpenMP, all cores",
            "cpus": os.cpu_count(),
        },
        "open3d_settings": peer.settings(),
        "node_geometry_settings": {
            "trunc_voxels": cfg.geometry.trunc_voxels,
            "depth_scale": DEPTH_SCALE,
            "depth_max": cfg.depth.max_depth,
            "depth_min": cfg.depth.min_depth,
            "block_count": cfg.geometry.block_count,
            "device": cfg.geometry.device,
        },
        "depth_range_note": f"depth outside [{cfg.depth.min_depth}, {cfg.depth.max_depth}] m is zeroed when frames are decoded, for both sides",
        "fusion_input": "label image, as the perception node sends it",
        # scene content per quarter (last run), to tell map growth from busier views
        "points_first_quarter": float(np.mean(points_n[:quarter])),
        "points_last_quarter": float(np.mean(points_n[-quarter:])),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_note": "whole process: all decoded frames are held in memory",
        "ours_map_mb": omap.memory_bytes() / 2**20,
        "objects": len(snap.objects),
        "map_voxels": omap.num_voxels,
        "open3d_blocks": peer.num_blocks,
        "machine": machine_info(),
    }
