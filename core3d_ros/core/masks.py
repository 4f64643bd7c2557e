"""Masks of one frame as one label image: painted largest first, boxes in one pass.

    labels = paint_largest_first([m.mask for m in masks], shape, areas=[m.area for m in masks],
                                 boxes=[m.box for m in masks])
    boxes = label_boxes(labels, len(masks))     # boxes[i]: what is left of masks[i], or None

Several masks of one frame overlap (a cup on a table): painting the larger masks first keeps
the smaller ones visible, each pixel holding the label of the smallest mask that covers it.
The label image is what perception sends and what fusion reads.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[int, int, int, int]  # tight half-open pixel box (x0, y0, x1, y1)


def paint_largest_first(
    masks: Sequence[np.ndarray],
    shape: tuple[int, ...],
    dtype=np.uint16,
    areas: Sequence[int] | None = None,
    boxes: Sequence[Box | None] | None = None,
) -> np.ndarray:
    """A label array of ``shape`` (0 = no mask, i = ``masks[i - 1]``): masks painted by
    decreasing area (equal areas in list order), so a smaller mask lying on a larger one keeps
    its pixels. ``masks`` are boolean (or 0/1) arrays of ``shape``: HxW images, or one value
    per point. ``areas``: their pixel counts, when already known; ``boxes`` (HxW masks only):
    their tight boxes (None: empty), when already known, so that each is painted inside its
    box. ValueError when there are more masks than ``dtype`` can number."""
    if len(masks) > np.iinfo(dtype).max:
        raise ValueError(f"{len(masks)} masks exceed the range of a {np.dtype(dtype).name} label image")
    if areas is None:
        areas = [int(np.count_nonzero(m)) for m in masks]
    labels = np.zeros(shape, dtype)
    for i in sorted(range(len(masks)), key=lambda i: -int(areas[i])):
        mask = np.asarray(masks[i], bool)
        if boxes is None:
            labels[mask] = i + 1
        elif boxes[i] is not None:
            if mask.shape != labels.shape:
                raise ValueError(f"mask {i} has shape {mask.shape}, the label image {labels.shape}")
            x0, y0, x1, y1 = boxes[i]
            labels[y0:y1, x0:x1][mask[y0:y1, x0:x1]] = i + 1
    return labels


def label_boxes(labels: np.ndarray, n: int) -> list[Box | None]:
    """Tight box of each label 1..n in a 2-D label image, in one pass: ``boxes[i]`` for label
    ``i + 1``, None where that label has no pixel left."""
    from scipy.ndimage import find_objects

    labels = np.asarray(labels)
    if n <= 0:
        return []
    boxes: list[Box | None] = []
    for sl in find_objects(labels, max_label=n):
        boxes.append(None if sl is None else (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return boxes
