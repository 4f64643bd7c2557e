"""Segment Anything (``segmenter.name: sam``): automatic masks with granularity levels.

Needs the ``segment_anything`` package (``pip install segment-anything``) and a checkpoint file
(``segmenter.checkpoint``; ``segmenter.model_type`` vit_b | vit_l | vit_h must match it). The
package is imported when the segmenter is built, so this module imports without it.

Loading: the architecture comes from ``sam_model_registry[model_type]`` and the state dict is
read with ``torch.load(map_location="cpu", weights_only=True)`` (no pickled code runs), then
moved to ``segmenter.device`` (``auto``: CUDA when available).

Granularity levels: SAM answers every point prompt of its grid with three masks (its multimask
output: whole, part, sub-part). ``SamAutomaticMaskGenerator`` drops which of the three a mask
was, so this module runs a subclass whose batch step records it: the three masks of a prompt
are ranked by area, largest first, and the rank is the mask's level (0 = coarsest, 2 = finest).
Ranking by area rather than by output slot keeps "coarse first" true whatever order a
checkpoint's output tokens settled into. Everything else (grid, quality filters, NMS, RLE) is
the package's own generator, with ``points_per_side``, ``points_per_batch``,
``pred_iou_thresh``, ``stability_score_thresh`` and ``min_mask_region_area`` from the config.

Each mask's score is its predicted IoU, clipped to [0, 1]. The progressive merge then keeps
``score > progressive.tau_cer`` and resolves overlaps between levels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

from ...config import SegmenterConfig
from ..device import resolve_device as _resolve_device
from ..frame import Frame
from ..registry import BackendError
from .base import Mask2D, register_segmenter

SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
SAM_CHECKPOINTS = {  # the official file names, for messages
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}


class SegmenterError(BackendError):
    """A model-based segmenter cannot be built (missing package, checkpoint, device)."""


def resolve_device(device: str, param: str = "segmenter.device"):
    return _resolve_device(device, param, SegmenterError)


def check_checkpoint(path: str, what: str) -> Path:
    if not path or not path.strip():
        raise SegmenterError(f"segmenter.checkpoint is not set: give the path of {what}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise SegmenterError(f"segmenter.checkpoint: no such file {str(p)!r} (expected {what})")
    return p


# ------------------------------------------------------------------ record conversion


def decode_uncompressed_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """SAM's ``uncompressed_rle`` ({'size': [h, w], 'counts': [...]}, column-major) -> HxW bool."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h * w}")
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T.copy()


def record_mask(record: Mapping[str, Any]) -> np.ndarray:
    seg = record["segmentation"]
    if isinstance(seg, Mapping):
        if isinstance(seg.get("counts"), (str, bytes)):
            raise ValueError("compressed COCO RLE is not supported; use output_mode='binary_mask'")
        return decode_uncompressed_rle(seg)
    mask = np.asarray(seg)
    if hasattr(seg, "detach"):  # a torch tensor
        mask = seg.detach().cpu().numpy()
    if mask.ndim != 2:
        raise ValueError(f"segmentation must be HxW, got {mask.shape}")
    return mask.astype(bool, copy=False)


def records_to_masks(
    records: Iterable[Mapping[str, Any]],
    shape: tuple[int, int] | None = None,
    level: int | None = None,
) -> list[Mask2D]:
    """Automatic-generator records -> Mask2D.

    A record is the dict that SAM-family generators return (``segmentation`` as an HxW bool
    array or an uncompressed RLE, ``area``, ``bbox``, ``predicted_iou``, ``point_coords``,
    ``stability_score``, ``crop_box``). Score: ``predicted_iou`` clipped to [0, 1] (falls back to
    ``stability_score``, then 1). Level: the ``level`` argument, else the record's ``level``
    key, else 0. Masks are resized (nearest) to ``shape`` (H, W) when given and different.
    Empty masks are dropped.
    """
    out = []
    for rec in records:
        mask = record_mask(rec)
        if shape is not None and mask.shape != tuple(shape):
            mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        if not mask.any():
            continue
        score = rec.get("predicted_iou", rec.get("stability_score", 1.0))
        score = float(np.clip(float(score), 0.0, 1.0))
        lv = int(level if level is not None else rec.get("level", 0))
        out.append(Mask2D(mask=mask, score=score, level=lv))
    return out


# ------------------------------------------------------------------ the level-tagging generator


def _level_generator_class():
    """SamAutomaticMaskGenerator whose records carry ``level`` (see module doc)."""
    import torch
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import (
        MaskData,
        batched_mask_to_box,
        calculate_stability_score,
        is_box_near_crop_edge,
        mask_to_rle_pytorch,
        uncrop_masks,
    )

    class LevelSamAutomaticMaskGenerator(SamAutomaticMaskGenerator):
        def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
            records = super().generate(image)
            levels = self._last_data["levels"]
            for rec, lv in zip(records, levels):
                rec["level"] = int(lv)
            return records

        def _generate_masks(self, image: np.ndarray):
            data = super()._generate_masks(image)
            self._last_data = data  # filtered in place by the post-processing that follows
            return data

        def _process_batch(self, points, im_size, crop_box, orig_size):
            # segment_anything 1.0's batch step, plus the per-prompt area rank as "levels".
            orig_h, orig_w = orig_size
            transformed_points = self.predictor.transform.apply_coords(points, im_size)
            in_points = torch.as_tensor(transformed_points, device=self.predictor.device)
            in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            masks, iou_preds, _ = self.predictor.predict_torch(
                in_points[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True
            )
            areas = (masks > self.predictor.model.mask_threshold).flatten(2).sum(-1)  # (B, 3)
            order = torch.argsort(-areas, dim=1, stable=True)
            levels = torch.argsort(order, dim=1)  # rank of each output by area, largest = 0
            data = MaskData(
                masks=masks.flatten(0, 1),
                iou_preds=iou_preds.flatten(0, 1),
                points=torch.as_tensor(points.repeat(masks.shape[1], axis=0)),
                levels=levels.flatten(0, 1),
            )
            del masks
            if self.pred_iou_thresh > 0.0:
                data.filter(data["iou_preds"] > self.pred_iou_thresh)
            data["stability_score"] = calculate_stability_score(
                data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset
            )
            if self.stability_score_thresh > 0.0:
                data.filter(data["stability_score"] >= self.stability_score_thresh)
            data["masks"] = data["masks"] > self.predictor.model.mask_threshold
            data["boxes"] = batched_mask_to_box(data["masks"])
            keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
            if not torch.all(keep):
                data.filter(keep)
            data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
            data["rles"] = mask_to_rle_pytorch(data["masks"])
            del data["masks"]
            return data

    return LevelSamAutomaticMaskGenerator


def load_sam_model(cfg: SegmenterConfig):
    """Build ``sam_model_registry[cfg.model_type]`` and load ``cfg.checkpoint`` into it."""
    try:
        import torch
        from segment_anything import sam_model_registry
    except ImportError as e:
        raise SegmenterError(
            f"segmenter.name=sam needs the segment_anything package ({e}); install it with "
            "`pip install segment-anything` (https://github.com/facebookresearch/segment-anything)"
        ) from e
    model_type = cfg.model_type.strip().lower()
    if model_type not in SAM_MODEL_TYPES:
        raise SegmenterError(f"segmenter.model_type={cfg.model_type!r} is not a SAM model; use one of {SAM_MODEL_TYPES}")
    path = check_checkpoint(cfg.checkpoint, f"a SAM {model_type} checkpoint such as {SAM_CHECKPOINTS[model_type]}")
    device = resolve_device(cfg.device)
    sam = sam_model_registry[model_type](checkpoint=None)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise SegmenterError(f"cannot read SAM checkpoint {str(path)!r}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SegmenterError(
            f"checkpoint {str(path)!r} does not fit segmenter.model_type={model_type!r}: "
            f"{str(e).splitlines()[0]}"
        ) from e
    return sam.to(device).eval()


def build_sam_generator(cfg: SegmenterConfig, model=None):
    """The level-tagging automatic generator over a loaded SAM model."""
    model = model if model is not None else load_sam_model(cfg)
    generator_cls = _level_generator_class()
    return generator_cls(model, **generator_options(cfg))


def generator_options(cfg: SegmenterConfig) -> dict:
    """Automatic-generator options shared by SAM and Semantic-SAM, from the config."""
    return {
        "points_per_side": cfg.points_per_side,
        "points_per_batch": cfg.points_per_batch,
        "pred_iou_thresh": cfg.pred_iou_thresh,
        "stability_score_thresh": cfg.stability_score_thresh,
        "min_mask_region_area": cfg.min_mask_region_area,
        "output_mode": "binary_mask",
    }


class SamSegmenter:
    """``segment(frame)`` -> SAM masks, ``Mask2D.level`` 0 (coarsest) to 2 (finest).

    ``segmenter.granularity_levels`` counts from 1 as for Semantic-SAM: level g keeps the masks
    with ``Mask2D.level == g - 1``; values above 3 do not apply to SAM (the default 1-6 keeps
    all three). ``generator`` replaces the model-backed generator (tests, custom set-ups): any
    object with ``generate(rgb) -> list[record]``.
    """

    name = "sam"

    def __init__(self, cfg: SegmenterConfig, generator=None):
        self.cfg = cfg
        self.levels = sorted({int(g) - 1 for g in cfg.granularity_levels if 1 <= int(g) <= 3})
        if not self.levels:
            raise SegmenterError(
                f"segmenter.granularity_levels={list(cfg.granularity_levels)} selects none of SAM's levels 1-3"
            )
        self.generator = generator if generator is not None else build_sam_generator(cfg)

    def segment(self, frame: Frame) -> list[Mask2D]:
        records = self.generator.generate(np.ascontiguousarray(frame.rgb))
        masks = records_to_masks(records, shape=frame.rgb.shape[:2])
        if len(self.levels) < 3:
            masks = [m for m in masks if m.level in self.levels]
        return masks


@register_segmenter("sam")
def _make_sam(cfg: SegmenterConfig) -> SamSegmenter:
    return SamSegmenter(cfg)
