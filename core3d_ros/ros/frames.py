"""Frame assembly: one synchronised set of messages -> a validated core Frame.

Shared by the mapping and perception nodes. Every way a set can be unusable raises an error that
``reason_of`` maps to the rejection reason counted in /diagnostics.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..config import MapperConfig
from ..core.camera import DepthError, decode_depth
from ..core.frame import Frame, FrameError
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

    ``tf_lookup(frame_id, stamp) -> 4x4`` gives the camera pose when ``ros.pose_type`` is tf;
    ``warn_once(key, text)`` reports a condition once.
    """

    def __init__(
        self,
        cfg: MapperConfig,
        tf_lookup: Callable[[str, Any], np.ndarray] | None = None,
        warn_once: Callable[[str, str], None] | None = None,
    ):
        self.cfg = cfg
        self.tf_lookup = tf_lookup
        self.warn_once = warn_once or (lambda key, text: None)
        self.index = 0

    def build(self, synced: SyncedSet) -> Frame:
        """Raises FrameError / ConversionError / DepthError (see ``reason_of``)."""
        ros, depth_cfg = self.cfg.ros, self.cfg.depth
        color_msg = synced.messages["color"]
        depth_msg = synced.messages["depth"]
        rgb = conv.image_to_rgb(color_msg)
        raw = conv.image_to_depth_raw(depth_msg)
        depth = decode_depth(
            raw,
            depth_msg.encoding,
            depth_scale=depth_cfg.depth_scale,
            min_depth=depth_cfg.min_depth,
            max_depth=depth_cfg.max_depth,
        )
        intr = conv.camera_info_to_intrinsics(synced.messages["camera_info"])
        if self.tf_lookup is not None:
            pose = self.tf_lookup(color_msg.header.frame_id, color_msg.header.stamp)
        else:
            pose_msg = synced.messages.get("pose")
            if pose_msg is None:
                raise FrameError("no_pose", "no pose message in the synchronised set")
            check_pose_age(synced.stamp, synced.stamps["pose"], ros.max_pose_age)
            frame_id = pose_msg.header.frame_id
            if frame_id and frame_id != ros.map_frame:
                self.warn_once(
                    "pose_frame",
                    f"pose frame '{frame_id}' differs from ros.map_frame '{ros.map_frame}'; "
                    "poses are used as given (camera optical frame in the map frame)",
                )
            pose = conv.pose_message_to_matrix(pose_msg)
        instance_msg = synced.messages.get("instances")
        instances = conv.image_to_instances(instance_msg) if instance_msg is not None else None
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
