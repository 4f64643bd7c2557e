"""Room labels from room keyframes against a room vocabulary (display and room-aware queries).

    labeler = RoomLabeler(encoder, ["kitchen", "office", ...])
    labels = labeler.label({room_id: [keyframe image, ...]})    # {room_id: (label, score)}

A room's embedding is the normalised mean of its keyframes' image embeddings; its label is the
vocabulary entry whose text embedding ("a photo of a {room}") is most similar (cosine, the
score). Labels are only given with a semantic encoder (real pretrained weights); otherwise, and
for a room without keyframes, rooms are numbered: ``numbered(room_id)`` = "room N". The model
calls are the caller's to schedule: the mapping node runs them on a worker thread of their own
(ros/scene_graph.py), never in fusion, queries or the hierarchy update.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..embed.base import normalize_rows

DEFAULT_ROOM_VOCABULARY: tuple[str, ...] = (
    "kitchen", "office", "bathroom", "bedroom", "living room", "corridor", "dining room", "meeting room",
    "laundry room", "storage room", "classroom", "lobby", "staircase", "garage",
)
ROOM_TEMPLATE = "a photo of a {}"


def numbered(room_id: int) -> str:
    """A room's name without a model."""
    return f"room {int(room_id)}"


class RoomLabeler:
    """Labels rooms from keyframe images; ``enabled`` only with a semantic encoder."""

    def __init__(self, encoder: Any, vocabulary: Sequence[str] = (), template: str = ROOM_TEMPLATE):
        words = [str(w).strip() for w in (vocabulary or DEFAULT_ROOM_VOCABULARY) if str(w).strip()]
        self.vocabulary = list(dict.fromkeys(words))
        self.encoder = encoder
        self.template = template
        self.enabled = bool(encoder is not None and getattr(encoder, "semantic", False) and self.vocabulary)
        self._text: np.ndarray | None = None  # (V, D) unit rows, encoded on first use

    def _text_embeddings(self) -> np.ndarray:
        if self._text is None:
            emb = self.encoder.encode_text([self.template.format(w) for w in self.vocabulary])
            self._text = normalize_rows(np.asarray(emb, np.float32))
        return self._text

    def label_embeddings(self, embeddings: dict[int, np.ndarray]) -> dict[int, tuple[str, float]]:
        """{room id: (K, D) keyframe image embeddings} -> {room id: (label, cosine)}; a room
        without embeddings is numbered with score 0."""
        out: dict[int, tuple[str, float]] = {}
        text = self._text_embeddings() if self.enabled else None
        for rid, emb in embeddings.items():
            emb = np.asarray(emb, np.float32).reshape(len(emb), -1) if len(emb) else np.zeros((0, 0), np.float32)
            if text is None or not len(emb) or emb.shape[1] != text.shape[1]:
                out[int(rid)] = (numbered(rid), 0.0)
                continue
            mean = normalize_rows(normalize_rows(emb).mean(axis=0, keepdims=True))[0]
            sims = text @ mean
            best = int(np.argmax(sims))
            out[int(rid)] = (self.vocabulary[best], float(sims[best]))
        return out

    def label(self, images: dict[int, list[np.ndarray]]) -> dict[int, tuple[str, float]]:
        """{room id: keyframe images (H, W, 3) uint8} -> {room id: (label, cosine)}. One image
        batch for all rooms (the encoder batches it further)."""
        if not self.enabled:
            return {int(rid): (numbered(rid), 0.0) for rid in images}
        rooms = [(int(rid), [im for im in ims if im is not None and np.asarray(im).size]) for rid, ims in images.items()]
        flat = [im for _, ims in rooms for im in ims]
        emb = np.asarray(self.encoder.encode_images(flat), np.float32) if flat else np.zeros((0, 0), np.float32)
        per_room, start = {}, 0
        for rid, ims in rooms:
            per_room[rid] = emb[start : start + len(ims)]
            start += len(ims)
        return self.label_embeddings(per_room)
