"""sensor_msgs/Image <-> numpy arrays (colour, depth, instance ids), without cv_bridge.

Images follow REP 118 and sensor_msgs/Image: rows of ``step`` bytes (which may include padding
after ``width * channels * itemsize`` bytes), multi-byte samples in the byte order given by
``is_bigendian``. Everything here is numpy-vectorised: no per-pixel loops.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from .errors import ImageError
from .headers import make_header

# encoding -> (dtype, channels)
COLOR_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
}
DEPTH_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
# Per-pixel instance ids (simulators' instance segmentation; 0 = no instance).
INSTANCE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "32SC1": (np.dtype(np.int32), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "mono8": (np.dtype(np.uint8), 1),
}
IMAGE_ENCODINGS = {**COLOR_ENCODINGS, **DEPTH_ENCODINGS, **INSTANCE_ENCODINGS}


def image_to_array(msg: Image, allowed: Iterable[str] | None = None) -> np.ndarray:
    """Pixel array of an Image: HxW for one channel, HxWxC otherwise, native byte order.

    Honours ``step`` (row padding is dropped) and ``is_bigendian``. Raises ImageError for an
    unknown encoding, an empty image, ``step`` shorter than a row, or a buffer whose length is
    not ``height * step``.
    """
    encoding = msg.encoding
    known = IMAGE_ENCODINGS if allowed is None else {e: IMAGE_ENCODINGS[e] for e in allowed}
    if encoding not in known:
        raise ImageError(f"unsupported image encoding {encoding!r}; expected one of {sorted(known)}")
    dtype, channels = known[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image ({width}x{height})")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError(
            f"step {step} is shorter than one row of {width} px x {channels} ch x "
            f"{dtype.itemsize} B = {row_bytes} B ({encoding})"
        )
    size = len(msg.data)
    if size != height * step:
        raise ImageError(
            f"image data has {size} bytes, expected height*step = {height}*{step} = {height * step}"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    if dtype.itemsize > 1:
        wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
        arr = np.ascontiguousarray(buf).view(wire).astype(dtype, copy=False)
    else:
        arr = buf
    arr = arr.reshape(height, width, channels) if channels > 1 else arr.reshape(height, width)
    # Own the memory: the message buffer may be reused or freed by the middleware.
    return np.array(arr, dtype=dtype, copy=True)


def image_to_rgb(msg: Image) -> np.ndarray:
    """Colour Image (rgb8/bgr8/rgba8/bgra8/mono8) -> HxWx3 uint8 RGB."""
    arr = image_to_array(msg, COLOR_ENCODINGS)
    encoding = msg.encoding
    if encoding == "mono8":
        return np.repeat(arr[:, :, None], 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.ascontiguousarray(arr[:, :, :3])


def image_to_depth_raw(msg: Image) -> np.ndarray:
    """Depth Image (16UC1/mono16/32FC1) -> HxW raw array (uint16 units or float32 metres).

    Feed the result with ``msg.encoding`` to ``core.camera.decode_depth``.
    """
    return image_to_array(msg, DEPTH_ENCODINGS)


def image_to_instances(msg: Image) -> np.ndarray:
    """Instance-id Image (32SC1/16UC1/mono16/mono8) -> HxW int32 (0 = no instance)."""
    ids = image_to_array(msg, INSTANCE_ENCODINGS).astype(np.int32)
    if np.any(ids < 0):
        raise ImageError("instance ids must be >= 0")
    return ids


def instances_to_image(ids: np.ndarray, **kwargs: Any) -> Image:
    """HxW integer instance ids -> 32SC1 Image."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ImageError(f"instance ids must be an HxW integer array, got {ids.shape} {ids.dtype}")
    return array_to_image(ids.astype(np.int32), "32SC1", **kwargs)


def array_to_image(
    array: np.ndarray,
    encoding: str,
    *,
    stamp: Time | float = 0.0,
    frame_id: str = "",
    step: int | None = None,
    bigendian: bool = False,
) -> Image:
    """numpy array (HxW or HxWxC, already in ``encoding``'s channel order) -> Image.

    ``step`` larger than a row pads every row with zero bytes; ``bigendian`` writes multi-byte
    samples big-endian. Used by the player and by tests of the decoding side.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ImageError(f"unsupported image encoding {encoding!r}; expected one of {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ImageError(f"{encoding} needs {channels} channel(s), got array of shape {np.shape(array)}")
    if arr.dtype != dtype:
        raise ImageError(f"{encoding} needs dtype {dtype}, got {arr.dtype}")
    height, width = arr.shape[:2]
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageError(f"step {step} is shorter than a row ({row_bytes} B)")
    wire = dtype.newbyteorder(">" if bigendian else "<")
    rows = np.ascontiguousarray(arr.astype(wire, copy=False)).view(np.uint8).reshape(height, row_bytes)
    if step > row_bytes:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = rows
        rows = padded
    msg = Image()
    msg.header = make_header(frame_id, stamp)
    msg.height, msg.width = int(height), int(width)
    msg.encoding = encoding
    msg.is_bigendian = int(bool(bigendian))
    msg.step = step
    msg.data = rows.tobytes()
    return msg


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", **kwargs: Any) -> Image:
    """HxWx3 uint8 RGB -> colour Image in any of COLOR_ENCODINGS (alpha = 255, mono = luma)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"colour must be HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if encoding == "rgb8":
        arr = rgb
    elif encoding == "bgr8":
        arr = rgb[:, :, ::-1]
    elif encoding in ("rgba8", "bgra8"):
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        arr = np.concatenate([rgb if encoding == "rgba8" else rgb[:, :, ::-1], alpha], axis=2)
    elif encoding == "mono8":
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        arr = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported colour encoding {encoding!r}; expected one of {sorted(COLOR_ENCODINGS)}")
    return array_to_image(arr, encoding, **kwargs)


def depth_to_image(
    depth: np.ndarray, encoding: str = "32FC1", *, depth_scale: float = 1000.0, **kwargs: Any
) -> Image:
    """HxW float32 metres (0 = invalid) -> 32FC1 metres, or 16UC1/mono16 in 1/depth_scale m units.

    Integer encodings round to the nearest unit, clip at 65535 and store invalid pixels as 0.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ImageError(f"depth must be HxW, got shape {depth.shape}")
    if encoding == "32FC1":
        arr = depth
    elif encoding in ("16UC1", "mono16"):
        scaled = np.where(np.isfinite(depth) & (depth > 0), depth * np.float32(depth_scale), 0.0)
        arr = np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)
    else:
        raise ImageError(f"unsupported depth encoding {encoding!r}; expected one of {sorted(DEPTH_ENCODINGS)}")
    return array_to_image(arr, encoding, **kwargs)
