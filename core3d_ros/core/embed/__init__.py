"""Image/text encoders, context-aware crops and label guesses.

Importing this package registers the built-in encoders (open_clip: torch loads only when built).
"""
from . import clip  # noqa: F401  (registers open_clip)
from .base import (
    BaseEncoder,
    Encoder,
    EncoderError,
    MeanColorEncoder,
    available_encoders,
    make_encoder,
    normalize_rows,
    register_encoder,
)
from .crops import CROP_KINDS, crop_boxes, embed_masks, extract_crops, fuse_embeddings, mask_bbox, scale_box, view_quality
from .labels import DEFAULT_VOCABULARY, LabelGuesser, load_vocabulary

__all__ = [
    "BaseEncoder",
    "CROP_KINDS",
    "DEFAULT_VOCABULARY",
    "Encoder",
    "EncoderError",
    "LabelGuesser",
    "MeanColorEncoder",
    "available_encoders",
    "crop_boxes",
    "embed_masks",
    "extract_crops",
    "fuse_embeddings",
    "load_vocabulary",
    "make_encoder",
    "mask_bbox",
    "normalize_rows",
    "register_encoder",
    "scale_box",
    "view_quality",
]
