"""Rigid transforms for camera extrinsics (REP 103 / REP 105), without ROS.

Conventions: a 4x4 matrix ``T_a_b`` maps points in frame ``b`` to frame ``a`` (it is the pose of
``b`` in ``a``, what TF calls the transform ``a <- b``, ``lookup_transform(a, b)``). A robot
reports the pose of its base in the map (``T_map_base``, from odometry or a pose topic), and its
URDF / static TF gives the camera optical frame in the base (``T_base_cam``); the mapper needs
the optical frame in the map: ``T_map_cam = T_map_base @ T_base_cam``. Optical frames follow
REP 103: z forward, x right, y down.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class TransformError(ValueError):
    """A transform that is not a finite rigid motion (bad quaternion, NaN, wrong length)."""


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a quaternion (x, y, z, w); normalised first, refused when ~zero or NaN."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not np.all(np.isfinite(q)) or n < 1e-9:
        raise TransformError(f"quaternion {q.tolist()} is zero or not finite")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def xyzquat_to_matrix(values: Sequence[float]) -> np.ndarray:
    """4x4 transform from 7 numbers: x y z (metres) qx qy qz qw."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.shape != (7,):
        raise TransformError(f"expected 7 numbers (x y z qx qy qz qw), got {v.size}")
    if not np.all(np.isfinite(v[:3])):
        raise TransformError(f"translation {v[:3].tolist()} is not finite")
    T = np.eye(4)
    T[:3, :3] = quaternion_matrix(*v[3:])
    T[:3, 3] = v[:3]
    return T


def check_rigid(T: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Return ``T`` as float64 4x4 if it is a finite rigid motion; else TransformError."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise TransformError("transform is not a finite 4x4 matrix")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=tol) or abs(np.linalg.det(R) - 1.0) > tol:
        raise TransformError("rotation part is not orthonormal with det +1")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=tol):
        raise TransformError("last row is not [0 0 0 1]")
    return T


def camera_pose(T_map_base: np.ndarray, T_base_cam: np.ndarray | None) -> np.ndarray:
    """Pose of the camera optical frame in the map: ``T_map_base @ T_base_cam`` (None: identity)."""
    T_map_base = check_rigid(T_map_base)
    if T_base_cam is None:
        return T_map_base
    return T_map_base @ check_rigid(T_base_cam)


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (R^T, -R^T t)."""
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out
