"""MappingNode in-process with a fake mapper and query engine, over real rclpy topics/services."""
from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
from helpers import wait_for

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from core3d.msg import ObjectArray  # noqa: E402
from core3d.srv import GetObject, LoadMap, Query, SaveMap  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from core3d_ros.config import ConfigError, MapperConfig  # noqa: E402
from core3d_ros.core.camera import CameraIntrinsics  # noqa: E402
from core3d_ros.core.frame import Frame  # noqa: E402
from core3d_ros.core.objects import MapSnapshot, ObjectInfo, OrientedBox  # noqa: E402
from core3d_ros.ros import conversions as conv  # noqa: E402
from core3d_ros.ros.node import MappingNode  # noqa: E402

DOMAIN_ID = 100 + os.getpid() % 100  # one domain per test process: no cross-talk
W, H = 40, 30
INTR = CameraIntrinsics(W, H, 40.0, 40.0, 19.5, 14.5)


# --------------------------------------------------------------------------- fakes


class FakeMapper:
    """Records frames; each processed frame adds one object. Map files are JSON id lists."""

    def __init__(self, cfg: MapperConfig):
        self.cfg = cfg
        self.encoder = None
        self.last_pose = None
        self.frames: list[Frame] = []
        self.objects: list[ObjectInfo] = []
        self.lock = threading.Lock()

    @staticmethod
    def _object(oid: int) -> ObjectInfo:
        pts = (np.random.default_rng(oid).normal(size=(20, 3)) * 0.05 + [oid, 0, 1]).astype(np.float32)
        return ObjectInfo(
            id=oid,
            points=pts,
            colors=np.full((20, 3), 200, np.uint8),
            box=OrientedBox.from_points(pts),
            num_observations=2,
            first_seen=1.0,
            last_seen=2.0,
            label="mug",
            best_view=np.zeros((4, 5, 3), np.uint8),
        )

    def process(self, frame: Frame) -> Any:
        frame.validate()
        with self.lock:
            self.frames.append(frame)
            self.last_pose = frame.pose
            self.objects.append(self._object(len(self.objects) + 1))
        return SimpleNamespace(timings_ms={"segment": 1.5, "fusion": 0.5}, segments=1, keyframe=True)

    def snapshot(self, wait: bool = True) -> MapSnapshot:
        with self.lock:
            return MapSnapshot(objects=list(self.objects), frames=len(self.frames))

    def save(self, path: str) -> str:
        with self.lock:
            Path(path).write_text(json.dumps([o.id for o in self.objects]))
        return path

    def load(self, path: str) -> None:
        try:
            ids = json.loads(Path(path).read_text())
            assert isinstance(ids, list)
        except (ValueError, AssertionError) as e:
            raise ValueError(f"damaged map file {path}: {e}") from None
        with self.lock:
            self.objects = [self._object(i) for i in ids]

    def clear(self) -> None:
        with self.lock:
            self.objects = []


class FakeEngine:
    def answer(self, snapshot: MapSnapshot, text: str, top_k: int | None = None, viewpoint: Any = None, graph: Any = None) -> Any:
        if not text.strip():
            raise ValueError("empty query")
        if text == "boom":
            raise RuntimeError("engine bug")
        parsed = SimpleNamespace(text=text, target="mug", attributes=["red"], relations=[("on", "table")])
        hits = [
            SimpleNamespace(object_id=o.id, score=1.0 / (r + 1), similarity=math.nan, relation_score=1.0, label="mug")
            for r, o in enumerate(snapshot.objects[: top_k or 5])
        ]
        hits.append(SimpleNamespace(object_id=9999, score=0.0, similarity=0.0, relation_score=0.0, label="gone"))
        return SimpleNamespace(parsed=parsed, results=hits, semantic=False, message="ranked by colour only")


# --------------------------------------------------------------------------- harness


class Harness:
    def __init__(self, ctx: Any, node: MappingNode):
        self.ctx = ctx
        self.node = node
        self.peer = rclpy.create_node("core3d_test_peer", context=ctx)
        ros = node.cfg.ros
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {
            "color": self.peer.create_publisher(Image, ros.color_topic, qos),
            "depth": self.peer.create_publisher(Image, ros.depth_topic, qos),
            "camera_info": self.peer.create_publisher(CameraInfo, ros.info_topic, qos),
            "pose": self.peer.create_publisher(PoseStamped, ros.pose_topic, qos),
        }
        self.clients: dict[str, Any] = {}
        self.executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        self.executor.add_node(node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        assert wait_for(lambda: all(p.get_subscription_count() for p in self.pubs.values()), 10), "no discovery"

    def send(self, stamp: float, skip: tuple[str, ...] = (), **override: Any) -> None:
        msgs = frame_messages(stamp)
        msgs.update(override)
        for key in ("color", "depth", "camera_info", "pose"):
            if key not in skip:
                self.pubs[key].publish(msgs[key])

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        # clients live as long as the peer: destroying one while the executor spins races
        client = self.clients.get(name) or self.clients.setdefault(name, self.peer.create_client(srv_type, name))
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"service {name} did not answer"
        return future.result()

    def subscribe(self, msg_type: Any, topic: str, latched: bool = True) -> list:
        got: list = []
        qos = QoSProfile(
            depth=10,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        self.peer.create_subscription(msg_type, topic, got.append, qos)
        return got

    def close(self) -> None:
        # (rclpy may print "exception was never retrieved: cannot use Destroyable" here: a task
        # of its own executor can trigger the executor's guard condition after shutdown
        # destroyed it; harmless.)
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(5)
        self.node.destroy_node()
        self.peer.destroy_node()



def frame_messages(stamp: float, frame_id: str = "cam") -> dict[str, Any]:
    rng = np.random.default_rng(int(stamp * 1000))
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 3.0, size=(H, W)).astype(np.float32)
    pose = PoseStamped(header=conv.make_header("map", stamp))
    pose.pose.orientation.w = 1.0
    pose.pose.position.x = stamp
    return {
        "color": conv.rgb_to_image(rgb, "bgr8", stamp=stamp, frame_id=frame_id),
        "depth": conv.depth_to_image(depth, "16UC1", stamp=stamp, frame_id=frame_id),
        "camera_info": conv.intrinsics_to_camera_info(INTR, stamp=stamp, frame_id=frame_id),
        "pose": pose,
    }


def settled(node: MappingNode, frames: int) -> Callable[[], bool]:
    def check() -> bool:
        c = node.counters()
        return c.processed + c.total_rejected >= frames and c.queue_length == 0

    return check



def make_config(**ros: Any) -> MapperConfig:
    cfg = MapperConfig()
    cfg.ros.perception = "inline"  # these tests drive the mapper (a fake) from the node's worker
    cfg.ros.qos_reliability = "reliable"
    cfg.ros.publish_period = 0.2
    cfg.ros.sync_queue = 30  # bursts reach the node's callbacks skewed across topics
    cfg.ros.work_queue = 50
    cfg.ros.qos_depth = 100  # the tests publish in bursts; keep every message
    cfg.ros.max_pose_age = 0.2
    cfg.ros.sync_slop = 0.02
    for k, v in ros.items():
        setattr(cfg.ros, k, v)
    return cfg


def start(ctx: Any, **ros: Any) -> Harness:
    node = MappingNode(
        make_config(**ros), mapper_factory=FakeMapper, engine_factory=lambda cfg, m: FakeEngine(), context=ctx
    )
    return Harness(ctx, node)


@pytest.fixture
def harness(ros_context):
    h = start(ros_context)
    yield h
    h.close()


# --------------------------------------------------------------------------- tests


def test_parameters_mirror_the_config(ros_context, tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("fusion:\n  voxel_size: 0.05\nros:\n  map_frame: world\n")
    overrides = [
        Parameter("config_file", value=str(yaml_file)),
        Parameter("fusion.gamma", value=1),  # an integer for a float parameter is accepted
        Parameter("retrieval.vocabulary", value=["mug", "chair"]),
        Parameter("segmenter.granularity_levels", value=[1, 2]),
        Parameter("ros.map_frame", value="odom"),  # command line beats the YAML file
    ]
    node = MappingNode(mapper_factory=FakeMapper, context=ros_context, parameter_overrides=overrides)
    try:
        cfg = node.cfg
        assert cfg.fusion.voxel_size == 0.05 and cfg.fusion.gamma == 1.0 and isinstance(cfg.fusion.gamma, float)
        assert cfg.retrieval.vocabulary == ["mug", "chair"]
        assert cfg.segmenter.granularity_levels == [1, 2]
        assert cfg.ros.map_frame == "odom"
        assert node.get_parameter("fusion.voxel_size").value == 0.05
        assert node.get_parameter("depth.max_depth").value == MapperConfig().depth.max_depth
        assert node.get_parameter("segmenter.geometric.cluster_eps").value == MapperConfig().segmenter.geometric.cluster_eps
        result = node.set_parameters([Parameter("fusion.voxel_size", value=0.1)])[0]
        assert not result.successful and "read-only" in result.reason
    finally:
        node.destroy_node()
    node = MappingNode(mapper_factory=FakeMapper, context=ros_context)
    try:  # an empty list default is declared with its list type
        assert node.cfg.retrieval.vocabulary == []
    finally:
        node.destroy_node()


def test_bad_parameter_values_fail_at_start_up(ros_context) -> None:
    with pytest.raises(ConfigError, match="pose_type"):
        MappingNode(
            mapper_factory=FakeMapper,
            context=ros_context,
            parameter_overrides=[Parameter("ros.pose_type", value="gps")],
        )
    with pytest.raises(ConfigError, match="voxel_size"):
        MappingNode(
            mapper_factory=FakeMapper,
            context=ros_context,
            parameter_overrides=[Parameter("fusion.voxel_size", value="big")],
        )
    with pytest.raises(ConfigError, match="instance_topic"):
        MappingNode(
            mapper_factory=FakeMapper,
            context=ros_context,
            parameter_overrides=[Parameter("segmenter.name", value="oracle")],
        )


@pytest.mark.parametrize(
    "name, value",
    [("fusion.voxel_size", 0.0), ("ros.work_queue", 0), ("ros.pose_type", "gps"), ("retrieval.llm.candidates", 40)],
)
def test_bad_parameters_are_refused_in_the_words_of_the_core3d_command(ros_context, tmp_path, capsys, name, value) -> None:
    """One validation (config.validate): a node parameter and `core3d map --config` give one line, the same."""
    import yaml

    from core3d_ros.cli import main
    from core3d_ros.config import unflatten

    with pytest.raises(ConfigError) as info:
        MappingNode(mapper_factory=FakeMapper, context=ros_context, parameter_overrides=[Parameter(name, value=value)])
    node_message = str(info.value)
    assert node_message.startswith(f"{name} must be ") and "\n" not in node_message
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(unflatten({name: value})))
    assert main(["map", "synthetic", "--frames", "2", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"core3d: {node_message}"]


def test_tf_pose_needs_tf2(ros_context) -> None:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="tf2_ros"):
            MappingNode(make_config(pose_type="tf"), mapper_factory=FakeMapper, context=ros_context)
    else:  # with tf2_ros installed the node starts
        MappingNode(make_config(pose_type="tf"), mapper_factory=FakeMapper, context=ros_context).destroy_node()


def marker_state(arrays: list) -> dict:
    """The markers an RViz display would hold after receiving ``arrays`` in order."""
    state: dict = {}
    for arr in list(arrays):
        for m in arr.markers:
            if m.action == Marker.DELETEALL:
                state.clear()
            elif m.action == Marker.DELETE:
                state.pop((m.ns, m.id), None)
            else:
                state[(m.ns, m.id)] = m
    return state


def test_valid_and_hostile_messages_are_counted_by_reason(harness: Harness) -> None:
    h, node = harness, harness.node
    objects = h.subscribe(ObjectArray, "core3d/objects")
    markers = h.subscribe(MarkerArray, "core3d/markers")
    cloud = h.subscribe(PointCloud2, "core3d/cloud")
    diags = h.subscribe(DiagnosticArray, "/diagnostics", latched=False)

    t = 10.0
    h.send(t)  # valid
    t += 1
    bad = frame_messages(t)["color"]
    bad.data = bytes(bad.data)[:-7]  # short buffer
    h.send(t, color=bad)
    t += 1
    bad = frame_messages(t)["color"]
    bad.encoding = "yuv422"  # unsupported colour encoding
    h.send(t, color=bad)
    t += 1
    bad = frame_messages(t)["depth"]
    bad.encoding = "rgb8"  # colour encoding on the depth topic
    h.send(t, depth=bad)
    t += 1
    h.send(t, depth=conv.depth_to_image(np.ones((H // 2, W // 2), np.float32), stamp=t))  # size mismatch
    t += 1
    h.send(t, depth=conv.depth_to_image(np.full((H, W), np.nan, np.float32), stamp=t))  # all NaN
    t += 1
    h.send(t, depth=conv.depth_to_image(np.zeros((H, W), np.float32), "16UC1", stamp=t))  # all zero
    t += 1
    h.send(t, camera_info=CameraInfo(header=conv.make_header("cam", t), width=W, height=H))  # zero K
    t += 1
    nan_pose = frame_messages(t)["pose"]
    nan_pose.pose.orientation.x = math.nan
    h.send(t, pose=nan_pose)
    t += 1
    stale = frame_messages(t)["pose"]
    stale.header.stamp = conv.to_time(t - 0.5)
    h.send(t, pose=stale)  # only pose is half a second old: stale (decided by the next pose)
    t += 1
    h.send(t)  # valid
    # Which set is "older than the last decided one" depends on arrival across topics, so let
    # everything so far be decided first.
    assert wait_for(settled(node, 11), 15), node.counters()
    h.send(t - 5.5)  # a whole set older than what was already mapped: out of order
    assert wait_for(lambda: node.counters().rejected.get("out_of_order") == 1, 10), node.counters()
    t += 1
    h.send(t)  # valid; the node survived all of the above
    frames = 13
    assert wait_for(settled(node, frames), 15), node.counters()
    c = node.counters()
    assert c.processed == 3, c
    expected = {
        "bad_image": 3,
        "size_mismatch": 1,
        "no_valid_depth": 2,
        "bad_camera_info": 1,
        "bad_pose": 1,
        "stale_pose": 1,
        "out_of_order": 1,
    }
    for reason, n in expected.items():
        assert c.rejected.get(reason, 0) == n, (reason, c.rejected)
    assert c.total_rejected == frames - 3
    assert c.frames_received == frames
    assert c.timings_ms["segment"] == 1.5 and "convert" in c.timings_ms
    assert len(node.mapper.frames) == 3
    f = node.mapper.frames[-1]
    assert f.rgb.shape == (H, W, 3) and f.depth.dtype == np.float32 and f.pose[0, 3] == pytest.approx(t)

    # periodic outputs
    assert wait_for(lambda: objects and len(objects[-1].objects) == 3, 5)
    # markers come as changes: all of them (DELETEALL first) for a new subscriber, then only
    # the changed objects' (and DELETE for those that left); replayed, they give the map's
    assert wait_for(lambda: len(marker_state(markers)) == 2 * 3, 5), [len(m.markers) for m in markers]
    assert markers[0].markers[0].action == Marker.DELETEALL
    assert wait_for(lambda: cloud and cloud[-1].width == 60, 5)

    def diag_has_counts() -> bool:
        if not diags:
            return False
        values = {kv.key: kv.value for kv in diags[-1].status[0].values}
        return values.get("frames_processed") == "3" and values.get("rejected_bad_image") == "3"

    assert wait_for(diag_has_counts, 5)
    values = {kv.key: kv.value for kv in diags[-1].status[0].values}
    assert values["objects"] == "3" and "time_segment_ms" in values


def test_missing_pose(ros_context) -> None:
    h = start(ros_context, sync_queue=3)
    node = h.node
    try:
        for k in range(6):  # no pose at all: frames wait, then queue overflow decides "no_pose"
            h.send(1.0 + k, skip=("pose",))
            time.sleep(0.01)
        assert wait_for(lambda: node.counters().rejected.get("no_pose", 0) >= 3, 10), node.counters()
        c = node.counters()
        assert c.processed == 0 and set(c.rejected) == {"no_pose"}
        assert node._sync.queue_lengths()["color"] <= node.cfg.ros.sync_queue
    finally:
        h.close()


def test_mapper_failure_is_counted_and_the_worker_survives(harness: Harness) -> None:
    h, node = harness, harness.node
    real_process = node.mapper.process
    calls = []

    def flaky(frame: Frame) -> Any:
        calls.append(frame.index)
        if len(calls) == 1:
            raise RuntimeError("model crashed")
        return real_process(frame)

    node.mapper.process = flaky
    for k in range(3):
        h.send(1.0 + k)
    assert wait_for(settled(node, 3), 10), node.counters()
    c = node.counters()
    assert c.rejected == {"error": 1} and c.processed == 2
    assert calls == [0, 1, 2]  # frame indices are 0-based and consecutive


def test_work_queue_drops_oldest_when_full(ros_context) -> None:
    node = MappingNode(
        make_config(work_queue=2), mapper_factory=FakeMapper, engine_factory=lambda c, m: FakeEngine(), context=ros_context
    )
    try:
        node.stop_worker()  # nobody consumes: the queue must stay bounded
        from core3d_ros.ros.sync import SyncedSet

        for k in range(5):
            node._enqueue(SyncedSet(float(k), {}, {}))
        c = node.counters()
        assert c.dropped == 3 and c.queue_length == 2 and c.synced == 5
        assert [s.stamp for s in node._worker.waiting_items()] == [3.0, 4.0]
    finally:
        node.destroy_node()


def test_services(ros_context, tmp_path: Path) -> None:
    h = start(ros_context, maps_dir=str(tmp_path))
    try:
        _check_services(h, tmp_path)
    finally:
        h.close()


def _check_services(h: Harness, tmp_path: Path) -> None:
    node = h.node
    for k in range(3):
        h.send(1.0 + k)
    assert wait_for(lambda: node.counters().processed == 3, 10), node.counters()
    query_markers = h.subscribe(MarkerArray, "core3d/query_markers")

    # query
    resp = h.call(Query, "core3d/query", Query.Request(text=""))
    assert not resp.success and "empty" in resp.message
    resp = h.call(Query, "core3d/query", Query.Request(text="boom"))
    assert not resp.success and "engine bug" in resp.message
    resp = h.call(Query, "core3d/query", Query.Request(text="red mug on the table", top_k=2, include_points=True, include_best_view=True))
    assert resp.success and resp.message == "ranked by colour only" and not resp.semantic
    assert resp.parsed.text == "red mug on the table" and resp.parsed.target == "mug"
    assert list(resp.parsed.relations) == ["on"] and list(resp.parsed.anchors) == ["table"]
    assert [r.object.id for r in resp.results] == [1, 2]  # the unknown id 9999 is skipped
    assert math.isnan(resp.results[0].similarity) and resp.results[0].score == 1.0
    assert resp.results[0].points.width == 20 and resp.results[0].best_view.encoding == "rgb8"
    assert wait_for(lambda: query_markers and len(query_markers[-1].markers) == 1 + 3 * 2, 5)

    # get_object
    resp = h.call(GetObject, "core3d/get_object", GetObject.Request(id=2, include_points=True))
    assert resp.success and resp.object.id == 2 and resp.object.label == "mug" and resp.points.width == 20
    resp = h.call(GetObject, "core3d/get_object", GetObject.Request(id=77))
    assert not resp.success and "77" in resp.message

    # save without a path and without ros.map_path
    resp = h.call(SaveMap, "core3d/save_map", SaveMap.Request(path=""))
    assert not resp.success and "map_path" in resp.message
    path = tmp_path / "map.npz"
    resp = h.call(SaveMap, "core3d/save_map", SaveMap.Request(path="map"))  # inside ros.maps_dir
    assert resp.success and resp.path == str(path) and path.exists(), resp.message

    # clear, then load back
    resp = h.call(Trigger, "core3d/clear_map", Trigger.Request())
    assert resp.success and len(node.mapper.snapshot().objects) == 0
    resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path=str(path)))
    assert resp.success and resp.num_objects == 3

    # a damaged file leaves the map untouched
    damaged = tmp_path / "damaged.npz"
    damaged.write_text("{not json")
    resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path=str(damaged)))
    assert not resp.success and "damaged" in resp.message and resp.num_objects == 3
    resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path=str(tmp_path / "missing.npz")))
    assert not resp.success and resp.num_objects == 3
    assert len(node.mapper.snapshot().objects) == 3
    assert node.counters().queries == 3


def test_map_path_parameter_used_for_save_and_start_up_load(ros_context, tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    path.write_text(json.dumps([5, 6]))
    node = MappingNode(
        make_config(map_path=str(path), maps_dir=str(tmp_path)), mapper_factory=FakeMapper, context=ros_context
    )
    h = Harness(ros_context, node)
    try:
        assert [o.id for o in node.mapper.snapshot().objects] == [5, 6]  # loaded at start-up
        node.mapper.clear()
        resp = h.call(SaveMap, "core3d/save_map", SaveMap.Request(path=""))
        assert resp.success and resp.path == str(path) and json.loads(path.read_text()) == []
    finally:
        h.close()


# --------------------------------------------------------------------------- issue 10


def _poisoned(oid: int) -> ObjectInfo:
    """An object as a map file with NaN / inf times used to produce (now refused by load_map)."""
    o = FakeMapper._object(oid)
    o.first_seen, o.last_seen = math.nan, math.inf
    return o


def _diag_values(diags: list) -> dict[str, str]:
    return {kv.key: kv.value for kv in diags[-1].status[0].values} if diags else {}


def test_callback_errors_are_answered_counted_and_the_node_keeps_serving(ros_context, tmp_path: Path) -> None:
    """Fault 1: an exception outside a callback's own try block killed the executor thread."""
    h = start(ros_context, maps_dir=str(tmp_path), publish_period=0.1)
    node = h.node
    try:
        diags = h.subscribe(DiagnosticArray, "/diagnostics", latched=False)
        h.subscribe(ObjectArray, "core3d/objects")  # publish_map converts objects for subscribers
        h.send(1.0)
        assert wait_for(lambda: node.counters().processed == 1, 10), node.counters()
        node.mapper.objects.append(_poisoned(7))  # conversion to a ROS Time raises for NaN
        resp = h.call(GetObject, "core3d/get_object", GetObject.Request(id=7))
        assert not resp.success and "internal error in get_object" in resp.message
        resp = h.call(Query, "core3d/query", Query.Request(text="mug"))
        assert not resp.success and "internal error in query" in resp.message and not resp.results
        assert wait_for(lambda: node.counters().errors.get("publish_map", 0) >= 1, 5), node.counters()
        # a subscription callback that raises is counted too, and the next frames still map
        real_add = node._sync.add
        calls = []

        def add_once_broken(key, msg, stamp):
            calls.append(key)
            if len(calls) == 1:
                raise RuntimeError("sync bug")
            return real_add(key, msg, stamp)

        node._sync.add = add_once_broken
        h.send(2.0)
        h.send(3.0)
        node.mapper.objects.remove(next(o for o in node.mapper.objects if o.id == 7))
        assert wait_for(lambda: node.counters().processed >= 2, 10), node.counters()
        errors = node.counters().errors
        assert errors["get_object"] == 1 and errors["query"] == 1 and errors["input_color"] == 1, errors
        # the node still answers every service
        assert h.call(GetObject, "core3d/get_object", GetObject.Request(id=1)).success
        assert h.call(Query, "core3d/query", Query.Request(text="mug")).success
        assert h.call(Trigger, "core3d/clear_map", Trigger.Request()).success
        assert wait_for(lambda: _diag_values(diags).get("errors_get_object") == "1", 5)
        values = _diag_values(diags)
        assert values["errors_query"] == "1" and int(values["errors_publish_map"]) >= 1
        assert diags[-1].status[0].level == DiagnosticStatus.ERROR
    finally:
        h.close()


def test_executor_failure_exits_non_zero(tmp_path: Path) -> None:
    """Fault 1: when the spin thread died, the process exited 0 and was not respawned."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from rclpy.executors import MultiThreadedExecutor\n"
        "def spin(self):\n"
        "    raise RuntimeError('executor failure')\n"
        "MultiThreadedExecutor.spin = spin\n"
        "from core3d_ros.ros import node\n"
        "sys.exit(node.main(['--ros-args', '-p', 'ros.maps_dir:=" + str(tmp_path) + "']))\n"
    )
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "executor failure" in proc.stderr


def test_pose_in_another_frame_is_refused_and_counted(harness: Harness) -> None:
    """Fault 7: a pose whose frame_id is not ros.map_frame was mapped as given."""
    h, node = harness, harness.node
    for k, frame_id in enumerate(["odom", "", "map"]):
        t = 1.0 + k
        pose = frame_messages(t)["pose"]
        pose.header.frame_id = frame_id
        h.send(t, pose=pose)
    assert wait_for(settled(node, 3), 10), node.counters()
    c = node.counters()
    assert c.rejected == {"wrong_frame": 2} and c.processed == 1
    assert len(node.mapper.frames) == 1


def test_map_files_stay_in_the_maps_directory(ros_context, tmp_path: Path) -> None:
    """Fault 6: save_map wrote anywhere; load_map("") answered num_objects 0 for a full map."""
    maps = tmp_path / "maps"
    outside = tmp_path / "outside"
    outside.mkdir()
    h = start(ros_context, maps_dir=str(maps))
    node = h.node
    try:
        for k in range(3):
            h.send(1.0 + k)
        assert wait_for(lambda: node.counters().processed == 3, 10), node.counters()
        for bad in ("/nonexistent_dir/sub/map.npz", "/etc/passwd", str(outside / "m.npz"), "../escape"):
            resp = h.call(SaveMap, "core3d/save_map", SaveMap.Request(path=bad))
            assert not resp.success and "outside the maps directory" in resp.message, (bad, resp.message)
        assert not Path("/nonexistent_dir").exists() and not list(outside.iterdir())
        assert not (tmp_path / "escape.npz").exists()
        maps.mkdir(exist_ok=True)
        (maps / "link.npz").symlink_to(outside / "target.npz")
        resp = h.call(SaveMap, "core3d/save_map", SaveMap.Request(path="link"))
        assert not resp.success and "symlink" in resp.message and not (outside / "target.npz").exists()

        resp = h.call(SaveMap, "core3d/save_map", SaveMap.Request(path="kitchen"))
        assert resp.success and resp.path == str(maps / "kitchen.npz")
        # every load answer tells the map's true size
        for bad in ("", "/dev/null", "/etc/passwd", "absent.npz"):
            resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path=bad))
            assert not resp.success and resp.num_objects == 3, (bad, resp.message, resp.num_objects)
        resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path="/dev/null"))
        assert "outside the maps directory" in resp.message
        resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path="kitchen.npz"))
        assert resp.success and resp.num_objects == 3
    finally:
        h.close()


def test_map_path_outside_the_maps_directory_fails_at_start_up(ros_context, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ros.map_path.*outside"):
        MappingNode(
            make_config(map_path="/etc/passwd", maps_dir=str(tmp_path)), mapper_factory=FakeMapper, context=ros_context
        )
    # allowed explicitly: a missing file elsewhere starts an empty map
    node = MappingNode(
        make_config(map_path=str(tmp_path.parent / "elsewhere.npz"), maps_dir=str(tmp_path), allow_any_map_path=True),
        mapper_factory=FakeMapper,
        context=ros_context,
    )
    node.destroy_node()


def test_publishing_does_not_hold_up_the_worker(ros_context, monkeypatch) -> None:
    """Fault 3: the worker waited for publishing and snapshots (same lock) and frames were
    dropped from the work queue with an idle worker. A real Mapper, with the part of snapshot
    building that runs outside the fusion lock made slow (0.3 s), the timer publishing all the
    time, 30 frames at 30 Hz: the worker must go on fusing while a snapshot is being built,
    and every frame is fused.

    The test looks at what the worker did during each build, not at queue overflows: how
    messages bunch up on their way to the node depends on the machine's load (a run on a
    loaded machine dropped one frame of 31 from 8 slots with the fix in place). With the fault
    no frame is fused during any build."""
    from core3d_ros.core.fusion.object_map import ObjectMap

    real_finish = ObjectMap.finish_snapshot
    builds: list[tuple[int, int]] = []  # frames fused before and after each slow build
    holder: dict[str, MappingNode] = {}

    def slow_finish(self, *args, **kwargs):
        before = holder["node"].counters().processed
        time.sleep(0.3)  # boxes and labels of many changed objects
        builds.append((before, holder["node"].counters().processed))
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(ObjectMap, "finish_snapshot", slow_finish)
    cfg = make_config(publish_period=0.05)
    cfg.embed.name = "none"
    cfg.keyframes.enabled = False  # every frame goes through fusion
    node = holder["node"] = MappingNode(cfg, engine_factory=lambda c, m: FakeEngine(), context=ros_context)
    h = Harness(ros_context, node)
    try:
        h.subscribe(ObjectArray, "core3d/objects")
        n = 30
        for k in range(n):
            h.send(1.0 + k / 30)
            time.sleep(1 / 30)
        assert wait_for(settled(node, n), 30), node.counters()
        c = node.counters()
        assert c.dropped == 0 and c.processed == n, c
        assert builds, "the timer never built a snapshot"
        assert any(after > before for before, after in builds), builds  # fused during a build
    finally:
        h.close()


def _qos_round(ros_context, reliability: str, publisher: ReliabilityPolicy, n: int = 20) -> Harness:
    h = start(ros_context, qos_reliability=reliability)
    qos = QoSProfile(depth=10, reliability=publisher)
    for key, pub in list(h.pubs.items()):
        h.peer.destroy_publisher(pub)
        msg_type = {"color": Image, "depth": Image, "camera_info": CameraInfo, "pose": PoseStamped}[key]
        topic = {"color": "color_topic", "depth": "depth_topic", "camera_info": "info_topic", "pose": "pose_topic"}[key]
        h.pubs[key] = h.peer.create_publisher(msg_type, getattr(h.node.cfg.ros, topic), qos)
    return h


def test_reliable_inputs_deliver_every_frame(ros_context) -> None:
    h = _qos_round(ros_context, "reliable", ReliabilityPolicy.RELIABLE)
    node = h.node
    try:
        assert wait_for(lambda: all(p.get_subscription_count() for p in h.pubs.values()), 10)
        for k in range(20):
            h.send(1.0 + k / 30)
            time.sleep(1 / 30)
        assert wait_for(settled(node, 20), 15), node.counters()
        c = node.counters()
        assert c.processed == 20 and c.dropped == 0 and not c.rejected, c
    finally:
        h.close()


def test_best_effort_inputs(ros_context) -> None:
    """The default: a best-effort subscription takes both best-effort and reliable publishers.
    (A reliable subscription cannot match a best-effort publisher: nothing would arrive.)"""
    h = _qos_round(ros_context, "best_effort", ReliabilityPolicy.BEST_EFFORT)
    node = h.node
    try:
        assert wait_for(lambda: all(p.get_subscription_count() for p in h.pubs.values()), 10)
        for k in range(20):
            h.send(1.0 + k / 30)
            time.sleep(1 / 30)
        # small frames over the loopback: best effort loses little or nothing; whatever is
        # lost is a whole colour frame or a partner, counted by reason, never a wrong set
        assert wait_for(lambda: node.counters().processed >= 15, 15), node.counters()

        def accounted() -> bool:  # every colour frame mapped, rejected, dropped or still waiting for partners
            c = node.counters()
            waiting = node._sync.queue_lengths()["color"]
            return c.queue_length == 0 and c.processed + c.total_rejected + c.dropped + waiting == c.frames_received

        # (a set handed to the worker is in none of these until the worker has decided it)
        assert wait_for(accounted, 15), (node.counters(), node._sync.queue_lengths())
        assert all(f.pose[0, 3] == pytest.approx(f.stamp) for f in node.mapper.frames)  # never mis-paired
    finally:
        h.close()
    h = _qos_round(ros_context, "reliable", ReliabilityPolicy.BEST_EFFORT)
    try:  # incompatible QoS: a reliable subscriber never matches a best-effort publisher
        time.sleep(1.0)
        assert all(p.get_subscription_count() == 0 for p in h.pubs.values())
    finally:
        h.close()


def test_map_file_with_nan_times_is_refused_and_the_node_keeps_answering(ros_context, tmp_path: Path) -> None:
    """Fault 1 as reported: a map whose objects have NaN first-seen / inf last-seen times was
    loaded, and the next get_object / query killed the node. Real Mapper, real map file."""
    from core3d_ros.core.fusion.object_map import ObjectMap
    from core3d_ros.core.mapio import save_map
    from test_fusion import box_surface, cfg as fusion_cfg, integrate

    omap = ObjectMap(fusion_cfg())
    for t in range(3):
        integrate(omap, [box_surface([0, 0, 0], [0.4, 0.4, 0.4]), box_surface([1.0, 0, 0], [1.6, 0.4, 0.4])], stamp=float(t))
    good = save_map(omap, tmp_path / "good.npz")
    with np.load(good, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["obj_first_seen"] = np.full_like(arrays["obj_first_seen"], np.nan)
    arrays["obj_last_seen"] = np.full_like(arrays["obj_last_seen"], np.inf)
    with open(tmp_path / "poisoned.npz", "wb") as f:
        np.savez(f, **arrays)

    config = make_config(maps_dir=str(tmp_path))
    config.embed.name = "none"
    config.fusion = fusion_cfg()
    node = MappingNode(config, engine_factory=lambda c, m: FakeEngine(), context=ros_context)
    h = Harness(ros_context, node)
    try:
        resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path="poisoned.npz"))
        assert not resp.success and "first-seen" in resp.message and resp.num_objects == 0, resp.message
        resp = h.call(LoadMap, "core3d/load_map", LoadMap.Request(path="good.npz"))
        assert resp.success and resp.num_objects == len(omap.snapshot().objects) > 0, resp.message
        oid = node.mapper.snapshot().objects[0].id
        assert h.call(GetObject, "core3d/get_object", GetObject.Request(id=oid)).success
        assert h.call(Query, "core3d/query", Query.Request(text="the box")).success
        assert not node.counters().errors
    finally:
        h.close()


class SlowEngine(FakeEngine):
    def answer(self, *args: Any, **kw: Any) -> Any:
        time.sleep(0.02)
        return super().answer(*args, **kw)


def test_a_burst_of_queries_is_answered_whole(ros_context) -> None:
    """A planner that falls behind sends its queries in a burst. The default service QoS kept
    10 requests and lost the oldest of a burst of 40 without a word; ros.service_queue (100)
    keeps them all."""
    node = MappingNode(make_config(), mapper_factory=FakeMapper, engine_factory=lambda cfg, m: SlowEngine(), context=ros_context)
    h = Harness(ros_context, node)
    try:
        h.send(1.0)
        assert wait_for(lambda: node.counters().processed == 1, 10), node.counters()
        # the client's own response queue must hold the burst's answers too
        client = h.peer.create_client(Query, "core3d/query", qos_profile=QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        assert client.wait_for_service(timeout_sec=10)
        futures = [client.call_async(Query.Request(text=f"red mug {k}")) for k in range(40)]
        wait_for(lambda: all(f.done() for f in futures), 20)
        answered = sum(f.done() and f.result().success for f in futures)
        assert answered == 40, f"{answered} of 40 queries answered"
    finally:
        h.close()
