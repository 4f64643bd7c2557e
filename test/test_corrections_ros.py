"""Pose corrections in the ROS layer (ros/corrections.py): a nav_msgs/Path converted by hand, and
the mapping node applying a published path to its map (a fake map that records the batches)
with refusals counted in its rejected counters."""
from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest
from helpers import wait_for

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402

from core3d_ros.core.fusion.corrections import CorrectionStats  # noqa: E402
from core3d_ros.ros import conversions as conv  # noqa: E402
from core3d_ros.ros.corrections import CorrectionError, path_to_corrections  # noqa: E402

DOMAIN_ID = 1 + (os.getpid() * 13) % 230  # one domain per test process (apart from most others)
S = math.sqrt(0.5)


def path(frame="map", stamp=7.0, poses=((1.0, (1.0, 2.0, 0.0), (0, 0, S, S)), (2.5, (0.0, 0.0, 3.0), (0, 0, 0, 1.0)))):
    msg = Path(header=conv.make_header(frame, stamp))
    for t, xyz, q in poses:
        ps = PoseStamped(header=conv.make_header(frame, t))
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in xyz)
        o = ps.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        msg.poses.append(ps)
    return msg


def test_path_to_corrections_by_hand():
    corrections, issued = path_to_corrections(path(), "map")
    assert issued == 7.0 and [s for s, _ in corrections] == [1.0, 2.5]
    # 90 degrees about z at (1, 2, 0): x -> y, y -> -x
    np.testing.assert_allclose(corrections[0][1], [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 0], [0, 0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(corrections[1][1][:3, 3], [0, 0, 3])
    # composed with the camera's extrinsic (camera 0.5 m ahead of the base along its x)
    E = np.eye(4)
    E[0, 3] = 0.5
    corrections, _ = path_to_corrections(path(), "map", E)
    np.testing.assert_allclose(corrections[0][1][:3, 3], [1.0, 2.5, 0.0], atol=1e-12)
    assert path_to_corrections(path(stamp=0.0), "map")[1] is None  # an unstamped path is not ordered


@pytest.mark.parametrize(
    "msg, reason",
    [
        (path(frame="odom"), "wrong_frame"),
        (path(poses=((1.0, (math.nan, 0.0, 0.0), (0, 0, 0, 1.0)),)), "bad_pose"),
        (path(poses=((1.0, (0.0, 0.0, 0.0), (0, 0, 0, 0.0)),)), "bad_pose"),
    ],
)
def test_unusable_paths(msg, reason):
    with pytest.raises(CorrectionError) as e:
        path_to_corrections(msg, "map")
    assert e.value.reason == reason


class RecordingMap:
    """What the node's corrections link needs of the map: apply_corrections (recorded)."""

    def __init__(self):
        self.batches = []

    def apply_corrections(self, corrections, issued=None):
        self.batches.append((corrections, issued))
        if any(s == 99.0 for s, _ in corrections):
            return CorrectionStats(rejected="unknown_stamp", refused={"unknown_stamp": 1})
        return CorrectionStats(frames=len(corrections))


class MapperWithMap:
    def __init__(self, cfg):
        from test_node_ros import RecordingMapper

        self._inner = RecordingMapper(cfg)
        self.cfg, self.encoder = cfg, None
        self.map, self.geometry, self._lock = RecordingMap(), None, threading.RLock()

    def process(self, frame):
        return self._inner.process(frame)

    def snapshot(self, wait=True):
        return self._inner.snapshot(wait)


def test_the_node_applies_a_published_path_and_counts_refusals(ros_context):
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from test_node_ros import Q_OPTICAL, config

    from core3d_ros.ros.node import MappingNode

    node = MappingNode(config(camera_extrinsic=[0.1, 0.0, 0.5, *Q_OPTICAL]), mapper_factory=MapperWithMap, context=ros_context)
    peer = rclpy.create_node("core3d_test_path_peer", context=ros_context)
    ex = MultiThreadedExecutor(num_threads=3, context=ros_context)
    ex.add_node(node)
    ex.add_node(peer)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    try:
        pub = peer.create_publisher(Path, "core3d/keyframe_poses", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
        pub.publish(path())
        assert wait_for(lambda: len(node.mapper.map.batches) == 1, 10)
        (corrections, issued), = node.mapper.map.batches
        assert issued == 7.0
        # base at (1, 2, 0) turned 90 deg about z, camera 0.1 m ahead and 0.5 m up: at (1, 2.1, 0.5), looking along +y
        np.testing.assert_allclose(corrections[0][1][:3, 3], [1.0, 2.1, 0.5], atol=1e-9)
        np.testing.assert_allclose(corrections[0][1][:3, 2], [0.0, 1.0, 0.0], atol=1e-9)
        # one at a time: a path waiting when a newer one comes is superseded (dropped)
        pub.publish(path(poses=((1.0, (math.nan, 0.0, 0.0), (0, 0, 0, 1.0)),)))
        assert wait_for(lambda: node.counters().rejected.get("correction_bad_pose") == 1, 10)
        pub.publish(path(frame="odom"))
        assert wait_for(lambda: node.counters().rejected.get("correction_wrong_frame") == 1, 10)
        pub.publish(path(poses=((99.0, (0.0, 0.0, 0.0), (0, 0, 0, 1.0)),)))
        assert wait_for(lambda: node.counters().rejected.get("correction_unknown_stamp") == 1, 10)
        assert len(node.mapper.map.batches) == 2  # the NaN and wrong-frame paths never reached the map
    finally:
        ex.shutdown(timeout_sec=5)
        th.join(5)
        node.destroy_node()
        peer.destroy_node()
