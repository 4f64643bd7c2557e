"""Pinhole camera model, depth decoding and back-projection (OpenCV optical axes).

Conventions used across core3d:
- colour images are HxWx3 uint8 RGB;
- depth images are decoded to HxW float32 metres with 0.0 meaning "invalid";
- poses are 4x4 float64 camera-to-world matrices, camera axes x right, y down, z forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DepthError(ValueError):
    """Depth data that cannot be decoded (wrong dtype/encoding/shape)."""


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_matrix(cls, K: np.ndarray, width: int, height: int) -> "CameraIntrinsics":
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"intrinsic matrix must be 3x3, got {K.shape}")
        return cls(int(width), int(height), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def validate(self) -> None:
        values = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not np.all(np.isfinite(values)) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be finite and positive, got fx={self.fx} fy={self.fy}")


# Encodings as named by sensor_msgs/Image (REP 118).
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


def decode_depth(
    raw: np.ndarray,
    encoding: str | None = None,
    *,
    depth_scale: float = 1000.0,
    min_depth: float = 0.1,
    max_depth: float = 5.0,
) -> np.ndarray:
    """Decode a raw depth image to float32 metres, 0 = invalid.

    Integer images (16UC1 / mono16 / uint16 arrays) are divided by ``depth_scale`` (units per
    metre). Float images (32FC1) are metres already. NaN, inf, non-positive values and readings
    outside [min_depth, max_depth] become 0.
    """
    raw = np.asarray(raw)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim != 2:
        raise DepthError(f"depth must be a single-channel image, got shape {raw.shape}")
    if encoding is None:
        encoding = "32FC1" if raw.dtype.kind == "f" else "16UC1"
    if encoding in ("16UC1", "mono16"):
        if raw.dtype != np.uint16:
            raise DepthError(f"{encoding} depth must be uint16, got {raw.dtype}")
        depth = raw.astype(np.float32) / np.float32(depth_scale)
    elif encoding == "32FC1":
        if raw.dtype.kind != "f":
            raise DepthError(f"32FC1 depth must be floating point, got {raw.dtype}")
        depth = raw.astype(np.float32, copy=True)
    else:
        raise DepthError(f"unsupported depth encoding {encoding!r}; expected one of {DEPTH_ENCODINGS}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(depth) | (depth < min_depth) | (depth > max_depth)
    depth[bad] = 0.0
    return depth


def pixel_grid(intr: CameraIntrinsics, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (v, u) of the sampled grid, as 2-D arrays."""
    v, u = np.mgrid[0 : intr.height : stride, 0 : intr.width : stride]
    return v, u


def sampling_stride(depth: np.ndarray, intr: CameraIntrinsics, spacing: float, max_stride: int = 8) -> int:
    """Largest pixel stride whose samples stay at most ``spacing`` metres apart on surfaces
    facing the camera at the frame's far depth (95th percentile of valid depth)."""
    d = depth[::4, ::4]
    d = d[d > 0]
    if len(d) == 0:
        return 1
    far = float(np.partition(d, int(0.95 * (len(d) - 1)))[int(0.95 * (len(d) - 1))])
    return int(np.clip(np.floor(spacing * min(intr.fx, intr.fy) / far), 1, max_stride))


def backproject(
    depth: np.ndarray,
    intr: CameraIntrinsics,
    pose: np.ndarray | None = None,
    *,
    stride: int = 1,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project valid depth pixels to 3-D points.

    Returns ``(points, flat_index)``: points as (N, 3) float32 in the camera frame, or the world
    frame when ``pose`` (camera-to-world) is given; ``flat_index`` the (N,) row-major pixel index
    of each point in the full-resolution image.
    """
    d = depth[::stride, ::stride]
    valid = d > 0
    if mask is not None:
        valid &= mask[::stride, ::stride]
    vs, us = np.nonzero(valid)
    z = d[vs, us]
    vs = vs * stride
    us = us * stride
    x = (us - intr.cx) * z / intr.fx
    y = (vs - intr.cy) * z / intr.fy
    pts = np.stack([x, y, z], axis=1).astype(np.float32)
    if pose is not None:
        pts = transform_points(pts, pose)
    return pts, (vs * intr.width + us).astype(np.int64)


def transform_points(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 3) points; keeps float32."""
    R = T[:3, :3].astype(np.float32)
    t = T[:3, 3].astype(np.float32)
    # Three broadcast multiply-adds: cheaper than a BLAS call for (N, 3) @ (3, 3), and free of
    # BLAS thread start-up, which dominates on small matrices.
    x, y, z = points[:, 0:1], points[:, 1:2], points[:, 2:3]
    return x * R[:, 0] + y * R[:, 1] + z * R[:, 2] + t


def project(points_world: np.ndarray, intr: CameraIntrinsics, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points into the camera: returns (u, v, z) float arrays (z <= 0 is behind)."""
    world_to_cam = np.linalg.inv(pose)
    pc = transform_points(points_world.astype(np.float32), world_to_cam)
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intr.fx * pc[:, 0] / z + intr.cx
        v = intr.fy * pc[:, 1] / z + intr.cy
    return u, v, z


def is_valid_pose(pose: np.ndarray, tol: float = 1e-3) -> bool:
    """True for a finite 4x4 rigid transform (orthonormal rotation, last row 0 0 0 1)."""
    pose = np.asarray(pose)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        return False
    R = pose[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or np.linalg.det(R) < 0:
        return False
    return bool(np.allclose(pose[3], [0, 0, 0, 1], atol=tol))
