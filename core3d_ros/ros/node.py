"""The core3d mapping node: synced RGB-D + pose in, object map, markers, cloud and services out.

Threads: subscription callbacks only time-sync messages and hand complete sets to a bounded
work queue (``ros.work_queue``; when full the oldest set is dropped and counted); one worker
thread converts a set into a Frame, integrates it into the TSDF geometry layer and buffers it by
stamp. Masks and embeddings come from the perception node (``perception_node.py``; in this
process by default, ``ros.perception``) on ``core3d/observations`` and are fused late against
their own frame (``late_fusion.py``); no model call ever runs in this node's threads unless
``ros.perception`` is ``inline``. A timer publishes the map every ``ros.publish_period`` seconds
from a snapshot; services read snapshots too, so queries answer while mapping continues. Run it
under a MultiThreadedExecutor (``main`` does).

Parts: parameters (params.py), inputs and frame assembly (inputs.py, frames.py), late fusion
(late_fusion.py), message conversion (conversions.py, surface_msgs.py); this file composes them
with the services and publishers.

Every field of the MapperConfig tree is a read-only ROS parameter of the same dotted name
(``fusion.voxel_size``, ``ros.color_topic``, ...); ``config_file`` (or ``--config FILE``)
loads a YAML file first, and ``--ros-args -p`` / ``--params-file`` values override it.
"""
from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from ..config import ConfigError, MapperConfig, RosConfig
from ..core.frame import Frame
from ..core.mappaths import MapPathError, MapPathPolicy
from . import conversions as conv
from .frames import REJECTED, reason_of
from .inputs import SyncedInputs, validate_inputs
from .late_fusion import LateFusion
from .params import declare_config
from .runner import exit_now_if_busy, run_nodes
from .surface_msgs import surface_markers
from .sync import Rejected, SyncedSet

NODE_NAME = "core3d_mapping"
PERCEPTION_MODES = ("in_process", "external", "inline")

@dataclass
class NodeCounters:
    """What the node has seen and done; a copy, safe to read in tests and diagnostics."""

    received: dict[str, int] = field(default_factory=dict)  # messages per input (color/depth/...)
    synced: int = 0  # complete sets handed to the work queue
    processed: int = 0  # frames integrated into the map
    keyframes: int = 0
    dropped: int = 0  # sets dropped because the work queue was full
    rejected: dict[str, int] = field(default_factory=dict)  # colour frames lost, per reason
    queue_length: int = 0
    objects: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)  # last processed frame, per stage
    queries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # unexpected exceptions per callback

    @property
    def frames_received(self) -> int:
        return self.received.get("color", 0)

    @property
    def total_rejected(self) -> int:
        return sum(self.rejected.values())


def validate_ros_config(ros: RosConfig) -> None:
    """Reject RosConfig values the mapping node cannot run with (ConfigError names the parameter)."""
    validate_inputs(ros)
    if ros.work_queue < 1:
        raise ConfigError(f"ros.work_queue must be >= 1, got {ros.work_queue}")
    if not ros.publish_period > 0:
        raise ConfigError(f"ros.publish_period must be > 0, got {ros.publish_period}")
    if ros.marker_style not in ("line_list", "cube"):
        raise ConfigError(f"ros.marker_style must be 'line_list' or 'cube', got {ros.marker_style!r}")
    if not ros.maps_dir:
        raise ConfigError("ros.maps_dir must not be empty")
    if ros.perception not in PERCEPTION_MODES:
        raise ConfigError(f"ros.perception must be one of {PERCEPTION_MODES}, got {ros.perception!r}")
    for name in ("frame_buffer", "max_pinned_frames"):
        if getattr(ros, name) < 1:
            raise ConfigError(f"ros.{name} must be >= 1, got {getattr(ros, name)}")


def validate_node_config(cfg: MapperConfig) -> None:
    validate_ros_config(cfg.ros)
    if cfg.segmenter.name == "oracle" and not cfg.ros.instance_topic:
        raise ConfigError(
            "segmenter.name 'oracle' needs ground-truth instance ids: set ros.instance_topic "
            "(a 32SC1/16UC1 instance image), or choose another segmenter"
        )


def _default_mapper(cfg: MapperConfig) -> Any:
    from ..core.pipeline import Mapper

    # Only the inline mode runs models in this node; otherwise the perception node does.
    return Mapper(cfg, segment=cfg.ros.perception == "inline")


def _default_engine(cfg: MapperConfig, mapper: Any) -> Any:
    from ..core.retrieval.engine import QueryEngine

    engine = QueryEngine(cfg.retrieval, encoder=getattr(mapper, "encoder", None))
    if not cfg.retrieval.llm.enabled:
        return engine
    from ..core.retrieval.llm import LlmRetriever  # model steps, rule-based fallback

    return LlmRetriever(engine, cfg.retrieval.llm)


def _query_error_types() -> tuple[type, ...]:
    try:
        from ..core.retrieval.engine import QueryError
    except Exception:  # engine not importable: the query service reports that instead
        return (ValueError,)
    return (QueryError, ValueError)


class MappingNode(Node):
    """ROS 2 front end of the core3d Mapper. See the module docstring.

    ``config`` gives the parameters' defaults (a ``config_file`` replaces it; ROS parameter
    overrides beat both). ``mapper_factory(cfg)`` and ``engine_factory(cfg, mapper)`` build the
    Mapper and the QueryEngine (defaults: the real ones); ``node_kwargs`` go to rclpy's Node
    (``context``, ``parameter_overrides``, ``namespace``, ...).
    """

    def __init__(
        self,
        config: MapperConfig | None = None,
        *,
        config_file: str | None = None,
        mapper_factory: Callable[[MapperConfig], Any] | None = None,
        engine_factory: Callable[[MapperConfig, Any], Any] | None = None,
        node_name: str = NODE_NAME,
        **node_kwargs: Any,
    ):
        from core3d.msg import ObjectArray, QueryResult  # the package's built interfaces
        from core3d.srv import GetObject, LoadMap, Query, SaveMap

        super().__init__(node_name, **node_kwargs)
        self._QueryResult = QueryResult
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

        # ---- configuration: YAML (optional) -> declared parameters -> MapperConfig
        self.cfg = declare_config(self, config, config_file)
        validate_node_config(self.cfg)
        ros = self.cfg.ros

        # ---- state
        self._lock = threading.Lock()  # counters
        # save / load / clear against each other; the mapper's own lock keeps mapping, snapshots
        # and map files consistent, so the worker never waits for a service or a publication
        self._map_lock = threading.RLock()
        self._engine_lock = threading.Lock()
        self._received: Counter = Counter()
        self._rejected: Counter = Counter()
        self._counts = Counter()  # synced, processed, keyframes, dropped, queries
        self._timings: dict[str, float] = {}
        self._objects = 0
        self._warned: set[str] = set()
        self._errors: Counter = Counter()  # unexpected exceptions per callback
        self._query_ms: deque[float] = deque(maxlen=256)  # recent query service times
        self._queue: deque[SyncedSet] = deque()
        self._cv = threading.Condition()

        self.mapper = (mapper_factory or _default_mapper)(self.cfg)
        self._engine_factory = engine_factory or _default_engine
        self._engine: Any = None
        self._query_errors = _query_error_types()

        self._map_paths = MapPathPolicy(ros.maps_dir, ros.allow_any_map_path)
        if ros.map_path:
            self._load_startup_map(ros.map_path)

        # ---- inputs (QoS per input; compressed transports subscribe to <topic>/compressed[Depth])
        self._sub_group = MutuallyExclusiveCallbackGroup()
        self._srv_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._inputs = SyncedInputs(
            self,
            self.cfg,
            on_set=self._enqueue,
            on_reject=self._on_reject,
            on_message=self._count_received,
            callback_group=self._sub_group,
            guard=self._guard,
        )
        self._sync, self._frames = self._inputs.sync, self._inputs.frames
        self._late: LateFusion | None = None
        if ros.perception != "inline":  # masks and embeddings arrive from a perception node
            self._late = LateFusion(self)

        # ---- outputs
        qos_map = QoSProfile(
            reliability=ReliabilityPolicy.RELIABLE,
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.objects_pub = self.create_publisher(ObjectArray, "core3d/objects", qos_map)
        self.markers_pub = self.create_publisher(MarkerArray, "core3d/markers", qos_map)
        self.cloud_pub = self.create_publisher(PointCloud2, "core3d/cloud", qos_map) if ros.publish_points else None
        self.query_markers_pub = self.create_publisher(MarkerArray, "core3d/query_markers", qos_map)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.surface_pub = None
        if ros.publish_surface and self.cfg.geometry.enabled:
            self.surface_pub = self.create_publisher(MarkerArray, "core3d/surface", qos_map)
        self._surface_reset = True  # the next surface publication starts with a DELETEALL
        self._timer = self.create_timer(
            ros.publish_period, self._guard("publish_map", self.publish_map), callback_group=self._timer_group
        )

        # Not `_services`: that is rclpy.Node's own list (its parameter services live there).
        self._core3d_services = [
            self.create_service(Query, "core3d/query", self._guard("query", self._on_query), callback_group=self._srv_group),
            self.create_service(
                GetObject, "core3d/get_object", self._guard("get_object", self._on_get_object), callback_group=self._srv_group
            ),
            self.create_service(
                SaveMap, "core3d/save_map", self._guard("save_map", self._on_save_map), callback_group=self._srv_group
            ),
            self.create_service(
                LoadMap, "core3d/load_map", self._guard("load_map", self._on_load_map), callback_group=self._srv_group
            ),
            self.create_service(
                Trigger, "core3d/clear_map", self._guard("clear_map", self._on_clear_map), callback_group=self._srv_group
            ),
        ]

        self._worker = threading.Thread(target=self._work_loop, name="core3d_mapping_worker", daemon=True)
        self._worker.start()
        models = (
            f"segmenter '{self.cfg.segmenter.name}', encoder '{self.cfg.embed.name}' in this worker"
            if ros.perception == "inline"
            else f"observations from the perception node ({ros.perception}); encoder '{self.cfg.embed.name}' for queries"
        )
        self.get_logger().info(f"mapping: {self._inputs.description}; {models}")

    # ------------------------------------------------------------------ callback guards

    def _guard(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a subscription, service or timer callback so that an unexpected exception is
        logged with its traceback, counted (``errors_<name>`` in /diagnostics), answered as a
        failed response for a service, and never reaches the executor: the node keeps serving."""

        def guarded(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as e:
                self._count_error(name, e)
                if len(args) == 2:  # a service: (request, response)
                    return self._failed_response(args[1], f"internal error in {name}: {type(e).__name__}: {e}")
                return None

        guarded.__name__ = f"guarded_{name}"
        return guarded

    def _count_error(self, name: str, error: BaseException) -> None:
        with self._lock:
            self._errors[name] += 1
            n = self._errors[name]
        if n <= 10 or n % 100 == 0:  # a per-frame fault must not flood the log
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            self.get_logger().error(f"callback {name} failed ({n} so far; counted as errors_{name}):\n{tb}")

    def _failed_response(self, resp: Any, message: str) -> Any:
        fresh = type(resp)()  # nothing half-filled from the failed call
        fresh.success, fresh.message = False, message
        if hasattr(fresh, "num_objects"):
            fresh.num_objects = self._num_objects()
        return fresh

    def _num_objects(self) -> int:
        try:
            return len(self.mapper.snapshot().objects)
        except Exception as e:
            self._count_error("snapshot", e)
            return 0

    # ------------------------------------------------------------------ inputs

    def _count_received(self, key: str) -> None:
        with self._lock:
            self._received[key] += 1

    def _on_reject(self, rejected: Rejected) -> None:
        self._count_reject(rejected.reason, f"colour frame at {rejected.stamp:.3f} s not synchronised")

    def _enqueue(self, synced: SyncedSet) -> None:
        with self._cv:
            if len(self._queue) >= self.cfg.ros.work_queue:
                self._queue.popleft()
                with self._lock:
                    self._counts["dropped"] += 1
            self._queue.append(synced)
            with self._lock:
                self._counts["synced"] += 1
            self._cv.notify()

    def _first_time(self, key: str) -> bool:
        with self._lock:
            first = key not in self._warned
            self._warned.add(key)
        return first

    def _count_reject(self, reason: str, detail: str) -> None:
        with self._lock:
            self._rejected[reason] += 1
        if self._first_time(reason):  # log each reason once loudly, then only at DEBUG
            log = self.get_logger().error if reason == "error" else self.get_logger().warning
            log(f"frame rejected ({reason}): {detail} (further ones are counted in /diagnostics)")
        else:
            self.get_logger().debug(f"frame rejected ({reason}): {detail}")

    # ------------------------------------------------------------------ worker

    def _work_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop.is_set():
                    self._cv.wait(0.5)
                if self._stop.is_set():
                    return
                synced = self._queue.popleft()
            try:
                self._handle(synced)
            except Exception as e:  # never let one frame kill the worker
                self._count_reject("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")

    def build_frame(self, synced: SyncedSet) -> Frame:
        """Convert a synced set to a Frame; raises FrameError / ConversionError / DepthError."""
        return self._frames.build(synced)

    def _handle(self, synced: SyncedSet) -> None:
        t0 = time.perf_counter()
        try:
            frame = self.build_frame(synced)
            convert_ms = (time.perf_counter() - t0) * 1e3
            if self._late is not None:  # TSDF + frame buffer; observations are fused when they come
                stats = self._late.add_frame(frame)
            else:
                stats = self.mapper.process(frame)  # the mapper locks fusion only, not this call
        except REJECTED as e:
            self._count_reject(reason_of(e), str(e))
            return
        timings = {"convert": convert_ms}
        timings.update({k: float(v) for k, v in (getattr(stats, "timings_ms", None) or {}).items()})
        timings["total"] = (time.perf_counter() - t0) * 1e3
        with self._lock:
            self._counts["processed"] += 1
            if getattr(stats, "keyframe", False):
                self._counts["keyframes"] += 1
            self._timings = timings

    # ------------------------------------------------------------------ outputs

    def counters(self) -> NodeCounters:
        with self._lock:
            return NodeCounters(
                received=dict(self._received),
                synced=self._counts["synced"],
                processed=self._counts["processed"],
                keyframes=self._counts["keyframes"],
                dropped=self._counts["dropped"],
                rejected=dict(self._rejected),
                queue_length=len(self._queue),
                objects=self._objects,
                timings_ms=dict(self._timings),
                queries=self._counts["queries"],
                errors=dict(self._errors),
            )

    def publish_map(self) -> None:
        """Publish objects, markers, cloud (to subscribers present) and diagnostics once."""
        ros = self.cfg.ros
        stamp = self.get_clock().now().to_msg()
        snap = self.mapper.snapshot(wait=False)
        with self._lock:
            self._objects = len(snap.objects)
        if self.objects_pub.get_subscription_count():
            self.objects_pub.publish(conv.snapshot_to_object_array(snap, frame_id=ros.map_frame, stamp=stamp))
        if self.markers_pub.get_subscription_count():
            self.markers_pub.publish(
                conv.snapshot_to_markers(snap, frame_id=ros.map_frame, stamp=stamp, style=ros.marker_style)
            )
        if self.cloud_pub is not None and self.cloud_pub.get_subscription_count():
            self.cloud_pub.publish(conv.snapshot_to_cloud(snap, frame_id=ros.map_frame, stamp=stamp))
        self._publish_surface(stamp)
        self.diagnostics_pub.publish(self._diagnostics(stamp))

    def _publish_surface(self, stamp: Any) -> None:
        """The TSDF blocks changed since the last publication (none of the rest of the map).
        Without subscribers the changes accumulate, so a first subscriber gets the whole map."""
        geometry = getattr(self.mapper, "geometry", None)
        if self.surface_pub is None or geometry is None or not self.surface_pub.get_subscription_count():
            return
        blocks = geometry.take_dirty()
        if not len(blocks) and not self._surface_reset:
            return
        points, colors, block_of = geometry.surface(blocks)
        self.surface_pub.publish(
            surface_markers(
                blocks, points, colors, block_of, voxel_size=geometry.voxel_size,
                frame_id=self.cfg.ros.map_frame, stamp=stamp, clear_first=self._surface_reset,
            )
        )
        self._surface_reset = False

    def _diagnostics(self, stamp: Any) -> DiagnosticArray:
        c = self.counters()
        sync = self._sync.stats()
        status = DiagnosticStatus(name=f"{self.get_name()}: mapping", hardware_id=self.get_fully_qualified_name())
        if c.frames_received and not c.processed:
            status.level, status.message = DiagnosticStatus.WARN, "receiving images but no frame mapped yet"
        elif c.dropped or c.total_rejected:
            status.level, status.message = DiagnosticStatus.OK, "mapping; some frames dropped or rejected"
        else:
            status.level, status.message = DiagnosticStatus.OK, "mapping" if c.processed else "waiting for images"
        values = {
            "frames_received": c.frames_received,
            "frames_synced": c.synced,
            "frames_processed": c.processed,
            "keyframes": c.keyframes,
            "frames_dropped": c.dropped,
            "frames_rejected": c.total_rejected,
            "work_queue_length": c.queue_length,
            "objects": c.objects,
            "queries": c.queries,
        }
        with self._lock:
            recent = list(self._query_ms)
        if recent:  # time spent inside the node per query (clients add transport and their own waits)
            values["query_ms_p50"] = f"{np.percentile(recent, 50):.1f}"
            values["query_ms_p99"] = f"{np.percentile(recent, 99):.1f}"
        with self._lock:
            errors = dict(self._errors)
        if errors:
            status.level = DiagnosticStatus.ERROR
            status.message = f"{sum(errors.values())} unexpected callback error(s), see the log; still serving"
        values.update({f"errors_{k}": v for k, v in sorted(errors.items())})
        if self._late is not None:
            values.update(self._late.counters())
        values.update({f"received_{k}": v for k, v in sorted(c.received.items())})
        values.update({f"rejected_{k}": v for k, v in sorted(c.rejected.items())})
        values.update({f"sync_dropped_{k}": v for k, v in sorted(sync.dropped.items())})
        values.update({f"sync_out_of_order_{k}": v for k, v in sorted(sync.out_of_order.items())})
        values.update({f"time_{k}_ms": f"{v:.1f}" for k, v in c.timings_ms.items()})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return DiagnosticArray(header=conv.make_header("", stamp), status=[status])

    # ------------------------------------------------------------------ services

    def _query_engine(self) -> Any:
        with self._engine_lock:  # built on first use: the mapper's encoder exists by then
            if self._engine is None:
                self._engine = self._engine_factory(self.cfg, self.mapper)
            return self._engine

    def _on_query(self, req: Any, resp: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._answer_query(req, resp)
        finally:
            with self._lock:  # time inside the node, for /diagnostics (query_ms_p50 / p99)
                self._query_ms.append((time.perf_counter() - t0) * 1e3)

    def _answer_query(self, req: Any, resp: Any) -> Any:
        text = str(req.text)
        resp.parsed.text = text
        with self._lock:
            self._counts["queries"] += 1
        try:
            engine = self._query_engine()
            snap = self.mapper.snapshot(wait=False)
            top_k = int(req.top_k) or None
            answer = engine.answer(snap, text, top_k=top_k, viewpoint=getattr(self.mapper, "last_pose", None))
        except self._query_errors as e:
            resp.success, resp.message = False, str(e) or type(e).__name__
            return resp
        except Exception as e:
            self.get_logger().error(f"query {text[:80]!r} failed:\n{traceback.format_exc()}")
            resp.success, resp.message = False, f"query failed: {type(e).__name__}: {e}"
            return resp
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
            r = self._QueryResult()
            r.object = conv.object_to_msg(obj)
            if getattr(hit, "label", ""):
                r.object.label = str(hit.label)
            r.score = float(hit.score)
            r.similarity = math.nan if hit.similarity is None else float(hit.similarity)
            r.relation_score = float(hit.relation_score if hit.relation_score is not None else 1.0)
            stamp = self.get_clock().now().to_msg()
            if req.include_points:
                r.points = conv.points_to_cloud(obj.points, obj.colors, frame_id=self.cfg.ros.map_frame, stamp=stamp)
            if req.include_best_view and obj.best_view is not None:
                r.best_view = conv.rgb_to_image(obj.best_view, stamp=stamp, frame_id=f"core3d_object_{obj.id}")
            resp.results.append(r)
            hits.append((obj, float(hit.score)))
        conv.fill_query_stages(resp, answer, hits[0][0] if hits else None, stamp=self.get_clock().now().to_msg())
        resp.success = True
        resp.message = str(answer.message or "") or f"{len(resp.results)} result(s)"
        self.query_markers_pub.publish(
            conv.query_markers(hits, frame_id=self.cfg.ros.map_frame, stamp=self.get_clock().now().to_msg())
        )
        return resp

    def _on_get_object(self, req: Any, resp: Any) -> Any:
        snap = self.mapper.snapshot(wait=False)
        obj = snap.by_id().get(int(req.id))
        if obj is None:
            resp.success = False
            resp.message = f"no object with id {req.id} (the map has {len(snap.objects)} objects)"
            return resp
        resp.success, resp.message = True, ""
        resp.object = conv.object_to_msg(obj)
        if req.include_points:
            resp.points = conv.points_to_cloud(
                obj.points, obj.colors, frame_id=self.cfg.ros.map_frame, stamp=self.get_clock().now().to_msg()
            )
        return resp

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
            self.get_logger().warning(resp.message)
            return resp
        try:
            with self._map_lock:
                written = self.mapper.save(str(target))
        except Exception as e:
            resp.success, resp.message = False, f"could not save the map to {target}: {type(e).__name__}: {e}"
            return resp
        resp.success, resp.path = True, str(written or target)
        resp.message = f"saved the map to {resp.path}"
        self.get_logger().info(resp.message)
        return resp

    def _on_load_map(self, req: Any, resp: Any) -> Any:
        path = self._map_path(req.path)
        if not path:
            resp.success, resp.message = False, "no path given and parameter ros.map_path is empty"
            resp.num_objects = self._num_objects()  # every answer tells the map's true size
            return resp
        try:
            target = self._map_paths.resolve_for_read(path)
            with self._map_lock:
                self.mapper.load(str(target))
        except Exception as e:  # MapPathError, MapFileError (damaged file) or OSError: map untouched
            resp.success = False
            kind = "" if isinstance(e, (MapPathError, ValueError)) else f"{type(e).__name__}: "
            resp.message = f"could not load {path!r}: {kind}{e}"
            resp.num_objects = self._num_objects()
            return resp
        self._surface_reset = True
        resp.success = True
        resp.num_objects = self._num_objects()
        resp.message = f"loaded {resp.num_objects} objects from {target}"
        self.get_logger().info(resp.message)
        return resp

    def _on_clear_map(self, req: Any, resp: Any) -> Any:
        try:
            with self._map_lock:
                n = self._num_objects()
                self.mapper.clear()
        except Exception as e:
            resp.success, resp.message = False, f"could not clear the map: {type(e).__name__}: {e}"
            return resp
        self._surface_reset = True
        resp.success, resp.message = True, f"map cleared ({n} objects removed)"
        return resp

    def _load_startup_map(self, path: str) -> None:
        try:
            target = self._map_paths.resolve(path)
        except MapPathError as e:
            raise ConfigError(f"ros.map_path: {e}") from None
        if not target.exists():
            self.get_logger().info(f"ros.map_path {target} does not exist yet; starting with an empty map")
            return
        try:
            self.mapper.load(str(target))
        except Exception as e:
            self.get_logger().error(f"could not load ros.map_path {target}: {e}; starting with an empty map")
        else:
            self.get_logger().info(f"loaded {self._num_objects()} objects from {target}")

    # ------------------------------------------------------------------ shutdown

    def stop_worker(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)

    def destroy_node(self) -> None:
        self.stop_worker()
        if self._late is not None:
            self._late.stop()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``core3d-mapping-node [--config FILE] [--ros-args ...]``: the mapping
    node, with a perception node in the same process unless ``ros.perception`` says otherwise."""
    return exit_now_if_busy(run_nodes(argv, prog="core3d_mapping", build=_mapping_nodes))


def _mapping_nodes(config_file: str | None) -> list[Node]:
    nodes: list[Node] = [MappingNode(config_file=config_file)]
    if nodes[0].cfg.ros.perception == "in_process":
        from .perception_node import PerceptionNode

        try:
            nodes.append(PerceptionNode(nodes[0].cfg))  # shares the mapping node's settings
        except BaseException:
            nodes[0].destroy_node()
            raise
    return nodes


if __name__ == "__main__":
    sys.exit(main())
