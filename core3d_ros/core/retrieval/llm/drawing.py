"""The images the VLM steps see: a stored best view framed with its box (verify, orientation),
a top-down plan of a candidate and its anchors (orientation), and their data URLs. OpenCV is
imported on first use."""
from __future__ import annotations

import base64
import math
import threading
from collections import OrderedDict

import numpy as np


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = min(1.0, float(size) / max(h, w, 1))
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return img


def framed_view(view: np.ndarray, size: int) -> np.ndarray:
    """The stored best view (a tight crop of the object's box in its best frame), scaled to fit
    ``size`` with a margin, with the box drawn around it (green) on a grey border: RGB uint8."""
    import cv2

    v = np.asarray(view)
    if v.ndim == 2:
        v = np.repeat(v[:, :, None], 3, axis=2)
    v = np.ascontiguousarray(v[:, :, :3], dtype=np.uint8)
    m = max(4, size // 16)
    v = _fit(v, max(size - 2 * m, 8))
    h, w = v.shape[:2]
    canvas = np.full((h + 2 * m, w + 2 * m, 3), 96, np.uint8)
    canvas[m : m + h, m : m + w] = v
    t = max(2, size // 128)
    cv2.rectangle(canvas, (m - t, m - t), (m + w + t - 1, m + h + t - 1), (0, 255, 0), t)
    return canvas


def data_url(rgb: np.ndarray, fmt: str = "jpeg") -> str:
    """A base64 data URL of an RGB uint8 image (OpenCV encoder)."""
    import cv2

    ext, mime = (".png", "image/png") if fmt == "png" else (".jpg", "image/jpeg")
    params = [int(cv2.IMWRITE_JPEG_QUALITY), 85] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError("image encoding failed")
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


class ViewCache:
    """Encoded best views (framed, data URL), keyed by the view array itself: a snapshot's
    arrays do not change, and holding a reference keeps the identity key valid. LRU-bounded."""

    def __init__(self, size: int = 256):
        self.size = size
        self._d: "OrderedDict[tuple, tuple[np.ndarray, str]]" = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def url(self, view: np.ndarray, size: int, fmt: str) -> str:
        key = (id(view), size, fmt)
        with self._lock:
            hit = self._d.get(key)
            if hit is not None and hit[0] is view:
                self._d.move_to_end(key)
                return hit[1]
        url = data_url(framed_view(view, size), fmt)
        with self._lock:
            self._d[key] = (view, url)
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return url


def plan_view(g, row: int, anchor_rows: list[int], anchor_ids: list[int], yaws: np.ndarray, size: int) -> np.ndarray:
    """Top-down plan around one candidate (horizontal-basis coordinates, +h2 up): its footprint
    (green), numbered yaw-grid arrows, the anchors' footprints (red, labelled A<id>). RGB uint8."""
    import cv2

    rows = [row, *anchor_rows]
    c0 = g.foot_center[row]
    corners = []
    for r in rows:
        ax, half = g.foot_axes[r], g.foot_half[r]
        cs = [g.foot_center[r] + sx * half[0] * ax[0] + sy * half[1] * ax[1] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        corners.append(np.array(cs))
    reach = max(float(np.max(np.abs(np.concatenate(corners) - c0))), 0.5) * 1.15
    img = np.full((size, size, 3), 255, np.uint8)
    scale = (size / 2 - 4) / reach

    def px(p: np.ndarray) -> tuple[int, int]:
        d = (p - c0) * scale
        return int(round(size / 2 + d[0])), int(round(size / 2 - d[1]))

    for k, (r, cs) in enumerate(zip(rows, corners)):
        colour = (0, 160, 0) if k == 0 else (220, 0, 0)
        cv2.polylines(img, [np.array([px(p) for p in cs], np.int32)], True, colour, 2)
        if k:
            cv2.putText(img, f"A{anchor_ids[k - 1]}", px(g.foot_center[r]), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    arrow = 0.42 * size
    for b, yaw in enumerate(yaws):
        d = np.array([math.cos(yaw), -math.sin(yaw)])
        tip = (int(round(size / 2 + d[0] * arrow)), int(round(size / 2 + d[1] * arrow)))
        cv2.arrowedLine(img, (size // 2, size // 2), tip, (0, 0, 255), 1, cv2.LINE_AA, tipLength=0.08)
        lab = (int(round(size / 2 + d[0] * (arrow + 9))) - 4, int(round(size / 2 + d[1] * (arrow + 9))) + 4)
        cv2.putText(img, str(b), lab, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1, cv2.LINE_AA)
    return img
