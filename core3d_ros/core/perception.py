"""Perception: the model side of CORE-3D, one keyframe in, one Observation out.

    perception = Perception(cfg)            # builds segmenter and encoder now (fail fast)
    obs = perception.observe(frame)         # None for a non-keyframe
    obs = perception.infer(frame)           # models on this frame, keyframe or not

Steps: keyframe choice (camera motion or interval), class-agnostic masks, the progressive
multi-granularity merge, then context-aware CLIP embeddings of every kept mask in one batched
call, each mask's view quality and a small crop of its box for best views. Nothing here touches
the map: the mapping side fuses the Observation against the depth and pose of the same stamp.
"""
from __future__ import annotations

import time

import numpy as np

from ..config import MapperConfig
from .frame import Frame
from .keyframes import KeyframeSelector
from .observation import Observation
from .segment.base import Mask2D, Segmenter, make_segmenter
from .segment.progressive import progressive_merge


class Perception:
    def __init__(self, cfg: MapperConfig | None = None, segmenter: Segmenter | None = None, encoder=None):
        self.cfg = cfg or MapperConfig()
        self.segmenter = segmenter if segmenter is not None else make_segmenter(self.cfg.segmenter)
        if encoder is None and self.cfg.embed.name != "none":
            from .embed.base import make_encoder

            encoder = make_encoder(self.cfg.embed)
        self.encoder = encoder
        self.keyframes = KeyframeSelector(self.cfg.keyframes)
        self.timings_ms: dict[str, float] = {}  # of the last inference

    def observe(self, frame: Frame) -> Observation | None:
        """Observation of ``frame`` when it is a keyframe, else None."""
        frame.validate()
        if not self.keyframes.is_keyframe(frame.pose, frame.index):
            return None
        return self.infer(frame)

    def masks(self, frame: Frame) -> list[Mask2D]:
        """The generator's masks after the progressive merge."""
        return progressive_merge(self.segmenter.segment(frame), self.cfg.segmenter.progressive)

    def infer(self, frame: Frame) -> Observation:
        t0 = time.perf_counter()
        masks = self.masks(frame)
        t1 = time.perf_counter()
        embeddings = qualities = crops = None
        if self.encoder is not None and masks:
            embeddings, qualities, crops = describe_masks(frame.rgb, masks, self.encoder, self.cfg.embed)
        t2 = time.perf_counter()
        obs = Observation.from_masks(frame.stamp, frame.index, frame.pose, masks, embeddings, qualities, crops)
        if not masks:
            obs.labels = np.zeros(frame.shape, np.uint16)
        self.timings_ms = {"segment": (t1 - t0) * 1e3, "embed": (t2 - t1) * 1e3, "total": (time.perf_counter() - t0) * 1e3}
        return obs


def describe_masks(rgb: np.ndarray, masks: list[Mask2D], encoder=None, embed_cfg=None):
    """Per mask: its context-aware embedding (one batched encoder call; None without an
    encoder), its view quality and the crop of its box (best views; None for an empty mask)."""
    from .embed.crops import embed_masks, view_quality

    embeddings = embed_masks(encoder, rgb, masks, embed_cfg) if encoder is not None and masks else None
    qualities = [view_quality(m, m.mask.shape) for m in masks]
    crops = []
    for m in masks:
        box = m.box  # the box the merge and the crops used
        if box is not None:
            x0, y0, x1, y1 = box
            crops.append(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        else:
            crops.append(None)
    return embeddings, qualities, crops
