"""One label image from the masks of a frame (core3d_ros/core/masks.py) and the area and box a
Mask2D computes once."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.core.masks import label_boxes, paint_largest_first
from core3d_ros.core.segment.base import Mask2D, mask_bbox


def _random_masks(rng, shape, n):
    out = []
    for _ in range(n):
        m = np.zeros(shape, bool)
        y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        m[y : y + rng.integers(1, 30), x : x + rng.integers(1, 30)] = True
        m &= rng.random(shape) < 0.9  # ragged edges, holes
        out.append(m)
    return out


def test_painting_is_largest_first_with_ties_in_list_order():
    rng = np.random.default_rng(3)
    shape = (40, 50)
    masks = _random_masks(rng, shape, 25) + [np.zeros(shape, bool)]
    masks.append(masks[4].copy())  # the same area as masks[4]: painted after it, so it wins
    labels = paint_largest_first(masks, shape)
    # by hand: each pixel holds the smallest mask covering it, the later one among equals
    area = [int(m.sum()) for m in masks]
    want = np.zeros(shape, np.uint16)
    for y in range(shape[0]):
        for x in range(shape[1]):
            cover = [i for i, m in enumerate(masks) if m[y, x]]
            if cover:
                want[y, x] = min(cover, key=lambda i: (area[i], -i)) + 1
    assert labels.dtype == np.uint16 and np.array_equal(labels, want)
    assert np.array_equal(paint_largest_first(masks, shape, areas=area), labels)
    boxes = [Mask2D(m).box for m in masks]  # painted inside their boxes: the same image
    assert boxes[-2] is None and np.array_equal(paint_largest_first(masks, shape, areas=area, boxes=boxes), labels)
    with pytest.raises(ValueError, match="shape"):
        paint_largest_first([np.ones((4, 4), bool)], (5, 5), boxes=[(0, 0, 4, 4)])


def test_painting_per_point_labels():
    """Masks may be one value per point (the engine's point path), any integer dtype."""
    masks = [np.array([1, 1, 1, 0, 0], np.uint8), np.array([0, 1, 0, 0, 1], bool)]
    labels = paint_largest_first(masks, (5,), np.int32)
    assert labels.dtype == np.int32 and labels.tolist() == [1, 2, 1, 0, 2]


def test_too_many_masks_for_the_label_type():
    with pytest.raises(ValueError, match="exceed"):
        paint_largest_first([np.ones(2, bool)] * 256, (2,), np.uint8)


def test_label_boxes_in_one_pass_equal_the_boxes_label_by_label():
    rng = np.random.default_rng(5)
    shape = (60, 80)
    masks = _random_masks(rng, shape, 30)
    labels = paint_largest_first(masks, shape)
    labels[labels == 7] = 0  # a label with nothing left
    boxes = label_boxes(labels, len(masks) + 2)  # and two labels no mask has
    assert len(boxes) == len(masks) + 2
    for i, box in enumerate(boxes):
        ys, xs = np.nonzero(labels == i + 1)
        want = None if len(ys) == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        assert box == want, i
    assert boxes[6] is None and boxes[-1] is None
    assert label_boxes(labels, 0) == []


def test_mask2d_area_and_box_are_computed_once_and_follow_a_new_mask():
    m = np.zeros((20, 30), bool)
    m[3:7, 10:25] = True
    mk = Mask2D(m, 0.9)
    assert mk.area == 60 and mk.box == (10, 3, 25, 7) == mask_bbox(m)
    m2 = np.zeros((20, 30), bool)
    assert mk._box[0] is m and mk.box is mk._box[1]  # cached against the array it was taken from
    mk.mask = m2  # a new array: recomputed
    assert mk.area == 0 and mk.box is None
    assert Mask2D(np.array([[0, 3], [0, 0]], np.uint8)).box == (1, 0, 2, 1)


def test_each_box_is_computed_once_through_perception(monkeypatch):
    """The progressive merge, the five crops, the view quality and the best-view crop all read
    the box of a Mask2D: it is computed once per mask, and the record's box comes from the
    label image in one pass."""
    from core3d_ros.config import MapperConfig, with_overrides
    from core3d_ros.core.datasets import make_scene
    from core3d_ros.core.perception import Perception
    from core3d_ros.core.segment import base

    frame = make_scene(seed=0, num_frames=2)[0]
    h, w = frame.shape
    masks = [np.zeros((h, w), bool) for _ in range(4)]
    masks[0][150:, :] = True  # the floor
    masks[1][10:60, 20:90] = True
    masks[2][30:40, 100:150] = True
    masks[3][100:130, 150:200] = True

    class Fixed:
        name = "fixed"

        def segment(self, frame):
            return [Mask2D(m.copy(), 0.9, level=i % 2) for i, m in enumerate(masks)]

    cfg = with_overrides(MapperConfig(), embed={"name": "mean_color"}, keyframes={"enabled": False})
    perception = Perception(cfg, segmenter=Fixed())
    calls = []
    real = base.tight_box
    monkeypatch.setattr(base, "tight_box", lambda m: calls.append(1) or real(m))
    obs = perception.infer(frame)
    assert len(obs.masks) == 4 and len(calls) == 4
    assert sorted(r.box for r in obs.masks) == [(0, 150, w, h), (20, 10, 90, 60), (100, 30, 150, 40), (150, 100, 200, 130)]
