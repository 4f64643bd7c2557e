"""Frame assembly: one synchronised set of messages -> a core Frame.

Shared by the mapping and perception nodes. Colour (raw or compressed) and depth (raw or
compressedDepth) are decoded, lens distortion is undone (remap tables cached per camera) or the
frame refused, and the camera pose comes from TF or from the pose input composed with the static
extrinsic. Every way a set can be unusable raises an error that ``reason_of`` maps to the
rejection reason counted in /diagnostics.
"""
from __future__ import annotations

from typing import Any

from ..config import MapperConfig
from ..core.camera import DepthError, decode_depth
from ..core.frame import Frame, FrameError
from ..core.transforms import TransformError, camera_pose, xyzquat_to_matrix
from ..core.undistort import Undistorter
from . import conversions as conv
from .sync import SyncedSet, check_pose_age

# Exceptions raised while turning messages into a Frame -> rejection reason.
CONVERSION_REASONS: tuple[tuple[type, str], ...] = (
    (conv.ImageError, "bad_image"),
    (DepthError, "bad_depth"),
    (conv.CameraInfoError, "bad_camera_info"),
    (conv.PoseError, "bad_pose"),
)
REJECTED = (FrameError, *(t for t, _ in CONVERSION_REASONS))


def reason_of(error: Exception) -> str:
    if isinstance(error, FrameError):
        return error.reason
    return next(r for t, r in CONVERSION_REASONS if isinstance(error, t))


class FrameAssembler:
    """``build(synced) -> Frame``; frames are numbered 0, 1, ... in the order built.

    ``tf_pose`` (a TfPoseLookup) gives the camera pose when ``ros.pose_type`` is tf;
    ``extrinsic_tf`` (a StaticExtrinsic) the camera in the pose input's frame when
    ``ros.base_frame`` is set (else ``ros.camera_extrinsic``, else identity).
    """

    def __init__(self, cfg: MapperConfig, tf_pose: Any = None, extrinsic_tf: Any = None):
        ros = cfg.ros
        self.cfg = cfg
        self.tf_pose = tf_pose
        self.extrinsic_tf = extrinsic_tf
        self.extrinsic = xyzquat_to_matrix(ros.camera_extrinsic) if ros.camera_extrinsic else None
        self.undistorter = Undistorter()
        self.index = 0

    def build(self, synced: SyncedSet) -> Frame:
        """Raises FrameError / ConversionError / DepthError (see ``reason_of``)."""
        ros, depth_cfg = self.cfg.ros, self.cfg.depth
        color_msg = synced.messages["color"]
        depth_msg = synced.messages["depth"]
        if ros.color_transport == "compressed":
            rgb = conv.compressed_to_rgb(color_msg)
        else:
            rgb = conv.image_to_rgb(color_msg)
        if ros.depth_transport == "compressedDepth":
            raw, depth_encoding = conv.compressed_depth_to_raw(depth_msg)
        else:
            raw, depth_encoding = conv.image_to_depth_raw(depth_msg), depth_msg.encoding
        depth = decode_depth(
            raw,
            depth_encoding,
            depth_scale=depth_cfg.depth_scale,
            min_depth=depth_cfg.min_depth,
            max_depth=depth_cfg.max_depth,
        )
        info_msg = synced.messages["camera_info"]
        intr = conv.camera_info_to_intrinsics(info_msg)
        instance_msg = synced.messages.get("instances")
        instances = conv.image_to_instances(instance_msg) if instance_msg is not None else None
        # Lens distortion is undone (maps cached per camera) or the frame refused, never ignored.
        model, coeffs = conv.camera_info_distortion(info_msg)
        rgb, depth, instances = self.undistorter.apply(intr, model, coeffs, rgb, depth, instances)
        if self.tf_pose is not None:
            pose = self.tf_pose.lookup(color_msg.header.frame_id, color_msg.header.stamp)
        else:
            pose_msg = synced.messages.get("pose")
            if pose_msg is None:
                raise FrameError("no_pose", "no pose message in the synchronised set")
            check_pose_age(synced.stamp, synced.stamps["pose"], ros.max_pose_age)
            frame_id = pose_msg.header.frame_id
            if frame_id != ros.map_frame:  # mapping it as given would misplace the frame
                raise FrameError(
                    "wrong_frame",
                    f"pose frame_id '{frame_id}' is not ros.map_frame '{ros.map_frame}' "
                    "(publish the camera pose in the map frame, or use ros.pose_type 'tf')",
                )
            # pose input = the base (or camera) in the map; compose the static extrinsic
            extrinsic = self.extrinsic_tf.lookup(color_msg.header.frame_id) if self.extrinsic_tf is not None else self.extrinsic
            try:
                pose = camera_pose(conv.pose_message_to_matrix(pose_msg), extrinsic)
            except TransformError as e:
                raise FrameError("bad_pose", str(e)) from None
        frame = Frame(
            rgb=rgb,
            depth=depth,
            intrinsics=intr,
            pose=pose,
            stamp=synced.stamp,
            index=self.index,  # 0-based, like dataset frames
            instance_ids=instances,
        )
        self.index += 1
        return frame
