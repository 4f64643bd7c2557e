"""geometry_msgs Pose / PoseStamped / PoseWithCovarianceStamped / Odometry / Transform(Stamped)
<-> 4x4 float64 rigid transforms, and an oriented box's pose. The quaternion math lives
in core.transforms; its TransformError becomes PoseError here."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3

from ...core.objects import OrientedBox
from ...core.transforms import TransformError, pose_matrix, quaternion_from_matrix
from .errors import PoseError


def _matrix(position: Sequence[float], rotation: Any) -> np.ndarray:
    """4x4 of a position and a geometry_msgs/Quaternion; PoseError when either is unusable."""
    try:
        return pose_matrix(position, (rotation.x, rotation.y, rotation.z, rotation.w))
    except TransformError as e:
        raise PoseError(str(e)) from None


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4 float64."""
    return _matrix((pose.position.x, pose.position.y, pose.position.z), pose.orientation)


def transform_to_matrix(transform: Transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4 float64."""
    t = transform.translation
    return _matrix((t.x, t.y, t.z), transform.rotation)


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
    x, y, z, w = quaternion_from_matrix(T[:3, :3])
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
