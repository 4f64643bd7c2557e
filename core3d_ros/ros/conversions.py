"""Conversions between ROS 2 messages and core3d types, without cv_bridge.

Images follow REP 118 and sensor_msgs/Image: rows of ``step`` bytes (which may include padding
after ``width * channels * itemsize`` bytes), multi-byte samples in the byte order given by
``is_bigendian``. Everything here is numpy-vectorised: no per-pixel or per-point Python loops.

The custom core3d messages (``core3d.msg``) are imported lazily, so the standard-message
conversions work before the package's interfaces are built.
"""
from __future__ import annotations

import colorsys
import math
from typing import Any, Iterable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..core.camera import CameraIntrinsics
from ..core.objects import MapSnapshot, ObjectInfo, OrientedBox


class ConversionError(ValueError):
    """A message that cannot be converted."""


class ImageError(ConversionError):
    """A sensor_msgs/Image whose encoding, size or buffer is unusable."""


class CameraInfoError(ConversionError):
    """A sensor_msgs/CameraInfo without a usable intrinsic matrix."""


class PoseError(ConversionError):
    """A pose or transform with a zero/NaN quaternion or a non-finite position."""


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


# --------------------------------------------------------------------------- time


def to_time(seconds: float) -> Time:
    """builtin_interfaces/Time from float seconds (nanoseconds rounded, carried into seconds)."""
    seconds = float(seconds)
    if not math.isfinite(seconds):
        raise ValueError(f"time must be finite, got {seconds}")
    total_ns = int(round(seconds * 1e9))
    sec, nanosec = divmod(total_ns, 1_000_000_000)
    return Time(sec=int(sec), nanosec=int(nanosec))


def to_seconds(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def make_header(frame_id: str, stamp: Time | float) -> Header:
    if not isinstance(stamp, Time):
        stamp = to_time(stamp)
    return Header(stamp=stamp, frame_id=frame_id)


# --------------------------------------------------------------------------- images


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


# sensor_msgs/CompressedImage (image_transport "compressed" and "compressedDepth").
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


def camera_info_distortion(msg: CameraInfo) -> tuple[str, list[float]]:
    """(distortion_model, d) of a CameraInfo, for core.undistort.Undistorter."""
    return str(msg.distortion_model), [float(v) for v in msg.d]


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


# --------------------------------------------------------------------------- camera info


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """CameraInfo -> CameraIntrinsics from ``k`` (row-major 3x3) and width/height.

    Distortion is not handled here: the node undistorts images with ``d`` and
    ``distortion_model`` (core.undistort.Undistorter) or refuses the frame.
    """
    K = np.asarray(msg.k, dtype=np.float64)
    if K.shape != (9,):
        raise CameraInfoError(f"camera info k must have 9 values, got {K.shape}")
    if not np.any(K):
        raise CameraInfoError("camera info has an all-zero K (camera not calibrated)")
    try:
        intr = CameraIntrinsics.from_matrix(K.reshape(3, 3), msg.width, msg.height)
        intr.validate()
    except ValueError as e:
        raise CameraInfoError(f"camera info unusable: {e}") from None
    return intr


def intrinsics_to_camera_info(intr: CameraIntrinsics, *, stamp: Time | float = 0.0, frame_id: str = "") -> CameraInfo:
    msg = CameraInfo()
    msg.header = make_header(frame_id, stamp)
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    K = intr.matrix
    msg.k = [float(v) for v in K.ravel()]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = [float(v) for v in P.ravel()]
    return msg


# --------------------------------------------------------------------------- poses


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit rotation matrix of a quaternion; normalises, rejects zero/NaN (PoseError)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        raise PoseError(f"quaternion has non-finite components {q.tolist()}")
    n = float(np.linalg.norm(q))
    if n < 1e-9:
        raise PoseError("quaternion has zero norm")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix, w >= 0 (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        w, x, y, z = (R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        w, x, y, z = (R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        w, x, y, z = (R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def _rigid(translation: Sequence[float], rotation: Any) -> np.ndarray:
    t = np.array(translation, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise PoseError(f"position has non-finite components {t.tolist()}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation.x, rotation.y, rotation.z, rotation.w)
    T[:3, 3] = t
    return T


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 float64."""
    return _rigid((pose.position.x, pose.position.y, pose.position.z), pose.orientation)


def transform_to_matrix(transform: Transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64."""
    t = transform.translation
    return _rigid((t.x, t.y, t.z), transform.rotation)


def pose_message_to_matrix(msg: Any) -> np.ndarray:
    """PoseStamped, PoseWithCovarianceStamped, Odometry or TransformStamped -> 4x4 float64."""
    if hasattr(msg, "transform"):  # TransformStamped
        return transform_to_matrix(msg.transform)
    pose = msg.pose
    if hasattr(pose, "pose"):  # Odometry / PoseWithCovarianceStamped: PoseWithCovariance
        pose = pose.pose
    return pose_to_matrix(pose)


def matrix_to_pose(T: np.ndarray) -> Pose:
    T = np.asarray(T, dtype=np.float64)
    x, y, z, w = matrix_to_quaternion(T[:3, :3])
    return Pose(
        position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        orientation=Quaternion(x=x, y=y, z=z, w=w),
    )


def matrix_to_transform(T: np.ndarray) -> Transform:
    p = matrix_to_pose(T)
    return Transform(translation=Vector3(x=p.position.x, y=p.position.y, z=p.position.z), rotation=p.orientation)


# --------------------------------------------------------------------------- colours


def instance_color(object_id: int) -> tuple[int, int, int]:
    """Deterministic, well-separated RGB colour (0-255) for an instance id (golden-ratio hues)."""
    k = int(object_id)
    hue = (k * 0.6180339887498949) % 1.0
    sat = 0.55 + 0.35 * ((k * 7) % 3) / 2.0
    val = 0.95 - 0.25 * ((k * 5) % 2)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _rgba(rgb: Sequence[float], alpha: float = 1.0, scale: float = 255.0) -> ColorRGBA:
    return ColorRGBA(r=float(rgb[0]) / scale, g=float(rgb[1]) / scale, b=float(rgb[2]) / scale, a=float(alpha))


# --------------------------------------------------------------------------- point clouds

CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
_CLOUD_FIELDS = (
    ("x", 0, PointField.FLOAT32),
    ("y", 4, PointField.FLOAT32),
    ("z", 8, PointField.FLOAT32),
    ("rgb", 12, PointField.FLOAT32),  # packed 0x00RRGGBB read as float32 (PCL / RViz convention)
)


def points_to_cloud(
    points: np.ndarray, colors: np.ndarray | None = None, *, frame_id: str = "", stamp: Time | float = 0.0
) -> PointCloud2:
    """(N, 3) points + optional (N, 3) uint8 RGB -> unorganised PointCloud2 (x, y, z, rgb)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    n = len(pts)
    rec = np.empty(n, dtype=CLOUD_DTYPE)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is None:
        rec["rgb"] = 0x00FFFFFF
    else:
        c = np.asarray(colors).reshape(-1, 3).astype(np.uint32)
        if len(c) != n:
            raise ValueError(f"{len(c)} colours for {n} points")
        rec["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    return records_to_cloud(rec, frame_id=frame_id, stamp=stamp)


def records_to_cloud(rec: np.ndarray, *, frame_id: str = "", stamp: Time | float = 0.0) -> PointCloud2:
    """(N,) CLOUD_DTYPE records -> unorganised PointCloud2 (x, y, z, rgb)."""
    n = len(rec)
    msg = PointCloud2()
    msg.header = make_header(frame_id, stamp)
    msg.height, msg.width = 1, n
    msg.fields = [PointField(name=name, offset=off, datatype=dt, count=1) for name, off, dt in _CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step = CLOUD_DTYPE.itemsize
    msg.row_step = CLOUD_DTYPE.itemsize * n
    msg.is_dense = bool(all(np.isfinite(rec[axis]).all() for axis in ("x", "y", "z")))
    msg.data = rec.tobytes()
    return msg


def cloud_to_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 with float32 x/y/z (and optionally packed rgb) -> ((N, 3) float32, (N, 3) uint8 or None)."""
    fields = {f.name: f for f in msg.fields}
    for name in ("x", "y", "z"):
        if name not in fields or fields[name].datatype != PointField.FLOAT32:
            raise ConversionError(f"point cloud needs float32 field {name!r}")
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = ["x", "y", "z"], [order + "f4"] * 3, [fields[n].offset for n in "xyz"]
    if "rgb" in fields:
        names.append("rgb")
        formats.append(order + "u4")
        offsets.append(fields["rgb"].offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(msg.point_step)})
    n = int(msg.width) * int(msg.height)
    if len(msg.data) < n * msg.point_step:
        raise ConversionError(f"point cloud data has {len(msg.data)} bytes, expected {n * msg.point_step}")
    rec = np.frombuffer(msg.data, dtype=dtype, count=n)
    pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    rgb = None
    if "rgb" in fields:
        v = rec["rgb"].astype(np.uint32)
        rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=1).astype(np.uint8)
    return pts, rgb


def snapshot_to_cloud(snapshot: MapSnapshot, *, frame_id: str, stamp: Time | float = 0.0, step: int = 1) -> PointCloud2:
    """All objects' voxel centres (every ``step``-th of each), coloured by instance (a
    deterministic colour per id)."""
    return records_to_cloud(cloud_records([object_cloud(o, step) for o in snapshot.objects]), frame_id=frame_id, stamp=stamp)


def object_cloud(obj: ObjectInfo, step: int = 1) -> np.ndarray:
    """Every ``step``-th voxel centre of one object, in its instance colour, as CLOUD_DTYPE records."""
    pts = np.asarray(obj.points, np.float32).reshape(-1, 3)[::step]
    rec = np.empty(len(pts), CLOUD_DTYPE)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    r, g, b = instance_color(obj.id)
    rec["rgb"] = (r << 16) | (g << 8) | b
    return rec


def cloud_records(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The records of several objects, in order, as one array."""
    return np.concatenate(parts) if len(parts) else np.zeros(0, CLOUD_DTYPE)


# --------------------------------------------------------------------------- objects


def _core3d_msg() -> Any:
    try:
        import core3d.msg as m
    except ImportError as e:  # pragma: no cover - depends on the build
        raise ImportError(
            "core3d.msg is not importable: build the package (colcon) and source its install space"
        ) from e
    return m


def _box_pose(box: OrientedBox) -> Pose:
    R = np.asarray(box.rotation, dtype=np.float64)
    if np.linalg.det(R) < 0:  # keep it a proper rotation
        R = R.copy()
        R[:, 2] = -R[:, 2]
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(box.center, dtype=np.float64)
    return matrix_to_pose(T)


def object_to_msg(obj: ObjectInfo) -> Any:
    """ObjectInfo -> core3d/Object."""
    m = _core3d_msg()
    c = np.asarray(obj.centroid, dtype=np.float64)
    e = np.asarray(obj.box.extent, dtype=np.float64)
    msg = m.Object()
    msg.id = int(obj.id)
    msg.label = str(obj.label or "")
    msg.label_score = float(obj.label_score or 0.0)
    msg.centroid = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
    msg.box_pose = _box_pose(obj.box)
    msg.box_size = Vector3(x=float(e[0]), y=float(e[1]), z=float(e[2]))
    msg.color = _rgba(obj.mean_color, 1.0, scale=1.0)
    msg.num_voxels = int(obj.num_voxels)
    msg.num_observations = int(obj.num_observations)
    msg.first_seen = to_time(obj.first_seen)
    msg.last_seen = to_time(obj.last_seen)
    return msg


def snapshot_to_object_array(snapshot: MapSnapshot, *, frame_id: str, stamp: Time | float = 0.0) -> Any:
    """MapSnapshot -> core3d/ObjectArray (objects in snapshot order)."""
    m = _core3d_msg()
    msg = m.ObjectArray()
    msg.header = make_header(frame_id, stamp)
    msg.objects = [object_to_msg(o) for o in snapshot.objects]
    return msg


# --------------------------------------------------------------------------- markers

# Corners of the unit cube (+-0.5) and the 12 edges between them, for LINE_LIST boxes.
_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]])
_MARKER_ID_MASK = 0x7FFFFFFF  # marker ids are int32


def box_corners(box: OrientedBox) -> np.ndarray:
    """(8, 3) corners of an oriented box in the world frame."""
    return (_CORNERS * np.asarray(box.extent, np.float64)) @ np.asarray(box.rotation, np.float64).T + np.asarray(
        box.center, np.float64
    )


def _box_marker(
    obj: ObjectInfo, *, ns: str, header: Header, style: str, rgba: ColorRGBA, line_width: float
) -> Marker:
    mk = Marker(header=header, ns=ns, id=int(obj.id) & _MARKER_ID_MASK, action=Marker.ADD)
    mk.color = rgba
    if style == "cube":
        mk.type = Marker.CUBE
        mk.pose = _box_pose(obj.box)
        e = np.maximum(np.asarray(obj.box.extent, np.float64), 1e-3)
        mk.scale = Vector3(x=float(e[0]), y=float(e[1]), z=float(e[2]))
    elif style == "line_list":
        mk.type = Marker.LINE_LIST
        mk.pose.orientation.w = 1.0
        mk.scale.x = float(line_width)
        ends = box_corners(obj.box)[_EDGES.ravel()]
        mk.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in ends]
    else:
        raise ValueError(f"unknown box marker style {style!r}; expected 'line_list' or 'cube'")
    return mk


def _text_marker(obj: ObjectInfo, text: str, *, ns: str, header: Header, height: float) -> Marker:
    mk = Marker(header=header, ns=ns, id=int(obj.id) & _MARKER_ID_MASK, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    corners = box_corners(obj.box)
    top = float(corners[:, 2].max()) if len(corners) else 0.0
    c = np.asarray(obj.box.center, np.float64)
    mk.pose.position = Point(x=float(c[0]), y=float(c[1]), z=top + height)
    mk.pose.orientation.w = 1.0
    mk.scale.z = float(height)
    mk.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    mk.text = text
    return mk


def delete_all_marker(header: Header) -> Marker:
    return Marker(header=header, action=Marker.DELETEALL)


def snapshot_to_markers(
    snapshot: MapSnapshot,
    *,
    frame_id: str,
    stamp: Time | float = 0.0,
    style: str = "line_list",
    line_width: float = 0.01,
    text_height: float = 0.08,
    ns: str = "core3d",
) -> MarkerArray:
    """DELETEALL, then per object a box (``{ns}/boxes``) and an "id label" text (``{ns}/labels``).

    Marker ids equal object ids, so an object keeps its markers from one publication to the next;
    the leading DELETEALL removes markers of objects that left the map (merged or cleared).
    """
    header = make_header(frame_id, stamp)
    markers = [delete_all_marker(header)]
    for obj in snapshot.objects:
        markers.extend(object_markers(obj, header, style=style, line_width=line_width, text_height=text_height, ns=ns))
    return MarkerArray(markers=markers)


def object_markers(
    obj: ObjectInfo, header: Header, *, style: str = "line_list", line_width: float = 0.01,
    text_height: float = 0.08, ns: str = "core3d",
) -> list[Marker]:
    """One object's box (``{ns}/boxes``) and "id label" text (``{ns}/labels``); ids = object id."""
    rgba = _rgba(instance_color(obj.id), 0.9)
    text = f"{obj.id} {obj.label}".strip()
    return [
        _box_marker(obj, ns=f"{ns}/boxes", header=header, style=style, rgba=rgba, line_width=line_width),
        _text_marker(obj, text, ns=f"{ns}/labels", header=header, height=text_height),
    ]


def delete_object_markers(object_id: int, header: Header, ns: str = "core3d") -> list[Marker]:
    """DELETE of the box and label that object_markers made for ``object_id``."""
    mid = int(object_id) & _MARKER_ID_MASK
    return [Marker(header=header, ns=f"{ns}/{kind}", id=mid, action=Marker.DELETE) for kind in ("boxes", "labels")]


def query_markers(
    hits: Sequence[tuple[ObjectInfo, float]],
    *,
    frame_id: str,
    stamp: Time | float = 0.0,
    ns: str = "core3d_query",
    text_height: float = 0.1,
) -> MarkerArray:
    """Highlighted boxes for query hits, best first: ``{ns}/boxes`` (translucent cubes, the best
    green, the rest orange), ``{ns}/outlines`` and ``{ns}/labels`` ("#rank label score")."""
    header = make_header(frame_id, stamp)
    markers = [delete_all_marker(header)]
    for rank, (obj, score) in enumerate(hits, start=1):
        rgb = (0.1, 0.9, 0.2) if rank == 1 else (1.0, 0.55, 0.0)
        markers.append(
            _box_marker(obj, ns=f"{ns}/boxes", header=header, style="cube", rgba=_rgba(rgb, 0.35, 1.0), line_width=0.0)
        )
        markers.append(
            _box_marker(
                obj, ns=f"{ns}/outlines", header=header, style="line_list", rgba=_rgba(rgb, 1.0, 1.0), line_width=0.02
            )
        )
        label = f"#{rank} {obj.label or 'object'} {obj.id} ({score:.2f})"
        markers.append(_text_marker(obj, label, ns=f"{ns}/labels", header=header, height=text_height))
    return MarkerArray(markers=markers)


def fill_query_stages(resp: Any, answer: Any, top: ObjectInfo | None, *, stamp: Time | float = 0.0) -> None:
    """Set a core3d/srv/Query response's model-step fields from a QueryAnswer: ``stages``,
    ``stage_status``, ``stage_detail`` (parallel arrays, one entry per step tried), ``reason``,
    and ``top_view`` (rgb8 best view of the top result ``top``, left empty when it has none)."""
    stages = list(getattr(answer, "stages", None) or [])
    resp.stages = [str(s.name) for s in stages]
    resp.stage_status = [str(s.status) for s in stages]
    resp.stage_detail = [str(s.detail) for s in stages]
    resp.reason = str(getattr(answer, "reason", "") or "")
    view = getattr(top, "best_view", None) if top is not None else None
    if view is not None:
        v = np.asarray(view)
        if v.ndim == 3 and v.shape[2] >= 3 and v.dtype == np.uint8 and min(v.shape[:2]) > 0:
            resp.top_view = rgb_to_image(np.ascontiguousarray(v[:, :, :3]), stamp=stamp, frame_id=f"core3d_object_{top.id}")
