"""Camera extrinsics composed by hand-computed cases (REP 103 optical frame, REP 105 frames)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core3d_ros.core.transforms import (
    TransformError,
    camera_pose,
    check_rigid,
    invert,
    pose_matrix,
    quaternion_from_matrix,
    quaternion_matrix,
    xyzquat_to_matrix,
)

# The camera optical frame of REP 103 mounted looking along the base's x axis: optical z
# (forward) = base x, optical x (right) = base -y, optical y (down) = base -z.
R_BASE_OPTICAL = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)  # columns: optical axes in base
Q_BASE_OPTICAL = (-0.5, 0.5, -0.5, 0.5)  # the quaternion every URDF optical joint uses


def test_optical_quaternion_is_the_rep103_rotation():
    np.testing.assert_allclose(quaternion_matrix(*Q_BASE_OPTICAL), R_BASE_OPTICAL, atol=1e-12)


def test_yaw_quaternion():
    s = math.sqrt(0.5)
    np.testing.assert_allclose(quaternion_matrix(0, 0, s, s), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


@pytest.mark.parametrize(
    "q", [(0.1, 0.2, 0.3, 0.9), (0.9, 0.1, -0.2, 0.05), (0.1, -0.95, 0.2, -0.1), (0.05, 0.1, 0.97, 0.02)]
)
def test_quaternion_from_matrix_inverts_quaternion_matrix(q):
    """Each branch of Shepperd's method (trace > 0, then the largest diagonal entry x, y or z)
    gives back the unit quaternion, signed so that w >= 0."""
    q = np.asarray(q) / np.linalg.norm(q)
    q = q if q[3] >= 0 else -q
    np.testing.assert_allclose(quaternion_from_matrix(quaternion_matrix(*q)), q, atol=1e-12)


def test_pose_matrix_is_the_seven_number_transform():
    np.testing.assert_array_equal(pose_matrix([1, 2, 3], (0, 0, 0, 2.0)), xyzquat_to_matrix([1, 2, 3, 0, 0, 0, 1]))
    with pytest.raises(TransformError, match="translation"):
        pose_matrix([math.nan, 0, 0], (0, 0, 0, 1))
    with pytest.raises(TransformError, match="zero"):
        pose_matrix([0, 0, 0], (0, 0, 0, 0))
    with pytest.raises(TransformError, match="3 numbers"):
        pose_matrix([0, 0], (0, 0, 0, 1))


def test_base_pose_composed_with_the_extrinsic():
    s = math.sqrt(0.5)
    T_map_base = xyzquat_to_matrix([1.0, 2.0, 0.0, 0.0, 0.0, s, s])  # base at (1,2), facing +y
    T_base_cam = xyzquat_to_matrix([0.1, 0.0, 0.5, *Q_BASE_OPTICAL])  # camera 10 cm ahead, 50 cm up
    T = camera_pose(T_map_base, T_base_cam)
    # camera centre: (1,2,0) + Rz(90) (0.1,0,0.5) = (1, 2.1, 0.5)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.1, 0.5], atol=1e-12)
    # optical axes in the map: forward (z) = +y, right (x) = +x, down (y) = -z
    np.testing.assert_allclose(T[:3, 2], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)
    # a point 2 m straight ahead of the camera lands 2 m further along +y in the map
    np.testing.assert_allclose((T @ [0, 0, 2.0, 1])[:3], [1.0, 4.1, 0.5], atol=1e-12)


def test_no_extrinsic_is_identity_and_inverse_round_trips():
    T = xyzquat_to_matrix([0.3, -0.2, 1.0, 0.1, 0.2, 0.3, 0.9])
    np.testing.assert_array_equal(camera_pose(T, None), T)
    np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)


def test_unnormalised_quaternion_is_normalised():
    np.testing.assert_allclose(xyzquat_to_matrix([0, 0, 0, 0, 0, 0, 2.0]), np.eye(4))


@pytest.mark.parametrize(
    "values, match",
    [
        ([0, 0, 0, 0, 0, 0, 0], "zero"),
        ([0, 0, 0, math.nan, 0, 0, 1], "not finite"),
        ([math.inf, 0, 0, 0, 0, 0, 1], "translation"),
        ([0, 0, 0, 1], "7 numbers"),
    ],
)
def test_bad_extrinsics_are_refused(values, match):
    with pytest.raises(TransformError, match=match):
        xyzquat_to_matrix(values)


def test_non_rigid_matrices_are_refused():
    T = np.eye(4)
    T[0, 0] = 2.0
    with pytest.raises(TransformError):
        check_rigid(T)
    with pytest.raises(TransformError):
        camera_pose(np.eye(4), np.diag([1.0, 1.0, -1.0, 1.0]))  # a reflection
