"""CORE-3D progressive multi-granularity merging."""
from __future__ import annotations

import random

import numpy as np
import pytest

from core3d_ros.config import ProgressiveConfig
from core3d_ros.core.segment.base import Mask2D
from core3d_ros.core.segment.progressive import ProgressiveSegmenter, progressive_merge

SHAPE = (100, 120)


def rect(y0, y1, x0, x1, level=0, score=0.9, sid=-1) -> Mask2D:
    m = np.zeros(SHAPE, bool)
    m[y0:y1, x0:x1] = True
    return Mask2D(mask=m, score=score, level=level, source_id=sid)


CFG = ProgressiveConfig(tau_cer=0.5, tau_k=0.3, min_mask_pixels=20)


def ids(masks):
    return [m.source_id for m in masks]


def scene():
    return [
        # level 0 (coarse): a table and a shelf
        rect(50, 100, 0, 60, level=0, sid=1),
        rect(0, 40, 70, 120, level=0, sid=2),
        # level 1: a cup on the table (covered by the table: rejected), a book in free space
        rect(60, 70, 10, 20, level=1, sid=3),
        rect(10, 30, 10, 40, level=1, sid=4),
        # level 1: near duplicate of the shelf (rejected) and a half-overlapping box (rejected: 0.5 > tau_k)
        rect(1, 40, 70, 119, level=1, sid=5),
        rect(30, 50, 70, 100, level=1, sid=6),
        # level 2: a small object in free space
        rect(25, 35, 45, 60, level=2, sid=7),
        # low confidence (dropped before merging) and too small
        rect(75, 95, 70, 110, level=0, score=0.4, sid=8),
        rect(90, 94, 100, 104, level=0, sid=9),
    ]


def test_coarse_kept_fine_added_duplicates_rejected():
    stats: dict = {}
    out = progressive_merge(scene(), CFG, stats)
    assert ids(out) == [1, 2, 4, 7]  # coarse first (larger first), then the fine ones that fit
    assert stats == {"input": 9, "confident": 7, "kept": 4}
    assert all(isinstance(m, Mask2D) for m in out)


def test_overlap_threshold_is_strict_fraction_of_the_new_mask():
    base = rect(0, 50, 0, 100, level=0, sid=1)  # 5000 px
    # overlap fraction of the new mask: 0.1 kept; exactly 0.3 rejected (strict); 29/99 kept
    just_under = rect(49, 59, 71, 81, level=1, sid=2)  # 1 of 10 rows inside base
    assert progressive_merge([base, just_under], CFG)[1].source_id == 2
    m = np.zeros(SHAPE, bool)
    m[47:57, 0:10] = True  # 3 rows inside base -> 30 of 100 px
    at = Mask2D(mask=m, score=0.9, level=1, source_id=3)
    assert ids(progressive_merge([base, at], CFG)) == [1]
    m2 = np.zeros(SHAPE, bool)
    m2[47:57, 0:10] = True
    m2[47, 0] = False  # 29 of 99 px inside
    assert ids(progressive_merge([base, Mask2D(mask=m2, score=0.9, level=1, source_id=4)], CFG)) == [1, 4]


def test_fine_level_cannot_displace_coarse_even_if_larger_elsewhere():
    coarse = rect(0, 20, 0, 20, level=0, sid=1)
    fine_big = rect(0, 100, 0, 120, level=1, sid=2)  # covers everything but is finer
    assert ids(progressive_merge([fine_big, coarse], CFG)) == [1, 2]  # 400/12000 overlap < tau_k
    # with the coarse mask large, the fine one is mostly covered and rejected
    coarse2 = rect(0, 100, 0, 100, level=0, sid=3)
    assert ids(progressive_merge([fine_big, coarse2], CFG)) == [3]


def test_confidence_and_area_filters():
    cfg = ProgressiveConfig(tau_cer=0.8, tau_k=0.3, min_mask_pixels=100)
    masks = [
        rect(0, 10, 0, 10, score=0.95, sid=1),  # 100 px: kept (>= min)
        rect(20, 29, 0, 11, score=0.95, sid=2),  # 99 px: too small
        rect(40, 60, 0, 20, score=0.8, sid=3),  # score not > tau_cer
        rect(40, 60, 40, 60, score=0.81, sid=4),
    ]
    assert sorted(ids(progressive_merge(masks, cfg))) == [1, 4]
    assert progressive_merge([], cfg) == []
    empty = Mask2D(mask=np.zeros(SHAPE, bool), score=1.0)
    assert progressive_merge([empty], ProgressiveConfig(min_mask_pixels=0)) == []


def test_input_order_does_not_matter():
    masks = scene()
    # add exact ties in (level, area, score) with different content
    masks += [rect(80, 90, 70, 80, level=1, sid=10), rect(82, 92, 72, 82, level=1, sid=11)]
    reference = ids(progressive_merge(masks, CFG))
    rng = random.Random(0)
    for _ in range(20):
        shuffled = masks[:]
        rng.shuffle(shuffled)
        assert ids(progressive_merge(shuffled, CFG)) == reference
    assert (10 in reference) != (11 in reference)  # the tied pair overlaps by 64 %: one is kept


def test_non_bool_masks_and_shape_mismatch():
    m = rect(0, 30, 0, 30, sid=1)
    m_u8 = Mask2D(mask=m.mask.astype(np.uint8), score=0.9, source_id=2)
    assert ids(progressive_merge([m_u8], CFG)) == [2]
    other = Mask2D(mask=np.ones((10, 10), bool), score=0.9)
    with pytest.raises(ValueError, match="shapes"):
        progressive_merge([m, other], CFG)


def test_progressive_segmenter_wraps_any_segmenter():
    class Base:
        name = "fake"

        def segment(self, frame):
            return scene()

    seg = ProgressiveSegmenter(Base(), CFG)
    assert seg.name == "fake"
    assert ids(seg.segment(None)) == [1, 2, 4, 7]
    assert seg.last_stats["kept"] == 4


def test_many_masks_vga_is_fast():
    import time

    rng = np.random.default_rng(0)
    h, w = 480, 640
    masks = []
    for _ in range(100):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        m[y : y + rng.integers(20, 200), x : x + rng.integers(20, 200)] = True
        masks.append(Mask2D(mask=m, score=float(rng.uniform(0.3, 1.0)), level=int(rng.integers(0, 3))))
    t = time.perf_counter()
    out = progressive_merge(masks, ProgressiveConfig())
    dt = time.perf_counter() - t
    assert 0 < len(out) < 100
    assert dt < 1.0  # typically ~20 ms
