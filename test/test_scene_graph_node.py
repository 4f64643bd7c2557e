"""The mapping node's scene graph part (ros/scene_graph.py) with a scripted builder: the builder
runs on its own thread from the timer, gets only the changed blocks and the camera centres, the
graph goes out latched on core3d/scene_graph, through core3d/get_scene_graph and as room
markers; rooms are labelled asynchronously; a replaced map publishes its own hierarchy.
Also the changed-block fan-out and the room labeler on their own."""
from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import wait_for

from core3d_ros.core.hierarchy.graph import SceneGraph
from core3d_ros.core.hierarchy.room_labels import RoomLabeler
from test_mapio_hierarchy import two_room_graph

DOMAIN_ID = 60 + (os.getpid() * 13) % 38


# --------------------------------------------------------------------------- fakes


class FakeGeometry:
    """take_dirty() hands out what was queued; blocks() all blocks ever queued."""

    voxel_size = 0.05

    def __init__(self, every=()):
        self.every = [tuple(b) for b in every]
        self.queued: list[tuple[int, int, int]] = []

    def touch(self, *blocks):
        self.queued.extend(blocks)
        self.every.extend(b for b in blocks if b not in self.every)

    def take_dirty(self) -> np.ndarray:
        out, self.queued = self.queued, []
        return np.array(out, np.int32).reshape(-1, 3)

    def blocks(self) -> np.ndarray:
        return np.array(self.every, np.int32).reshape(-1, 3)

    def surface(self, blocks):
        blocks = np.asarray(blocks).reshape(-1, 3)
        points = (blocks * 0.4 + 0.2).astype(np.float32)  # one point per block, at its centre
        return points, np.zeros((len(blocks), 3), np.uint8), np.arange(len(blocks))


def _set(blocks: np.ndarray) -> set:
    return set(map(tuple, np.asarray(blocks).tolist()))


# --------------------------------------------------------------------------- DirtyBlocks


def test_every_consumer_sees_every_changed_block_once():
    from core3d_ros.ros.scene_graph import DirtyBlocks

    geometry = FakeGeometry()
    current = {"g": geometry}
    dirty = DirtyBlocks(lambda: current["g"], ("surface", "hierarchy"))
    assert dirty.take("surface")[0] is geometry  # first look: a new layer without blocks
    geometry.touch((0, 0, 0), (1, 0, 0))
    g, surface = dirty.take("surface")
    assert g is geometry and _set(surface) == {(0, 0, 0), (1, 0, 0)}
    geometry.touch((1, 0, 0), (2, 0, 0))
    assert _set(dirty.take("surface")[1]) == {(1, 0, 0), (2, 0, 0)}
    # the hierarchy did not look until now: it gets all three, once
    assert _set(dirty.take("hierarchy")[1]) == {(0, 0, 0), (1, 0, 0), (2, 0, 0)}
    assert len(dirty.take("hierarchy")[1]) == 0 and len(dirty.take("surface")[1]) == 0
    # a loaded map: every consumer starts from all of its blocks, once
    current["g"] = FakeGeometry(every=[(5, 5, 5)])
    assert _set(dirty.take("hierarchy")[1]) == {(5, 5, 5)}
    assert _set(dirty.take("surface")[1]) == {(5, 5, 5)}
    assert len(dirty.take("surface")[1]) == 0
    current["g"] = None  # geometry off
    g, blocks = dirty.take("hierarchy")
    assert g is None and blocks.shape == (0, 3)


def test_geometry_layer_lists_its_blocks():
    pytest.importorskip("open3d")
    from core3d_ros.core.datasets import make_scene
    from core3d_ros.core.tsdf import GeometryLayer

    layer = GeometryLayer(0.05, 5.0)
    assert layer.blocks().shape == (0, 3)
    layer.integrate(make_scene(seed=0, num_frames=1)[0])
    assert _set(layer.blocks()) == _set(layer.take_dirty()) and len(layer.blocks()) > 0


# --------------------------------------------------------------------------- RoomLabeler

ROOMS = ["kitchen", "office", "bathroom"]
COLOURS = {"kitchen": (255, 0, 0), "office": (0, 255, 0), "bathroom": (0, 0, 255)}


class ColourEncoder:
    """A 'semantic' test encoder: an image's embedding is its mean colour; the text 'a photo of
    a {room}' is the colour given to that room above."""

    semantic = True

    def __init__(self):
        self.image_calls = 0

    def encode_images(self, crops):
        self.image_calls += 1
        return np.array([np.asarray(c, np.float32).reshape(-1, 3).mean(axis=0) for c in crops], np.float32)

    def encode_text(self, texts):
        return np.array([COLOURS[t.removeprefix("a photo of a ")] for t in texts], np.float32)


def _image(rgb, noise=0):
    im = np.zeros((4, 4, 3), np.uint8)
    im[:] = rgb
    im[0, 0] = (noise, noise, noise)
    return im


def test_rooms_are_labelled_from_their_keyframes():
    labeler = RoomLabeler(ColourEncoder(), ROOMS)
    assert labeler.enabled
    got = labeler.label({
        1: [_image((255, 0, 0)), _image((200, 30, 0))],  # reddish: kitchen
        2: [_image((0, 0, 250), noise=40)],  # blue: bathroom
        3: [],  # no keyframes yet: numbered
    })
    assert got[1][0] == "kitchen" and got[1][1] > 0.95
    assert got[2][0] == "bathroom" and got[2][1] > 0.95
    assert got[3] == ("room 3", 0.0)


def test_without_a_semantic_encoder_rooms_are_numbered():
    encoder = ColourEncoder()
    encoder.semantic = False
    labeler = RoomLabeler(encoder, ROOMS)
    assert not labeler.enabled and not RoomLabeler(None, ROOMS).enabled
    assert labeler.label({4: [_image((255, 0, 0))]}) == {4: ("room 4", 0.0)}
    assert encoder.image_calls == 0


# --------------------------------------------------------------------------- SceneGraphPart


class ScriptedBuilder:
    """Records what it is fed; update() returns the next scripted graph (None: no change)."""

    def __init__(self, script: list):
        self.script = list(script)
        self.surface: list[set] = []
        self.cameras: list[np.ndarray] = []
        self.updates = 0
        self.threads: set[str] = set()

    def add_surface(self, blocks, points, block_of):
        assert len(points) == len(block_of)
        self.surface.append(_set(blocks))

    def add_camera(self, position):
        self.cameras.append(np.asarray(position))

    def seed(self, graph):
        self.seeded = graph
        return ""

    def update(self, objects, now):
        self.updates += 1
        self.threads.add(threading.current_thread().name)
        if self.script:
            self.graph = self.script.pop(0)
            return self.graph
        return None

    graph = SceneGraph()  # the last graph (what room keyframes read)

    def room_at(self, points):  # no room anywhere: room keyframes keep nothing
        return np.zeros(len(points), np.int32)



class FakeKeyframes:
    """A room keyframe store as RoomKeyframes is used: every view offered is kept, in room 1."""

    def __init__(self):
        self.frames: dict[int, Any] = {}

    def offer(self, stamp, pose, intrinsics, depth, builder, objects=None, image=None):
        kf = SimpleNamespace(id=len(self.frames) + 1, room_id=1, image=image)
        self.frames[kf.id] = kf
        return kf

    def reassign(self, builder):
        pass

    def of_room(self, room_id):
        return [kf for kf in self.frames.values() if kf.room_id == room_id]

    def apply(self, graph):
        for r in graph.rooms:
            r.keyframe_ids = [kf.id for kf in self.of_room(r.id)]
        return graph


class FakeMapper:
    def __init__(self, geometry):
        self.geometry = geometry
        self.hierarchy = None
        self.hierarchy_error = ""
        self.objects: list = []

    def snapshot(self, wait=True):
        from core3d_ros.core.objects import MapSnapshot

        assert not wait  # the hierarchy never waits for fusion
        return MapSnapshot(objects=list(self.objects))


@pytest.fixture
def rig(ros_context):
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    made: list[Any] = []

    def make(script, labeler=None, period=0.1, summarizer=None, keyframes=None):
        from core3d_ros.core.keyframes import KeyframeSelector
        from core3d_ros.ros.scene_graph import DirtyBlocks, SceneGraphPart
        from core3d_ros.ros.services import service_qos

        node = rclpy.create_node("core3d_scene_graph_test", context=ros_context)
        peer = rclpy.create_node("core3d_scene_graph_peer", context=ros_context)
        geometry = FakeGeometry()
        mapper = FakeMapper(geometry)
        builders: list[ScriptedBuilder] = []

        def new_builder():
            builders.append(ScriptedBuilder(script if not builders else []))
            return builders[-1]

        errors: list[BaseException] = []
        part = SceneGraphPart(
            node, mapper, new_builder, dirty=DirtyBlocks(lambda: mapper.geometry, ("surface", "hierarchy")),
            period=period, map_frame="map", guard=lambda name, fn: fn, count_error=lambda n, e: errors.append(e),
            service_qos=service_qos(10), labeler=labeler,
            room_keyframes=keyframes, keyframe_selector=KeyframeSelector() if keyframes else None, summarizer=summarizer,
        )
        executor = MultiThreadedExecutor(num_threads=3, context=ros_context)
        executor.add_node(node)
        executor.add_node(peer)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        r = SimpleNamespace(node=node, peer=peer, part=part, mapper=mapper, geometry=geometry, builders=builders,
                            errors=errors, executor=executor)
        made.append((r, thread))
        return r

    yield make
    for r, thread in made:
        r.part.stop()
        r.executor.shutdown(timeout_sec=5)
        thread.join(5)
        r.node.destroy_node()
        r.peer.destroy_node()


def _latched_subscription(peer, msg_type, topic, got):
    from core3d_ros.ros.publishing import MAP_QOS

    return peer.create_subscription(msg_type, topic, got.append, MAP_QOS)


def test_graph_is_built_on_its_own_thread_and_published_latched(rig):
    from core3d.msg import SceneGraph as SceneGraphMsg
    from core3d.srv import GetSceneGraph
    from visualization_msgs.msg import Marker, MarkerArray

    r = rig([None, two_room_graph()])
    r.geometry.touch((0, 0, 0), (1, 2, 3))
    r.part.add_camera(np.array([[1, 0, 0, 0.5], [0, 1, 0, 1.5], [0, 0, 1, 1.2], [0, 0, 0, 1]], float))
    assert wait_for(lambda: r.part.graph() is not None, 10), r.errors
    b = r.builders[0]
    assert b.threads == {"core3d_hierarchy"}  # never an executor thread: fusion and services never wait
    assert b.surface[0] == {(0, 0, 0), (1, 2, 3)}  # the changed blocks only, once
    assert all(s != b.surface[0] for s in b.surface[1:])
    np.testing.assert_allclose(b.cameras[0], [0.5, 1.5, 1.2])
    assert r.mapper.hierarchy is r.part.graph()  # saved with the map
    assert r.part.rooms_of_objects() == {1: 1, 2: 1}
    # a late subscriber gets the graph (transient local), and the room markers
    graphs, markers = [], []
    _latched_subscription(r.peer, SceneGraphMsg, "core3d/scene_graph", graphs)
    _latched_subscription(r.peer, MarkerArray, "core3d/room_markers", markers)
    assert wait_for(lambda: graphs and markers, 10)
    msg = graphs[-1]
    assert msg.header.frame_id == "map" and msg.map_id == r.node.get_fully_qualified_name()
    assert [(x.id, x.label, list(x.object_ids)) for x in msg.rooms] == [(1, "kitchen", [1, 2]), (5, "room 5", [])]
    assert [f.label for f in msg.floors] == ["floor 1", "floor 2"]
    assert sum(m.type == Marker.LINE_STRIP for m in markers[-1].markers) == 2
    # the service answers from the last published graph
    client = r.peer.create_client(GetSceneGraph, "core3d/get_scene_graph")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(GetSceneGraph.Request())
    assert wait_for(future.done, 10)
    resp = future.result()
    assert resp.success and resp.message == "2 floor(s), 2 room(s)" and resp.graph.version == msg.version
    assert len(resp.graph.rooms) == 2 and not r.errors


def test_service_before_any_graph_says_so(rig):
    from core3d.srv import GetSceneGraph

    r = rig([])
    client = r.peer.create_client(GetSceneGraph, "core3d/get_scene_graph")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(GetSceneGraph.Request())
    assert wait_for(future.done, 10)
    assert not future.result().success and "no scene graph yet" in future.result().message


def _frame(rgb, x=0.0):
    pose = np.eye(4)
    pose[0, 3] = x
    return SimpleNamespace(pose=pose, stamp=x, intrinsics=None, depth=np.ones((4, 4), np.float32), rgb=_image(rgb))


def test_motion_keyframes_become_room_keyframes_and_label_their_room(rig):
    encoder = ColourEncoder()
    stores: list[FakeKeyframes] = []

    def store():
        stores.append(FakeKeyframes())
        return stores[-1]

    r = rig([two_room_graph()], labeler=RoomLabeler(encoder, ROOMS), keyframes=store)
    assert wait_for(lambda: r.part.graph() is not None, 10)
    assert r.part.graph().room(1).label == "kitchen" and r.part.graph().room(1).keyframe_ids == []
    r.part.add_frame(_frame((0, 250, 0)))  # the first frame is a motion keyframe
    r.part.add_frame(_frame((250, 0, 0), x=0.01))  # 1 cm further: not one
    r.part.add_frame(_frame((0, 240, 10), x=0.5))  # 50 cm further: one
    # offered at the next tick, kept, published as the room's keyframes, then labelled from them
    assert wait_for(lambda: r.part.graph().room(1).label == "office", 10), (r.part.graph().room(1), r.errors)
    g = r.part.graph()
    assert g.room(1).keyframe_ids == [1, 2] and g.room(1).label_score > 0.95
    assert [kf.image[1, 1].tolist() for kf in stores[0].frames.values()] == [[0, 250, 0], [0, 240, 10]]
    assert len(r.builders[0].cameras) == 3  # every frame's camera centre, keyframe or not
    assert g.room(5).label == "room 5" and g.room(5).keyframe_ids == []  # no keyframes: numbered
    assert encoder.image_calls == 1 and not r.errors


def test_replaced_map_publishes_its_own_hierarchy_and_rebuilds(rig):
    r = rig([two_room_graph()])
    assert wait_for(lambda: r.part.graph() is not None, 10)
    loaded = SceneGraph(note="loaded")
    r.mapper.hierarchy = loaded
    r.mapper.geometry = FakeGeometry(every=[(7, 7, 7)])
    r.part.map_replaced()
    assert r.part.graph().note == "loaded" and len(r.builders) == 2
    rebuilt = r.builders[1]
    rebuilt.script = [SceneGraph(note="rebuilt")] * 1000
    assert wait_for(lambda: rebuilt.surface and rebuilt.updates >= 3, 10)
    assert rebuilt.surface[0] == {(7, 7, 7)}  # the new builder starts from all of the new map's blocks
    assert r.part.graph().note == "loaded"  # and the loaded hierarchy stands while nothing is mapped
    r.part.add_camera(np.eye(4))  # mapping goes on: the builder's graphs are published again
    assert wait_for(lambda: r.part.graph().note == "rebuilt", 10)


# --------------------------------------------------------------------------- summaries


def _labelled(oid: int, label: str):
    from core3d_ros.core.objects import ObjectInfo, OrientedBox

    box = OrientedBox(center=np.zeros(3), extent=np.ones(3), rotation=np.eye(3))
    return ObjectInfo(id=oid, points=np.zeros((1, 3), np.float32), colors=np.zeros((1, 3), np.uint8), box=box,
                      num_observations=2, first_seen=0.0, last_seen=1.0, label=label)


@pytest.fixture
def chat():
    from core3d_ros.config import LlmConfig
    from core3d_ros.core.retrieval.llm_client import ChatClient
    from core3d_ros.tools.chat_server import ChatServer

    with ChatServer() as server:
        client = ChatClient(LlmConfig(enabled=True, base_url=server.url, model="m", call_timeout=5.0))
        yield server, client
        client.close()


def _facts(body) -> dict:
    import json

    return json.loads(body["messages"][1]["content"])


def summary_of_facts(step, body):
    """The model: a room's summary lists its objects; a floor's lists its rooms."""
    from core3d_ros.tools.chat_server import Behaviour

    facts = _facts(body)
    if "objects" in facts:
        return Behaviour(content={"summary": f"{facts['room']} with " + ", ".join(facts["objects"] or ["nothing"])})
    return Behaviour(content={"summary": f"{facts['floor']}: " + ", ".join(r["room"] for r in facts["rooms"])})


def test_summarizer_grounds_its_request_in_the_rooms_objects(chat):
    from core3d_ros.core.hierarchy.summaries import Summarizer
    from core3d_ros.core.retrieval.llm_client import ChatError
    from core3d_ros.tools.chat_server import Behaviour

    server, client = chat
    server.script(responder=summary_of_facts)
    g = two_room_graph()
    s = Summarizer(client)
    assert s.room(g.rooms[0], ["chair", "table", "chair", ""], "floor 1") == "kitchen with 2 x chair, table"
    facts = _facts(server.requests[-1]["body"])
    assert facts == {"room": "kitchen", "floor": "floor 1", "area_m2": 6.0, "objects": ["2 x chair", "table"],
                     "unlabelled_objects": 1}
    assert s.floor(g.floors[0], g.rooms) == "floor 1: kitchen, room 5"
    server.script({"": Behaviour(content={"text": "no summary key"})})
    with pytest.raises(ChatError, match="malformed"):
        s.room(g.rooms[0], [])
    server.script({"": Behaviour(mode="http", status=503)})
    with pytest.raises(ChatError, match="http"):
        s.room(g.rooms[0], [])


def test_summaries_come_asynchronously_and_only_when_facts_change(rig, chat):
    from core3d_ros.core.hierarchy.summaries import Summarizer

    server, client = chat
    server.script(responder=summary_of_facts)
    r = rig([two_room_graph()], summarizer=Summarizer(client))
    r.mapper.objects = [_labelled(1, "fridge"), _labelled(2, "stove")]

    def summarised():
        g = r.part.graph()
        return g is not None and g.room(1).summary and g.floors[0].summary

    assert wait_for(summarised, 10), r.errors
    g = r.part.graph()
    assert g.room(1).summary == "kitchen with fridge, stove" and g.room(5).summary == "room 5 with nothing"
    assert g.floors[0].summary == "floor 1: kitchen, room 5" and g.floors[1].summary == ""  # floor 2 has no rooms
    assert r.mapper.hierarchy.room(1).summary == "kitchen with fridge, stove"  # saved with the map
    n = len(server.requests)
    assert n == 3  # two rooms, one floor
    r.part._publish(two_room_graph())  # the same facts again: no new calls
    time.sleep(0.5)
    assert len(server.requests) == n and not r.errors


def test_a_failing_endpoint_leaves_rooms_without_summary(rig, chat):
    from core3d_ros.core.hierarchy.summaries import Summarizer
    from core3d_ros.tools.chat_server import Behaviour

    server, client = chat
    server.script({"": Behaviour(mode="http", status=500)})
    r = rig([two_room_graph()], summarizer=Summarizer(client))
    assert wait_for(lambda: r.part.counters().get("hierarchy_summary_failed_http", 0) >= 3, 10), r.part.counters()
    g = r.part.graph()
    assert g.room(1).summary == "a small kitchen"  # the builder's own stays; nothing else was made up
    assert g.room(5).summary == "" and not r.errors
