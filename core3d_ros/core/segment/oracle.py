"""Ground-truth segmenter: one mask per annotated instance of the frame.

Used with datasets that supply an instance-id image (synthetic scenes, ScanNet-style
annotations) to evaluate the fusion stages in isolation from 2-D mask quality.
"""
from __future__ import annotations

import numpy as np

from ...config import SegmenterConfig
from ..frame import Frame
from .base import Mask2D, register_segmenter


class OracleSegmenter:
    """Masks straight from ``frame.instance_ids``: id 0 is background, every id > 0 is an instance.

    Instances smaller than ``min_mask_pixels`` pixels are left out (too small to observe well,
    and the same rule the learned generators follow). Masks come largest first, each with score
    1.0, level 0 and ``source_id`` set to the instance id.
    """

    name = "oracle"

    def __init__(self, min_mask_pixels: int = 200):
        if min_mask_pixels < 1:
            raise ValueError(f"min_mask_pixels must be >= 1, got {min_mask_pixels}")
        self.min_mask_pixels = int(min_mask_pixels)

    def segment(self, frame: Frame) -> list[Mask2D]:
        ids = frame.instance_ids
        if ids is None:
            raise ValueError(
                "the oracle segmenter needs ground-truth instance ids, but this frame has none "
                "(the dataset supplies no instance labels); choose another segmenter "
                "(parameter segmenter.name, e.g. 'geometric')"
            )
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"instance id image must be HxW, got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise ValueError(f"instance id image must be integer, got {ids.dtype}")
        values, counts = np.unique(ids[ids > 0], return_counts=True)
        keep = counts >= self.min_mask_pixels
        values, counts = values[keep], counts[keep]
        order = np.argsort(-counts, kind="stable")
        return [
            Mask2D(mask=ids == v, score=1.0, level=0, source_id=int(v)) for v in values[order]
        ]


@register_segmenter("oracle")
def _make_oracle(cfg: SegmenterConfig) -> OracleSegmenter:
    return OracleSegmenter(min_mask_pixels=cfg.progressive.min_mask_pixels)
