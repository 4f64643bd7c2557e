"""The core3d query node: answers ``core3d/query`` and ``core3d/get_object`` from a mirror of the
mapping node's object table, in its own process, so that no query waits on the mapping process's
interpreter lock.

It subscribes to ``core3d/map_updates`` (core3d/MapUpdate, the mapping node's map stream,
``map_stream.py``) and keeps a :class:`MapMirror` (core/mapping/mirror.py): changes apply in
sequence order; before the first state, on a gap in sequence numbers or on a new generation (a
restarted mapping node) it calls ``core3d/get_map_state`` and goes on from the state it gets;
bad updates are counted by reason and never applied. Until the first state it answers
"no map yet". Queries run the same answerer as the mapping node (``make_answerer`` on the
configuration's retrieval settings and encoder) on a MapSnapshot of the mirror, with the
mapping node's last camera pose as the viewpoint; the services have the mapping node's types
and names, so planners see no difference. What the stream does not carry: best-view crops
(results have none) and all of an object's voxels (``include_points`` returns its sample).

``core3d/query_markers``: the last query's hits, with the next tick (as the mapping node does).
/diagnostics: the mirror's sequence, objects, age (seconds since it last changed), updates and
states applied, rejects and resyncs by reason, queries and their time in the node.

Parameters: the same configuration tree as the mapping node (``config_file``, ``retrieval.*``,
``embed.*``, ``ros.map_frame``, ``ros.service_queue``, ``ros.publish_period`` for /diagnostics);
the rest is declared and unused, so one YAML file configures both nodes.
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
from .conversions.headers import make_header
from .conversions.map_stream import msg_to_map_version
from .conversions.markers import query_markers
from .map_stream import STREAM_QOS
from .params import declare_config
from .publishing import MAP_QOS
from .runner import exit_now_if_busy, run_nodes
from .services import QUERY_WINDOW, fill_object_response, fill_query_response, query_error_types, service_qos

NODE_NAME = "core3d_query"
NO_MAP_YET = "no map yet: waiting for the first map state from core3d/get_map_state"
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
        from core3d.msg import MapUpdate, QueryResult  # the package's built interfaces
        from core3d.srv import GetMapState, GetObject, Query

        self.cfg = declare_config(self, config, config_file)
        self._QueryResult = QueryResult
        self._GetMapState = GetMapState
        self.mirror = MapMirror()
        self.answerer = (answerer_factory or default_answerer)(self.cfg)
        self._query_errors = query_error_types()
        self._lock = threading.Lock()
        self._counts: Counter = Counter()  # queries, updates received, state requests / failures
        self._errors: Counter = Counter()
        self._query_ms: deque[float] = deque(maxlen=QUERY_WINDOW)
        self._staleness_s: deque[float] = deque(maxlen=STALENESS_WINDOW)
        self._state_future: Any = None
        self._state_asked_at = 0.0
        self._state_mark: int | None = None  # MapMirror.mark() when the state was asked for
        qos = service_qos(self.cfg.ros.service_queue)
        services = ReentrantCallbackGroup()
        self._stream_group = MutuallyExclusiveCallbackGroup()  # updates and states apply one at a time
        self.state_client = self.create_client(GetMapState, "core3d/get_map_state", callback_group=self._stream_group)
        self.map_updates = self.create_subscription(
            MapUpdate, "core3d/map_updates", self._guard("map_update", self._on_update), STREAM_QOS,
            callback_group=self._stream_group,
        )
        self.map_services = [
            self.create_service(Query, "core3d/query", self._guard("query", self._on_query), qos_profile=qos, callback_group=services),
            self.create_service(
                GetObject, "core3d/get_object", self._guard("get_object", self._on_get_object), qos_profile=qos,
                callback_group=services,
            ),
        ]
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # the last query's hits for RViz, as the mapping node publishes its own: with the next
        # tick, so that a planner asking 50 queries a second does not pay for 50 marker arrays
        self.query_markers_pub = self.create_publisher(MarkerArray, "core3d/query_markers", MAP_QOS)
        self._query_hits: list | None = None
        self._timer = self.create_timer(
            self.cfg.ros.publish_period, self._guard("tick", self._tick), callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.get_logger().info("query node: mirroring core3d/map_updates, serving core3d/query and core3d/get_object")

    # ------------------------------------------------------------------ guards and counters

    def _guard(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """As the mapping node's: an unexpected exception is logged, counted (errors_<name>) and,
        for a service, answered as a failure; the node keeps serving."""

        def guarded(*args: Any) -> Any:
            try:
                return fn(*args)
            except Exception as e:
                with self._lock:
                    self._errors[name] += 1
                    n = self._errors[name]
                if n <= 10 or n % 100 == 0:
                    self.get_logger().error(f"callback {name} failed ({n} so far):\n{traceback.format_exc()}")
                if len(args) == 2:
                    fresh = type(args[1])()
                    fresh.success, fresh.message = False, f"internal error in {name}: {type(e).__name__}: {e}"
                    return fresh
                return None

        guarded.__name__ = f"guarded_{name}"
        return guarded

    def counters(self) -> dict[str, Any]:
        """What /diagnostics shows (a copy)."""
        s = self.mirror.stats()
        with self._lock:
            counts, errors, recent = dict(self._counts), dict(self._errors), list(self._query_ms)
        values: dict[str, Any] = {
            "map_id": s.map_id or "",
            "generation": s.generation if s.generation is not None else "",
            "seq": s.seq if s.seq is not None else "",
            "objects": s.objects,
            "mirror_age_s": "" if s.age_s is None else f"{s.age_s:.2f}",
            "updates_applied": s.applied,
            "states_applied": s.states,
            "pending_updates": s.pending,
            "stream_publishers": self.map_updates.get_publisher_count(),
        }
        values.update({k: v for k, v in sorted(counts.items())})
        if recent:
            values["query_ms_p50"] = f"{np.percentile(recent, 50):.1f}"
            values["query_ms_p99"] = f"{np.percentile(recent, 99):.1f}"
        values.update(self._staleness_values())
        values.update({f"rejected_{k}": v for k, v in sorted(s.rejected.items())})
        values.update({f"resyncs_{k}": v for k, v in sorted(s.resyncs.items())})
        values.update({f"errors_{k}": v for k, v in sorted(errors.items())})
        return values

    # ------------------------------------------------------------------ the stream

    def _on_update(self, msg: Any) -> None:
        with self._lock:
            self._counts["updates_received"] += 1
        try:
            version = msg_to_map_version(msg)
        except Exception as e:  # a message the conversion cannot read: counted, never applied
            with self._lock:
                self._counts["updates_unreadable"] += 1
            self.get_logger().warning(f"unreadable map update: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            return
        outcome = self.mirror.offer(version)
        self._note_staleness(msg, outcome)
        if outcome == "applied":
            self._warm_index(self.mirror.snapshot())
        self._ask_state_if_needed()

    def _warm_index(self, snap: Any) -> None:
        """Build the answerer's index of ``snap``, the version just applied, here in the
        stream's callback, so that the next query does not (the engine carries over what the
        last version's queries derived of its unchanged objects: this costs the version's
        objects, not their points)."""
        engine = getattr(self.answerer, "engine", self.answerer)  # the model-step answerer wraps one
        index = getattr(engine, "index", None)
        if callable(index) and snap is not None:
            index(snap)

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

    def _ask_state_if_needed(self) -> None:
        if not self.mirror.needs_state:
            return
        now = time.monotonic()
        with self._lock:
            if self._state_future is not None and not self._state_future.done():
                if now - self._state_asked_at < STATE_TIMEOUT_S:
                    return
                self._state_future.cancel()
                self._counts["state_timeouts"] += 1
            if not self.state_client.service_is_ready():
                return  # asked again on the next tick
            self._state_asked_at = now
            self._state_mark = self.mirror.mark()
            self._counts["state_requests"] += 1
            self._state_future = self.state_client.call_async(self._GetMapState.Request())
        self._state_future.add_done_callback(self._guard("map_state", self._on_state))

    def _on_state(self, future: Any) -> None:
        if future.cancelled():
            return
        resp = future.result()
        if resp is None or not resp.success:
            with self._lock:
                self._counts["state_failures"] += 1
            return
        with self._lock:
            mark = self._state_mark
        outcome = self.mirror.apply_state(msg_to_map_version(resp.state), mark)
        if outcome == "applied":  # the first state and each resync: rare, worth a line
            self._warm_index(self.mirror.snapshot())
            st = resp.state
            self.get_logger().info(
                f"map state applied: {st.map_id} generation {st.generation} seq {st.seq}, {len(st.objects)} objects"
            )

    def _tick(self) -> None:
        self._ask_state_if_needed()
        with self._lock:
            hits, self._query_hits = self._query_hits, None
        if hits is not None:
            self.query_markers_pub.publish(query_markers(hits, frame_id=self.cfg.ros.map_frame, stamp=self._now()))
        self.diagnostics_pub.publish(self.diagnostics())

    def diagnostics(self) -> DiagnosticArray:
        values = self.counters()
        status = DiagnosticStatus(name=f"{self.get_name()}: query", hardware_id=self.get_fully_qualified_name())
        if values["seq"] == "":
            status.level, status.message = DiagnosticStatus.WARN, NO_MAP_YET
        elif not values["stream_publishers"]:
            status.level = DiagnosticStatus.WARN
            status.message = (
                f"no mapping node on core3d/map_updates: serving {values['objects']} objects as of "
                f"{values['mirror_age_s']} s ago"
            )
        else:
            status.level, status.message = DiagnosticStatus.OK, f"serving {values['objects']} objects"
        if any(k.startswith("errors_") for k in values):
            status.level, status.message = DiagnosticStatus.ERROR, "unexpected callback error(s), see the log; still serving"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return DiagnosticArray(header=make_header("", self.get_clock().now().to_msg()), status=[status])

    # ------------------------------------------------------------------ services

    def _now(self) -> Any:
        return self.get_clock().now().to_msg()

    def _on_query(self, req: Any, resp: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._answer(req, resp)
        finally:
            with self._lock:
                self._counts["queries"] += 1
                self._query_ms.append((time.perf_counter() - t0) * 1e3)

    def _answer(self, req: Any, resp: Any) -> Any:
        text = str(req.text)
        resp.parsed.text = text
        snap = self.mirror.snapshot()
        if snap is None:
            resp.success, resp.message = False, NO_MAP_YET
            return resp
        try:
            answer = self.answerer.answer(snap, text, top_k=int(req.top_k) or None, viewpoint=self.mirror.viewpoint)
        except self._query_errors as e:
            resp.success, resp.message = False, str(e) or type(e).__name__
            return resp
        hits = fill_query_response(req, resp, answer, snap, self._QueryResult, self.cfg.ros.map_frame, self._now)
        with self._lock:
            self._query_hits = hits
        return resp

    def _on_get_object(self, req: Any, resp: Any) -> Any:
        snap = self.mirror.snapshot()
        if snap is None:
            resp.success, resp.message = False, NO_MAP_YET
            return resp
        # points, when asked for, are the stream's sample of the object's voxels
        return fill_object_response(req, resp, snap, self.cfg.ros.map_frame, self._now)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``core3d-query-node [--config FILE] [--ros-args ...]``."""
    return exit_now_if_busy(run_nodes(argv, prog="core3d_query", build=lambda cf: [QueryNode(config_file=cf)]))


if __name__ == "__main__":
    sys.exit(main())
