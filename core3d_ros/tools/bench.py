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
from ..core.datasets import iter_frames, open_dataset
from ..core.frame import Frame
from ..core.pipeline import fuse_frame, label_image
from ..core.fusion.object_map import ObjectMap, warm_up
from ..core.segment.base import make_segmenter
from ..core.segment.progressive import progressive_merge


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

        from ..core.geometry import DEPTH_SCALE, _device

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
    from ..core.geometry import DEPTH_SCALE

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
        ours_ms, peer_ms, ours_cpu, peer_cpu, strides, points_n = [], [], [], [], [], []

        def ours(frame, masks, labels):
            t, c = time.perf_counter(), time.process_time()
            fused = fuse_frame(omap, frame, masks, labels=labels)
            ours_ms.append((time.perf_counter() - t) * 1e3)
            ours_cpu.append((time.process_time() - c) * 1e3)
            strides.append(fused.stride)
            points_n.append(fused.points)

        def theirs(frame, masks, labels):
            prepared = peer.prepare(frame)  # Open3D's input format, built outside its timing
            t, c = time.perf_counter(), time.process_time()
            peer.integrate(prepared)
            peer_ms.append((time.perf_counter() - t) * 1e3)
            peer_cpu.append((time.process_time() - c) * 1e3)

        order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
        for item in inputs:
            for side in order:
                side(*item)
        per_run.append({
            "first": "ours" if r % 2 == 0 else "open3d",
            "ours": _stats(ours_ms),
            "open3d": _stats(peer_ms),
            "ratio": float(np.mean(ours_ms) / np.mean(peer_ms)),
            "ratio_of_frame_medians": float(np.median(ours_ms) / np.median(peer_ms)),
            "cpu_ratio": float(np.mean(ours_cpu) / max(np.mean(peer_cpu), 1e-9)),
            "ours_cpu_ms_per_frame": float(np.mean(ours_cpu)),
            "open3d_cpu_ms_per_frame": float(np.mean(peer_cpu)),
        })
    ratios = [p["ratio"] for p in per_run]
    ours_mean = float(np.median([p["ours"]["ms_per_frame"] for p in per_run]))
    peer_mean = float(np.median([p["open3d"]["ms_per_frame"] for p in per_run]))
    quarter = max(1, len(points_n) // 4)
    snap = omap.snapshot(up=cfg.retrieval.up_axis)
    import os

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


def _time_ms(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), result


def _random_checkpoint(build, folder: str, name: str) -> str:
    """Save a freshly built (random-weight) model's state dict, for the real loading path."""
    import os

    import torch

    path = os.path.join(folder, name)
    torch.save(build().state_dict(), path)
    return path


def bench_semantics(cfg: MapperConfig | None = None, data: str | None = None, repeats: int = 3, sam_points: int = 8) -> dict:
    """Per-stage latency of one keyframe on this machine.

    Model weights cannot be downloaded here, so model stages build the real architectures with
    random weights, save them to a temporary checkpoint and load that through the normal
    loading code: the timings are true, the outputs are not semantic.
    """
    import tempfile

    import torch

    from ..core.datasets import make_scene
    from ..core.embed.base import make_encoder
    from ..core.embed.crops import embed_masks, extract_crops

    cfg = cfg or MapperConfig()
    repeats = max(1, min(repeats, 20))
    if data:
        dataset = open_dataset(data, depth=cfg.depth, max_frames=1)
        frame = dataset[0]
    else:
        frame = make_scene(seed=0, num_frames=4, width=640, height=480)[1]
    out: dict = {
        "benchmark": "semantics",
        "frame": {"source": data or "synthetic", "size": [frame.intrinsics.width, frame.intrinsics.height]},
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "mask_generation_ms": {},
        "machine": machine_info(),
    }
    masks_by_backend = {}
    for name in ("geometric", "oracle"):
        if name == "oracle" and frame.instance_ids is None:
            continue
        seg = make_segmenter(replace(cfg.segmenter, name=name))
        ms, masks = _time_ms(lambda: seg.segment(frame), repeats)
        out["mask_generation_ms"][name] = {"ms": ms, "masks": len(masks)}
        masks_by_backend[name] = masks

    with tempfile.TemporaryDirectory() as tmp:
        try:
            from segment_anything import sam_model_registry

            ckpt = _random_checkpoint(lambda: sam_model_registry["vit_b"](checkpoint=None), tmp, "sam_vit_b_random.pth")
            sam_cfg = replace(cfg.segmenter, name="sam", model_type="vit_b", checkpoint=ckpt, points_per_side=sam_points)
            seg = make_segmenter(sam_cfg)
            ms, masks = _time_ms(lambda: seg.segment(frame), 1)
            out["mask_generation_ms"]["sam"] = {"ms": ms, "masks": len(masks), "model": "vit_b (random weights)", "points_per_side": sam_points}
        except ImportError:
            out["mask_generation_ms"]["sam"] = {"unavailable": "segment_anything is not installed"}
        try:
            import semantic_sam  # noqa: F401

            out["mask_generation_ms"]["semantic_sam"] = {"unavailable": "needs a Semantic-SAM checkpoint (none here)"}
        except ImportError:
            out["mask_generation_ms"]["semantic_sam"] = {"unavailable": "Semantic-SAM is not installed (not on PyPI)"}

        masks = progressive_merge(masks_by_backend["geometric"], cfg.segmenter.progressive)
        ms, _ = _time_ms(lambda: progressive_merge(masks_by_backend["geometric"], cfg.segmenter.progressive), repeats)
        out["progressive_merge_ms"] = {"ms": ms, "masks_in": len(masks_by_backend["geometric"]), "masks_kept": len(masks)}
        ms, (crops, _) = _time_ms(lambda: extract_crops(frame.rgb, masks, cfg.embed), repeats)
        out["crop_extraction_ms"] = {"ms": ms, "masks": len(masks), "crops": len(crops)}

        import open_clip

        model_name = cfg.embed.model
        ckpt = _random_checkpoint(lambda: open_clip.create_model(model_name, pretrained=None), tmp, "clip_random.pt")
        encoder = make_encoder(replace(cfg.embed, name="open_clip", checkpoint=ckpt, pretrained=""))
        ms, _ = _time_ms(lambda: encoder.encode_images(crops), repeats)
        out["encoder"] = {
            "model": f"{model_name} (random weights loaded from a checkpoint)",
            "semantic": bool(encoder.semantic),
            "batch": len(crops),
            "ms_per_batch": ms,
            "ms_per_crop": ms / max(len(crops), 1),
        }
        ms, _ = _time_ms(lambda: embed_masks(encoder, frame.rgb, masks, cfg.embed), repeats)
        out["embed_masks_ms"] = {"ms": ms, "masks": len(masks), "note": "crops + one batched encoder call + fusion"}
        fresh = iter(range(1_000_000))  # a new text each call: never a cache hit
        ms_text, _ = _time_ms(lambda: encoder.encode_text([f"a photo of a chair {next(fresh)}"]), repeats)
        ms_cached, _ = _time_ms(lambda: encoder.encode_text(["a photo of a chair"]), repeats)
        out["text_encoding_ms"] = {"uncached": ms_text, "cached": ms_cached}

    ms, _ = _time_ms(lambda: fuse_frame(ObjectMap(cfg.fusion), frame, masks), repeats)
    out["fusion_ms"] = {"ms": ms, "masks": len(masks)}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def bench_scale(
    voxels: int = 2_000_000,
    voxel_size: float = 0.01,
    frames_per_room: int = 6,
    width: int = 640,
    height: int = 480,
    cfg: MapperConfig | None = None,
    progress: Callable | None = None,
) -> dict:
    """Grow one map to at least ``voxels`` voxels and report how per-frame fusion, snapshot and
    merge costs move as it grows (mean per tenth of the run).

    The trajectory visits a row of identical synthetic rooms (one rendered room, its frames
    replayed with each room's offset, 15 m apart), so every tenth of the run sees the same
    content and only the map's size differs. Masks are the frames' instance ids (the oracle),
    fused as label images. After every frame the snapshot is taken (objects changed since the
    previous one are rebuilt); after each room's frames the merge pass runs, timed on its own.
    """
    from ..core.datasets import make_scene

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
    cpu: dict[str, list[float]] = {"fusion_ms": [], "snapshot_ms": [], "merge_ms": []}
    frame_no = 0

    def run_room(k: int) -> None:
        nonlocal frame_no
        for f, pose in room_frames(k):
            labels = f.instance_ids.astype(np.uint16)
            t0, c0 = time.perf_counter(), time.process_time()
            omap.integrate_frame(f.depth, f.intrinsics, pose, f.rgb, labels, float(frame_no))
            t1, c1 = time.perf_counter(), time.process_time()
            omap.snapshot(up=cfg.retrieval.up_axis)
            t2, c2 = time.perf_counter(), time.process_time()
            fusion_ms.append((t1 - t0) * 1e3)
            snapshot_ms.append((t2 - t1) * 1e3)
            cpu["fusion_ms"].append((c1 - c0) * 1e3)
            cpu["snapshot_ms"].append((c2 - c1) * 1e3)
            frame_no += 1
            if frame_no % merge_every == 0:
                t3, c3 = time.perf_counter(), time.process_time()
                omap.merge_objects()
                merge_ms.append((time.perf_counter() - t3) * 1e3)
                cpu["merge_ms"].append((time.process_time() - c3) * 1e3)
                merge_frame.append(frame_no - 1)

    run_room(0)
    per_room = max(omap.num_voxels, 1)
    rooms = 10 * int(np.ceil(voxels / (10 * per_room)))  # a whole number of rooms per tenth
    # No reserve(): the map grows as the node grows it, so its doubling copies are in the figures.
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
        "merge_every_frames": merge_every,
        "peak_rss_mb": peak_rss_mb(),
        "note": "identical rooms 15 m apart, oracle masks as label images, stride 1; snapshot after every frame; "
        "the map grows from empty as in the node (no reserve)",
        "machine": machine_info(),
    }
    t = result["tenths"]
    result["last_over_first"] = {k: (v[-1] / v[0] if v[0] > 0 else None) for k, v in t.items()}
    result["last_over_first_cpu"] = {k: (v[-1] / v[0] if v[0] > 0 else None) for k, v in result["tenths_cpu"].items()}
    return result
