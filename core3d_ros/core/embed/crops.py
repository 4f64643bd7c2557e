"""Context-aware crops and their fusion into one embedding per mask (CORE-3D).

For every mask five crops are cut from the frame (kinds in ``CROP_KINDS`` order):

==========  ==========================================================================
``mask``      the mask's bounding box, pixels outside the mask zeroed (black)
``bbox``      the bounding box
``large``     the box scaled by ``embed.large_scale`` (2.5) about its centre
``huge``      the box scaled by ``embed.huge_scale`` (4.0)
``surround``  the box scaled by ``embed.sur_scale`` (3.0), the mask's own pixels zeroed
==========  ==========================================================================

and their embeddings are fused as

    e = normalise(w_mask e_mask + w_bbox e_bbox + w_large e_large + w_huge e_huge - w_sur e_sur)

(the negative surroundings term removes what the context alone would say), optionally blended
with a whole-frame embedding g (OpenInsGaussian): ``normalise((1 - alpha) e + alpha g)`` when
``embed.alpha_global > 0``.

Boxes are ``(x0, y0, x1, y1)`` integer pixel boxes, half-open (``x1``/``y1`` exclusive), the
mask's tight box at scale 1. A scaled box keeps the centre, widens both sides by the scale and
rounds outwards. **Border policy: clip.** A scaled box is clipped to the image, so context crops
of objects near the border are smaller and off-centre rather than padded; a crop is never empty
(at least 1x1 pixel). The encoder resizes crops to its input size (``embed.resize_mode``).

All crops of one frame go into one list so the encoder runs one batched call per frame.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ...config import EmbedConfig
from ..segment.base import Mask2D
from ..segment.base import mask_bbox as _tight_bbox
from .base import Encoder, normalize_rows

CROP_KINDS = ("mask", "bbox", "large", "huge", "surround")

Box = tuple[int, int, int, int]


def _as_mask(m) -> np.ndarray:
    mask = m.mask if isinstance(m, Mask2D) else m
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be HxW, got shape {mask.shape}")
    return mask if mask.dtype == np.bool_ else mask.astype(bool)


def mask_bbox(mask) -> Box:
    """Tight half-open box ``(x0, y0, x1, y1)`` of a non-empty mask (array or Mask2D)."""
    return _tight_bbox(_as_mask(mask))


def scale_box(box: Box, scale: float, width: int, height: int) -> Box:
    """Scale a box about its centre, round outwards, clip to the image; never empty."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    hw, hh = (x1 - x0) * scale / 2.0, (y1 - y0) * scale / 2.0
    nx0, nx1 = math.floor(cx - hw), math.ceil(cx + hw)
    ny0, ny1 = math.floor(cy - hh), math.ceil(cy + hh)
    nx0, ny0 = min(max(nx0, 0), width - 1), min(max(ny0, 0), height - 1)
    nx1, ny1 = min(max(nx1, nx0 + 1), width), min(max(ny1, ny0 + 1), height)
    return nx0, ny0, nx1, ny1


def _known_box(m) -> Box | None:
    """The box a Mask2D already holds (computed once per mask); None for a bare array."""
    return m.box if isinstance(m, Mask2D) else None


def crop_boxes(mask, cfg: EmbedConfig | None = None, box: Box | None = None) -> dict[str, Box]:
    """The five crop boxes of one mask (array or Mask2D), by kind. ``box``: the mask's tight
    box, when already known."""
    cfg = cfg or EmbedConfig()
    box = box or _known_box(mask)
    mask = _as_mask(mask)
    h, w = mask.shape
    if box is None:
        box = mask_bbox(mask)
    return {
        "mask": box,
        "bbox": box,
        "large": scale_box(box, cfg.large_scale, w, h),
        "huge": scale_box(box, cfg.huge_scale, w, h),
        "surround": scale_box(box, cfg.sur_scale, w, h),
    }


def extract_crops(
    rgb: np.ndarray, masks: Sequence[Mask2D | np.ndarray], cfg: EmbedConfig | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """All five crops of every mask, in one list.

    Returns ``(crops, index)`` with ``index`` an (n_masks, 5) int array: ``crops[index[i, k]]`` is
    crop kind ``CROP_KINDS[k]`` of mask ``i``. ``bbox``/``large``/``huge`` crops are views into
    ``rgb`` (no copy); ``mask``/``surround`` crops are new arrays. Raises ValueError for an empty
    mask or a mask whose shape differs from the image.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be HxWx3 uint8, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    crops: list[np.ndarray] = []
    index = np.arange(len(masks) * len(CROP_KINDS), dtype=np.int64).reshape(len(masks), len(CROP_KINDS))
    for i, m in enumerate(masks):
        mask = _as_mask(m)
        if mask.shape != (h, w):
            raise ValueError(f"mask {i} has shape {mask.shape}, image is {(h, w)}")
        boxes = crop_boxes(mask, cfg, _known_box(m))
        x0, y0, x1, y1 = boxes["mask"]
        crops.append(rgb[y0:y1, x0:x1] * mask[y0:y1, x0:x1, None])  # uint8 * bool: zero outside
        crops.append(rgb[y0:y1, x0:x1])
        for kind in ("large", "huge"):
            bx0, by0, bx1, by1 = boxes[kind]
            crops.append(rgb[by0:by1, bx0:bx1])
        sx0, sy0, sx1, sy1 = boxes["surround"]
        crops.append(rgb[sy0:sy1, sx0:sx1] * ~mask[sy0:sy1, sx0:sx1, None])  # the object zeroed
    return crops, index


def fusion_weights(cfg: EmbedConfig) -> np.ndarray:
    """Signed weights in ``CROP_KINDS`` order (the surroundings weight is subtracted)."""
    return np.array([cfg.w_mask, cfg.w_bbox, cfg.w_large, cfg.w_huge, -cfg.w_sur], dtype=np.float32)


def fuse_embeddings(
    embeddings: np.ndarray, cfg: EmbedConfig, global_feature: np.ndarray | None = None
) -> np.ndarray:
    """(n_masks, 5, D) crop embeddings -> (n_masks, D) unit-norm fused embeddings.

    ``global_feature``: (D,) or (n_masks, D) whole-frame embedding, blended in with weight
    ``cfg.alpha_global`` when that is > 0 (ignored when None or alpha is 0).
    """
    E = np.asarray(embeddings, dtype=np.float32)
    if E.ndim != 3 or E.shape[1] != len(CROP_KINDS):
        raise ValueError(f"expected (n_masks, {len(CROP_KINDS)}, D) embeddings, got {E.shape}")
    fused = normalize_rows(np.einsum("nkd,k->nd", E, fusion_weights(cfg)))
    alpha = float(cfg.alpha_global)
    if alpha > 0 and global_feature is not None and len(fused):
        g = normalize_rows(np.asarray(global_feature, dtype=np.float32))
        fused = normalize_rows((1.0 - alpha) * fused + alpha * g)
    return fused


def embed_masks(
    encoder: Encoder, rgb: np.ndarray, masks: Sequence[Mask2D | np.ndarray], cfg: EmbedConfig
) -> np.ndarray:
    """Fused context-aware embedding of every mask: one batched encoder call per frame."""
    if len(masks) == 0:
        return np.zeros((0, encoder.dim), np.float32)
    crops, index = extract_crops(rgb, masks, cfg)
    use_global = cfg.alpha_global > 0
    if use_global:
        crops.append(np.asarray(rgb))
    E = encoder.encode_images(crops)
    g = E[-1] if use_global else None
    return fuse_embeddings(E[index], cfg, g)


def view_quality(
    mask: Mask2D | np.ndarray,
    image_shape: tuple[int, ...],
    full_size_fraction: float = 0.25,
) -> float:
    """How good this view of an object is, in [0, 1] (for best-view selection).

    Product of three terms, each in [0, 1]:

    - size: ``sqrt(area / (full_size_fraction * H * W))``, capped at 1 (bigger is better until
      the object fills a quarter of the image);
    - centrality: ``0.5 + 0.5 * (1 - d)``, d the distance of the mask centroid from the image
      centre over the half-diagonal;
    - completeness: ``1 - 0.125 * sides``, ``sides`` the number of image borders (0-4) the mask
      touches (a touching mask is likely truncated).

    An empty mask scores 0.
    """
    m = _as_mask(mask)
    h, w = int(image_shape[0]), int(image_shape[1])
    if m.shape != (h, w):
        raise ValueError(f"mask shape {m.shape} does not match image shape {(h, w)}")
    area = mask.area if isinstance(mask, Mask2D) else int(np.count_nonzero(m))
    if area == 0:
        return 0.0
    size = min(1.0, math.sqrt(area / (full_size_fraction * h * w)))
    x0, y0, x1, y1 = _known_box(mask) or mask_bbox(m)
    sub = m[y0:y1, x0:x1]
    cx = x0 + float(sub.sum(axis=0) @ np.arange(x1 - x0)) / area
    cy = y0 + float(sub.sum(axis=1) @ np.arange(y1 - y0)) / area
    dx = (cx + 0.5 - w / 2.0) / (w / 2.0)
    dy = (cy + 0.5 - h / 2.0) / (h / 2.0)
    d = min(1.0, math.hypot(dx, dy) / math.sqrt(2.0))
    centrality = 0.5 + 0.5 * (1.0 - d)
    sides = int(m[0].any()) + int(m[-1].any()) + int(m[:, 0].any()) + int(m[:, -1].any())
    completeness = 1.0 - 0.125 * sides
    return float(size * centrality * completeness)
