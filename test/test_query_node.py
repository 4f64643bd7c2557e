"""The query node in-process beside a mapping node (fake mapper, the real rule-based answerer in
both), over real rclpy topics and services: it mirrors core3d/map_updates and answers
core3d/query and core3d/get_object as the mapping node's own services do."""
from __future__ import annotations

import math
import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import wait_for

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from core3d.msg import MapUpdate  # noqa: E402
from core3d.srv import GetObject, Query  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from core3d_ros.config import MapperConfig  # noqa: E402
from core3d_ros.core.camera import CameraIntrinsics  # noqa: E402
from core3d_ros.core.frame import Frame  # noqa: E402
from core3d_ros.core.objects import MapSnapshot, ObjectInfo, OrientedBox  # noqa: E402
from core3d_ros.core.retrieval.answerers import make_answerer  # noqa: E402
from core3d_ros.ros import conversions as conv  # noqa: E402
from core3d_ros.ros.conversions.map_stream import map_update_msg, object_state_to_msg  # noqa: E402
from core3d_ros.ros.map_stream import STREAM_QOS  # noqa: E402
from core3d_ros.ros.node import MappingNode  # noqa: E402
from core3d_ros.ros.query_node import NO_MAP_YET, QueryNode  # noqa: E402

DOMAIN_ID = 100 + (os.getpid() + 37) % 100
W, H = 40, 30
INTR = CameraIntrinsics(W, H, 40.0, 40.0, 19.5, 14.5)
COLORS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 240, 240), (20, 20, 20)]


class GrowingMapper:
    """Each frame adds an object (a coloured cluster on a row of tables) or, every 4th frame,
    changes an earlier one and removes another: the stream carries additions, changes, removals."""

    def __init__(self, cfg: MapperConfig):
        self.cfg = cfg
        self.encoder = None
        self.last_pose = None
        self.objects: dict[int, ObjectInfo] = {}
        self.frames = 0
        self.lock = threading.Lock()

    def _object(self, oid: int, shift: float = 0.0) -> ObjectInfo:
        rng = np.random.default_rng(oid)
        n = 30 + 7 * oid
        table = oid % 3 == 0  # every third object is a wide, low "table" the others may sit on
        scale = [0.5, 0.4, 0.02] if table else [0.05, 0.05, 0.06]
        base = [0.6 * (oid // 3) + shift, 0.0, 0.7 if table else 0.8]
        pts = (rng.uniform(-1, 1, size=(n, 3)) * scale + base).astype(np.float32)
        emb = rng.normal(size=8).astype(np.float32)
        return ObjectInfo(
            id=oid, points=pts, colors=np.tile(np.array(COLORS[oid % len(COLORS)], np.uint8), (n, 1)),
            box=OrientedBox.from_points(pts, up=np.array([0, 0, 1.0])), num_observations=2, first_seen=1.0,
            last_seen=2.0 + oid, embedding=emb / np.linalg.norm(emb), label="table" if table else "mug",
        )

    def process(self, frame: Frame) -> Any:
        frame.validate()
        with self.lock:
            self.frames += 1
            self.last_pose = frame.pose
            n = self.frames
            if n % 4 == 0 and len(self.objects) > 2:
                first = min(self.objects)
                self.objects.pop(first)
                changed = max(self.objects)
                self.objects[changed] = self._object(changed, shift=0.1)
            else:
                oid = max(self.objects, default=0) + 1
                self.objects[oid] = self._object(oid)
        return SimpleNamespace(timings_ms={}, segments=1, keyframe=True)

    def snapshot(self, wait: bool = True) -> MapSnapshot:
        with self.lock:
            return MapSnapshot(objects=[self.objects[k] for k in sorted(self.objects)], frames=self.frames)

    def save(self, path: str) -> str:
        return path

    def load(self, path: str) -> None:
        pass

    def clear(self) -> None:
        with self.lock:
            self.objects = {}


def frame_messages(stamp: float) -> dict[str, Any]:
    rng = np.random.default_rng(int(stamp * 1000))
    pose = PoseStamped(header=conv.make_header("map", stamp))
    pose.pose.orientation.w = 1.0
    pose.pose.position.x = stamp
    return {
        "color": conv.rgb_to_image(rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8), "bgr8", stamp=stamp, frame_id="cam"),
        "depth": conv.depth_to_image(rng.uniform(0.5, 3.0, size=(H, W)).astype(np.float32), "16UC1", stamp=stamp, frame_id="cam"),
        "camera_info": conv.intrinsics_to_camera_info(INTR, stamp=stamp, frame_id="cam"),
        "pose": pose,
    }


def make_config() -> MapperConfig:
    cfg = MapperConfig()
    cfg.embed.name = "none"
    cfg.ros.perception = "inline"
    cfg.ros.qos_reliability = "reliable"
    cfg.ros.publish_period = 0.2
    cfg.ros.sync_queue = 30
    cfg.ros.work_queue = 50
    cfg.ros.qos_depth = 100
    cfg.ros.sync_slop = 0.02
    cfg.ros.query_namespace = "core3d/mapping"  # the query node serves core3d/query
    return cfg


def rules(cfg: MapperConfig, *_: Any) -> Any:
    return make_answerer(cfg.retrieval, None)


class Graph:
    """A query node (first, alone), later a mapping node, and a peer that sends frames and calls."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.query = QueryNode(make_config(), answerer_factory=rules, context=ctx)
        self.peer = rclpy.create_node("core3d_test_peer", context=ctx)
        self.mapping: MappingNode | None = None
        self.clients: dict[str, Any] = {}
        self.executor = MultiThreadedExecutor(num_threads=6, context=ctx)
        self.executor.add_node(self.query)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def start_mapping(self) -> MappingNode:
        self.mapping = MappingNode(make_config(), mapper_factory=GrowingMapper, engine_factory=rules, context=self.ctx)
        ros = self.mapping.cfg.ros
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {
            "color": self.peer.create_publisher(Image, ros.color_topic, qos),
            "depth": self.peer.create_publisher(Image, ros.depth_topic, qos),
            "camera_info": self.peer.create_publisher(CameraInfo, ros.info_topic, qos),
            "pose": self.peer.create_publisher(PoseStamped, ros.pose_topic, qos),
        }
        self.executor.add_node(self.mapping)
        assert wait_for(lambda: all(p.get_subscription_count() for p in self.pubs.values()), 10), "no discovery"
        return self.mapping

    def send(self, stamp: float) -> None:
        msgs = frame_messages(stamp)
        for key in ("color", "depth", "camera_info", "pose"):
            self.pubs[key].publish(msgs[key])

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        client = self.clients.get(name) or self.clients.setdefault(name, self.peer.create_client(srv_type, name))
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"service {name} did not answer"
        return future.result()

    def in_step(self) -> bool:
        """The query node serves the version the mapping node last published, and that version
        is the mapper's current map."""
        s = self.query.mirror.stats()
        if self.mapping is None or (s.seq, s.generation) != (self.mapping._stream.seq, self.mapping._stream.generation):
            return False
        snap = self.query.mirror.snapshot()
        return [o.id for o in snap.objects] == [o.id for o in self.mapping.mapper.snapshot().objects]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(5)
        for node in (self.mapping, self.query, self.peer):
            if node is not None:
                node.destroy_node()


@pytest.fixture
def graph(ros_context):
    g = Graph(ros_context)
    yield g
    g.close()


QUERIES = ["the red mug", "the mug on the table", "the blue object", "the biggest table", "the mug near the green mug", "table"]


def same_answer(a: Any, b: Any) -> None:
    assert a.success and b.success, (a.message, b.message)
    assert [r.object.id for r in a.results] == [r.object.id for r in b.results]
    for x, y in zip(a.results, b.results):
        assert x.score == pytest.approx(y.score, abs=1e-5)
        assert x.relation_score == pytest.approx(y.relation_score, abs=1e-5)
        assert (math.isnan(x.similarity) and math.isnan(y.similarity)) or x.similarity == pytest.approx(y.similarity, abs=1e-3)
        assert x.object.num_voxels == y.object.num_voxels and x.object.label == y.object.label
        c, d = x.object.centroid, y.object.centroid
        assert (c.x, c.y, c.z) == pytest.approx((d.x, d.y, d.z), abs=1e-6)
    assert (a.parsed.target, list(a.parsed.relations), a.semantic) == (b.parsed.target, list(b.parsed.relations), b.semantic)


def test_the_query_node_answers_as_the_mapping_node_does(graph: Graph) -> None:
    # before any map state: "no map yet", for queries and objects alike
    resp = graph.call(Query, "core3d/query", Query.Request(text="the red mug"))
    assert not resp.success and resp.message == NO_MAP_YET
    resp = graph.call(GetObject, "core3d/get_object", GetObject.Request(id=1))
    assert not resp.success and resp.message == NO_MAP_YET
    diag = graph.query.diagnostics().status[0]
    assert diag.message == NO_MAP_YET

    mapping = graph.start_mapping()
    assert wait_for(lambda: graph.query.mirror.snapshot() is not None, 10), "no first state"
    during = []
    for i in range(24):  # map frames and query the query node while they are mapped
        graph.send(1.0 + 0.1 * i)
        time.sleep(0.05)  # several map publications (every 0.2 s) happen while frames come
        during.append(graph.call(Query, "core3d/query", Query.Request(text=QUERIES[i % len(QUERIES)])))
    assert all(r.success for r in during), [r.message for r in during if not r.success]
    assert wait_for(lambda: mapping.counters().processed == 24 and mapping.counters().queue_length == 0, 20)
    assert wait_for(graph.in_step, 10), (graph.query.mirror.stats(), mapping._stream.seq)
    ids = [o.id for o in graph.query.mirror.snapshot().objects]
    assert ids == [o.id for o in mapping.mapper.snapshot().objects] and len(ids) > 5
    markers: list = []
    graph.peer.create_subscription(
        MarkerArray, "core3d/query_markers", markers.append,
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
    )
    # only the query node has answered so far: the hits of this query are its own
    hit = graph.call(Query, "core3d/query", Query.Request(text="the red mug", top_k=3))
    assert hit.success and len(hit.results) > 0, hit.message
    ids_hit = {r.object.id for r in hit.results}
    assert wait_for(
        lambda: any(mk.ns.startswith("core3d_query") and mk.id in ids_hit for m in markers for mk in m.markers), 10
    ), [[(mk.ns, mk.id) for mk in m.markers] for m in markers]
    for text in QUERIES:
        same_answer(
            graph.call(Query, "core3d/query", Query.Request(text=text, top_k=5)),
            graph.call(Query, "core3d/mapping/query", Query.Request(text=text, top_k=5)),
        )
    a = graph.call(GetObject, "core3d/get_object", GetObject.Request(id=ids[-1], include_points=True))
    b = graph.call(GetObject, "core3d/mapping/get_object", GetObject.Request(id=ids[-1]))
    assert a.success and b.success and a.object.num_voxels == b.object.num_voxels and a.points.width > 0
    s = graph.query.mirror.stats()
    assert s.rejected == {} and s.applied >= 3 and s.states == 1
    values = {kv.key: kv.value for kv in graph.query.diagnostics().status[0].values}
    assert values["objects"] == str(len(ids)) and float(values["mirror_age_s"]) >= 0
    assert int(values["queries"]) == 1 + 24 + 1 + len(QUERIES)

    # the mapping node goes away: the query node keeps answering from its last state and says so
    graph.executor.remove_node(mapping)
    mapping.destroy_node()
    graph.mapping = None
    assert wait_for(lambda: graph.query.map_updates.get_publisher_count() == 0, 10)
    status = graph.query.diagnostics().status[0]
    assert "no mapping node" in status.message and "objects as of" in status.message, status.message
    resp = graph.call(Query, "core3d/query", Query.Request(text="the red mug"))
    assert resp.success and len(resp.results) > 0


def test_a_dropped_update_resyncs_and_bad_updates_are_counted_never_applied(graph: Graph) -> None:
    mapping = graph.start_mapping()
    assert wait_for(lambda: graph.query.mirror.snapshot() is not None, 10)
    publish = mapping._stream.publisher.publish
    dropped: list[int] = []

    def lossy(msg: Any) -> None:  # the stream loses update 3 on its way
        if msg.seq == 3:
            dropped.append(msg.seq)
            return
        publish(msg)

    mapping._stream.publisher.publish = lossy
    for i in range(8):
        graph.send(1.0 + 0.1 * i)
        time.sleep(0.15)  # a map publication every 0.2 s: several versions go out
    assert wait_for(lambda: mapping.counters().processed == 8 and mapping.counters().queue_length == 0, 20)
    assert wait_for(graph.in_step, 10) and dropped == [3]
    s = graph.query.mirror.stats()
    assert s.resyncs.get("gap") == 1 and s.states == 2
    assert [o.id for o in graph.query.mirror.snapshot().objects] == [o.id for o in mapping.mapper.snapshot().objects]

    # a forged next update with a NaN box, then one of another map: counted, never applied
    before = graph.query.mirror.snapshot()
    forger = graph.peer.create_publisher(MapUpdate, "core3d/map_updates", STREAM_QOS)
    assert wait_for(lambda: forger.get_subscription_count() > 0, 10)
    state = object_state_to_msg(mapping.mapper.snapshot().objects[0], 10)
    state.object.centroid.x = float("nan")
    stream = mapping._stream
    for map_id in (stream.map_id, "/elsewhere"):
        forger.publish(map_update_msg(
            frame_id="map", stamp=0.0, map_id=map_id, generation=stream.generation, seq=stream.seq + 1, full=False,
            voxel_size=0.025, frames=0, objects=[state],
        ))
    assert wait_for(lambda: sum(graph.query.mirror.stats().rejected.values()) == 2, 10)
    assert graph.query.mirror.stats().rejected == {"nan_box": 1, "unknown_map": 1}
    assert graph.query.mirror.snapshot() is before
    values = {kv.key: kv.value for kv in graph.query.diagnostics().status[0].values}
    assert values["rejected_nan_box"] == "1" and values["resyncs_gap"] == "1"
    got: list = []
    graph.peer.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    assert wait_for(lambda: any(st.name.endswith(": query") for m in got for st in m.status), 10)
