"""Label guesses for object embeddings from a closed vocabulary (display only).

The default vocabulary is the 200 class names of the ScanNet200 benchmark (indoor objects and
structures). ``retrieval.vocabulary`` in the config replaces it. A guess is only made with a
semantic encoder (real pretrained weights); otherwise every guess is ``("", 0.0)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Encoder, normalize_rows

# ScanNet200 class names, in the benchmark's order.
DEFAULT_VOCABULARY: tuple[str, ...] = (
    "wall", "chair", "floor", "table", "door", "couch", "cabinet", "shelf", "desk", "office chair",
    "bed", "pillow", "sink", "picture", "window", "toilet", "bookshelf", "monitor", "curtain", "book",
    "armchair", "coffee table", "box", "refrigerator", "lamp", "kitchen cabinet", "towel", "clothes",
    "tv", "nightstand", "counter", "dresser", "stool", "cushion", "plant", "ceiling", "bathtub",
    "end table", "dining table", "keyboard", "bag", "backpack", "toilet paper", "printer", "tv stand",
    "whiteboard", "blanket", "shower curtain", "trash can", "closet", "stairs", "microwave", "stove",
    "shoe", "computer tower", "bottle", "bin", "ottoman", "bench", "board", "washing machine",
    "mirror", "copier", "basket", "sofa chair", "file cabinet", "fan", "laptop", "shower", "paper",
    "person", "paper towel dispenser", "oven", "blinds", "rack", "plate", "blackboard", "piano",
    "suitcase", "rail", "radiator", "recycling bin", "container", "wardrobe", "soap dispenser",
    "telephone", "bucket", "clock", "stand", "light", "laundry basket", "pipe", "clothes dryer",
    "guitar", "toilet paper holder", "seat", "speaker", "column", "bicycle", "ladder",
    "bathroom stall", "shower wall", "cup", "jacket", "storage bin", "coffee maker", "dishwasher",
    "paper towel roll", "machine", "mat", "windowsill", "bar", "toaster", "bulletin board",
    "ironing board", "fireplace", "soap dish", "kitchen counter", "doorframe",
    "toilet paper dispenser", "mini fridge", "fire extinguisher", "ball", "hat", "shower curtain rod",
    "water cooler", "paper cutter", "tray", "shower door", "pillar", "ledge", "toaster oven", "mouse",
    "toilet seat cover dispenser", "furniture", "cart", "storage container", "scale", "tissue box",
    "light switch", "crate", "power outlet", "decoration", "sign", "projector", "closet door",
    "vacuum cleaner", "candle", "plunger", "stuffed animal", "headphones", "dish rack", "broom",
    "guitar case", "range hood", "dustpan", "hair dryer", "water bottle", "handicap bar", "purse",
    "vent", "shower floor", "water pitcher", "mailbox", "bowl", "paper bag", "alarm clock",
    "music stand", "projector screen", "divider", "laundry detergent", "bathroom counter", "object",
    "bathroom vanity", "closet wall", "laundry hamper", "bathroom stall door", "ceiling light",
    "trash bin", "dumbbell", "stair rail", "tube", "bathroom cabinet", "cd case", "closet rod",
    "coffee kettle", "structure", "shower head", "keyboard piano", "case of water bottles",
    "coat rack", "storage organizer", "folded chair", "fire alarm", "power strip", "calendar",
    "poster", "potted plant", "luggage", "mattress",
)

DEFAULT_TEMPLATE = "a photo of a {}"


def load_vocabulary(path: str | Path) -> list[str]:
    """One class name per line; blank lines and lines starting with '#' are skipped."""
    names = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line)
    return names


class LabelGuesser:
    """Closest vocabulary entry to an embedding: ``guesser(embedding) -> (label, score)``.

    ``score`` is the softmax probability of the best label over the vocabulary at CLIP's
    temperature (``logit_scale`` 100), in [0, 1]. The vocabulary's text embeddings (prompt
    ``template``) are computed once, at construction, and kept.
    """

    def __init__(
        self,
        encoder: Encoder | None,
        vocabulary: Sequence[str] | None = None,
        template: str = DEFAULT_TEMPLATE,
        logit_scale: float = 100.0,
    ):
        names = [str(v).strip() for v in (vocabulary if vocabulary else DEFAULT_VOCABULARY)]
        self.vocabulary: list[str] = list(dict.fromkeys(n for n in names if n))
        self.template = template
        self.logit_scale = float(logit_scale)
        self.encoder = encoder
        self.enabled = bool(encoder is not None and getattr(encoder, "semantic", False) and self.vocabulary)
        self.text_embeddings: np.ndarray | None = None
        if self.enabled:
            self.text_embeddings = normalize_rows(encoder.encode_text([template.format(n) for n in self.vocabulary]))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) or (D,) -> (N, V) softmax probabilities over the vocabulary."""
        if not self.enabled:
            raise RuntimeError("label guesses need a semantic encoder")
        E = normalize_rows(np.atleast_2d(np.asarray(embeddings, dtype=np.float32)))
        logits = self.logit_scale * (E @ self.text_embeddings.T)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def guess_batch(self, embeddings: np.ndarray) -> list[tuple[str, float]]:
        E = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        if not self.enabled or E.size == 0:
            return [("", 0.0)] * len(E)
        p = self.scores(E)
        best = p.argmax(axis=1)
        return [(self.vocabulary[b], float(p[i, b])) for i, b in enumerate(best)]

    def guess(self, embedding: np.ndarray | None) -> tuple[str, float]:
        if embedding is None or not self.enabled:
            return "", 0.0
        e = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(e)) or not np.any(e):
            return "", 0.0
        return self.guess_batch(e[None])[0]

    __call__ = guess
