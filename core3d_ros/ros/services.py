"""The mapping node's services: query, get_object, save_map, load_map, clear_map.

Every service reads a snapshot (``wait=False``: the last one when a fusion is running), so
queries answer while mapping continues; save / load / clear run against each other under one
lock, and the mapper's own lock keeps them consistent with mapping. Map files stay inside
``ros.maps_dir`` unless ``ros.allow_any_map_path`` (``MapPathPolicy``). The query engine is
built on the first query, when the mapper's encoder exists. Query counts and the time each
query spent inside the node (``query_ms_p50`` / ``p99`` in /diagnostics) are kept here.
"""
from __future__ import annotations

import math
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from ..config import ConfigError, MapperConfig
from ..core.mappaths import MapPathError, MapPathPolicy
from ..core.objects import ObjectInfo
from .conversions.clouds import points_to_cloud
from .conversions.images import rgb_to_image
from .conversions.objects import object_to_msg
from .conversions.query import fill_query_stages
from .protocols import FrameMapper, MapStore, QueryAnswerer
from .scene_graph import RoomIds

Guard = Callable[[str, Callable[..., Any]], Callable[..., Any]]
QUERY_WINDOW = 256  # recent query times kept for the percentiles


def service_qos(depth: int) -> QoSProfile:
    """The QoS of core3d's services. The default keeps 10 requests: a burst of more (a planner
    falling behind, a load bench) lost the oldest without a word; ``ros.service_queue`` sets it."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
    )


def query_error_types() -> tuple[type, ...]:
    """The exceptions that mean a bad query (answered as such), not a fault of the node."""
    try:
        from ..core.retrieval.engine import QueryError
    except Exception:  # engine not importable: the query service reports that instead
        return (ValueError,)
    return (QueryError, ValueError)


class MapServices:
    """Creates and serves the five services on ``node``; see the module docstring.

    ``engine_factory(cfg, mapper)`` builds the query engine; ``guard(name, fn)`` wraps each
    callback (the node's: counts and answers unexpected exceptions); ``count_error(name, e)``
    counts a failure the services survive; ``on_query_hits(hits)`` publishes the ranked
    (object, score) pairs of a query; ``on_map_replaced()`` runs after a load or clear.
    """

    def __init__(
        self,
        node: Node,
        cfg: MapperConfig,
        mapper: MapStore,
        engine_factory: Callable[[MapperConfig, Any], QueryAnswerer],
        map_paths: MapPathPolicy,
        *,
        guard: Guard,
        count_error: Callable[[str, BaseException], None],
        on_query_hits: Callable[[list[tuple[ObjectInfo, float]]], None],
        on_map_replaced: Callable[[], None],
        callback_group: Any = None,
    ):
        from core3d.msg import QueryResult  # the package's built interfaces
        from core3d.srv import GetObject, LoadMap, Query, SaveMap

        self.node = node
        self.cfg = cfg
        self.mapper = mapper
        self._QueryResult = QueryResult
        self._engine_factory = engine_factory
        self._engine: QueryAnswerer | None = None
        self._engine_lock = threading.Lock()
        self._query_errors = query_error_types()
        self._map_paths = map_paths
        self._count_error = count_error
        self._on_query_hits = on_query_hits
        self._on_map_replaced = on_map_replaced
        # save / load / clear against each other; the mapper's own lock keeps mapping, snapshots
        # and map files consistent, so the worker never waits for a service
        self._map_lock = threading.RLock()
        self._lock = threading.Lock()  # query count and times
        self._queries = 0
        self._query_ms: deque[float] = deque(maxlen=QUERY_WINDOW)
        self._room_ids = RoomIds()  # Object.room_id from the mapper's scene graph
        served = [
            (Query, "query", self._on_query),
            (GetObject, "get_object", self._on_get_object),
            (SaveMap, "save_map", self._on_save_map),
            (LoadMap, "load_map", self._on_load_map),
            (Trigger, "clear_map", self._on_clear_map),
        ]
        qos = service_qos(cfg.ros.service_queue)
        # query and get_object in ros.query_namespace (core3d/mapping when a query node serves
        # core3d/query); the map file services always in core3d
        spaces = {"query": cfg.ros.query_namespace, "get_object": cfg.ros.query_namespace}
        self.services = [
            node.create_service(
                srv, f"{spaces.get(name, 'core3d')}/{name}", guard(name, fn), qos_profile=qos, callback_group=callback_group
            )
            for srv, name, fn in served
        ]

    # ------------------------------------------------------------------ counters

    @property
    def queries(self) -> int:
        with self._lock:
            return self._queries

    def query_timing(self) -> dict[str, str]:
        """``query_ms_p50`` / ``query_ms_p99`` of the recent queries (empty before the first):
        time spent inside the node per query; clients add transport and their own waits."""
        with self._lock:
            recent = list(self._query_ms)
        if not recent:
            return {}
        return {
            "query_ms_p50": f"{np.percentile(recent, 50):.1f}",
            "query_ms_p99": f"{np.percentile(recent, 99):.1f}",
        }

    def num_objects(self) -> int:
        """The map's object count (0, counted as a ``snapshot`` error, when a snapshot fails)."""
        try:
            return len(self.mapper.snapshot().objects)
        except Exception as e:
            self._count_error("snapshot", e)
            return 0

    # ------------------------------------------------------------------ query

    def _query_engine(self) -> QueryAnswerer:
        with self._engine_lock:  # built on first use: the mapper's encoder exists by then
            if self._engine is None:
                self._engine = self._engine_factory(self.cfg, self.mapper)
            return self._engine

    def _on_query(self, req: Any, resp: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._answer_query(req, resp)
        finally:
            with self._lock:
                self._query_ms.append((time.perf_counter() - t0) * 1e3)

    def _now(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def _answer_query(self, req: Any, resp: Any) -> Any:
        text = str(req.text)
        resp.parsed.text = text
        with self._lock:
            self._queries += 1
        try:
            engine = self._query_engine()
            snap = self.mapper.snapshot(wait=False)
            top_k = int(req.top_k) or None
            graph = getattr(self.mapper, "hierarchy", None)  # the scene graph, for room-aware queries
            answer = engine.answer(snap, text, top_k=top_k, viewpoint=self.mapper.last_pose, graph=graph)
        except self._query_errors as e:
            resp.success, resp.message = False, str(e) or type(e).__name__
            return resp
        except Exception as e:
            self.node.get_logger().error(f"query {text[:80]!r} failed:\n{traceback.format_exc()}")
            resp.success, resp.message = False, f"query failed: {type(e).__name__}: {e}"
            return resp
        hits = fill_query_response(req, resp, answer, snap, self._QueryResult, self.cfg.ros.map_frame, self._now)
        self._room_ids.fill((r.object for r in resp.results), getattr(self.mapper, "hierarchy", None))
        self._on_query_hits(hits)
        return resp

    # ------------------------------------------------------------------ objects

    def _on_get_object(self, req: Any, resp: Any) -> Any:
        resp = fill_object_response(req, resp, self.mapper.snapshot(wait=False), self.cfg.ros.map_frame, self._now)
        self._room_ids.fill([resp.object], getattr(self.mapper, "hierarchy", None))
        return resp

    # ------------------------------------------------------------------ map files

    def _map_path(self, requested: str) -> str:
        """The requested path, or ros.map_path when empty ("" when both are empty)."""
        return str(requested).strip() or self.cfg.ros.map_path

    def _on_save_map(self, req: Any, resp: Any) -> Any:
        path = self._map_path(req.path)
        resp.path = ""
        if not path:
            resp.success, resp.message = False, "no path given and parameter ros.map_path is empty"
            return resp
        try:
            target = self._map_paths.resolve_for_write(path)
        except (MapPathError, OSError) as e:
            resp.success, resp.message = False, f"refused to save the map to {path!r}: {e}"
            self.node.get_logger().warning(resp.message)
            return resp
        try:
            with self._map_lock:
                written = self.mapper.save(str(target))
        except Exception as e:
            resp.success, resp.message = False, f"could not save the map to {target}: {type(e).__name__}: {e}"
            return resp
        resp.success, resp.path = True, str(written or target)
        resp.message = f"saved the map to {resp.path}"
        self.node.get_logger().info(resp.message)
        return resp

    def _on_load_map(self, req: Any, resp: Any) -> Any:
        path = self._map_path(req.path)
        if not path:
            resp.success, resp.message = False, "no path given and parameter ros.map_path is empty"
            resp.num_objects = self.num_objects()  # every answer tells the map's true size
            return resp
        try:
            target = self._map_paths.resolve_for_read(path)
            with self._map_lock:
                self.mapper.load(str(target))
        except Exception as e:  # MapPathError, MapFileError (damaged file) or OSError: map untouched
            resp.success = False
            kind = "" if isinstance(e, (MapPathError, ValueError)) else f"{type(e).__name__}: "
            resp.message = f"could not load {path!r}: {kind}{e}"
            resp.num_objects = self.num_objects()
            return resp
        self._on_map_replaced()
        resp.success = True
        resp.num_objects = self.num_objects()
        resp.message = f"loaded {resp.num_objects} objects from {target}"
        if getattr(self.mapper, "hierarchy_error", ""):  # derived data: the map loads, the caller is told
            resp.message += f"; its scene graph was dropped ({self.mapper.hierarchy_error}) and is rebuilt while mapping"
        self.node.get_logger().info(resp.message)
        return resp

    def _on_clear_map(self, req: Any, resp: Any) -> Any:
        try:
            with self._map_lock:
                n = self.num_objects()
                self.mapper.clear()
        except Exception as e:
            resp.success, resp.message = False, f"could not clear the map: {type(e).__name__}: {e}"
            return resp
        self._on_map_replaced()
        resp.success, resp.message = True, f"map cleared ({n} objects removed)"
        return resp

    def load_startup_map(self, path: str) -> None:
        """``ros.map_path`` at start-up: a missing file starts an empty map; a path outside the
        maps directory is a ConfigError."""
        log = self.node.get_logger()
        try:
            target = self._map_paths.resolve(path)
        except MapPathError as e:
            raise ConfigError(f"ros.map_path: {e}") from None
        if not target.exists():
            log.info(f"ros.map_path {target} does not exist yet; starting with an empty map")
            return
        try:
            self.mapper.load(str(target))
        except Exception as e:
            log.error(f"could not load ros.map_path {target}: {e}; starting with an empty map")
        else:
            log.info(f"loaded {self.num_objects()} objects from {target}")


def default_engine(cfg: MapperConfig, mapper: FrameMapper) -> QueryAnswerer:
    """The configured answerer (rule-based, or with the model steps) over ``mapper``'s encoder."""
    from ..core.retrieval.answerers import make_answerer

    return make_answerer(cfg.retrieval, mapper.encoder)


def fill_object_response(req: Any, resp: Any, snap: Any, map_frame: str, now: Callable[[], Any]) -> Any:
    """Fill a core3d/srv/GetObject response for ``req.id`` from ``snap`` (the mapping node's)."""
    obj = snap.by_id().get(int(req.id))
    if obj is None:
        resp.success = False
        resp.message = f"no object with id {req.id} (the map has {len(snap.objects)} objects)"
        return resp
    fill_object(resp, obj, bool(req.include_points), map_frame, now)
    if getattr(req, "include_best_view", False) and obj.best_view is not None:
        resp.best_view = rgb_to_image(obj.best_view, stamp=now(), frame_id=f"core3d_object_{obj.id}")
    return resp


def fill_object(resp: Any, obj: ObjectInfo, include_points: bool, map_frame: str, now: Callable[[], Any], points: Any = None) -> Any:
    """A found object into a GetObject response; ``points``: a PointCloud2 fetched from the
    object's mapping node (the query node's), else the object's own points (the mapping node's:
    all its voxels; a query node's: the stream's sample). The mapping node and the query node
    answer through it alike."""
    resp.success, resp.message = True, ""
    resp.object = object_to_msg(obj)
    if include_points:
        resp.points = points if points is not None else points_to_cloud(obj.points, obj.colors, frame_id=map_frame, stamp=now())
    return resp


def fill_query_response(
    req: Any,
    resp: Any,
    answer: Any,
    snap: Any,
    result_type: Any,
    map_frame: str,
    now: Callable[[], Any],
    *,
    origin: Callable[[int], Any] | None = None,
    fetched: dict[tuple[str, int], Any] | None = None,
) -> list[tuple[ObjectInfo, float]]:
    """Fill a core3d/srv/Query response from an answerer's answer over ``snap``; returns the
    ranked (object, score) pairs. The mapping node and the query node answer through it alike.

    The query node's: ``origin(id)`` gives a served object's robot, its id in that robot's map
    and the objects merged into it (core/mapping/union.Origin), which the result carries;
    ``fetched[(robot, id)]`` holds what its mapping node sent (ros/fetch.Fetched: points, best
    view), used instead of the object's own."""
    parsed = answer.parsed
    resp.parsed.target = str(getattr(parsed, "target", "") or "")
    resp.parsed.attributes = [str(a) for a in (getattr(parsed, "attributes", None) or [])]
    relations = list(getattr(parsed, "relations", None) or [])
    resp.parsed.relations = [str(r) for r, _ in relations]
    resp.parsed.anchors = [str(a) for _, a in relations]
    resp.semantic = bool(answer.semantic)
    by_id = snap.by_id()
    hits = []
    for hit in answer.results:
        obj = by_id.get(int(hit.object_id))
        if obj is None:
            continue
        r = result_type()
        r.object = object_to_msg(obj)
        came = origin(obj.id) if origin is not None else None
        if came is not None:
            r.object.id, r.robot = int(came.id), str(came.robot)
            r.merged_ids = [int(i) for _, i in came.merged]
            r.merged_robots = [str(rb) for rb, _ in came.merged]
        got = (fetched or {}).get((came.robot, came.id) if came is not None else ("", obj.id))
        if getattr(hit, "label", ""):
            r.object.label = str(hit.label)
        r.score = float(hit.score)
        r.similarity = math.nan if hit.similarity is None else float(hit.similarity)
        r.relation_score = float(hit.relation_score if hit.relation_score is not None else 1.0)
        stamp = now()
        if req.include_points:
            if got is not None and got.points is not None:
                r.points = got.points
            else:
                r.points = points_to_cloud(obj.points, obj.colors, frame_id=map_frame, stamp=stamp)
        if req.include_best_view:
            if got is not None and got.best_view is not None:
                r.best_view = got.best_view
            elif obj.best_view is not None:
                r.best_view = rgb_to_image(obj.best_view, stamp=stamp, frame_id=f"core3d_object_{obj.id}")
        resp.results.append(r)
        hits.append((obj, float(hit.score)))
    fill_query_stages(resp, answer, hits[0][0] if hits else None, stamp=now())
    resp.success = True
    resp.message = str(answer.message or "") or f"{len(resp.results)} result(s)"
    return hits
