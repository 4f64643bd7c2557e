"""``core3d bench semantics``: per-stage latency of one keyframe (mask generation, progressive
merge, crops, image and text encoding, fusion) on this machine."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ...config import MapperConfig
from ...core.datasets import open_dataset
from ...core.fusion.object_map import ObjectMap
from ...core.mapper import fuse_frame
from ...core.segment.base import make_segmenter
from ...core.segment.progressive import progressive_merge
from .common import machine_info, peak_rss_mb


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

    from ...core.datasets import make_scene
    from ...core.embed.base import make_encoder
    from ...core.embed.crops import embed_masks, extract_crops

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
        ms, masks = _time_ms(lambda seg=seg: seg.segment(frame), repeats)
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
