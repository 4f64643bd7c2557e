"""sensor_msgs/CameraInfo <-> core.camera.CameraIntrinsics (and the distortion fields)."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo

from ...core.camera import CameraIntrinsics
from .errors import CameraInfoError
from .headers import make_header


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


def camera_info_distortion(msg: CameraInfo) -> tuple[str, list[float]]:
    """(distortion_model, d) of a CameraInfo, for core.undistort.Undistorter."""
    return str(msg.distortion_model), [float(v) for v in msg.d]
