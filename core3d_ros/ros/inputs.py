"""The camera inputs every core3d node takes: colour, depth, camera info and pose (or TF),
time-synchronised into complete sets and assembled into Frames.

    inputs = SyncedInputs(node, cfg, on_set=..., on_reject=..., on_message=..., callback_group=...)
    frame = inputs.frames.build(synced)      # in the node's worker, not in the callback

Callbacks only count and synchronise; everything slow happens in the node's worker.
"""
from __future__ import annotations

from typing import Any, Callable

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ..config import ConfigError, MapperConfig, RosConfig
from . import conversions as conv
from .frames import FrameAssembler
from .sync import ApproximateTimeSync, Rejected, SyncedSet, TfPoseLookup

POSE_TYPES = ("pose", "odometry", "tf")
QOS_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


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


class SyncedInputs:
    def __init__(
        self,
        node: Node,
        cfg: MapperConfig,
        *,
        on_set: Callable[[SyncedSet], None],
        on_reject: Callable[[Rejected], None],
        on_message: Callable[[str], None],
        warn_once: Callable[[str, str], None],
        callback_group: Any = None,
    ):
        ros = cfg.ros
        validate_inputs(ros)
        qos = QoSProfile(
            reliability=QOS_RELIABILITY[ros.qos_reliability],
            history=HistoryPolicy.KEEP_LAST,
            depth=ros.qos_depth,
            durability=DurabilityPolicy.VOLATILE,
        )
        topics: list[tuple[str, type, str]] = [
            ("color", Image, ros.color_topic),
            ("depth", Image, ros.depth_topic),
            ("camera_info", CameraInfo, ros.info_topic),
        ]
        if ros.instance_topic:
            topics.append(("instances", Image, ros.instance_topic))
        self.tf: TfPoseLookup | None = None
        if ros.pose_type == "tf":
            self.tf = TfPoseLookup(node, ros.map_frame, ros.camera_frame, timeout=min(ros.max_pose_age, 0.5))
        else:
            topics.append(("pose", PoseStamped if ros.pose_type == "pose" else Odometry, ros.pose_topic))
        self.frames = FrameAssembler(cfg, tf_lookup=self.tf.lookup if self.tf is not None else None, warn_once=warn_once)
        self.sync = ApproximateTimeSync(
            [key for key, _, _ in topics],
            slop=ros.sync_slop,
            queue_size=ros.sync_queue,
            tolerances={"pose": ros.max_pose_age},
            reasons={"pose": ("no_pose", "stale_pose")},
            on_set=on_set,
            on_reject=on_reject,
        )
        self._on_message = on_message
        self.subscriptions = [
            node.create_subscription(mtype, topic, self._callback(key), qos, callback_group=callback_group)
            for key, mtype, topic in topics
        ]
        self.description = (
            f"colour '{ros.color_topic}', depth '{ros.depth_topic}', info '{ros.info_topic}', pose from "
            + (f"TF {ros.map_frame} <- camera" if ros.pose_type == "tf" else f"{ros.pose_type} on '{ros.pose_topic}'")
        )

    def _callback(self, key: str) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            self._on_message(key)
            self.sync.add(key, msg, conv.to_seconds(msg.header.stamp))

        return callback
