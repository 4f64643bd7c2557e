"""MappingNode as robot users meet it: parameter services and descriptions, no clash with rclpy's
own Node attributes, TF poses and extrinsics (real tf2_ros where built), compressed inputs and
lens distortion, bad input counted by reason. The mapper is a recording fake."""
from __future__ import annotations

import ast
import math
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import wait_for

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from geometry_msgs.msg import PoseStamped, TransformStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from core3d_ros.config import ConfigError, MapperConfig, describe  # noqa: E402
from core3d_ros.core.camera import CameraIntrinsics  # noqa: E402
from core3d_ros.core.frame import Frame  # noqa: E402
from core3d_ros.core.objects import MapSnapshot  # noqa: E402
from core3d_ros.ros import conversions as conv  # noqa: E402
from core3d_ros.ros import node as node_module  # noqa: E402
from core3d_ros.ros.node import MappingNode  # noqa: E402

DOMAIN_ID = 200 + os.getpid() % 30  # differs from test_node (100-199) and test_ros_e2e (1-99)
W, H = 40, 30
INTR = CameraIntrinsics(W, H, 40.0, 40.0, 19.5, 14.5)
Q_OPTICAL = (-0.5, 0.5, -0.5, 0.5)  # REP 103 optical frame looking along the parent's x


class RecordingMapper:
    def __init__(self, cfg: MapperConfig):
        self.cfg = cfg
        self.encoder = None
        self.frames: list[Frame] = []

    def process(self, frame: Frame) -> Any:
        frame.validate()
        self.frames.append(frame)
        return SimpleNamespace(timings_ms={}, keyframe=True)

    def snapshot(self, wait: bool = True) -> MapSnapshot:
        return MapSnapshot(objects=[])



@pytest.fixture
def ctx(ros_context):
    return ros_context


def config(**ros: Any) -> MapperConfig:
    cfg = MapperConfig()
    cfg.ros.perception = "inline"  # the recording mapper sees every frame the node builds
    cfg.ros.qos_reliability = "reliable"
    cfg.ros.qos_depth = 50
    cfg.ros.publish_period = 0.5
    cfg.ros.work_queue = 50
    cfg.ros.sync_slop = 0.02
    for k, v in ros.items():
        setattr(cfg.ros, k, v)
    return cfg


class Rig:
    """A MappingNode with a recording mapper, a peer node and one executor for both."""

    def __init__(self, c: Any, cfg: MapperConfig, **node_kwargs: Any):
        self.node = MappingNode(cfg, mapper_factory=RecordingMapper, context=c, **node_kwargs)
        self.peer = rclpy.create_node("core3d_test_peer", context=c)
        self.executor = MultiThreadedExecutor(num_threads=4, context=c)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.pubs: dict[str, Any] = {}

    def publishers(self, types: dict[str, tuple[Any, str]]) -> None:
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {k: self.peer.create_publisher(t, topic, qos) for k, (t, topic) in types.items()}
        assert wait_for(lambda: all(p.get_subscription_count() for p in self.pubs.values()), 10), "no discovery"

    def send(self, msgs: dict[str, Any]) -> None:
        for key, msg in msgs.items():
            self.pubs[key].publish(msg)

    def settle(self, frames: int, timeout: float = 15.0) -> bool:
        def done() -> bool:
            c = self.node.counters()
            return c.processed + c.total_rejected >= frames and c.queue_length == 0

        return wait_for(done, timeout)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(5)
        self.node.destroy_node()
        self.peer.destroy_node()


def messages(stamp: float, frame_id: str = "camera_color_optical_frame", pose_xyz=(0.0, 0.0, 0.0), pose_q=(0, 0, 0, 1.0)):
    rng = np.random.default_rng(int(stamp * 1000))
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 3.0, size=(H, W)).astype(np.float32)
    pose = PoseStamped(header=conv.make_header("map", stamp))
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in pose_xyz)
    q = pose.pose.orientation
    q.x, q.y, q.z, q.w = (float(v) for v in pose_q)
    return {
        "rgb": rgb,
        "depth_m": depth,
        "color": conv.rgb_to_image(rgb, "rgb8", stamp=stamp, frame_id=frame_id),
        "depth": conv.depth_to_image(depth, "32FC1", stamp=stamp, frame_id=frame_id),
        "camera_info": conv.intrinsics_to_camera_info(INTR, stamp=stamp, frame_id=frame_id),
        "pose": pose,
    }


RAW_TOPICS = {
    "color": (Image, "camera/color/image_raw"),
    "depth": (Image, "camera/depth/image_raw"),
    "camera_info": (CameraInfo, "camera/color/camera_info"),
}


# --------------------------------------------------------------------------- rclpy.Node attributes


def _attributes_set_by(cls_name: str, source: str) -> set[str]:
    tree = ast.parse(source)
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls_name)
    names: set[str] = set()
    for n in ast.walk(cls):
        targets = []
        if isinstance(n, ast.Assign):
            targets = n.targets
        elif isinstance(n, (ast.AnnAssign, ast.AugAssign)):
            targets = [n.target]
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                    names.add(sub.attr)
    return names


def test_no_attribute_collides_with_rclpy_node(ctx) -> None:
    plain = rclpy.create_node("core3d_plain", context=ctx)
    try:
        taken = set(vars(plain)) | set(dir(Node))
        assert {"_services", "_timers", "_clients", "_parameters"} <= taken  # the introspection works
    finally:
        plain.destroy_node()
    ours = _attributes_set_by("MappingNode", Path(node_module.__file__).read_text(encoding="utf-8"))
    assert len(ours) > 12  # the parse found the node's attributes (its parts keep their own)
    clashes = sorted(ours & taken)
    assert not clashes, f"MappingNode overwrites rclpy.Node attributes: {clashes}"


def test_parameter_services_are_served(ctx) -> None:
    plain = rclpy.create_node("core3d_plain", context=ctx)
    expected = {s.srv_name.rsplit("/", 1)[1] for s in plain.services}
    plain.destroy_node()
    assert "describe_parameters" in expected and len(expected) >= 6
    rig = Rig(ctx, config())
    try:
        served = {s.srv_name.rsplit("/", 1)[1] for s in rig.node.services}
        assert expected <= served, sorted(expected - served)
        # over the graph, as `ros2 param describe` asks
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(rig.peer, "core3d_mapping")
        assert client.wait_for_services(timeout_sec=10)
        future = client.describe_parameters(["fusion.voxel_size", "fusion.merge_interval", "ros.map_frame"])
        assert wait_for(future.done, 10)
        voxel, merge, frame = future.result().descriptors
        meta = describe(MapperConfig, "fusion.voxel_size")
        assert voxel.description.startswith(meta["description"]) and voxel.read_only
        assert (voxel.floating_point_range[0].from_value, voxel.floating_point_range[0].to_value) == meta["range"]
        assert merge.integer_range[0].from_value == describe(MapperConfig, "fusion.merge_interval")["range"][0]
        assert "REP 105" in frame.description
    finally:
        rig.close()


def test_every_parameter_has_a_description(ctx) -> None:
    node = MappingNode(mapper_factory=RecordingMapper, context=ctx)
    try:
        names = [n for n in node._parameters if "." in n]
        assert len(names) > 80
        for name in names:
            d = node.describe_parameter(name)
            assert d.description and not d.description.startswith("core3d config"), name
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    "name, value",
    [("fusion.voxel_size", -0.01), ("fusion.gamma", 1.5), ("ros.work_queue", 0), ("ros.tf_timeout", 60.0)],
)
def test_out_of_range_parameters_fail_at_start_up_naming_the_parameter(ctx, name, value) -> None:
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        MappingNode(mapper_factory=RecordingMapper, context=ctx, parameter_overrides=[Parameter(name, value=value)])


@pytest.mark.parametrize(
    "ros, match",
    [
        ({"camera_extrinsic": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}, "camera_extrinsic"),
        ({"camera_extrinsic": [1.0, 2.0]}, "camera_extrinsic"),
        ({"base_frame": "base_link", "camera_extrinsic": [0.0] * 6 + [1.0]}, "exclusive"),
        ({"pose_type": "tf", "base_frame": "base_link"}, "base_frame"),
        ({"color_transport": "theora"}, "color_transport"),
        ({"depth_qos": "fast"}, "depth_qos"),
    ],
)
def test_bad_input_settings_fail_at_start_up(ctx, ros, match) -> None:
    with pytest.raises(ConfigError, match=match):
        MappingNode(config(**ros), mapper_factory=RecordingMapper, context=ctx)


# --------------------------------------------------------------------------- extrinsic parameter


@pytest.mark.parametrize("pose_type", ["pose", "odometry"])
def test_pose_input_composed_with_the_extrinsic_parameter(ctx, pose_type) -> None:
    from nav_msgs.msg import Odometry

    s = math.sqrt(0.5)
    rig = Rig(ctx, config(pose_type=pose_type, camera_extrinsic=[0.1, 0.0, 0.5, *Q_OPTICAL]))
    try:
        msg_type = PoseStamped if pose_type == "pose" else Odometry
        rig.publishers({**RAW_TOPICS, "pose": (msg_type, "camera/pose")})
        m = messages(5.0, pose_xyz=(1.0, 2.0, 0.0), pose_q=(0, 0, s, s))
        if pose_type == "odometry":  # the base's pose in the odom/map frame, as a robot reports it
            odom = Odometry(header=m["pose"].header, child_frame_id="base_link")
            odom.pose.pose = m["pose"].pose
            m["pose"] = odom
        rig.send({k: m[k] for k in ("color", "depth", "camera_info", "pose")})
        assert rig.settle(1)
        (frame,) = rig.node.mapper.frames
        np.testing.assert_allclose(frame.pose[:3, 3], [1.0, 2.1, 0.5], atol=1e-9)  # hand-computed
        np.testing.assert_allclose(frame.pose[:3, 2], [0.0, 1.0, 0.0], atol=1e-9)  # looking along +y
    finally:
        rig.close()


# --------------------------------------------------------------------------- compressed + distortion


def test_compressed_inputs_and_bad_camera_input_counted_by_reason(ctx) -> None:
    rig = Rig(ctx, config(color_transport="compressed", depth_transport="compressedDepth", pose_qos="reliable"))
    try:
        rig.publishers(
            {
                "color": (CompressedImage, "camera/color/image_raw/compressed"),
                "depth": (CompressedImage, "camera/depth/image_raw/compressedDepth"),
                "camera_info": (CameraInfo, "camera/color/camera_info"),
                "pose": (PoseStamped, "camera/pose"),
            }
        )
        m = messages(1.0)
        rgb_msg = conv.rgb_to_compressed(m["rgb"], "png", stamp=1.0, frame_id="cam")
        depth_msg = conv.depth_to_compressed((m["depth_m"] * 1000).astype(np.uint16), "16UC1", stamp=1.0, frame_id="cam")
        rig.send({"color": rgb_msg, "depth": depth_msg, "camera_info": m["camera_info"], "pose": m["pose"]})
        assert rig.settle(1)
        (frame,) = rig.node.mapper.frames
        np.testing.assert_array_equal(frame.rgb, m["rgb"])
        np.testing.assert_allclose(frame.depth, (m["depth_m"] * 1000).astype(np.uint16) / 1000.0, atol=1e-6)

        m = messages(2.0)  # colour that is not an image
        junk = CompressedImage(header=conv.make_header("cam", 2.0), format="jpeg", data=b"\xff\xd8 not really a jpeg")
        depth2 = conv.depth_to_compressed(np.full((H, W), 1500, np.uint16), "16UC1", stamp=2.0, frame_id="cam")
        rig.send({"color": junk, "depth": depth2, "camera_info": m["camera_info"], "pose": m["pose"]})
        m = messages(3.0)  # NaN distortion
        info = m["camera_info"]
        info.d = [math.nan, 0.0, 0.0, 0.0, 0.0]
        rgb3 = conv.rgb_to_compressed(m["rgb"], "png", stamp=3.0, frame_id="cam")
        depth3 = conv.depth_to_compressed(np.full((H, W), 1500, np.uint16), "16UC1", stamp=3.0, frame_id="cam")
        rig.send({"color": rgb3, "depth": depth3, "camera_info": info, "pose": m["pose"]})
        m = messages(4.0)  # a vendor distortion model core3d cannot undo
        info = m["camera_info"]
        info.distortion_model, info.d = "vendor_model", [0.2, 0.0, 0.0, 0.0, 0.0]
        rgb4 = conv.rgb_to_compressed(m["rgb"], "png", stamp=4.0, frame_id="cam")
        depth4 = conv.depth_to_compressed(np.full((H, W), 1500, np.uint16), "16UC1", stamp=4.0, frame_id="cam")
        rig.send({"color": rgb4, "depth": depth4, "camera_info": info, "pose": m["pose"]})
        assert rig.settle(4)
        c = rig.node.counters()
        assert c.processed == 1 and len(rig.node.mapper.frames) == 1  # nothing bad reached the map
        assert c.rejected == {"bad_image": 1, "bad_distortion": 1, "unsupported_distortion": 1}
    finally:
        rig.close()


# --------------------------------------------------------------------------- TF (real tf2_ros)


def _tf(parent: str, child: str, stamp: float, xyz=(0.0, 0.0, 0.0), q=(0.0, 0.0, 0.0, 1.0)) -> TransformStamped:
    t = TransformStamped(header=conv.make_header(parent, stamp), child_frame_id=child)
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in xyz)
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return t


@pytest.fixture
def tf2_ros():
    return pytest.importorskip(
        "tf2_ros", reason="tf2_ros not built (scripts/setup.sh builds it when ../shared/ros2-src exists; on a robot: apt)"
    )


def test_tf_pose_and_bad_tf_counted_by_reason(ctx, tf2_ros) -> None:
    s = math.sqrt(0.5)
    rig = Rig(ctx, config(pose_type="tf", tf_timeout=0.2))
    try:
        rig.publishers(RAW_TOPICS)
        static = tf2_ros.StaticTransformBroadcaster(rig.peer)
        static.sendTransform(
            [
                _tf("base_link", "camera_color_optical_frame", 0.0, (0.1, 0.0, 0.5), Q_OPTICAL),
                _tf("lens_a", "lens_b", 0.0),  # a loop: lens_a -> lens_b -> lens_a
                _tf("lens_b", "lens_a", 0.0),
            ]
        )
        moving = tf2_ros.TransformBroadcaster(rig.peer)
        for t in (9.0, 10.0, 11.0):  # map -> base_link, the robot at (1, 2) facing +y
            moving.sendTransform(_tf("map", "base_link", t, (1.0, 2.0, 0.0), (0, 0, s, s)))
        assert wait_for(
            lambda: rig.node._frames.tf_pose.tf.buffer.can_transform("map", "camera_color_optical_frame", rclpy.time.Time(seconds=10)),
            10,
        ), "TF did not arrive"

        def send(stamp: float, frame_id: str) -> None:
            m = messages(stamp, frame_id=frame_id)
            rig.send({k: m[k] for k in ("color", "depth", "camera_info")})

        send(10.0, "camera_color_optical_frame")  # good: TF at the image stamp
        assert rig.settle(1)
        send(50.0, "camera_color_optical_frame")  # TF from the past only: image newer than any TF
        send(51.0, "unknown_camera_frame")  # a TF that never arrives
        send(52.0, "lens_b")  # a loop in TF
        assert rig.settle(4)
        c = rig.node.counters()
        (frame,) = rig.node.mapper.frames
        np.testing.assert_allclose(frame.pose[:3, 3], [1.0, 2.1, 0.5], atol=1e-9)
        np.testing.assert_allclose(frame.pose[:3, 2], [0.0, 1.0, 0.0], atol=1e-9)
        assert c.processed == 1
        assert c.rejected == {"tf_extrapolation": 1, "no_transform": 1, "tf_loop": 1}, c.rejected
    finally:
        rig.close()


def test_tf_from_the_future_is_refused(ctx, tf2_ros) -> None:
    rig = Rig(ctx, config(pose_type="tf", tf_timeout=0.1))
    try:
        rig.publishers(RAW_TOPICS)
        moving = tf2_ros.TransformBroadcaster(rig.peer)
        for t in (100.0, 101.0):  # only TFs newer than the image
            moving.sendTransform(_tf("map", "cam", t))
        assert wait_for(lambda: rig.node._frames.tf_pose.tf.buffer.can_transform("map", "cam", rclpy.time.Time(seconds=100)), 10)
        m = messages(20.0, frame_id="cam")
        rig.send({k: m[k] for k in ("color", "depth", "camera_info")})
        assert rig.settle(1)
        assert rig.node.counters().rejected == {"tf_extrapolation": 1} and not rig.node.mapper.frames
    finally:
        rig.close()


def test_tf_with_a_zero_or_nan_quaternion_is_a_bad_transform(tf2_ros) -> None:
    """A transform from the TF buffer that is no rigid motion is refused as ``bad_transform``."""
    from core3d_ros.core.frame import FrameError
    from core3d_ros.ros.tf import TfLookup

    lookup = TfLookup.__new__(TfLookup)  # the buffer stands in for tf2's, no node needed
    lookup._tf2, lookup.timeout = tf2_ros, None
    for q in ((0.0, 0.0, 0.0, 0.0), (math.nan, 0.0, 0.0, 1.0)):
        lookup.buffer = SimpleNamespace(lookup_transform=lambda *a, q=q, **k: _tf("map", "cam", 1.0, q=q))
        with pytest.raises(FrameError) as err:
            lookup.matrix("map", "cam", None)
        assert err.value.reason == "bad_transform" and "quaternion" in str(err.value)


def test_base_pose_composed_with_the_static_extrinsic_from_tf(ctx, tf2_ros) -> None:
    s = math.sqrt(0.5)
    rig = Rig(ctx, config(base_frame="base_link", tf_timeout=0.5))
    try:
        rig.publishers({**RAW_TOPICS, "pose": (PoseStamped, "camera/pose")})
        static = tf2_ros.StaticTransformBroadcaster(rig.peer)
        m = messages(7.0, pose_xyz=(1.0, 2.0, 0.0), pose_q=(0, 0, s, s))
        # before the static TF exists: counted, not mapped
        rig.send({k: m[k] for k in ("color", "depth", "camera_info", "pose")})
        assert rig.settle(1)
        assert rig.node.counters().rejected == {"no_transform": 1}
        static.sendTransform(_tf("base_link", "camera_color_optical_frame", 0.0, (0.1, 0.0, 0.5), Q_OPTICAL))
        m = messages(8.0, pose_xyz=(1.0, 2.0, 0.0), pose_q=(0, 0, s, s))
        rig.send({k: m[k] for k in ("color", "depth", "camera_info", "pose")})
        assert rig.settle(2)
        (frame,) = rig.node.mapper.frames
        np.testing.assert_allclose(frame.pose[:3, 3], [1.0, 2.1, 0.5], atol=1e-9)
        np.testing.assert_allclose(frame.pose[:3, 2], [0.0, 1.0, 0.0], atol=1e-9)
    finally:
        rig.close()


def test_object_messages_convert_only_what_changed() -> None:
    from core3d_ros.ros.publishing import ObjectMessages

    built: list[int] = []

    def build(obj):
        built.append(obj.id)
        return f"msg{obj.id}"

    a, b, c = (SimpleNamespace(id=i) for i in (1, 2, 3))
    msgs = ObjectMessages(build)
    assert msgs.update([a, b]) == (["msg1", "msg2"], ["msg1", "msg2"], [])
    assert msgs.update([a, b]) == (["msg1", "msg2"], [], []) and built == [1, 2]  # same objects: nothing built
    b2 = SimpleNamespace(id=2)  # object 2 changed (a new ObjectInfo), 1 left, 3 appeared
    assert msgs.update([b2, c]) == (["msg2", "msg3"], ["msg2", "msg3"], [1])
    assert built == [1, 2, 2, 3]


def test_map_cloud_rebuilds_changed_objects_and_stays_under_its_bound(monkeypatch) -> None:
    """core3d/cloud: unchanged objects are not rebuilt, an unchanged map publishes nothing,
    and a map beyond ``max_points`` voxels is thinned evenly to at most that many."""
    from core3d_ros.core.objects import ObjectInfo, OrientedBox
    from core3d_ros.ros import publishing
    from core3d_ros.ros.publishing import MapCloud

    built: list[int] = []
    real = conv.object_cloud
    monkeypatch.setattr(publishing, "object_cloud", lambda obj, step=1: built.append(obj.id) or real(obj, step))

    def obj(i: int, n: int) -> ObjectInfo:
        pts = (np.arange(3 * n, dtype=np.float32).reshape(n, 3) + 1000 * i) * 0.01
        return ObjectInfo(i, pts, np.zeros((n, 3), np.uint8), OrientedBox.from_points(pts), 1, 0.0, 0.0)

    a, b = obj(1, 40), obj(2, 20)
    cloud = MapCloud(max_points=100)
    rec = cloud.update([a, b])
    assert len(rec) == 60 and cloud.step == 1 and built == [1, 2]
    np.testing.assert_array_equal(rec["x"][:40], a.points[:, 0])
    assert np.all(rec["rgb"][40:] == conv.object_cloud(b)["rgb"][0])
    built.clear()
    assert cloud.update([a, b]) is None and built == []  # nothing changed: the latched cloud stands
    b2 = obj(2, 30)
    rec = cloud.update([a, b2])
    assert len(rec) == 70 and built == [2]  # only the changed object
    assert len(cloud.update([b2])) == 30  # one left
    big = obj(3, 250)  # 280 voxels in all, over a bound of 100: every 4th voxel of each
    rec = cloud.update([b2, big])
    assert cloud.step == 4 and len(rec) == len(b2.points[::4]) + len(big.points[::4]) <= 100
    np.testing.assert_array_equal(rec["y"][-len(big.points[::4]):], big.points[::4, 1])
    msg = conv.records_to_cloud(rec, frame_id="map")
    assert msg.width == len(rec) and msg.is_dense and len(msg.data) == 16 * len(rec)
