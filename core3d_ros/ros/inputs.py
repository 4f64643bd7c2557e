"""The camera inputs every core3d node takes: colour, depth, camera info and pose (or TF),
time-synchronised into complete sets and assembled into Frames.

    inputs = SyncedInputs(node, cfg, on_set=..., on_reject=..., on_message=..., guard=...)
    frame = inputs.frames.build(synced)      # in the node's worker, not in the callback

QoS is set per input; compressed transports subscribe to ``<topic>/compressed`` and
``<topic>/compressedDepth`` (image_transport names). Callbacks only count and synchronise;
everything slow happens in the node's worker.
"""
from __future__ import annotations

from typing import Any, Callable

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..config import ConfigError, MapperConfig, RosConfig
from ..core.transforms import TransformError, xyzquat_to_matrix
from .conversions.headers import to_seconds
from .frames import FrameAssembler
from .sync import ApproximateTimeSync, Rejected, SyncedSet
from .tf import StaticExtrinsic, TfLookup, TfPoseLookup

POSE_TYPES = ("pose", "odometry", "tf")
QOS_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
QOS_PROFILES = ("default", "sensor_data", "reliable", "best_effort", "system_default")
COLOR_TRANSPORTS = ("raw", "compressed")
DEPTH_TRANSPORTS = ("raw", "compressedDepth")


def validate_inputs(ros: RosConfig) -> None:
    """Reject input settings a node cannot run with (ConfigError names the parameter)."""
    if ros.pose_type not in POSE_TYPES:
        raise ConfigError(f"ros.pose_type must be one of {POSE_TYPES}, got {ros.pose_type!r}")
    if ros.qos_reliability not in QOS_RELIABILITY:
        raise ConfigError(f"ros.qos_reliability must be one of {sorted(QOS_RELIABILITY)}, got {ros.qos_reliability!r}")
    for name in ("qos_depth", "sync_queue"):
        if getattr(ros, name) < 1:
            raise ConfigError(f"ros.{name} must be >= 1, got {getattr(ros, name)}")
    for name in ("sync_slop", "max_pose_age"):
        if not getattr(ros, name) >= 0:
            raise ConfigError(f"ros.{name} must be >= 0, got {getattr(ros, name)}")
    for name in ("color_topic", "depth_topic", "info_topic", "map_frame"):
        if not getattr(ros, name):
            raise ConfigError(f"ros.{name} must not be empty")
    if ros.pose_type != "tf" and not ros.pose_topic:
        raise ConfigError("ros.pose_topic must not be empty unless ros.pose_type is 'tf'")
    for name in ("color_qos", "depth_qos", "info_qos", "pose_qos"):
        if getattr(ros, name) not in QOS_PROFILES:
            raise ConfigError(f"ros.{name} must be one of {QOS_PROFILES}, got {getattr(ros, name)!r}")
    if ros.color_transport not in COLOR_TRANSPORTS:
        raise ConfigError(f"ros.color_transport must be one of {COLOR_TRANSPORTS}, got {ros.color_transport!r}")
    if ros.depth_transport not in DEPTH_TRANSPORTS:
        raise ConfigError(f"ros.depth_transport must be one of {DEPTH_TRANSPORTS}, got {ros.depth_transport!r}")
    if not ros.tf_timeout >= 0:
        raise ConfigError(f"ros.tf_timeout must be >= 0, got {ros.tf_timeout}")
    if ros.camera_extrinsic:
        try:
            xyzquat_to_matrix(ros.camera_extrinsic)
        except TransformError as e:
            raise ConfigError(f"ros.camera_extrinsic: {e}") from None
    if ros.base_frame and ros.camera_extrinsic:
        raise ConfigError("ros.base_frame and ros.camera_extrinsic are exclusive: the extrinsic comes from TF or from the parameter")
    if ros.pose_type == "tf" and (ros.base_frame or ros.camera_extrinsic):
        raise ConfigError(
            "ros.base_frame / ros.camera_extrinsic apply to pose and odometry inputs; with ros.pose_type 'tf' "
            "the whole chain map_frame <- camera comes from TF"
        )


def input_qos(ros: RosConfig, profile: str) -> QoSProfile:
    """QoS of an input subscription by profile name (see RosConfig.color_qos)."""
    if profile == "sensor_data":
        return qos_profile_sensor_data
    if profile == "system_default":
        return qos_profile_system_default
    reliability = {"reliable": "reliable", "best_effort": "best_effort"}.get(profile, ros.qos_reliability)
    return QoSProfile(
        reliability=QOS_RELIABILITY[reliability],
        history=HistoryPolicy.KEEP_LAST,
        depth=ros.qos_depth,
        durability=DurabilityPolicy.VOLATILE,
    )


def _no_guard(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


class SyncedInputs:
    def __init__(
        self,
        node: Node,
        cfg: MapperConfig,
        *,
        on_set: Callable[[SyncedSet], None],
        on_reject: Callable[[Rejected], None],
        on_message: Callable[[str], None],
        callback_group: Any = None,
        guard: Callable[[str, Callable[..., Any]], Callable[..., Any]] = _no_guard,
    ):
        ros = cfg.ros
        validate_inputs(ros)
        color = (CompressedImage, f"{ros.color_topic}/compressed") if ros.color_transport == "compressed" else (Image, ros.color_topic)
        depth = (
            (CompressedImage, f"{ros.depth_topic}/compressedDepth")
            if ros.depth_transport == "compressedDepth"
            else (Image, ros.depth_topic)
        )
        topics: list[tuple[str, type, str, str]] = [
            ("color", *color, ros.color_qos),
            ("depth", *depth, ros.depth_qos),
            ("camera_info", CameraInfo, ros.info_topic, ros.info_qos),
        ]
        if ros.instance_topic:
            topics.append(("instances", Image, ros.instance_topic, ros.color_qos))
        tf_pose = extrinsic_tf = None
        if ros.pose_type == "tf":
            tf_pose = TfPoseLookup(node, ros.map_frame, ros.camera_frame, tf=TfLookup(node, timeout=ros.tf_timeout))
        else:
            topics.append(("pose", PoseStamped if ros.pose_type == "pose" else Odometry, ros.pose_topic, ros.pose_qos))
            if ros.base_frame:
                extrinsic_tf = StaticExtrinsic(node, ros.base_frame, ros.camera_frame, tf=TfLookup(node, timeout=ros.tf_timeout))
        self.frames = FrameAssembler(cfg, tf_pose=tf_pose, extrinsic_tf=extrinsic_tf)
        self.sync = ApproximateTimeSync(
            [key for key, *_ in topics],
            slop=ros.sync_slop,
            queue_size=ros.sync_queue,
            tolerances={"pose": ros.max_pose_age},
            reasons={"pose": ("no_pose", "stale_pose")},
            on_set=on_set,
            on_reject=on_reject,
        )
        self._on_message = on_message
        self.subscriptions = [
            node.create_subscription(
                mtype, topic, guard(f"input_{key}", self._callback(key)), input_qos(ros, qos), callback_group=callback_group
            )
            for key, mtype, topic, qos in topics
        ]
        pose_src = f"TF {ros.map_frame} <- camera" if ros.pose_type == "tf" else f"{ros.pose_type} on '{ros.pose_topic}'"
        self.description = (
            f"colour '{ros.color_topic}', depth '{ros.depth_topic}', info '{ros.info_topic}', pose from {pose_src}"
        )

    def _callback(self, key: str) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            self._on_message(key)
            self.sync.add(key, msg, to_seconds(msg.header.stamp))

        return callback
