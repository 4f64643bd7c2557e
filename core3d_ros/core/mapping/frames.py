"""One synchronised set of decoded sensor inputs -> a core Frame.

    builder = FrameBuilder(cfg, camera_pose=..., extrinsic=...)
    frame = builder.build(SensorInputs(stamp, rgb, raw_depth, "16UC1", intrinsics, ...))

Depth is decoded (``depth.*``), lens distortion undone (remap tables cached per camera) or the
frame refused, and the camera pose chosen by policy: from ``camera_pose`` (e.g. TF's map <- camera
chain) when given, otherwise the pose input, which must be in ``ros.map_frame`` and close enough
in time to the image (``ros.max_pose_age``), composed with the camera's extrinsic (``extrinsic``,
else ``ros.camera_extrinsic``, else identity). Every way a set can be unusable raises FrameError
(its ``reason`` is what /diagnostics counts) or DepthError. Adapters convert messages into
SensorInputs and make this one call; the same builder serves offline readers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...config import MapperConfig
from ..camera import CameraIntrinsics, decode_depth
from ..frame import Frame, FrameError
from ..transforms import TransformError, camera_pose, xyzquat_to_matrix
from ..undistort import Undistorter


@dataclass
class SensorInputs:
    """One synchronised set, decoded from its messages: arrays and numbers, no message types."""

    stamp: float  # seconds, the colour image's
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) raw depth as received (see ``depth_encoding``)
    depth_encoding: str  # 16UC1 (depth.depth_scale units) | 32FC1 (metres) | ...
    intrinsics: CameraIntrinsics
    distortion_model: str = ""
    distortion: np.ndarray | None = None  # coefficients of ``distortion_model``
    camera_frame: str = ""  # the images' frame id
    pose: np.ndarray | None = None  # the pose input (4x4: the base or camera in ``pose_frame``)
    pose_frame: str = ""
    pose_stamp: float | None = None
    instances: np.ndarray | None = None  # optional per-pixel instance ids (oracle segmenter)
    source_stamp: Any = None  # the adapter's own stamp object, handed back to its pose look-up


def check_pose_age(image_stamp: float, pose_stamp: float, max_age: float) -> None:
    """Raise FrameError('stale_pose') when the pose is farther than ``max_age`` seconds from the image."""
    gap = abs(float(image_stamp) - float(pose_stamp))
    if not gap <= max_age:
        raise FrameError("stale_pose", f"pose is {gap:.3f} s from the image (max_pose_age {max_age} s)")


class FrameBuilder:
    """``build(inputs) -> Frame``; frames are numbered 0, 1, ... in the order built.

    ``camera_pose(inputs) -> 4x4`` gives the camera's pose in the map directly (e.g. from TF);
    without it the pose input is used. ``extrinsic(camera_frame) -> 4x4`` gives the camera in
    the pose input's frame (e.g. a static transform), else ``ros.camera_extrinsic`` applies.
    Both may raise FrameError with their own reason.
    """

    def __init__(
        self,
        cfg: MapperConfig,
        camera_pose: Callable[[SensorInputs], np.ndarray] | None = None,
        extrinsic: Callable[[str], np.ndarray] | None = None,
    ):
        self.cfg = cfg
        self.camera_pose = camera_pose
        self.extrinsic = extrinsic
        self.fixed_extrinsic = xyzquat_to_matrix(cfg.ros.camera_extrinsic) if cfg.ros.camera_extrinsic else None
        self.undistorter = Undistorter()
        self.index = 0

    def build(self, inputs: SensorInputs) -> Frame:
        """Raises FrameError / DepthError."""
        d = self.cfg.depth
        depth = decode_depth(inputs.depth, inputs.depth_encoding, depth_scale=d.depth_scale, min_depth=d.min_depth, max_depth=d.max_depth)
        # Lens distortion is undone (maps cached per camera) or the frame refused, never ignored.
        rgb, depth, instances = self.undistorter.apply(
            inputs.intrinsics, inputs.distortion_model, inputs.distortion, inputs.rgb, depth, inputs.instances
        )
        frame = Frame(
            rgb=rgb,
            depth=depth,
            intrinsics=inputs.intrinsics,
            pose=self._pose(inputs),
            stamp=inputs.stamp,
            index=self.index,  # 0-based, like dataset frames
            instance_ids=instances,
        )
        self.index += 1
        return frame

    def _pose(self, inputs: SensorInputs) -> np.ndarray:
        if self.camera_pose is not None:
            return self.camera_pose(inputs)
        ros = self.cfg.ros
        if inputs.pose is None:
            raise FrameError("no_pose", "no pose message in the synchronised set")
        check_pose_age(inputs.stamp, inputs.pose_stamp, ros.max_pose_age)
        if inputs.pose_frame != ros.map_frame:  # mapping it as given would misplace the frame
            raise FrameError(
                "wrong_frame",
                f"pose frame_id '{inputs.pose_frame}' is not ros.map_frame '{ros.map_frame}' "
                "(publish the camera pose in the map frame, or use ros.pose_type 'tf')",
            )
        # pose input = the base (or camera) in the map; compose the camera's extrinsic
        extrinsic = self.extrinsic(inputs.camera_frame) if self.extrinsic is not None else self.fixed_extrinsic
        try:
            return camera_pose(inputs.pose, extrinsic)
        except TransformError as e:
            raise FrameError("bad_pose", str(e)) from None
