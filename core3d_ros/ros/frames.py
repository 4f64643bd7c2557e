"""One synchronised set of messages -> the library's SensorInputs -> a core Frame.

Shared by the mapping and perception nodes. This module only converts: colour (raw or
compressed), depth (raw or compressedDepth), camera info and the pose input become arrays and
numbers (``sensor_inputs``); the library's FrameBuilder (core/mapping/frames.py) decodes depth,
undoes lens distortion and applies the pose policy in one call. TF look-ups (the camera pose, or
the camera's static extrinsic) are handed to it as functions. Every way a set can be unusable
raises an error that ``reason_of`` maps to the rejection reason counted in /diagnostics.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..config import MapperConfig, RosConfig
from ..core.camera import DepthError
from ..core.frame import Frame, FrameError
from ..core.mapping.frames import FrameBuilder, SensorInputs
from .conversions.camera_info import camera_info_distortion, camera_info_to_intrinsics
from .conversions.compressed import compressed_depth_to_raw, compressed_to_rgb
from .conversions.errors import CameraInfoError, ImageError, PoseError
from .conversions.images import image_to_depth_raw, image_to_instances, image_to_rgb
from .conversions.poses import pose_message_to_matrix
from .sync import SyncedSet

# Exceptions raised while turning messages into a Frame -> rejection reason.
CONVERSION_REASONS: tuple[tuple[type, str], ...] = (
    (ImageError, "bad_image"),
    (DepthError, "bad_depth"),
    (CameraInfoError, "bad_camera_info"),
    (PoseError, "bad_pose"),
)
REJECTED = (FrameError, *(t for t, _ in CONVERSION_REASONS))


def reason_of(error: Exception) -> str:
    if isinstance(error, FrameError):
        return error.reason
    return next(r for t, r in CONVERSION_REASONS if isinstance(error, t))


def sensor_inputs(synced: SyncedSet, ros: RosConfig) -> SensorInputs:
    """Convert the set's messages (ImageError / CameraInfoError / PoseError on malformed ones)."""
    color_msg = synced.messages["color"]
    depth_msg = synced.messages["depth"]
    rgb = compressed_to_rgb(color_msg) if ros.color_transport == "compressed" else image_to_rgb(color_msg)
    if ros.depth_transport == "compressedDepth":
        raw, depth_encoding = compressed_depth_to_raw(depth_msg)
    else:
        raw, depth_encoding = image_to_depth_raw(depth_msg), depth_msg.encoding
    info_msg = synced.messages["camera_info"]
    model, coeffs = camera_info_distortion(info_msg)
    instance_msg = synced.messages.get("instances")
    pose_msg = synced.messages.get("pose")
    return SensorInputs(
        stamp=synced.stamp,
        rgb=rgb,
        depth=raw,
        depth_encoding=depth_encoding,
        intrinsics=camera_info_to_intrinsics(info_msg),
        distortion_model=model,
        distortion=np.asarray(coeffs, np.float64),
        camera_frame=color_msg.header.frame_id,
        pose=pose_message_to_matrix(pose_msg) if pose_msg is not None else None,
        pose_frame=pose_msg.header.frame_id if pose_msg is not None else "",
        pose_stamp=synced.stamps.get("pose"),
        instances=image_to_instances(instance_msg) if instance_msg is not None else None,
        source_stamp=color_msg.header.stamp,
    )


class FrameAssembler:
    """``build(synced) -> Frame``: converts the messages, then one call into the library.

    ``tf_pose`` (a TfPoseLookup) gives the camera pose when ``ros.pose_type`` is tf;
    ``extrinsic_tf`` (a StaticExtrinsic) the camera in the pose input's frame when
    ``ros.base_frame`` is set (else ``ros.camera_extrinsic``, else identity).
    """

    def __init__(self, cfg: MapperConfig, tf_pose: Any = None, extrinsic_tf: Any = None):
        self.ros = cfg.ros
        self.tf_pose, self.extrinsic_tf = tf_pose, extrinsic_tf
        camera_pose = (lambda s: tf_pose.lookup(s.camera_frame, s.source_stamp)) if tf_pose is not None else None
        self.builder = FrameBuilder(cfg, camera_pose=camera_pose, extrinsic=extrinsic_tf.lookup if extrinsic_tf is not None else None)

    def build(self, synced: SyncedSet) -> Frame:
        """Raises FrameError / ConversionError / DepthError (see ``reason_of``)."""
        return self.builder.build(sensor_inputs(synced, self.ros))
