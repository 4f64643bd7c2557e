"""sensor_msgs/CompressedImage <-> numpy: image_transport "compressed" (jpeg / png colour) and
"compressedDepth" (png depth). OpenCV is imported on use."""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ImageError
from .headers import make_header

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_COMPRESSED_DEPTH_HEADER = 12  # int32 format + float32 depthParam[2], little-endian


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """CompressedImage (jpeg / png, image_transport "compressed") -> HxWx3 uint8 RGB."""
    import cv2

    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"compressed image is empty (format {msg.format!r})")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.size == 0:
        raise ImageError(f"compressed image (format {msg.format!r}, {data.size} B) is not a decodable image")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def compressed_depth_to_raw(msg: Any) -> tuple[np.ndarray, str]:
    """CompressedImage from image_transport "compressedDepth" -> (raw depth, encoding).

    ``format`` is ``"<encoding>; compressedDepth [png]"``; ``data`` is a 12-byte header
    (format, depthParam[2]) and a PNG: 16UC1 depth as is, or for 32FC1 the quantised inverse
    depth ``q = a / z + b`` (0 = no reading), decoded as ``z = a / (q - b)``. The RVL variant is
    refused (ImageError), as are buffers that are not such an image.
    """
    import cv2

    fmt = str(msg.format)
    parts = [p.strip() for p in fmt.split(";")]
    encoding = parts[0] if parts else ""
    if len(parts) < 2 or not parts[1].startswith("compressedDepth"):
        raise ImageError(f"depth CompressedImage format {fmt!r} is not '<encoding>; compressedDepth ...'")
    if encoding not in ("16UC1", "32FC1"):
        raise ImageError(f"compressedDepth encoding {encoding!r} is not 16UC1 or 32FC1")
    if "rvl" in parts[1].lower():
        raise ImageError("compressedDepth RVL is not supported; use the png variant")
    raw = bytes(msg.data)
    if len(raw) <= _COMPRESSED_DEPTH_HEADER or raw[_COMPRESSED_DEPTH_HEADER : _COMPRESSED_DEPTH_HEADER + 8] != _PNG_MAGIC:
        raise ImageError(f"compressedDepth data ({len(raw)} B) is not a header followed by a PNG")
    params = np.frombuffer(raw[4:12], dtype="<f4")
    png = np.frombuffer(raw[_COMPRESSED_DEPTH_HEADER:], dtype=np.uint8)
    q = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    if q is None or q.ndim != 2 or q.dtype != np.uint16:
        raise ImageError("compressedDepth PNG does not decode to a 16-bit single-channel image")
    if encoding == "16UC1":
        return q, encoding
    a, b = float(params[0]), float(params[1])
    if not (np.isfinite(a) and np.isfinite(b)) or a == 0:
        raise ImageError(f"compressedDepth 32FC1 quantisation parameters are unusable ({a}, {b})")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(q > 0, a / (q.astype(np.float32) - np.float32(b)), np.nan).astype(np.float32)
    return z, encoding


def depth_to_compressed(depth: np.ndarray, encoding: str = "16UC1", *, quant: float = 100.0, max_depth: float = 10.0, **header: Any) -> Any:
    """HxW depth -> CompressedImage in the compressedDepth png layout (tests, players)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    depth = np.asarray(depth)
    if encoding == "16UC1":
        q = depth.astype(np.uint16)
        a = b = 0.0
    elif encoding == "32FC1":
        a = quant * (quant + 1.0)
        b = 1.0 - a / max_depth
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(np.isfinite(depth) & (depth > 0), a / depth + b, 0.0)
        q = np.clip(np.rint(inv), 0, 65535).astype(np.uint16)
    else:
        raise ImageError(f"compressedDepth encoding {encoding!r} is not 16UC1 or 32FC1")
    ok, png = cv2.imencode(".png", q)
    if not ok:
        raise ImageError("PNG encoding failed")
    msg = CompressedImage()
    if header:
        msg.header = make_header(header.get("frame_id", ""), header.get("stamp", 0.0))
    msg.format = f"{encoding}; compressedDepth png"
    head = np.array([0], dtype="<i4").tobytes() + np.array([a, b], dtype="<f4").tobytes()
    msg.data = head + png.tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", **header: Any) -> Any:
    """HxWx3 RGB -> CompressedImage (jpeg or png), as image_transport "compressed" sends."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]))
    if not ok:
        raise ImageError(f"{fmt} encoding failed")
    msg = CompressedImage()
    if header:
        msg.header = make_header(header.get("frame_id", ""), header.get("stamp", 0.0))
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = buf.tobytes()
    return msg
