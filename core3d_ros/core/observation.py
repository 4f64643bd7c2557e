"""What perception sends mapping for one keyframe: a label image and one record per mask.

    obs = Observation.from_masks(stamp, index, pose, masks, embeddings, qualities, crops)
    blob = encode_labels(obs.labels)            # lossless 16-bit PNG, a few kB to tens of kB
    labels = decode_labels(blob, (h, w))        # ObservationError on anything else
    obs.validate(frame_shape=(h, w), dim=512)   # ObservationError(reason) before any fusion

The masks of one keyframe become one uint16 label image (0 = no mask, i = the i-th record), not
one dense boolean image per mask: painted largest first (``masks.paint_largest_first``), so a
small mask lying on a large one (a cup on a table) keeps its pixels. Embeddings travel as float16.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from .masks import label_boxes, paint_largest_first
from .segment.base import Mask2D

MAX_LABELS = 65535


class ObservationError(ValueError):
    """A malformed observation; ``reason`` is the diagnostics counter it is counted under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class MaskRecord:
    label: int  # value of this mask's pixels in the label image (1..N)
    score: float  # generator confidence in [0, 1]
    box: tuple[int, int, int, int]  # tight half-open pixel box (x0, y0, x1, y1)
    level: int = 0  # granularity level (0 = coarsest)
    embedding: np.ndarray | None = None  # (D,) float16, unit norm when semantics are on
    view_quality: float = 0.0  # how good this view of the object is (large, central, whole)
    view_jpeg: bytes = b""  # optional small JPEG crop of the mask's box (best views)


@dataclass
class Observation:
    stamp: float  # the keyframe's stamp (seconds): mapping fuses against its buffered frame
    frame_index: int
    pose: np.ndarray  # (4, 4) camera-to-map pose perception used
    labels: np.ndarray  # (H, W) uint16
    masks: list[MaskRecord] = field(default_factory=list)

    @classmethod
    def from_masks(
        cls,
        stamp: float,
        frame_index: int,
        pose: np.ndarray,
        masks: Sequence[Mask2D],
        embeddings: np.ndarray | None = None,  # (N, D), one row per mask
        view_qualities: Sequence[float] | None = None,
        view_crops: Sequence[np.ndarray | None] | None = None,
        jpeg_quality: int = 85,
    ) -> "Observation":
        if len(masks) > MAX_LABELS:
            raise ObservationError("too_many_masks", f"{len(masks)} masks exceed {MAX_LABELS}")
        shape = masks[0].mask.shape if masks else (0, 0)
        labels = paint_largest_first(
            [m.mask for m in masks], shape, np.uint16, areas=[m.area for m in masks], boxes=[m.box for m in masks]
        )
        boxes = label_boxes(labels, len(masks))  # what is left of each mask, all in one pass
        records = []
        for i, m in enumerate(masks):
            box = boxes[i]
            if box is None:  # entirely covered by smaller masks: nothing of it is left
                continue
            emb = None if embeddings is None else np.asarray(embeddings[i], np.float16)
            jpeg = b""
            crop = None if view_crops is None else view_crops[i]
            if crop is not None and crop.size:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                jpeg = buf.tobytes() if ok else b""
            records.append(
                MaskRecord(
                    label=i + 1,
                    score=float(m.score),
                    box=box,
                    level=int(getattr(m, "level", 0)),
                    embedding=emb,
                    view_quality=0.0 if view_qualities is None else float(view_qualities[i]),
                    view_jpeg=jpeg,
                )
            )
        return cls(stamp=float(stamp), frame_index=int(frame_index), pose=np.asarray(pose, np.float64), labels=labels, masks=records)

    def validate(self, frame_shape: tuple[int, int] | None = None, dim: int | None = None) -> None:
        """Raise ObservationError(reason) unless the observation can be fused as it is."""
        if not np.isfinite(self.stamp):
            raise ObservationError("bad_stamp", f"stamp {self.stamp} is not finite")
        pose = np.asarray(self.pose)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ObservationError("bad_pose", "pose must be a finite 4x4 matrix")
        labels = self.labels
        if labels.dtype != np.uint16 or labels.ndim != 2:
            raise ObservationError("bad_labels", f"label image must be HxW uint16, got {labels.dtype} {labels.shape}")
        if frame_shape is not None and labels.shape != tuple(frame_shape):
            raise ObservationError(
                "size_mismatch", f"label image {labels.shape[1]}x{labels.shape[0]} does not match the frame {frame_shape[1]}x{frame_shape[0]}"
            )
        if not self.masks:
            raise ObservationError("empty", "observation has no masks")
        ids = [r.label for r in self.masks]
        if len(set(ids)) != len(ids) or min(ids) < 1:
            raise ObservationError("bad_labels", "mask labels must be distinct and >= 1")
        present = np.unique(labels)
        present = present[present > 0]
        if not np.all(np.isin(present, ids)):
            raise ObservationError("bad_labels", "the label image holds labels no mask record describes")
        h, w = labels.shape
        for r in self.masks:
            x0, y0, x1, y1 = r.box
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise ObservationError("bad_box", f"mask {r.label}: box {r.box} outside the {w}x{h} image")
            if not (np.isfinite(r.score) and 0.0 <= r.score <= 1.0):
                raise ObservationError("bad_score", f"mask {r.label}: score {r.score} outside [0, 1]")
            if r.embedding is not None:
                e = np.asarray(r.embedding)
                if e.ndim != 1 or (dim is not None and len(e) != dim):
                    raise ObservationError(
                        "bad_embedding", f"mask {r.label}: embedding of shape {e.shape}, expected ({dim},)"
                    )
                if not np.all(np.isfinite(e)):
                    raise ObservationError("bad_embedding", f"mask {r.label}: embedding is not finite")

    def mask_of(self, label: int) -> np.ndarray:
        return self.labels == label


def encode_labels(labels: np.ndarray) -> bytes:
    """Lossless 16-bit PNG of a uint16 label image."""
    labels = np.ascontiguousarray(labels, dtype=np.uint16)
    ok, buf = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ObservationError("bad_labels", "could not encode the label image")
    return buf.tobytes()


def decode_labels(data: bytes, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of encode_labels; ObservationError unless ``data`` is a 16-bit single-channel PNG
    (of ``shape`` (H, W) when given)."""
    if not data:
        raise ObservationError("bad_labels", "empty label image")
    if bytes(data[:8]) != b"\x89PNG\r\n\x1a\n":
        raise ObservationError("bad_labels", "label image is not a PNG")
    img = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.ndim != 2:
        raise ObservationError("bad_labels", "label image must be a single-channel 16-bit PNG")
    if shape is not None and img.shape != tuple(shape):
        raise ObservationError("size_mismatch", f"label image is {img.shape[1]}x{img.shape[0]}, expected {shape[1]}x{shape[0]}")
    return img


def decode_view(jpeg: bytes) -> np.ndarray | None:
    """A best-view JPEG as HxWx3 uint8 RGB; None when it is empty or not an image."""
    if not jpeg:
        return None
    img = cv2.imdecode(np.frombuffer(bytes(jpeg), np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
