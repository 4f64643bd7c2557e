"""Camera poses and extrinsics from TF (tf2_ros), with every failure counted by reason.

Two look-ups (see core3d_ros/core/transforms.py for the conventions):

- ``ros.pose_type: tf``: the camera optical pose ``map_frame <- image frame_id`` (or
  ``ros.camera_frame``) at the image stamp, waiting at most ``ros.tf_timeout``;
- ``ros.base_frame`` with pose / odometry inputs: the static extrinsic ``base_frame <- image
  frame_id`` (latest available; cached per frame id once found, as static transforms do not
  change).

Failures raise FrameError, so the node counts the frame as rejected and nothing reaches the map:
``no_transform`` (the frames are not connected or the TF never arrived within the timeout),
``tf_extrapolation`` (the buffer has the frames but not at that stamp: an image newer than the
latest TF, or older than the buffer), ``tf_loop`` (a cycle in the TF tree), ``tf_error`` (any other tf2 error, e.g. a loop in the tree)
and ``bad_transform`` (a TF that is not a rigid motion: zero or NaN quaternion).
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..config import ConfigError
from ..core.frame import FrameError
from .conversions.errors import PoseError
from .conversions.poses import transform_to_matrix

TF_REASONS = ("no_transform", "tf_extrapolation", "tf_loop", "tf_error", "bad_transform")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _import_tf2() -> Any:
    try:
        import tf2_ros
    except ImportError as e:
        raise ConfigError(
            "TF is needed (ros.pose_type 'tf' or ros.base_frame set) but tf2_ros is not importable; "
            "install ROS 2 tf2_ros (apt install ros-$ROS_DISTRO-tf2-ros), or use ros.pose_type "
            "'pose'/'odometry' with ros.camera_extrinsic"
        ) from e
    return tf2_ros


class TfLookup:
    """A tf2 buffer and listener on ``node``; ``matrix(target, source, stamp)`` -> 4x4 or FrameError."""

    def __init__(self, node: Any, *, timeout: float):
        tf2_ros = _import_tf2()
        from rclpy.duration import Duration

        self._tf2 = tf2_ros
        self.buffer = tf2_ros.Buffer(node=node)
        self.listener = tf2_ros.TransformListener(self.buffer, node, spin_thread=False)
        self.timeout = Duration(seconds=float(timeout))

    def matrix(self, target: str, source: str, stamp: Any | None) -> np.ndarray:
        """``target <- source`` at ``stamp`` (builtin_interfaces/Time; None: the latest)."""
        from rclpy.time import Time as RclTime

        tf2 = self._tf2
        when = RclTime() if stamp is None else RclTime.from_msg(stamp)
        what = f"TF {target} <- {source}"
        try:
            tf = self.buffer.lookup_transform(target, source, when, timeout=self.timeout)
        except tf2.ExtrapolationException as e:
            raise FrameError("tf_extrapolation", f"{what} not available at the image stamp: {e}") from None
        except (tf2.LookupException, tf2.ConnectivityException) as e:
            if "loop" in str(e).lower():  # tf2 reports a cycle in the tree as a lookup error
                raise FrameError("tf_loop", f"{what}: {_first_line(e)}") from None
            raise FrameError("no_transform", f"no {what}: {_first_line(e)}") from None
        except tf2.TransformException as e:  # e.g. a loop in the tree
            raise FrameError("tf_error", f"{what}: {type(e).__name__}: {e}") from None
        try:
            return transform_to_matrix(tf.transform)
        except PoseError as e:
            raise FrameError("bad_transform", f"{what}: {e}") from None


class TfPoseLookup:
    """Camera optical pose from TF: ``map_frame <- camera frame`` at the image stamp."""

    def __init__(self, node: Any, map_frame: str, camera_frame: str = "", timeout: float = 0.05, tf: TfLookup | None = None):
        self.tf = tf or TfLookup(node, timeout=timeout)
        self.map_frame = map_frame
        self.camera_frame = camera_frame

    def lookup(self, image_frame: str, stamp: Any) -> np.ndarray:
        source = self.camera_frame or image_frame
        if not source:
            raise FrameError("no_transform", "image has no frame_id and ros.camera_frame is empty")
        return self.tf.matrix(self.map_frame, source, stamp)


class StaticExtrinsic:
    """``base_frame <- camera optical frame`` from TF (static), cached per camera frame id."""

    def __init__(self, node: Any, base_frame: str, camera_frame: str = "", timeout: float = 0.05, tf: TfLookup | None = None):
        self.tf = tf or TfLookup(node, timeout=timeout)
        self.base_frame = base_frame
        self.camera_frame = camera_frame
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def lookup(self, image_frame: str) -> np.ndarray:
        source = self.camera_frame or image_frame
        if not source:
            raise FrameError("no_transform", "image has no frame_id and ros.camera_frame is empty")
        with self._lock:
            cached = self._cache.get(source)
        if cached is not None:
            return cached
        T = self.tf.matrix(self.base_frame, source, None)
        with self._lock:
            self._cache[source] = T
        return T
