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

Parts: parameters (params.py), inputs and frame assembly (inputs.py, frames.py), the work queue
(core/worker.py), late fusion (late_fusion.py), services (services.py), publishing
(publishing.py), the scene graph of floors and rooms on its own thread (scene_graph.py), what
they need from the mapper and query engine (protocols.py). This file is the composition root:
it validates the configuration, wires inputs -> worker -> mapper, and keeps the counters and the
callback guards.

Every field of the MapperConfig tree is a read-only ROS parameter of the same dotted name
(``fusion.voxel_size``, ``ros.color_topic``, ...); ``config_file`` (or ``--config FILE``)
loads a YAML file first, and ``--ros-args -p`` / ``--params-file`` values override it.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any, Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from ..config import MapperConfig
from ..core.frame import Frame
from ..core.mappaths import MapPathPolicy
from ..core.worker import Worker, WorkerStats
from ..progress import Progress
from .corrections import CorrectionsLink, frames_extrinsic
from .frames import REJECTED, reason_of
from .inputs import SyncedInputs
from .late_fusion import LateFusionLink
from .map_stream import MapStream
from .rejects import RejectLog
from .scene_graph import DirtyBlocks, SceneGraphPart
from .params import declare_config, validate_node_config
from .protocols import FrameMapper, QueryAnswerer
from .publishing import MappingReport, MapPublisher, NodeCounters
from .runner import exit_now_if_busy, run_nodes
from .services import MapServices, default_engine, service_qos
from .sync import Rejected, SyncedSet

NODE_NAME = "core3d_mapping"


def _default_mapper(cfg: MapperConfig) -> FrameMapper:
    from ..core.mapper import Mapper

    # Only the inline mode runs models in this node; otherwise the perception node does.
    return Mapper(cfg, segment=cfg.ros.perception == "inline")


class MappingNode(Node):
    """ROS 2 front end of the core3d Mapper. See the module docstring.

    ``config`` gives the parameters' defaults (a ``config_file`` replaces it; ROS parameter
    overrides beat both). ``mapper_factory(cfg)`` and ``engine_factory(cfg, mapper)`` build the
    Mapper and the QueryEngine, ``builder_factory(cfg)`` the hierarchy builder (defaults: the
    real ones); ``node_kwargs`` go to rclpy's Node
    (``context``, ``parameter_overrides``, ``namespace``, ...).
    """

    def __init__(
        self,
        config: MapperConfig | None = None,
        *,
        config_file: str | None = None,
        mapper_factory: Callable[[MapperConfig], FrameMapper] | None = None,
        engine_factory: Callable[[MapperConfig, Any], QueryAnswerer] | None = None,
        builder_factory: Callable[[MapperConfig], Any] | None = None,
        node_name: str = NODE_NAME,
        **node_kwargs: Any,
    ):
        super().__init__(node_name, **node_kwargs)
        # set first: destroy_node must work on a node whose __init__ raised (a ConfigError)
        self._worker: Worker[SyncedSet] | None = None  # started last, once everything else stands
        self._late: LateFusionLink | None = None
        self._scene_graph: SceneGraphPart | None = None
        self._corrections: CorrectionsLink | None = None

        # ---- configuration: YAML (optional) -> declared parameters -> MapperConfig
        self.cfg = declare_config(self, config, config_file)
        validate_node_config(self.cfg)
        ros = self.cfg.ros

        # ---- counters of this node (the worker, services and publisher count their own)
        self._lock = threading.Lock()
        self._received: Counter = Counter()
        self._rejects = RejectLog(self.get_logger(), "frame")
        self._counts: Counter = Counter()  # processed, keyframes
        self._timings: dict[str, float] = {}
        self._errors: Counter = Counter()  # unexpected exceptions per callback

        # ---- the slow part of start-up, each phase announced in the log (with 'still ...'
        # lines every 5 s): a first run compiles the fusion kernels, a model can take minutes
        startup = Progress("start-up", emit=self.get_logger().info)
        if mapper_factory is None:
            from ..core.fusion.object_map import warm_up

            with startup.phase("compiling the fusion kernels (numba; loaded from its cache after the first run)"):
                warm_up(self.cfg.fusion)  # the Mapper would do it too, unannounced
        segmenter = f"segmenter '{self.cfg.segmenter.name}', " if ros.perception == "inline" else ""
        with startup.phase(f"building the mapper ({segmenter}encoder '{self.cfg.embed.name}')"):
            self.mapper = (mapper_factory or _default_mapper)(self.cfg)

        # ---- outputs and services (the timer and service callbacks run beside the worker)
        self._stream: MapStream | None = None
        if ros.publish_map_updates:
            self._stream = MapStream(
                self, self.cfg, lambda: getattr(self.mapper, "last_pose", None), guard=self._guard,
                service_qos=service_qos(ros.service_queue), callback_group=ReentrantCallbackGroup(),
            )
        # ---- the scene graph (floors -> rooms) on its own thread; it and the surface publication
        # both read the TSDF blocks changed since they last looked (scene_graph.py)
        dirty = None
        if self.cfg.hierarchy.enabled:
            dirty = DirtyBlocks(lambda: getattr(self.mapper, "geometry", None), ("surface", "hierarchy"))
            self._scene_graph = SceneGraphPart(
                self, self.mapper, lambda: (builder_factory or _default_builder)(self.cfg), dirty=dirty,
                period=self.cfg.hierarchy.period, map_frame=ros.map_frame, guard=self._guard,
                count_error=self._count_error, service_qos=service_qos(ros.service_queue),
                service_group=ReentrantCallbackGroup(), labeler=_room_labeler(self.cfg, self.mapper),
                room_keyframes=lambda: _room_keyframes(self.cfg), keyframe_selector=_keyframe_selector(self.cfg),
                summarizer=_summarizer(self.cfg),
            )
        self._publisher = MapPublisher(
            self, self.cfg, self.mapper, self._report, on_snapshot=self._stream.publish if self._stream else None,
            take_dirty=(lambda: dirty.take("surface")) if dirty is not None else None,
            rooms=self._scene_graph.rooms_of_objects if self._scene_graph is not None else None,
        )
        self._map_services = MapServices(
            self,
            self.cfg,
            self.mapper,
            engine_factory or default_engine,
            MapPathPolicy(ros.maps_dir, ros.allow_any_map_path),
            guard=self._guard,
            count_error=self._count_error,
            on_query_hits=self._publisher.publish_query_markers,
            on_map_replaced=self._map_replaced,
            callback_group=ReentrantCallbackGroup(),
        )
        if ros.map_path:
            with startup.phase(f"loading the map {ros.map_path}"):
                self._map_services.load_startup_map(ros.map_path)
            if self._scene_graph is not None:
                self._scene_graph.map_replaced()

        # ---- inputs (QoS per input; compressed transports subscribe to <topic>/compressed[Depth])
        self._inputs = SyncedInputs(
            self,
            self.cfg,
            on_set=self._enqueue,
            on_reject=self._on_reject,
            on_message=self._count_received,
            callback_group=MutuallyExclusiveCallbackGroup(),
            guard=self._guard,
        )
        self._sync, self._frames = self._inputs.sync, self._inputs.frames
        if ros.perception != "inline":  # masks and embeddings arrive from a perception node
            self._late = LateFusionLink(self, ros, self.mapper)
        if ros.corrections_topic and hasattr(self.mapper, "map"):  # corrected keyframe poses from SLAM
            self._corrections = CorrectionsLink(self, self.cfg, self.mapper, frames_extrinsic(self._frames, ros))
        self._timer = self.create_timer(
            ros.publish_period,
            self._guard("publish_map", self._publisher.publish_map),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )

        self._worker = Worker(self._handle, ros.work_queue, "core3d_mapping_worker", on_error=self._on_worker_error)
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
            fresh.num_objects = self._map_services.num_objects()
        return fresh

    def _map_replaced(self) -> None:
        """After a load or clear: the surface starts afresh, the hierarchy is the new map's."""
        self._publisher.reset_surface()
        if self._scene_graph is not None:
            self._scene_graph.map_replaced()

    # ------------------------------------------------------------------ inputs -> worker -> mapper

    def _count_received(self, key: str) -> None:
        with self._lock:
            self._received[key] += 1

    def _on_reject(self, rejected: Rejected) -> None:
        self._count_reject(rejected.reason, f"colour frame at {rejected.stamp:.3f} s not synchronised")

    def _enqueue(self, synced: SyncedSet) -> None:
        """Hand a synced set to the worker; when its queue is full the oldest set is dropped."""
        assert self._worker is not None  # no callback runs before __init__ has finished
        self._worker.put(synced)

    def _count_reject(self, reason: str, detail: str) -> None:
        self._rejects(reason, detail)

    def _on_worker_error(self, error: Exception, trace: str) -> None:
        self._count_reject("error", f"{type(error).__name__}: {error}\n{trace}")  # the worker goes on

    def build_frame(self, synced: SyncedSet) -> Frame:
        """Convert a synced set to a Frame; raises FrameError / ConversionError / DepthError."""
        return self._frames.build(synced)

    def _handle(self, synced: SyncedSet) -> None:
        t0 = time.perf_counter()
        try:
            frame = self.build_frame(synced)
            convert_ms = (time.perf_counter() - t0) * 1e3
            stats = None
            if self._late is not None:  # TSDF + frame buffer; observations are fused when they come
                self._late.add_frame(frame)
            else:
                stats = self.mapper.process(frame)  # the mapper locks fusion only, not this call
        except REJECTED as e:
            self._count_reject(reason_of(e), str(e))
            return
        if self._scene_graph is not None:
            self._scene_graph.add_frame(frame)  # appends; the hierarchy's thread reads them
        timings = {"convert": convert_ms}
        if stats is not None:
            timings.update({k: float(v) for k, v in (stats.timings_ms or {}).items()})
        timings["total"] = (time.perf_counter() - t0) * 1e3
        with self._lock:
            self._counts["processed"] += 1
            if stats is not None and stats.keyframe:
                self._counts["keyframes"] += 1
            self._timings = timings

    # ------------------------------------------------------------------ counters

    def counters(self) -> NodeCounters:
        work = self._worker.stats() if self._worker is not None else WorkerStats()
        objects, queries = self._publisher.objects, self._map_services.queries
        with self._lock:
            return NodeCounters(
                received=dict(self._received),
                synced=work.submitted,
                processed=self._counts["processed"],
                keyframes=self._counts["keyframes"],
                dropped=work.dropped,
                rejected={**self._rejects.counts(), **(self._corrections.rejected() if self._corrections else {})},
                queue_length=work.waiting,
                objects=objects,
                timings_ms=dict(self._timings),
                queries=queries,
                errors=dict(self._errors),
            )

    def _report(self) -> MappingReport:
        return MappingReport(
            counters=self.counters(),
            sync=self._sync.stats(),
            query_timing=self._map_services.query_timing(),
            late_fusion=self._late.counters() if self._late is not None else {},
            stream=self._stream.counters() if self._stream is not None else {},
            hierarchy=self._scene_graph.counters() if self._scene_graph is not None else {},
        )

    # ------------------------------------------------------------------ shutdown

    def stop_worker(self, timeout: float = 5.0) -> None:
        if self._worker is not None:
            self._worker.stop(timeout)

    def destroy_node(self) -> None:
        self.stop_worker()
        if self._scene_graph is not None:
            self._scene_graph.stop()
        if self._late is not None:
            self._late.stop()
        if self._corrections is not None:
            self._corrections.stop()
        super().destroy_node()


def _default_builder(cfg: MapperConfig) -> Any:
    """The hierarchy builder; up is ``retrieval.up_axis``, or z for auto (a ROS map frame is
    z-up, REP 103)."""
    from ..config import is_auto_up, up_vector
    from ..core.hierarchy.builder import HierarchyBuilder

    auto = is_auto_up(cfg.retrieval.up_axis)
    return HierarchyBuilder(
        cfg.hierarchy, cfg.fusion.voxel_size, up=up_vector(cfg.retrieval.up_axis), up_source="default" if auto else "parameter"
    )


def _room_labeler(cfg: MapperConfig, mapper: Any) -> Any:
    from ..core.hierarchy.room_labels import RoomLabeler

    return RoomLabeler(getattr(mapper, "encoder", None), cfg.hierarchy.room_vocabulary)


def _summarizer(cfg: MapperConfig) -> Any:
    """Room and floor summaries through retrieval.llm's endpoint; None without one."""
    if not (cfg.hierarchy.summaries and cfg.retrieval.llm.enabled):
        return None
    from ..core.hierarchy.summaries import Summarizer
    from ..core.retrieval.llm_client import ChatClient

    return Summarizer(ChatClient(cfg.retrieval.llm))


def _room_keyframes(cfg: MapperConfig) -> Any:
    from ..core.hierarchy.keyframes import RoomKeyframes

    return RoomKeyframes(cfg.hierarchy)


def _keyframe_selector(cfg: MapperConfig) -> Any:
    """The motion keyframes offered to the room keyframes (keyframes.*, as the mapper's)."""
    from ..core.keyframes import KeyframeSelector

    return KeyframeSelector(cfg.keyframes)


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
