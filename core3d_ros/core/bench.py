"""Benchmarks behind ``core3d bench``. Each returns a JSON-able dict of measured figures.

Timings are wall-clock per call (``time.perf_counter``) and, where a peer exists, taken side by
side in one run on the same inputs, alternating frame by frame so that machine noise hits both.
"""
from __future__ import annotations

import platform
import resource
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from ..config import MapperConfig
from .camera import backproject, sampling_stride
from .datasets import iter_frames, open_dataset
from .frame import Frame
from .fusion.object_map import ObjectMap
from .segment.base import make_segmenter
from .segment.progressive import progressive_merge


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict:
    import os

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    q = max(1, len(a) // 4)
    return {
        "ms_per_frame": float(a.mean()),
        "ms_median": float(np.median(a)),
        "ms_p90": float(np.percentile(a, 90)),
        "ms_first_quarter": float(a[:q].mean()),
        "ms_last_quarter": float(a[-q:].mean()),
    }


class Open3DTSDF:
    """Open3D's VoxelBlockGrid TSDF integration on the CPU (the peer we compare with)."""

    def __init__(self, voxel_size: float, depth_max: float, block_resolution: int = 8, block_count: int = 100_000):
        import open3d as o3d
        import open3d.core as o3c

        self.o3d, self.o3c = o3d, o3c
        self.device = o3c.Device("CPU:0")
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=voxel_size,
            block_resolution=block_resolution,
            block_count=block_count,
            device=self.device,
        )
        self.depth_max = depth_max
        self.depth_scale = 1000.0

    def prepare(self, frame: Frame):
        """Open3D's native input (uint16 millimetres, uint8 colour), built outside the timing."""
        o3c, o3d = self.o3c, self.o3d
        depth_mm = np.round(frame.depth * self.depth_scale).astype(np.uint16)
        return (
            o3d.t.geometry.Image(o3c.Tensor(depth_mm)),
            o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(frame.rgb))),
            o3c.Tensor(frame.intrinsics.matrix, o3c.float64),
            o3c.Tensor(np.linalg.inv(frame.pose), o3c.float64),
        )

    def integrate(self, prepared) -> None:
        depth, color, K, extrinsic = prepared
        blocks = self.vbg.compute_unique_block_coordinates(depth, K, extrinsic, self.depth_scale, self.depth_max)
        self.vbg.integrate(blocks, depth, color, K, extrinsic, self.depth_scale, self.depth_max)

    @property
    def num_blocks(self) -> int:
        return int(self.vbg.hashmap().size())


def bench_fusion(
    data: str,
    frames: int | None = None,
    voxel: float | None = None,
    cfg: MapperConfig | None = None,
    progress: Callable | None = None,
) -> dict:
    """Our fusion (geometric segmenter) vs Open3D TSDF integration, same frames and voxel size.

    ``ours_ms_per_frame`` is the fusion stage alone (back-projection, voxel hashing, DBSCAN split,
    association, voting, merging); the segmenter's time is reported separately.
    """
    cfg = cfg or MapperConfig()
    if voxel is not None:
        cfg = replace(cfg, fusion=replace(cfg.fusion, voxel_size=voxel))
    dataset = open_dataset(data, depth=cfg.depth, max_frames=frames)
    errors: list = []
    loaded = list(iter_frames(dataset, errors))  # decode outside the timed region
    if not loaded:
        raise ValueError(f"no readable frames in {data}")
    segmenter = make_segmenter(cfg.segmenter)
    omap = ObjectMap(cfg.fusion)
    peer = Open3DTSDF(cfg.fusion.voxel_size, cfg.depth.max_depth)
    seg_ms, ours_ms, peer_ms, strides = [], [], [], []
    it = progress(loaded) if progress else loaded
    for frame in it:
        t0 = time.perf_counter()
        masks = progressive_merge(segmenter.segment(frame), cfg.segmenter.progressive)
        t1 = time.perf_counter()
        stride = cfg.fusion.pixel_stride or sampling_stride(frame.depth, frame.intrinsics, cfg.fusion.voxel_size)
        strides.append(stride)
        points, pix = backproject(frame.depth, frame.intrinsics, frame.pose, stride=stride)
        colors = frame.rgb.reshape(-1, 3)[pix]
        omap.integrate(points, colors, [m.mask.reshape(-1)[pix] for m in masks], frame.stamp)
        prepared = peer.prepare(frame)
        t2 = time.perf_counter()
        peer.integrate(prepared)
        t3 = time.perf_counter()
        seg_ms.append((t1 - t0) * 1e3)
        ours_ms.append((t2 - t1) * 1e3)
        peer_ms.append((t3 - t2) * 1e3)
    ours, theirs = _stats(ours_ms), _stats(peer_ms)
    snap = omap.snapshot(up=cfg.retrieval.up_axis)
    return {
        "benchmark": "fusion",
        "data": str(data),
        "frames": len(loaded),
        "frames_unreadable": len(errors),
        "image_size": [loaded[0].intrinsics.width, loaded[0].intrinsics.height],
        "voxel_size": cfg.fusion.voxel_size,
        "pixel_stride": cfg.fusion.pixel_stride,
        "pixel_stride_mean": float(np.mean(strides)),
        "segmenter": cfg.segmenter.name,
        "ours_ms_per_frame": ours["ms_per_frame"],
        "open3d_ms_per_frame": theirs["ms_per_frame"],
        "ratio": ours["ms_per_frame"] / theirs["ms_per_frame"],
        "ms_first_quarter": ours["ms_first_quarter"],
        "ms_last_quarter": ours["ms_last_quarter"],
        "ours": ours,
        "open3d": theirs,
        "segment_ms_per_frame": float(np.mean(seg_ms)),
        "peak_rss_mb": peak_rss_mb(),
        "objects": len(snap.objects),
        "map_voxels": omap.num_voxels,
        "open3d_blocks": peer.num_blocks,
        "open3d_config": "VoxelBlockGrid tsdf/weight/color float32, block_resolution 8, CPU:0, full-resolution uint16 depth",
        "machine": machine_info(),
    }
