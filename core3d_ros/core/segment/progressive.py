"""CORE-3D progressive multi-granularity merging of class-agnostic masks.

Masks from all granularity levels are pooled and filtered, then added greedily:

1. keep only confident, large enough masks: ``score > tau_cer`` and ``area >= min_mask_pixels``;
2. visit levels in increasing order (level 0 = coarsest first), within a level larger masks
   first (then higher score; remaining ties by mask content, so the result does not depend on
   the order of the input list);
3. add a mask only if ``|m ∩ union(kept)| / |m| < tau_k``; the union is one bitmap, updated
   inside the mask's bounding box.

Coarse levels thus contribute whole objects, finer levels add the small objects in areas the
coarse masks left uncovered, and duplicates or near-duplicates (mostly covered) are dropped.
Kept masks are returned unchanged (they may overlap each other by less than ``tau_k``), in the
order they were accepted. ``tau_k`` must be > 0 (with 0 nothing passes the strict test).
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from ...config import ProgressiveConfig
from ..frame import Frame
from .base import Mask2D, Segmenter


def progressive_merge(
    masks: Sequence[Mask2D], cfg: ProgressiveConfig, stats: dict | None = None
) -> list[Mask2D]:
    """Progressive merge (see module doc). ``stats``, when given, receives the counts
    ``input``, ``confident`` (passed score/area filters) and ``kept``."""
    candidates = []
    shape = None
    for m in masks:
        if not m.score > cfg.tau_cer:
            continue
        mask = np.asarray(m.mask)
        if mask.dtype != np.bool_:
            mask = mask.astype(bool)
        if shape is None:
            shape = mask.shape
        elif mask.shape != shape:
            raise ValueError(f"masks of different shapes: {shape} and {mask.shape}")
        area = m.area
        if area == 0 or area < cfg.min_mask_pixels:
            continue
        candidates.append((m, mask, area))
    if stats is not None:
        stats.update(input=len(masks), confident=len(candidates), kept=0)
    if not candidates:
        return []

    boxes = [m.box for m, _, _ in candidates]  # computed once; crops and perception reuse them

    def order_key(i: int):
        m, mask, area = candidates[i]
        x0, y0, x1, y1 = boxes[i]
        content = zlib.crc32(np.packbits(mask[y0:y1, x0:x1]).tobytes())
        return (m.level, -area, -float(m.score), boxes[i], content, m.source_id)

    order = sorted(range(len(candidates)), key=order_key)
    union = np.zeros(shape, dtype=bool)
    kept: list[Mask2D] = []
    for i in order:
        m, mask, area = candidates[i]
        x0, y0, x1, y1 = boxes[i]
        sub = mask[y0:y1, x0:x1]
        covered = union[y0:y1, x0:x1]
        overlap = int(np.count_nonzero(sub & covered))
        if overlap / area < cfg.tau_k:
            kept.append(m)
            covered |= sub  # a view: updates the union in place
    if stats is not None:
        stats["kept"] = len(kept)
    return kept


class ProgressiveSegmenter:
    """Wraps any Segmenter and applies ``progressive_merge`` to its masks.

    ``last_stats`` holds the counts of the latest frame (input / confident / kept).
    """

    def __init__(self, base: Segmenter, cfg: ProgressiveConfig | None = None):
        self.base = base
        self.cfg = cfg or ProgressiveConfig()
        self.name = getattr(base, "name", "segmenter")
        self.last_stats: dict = {}

    def segment(self, frame: Frame) -> list[Mask2D]:
        stats: dict = {}
        out = progressive_merge(self.base.segment(frame), self.cfg, stats)
        self.last_stats = stats
        return out
