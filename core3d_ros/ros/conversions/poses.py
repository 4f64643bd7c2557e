"""geometry_msgs Pose / PoseStamped / PoseWithCovarianceStamped / Odometry / Transform(Stamped)
<-> 4x4 float64 rigid transforms, and an oriented box's pose."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3

from ...core.objects import OrientedBox
from .errors import PoseError


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


def box_pose(box: OrientedBox) -> Pose:
    """Pose of an oriented box (its centre and rotation, made proper when it is a reflection)."""
    R = np.asarray(box.rotation, dtype=np.float64)
    if np.linalg.det(R) < 0:  # keep it a proper rotation
        R = R.copy()
        R[:, 2] = -R[:, 2]
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(box.center, dtype=np.float64)
    return matrix_to_pose(T)
