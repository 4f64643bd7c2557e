"""One query node over two robots' mapping nodes (namespaces robot1 and robot2, fixed maps, the
real rule-based answerer), over real rclpy topics and services: the union with merged
duplicates, results that say which robot's map they came from, and points fetched on demand
from the owning mapping node, with the timeout fallback."""
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

from core3d.srv import GetObject, Query  # noqa: E402
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402

from core3d_ros.config import MapperConfig  # noqa: E402
from core3d_ros.core.objects import MapSnapshot, ObjectInfo, OrientedBox  # noqa: E402
from core3d_ros.core.retrieval.answerers import make_answerer  # noqa: E402
from core3d_ros.ros.node import MappingNode  # noqa: E402
from core3d_ros.ros.query_node import NO_BEST_VIEWS, QueryNode  # noqa: E402

DOMAIN_ID = 100 + (os.getpid() + 61) % 100
V = 0.025  # the maps' voxel size
SAMPLE = 1000  # ros.stream_voxel_sample of both mapping nodes


def slab(oid: int, x0: int, nx: int, ny: int, *, y0: int = 0, z: int = 30, color=(200, 40, 40)) -> ObjectInfo:
    """nx * ny voxel centres from voxel (x0, y0, z), one voxel thick."""
    ii, jj = np.meshgrid(np.arange(x0, x0 + nx), np.arange(y0, y0 + ny), indexing="ij")
    pts = ((np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, z)], axis=1) + 0.5) * V).astype(np.float32)
    return ObjectInfo(
        id=oid, points=pts, colors=np.tile(np.array(color, np.uint8), (len(pts), 1)),
        box=OrientedBox.from_points(pts, up=np.array([0, 0, 1.0])), num_observations=3, first_seen=1.0, last_seen=2.0,
    )


# robot1's 1 and robot2's 1 are one board seen by both (80 shared voxels: IoV 0.8 and 0.67);
# robot1's 3 is big (3000 voxels: the stream carries every 3rd); the others lie apart
BEST_VIEW = np.zeros((6, 4, 3), np.uint8)  # robot1's object 3 has a best view (the stream carries no image)
BEST_VIEW[:, :, 2] = 200
MAPS = {
    "robot1": [slab(1, 0, 10, 10), slab(2, 200, 10, 10, color=(40, 200, 40)), slab(3, 400, 60, 50, color=(40, 40, 200))],
    "robot2": [slab(1, 2, 10, 12), slab(5, 100, 8, 8, color=(40, 200, 40))],
}
MAPS["robot1"][2].best_view = BEST_VIEW


class FixedMapper:
    """A mapping node's map that is given, not mapped."""

    def __init__(self, cfg: MapperConfig, objects: list[ObjectInfo]):
        self.cfg, self.encoder, self.last_pose = cfg, None, None
        self.objects = {o.id: o for o in objects}
        self.lock = threading.Lock()

    def process(self, frame: Any) -> Any:  # never called: no frames are sent
        raise AssertionError("no frames in this test")

    def snapshot(self, wait: bool = True) -> MapSnapshot:
        with self.lock:
            return MapSnapshot(objects=[self.objects[k] for k in sorted(self.objects)], voxel_size=V, frames=1)

    def save(self, path: str) -> str:
        return path

    def load(self, path: str) -> None:
        pass

    def clear(self) -> None:
        with self.lock:
            self.objects = {}


def config(**query: Any) -> MapperConfig:
    cfg = MapperConfig()
    cfg.embed.name = "none"
    cfg.ros.perception = "inline"
    cfg.ros.publish_period = 0.1
    cfg.ros.stream_voxel_sample = SAMPLE
    cfg.ros.query_namespace = "core3d/mapping"
    cfg.hierarchy.enabled = False  # no frames are mapped: the tests publish the scene graphs
    for k, v in query.items():
        setattr(cfg.query, k, v)
    return cfg


def rules(cfg: MapperConfig, *_: Any) -> Any:
    return make_answerer(cfg.retrieval, None)


class Robots:
    """Two mapping nodes (robot1, robot2) and a peer on a multi-threaded executor; the query node
    alone on a single-threaded one, so that a callback that waited would hold all of it."""

    def __init__(self, ctx: Any, fetch_timeout: float = 2.0):
        self.ctx = ctx
        self.mapping = {
            r: MappingNode(config(), mapper_factory=lambda c, r=r: FixedMapper(c, MAPS[r]), engine_factory=rules,
                           namespace=r, context=ctx)
            for r in MAPS
        }
        self.peer = rclpy.create_node("core3d_test_peer", context=ctx)
        self.executor = MultiThreadedExecutor(num_threads=6, context=ctx)
        for n in (*self.mapping.values(), self.peer):
            self.executor.add_node(n)
        self.query = QueryNode(
            config(namespaces=list(MAPS), fetch_timeout=fetch_timeout), answerer_factory=rules, context=ctx
        )
        self.query_executor = SingleThreadedExecutor(context=ctx)
        self.query_executor.add_node(self.query)
        self.threads = [threading.Thread(target=e.spin, daemon=True) for e in (self.executor, self.query_executor)]
        for t in self.threads:
            t.start()
        self.clients: dict[str, Any] = {}

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        client = self.clients.get(name) or self.clients.setdefault(name, self.peer.create_client(srv_type, name))
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"service {name} did not answer"
        return future.result()

    def synced(self) -> bool:
        return all(
            self.query.feeds[r].mirror.stats().objects == len(MAPS[r]) and not self.query.feeds[r].mirror.needs_state
            for r in MAPS
        )

    def close(self) -> None:
        for e in (self.executor, self.query_executor):
            e.shutdown(timeout_sec=5)
        for t in self.threads:
            t.join(5)
        for n in (*self.mapping.values(), self.query, self.peer):
            n.destroy_node()


@pytest.fixture
def robots(ros_context):
    g = Robots(ros_context)
    yield g
    g.close()


def by_robot(resp: Any) -> dict[tuple[str, int], Any]:
    return {(r.robot, r.object.id): r for r in resp.results}


def test_two_robots_are_served_as_one_map_with_duplicates_merged(robots: Robots) -> None:
    assert wait_for(robots.synced, 15), {r: f.mirror.stats() for r, f in robots.query.feeds.items()}
    resp = robots.call(Query, "core3d/query", Query.Request(text="the largest object", top_k=10))
    assert resp.success, resp.message
    got = by_robot(resp)
    # 5 objects mapped, 4 served: robot1's 1 merged into robot2's 1 (the bigger, 120 voxels)
    assert sorted(got) == [("robot1", 2), ("robot1", 3), ("robot2", 1), ("robot2", 5)]
    merged = got[("robot2", 1)]
    assert (list(merged.merged_ids), list(merged.merged_robots)) == ([1], ["robot1"])
    assert merged.object.num_voxels == 120
    assert all(len(r.merged_ids) == 0 for k, r in got.items() if k != ("robot2", 1))
    # ids are each robot's own: id 1 exists in both maps; get_object takes the robot
    a = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=1, robot="robot1"))
    b = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=1, robot="robot2"))
    assert a.success and b.success and (a.robot, b.robot) == ("robot1", "robot2")
    assert (a.object.num_voxels, b.object.num_voxels) == (100, 120)
    assert a.message == "merged into robot2's object 1" and b.message == ""
    first = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=3))  # no robot: the first
    assert first.success and first.robot == "robot1" and first.object.num_voxels == 3000
    none = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=3, robot="robot2"))
    assert not none.success and "no object with id 3" in none.message
    odd = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=1, robot="robot9"))
    assert not odd.success and "unknown robot 'robot9'" in odd.message
    values = {kv.key: kv.value for kv in robots.query.diagnostics().status[0].values}
    assert (values["objects"], values["merged"], values["robot1.objects"], values["robot2.objects"]) == ("4", "1", "3", "2")

    # robot1's board leaves robot1's map: the board is robot2's alone
    with robots.mapping["robot1"].mapper.lock:
        del robots.mapping["robot1"].mapper.objects[1]
    assert wait_for(lambda: robots.query.feeds["robot1"].mirror.stats().objects == 2, 10)
    got = by_robot(robots.call(Query, "core3d/query", Query.Request(text="the largest object", top_k=10)))
    assert sorted(got) == [("robot1", 2), ("robot1", 3), ("robot2", 1), ("robot2", 5)]
    assert list(got[("robot2", 1)].merged_ids) == []


def test_room_constraints_hold_in_each_robots_own_graph(robots: Robots) -> None:
    from core3d.msg import SceneGraph as SceneGraphMsg

    from core3d_ros.core.hierarchy.graph import Floor, Room, SceneGraph
    from core3d_ros.ros.conversions.scene_graph import scene_graph_to_msg
    from core3d_ros.ros.publishing import MAP_QOS

    def graph(rooms: dict[int, tuple[str, list[int]]]) -> SceneGraph:
        square = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
        return SceneGraph(version=1, floors=[Floor(id=1, height=0.0, ceiling=2.5, room_ids=sorted(rooms))], rooms=[
            Room(id=i, floor_id=1, outline=square, area=1.0, centroid=np.full(3, 0.5), label=lab, object_ids=ids)
            for i, (lab, ids) in rooms.items()])

    # the two robots' own graphs: each has a kitchen; robot1's office holds its object 1, which
    # is served as robot2's object 1 (merged), and robot2 puts its 1 in the hall
    graphs = {"robot1": graph({1: ("kitchen", [2, 3]), 2: ("office", [1])}), "robot2": graph({1: ("kitchen", [5]), 4: ("hall", [1])})}
    pubs = [robots.peer.create_publisher(SceneGraphMsg, f"{r}/core3d/scene_graph", MAP_QOS) for r in graphs]
    for pub, g in zip(pubs, graphs.values()):
        pub.publish(scene_graph_to_msg(g, frame_id="map"))
    assert wait_for(robots.synced, 15)
    assert wait_for(lambda: all(m.graph() is not None for m in robots.query.scene_graphs.values()), 10)
    resp = robots.call(Query, "core3d/query", Query.Request(text="the largest object in the kitchen", top_k=10))
    assert resp.success, resp.message
    assert sorted((r.robot, r.object.id, r.object.room_id) for r in resp.results) == [("robot1", 2, 1), ("robot1", 3, 1), ("robot2", 5, 1)]
    office = robots.call(Query, "core3d/query", Query.Request(text="the largest object in the office", top_k=10))
    assert office.success, office.message
    # robot1 saw it in its office; it is served as robot2's object, whose own graph has it in the hall (4)
    assert [(r.robot, r.object.id, list(r.merged_ids), r.object.room_id) for r in office.results] == [("robot2", 1, [1], 4)]
    one = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=3, robot="robot1"))
    assert one.success and one.object.room_id == 1


def test_points_come_from_the_owning_mapping_node(robots: Robots) -> None:
    assert wait_for(robots.synced, 15)
    resp = robots.call(Query, "core3d/query", Query.Request(text="the largest object", top_k=2, include_points=True))
    assert resp.success, resp.message
    top = resp.results[0]
    assert (top.robot, top.object.id) == ("robot1", 3)
    assert top.points.width == 3000  # all its voxels, from robot1's mapping node; the stream has 1000
    assert "voxel sample" not in resp.message and robots.query.fetcher.counters().get("fetched") == 2
    obj = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=3, robot="robot1", include_points=True))
    assert obj.success and obj.points.width == 3000
    # the best view comes from the mapping node that has it; an object without one says so
    views = robots.call(Query, "core3d/query", Query.Request(text="the largest object", top_k=2, include_best_view=True))
    assert views.success and [(r.robot, r.object.id) for r in views.results][0] == ("robot1", 3)
    top_view = views.results[0].best_view
    assert (top_view.height, top_view.width, top_view.encoding) == (6, 4, "rgb8") and bytes(top_view.data) == BEST_VIEW.tobytes()
    assert len(views.results[1].best_view.data) == 0 and NO_BEST_VIEWS in views.message
    one = robots.call(GetObject, "core3d/get_object", GetObject.Request(id=3, robot="robot1", include_best_view=True))
    assert one.success and bytes(one.best_view.data) == BEST_VIEW.tobytes() and len(one.points.data) == 0


def test_a_late_fetch_falls_back_to_the_sample_without_holding_the_query_node(ros_context) -> None:
    g = Robots(ros_context, fetch_timeout=0.3)
    try:
        assert wait_for(g.synced, 15)
        # robot1's get_object answers after 3 s: its mapping node's own service is replaced by a slow one
        m = g.mapping["robot1"]
        m.destroy_service(next(s for s in m.services if s.srv_name.endswith("/mapping/get_object")))
        release = threading.Event()

        def slow(req: Any, resp: Any) -> Any:
            release.wait(3.0)
            resp.success, resp.message = False, "too late"
            return resp

        slow_srv = g.peer.create_service(GetObject, "/robot1/core3d/mapping/get_object", slow, callback_group=ReentrantCallbackGroup())
        assert wait_for(lambda: g.query.fetcher.clients["robot1"].service_is_ready(), 10)
        client = g.peer.create_client(Query, "core3d/query")
        assert client.wait_for_service(timeout_sec=10)
        t0 = time.monotonic()
        with_points = client.call_async(Query.Request(text="the largest object", top_k=1, include_points=True))
        time.sleep(0.05)
        # meanwhile the query node (one thread) answers another query: the fetch does not hold it
        plain = client.call_async(Query.Request(text="the largest object", top_k=1))
        assert wait_for(plain.done, 5) and plain.result().success
        assert not with_points.done(), "the fetch should still be waiting"
        assert wait_for(with_points.done, 5)
        waited = time.monotonic() - t0
        resp = with_points.result()
        assert resp.success and resp.results[0].points.width == SAMPLE  # the stream's sample
        assert 0.3 <= waited < 2.5, waited
        assert "points of 1 object(s) from the map stream's voxel sample" in resp.message
        assert "robot1/core3d/mapping/get_object did not answer within 0.3 s" in resp.message
        assert g.query.fetcher.counters()["fetch_timeouts"] == 1
        # a mapping node that is gone: the same fallback, said so
        release.set()
        time.sleep(0.5)  # the slow callback sends its (ignored) answer before its service goes
        g.peer.destroy_service(slow_srv)
        assert wait_for(lambda: not g.query.fetcher.clients["robot1"].service_is_ready(), 10)
        obj = g.call(GetObject, "core3d/get_object", GetObject.Request(id=3, robot="robot1", include_points=True))
        assert obj.success and obj.points.width == SAMPLE
        assert "robot1/core3d/mapping/get_object is not available" in obj.message
    finally:
        release.set()
        g.close()
