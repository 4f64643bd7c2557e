"""Lens undistortion of RGB-D frames from CameraInfo's distortion model (OpenCV), maps cached.

Supported: ``plumb_bob`` (k1 k2 p1 p2 k3), ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6)
and ``equidistant`` (fisheye k1..k4). Images are remapped onto the same intrinsic matrix K
(colour bilinear; depth and instance ids nearest, so no depth is invented across edges). All-zero
coefficients (rectified ``image_rect`` topics) are a no-op. Anything else is refused with a
FrameError reason: ``bad_distortion`` (NaN/inf coefficients, too few of them) or
``unsupported_distortion`` (an unknown model with non-zero coefficients): never silently ignored.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .camera import CameraIntrinsics
from .frame import FrameError

MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


class Undistorter:
    """Undistort colour, depth (metres) and instance images; remap tables cached per camera."""

    def __init__(self, max_cached: int = 4):
        self.max_cached = int(max_cached)
        self._maps: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.built = 0  # remap tables computed (a test checks the cache)

    @staticmethod
    def coefficients(model: str, d: Sequence[float]) -> np.ndarray | None:
        """Validated coefficients, or None when there is nothing to undo."""
        d = np.asarray(list(d), dtype=np.float64)
        if d.size and not np.all(np.isfinite(d)):
            raise FrameError("bad_distortion", f"camera info distortion ({model or 'no model'}) has NaN/inf: {d.tolist()}")
        if not d.size or not np.any(d):
            return None
        if model not in MODELS:
            raise FrameError(
                "unsupported_distortion",
                f"distortion model {model!r} with non-zero coefficients is not supported (supported: {sorted(MODELS)})",
            )
        n = MODELS[model]
        if d.size < n:
            raise FrameError("bad_distortion", f"{model} needs {n} coefficients, got {d.size}")
        return d[:n]

    def _remap_tables(self, intr: CameraIntrinsics, model: str, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        key = (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy, model, tuple(d.tolist()))
        with self._lock:
            maps = self._maps.get(key)
            if maps is not None:
                self._maps.move_to_end(key)
                return maps
        K = intr.matrix.astype(np.float64)
        size = (int(intr.width), int(intr.height))
        if model == "equidistant":
            m1, m2 = cv2.fisheye.initUndistortRectifyMap(K, d.reshape(4, 1), np.eye(3), K, size, cv2.CV_32FC1)
        else:
            m1, m2 = cv2.initUndistortRectifyMap(K, d, None, K, size, cv2.CV_32FC1)
        with self._lock:
            self._maps[key] = (m1, m2)
            self.built += 1
            while len(self._maps) > self.max_cached:
                self._maps.popitem(last=False)
        return m1, m2

    def apply(
        self,
        intr: CameraIntrinsics,
        model: str,
        d: Sequence[float],
        rgb: np.ndarray,
        depth: np.ndarray,
        instances: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Undistorted (rgb, depth, instances); the inputs unchanged when there is no distortion."""
        import cv2

        coeffs = self.coefficients(model, d)
        if coeffs is None:
            return rgb, depth, instances
        m1, m2 = self._remap_tables(intr, model, coeffs)
        if rgb.shape[:2] != m1.shape or depth.shape[:2] != m1.shape:
            raise FrameError(
                "size_mismatch",
                f"images {rgb.shape[:2]} / {depth.shape[:2]} do not match the camera info {m1.shape}",
            )
        rgb_u = cv2.remap(rgb, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        depth_u = _nearest(depth, m1, m2)
        inst_u = _nearest(instances, m1, m2) if instances is not None else None
        return rgb_u, depth_u, inst_u


def _nearest(img: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Nearest-neighbour remap by integer indexing (exact for any dtype); outside -> 0."""
    h, w = img.shape[:2]
    xi = np.rint(m1).astype(np.int64)
    yi = np.rint(m2).astype(np.int64)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    out = np.zeros_like(img)
    out[ok] = img[yi[ok], xi[ok]]
    return out
