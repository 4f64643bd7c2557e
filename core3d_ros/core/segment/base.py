"""Class-agnostic 2-D mask generators behind one Protocol, chosen by name from config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from ...config import SegmenterConfig
from ..frame import Frame
from ..registry import Registry


@dataclass
class Mask2D:
    mask: np.ndarray  # HxW bool
    score: float = 1.0  # generator confidence in [0, 1]
    level: int = 0  # granularity level that produced it (0 = coarsest)
    source_id: int = -1  # ground-truth instance id (oracle) or -1

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight half-open box ``(x0, y0, x1, y1)`` of a non-empty HxW boolean mask."""
    rows = mask.any(axis=1)
    if not rows.any():
        raise ValueError("empty mask has no bounding box")
    cols = mask.any(axis=0)
    y0 = int(np.argmax(rows))
    y1 = len(rows) - int(np.argmax(rows[::-1]))
    x0 = int(np.argmax(cols))
    x1 = len(cols) - int(np.argmax(cols[::-1]))
    return x0, y0, x1, y1


class Segmenter(Protocol):
    """Produces class-agnostic masks for one frame."""

    name: str

    def segment(self, frame: Frame) -> list[Mask2D]: ...


SegmenterFactory = Callable[[SegmenterConfig], Segmenter]


# The back-ends register themselves here; the package's __init__ imports them.
SEGMENTERS: Registry[SegmenterFactory] = Registry("segmenter", "segmenter.name")
register_segmenter = SEGMENTERS.register


def available_segmenters() -> list[str]:
    return SEGMENTERS.names()


def make_segmenter(cfg: SegmenterConfig) -> Segmenter:
    """Build the segmenter named by ``segmenter.name`` (BackendError names what is wrong)."""
    return SEGMENTERS.create(cfg.name, cfg)
