"""Rigid transforms for camera extrinsics (REP 103 / REP 105), without ROS.

Conventions: a 4x4 matrix ``T_a_b`` maps points in frame ``b`` to frame ``a`` (it is the pose of
``b`` in ``a``, what TF calls the transform ``a <- b``, ``lookup_transform(a, b)``). A robot
reports the pose of its base in the map (``T_map_base``, from odometry or a pose topic), and its
URDF / static TF gives the camera optical frame in the base (``T_base_cam``); the mapper needs
the optical frame in the map: ``T_map_cam = T_map_base @ T_base_cam``. Optical frames follow
REP 103: z forward, x right, y down.
"""
from __future__ import annotations

import math
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


def quaternion_from_matrix(R: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w) of a 3x3 rotation matrix, w >= 0 (Shepperd's method)."""
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


def pose_matrix(translation: Sequence[float], quaternion: Sequence[float]) -> np.ndarray:
    """4x4 transform from a translation (x, y, z) and a quaternion (x, y, z, w), normalised;
    TransformError when the translation is not finite or the quaternion is zero or not finite."""
    t = np.asarray(list(translation), dtype=np.float64)
    if t.shape != (3,):
        raise TransformError(f"expected a translation of 3 numbers, got {t.size}")
    if not np.all(np.isfinite(t)):
        raise TransformError(f"translation {t.tolist()} is not finite")
    T = np.eye(4)
    T[:3, :3] = quaternion_matrix(*quaternion)
    T[:3, 3] = t
    return T


def xyzquat_to_matrix(values: Sequence[float]) -> np.ndarray:
    """4x4 transform from 7 numbers: x y z (metres) qx qy qz qw."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.shape != (7,):
        raise TransformError(f"expected 7 numbers (x y z qx qy qz qw), got {v.size}")
    return pose_matrix(v[:3], v[3:])


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
