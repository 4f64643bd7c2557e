"""Oracle encoder, FOR EVALUATION ONLY: it reads the ground truth, so its "semantics" are perfect.

It isolates retrieval (parsing, relations, the hierarchy) from the quality of a vision-language
model in ``core3d eval --queries``: a crop's embedding is the one-hot of the true class under
it, a noun's embedding the one-hot of its class. It is not registered as an ``embed.name`` and
must never be used to map real data: it knows classes only through frames whose colour image was
replaced by ``class_coded`` (each pixel the code of the ground-truth class of its instance).

    classes = ["chair", "table", ...]
    enc = OracleEncoder(classes)
    frame = class_coded(frame, classes)     # rgb := class codes from frame.instance_ids
    ...map with the oracle segmenter and ``enc``...

Pixel code: class index k (0-based) -> RGB ((k + 1) >> 8, (k + 1) & 255, 255); (0, 0, 0) is no
class (background, blanked crop pixels, an instance whose class is not in ``classes``).
Dimension: len(classes) + 1; the last component is "unknown": a crop without coded pixels, and
a text that names none of the classes.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from ..core.embed.base import BaseEncoder
from ..core.frame import Frame


def class_coded(frame: Frame, classes: Sequence[str]) -> Frame:
    """A copy of ``frame`` whose rgb is the class code of each pixel (see the module doc)."""
    if frame.instance_ids is None:
        raise ValueError("the oracle encoder needs frames with ground-truth instance ids")
    index = {c: k for k, c in enumerate(classes)}
    ids = np.asarray(frame.instance_ids)
    top = int(ids.max()) if ids.size else 0
    lut = np.zeros(top + 1, dtype=np.int64)  # instance id -> class index + 1 (0: none)
    for iid, cls in frame.instance_classes.items():
        if 0 < int(iid) <= top and cls in index:
            lut[int(iid)] = index[cls] + 1
    code = lut[np.clip(ids, 0, top)]
    rgb = np.zeros(ids.shape + (3,), np.uint8)
    rgb[..., 0] = code >> 8
    rgb[..., 1] = code & 255
    rgb[..., 2] = np.where(code > 0, 255, 0)
    return dataclasses.replace(frame, rgb=rgb)


class OracleEncoder(BaseEncoder):
    """Ground-truth encoder for evaluation only (see the module doc); ``semantic`` is True
    because its space is the true classes."""

    name = "oracle"
    semantic = True

    def __init__(self, classes: Sequence[str], batch_size: int = 256):
        super().__init__(batch_size=batch_size, text_cache_size=1024)
        self.classes = [str(c).strip().lower() for c in classes]
        if len(set(self.classes)) != len(self.classes) or not all(self.classes):
            raise ValueError("oracle encoder: class names must be distinct and non-empty")
        self.dim = len(self.classes) + 1
        # longest names first, so that "trash bin" wins over "bin"
        self._patterns = sorted(
            ((re.compile(r"\b" + re.escape(c) + r"(?:e?s)?\b"), k) for k, c in enumerate(self.classes)),
            key=lambda p: -len(self.classes[p[1]]),
        )

    def class_of_crop(self, crop: np.ndarray) -> int:
        """Index of the majority class under a class-coded crop; dim - 1 when it has none."""
        c = np.asarray(crop).reshape(-1, 3)
        c = c[c[:, 2] == 255]
        code = (c[:, 0].astype(np.int64) << 8) | c[:, 1]
        code = code[(code >= 1) & (code <= len(self.classes))]
        if not len(code):
            return self.dim - 1
        return int(np.bincount(code).argmax()) - 1

    def class_of_text(self, text: str) -> int:
        t = text.lower()
        for pat, k in self._patterns:
            if pat.search(t):
                return k
        return self.dim - 1

    def _encode_image_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        return np.eye(self.dim, dtype=np.float32)[[self.class_of_crop(c) for c in crops]]

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        return np.eye(self.dim, dtype=np.float32)[[self.class_of_text(t) for t in texts]]
