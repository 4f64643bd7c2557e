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

from ..config import MapperConfig, RosConfig
from .conversions.headers import to_seconds
from .frames import FrameAssembler
from .sync import ApproximateTimeSync, Rejected, SyncedSet
from .tf import StaticExtrinsic, TfLookup, TfPoseLookup

QOS_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


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
        ros = cfg.ros  # validated with the rest of cfg (config.validate) when it was loaded
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
