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
    association, voting, merging) from the label image, which the perception node sends (the
    masks are painted into it in the segmenter's time, as that node does); the segmenter's time
    is reported separately.
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
    seg_ms, ours_ms, peer_ms, strides, points_n, masks_n = [], [], [], [], [], []
    ours_cpu, peer_cpu = [], []  # process CPU time (all threads): the work done, whatever the cores used
    # Warm-up outside the timing, for both: loads our compiled kernels (numba cache) and
    # Open3D's first allocations; neither map keeps anything from it.
    # warm_up also compiles the merge pass's kernels, which a single frame does not reach (the
    # first run after a change would otherwise compile them inside the timing, at frame 10).
    warm_up(cfg.fusion)
    warm = loaded[0]
    fuse_frame(ObjectMap(cfg.fusion), warm, progressive_merge(segmenter.segment(warm), cfg.segmenter.progressive))
    Open3DTSDF(cfg.fusion.voxel_size, cfg.depth.max_depth, block_count=1000).integrate(peer.prepare(warm))
    it = progress(loaded) if progress else loaded
    for frame in it:
        t0 = time.perf_counter()
        masks = progressive_merge(segmenter.segment(frame), cfg.segmenter.progressive)
        # The fusion stage's input is the label image, as the perception node sends it (its
        # Observation.from_masks paints it, in its own process): painted here, outside our timing.
        labels = label_image(masks, frame.depth.shape)
        t1, c1 = time.perf_counter(), time.process_time()
        fused = fuse_frame(omap, frame, masks, labels=labels)
        t2, c2 = time.perf_counter(), time.process_time()
        strides.append(fused.stride)
        points_n.append(fused.points)
        masks_n.append(len(masks))
        prepared = peer.prepare(frame)  # Open3D's input format, built outside its timing
        t2b, c2b = time.perf_counter(), time.process_time()
        peer.integrate(prepared)
        t3, c3 = time.perf_counter(), time.process_time()
        seg_ms.append((t1 - t0) * 1e3)
        ours_ms.append((t2 - t1) * 1e3)
        peer_ms.append((t3 - t2b) * 1e3)
        ours_cpu.append((c2 - c1) * 1e3)
        peer_cpu.append((c3 - c2b) * 1e3)
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
        "compiled_kernels": _have_numba(),
        "fusion_threads": omap.threads,
        "open3d_threads": "all cores (OpenMP)",
        "pixel_stride_mean": float(np.mean(strides)),
        "segmenter": cfg.segmenter.name,
        "ours_ms_per_frame": ours["ms_per_frame"],
        "open3d_ms_per_frame": theirs["ms_per_frame"],
        "ratio": ours["ms_per_frame"] / theirs["ms_per_frame"],
        # the same in CPU time (all threads of the process): work done, not the cores used
        "ours_cpu_ms_per_frame": float(np.mean(ours_cpu)),
        "open3d_cpu_ms_per_frame": float(np.mean(peer_cpu)),
        "cpu_ratio": float(np.mean(ours_cpu) / max(np.mean(peer_cpu), 1e-9)),
        "ms_first_quarter": ours["ms_first_quarter"],
        "ms_last_quarter": ours["ms_last_quarter"],
        "ours": ours,
        "open3d": theirs,
        "segment_ms_per_frame": float(np.mean(seg_ms)),
        "fusion_input": "label image, as the perception node sends it (painted from the masks in the segment stage's time, as the perception process does)",
        # Scene content per quarter, to tell map growth from busier views.
        "points_first_quarter": float(np.mean(points_n[: max(1, len(points_n) // 4)])),
        "points_last_quarter": float(np.mean(points_n[-max(1, len(points_n) // 4) :])),
        "masks_first_quarter": float(np.mean(masks_n[: max(1, len(masks_n) // 4)])),
        "masks_last_quarter": float(np.mean(masks_n[-max(1, len(masks_n) // 4) :])),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_note": "whole process: all decoded frames are held in memory, and Open3D's block pool is preallocated",
        "ours_map_mb": omap.memory_bytes() / 2**20,
        "objects": len(snap.objects),
        "map_voxels": omap.num_voxels,
        "open3d_blocks": peer.num_blocks,
        "open3d_config": "VoxelBlockGrid tsdf/weight/color float32, block_resolution 8, CPU:0, full-resolution uint16 depth",
        "machine": machine_info(),
    }


def _have_numba() -> bool:
    from ..core.fusion.kernels import HAVE_NUMBA

    return bool(HAVE_NUMBA)


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
    omap.reserve(int(per_room * rooms * 1.05))
    it = range(1, rooms)
    for k in progress(it) if progress else it:
        run_room(k)
    n = len(fusion_ms)
    bounds = np.linspace(0, n, 11).astype(int)

    def tenths(values: list[float], at: list[int] | None = None) -> list[float]:
        v = np.asarray(values, np.float64)
        pos = np.arange(len(v)) if at is None else np.asarray(at)
        return [float(v[(pos >= a) & (pos < b)].mean()) if np.any((pos >= a) & (pos < b)) else 0.0 for a, b in zip(bounds[:-1], bounds[1:])]

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
        # The same, in this process's CPU time: on a machine shared with other work, wall-clock
        # means move with the neighbours' load; CPU time shows what the map's size costs.
        "tenths_cpu": {
            "fusion_ms": tenths(cpu["fusion_ms"]),
            "snapshot_ms": tenths(cpu["snapshot_ms"]),
            "merge_ms": tenths(cpu["merge_ms"], merge_frame),
        },
        "merge_every_frames": merge_every,
        "peak_rss_mb": peak_rss_mb(),
        "note": "identical rooms 15 m apart, oracle masks as label images, stride 1; snapshot after every frame",
        "machine": machine_info(),
    }
    t = result["tenths"]
    result["last_over_first"] = {k: (v[-1] / v[0] if v[0] > 0 else None) for k, v in t.items()}
    result["last_over_first_cpu"] = {k: (v[-1] / v[0] if v[0] > 0 else None) for k, v in result["tenths_cpu"].items()}
    return result
