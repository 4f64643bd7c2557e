"""Image/text encoders behind one Protocol, chosen by name from config.

An encoder maps image crops and texts into one joint embedding space (CLIP-style). Every output
row is float32 and unit-norm, so a dot product is a cosine similarity.

``semantic`` tells whether the space means anything: it is True only when real pretrained
weights were loaded. Untrained (random) encoders and the deterministic test encoder say False,
and nothing built on them may be presented to a user as a semantic answer (labels, query hits).

Back-ends register a factory under a name (``register_encoder``); ``make_encoder(cfg)`` builds
the one named by ``embed.name`` (``none`` gives None: mapping runs without semantics).
"""
from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from ...config import EmbedConfig
from ..registry import BackendError, Registry


class EncoderError(BackendError):
    """An encoder cannot be built or used (missing package, missing weights, bad input)."""


@runtime_checkable
class Encoder(Protocol):
    name: str
    dim: int
    semantic: bool  # True only with real pretrained weights

    def encode_images(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """HxWx3 uint8 RGB crops (any sizes) -> (N, dim) float32 unit-norm rows."""
        ...

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32 unit-norm rows."""
        ...


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit-normalise the last axis; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, eps)


def check_crops(crops: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, c in enumerate(crops):
        c = np.asarray(c)
        if c.ndim != 3 or c.shape[2] != 3 or c.dtype != np.uint8:
            raise EncoderError(f"crop {i}: expected an HxWx3 uint8 RGB array, got {c.dtype} {c.shape}")
        if c.shape[0] < 1 or c.shape[1] < 1:
            raise EncoderError(f"crop {i} is empty ({c.shape})")
        out.append(c)
    return out


class BaseEncoder:
    """Batching, normalisation and the LRU text cache; back-ends implement the two batch calls.

    ``_encode_image_batch(crops)`` and ``_encode_text_batch(texts)`` receive at most
    ``batch_size`` items and return (n, dim) arrays (normalised here). Text embeddings are
    cached by exact string: a cache hit never calls the model. Thread-safe: the cache is guarded
    by a lock; model calls run outside it.
    """

    name: str = "base"
    dim: int = 0
    semantic: bool = False

    def __init__(self, batch_size: int = 64, text_cache_size: int = 1024):
        if batch_size < 1:
            raise EncoderError(f"embed.batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.text_cache_size = max(0, int(text_cache_size))
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.text_cache_hits = 0
        self.text_cache_misses = 0

    # -- back-end hooks
    def _encode_image_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    # -- public API
    def encode_images(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        crops = check_crops(crops)
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        parts = [
            np.asarray(self._encode_image_batch(crops[i : i + self.batch_size]), dtype=np.float32)
            for i in range(0, len(crops), self.batch_size)
        ]
        return normalize_rows(np.concatenate(parts, axis=0))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        found: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for t in texts:
                if t in found:
                    continue
                e = self._text_cache.get(t)
                if e is not None:
                    self._text_cache.move_to_end(t)
                    found[t] = e
                    self.text_cache_hits += 1
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            rows = [
                np.asarray(self._encode_text_batch(missing[i : i + self.batch_size]), dtype=np.float32)
                for i in range(0, len(missing), self.batch_size)
            ]
            new = normalize_rows(np.concatenate(rows, axis=0))
            with self._cache_lock:
                self.text_cache_misses += len(missing)
                for t, e in zip(missing, new):
                    e = e.copy()
                    e.setflags(write=False)
                    found[t] = e
                    if self.text_cache_size:
                        self._text_cache[t] = e
                        self._text_cache.move_to_end(t)
                while len(self._text_cache) > self.text_cache_size:
                    self._text_cache.popitem(last=False)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=True)

    def clear_text_cache(self) -> None:
        with self._cache_lock:
            self._text_cache.clear()


# ---------------------------------------------------------------------------- test encoder

# Colour words the test encoder understands in text (RGB in [0, 1]).
_COLOR_WORDS = {
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "gray": (0.5, 0.5, 0.5),
    "grey": (0.5, 0.5, 0.5),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "orange": (1.0, 0.5, 0.0),
    "purple": (0.5, 0.0, 0.5),
    "brown": (0.6, 0.3, 0.1),
    "pink": (1.0, 0.75, 0.8),
}


class MeanColorEncoder(BaseEncoder):
    """Deterministic, weight-free test encoder (``embed.name: mean_color``); not semantic.

    Image: ``normalise([r, g, b, 1])`` with r, g, b the crop's mean colour in [0, 1] over all its
    pixels (zeroed pixels included), so crop-fusion arithmetic can be checked exactly. Text: the
    same vector for the first colour word in the text ("the red box" -> red), otherwise a
    pseudo-random unit vector seeded by a CRC of the text.
    """

    name = "mean_color"
    dim = 4
    semantic = False

    def __init__(self, batch_size: int = 64, text_cache_size: int = 1024):
        super().__init__(batch_size, text_cache_size)
        self.image_calls = 0
        self.text_calls = 0

    @staticmethod
    def expected(crop: np.ndarray) -> np.ndarray:
        """The embedding of one crop, computed directly (for tests)."""
        rgb = np.asarray(crop, dtype=np.float64).reshape(-1, 3).mean(axis=0) / 255.0
        v = np.concatenate([rgb, [1.0]])
        return (v / np.linalg.norm(v)).astype(np.float32)

    def _encode_image_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        self.image_calls += 1
        means = np.stack([c.reshape(-1, 3).mean(axis=0, dtype=np.float64) / 255.0 for c in crops])
        return np.concatenate([means, np.ones((len(crops), 1))], axis=1)

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        self.text_calls += 1
        out = np.empty((len(texts), self.dim))
        for i, t in enumerate(texts):
            words = [w.strip(".,;:!?\"'()") for w in t.lower().split()]
            color = next((_COLOR_WORDS[w] for w in words if w in _COLOR_WORDS), None)
            if color is not None:
                out[i] = [*color, 1.0]
            else:
                rng = np.random.default_rng(zlib.crc32(t.encode("utf-8")))
                out[i] = rng.standard_normal(self.dim)
        return out


# ---------------------------------------------------------------------------- registry

EncoderFactory = Callable[[EmbedConfig], Encoder]


# The back-ends register themselves here; the package's __init__ imports them. "none" (no
# encoder) is make_encoder's own.
ENCODERS: Registry[EncoderFactory] = Registry("encoder", "embed.name", error=EncoderError, also=("none",))
register_encoder = ENCODERS.register


@register_encoder("mean_color")
def _make_mean_color(cfg: EmbedConfig) -> Encoder:
    return MeanColorEncoder(cfg.batch_size, cfg.text_cache_size)


def available_encoders() -> list[str]:
    return ["none", *ENCODERS.names()]


def make_encoder(cfg: EmbedConfig) -> Encoder | None:
    """Build the encoder named by ``embed.name``; None for ``none``."""
    if cfg.name in ("", "none"):
        return None
    return ENCODERS.create(cfg.name, cfg)
