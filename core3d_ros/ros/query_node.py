"""The core3d query node: answers ``core3d/query`` and ``core3d/get_object`` from mirrors of the
mapping nodes' object tables, in its own process, so that no query waits on a mapping process's
interpreter lock.

One robot (``query.namespaces`` empty, the default): it subscribes to ``core3d/map_updates``
(core3d/MapUpdate, the mapping node's map stream, ``map_stream.py``) and keeps a
:class:`MapMirror` (core/mapping/mirror.py): changes apply in sequence order; before the first
state, on a gap in sequence numbers or on a new generation (a restarted mapping node) it calls
``core3d/get_map_state`` and goes on from the state it gets; bad updates are counted by reason
and never applied. Until the first state it answers "no map yet".

Several robots (``query.namespaces: [robot1, robot2]``, maps in one shared map frame): one
mirror per robot on ``robot1/core3d/map_updates`` (each with its own generation, gaps and
resyncs), and a :class:`MapUnion` (core/mapping/union.py) of their tables, followed change by
change: objects that two robots both mapped are merged by CORE-3D's balanced IoV test on their
streamed voxel samples. Each result says which robot's map it came from (``robot``, with the id
in that map) and what was merged into it (``merged_ids`` / ``merged_robots``); get_object takes
the robot (empty: the first).

Queries run the same answerer as the mapping node (``make_answerer`` on the configuration's
retrieval settings and encoder) on a MapSnapshot of the union, with the first robot's last
camera pose as the viewpoint, and with the scene graph for room-aware queries: the one robot's
latched ``core3d/scene_graph``, or with several robots each robot's graph side by side on the
served ids (``union_scene_graph``: rooms are not merged across robots, so "in the kitchen" holds
for an object in a kitchen of its own robot's graph); ``Object.room_id`` is the room in the
object's own robot's graph; the services have the mapping node's types and names, so planners
see no difference. ``include_points`` fetches all of an object's voxels from its mapping node
(``<namespace>/core3d/mapping/get_object``, ros/fetch.py) within ``query.fetch_timeout``; a
failed or late fetch answers with the stream's voxel sample and says so in the message. The
service callbacks are coroutines, so a fetch never holds the executor. Best views: none (the
stream and GetObject carry no image; the message says so).

``core3d/query_markers``: the last query's hits, with the next tick (as the mapping node does).
/diagnostics: each mirror's sequence, objects, age (seconds since it last changed), updates and
states applied (prefixed by the robot's namespace when there are several), the union's merges,
rejects and resyncs by reason, fetches, queries and their time in the node.

Parameters: the same configuration tree as the mapping node (``config_file``, ``query.*``,
``retrieval.*``, ``embed.*``, ``fusion.gamma`` / ``fusion.delta`` for merging,
``ros.map_frame``, ``ros.service_queue``, ``ros.publish_period`` for /diagnostics); the rest is
declared and unused, so one YAML file configures both nodes.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import Counter, deque
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from visualization_msgs.msg import MarkerArray

from ..config import MapperConfig
from ..core.mapping.mirror import MapMirror
from ..core.mapping.union import MapUnion, union_scene_graph
from .conversions.headers import make_header
from .conversions.map_stream import msg_to_map_version
from .conversions.markers import query_markers
from .fetch import ObjectFetcher
from .map_stream import STREAM_QOS
from .params import declare_config
from .publishing import MAP_QOS
from .runner import exit_now_if_busy, run_nodes
from .scene_graph import RoomIds, SceneGraphMirror
from .services import QUERY_WINDOW, fill_object, fill_query_response, query_error_types, service_qos

NODE_NAME = "core3d_query"
NO_MAP_YET = "no map yet: waiting for the first map state from core3d/get_map_state"
NO_BEST_VIEWS = "no best view for some results (their mapping node has none, or did not answer)"
STATE_TIMEOUT_S = 5.0  # a state request unanswered this long is given up and asked again
STALENESS_WINDOW = 2048  # applied updates whose staleness /diagnostics summarises


def default_answerer(cfg: MapperConfig) -> Any:
    """The configured answerer over the configured encoder (as the mapping node builds it)."""
    from ..core.retrieval.answerers import make_answerer

    encoder = None
    if cfg.embed.name != "none":
        from ..core.embed.base import make_encoder

        encoder = make_encoder(cfg.embed)
    return make_answerer(cfg.retrieval, encoder)


class RobotFeed:
    """One robot's map stream as the query node follows it: its mirror, the subscription to its
    ``<namespace>/core3d/map_updates`` and the client of its ``<namespace>/core3d/get_map_state``."""

    def __init__(self, node: "QueryNode", robot: str, group: Any):
        from core3d.msg import MapUpdate  # the package's built interfaces

        self.robot = robot
        self.prefix = f"{robot.rstrip('/')}/" if robot else ""
        self.mirror = MapMirror()
        self.state_client = node.create_client(node._GetMapState, f"{self.prefix}core3d/get_map_state", callback_group=group)
        self.subscription = node.create_subscription(
            MapUpdate, f"{self.prefix}core3d/map_updates", node._guard("map_update", lambda m: node._on_update(self, m)),
            STREAM_QOS, callback_group=group,
        )
        self.state_future: Any = None
        self.asked_at = 0.0
        self.mark: int | None = None  # MapMirror.mark() when the state was asked for


class QueryNode(Node):
    """See the module docstring. ``answerer_factory(cfg)`` builds the answerer (default: the
    configured one); ``node_kwargs`` go to rclpy's Node."""

    def __init__(
        self,
        config: MapperConfig | None = None,
        *,
        config_file: str | None = None,
        answerer_factory: Callable[[MapperConfig], Any] | None = None,
        node_name: str = NODE_NAME,
        **node_kwargs: Any,
    ):
        super().__init__(node_name, **node_kwargs)
        from core3d.msg import QueryResult  # the package's built interfaces
        from core3d.srv import GetMapState, GetObject, Query

        self.cfg = declare_config(self, config, config_file)
        self._QueryResult = QueryResult
        self._GetMapState = GetMapState
        self.robots = list(self.cfg.query.namespaces) or [""]
        fusion = self.cfg.fusion
        self.union = MapUnion(self.robots, gamma=fusion.gamma, delta=fusion.delta, cell=self.cfg.query.index_cell)
        self.answerer = (answerer_factory or default_answerer)(self.cfg)
        self._query_errors = query_error_types()
        self._lock = threading.Lock()
        self._counts: Counter = Counter()  # queries, updates received, state requests / failures
        self._errors: Counter = Counter()
        self._query_ms: deque[float] = deque(maxlen=QUERY_WINDOW)
        self._union_ms: deque[float] = deque(maxlen=QUERY_WINDOW)  # time to follow one change
        self._staleness_s: deque[float] = deque(maxlen=STALENESS_WINDOW)  # snapshot -> applied here, seconds
        qos = service_qos(self.cfg.ros.service_queue)
        services = ReentrantCallbackGroup()
        self._stream_group = MutuallyExclusiveCallbackGroup()  # updates and states apply one at a time, all robots
        self.feeds = {r: RobotFeed(self, r, self._stream_group) for r in self.robots}
        first = self.feeds[self.robots[0]]
        self.mirror, self.map_updates = first.mirror, first.subscription  # the first (or only) robot's
        self.fetcher = ObjectFetcher(self, self.robots, self.cfg.query.fetch_timeout)
        self.map_services = [
            self.create_service(Query, "core3d/query", self._guard_async("query", self._on_query), qos_profile=qos, callback_group=services),
            self.create_service(
                GetObject, "core3d/get_object", self._guard_async("get_object", self._on_get_object), qos_profile=qos,
                callback_group=services,
            ),
        ]
        # each robot's latched scene graph, for room-aware queries ("the mug in the kitchen"); with
        # several robots, their graphs side by side on the served ids (union_scene_graph)
        self.scene_graphs = {
            r: SceneGraphMirror(self, self._guard, topic=f"{f.prefix}core3d/scene_graph", callback_group=self._stream_group)
            for r, f in self.feeds.items()
        }
        self.scene_graph = self.scene_graphs[self.robots[0]]
        self._room_ids = {r: RoomIds() for r in self.robots}  # Object.room_id: the room in its own robot's graph
        self._union_graph: tuple[Any, tuple, Any] = (None, (), None)  # (view, the robots' graphs, their union)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # the last query's hits for RViz, as the mapping node publishes its own: with the next
        # tick, so that a planner asking 50 queries a second does not pay for 50 marker arrays
        self.query_markers_pub = self.create_publisher(MarkerArray, "core3d/query_markers", MAP_QOS)
        self._query_hits: list | None = None
        self._timer = self.create_timer(
            self.cfg.ros.publish_period, self._guard("tick", self._tick), callback_group=MutuallyExclusiveCallbackGroup()
        )
        streams = ", ".join(f.subscription.topic_name for f in self.feeds.values())
        self.get_logger().info(f"query node: mirroring {streams}, serving core3d/query and core3d/get_object")

    # ------------------------------------------------------------------ guards and counters

    def _failed(self, name: str, e: Exception) -> None:
        with self._lock:
            self._errors[name] += 1
            n = self._errors[name]
        if n <= 10 or n % 100 == 0:
            self.get_logger().error(f"callback {name} failed ({n} so far):\n{traceback.format_exc()}")

    def _guard(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """As the mapping node's: an unexpected exception is logged, counted (errors_<name>) and,
        for a service, answered as a failure; the node keeps serving."""

        def guarded(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as e:
                self._failed(name, e)
                return None

        guarded.__name__ = f"guarded_{name}"
        return guarded

    def _guard_async(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``_guard`` for a service callback that is a coroutine (it may await a fetch)."""

        async def guarded(req: Any, resp: Any) -> Any:
            try:
                return await fn(req, resp)
            except Exception as e:
                self._failed(name, e)
                fresh = type(resp)()
                fresh.success, fresh.message = False, f"internal error in {name}: {type(e).__name__}: {e}"
                return fresh

        guarded.__name__ = f"guarded_{name}"
        return guarded

    def counters(self) -> dict[str, Any]:
        """What /diagnostics shows (a copy). With several robots, each robot's mirror values are
        prefixed by its namespace (``robot1.seq``) and ``objects`` is the union's."""
        with self._lock:
            counts, errors, recent = dict(self._counts), dict(self._errors), list(self._query_ms)
            follow = list(self._union_ms)
        several = len(self.robots) > 1
        values: dict[str, Any] = {}
        rejected: Counter = Counter()
        resyncs: Counter = Counter()
        for robot, feed in self.feeds.items():
            s = feed.mirror.stats()
            p = f"{robot}." if several else ""
            values.update({
                f"{p}map_id": s.map_id or "",
                f"{p}generation": s.generation if s.generation is not None else "",
                f"{p}seq": s.seq if s.seq is not None else "",
                f"{p}objects": s.objects,
                f"{p}mirror_age_s": "" if s.age_s is None else f"{s.age_s:.2f}",
                f"{p}updates_applied": s.applied,
                f"{p}states_applied": s.states,
                f"{p}pending_updates": s.pending,
                f"{p}stream_publishers": feed.subscription.get_publisher_count(),
            })
            rejected.update(s.rejected)
            resyncs.update(s.resyncs)
        if several:
            u = self.union.stats()
            values.update({"objects": u.objects, "merged": u.merged, "merged_groups": u.groups, "merge_tests": u.pair_tests})
        values.update({k: v for k, v in sorted(counts.items())})
        values.update({k: v for k, v in sorted(self.fetcher.counters().items())})
        if recent:
            values["query_ms_p50"] = f"{np.percentile(recent, 50):.1f}"
            values["query_ms_p99"] = f"{np.percentile(recent, 99):.1f}"
        if follow:  # a robot's change applied to the union (merge tests included)
            values["union_update_ms_p50"] = f"{np.percentile(follow, 50):.1f}"
            values["union_update_ms_max"] = f"{max(follow):.1f}"
        values.update(self._staleness_values())
        values.update({f"rejected_{k}": v for k, v in sorted(rejected.items())})
        values.update({f"resyncs_{k}": v for k, v in sorted(resyncs.items())})
        values.update({f"errors_{k}": v for k, v in sorted(errors.items())})
        return values

    # ------------------------------------------------------------------ the streams

    def _on_update(self, feed: RobotFeed, msg: Any) -> None:
        with self._lock:
            self._counts["updates_received"] += 1
        try:
            version = msg_to_map_version(msg)
        except Exception as e:  # a message the conversion cannot read: counted, never applied
            with self._lock:
                self._counts["updates_unreadable"] += 1
            self.get_logger().warning(f"unreadable map update: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            return
        self._note_staleness(msg, feed.mirror.offer(version))
        self._follow(feed)
        self._ask_state_if_needed(feed)

    def _follow(self, feed: RobotFeed) -> None:
        """Hand what changed in ``feed``'s mirror on to the union (only the changed objects)."""
        ch = feed.mirror.take_changes()
        if ch:
            m = feed.mirror.meta
            t0 = time.perf_counter()
            self.union.update(
                feed.robot, ch.objects.values(), ch.removed, full=ch.full,
                voxel_size=m.voxel_size, stamp=m.stamp, frames=m.frames,
            )
            with self._lock:
                self._union_ms.append((time.perf_counter() - t0) * 1e3)

    def _note_staleness(self, msg: Any, outcome: str) -> None:
        """For an update applied: the time from its snapshot in the mapping node (the update's
        header stamp, taken just before that snapshot) to now, when queries see it."""
        if outcome != "applied":
            return
        stamp = msg.header.stamp
        age = (self.get_clock().now().nanoseconds - (int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec))) * 1e-9
        with self._lock:
            self._staleness_s.append(age)

    def _staleness_values(self) -> dict[str, Any]:
        """staleness_s_p50/p95/max over the last STALENESS_WINDOW applied updates."""
        with self._lock:
            ages = list(self._staleness_s)
        if not ages:
            return {}
        return {
            "staleness_s_p50": f"{np.percentile(ages, 50):.3f}",
            "staleness_s_p95": f"{np.percentile(ages, 95):.3f}",
            "staleness_s_max": f"{max(ages):.3f}",
            "staleness_updates": len(ages),
        }

    def _ask_state_if_needed(self, feed: RobotFeed) -> None:
        if not feed.mirror.needs_state:
            return
        now = time.monotonic()
        with self._lock:
            if feed.state_future is not None and not feed.state_future.done():
                if now - feed.asked_at < STATE_TIMEOUT_S:
                    return
                feed.state_future.cancel()
                self._counts["state_timeouts"] += 1
            if not feed.state_client.service_is_ready():
                return  # asked again on the next tick
            feed.asked_at = now
            feed.mark = feed.mirror.mark()
            self._counts["state_requests"] += 1
            feed.state_future = feed.state_client.call_async(self._GetMapState.Request())
        feed.state_future.add_done_callback(self._guard("map_state", lambda f: self._on_state(feed, f)))

    def _on_state(self, feed: RobotFeed, future: Any) -> None:
        if future.cancelled():
            return
        resp = future.result()
        if resp is None or not resp.success:
            with self._lock:
                self._counts["state_failures"] += 1
            return
        with self._lock:
            mark = feed.mark
        outcome = feed.mirror.apply_state(msg_to_map_version(resp.state), mark)
        self._follow(feed)
        if outcome == "applied":  # the first state and each resync: rare, worth a line
            st = resp.state
            self.get_logger().info(
                f"map state applied: {st.map_id} generation {st.generation} seq {st.seq}, {len(st.objects)} objects"
            )

    def _tick(self) -> None:
        for feed in self.feeds.values():
            self._ask_state_if_needed(feed)
        with self._lock:
            hits, self._query_hits = self._query_hits, None
        if hits is not None:
            self.query_markers_pub.publish(query_markers(hits, frame_id=self.cfg.ros.map_frame, stamp=self._now()))
        self.diagnostics_pub.publish(self.diagnostics())

    def diagnostics(self) -> DiagnosticArray:
        values = self.counters()
        status = DiagnosticStatus(name=f"{self.get_name()}: query", hardware_id=self.get_fully_qualified_name())
        several = len(self.robots) > 1
        p = {r: f"{r}." if several else "" for r in self.robots}
        waiting = [r for r in self.robots if values[f"{p[r]}seq"] == ""]
        gone = [r for r in self.robots if r not in waiting and not values[f"{p[r]}stream_publishers"]]
        if len(waiting) == len(self.robots):
            status.level, status.message = DiagnosticStatus.WARN, NO_MAP_YET
        elif gone or waiting:
            status.level = DiagnosticStatus.WARN
            parts = [
                f"no mapping node on {self.feeds[r].subscription.topic_name}: serving {values[f'{p[r]}objects']} "
                f"objects as of {values[f'{p[r]}mirror_age_s']} s ago"
                for r in gone
            ] + [f"{r}: {NO_MAP_YET}" for r in waiting]
            status.message = "; ".join(parts)
        else:
            status.level, status.message = DiagnosticStatus.OK, f"serving {values['objects']} objects"
            if several:
                status.message += f" from {len(self.robots)} robots ({values['merged']} merged)"
        if any(k.startswith("errors_") for k in values):
            status.level, status.message = DiagnosticStatus.ERROR, "unexpected callback error(s), see the log; still serving"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return DiagnosticArray(header=make_header("", self.get_clock().now().to_msg()), status=[status])

    # ------------------------------------------------------------------ services

    def _now(self) -> Any:
        return self.get_clock().now().to_msg()

    def _serving(self) -> list[str]:
        """The robots whose maps have arrived."""
        return [r for r, f in self.feeds.items() if f.mirror.has_table]

    def _viewpoint(self) -> np.ndarray | None:
        """The first robot's last camera pose (the next's when it has none), for view-dependent relations."""
        for feed in self.feeds.values():
            v = feed.mirror.viewpoint
            if v is not None:
                return v
        return None

    async def _on_query(self, req: Any, resp: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self._answer(req, resp)
        finally:
            with self._lock:
                self._counts["queries"] += 1
                self._query_ms.append((time.perf_counter() - t0) * 1e3)

    async def _answer(self, req: Any, resp: Any) -> Any:
        text = str(req.text)
        resp.parsed.text = text
        serving = self._serving()
        if not serving:
            resp.success, resp.message = False, NO_MAP_YET
            return resp
        view = self.union.view()  # one consistent version for the whole answer
        snap = view.snapshot
        try:
            graph = self._graph(view)
            answer = self.answerer.answer(
                snap, text, top_k=int(req.top_k) or None, viewpoint=self._viewpoint(), graph=graph
            )
        except self._query_errors as e:
            resp.success, resp.message = False, str(e) or type(e).__name__
            return resp
        fetched, notes = None, []
        if (req.include_points or req.include_best_view) and answer.results:
            wanted = [(o.robot, o.id) for o in (view.origins.get(int(h.object_id)) for h in answer.results) if o is not None]
            got = await self.fetcher.fetch(wanted, points=bool(req.include_points), best_view=bool(req.include_best_view))
            fetched = got.got
            notes.append(got.note("points") if req.include_points else got.note("best views", "not fetched"))
        hits = fill_query_response(
            req, resp, answer, snap, self._QueryResult, self.cfg.ros.map_frame, self._now,
            origin=view.origins.get, fetched=fetched,
        )
        for r in resp.results:
            self._fill_room_id(r.robot, r.object)
        if req.include_best_view and any(not r.best_view.data for r in resp.results):
            notes.append(NO_BEST_VIEWS)
        notes += [f"{r}: {NO_MAP_YET}" for r in self.robots if r not in serving]
        resp.message = "; ".join([resp.message] + [n for n in notes if n])
        with self._lock:
            self._query_hits = hits
        return resp

    def _graph(self, view: Any) -> Any:
        """The scene graph queries use: the one robot's, or the robots' graphs on the served ids
        of ``view`` (rebuilt when the view or a graph changed, not per query)."""
        if len(self.robots) == 1:
            return self.scene_graph.graph()
        graphs = tuple(m.graph() for m in self.scene_graphs.values())
        with self._lock:
            v, g, union = self._union_graph
            if v is view and all(a is b for a, b in zip(g, graphs)):
                return union
        union = union_scene_graph(view, dict(zip(self.scene_graphs, graphs)), self.robots)
        with self._lock:
            self._union_graph = (view, graphs, union)
        return union

    def _fill_room_id(self, robot: str, obj: Any) -> None:
        """Object.room_id: the object's room in its own robot's graph (0: none or no graph)."""
        robot = robot or self.robots[0]
        self._room_ids[robot].fill([obj], self.scene_graphs[robot].graph())

    async def _on_get_object(self, req: Any, resp: Any) -> Any:
        robot = str(req.robot) or self.robots[0]
        resp.robot = robot
        if robot not in self.feeds:
            resp.success = False
            resp.message = f"unknown robot {robot!r}: query.namespaces are {self.robots}"
            return resp
        if not self.feeds[robot].mirror.has_table:
            resp.success, resp.message = False, NO_MAP_YET if len(self.robots) == 1 else f"{robot}: {NO_MAP_YET}"
            return resp
        view = self.union.view()
        obj = view.objects.get((robot, int(req.id)))
        if obj is None:
            resp.success = False
            where = f"{robot}'s map" if robot else "the map"
            resp.message = f"no object with id {req.id} ({where} has {self.feeds[robot].mirror.stats().objects} objects)"
            return resp
        points, note = None, ""
        view_wanted = bool(getattr(req, "include_best_view", False))
        f = None
        if req.include_points or view_wanted:
            got = await self.fetcher.fetch([(robot, int(obj.id))], points=bool(req.include_points), best_view=view_wanted)
            f = got.got.get((robot, int(obj.id)))
            points, note = (f.points if f is not None else None), (got.note("points") if req.include_points else got.note("best view", "not fetched"))
        fill_object(resp, obj, bool(req.include_points), self.cfg.ros.map_frame, self._now, points=points)
        if view_wanted and f is not None and f.best_view is not None:
            resp.best_view = f.best_view
        group = view.groups.get((robot, int(obj.id)))
        if group is not None and (group.robot, group.id) != (robot, int(obj.id)):
            note = "; ".join(n for n in (note, f"merged into {group.robot}'s object {group.id}") if n)
        resp.message = note
        self._fill_room_id(robot, resp.object)
        return resp


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``core3d-query-node [--config FILE] [--ros-args ...]``."""
    return exit_now_if_busy(run_nodes(argv, prog="core3d_query", build=lambda cf: [QueryNode(config_file=cf)]))


if __name__ == "__main__":
    sys.exit(main())
