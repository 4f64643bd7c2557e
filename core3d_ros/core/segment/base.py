"""Class-agnostic 2-D mask generators behind one Protocol, chosen by name from config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from ...config import SegmenterConfig
from ..frame import Frame
from ..registry import Registry


@dataclass
class Mask2D:
    """One mask from a segmenter. Its area and box are computed once, when first asked for
    (the progressive merge, the crops, the view quality and perception all use them), and
    again only if ``mask`` is replaced by another array (masks are not edited in place)."""

    mask: np.ndarray  # HxW bool
    score: float = 1.0  # generator confidence in [0, 1]
    level: int = 0  # granularity level that produced it (0 = coarsest)
    source_id: int = -1  # ground-truth instance id (oracle) or -1
    _area: tuple[Any, int] | None = field(default=None, init=False, repr=False, compare=False)
    _box: tuple[Any, tuple[int, int, int, int] | None] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def area(self) -> int:
        """Number of mask pixels."""
        c = self._area
        if c is None or c[0] is not self.mask:
            c = self._area = (self.mask, int(np.count_nonzero(self.mask)))
        return c[1]

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """Tight half-open box ``(x0, y0, x1, y1)`` of the mask; None for an empty mask."""
        c = self._box
        if c is None or c[0] is not self.mask:
            c = self._box = (self.mask, tight_box(np.asarray(self.mask)))
        return c[1]


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight half-open box ``(x0, y0, x1, y1)`` of a non-empty HxW boolean mask."""
    box = tight_box(mask)
    if box is None:
        raise ValueError("empty mask has no bounding box")
    return box


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight half-open box ``(x0, y0, x1, y1)`` of an HxW mask; None when it is empty."""
    rows = mask.any(axis=1)
    if not rows.any():
        return None
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
