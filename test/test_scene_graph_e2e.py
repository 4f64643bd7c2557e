"""The scene graph through a mapping node and a query node (real rclpy topics and services, a
fake mapper, a scripted hierarchy builder): core3d/objects carry their room, the query node
mirrors the latched core3d/scene_graph, and both nodes hand the graph to their answerer."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import pytest
from helpers import wait_for

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from core3d.msg import ObjectArray  # noqa: E402
from core3d.srv import GetObject, GetSceneGraph, Query  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from core3d_ros.core.retrieval.answerers import make_answerer  # noqa: E402
from core3d_ros.ros.node import MappingNode  # noqa: E402
from core3d_ros.ros.publishing import MAP_QOS  # noqa: E402
from core3d_ros.ros.query_node import QueryNode  # noqa: E402
from test_mapio_hierarchy import two_room_graph  # noqa: E402
from test_query_node import Graph, GrowingMapper, make_config  # noqa: E402
from test_scene_graph_node import ScriptedBuilder  # noqa: E402

DOMAIN_ID = 140 + (os.getpid() * 5) % 50


class GraphRecorder:
    """The rule-based answerer, recording the scene graph each query was given."""

    def __init__(self, cfg: Any, *_: Any):
        self.inner = make_answerer(cfg.retrieval, None)
        self.graphs: list[Any] = []

    def answer(self, snapshot, text, top_k=None, viewpoint=None, graph=None):
        self.graphs.append(graph)
        return self.inner.answer(snapshot, text, top_k=top_k, viewpoint=viewpoint)


class RoomGraph(Graph):
    """test_query_node's rig with recording answerers in both nodes and a scripted builder."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.query_recorder = GraphRecorder(make_config())
        self.query = QueryNode(make_config(), answerer_factory=lambda cfg: self.query_recorder, context=ctx)
        self.peer = rclpy.create_node("core3d_test_peer", context=ctx)
        self.mapping = None
        self.clients = {}
        self.executor = MultiThreadedExecutor(num_threads=6, context=ctx)
        self.executor.add_node(self.query)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def start_mapping(self) -> MappingNode:
        cfg = make_config()
        cfg.hierarchy.period = 0.1
        self.builder = ScriptedBuilder([two_room_graph()])
        self.recorder = GraphRecorder(cfg)
        self.mapping = MappingNode(
            cfg, mapper_factory=GrowingMapper, engine_factory=lambda c, m: self.recorder,
            builder_factory=lambda c: self.builder, context=self.ctx,
        )
        ros = cfg.ros
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


@pytest.fixture
def rooms(ros_context):
    g = RoomGraph(ros_context)
    yield g
    g.close()


def test_scene_graph_reaches_objects_the_query_node_and_both_answerers(rooms: RoomGraph) -> None:
    mapping = rooms.start_mapping()
    for i in range(3):  # objects 1, 2, 3
        rooms.send(1.0 + 0.1 * i)
    assert wait_for(lambda: len(mapping.mapper.snapshot().objects) == 3, 10)
    assert wait_for(lambda: rooms.query.scene_graph.graph() is not None, 10), "the query node got no scene graph"
    mirrored = rooms.query.scene_graph.graph()
    assert [(r.id, r.label, r.object_ids) for r in mirrored.rooms] == [(1, "kitchen", [1, 2]), (5, "room 5", [])]
    assert wait_for(lambda: rooms.builder.cameras, 10), "camera centres reach the builder"
    # core3d/objects: objects 1 and 2 are in room 1, object 3 in none
    arrays: list[Any] = []
    rooms.peer.create_subscription(ObjectArray, "core3d/objects", arrays.append, MAP_QOS)

    def rooms_seen():
        return arrays and {o.id: o.room_id for o in arrays[-1].objects} == {1: 1, 2: 1, 3: 0}

    assert wait_for(rooms_seen, 10), [(o.id, o.room_id) for o in (arrays[-1].objects if arrays else [])]
    # both query paths get the graph
    assert wait_for(lambda: rooms.query.mirror.snapshot() is not None and len(rooms.query.mirror.snapshot().objects) == 3, 10)
    truth = {1: 1, 2: 1, 3: 0}
    resp = rooms.call(Query, "core3d/query", Query.Request(text="the biggest object", top_k=3))
    assert resp.success and rooms.query_recorder.graphs[-1].room(1).label == "kitchen"
    assert resp.results and all(r.object.room_id == truth[r.object.id] for r in resp.results)
    resp = rooms.call(Query, "core3d/mapping/query", Query.Request(text="the biggest object", top_k=3))
    assert resp.success and rooms.recorder.graphs[-1] is mapping.mapper.hierarchy
    assert resp.results and all(r.object.room_id == truth[r.object.id] for r in resp.results)
    for name in ("core3d/get_object", "core3d/mapping/get_object"):
        assert [rooms.call(GetObject, name, GetObject.Request(id=i)).object.room_id for i in (1, 2, 3)] == [1, 1, 0]
    resp = rooms.call(GetSceneGraph, "core3d/get_scene_graph", GetSceneGraph.Request())
    assert resp.success and [r.id for r in resp.graph.rooms] == [1, 5]
    diag = {kv.key: kv.value for kv in mapping._publisher.diagnostics(mapping.get_clock().now().to_msg()).status[0].values}
    assert diag["hierarchy_rooms"] == "2" and int(diag["hierarchy_published"]) >= 1


def test_rooms_of_a_mapped_building_appear_on_the_topic(ros_context) -> None:
    """The real mapper and the real builder behind the node: the ground floor of the synthetic
    building (two rooms walked through, 24 frames of 160 x 120) sent over ROS; the geometry's
    changed blocks reach both the builder (its graph equals the builder's on all of the node's
    geometry at once) and the surface publication."""
    from core3d.msg import SceneGraph as SceneGraphMsg
    from visualization_msgs.msg import MarkerArray

    from core3d_ros.config import MapperConfig
    from core3d_ros.core.datasets.building import make_building
    from core3d_ros.ros import conversions as conv

    scene = make_building(seed=0, frames_per_room=8, width=160, height=120, max_frames=24)
    cfg = MapperConfig()
    cfg.embed.name = "none"
    cfg.fusion.voxel_size = 0.05
    cfg.ros.perception = "external"  # no models: geometry only, as the hierarchy needs
    cfg.ros.qos_reliability = "reliable"
    cfg.ros.qos_depth = 100
    cfg.ros.work_queue = 100
    cfg.ros.sync_queue = 100
    cfg.ros.publish_period = 0.2
    cfg.hierarchy.period = 0.2
    node = MappingNode(cfg, context=ros_context)
    peer = rclpy.create_node("core3d_building_peer", context=ros_context)
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    for n in (node, peer):
        executor.add_node(n)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        graphs: list[Any] = []
        surface: list[Any] = []
        peer.create_subscription(SceneGraphMsg, "core3d/scene_graph", graphs.append, MAP_QOS)
        peer.create_subscription(MarkerArray, "core3d/surface", surface.append, MAP_QOS)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        ros = cfg.ros
        pubs = {
            "color": peer.create_publisher(Image, ros.color_topic, qos),
            "depth": peer.create_publisher(Image, ros.depth_topic, qos),
            "info": peer.create_publisher(CameraInfo, ros.info_topic, qos),
            "pose": peer.create_publisher(PoseStamped, ros.pose_topic, qos),
        }
        assert wait_for(lambda: all(p.get_subscription_count() for p in pubs.values()), 10), "no discovery"
        for i in range(len(scene)):
            f, stamp = scene[i], 1.0 + 0.1 * i
            pose = PoseStamped(header=conv.make_header("map", stamp), pose=conv.matrix_to_pose(f.pose))
            pubs["pose"].publish(pose)
            pubs["info"].publish(conv.intrinsics_to_camera_info(f.intrinsics, stamp=stamp, frame_id="cam"))
            pubs["depth"].publish(conv.depth_to_image(f.depth, "32FC1", stamp=stamp, frame_id="cam"))
            pubs["color"].publish(conv.rgb_to_image(f.rgb, "rgb8", stamp=stamp, frame_id="cam"))
            time.sleep(0.03)

        def mapped():  # the sync hands on a set once a later colour frame came: all but the last
            c = node.counters()
            return c.processed >= len(scene) - 1 and c.queue_length == 0

        assert wait_for(mapped, 30), node.counters()
        time.sleep(3 * cfg.hierarchy.period)  # updates after the last frame

        # the node's graph is what the builder makes of all of the node's geometry and cameras
        # at once: no changed block was lost to the surface publication, none counted twice
        from core3d_ros.core.hierarchy.builder import HierarchyBuilder

        offline = HierarchyBuilder(cfg.hierarchy, cfg.fusion.voxel_size)
        geometry = node.mapper.geometry
        blocks = geometry.blocks()
        points, _, block_of = geometry.surface(blocks)
        offline.add_surface(blocks, points, block_of)
        for i in range(node.counters().processed):
            offline.add_camera(scene[i].pose[:3, 3])
        expected = offline.update([], now=1e9, force=True)
        assert len(expected.rooms) >= 2 and len(expected.floors) == 1

        def areas(rooms):
            return sorted(round(float(r.area), 2) for r in rooms)

        def same_as_offline():
            return graphs and areas(graphs[-1].rooms) == areas(expected.rooms) and len(graphs[-1].floors) == 1

        assert wait_for(same_as_offline, 30), (areas(expected.rooms), [areas(g.rooms) for g in graphs[-3:]])
        g = graphs[-1]
        # the floor's height is a mean over surface points: blocks fed as they changed (some cleared
        # and re-sent) vs all at once agree to well under a voxel, not bit for bit
        assert abs(g.floors[0].height - expected.floors[0].height) < 1e-3 and g.up_source == "default" and g.up.z == 1.0
        assert [r.label for r in g.rooms] == [f"room {r.id}" for r in g.rooms]  # no encoder: numbered
        # the motion keyframes went to the room keyframes: each walked-through room has some
        kept = node._scene_graph._keyframes.frames
        assert kept and sum(1 for r in g.rooms if r.keyframe_ids) >= 2, [(r.id, r.keyframe_ids) for r in g.rooms]
        assert {i for r in g.rooms for i in r.keyframe_ids} <= set(kept)
        assert all(kf.image is not None and max(kf.image.shape[:2]) == 160 for kf in kept.values())  # 160 x 120 frames
        assert surface and any(m.points for a in surface for m in a.markers), "the surface publication still gets blocks"
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(5)
        node.destroy_node()
        peer.destroy_node()


def test_load_map_publishes_the_files_scene_graph_and_says_when_it_was_dropped(ros_context, tmp_path) -> None:
    from core3d.srv import LoadMap

    from core3d_ros.config import MapperConfig, with_overrides
    from core3d_ros.core.mapper import Mapper
    from test_mapio import _arrays, _write

    conf = with_overrides(MapperConfig(), embed={"name": "none"}, geometry={"enabled": False})
    maker = Mapper(conf, segment=False)
    maker.hierarchy = two_room_graph()
    good = maker.save(str(tmp_path / "good.npz"))
    arrays = _arrays(good)
    arrays["hier_room_floor"] = np.array([1, 9], np.int64)
    _write(tmp_path / "damaged.npz", arrays)

    cfg = make_config()
    cfg.embed.name = "none"
    cfg.geometry.enabled = False
    cfg.ros.perception = "external"
    cfg.ros.allow_any_map_path = True
    node = MappingNode(cfg, context=ros_context)
    peer = rclpy.create_node("core3d_load_peer", context=ros_context)
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    for n in (node, peer):
        executor.add_node(n)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()

    def call(srv, name, req):
        client = peer.create_client(srv, name)
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(req)
        assert wait_for(future.done, 10)
        return future.result()

    try:
        resp = call(LoadMap, "core3d/load_map", LoadMap.Request(path=good))
        assert resp.success and "scene graph was dropped" not in resp.message, resp.message
        resp = call(GetSceneGraph, "core3d/get_scene_graph", GetSceneGraph.Request())
        assert resp.success and [(r.id, r.label) for r in resp.graph.rooms] == [(1, "kitchen"), (5, "room 5")]
        resp = call(LoadMap, "core3d/load_map", LoadMap.Request(path=str(tmp_path / "damaged.npz")))
        assert resp.success and "scene graph was dropped" in resp.message and "unknown floor" in resp.message, resp.message
        resp = call(GetSceneGraph, "core3d/get_scene_graph", GetSceneGraph.Request())
        assert resp.success and "kitchen" not in [r.label for r in resp.graph.rooms]  # the old graph is gone
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(5)
        node.destroy_node()
        peer.destroy_node()
