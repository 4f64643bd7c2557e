"""Colour words -> scores in [0, 1] for an object's mean colour.

Chromatic colours are scored by circular hue distance to a hue centre (Gaussian fall-off),
gated by saturation and value so that greys and near-black surfaces are not called "red".
Achromatic colours (black, white, gray) use value and saturation only. Brown is a dark,
saturated orange; pink is a light or weakly saturated red/magenta.

All functions are vectorised over (N, 3) float RGB arrays in [0, 1].
"""
from __future__ import annotations

import numpy as np

# canonical colour -> words that mean it (the canonical name is included)
COLOR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "reddish", "crimson", "scarlet", "maroon"),
    "orange": ("orange", "orangish", "orangey"),
    "yellow": ("yellow", "yellowish", "golden", "gold"),
    "green": ("green", "greenish", "olive", "lime"),
    "cyan": ("cyan", "teal", "turquoise", "aqua"),
    "blue": ("blue", "bluish", "navy", "azure"),
    "purple": ("purple", "purplish", "violet", "magenta", "lilac", "lavender"),
    "pink": ("pink", "pinkish", "rose"),
    "brown": ("brown", "brownish", "tan", "chocolate"),
    "beige": ("beige", "cream", "khaki"),
    "black": ("black", "blackish"),
    "white": ("white", "whitish", "ivory"),
    "gray": ("gray", "grey", "greyish", "grayish", "silver", "silvery"),
}

WORD_TO_COLOR: dict[str, str] = {w: c for c, ws in COLOR_SYNONYMS.items() for w in ws}
COLOR_NAMES: tuple[str, ...] = tuple(COLOR_SYNONYMS)

# hue centre (degrees) and Gaussian width (degrees) of chromatic colours
_HUE: dict[str, tuple[float, float]] = {
    "red": (0.0, 14.0),
    "orange": (28.0, 10.0),
    "yellow": (57.0, 11.0),
    "green": (120.0, 32.0),
    "cyan": (182.0, 14.0),
    "blue": (232.0, 24.0),
    "purple": (292.0, 24.0),
    "pink": (338.0, 22.0),
    "brown": (26.0, 16.0),
    "beige": (45.0, 20.0),
}


# colour words that are also common object nouns ("the orange on the table")
NOUN_COLORS: frozenset[str] = frozenset(
    {"orange", "rose", "lime", "olive", "gold", "silver", "chocolate", "cream", "navy", "tan"}
)


def canonical_color(word: str) -> str | None:
    """Canonical colour name for a colour word, or None when the word is not a colour."""
    return WORD_TO_COLOR.get(word.lower())


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1] -> (N, 3) HSV with hue in degrees [0, 360), s and v in [0, 1]."""
    rgb = np.clip(np.asarray(rgb, dtype=np.float64).reshape(-1, 3), 0.0, 1.0)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    mx = rgb.max(axis=1)
    mn = rgb.min(axis=1)
    d = mx - mn
    safe = np.where(d > 1e-12, d, 1.0)
    h = np.where(
        mx == r,
        ((g - b) / safe) % 6.0,
        np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    h = np.where(d > 1e-12, h * 60.0, 0.0) % 360.0
    s = np.where(mx > 1e-12, d / np.where(mx > 1e-12, mx, 1.0), 0.0)
    return np.stack([h, s, mx], axis=1)


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _hue_term(h: np.ndarray, centre: float, width: float) -> np.ndarray:
    dh = np.abs(h - centre) % 360.0
    dh = np.minimum(dh, 360.0 - dh)
    return np.exp(-0.5 * (dh / width) ** 2)


def color_scores(color: str, rgb: np.ndarray) -> np.ndarray:
    """Score in [0, 1] of how well each colour in (N, 3) RGB [0, 1] matches a colour word.

    ``color`` may be any word from COLOR_SYNONYMS; unknown words raise KeyError.
    """
    name = WORD_TO_COLOR.get(color.lower(), color.lower())
    if name not in COLOR_SYNONYMS:
        raise KeyError(f"unknown colour word {color!r}")
    hsv = rgb_to_hsv(rgb)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    if name == "black":
        out = 1.0 - _smoothstep(0.12, 0.32, v)
    elif name == "white":
        out = _smoothstep(0.68, 0.88, v) * (1.0 - _smoothstep(0.12, 0.3, s))
    elif name == "gray":
        out = (1.0 - _smoothstep(0.1, 0.25, s)) * _smoothstep(0.12, 0.3, v) * (1.0 - _smoothstep(0.8, 0.93, v))
    else:
        centre, width = _HUE[name]
        hue = _hue_term(h, centre, width)
        if name == "brown":
            gate = _smoothstep(0.25, 0.45, s) * _smoothstep(0.08, 0.18, v) * (1.0 - _smoothstep(0.55, 0.72, v))
        elif name == "beige":
            gate = _smoothstep(0.04, 0.1, s) * (1.0 - _smoothstep(0.4, 0.55, s)) * _smoothstep(0.6, 0.78, v)
        elif name == "orange":
            gate = _smoothstep(0.35, 0.55, s) * _smoothstep(0.5, 0.72, v)
        elif name == "pink":
            # light red / magenta: moderate saturation and bright, or a bright magenta-red hue
            sat_band = _smoothstep(0.12, 0.22, s) * (1.0 - _smoothstep(0.62, 0.85, s))
            gate = sat_band * _smoothstep(0.55, 0.75, v)
            hot = _hue_term(h, 330.0, 12.0) * _smoothstep(0.4, 0.6, s) * _smoothstep(0.6, 0.8, v)
            return np.clip(np.maximum(hue * gate, hot), 0.0, 1.0)
        elif name == "red":
            # weakly saturated bright reds are pink, not red
            gate = _smoothstep(0.35, 0.55, s) * _smoothstep(0.15, 0.3, v)
        else:
            gate = _smoothstep(0.2, 0.4, s) * _smoothstep(0.15, 0.3, v)
        out = hue * gate
    return np.clip(out, 0.0, 1.0)


def colors_score(colors: list[str] | tuple[str, ...], rgb: np.ndarray) -> np.ndarray:
    """Joint score for several colour words (geometric mean); all ones for no words."""
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    if not colors:
        return np.ones(len(rgb))
    acc = np.ones(len(rgb))
    for c in colors:
        acc = acc * color_scores(c, rgb)
    return acc ** (1.0 / len(colors))


def best_color(rgb: np.ndarray) -> list[str]:
    """Name of the best-matching canonical colour for each row of (N, 3) RGB."""
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    table = np.stack([color_scores(c, rgb) for c in COLOR_NAMES], axis=1)
    return [COLOR_NAMES[i] for i in table.argmax(axis=1)]
