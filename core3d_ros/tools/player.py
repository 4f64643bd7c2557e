"""Replay an RGB-D dataset as ROS 2 topics (and/or write it to a rosbag2 folder).

What a frame becomes, all with one header stamp:

- colour ``sensor_msgs/Image`` rgb8 on ``ros.color_topic``;
- depth ``sensor_msgs/Image`` 32FC1 metres or 16UC1 (1/``depth_scale`` m) on ``ros.depth_topic``;
- ``sensor_msgs/CameraInfo`` on ``ros.info_topic``;
- the camera pose as ``geometry_msgs/PoseStamped`` or ``nav_msgs/Odometry`` on ``ros.pose_topic``
  (frame ``ros.map_frame``), or a ``tf2_msgs/TFMessage`` on ``/tf`` for ``pose_type='tf'``;
- per-pixel instance ids (32SC1) on ``ros.instance_topic`` when that is set and the dataset has
  them (synthetic scenes), for the oracle segmenter.

Stamps: ``t0 + offset``, where ``t0`` is the player node's clock when playback starts (wall
time when only writing a bag) and ``offset`` is ``k / rate_hz`` for the k-th published frame,
or, with ``rate_hz <= 0``, the dataset's own timing (``frame.stamp`` minus the first stamp).
Frames are published at those offsets in real time, so stamps always increase (loops too) and
agree with arrival times. Publishing uses reliable QoS by default, which subscribers of either
reliability accept.

Bags are written with the ROS-free ``rosbags`` library (``rosbags.rosbag2.Writer``, message
definitions from its ROS 2 Kilted typestore); the payload is each message serialised by
``rclpy.serialization``, byte for byte what goes on the wire. The bag is written into a
temporary folder next to the destination and renamed into place when complete.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image

from ..config import RosConfig
from ..core.frame import Frame
from ..ros import conversions as conv

DEFAULT_CAMERA_FRAME = "camera_color_optical_frame"
DEPTH_ENCODINGS = ("32FC1", "16UC1")


@dataclass
class PlaybackResult:
    frames: int  # frames published / written
    bag_path: str | None
    duration_s: float  # wall-clock time of the playback


def _type_name(msg_or_cls: Any) -> str:
    """ROS 2 type name of an rclpy message class or instance: 'sensor_msgs/msg/Image'."""
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


class FrameMessages:
    """Builds the messages of one frame (see the module docstring), as (topic, message) pairs."""

    def __init__(
        self,
        ros: RosConfig,
        pose_type: str | None = None,
        *,
        depth_encoding: str = "32FC1",
        depth_scale: float = 1000.0,
        camera_frame: str = "",
    ):
        self.ros = ros
        self.pose_type = pose_type or ros.pose_type
        if self.pose_type not in ("pose", "odometry", "tf"):
            raise ValueError(f"pose_type must be pose, odometry or tf, got {self.pose_type!r}")
        if depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {depth_encoding!r}")
        self.depth_encoding = depth_encoding
        self.depth_scale = float(depth_scale)
        self.camera_frame = camera_frame or ros.camera_frame or DEFAULT_CAMERA_FRAME
        self._tf_message: Any = None
        if self.pose_type == "tf":
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError as e:
                raise ValueError("pose_type 'tf' needs tf2_msgs (ROS 2 tf2_msgs package), which is not installed") from e
            self._tf_message = TFMessage

    def topics(self) -> list[tuple[str, type]]:
        ros = self.ros
        out: list[tuple[str, type]] = [
            (ros.color_topic, Image),
            (ros.depth_topic, Image),
            (ros.info_topic, CameraInfo),
        ]
        if ros.instance_topic:
            out.append((ros.instance_topic, Image))
        if self.pose_type == "pose":
            out.append((ros.pose_topic, PoseStamped))
        elif self.pose_type == "odometry":
            out.append((ros.pose_topic, Odometry))
        else:
            out.append(("/tf", self._tf_message))
        return out

    def build(self, frame: Frame, stamp: float) -> list[tuple[str, Any]]:
        ros, cam = self.ros, self.camera_frame
        t = conv.to_time(stamp)
        msgs: list[tuple[str, Any]] = [
            (ros.color_topic, conv.rgb_to_image(frame.rgb, "rgb8", stamp=t, frame_id=cam)),
            (
                ros.depth_topic,
                conv.depth_to_image(frame.depth, self.depth_encoding, depth_scale=self.depth_scale, stamp=t, frame_id=cam),
            ),
            (ros.info_topic, conv.intrinsics_to_camera_info(frame.intrinsics, stamp=t, frame_id=cam)),
        ]
        if ros.instance_topic and frame.instance_ids is not None:
            msgs.append((ros.instance_topic, conv.instances_to_image(frame.instance_ids, stamp=t, frame_id=cam)))
        header = conv.make_header(ros.map_frame, t)
        if self.pose_type == "pose":
            msgs.append((ros.pose_topic, PoseStamped(header=header, pose=conv.matrix_to_pose(frame.pose))))
        elif self.pose_type == "odometry":
            odom = Odometry(header=header, child_frame_id=cam)
            odom.pose.pose = conv.matrix_to_pose(frame.pose)
            msgs.append((ros.pose_topic, odom))
        else:
            tf = TransformStamped(header=header, child_frame_id=cam, transform=conv.matrix_to_transform(frame.pose))
            msgs.append(("/tf", self._tf_message(transforms=[tf])))
        return msgs


class BagRecorder:
    """Writes rclpy messages to a rosbag2 folder atomically (temporary folder, then rename)."""

    def __init__(self, path: str | os.PathLike, topics: Sequence[tuple[str, type]], *, storage: str = "sqlite3"):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path).expanduser().absolute()
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists already; not overwriting a bag")
        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        typestore = get_typestore(getattr(Stores, "ROS2_KILTED", Stores.ROS2_HUMBLE))
        self._writer = Writer(self._tmp / self.path.name, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections = {
            topic: self._writer.add_connection(topic, _type_name(cls), typestore=typestore) for topic, cls in topics
        }
        self.count = 0

    def write(self, topic: str, msg: Any, stamp: float) -> None:
        from rclpy.serialization import serialize_message

        self._writer.write(self._connections[topic], int(round(stamp * 1e9)), serialize_message(msg))
        self.count += 1

    def close(self, keep: bool = True) -> str | None:
        """Finish the bag; move it into place (keep) or delete it."""
        try:
            self._writer.close()
            if keep:
                os.rename(self._tmp / self.path.name, self.path)
                return str(self.path)
            return None
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _schedule(dataset: Any, rate_hz: float, loop: bool) -> Iterator[tuple[Frame, float]]:
    """(frame, stamp offset in seconds), offsets strictly increasing, repeating when ``loop``."""
    n = len(dataset)
    base = 0.0
    while n:
        first = last = 0.0
        for i in range(n):
            frame = dataset[i]
            if rate_hz > 0:
                off = i / rate_hz
            elif i == 0:
                first, off = float(frame.stamp), 0.0
            else:
                off = float(frame.stamp) - first
                if not off > last:
                    raise ValueError(
                        f"dataset stamps do not increase at frame {i} ({off:.6f} s after the first); "
                        "give rate_hz > 0 to play at a fixed rate"
                    )
            last = off
            yield frame, base + off
        if not loop:
            return
        # next round starts one frame period after this one's last frame
        base += last + (1.0 / rate_hz if rate_hz > 0 else (last / (n - 1) if n > 1 else 0.1))


def publish_dataset(
    dataset: Any,
    rate_hz: float = 10.0,
    ros: RosConfig | None = None,
    pose_type: str | None = None,
    bag_path: str | os.PathLike | None = None,
    loop: bool = False,
    *,
    depth_encoding: str = "32FC1",
    depth_scale: float = 1000.0,
    reliable: bool = True,
    qos_depth: int = 10,
    publish: bool = True,
    wait_for_subscribers: float = 5.0,
    start_delay: float = 0.5,
    ack_timeout: float = 5.0,
    progress: bool = False,
    context: Any = None,
    stop: threading.Event | None = None,
    node_name: str = "core3d_player",
    bag_storage: str = "sqlite3",
) -> PlaybackResult:
    """Publish every frame of ``dataset`` (``len(ds)``, ``ds[i] -> Frame``); see the module docstring.

    ``publish=False`` only writes the bag (no ROS graph, no pacing). ``wait_for_subscribers``
    seconds at most are spent waiting until every topic has a subscriber (0: don't wait), then
    ``start_delay`` seconds more so that the subscribers finish matching. With reliable QoS it
    waits up to ``ack_timeout`` seconds at the end for subscribers to acknowledge everything.
    ``loop`` repeats until ``stop`` is set or Ctrl-C; the bag (if any) is finished either way.
    """
    ros = ros or RosConfig()
    builder = FrameMessages(ros, pose_type, depth_encoding=depth_encoding, depth_scale=depth_scale)
    if not publish and bag_path is None:
        raise ValueError("nothing to do: publish=False and no bag_path")
    if not publish and loop:
        raise ValueError("loop needs publish=True (a looped bag would never end)")
    node = None
    own_context = False
    publishers: dict[str, Any] = {}
    if publish:
        import rclpy
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if not rclpy.ok(context=context):
            rclpy.init(context=context)
            own_context = True
        node = Node(node_name, context=context)
        qos = QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            history=HistoryPolicy.KEEP_LAST,
            depth=qos_depth,
            durability=DurabilityPolicy.VOLATILE,
        )
        publishers = {topic: node.create_publisher(cls, topic, qos) for topic, cls in builder.topics()}
    recorder = BagRecorder(bag_path, builder.topics(), storage=bag_storage) if bag_path is not None else None
    count = 0
    wall_start = time.monotonic()
    ok = False
    bar = None
    try:
        if node is not None and wait_for_subscribers > 0:
            deadline = time.monotonic() + wait_for_subscribers
            while time.monotonic() < deadline and not all(p.get_subscription_count() for p in publishers.values()):
                time.sleep(0.02)
            if not all(p.get_subscription_count() for p in publishers.values()):
                node.get_logger().warning("not every topic has a subscriber; publishing anyway")
            elif start_delay > 0:
                # The publisher sees a subscriber before that subscriber has matched the
                # publisher; messages sent in between are lost (volatile durability).
                time.sleep(start_delay)
        t0 = node.get_clock().now().nanoseconds * 1e-9 if node is not None else time.time()
        wall_start = time.monotonic()
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=None if loop else len(dataset), unit="frame", desc="play")
        for frame, offset in _schedule(dataset, rate_hz, loop):
            if stop is not None and stop.is_set():
                break
            msgs = builder.build(frame, t0 + offset)
            if node is not None:
                delay = wall_start + offset - time.monotonic()
                if delay > 0:
                    if stop is not None:
                        if stop.wait(delay):
                            break
                    else:
                        time.sleep(delay)
                for topic, msg in msgs:
                    publishers[topic].publish(msg)
            if recorder is not None:
                for topic, msg in msgs:
                    recorder.write(topic, msg, t0 + offset)
            count += 1
            if bar is not None:
                bar.update(1)
        ok = True
    except KeyboardInterrupt:
        ok = True  # a stopped replay still leaves a valid bag of what was played
    finally:
        if bar is not None:
            bar.close()
        written = recorder.close(keep=ok) if recorder is not None else None
        if node is not None:
            from rclpy.duration import Duration

            # destroying a publisher discards what subscribers have not acknowledged yet
            deadline = time.monotonic() + ack_timeout
            for topic, pub in publishers.items():
                left = max(deadline - time.monotonic(), 0.0)
                if not pub.wait_for_all_acked(Duration(seconds=left)):
                    node.get_logger().warning(f"{topic}: not every message was acknowledged within {ack_timeout} s")
            node.destroy_node()
        if own_context:
            import rclpy

            rclpy.try_shutdown(context=context)
    return PlaybackResult(frames=count, bag_path=written, duration_s=time.monotonic() - wall_start)


def main(argv: list[str] | None = None) -> int:
    """``python -m core3d_ros.tools.player DATASET [--rate HZ] [--bag PATH] [--loop] ...``"""
    from ..config import load_config
    from ..core.datasets import open_dataset

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from rclpy.utilities import remove_ros_args

        user_args = remove_ros_args(["core3d_player", *args])[1:]
    except ImportError:  # pragma: no cover
        user_args = args
    p = argparse.ArgumentParser(prog="core3d_player", description="Publish an RGB-D dataset on core3d's input topics")
    p.add_argument("dataset", help="dataset folder, or 'synthetic' / 'synthetic:SEED'")
    p.add_argument("--kind", default="auto", help="auto | 7scenes | tum | replica | scannet | synthetic")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--rate", type=float, default=10.0, help="frames per second; 0 = the dataset's own timing")
    p.add_argument("--config", help="YAML config: topics, frames and pose type come from its ros.* section")
    p.add_argument("--pose-type", choices=("pose", "odometry", "tf"), default=None)
    p.add_argument("--depth-encoding", choices=DEPTH_ENCODINGS, default="32FC1")
    p.add_argument("--best-effort", action="store_true", help="publish with best-effort QoS (default reliable)")
    p.add_argument("--bag", help="also write a rosbag2 folder here")
    p.add_argument("--bag-only", action="store_true", help="write the bag without publishing")
    p.add_argument("--loop", action="store_true", help="repeat until Ctrl-C")
    p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for subscribers")
    opts = p.parse_args(user_args)
    cfg = load_config(opts.config)
    dataset = open_dataset(opts.dataset, opts.kind, depth=cfg.depth, max_frames=opts.max_frames, stride=opts.stride)
    if opts.bag_only and not opts.bag:
        p.error("--bag-only needs --bag")
    publish = not opts.bag_only
    if publish:
        import rclpy

        rclpy.init(args=["core3d_player", *args])
    try:
        result = publish_dataset(
            dataset,
            opts.rate,
            cfg.ros,
            opts.pose_type,
            bag_path=opts.bag,
            loop=opts.loop,
            depth_encoding=opts.depth_encoding,
            depth_scale=cfg.depth.depth_scale,
            reliable=not opts.best_effort,
            publish=publish,
            wait_for_subscribers=opts.wait,
            progress=True,
        )
    finally:
        if publish:
            import rclpy

            rclpy.try_shutdown()
    print(f"{result.frames} frames in {result.duration_s:.1f} s" + (f"; bag {result.bag_path}" if result.bag_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
