"""Instance colours and std_msgs/ColorRGBA."""
from __future__ import annotations

import colorsys
from typing import Sequence

from std_msgs.msg import ColorRGBA


def instance_color(object_id: int) -> tuple[int, int, int]:
    """Deterministic, well-separated RGB colour (0-255) for an instance id (golden-ratio hues)."""
    k = int(object_id)
    hue = (k * 0.6180339887498949) % 1.0
    sat = 0.55 + 0.35 * ((k * 7) % 3) / 2.0
    val = 0.95 - 0.25 * ((k * 5) % 2)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def color_rgba(rgb: Sequence[float], alpha: float = 1.0, scale: float = 255.0) -> ColorRGBA:
    """ColorRGBA of an RGB triple divided by ``scale`` (255 for 0-255 colours, 1 for 0-1)."""
    return ColorRGBA(r=float(rgb[0]) / scale, g=float(rgb[1]) / scale, b=float(rgb[2]) / scale, a=float(alpha))
