"""The mapping node's scene graph: the hierarchy builder on its own thread, core3d/scene_graph,
core3d/get_scene_graph, core3d/room_markers, and room labels.

Threads: a timer (its own callback group, every ``hierarchy.period`` seconds) only hands a tick
to a worker thread of its own (core/worker.py, capacity 1); that thread feeds the builder the
TSDF blocks changed since its last tick (their surface points: what changed, never the whole
map) and the camera centres the mapping worker recorded (an append per frame), asks it for an
update on the current snapshot (``wait=False``: never waits for fusion), and when the builder
answers with a graph, publishes it. Fusion, the publication timer and the services never wait
for it. The service answers from the last published message (no builder call).

Changed blocks: the surface publication (publishing.py) and the builder both need the blocks
changed since *they* last looked, so ``DirtyBlocks`` fans ``GeometryLayer.take_dirty()`` out
into one set per consumer. When the map is replaced (load, clear) every consumer starts from all
blocks of the new geometry (once; none after a clear).

Labels: with a semantic encoder, rooms whose keyframes changed are labelled against
``hierarchy.room_vocabulary`` on a second worker thread (core/hierarchy/room_labels.py); a
label is kept per room (until a new one for its changed keyframes replaces it) and applied to
every later graph. Without an
encoder rooms are numbered ("room N").

Outputs: ``core3d/scene_graph`` (core3d/SceneGraph, reliable, transient-local: a late subscriber
gets the last graph) on every change; ``core3d/room_markers`` (outline LINE_STRIP and name TEXT
per room, same QoS); the graph is also the mapper's ``hierarchy`` (saved with the map).
"""
from __future__ import annotations

import copy
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable, Protocol

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from visualization_msgs.msg import MarkerArray

from ..core.hierarchy.graph import SceneGraph
from ..core.hierarchy.room_labels import RoomLabeler, numbered
from ..core.worker import Worker
from .conversions.scene_graph import msg_to_scene_graph, room_markers, room_of_objects, scene_graph_to_msg
from .publishing import MAP_QOS

MAX_CAMERAS = 10_000  # camera centres waiting for the next tick (a stalled builder drops the oldest)
MAX_VIEWS = 16  # motion keyframes waiting for the next tick (older ones are dropped, counted)
THUMBNAIL = 224  # pixels: longest side of a room keyframe's image (what the encoder sees)
MIN_PERIOD = 0.05  # seconds: hierarchy.period 0 means "as often as the thread keeps up", not a busy loop


class DirtyBlocks:
    """``GeometryLayer.take_dirty()`` fanned out to several consumers; see the module docstring.

    ``geometry_of()`` gives the current geometry layer (None when off); a new layer object (the
    map was loaded or cleared) starts every consumer from all of its blocks.
    """

    def __init__(self, geometry_of: Callable[[], Any], consumers: Iterable[str]):
        self._geometry_of = geometry_of
        self._sets: dict[str, dict[tuple[int, int, int], None]] = {c: {} for c in consumers}
        self._geometry: Any = None
        self._lock = threading.Lock()

    def take(self, consumer: str) -> tuple[Any, np.ndarray]:
        """(the geometry layer, (B, 3) int32 blocks changed since ``consumer`` last took them)."""
        with self._lock:
            geometry = self._geometry_of()
            if geometry is not self._geometry:
                self._geometry = geometry
                every = geometry.blocks() if geometry is not None and hasattr(geometry, "blocks") else np.zeros((0, 3), np.int32)
                seed = dict.fromkeys(map(tuple, every.tolist()))
                self._sets = {c: dict(seed) for c in self._sets}
            if geometry is None:
                return None, np.zeros((0, 3), np.int32)
            fresh = dict.fromkeys(map(tuple, geometry.take_dirty().tolist()))
            for s in self._sets.values():
                s.update(fresh)
            own = self._sets[consumer]
            self._sets[consumer] = {}
            return geometry, np.array(list(own), np.int32).reshape(-1, 3)


class HierarchyBuilder(Protocol):
    """What this part needs from core/hierarchy's builder."""

    def add_surface(self, blocks: np.ndarray, points: np.ndarray, block_of: np.ndarray) -> None: ...

    def add_camera(self, position: np.ndarray) -> None: ...

    def update(self, objects: list, now: float) -> SceneGraph | None: ...

    def seed(self, graph: SceneGraph) -> str: ...

    graph: SceneGraph  # the last graph; it and room_at are what the room keyframes read

    def room_at(self, points: np.ndarray) -> np.ndarray: ...


class SceneGraphPart:
    """See the module docstring. ``builder_factory()`` makes a builder (again after a map was
    replaced); ``labeler`` labels rooms (None or a disabled one: rooms are numbered);
    ``room_keyframes()`` makes the store of room keyframes (core/hierarchy/keyframes.py; again
    after a map was replaced; None: no room keyframes), offered the frames ``keyframe_selector``
    (core/keyframes.py) picks by camera motion; their thumbnails are what the labeler sees."""

    def __init__(
        self,
        node: Node,
        mapper: Any,
        builder_factory: Callable[[], HierarchyBuilder],
        *,
        dirty: DirtyBlocks,
        period: float,
        map_frame: str,
        guard: Callable[[str, Callable[..., Any]], Callable[..., Any]],
        count_error: Callable[[str, BaseException], None],
        service_qos: Any,
        service_group: Any = None,
        labeler: RoomLabeler | None = None,
        room_keyframes: Callable[[], Any] | None = None,
        keyframe_selector: Any = None,
        summarizer: Any = None,
    ):
        from core3d.msg import SceneGraph as SceneGraphMsg  # the package's built interfaces
        from core3d.srv import GetSceneGraph

        self.node = node
        self.mapper = mapper
        self._builder_factory = builder_factory
        self._builder = builder_factory()
        self._dirty = dirty
        self._map_frame = map_frame
        self._count_error = count_error
        self._labeler = labeler if labeler is not None and labeler.enabled else None
        self._keyframes_factory = room_keyframes
        self._keyframes = room_keyframes() if room_keyframes is not None else None
        self._selector = keyframe_selector
        self._views: deque[tuple] = deque(maxlen=MAX_VIEWS)  # motion keyframes waiting for the next tick
        self._frames_seen = 0
        self._kf_lock = threading.Lock()  # the room keyframe store: the hierarchy thread and the labeler
        self._builder_graph: SceneGraph | None = None  # the builder's last graph (for new keyframes alone)
        self._SceneGraphMsg = SceneGraphMsg
        self._lock = threading.Lock()
        self._cameras: deque[np.ndarray] = deque(maxlen=MAX_CAMERAS)
        self._graph: SceneGraph | None = None  # the last published graph (labels applied)
        self._msg: Any = None
        self._rooms: dict[int, int] = {}  # object id -> room id of self._graph
        self._version = 0
        self._labels: dict[int, tuple[str, float, tuple[int, ...]]] = {}  # room -> (label, score, its keyframes)
        self._summarizer = summarizer
        self._summaries: dict[tuple[str, int], tuple[str, Any]] = {}  # ("room" | "floor", id) -> (text, facts)
        self._generation = 0  # bumped when the map is replaced: stale updates and labels are dropped
        self._loaded_stands = False  # a loaded map's hierarchy is published until mapping goes on
        self._counts: Counter = Counter()
        self._update_ms = 0.0
        self.graph_pub = node.create_publisher(SceneGraphMsg, "core3d/scene_graph", MAP_QOS)
        self.markers_pub = node.create_publisher(MarkerArray, "core3d/room_markers", MAP_QOS)
        self.service = node.create_service(
            GetSceneGraph, "core3d/get_scene_graph", guard("get_scene_graph", self._on_get), qos_profile=service_qos,
            callback_group=service_group,
        )
        self._worker: Worker[int] = Worker(self._update, 1, "core3d_hierarchy", on_error=self._on_error("hierarchy"))
        self._label_worker: Worker[tuple[int, dict[int, tuple[int, ...]]]] | None = None
        if self._labeler is not None:
            self._label_worker = Worker(self._label, 1, "core3d_room_labels", on_error=self._on_error("room_labels"))
        self._summary_worker: Worker[tuple[int, SceneGraph]] | None = None
        if summarizer is not None:
            self._summary_worker = Worker(self._summarize, 1, "core3d_summaries", on_error=self._on_error("summaries"))
        self.timer = node.create_timer(
            max(float(period), MIN_PERIOD), guard("hierarchy_tick", self.tick), callback_group=MutuallyExclusiveCallbackGroup()
        )

    # ------------------------------------------------------------------ inputs

    def add_camera(self, pose: np.ndarray) -> None:
        """The mapping worker, per frame: the camera centre of a mapped frame (an append)."""
        self._cameras.append(np.asarray(pose, np.float64)[:3, 3].copy())

    def add_frame(self, frame: Any) -> None:
        """The mapping worker, per frame: its camera centre and, when the camera moved enough
        (a motion keyframe), the frame itself (references, no copy) for the room keyframes; the
        hierarchy thread offers it at its next tick (``MAX_VIEWS`` wait at most)."""
        self.add_camera(frame.pose)
        if self._keyframes is None or self._selector is None:
            return
        with self._lock:
            self._frames_seen += 1
            if not self._selector.is_keyframe(frame.pose, self._frames_seen):
                return
            if len(self._views) == self._views.maxlen:
                self._counts["views_dropped"] += 1
        self._views.append((frame.stamp, frame.pose, frame.intrinsics, frame.depth, frame.rgb))

    def tick(self) -> None:
        """The timer: one update on the hierarchy's thread (a tick still waiting is replaced)."""
        with self._lock:
            generation = self._generation
        self._worker.put(generation)

    def map_replaced(self) -> None:
        """After a load or clear: a new builder, fed all of the new map's blocks. The loaded
        map's hierarchy (if its file had one) is published at once and stands until mapping goes
        on (the first camera after the load); from then on the builder's graphs are published.
        The new builder is seeded with it (HierarchyBuilder.seed: its camera path, and its floor
        and room ids to match against), so the rooms keep their ids across a save and load."""
        with self._lock:
            self._generation += 1
            self._labels, self._summaries = {}, {}
            self._cameras.clear()
            self._views.clear()
            self._builder = self._builder_factory()
            self._builder_graph = None
            if self._selector is not None:
                self._selector.reset()
        with self._kf_lock:
            self._keyframes = self._keyframes_factory() if self._keyframes_factory is not None else None
            loaded = getattr(self.mapper, "hierarchy", None)
            self._loaded_stands = loaded is not None
        error = getattr(self.mapper, "hierarchy_error", "")
        if error:
            self.node.get_logger().warning(f"the loaded map's hierarchy was dropped: {error}; it is rebuilt from the map")
        if loaded is not None:  # the builder starts from it: its camera path, and its ids to keep
            with self._lock:
                refused = self._builder.seed(loaded)
            if refused:
                self.node.get_logger().warning(f"the loaded hierarchy does not seed the builder: {refused}; ids may change")
        rebuilding = SceneGraph(note="the map was replaced (loaded or cleared); the hierarchy is rebuilt as mapping goes on")
        self._publish(loaded if loaded is not None else rebuilding)

    # ------------------------------------------------------------------ the hierarchy's thread

    def _on_error(self, name: str) -> Callable[[Exception, str], None]:
        def on_error(error: Exception, trace: str) -> None:
            self._count_error(name, error)

        return on_error

    def _update(self, generation: int) -> None:
        t0 = time.perf_counter()
        with self._lock:
            if generation != self._generation:
                return  # the map was replaced since this tick was asked for
            builder = self._builder
        geometry, blocks = self._dirty.take("hierarchy")
        if len(blocks):
            points, _, block_of = geometry.surface(blocks)
            builder.add_surface(blocks, points, block_of)
        moved = len(self._cameras)
        for _ in range(moved):
            builder.add_camera(self._cameras.popleft())
        snap = self.mapper.snapshot(wait=False)
        graph = builder.update(list(snap.objects), time.time())
        with self._lock:
            self._counts["updates"] += 1
            if generation != self._generation:
                return
            if graph is not None:
                self._builder_graph = graph
            if moved:
                self._loaded_stands = False
            stands = self._loaded_stands
        if self._offer_views(builder, graph is not None, snap.objects, generation) and graph is None:
            graph = self._builder_graph  # the same rooms with new keyframes
        with self._lock:
            self._update_ms = (time.perf_counter() - t0) * 1e3
            if generation != self._generation:
                return
        if graph is not None and not stands:  # the builder has seen the map go on since a load
            self._publish(graph)

    def _offer_views(self, builder: Any, updated: bool, objects: list, generation: int) -> bool:
        """Offer the waiting motion keyframes to the room keyframes (after an update, views of
        rooms that were split or merged move first); True when the kept set changed."""
        if self._keyframes is None:
            return False
        views = [self._views.popleft() for _ in range(len(self._views))]
        with self._kf_lock:
            with self._lock:
                if generation != self._generation:
                    return False  # the map was replaced: its store is a new one
            before = {i: kf.room_id for i, kf in self._keyframes.frames.items()}
            if updated:
                self._keyframes.reassign(builder)
            for stamp, pose, intrinsics, depth, rgb in views:
                self._keyframes.offer(stamp, pose, intrinsics, depth, builder, objects=objects, image=_thumbnail(rgb))
            return before != {i: kf.room_id for i, kf in self._keyframes.frames.items()}

    def _keyframe_images(self, room_ids: list[int]) -> dict[int, list[np.ndarray]]:
        with self._kf_lock:
            if self._keyframes is None:
                return {}
            return {rid: [kf.image for kf in self._keyframes.of_room(rid) if kf.image is not None] for rid in room_ids}

    def _with_labels(self, graph: SceneGraph) -> SceneGraph:
        # the builder's own graph stays untouched; the camera path (append-only, long) is shared
        g = copy.deepcopy(graph, {id(graph.camera_path): graph.camera_path})
        with self._kf_lock:
            if self._keyframes is not None:
                self._keyframes.apply(g)  # each room's keyframe ids
        with self._lock:
            labels, summaries = dict(self._labels), dict(self._summaries)
        for room in g.rooms:
            got = labels.get(room.id)  # kept while a relabel for new keyframes is under way
            if got is not None:
                room.label, room.label_score = got[0], got[1]
            elif not room.label:
                room.label, room.label_score = numbered(room.id), 0.0
            room.summary = summaries.get(("room", room.id), ("", None))[0] or room.summary
        for floor in g.floors:
            floor.label = floor.label or f"floor {floor.id}"
            floor.summary = summaries.get(("floor", floor.id), ("", None))[0] or floor.summary
        return g

    def _publish(self, graph: SceneGraph) -> None:
        g = self._with_labels(graph)
        with self._lock:
            self._version += 1
            g.version = self._version
        stamp = self.node.get_clock().now().to_msg()
        msg = scene_graph_to_msg(g, frame_id=self._map_frame, stamp=stamp, map_id=self.node.get_fully_qualified_name())
        markers = room_markers(g, frame_id=self._map_frame, stamp=stamp)
        with self._lock:
            self._graph, self._msg, self._rooms = g, msg, room_of_objects(g)
            self._counts["published"] += 1
        self.mapper.hierarchy = g  # saved with the map
        self.graph_pub.publish(msg)
        self.markers_pub.publish(markers)
        self._request_labels(g)
        if self._summary_worker is not None:
            with self._lock:
                generation = self._generation
            self._summary_worker.put((generation, g))

    # ------------------------------------------------------------------ labels

    def _request_labels(self, graph: SceneGraph) -> None:
        if self._label_worker is None:
            return
        with self._lock:
            wanted = {
                r.id: tuple(r.keyframe_ids) for r in graph.rooms
                if r.keyframe_ids and self._labels.get(r.id, (None, None, None))[2] != tuple(r.keyframe_ids)
            }
            generation = self._generation
        if wanted:
            self._label_worker.put((generation, wanted))

    def _label(self, item: tuple[int, dict[int, tuple[int, ...]]]) -> None:
        generation, wanted = item
        assert self._labeler is not None
        images = self._keyframe_images(list(wanted))
        got = self._labeler.label({rid: images.get(rid, []) for rid in wanted})
        with self._lock:
            if generation != self._generation:
                return
            for rid, (label, score) in got.items():
                if score > 0:
                    self._labels[rid] = (label, score, wanted[rid])
            self._counts["rooms_labelled"] += sum(1 for _, s in got.values() if s > 0)
            graph = self._graph
        if graph is not None:
            self._publish(graph)  # the same rooms, now named

    # ------------------------------------------------------------------ summaries

    def _summarize(self, item: tuple[int, SceneGraph]) -> None:
        """Summaries of the rooms whose facts (label, area to 1 m^2, object labels) and of the
        floors whose rooms changed; a failed call is counted and the room goes without."""
        generation, graph = item
        by_id = self.mapper.snapshot(wait=False).by_id()
        with self._lock:
            done = dict(self._summaries)
        new: dict[tuple[str, int], tuple[str, Any]] = {}
        floors = {f.id: f for f in graph.floors}
        for room in graph.rooms:
            labels = sorted(by_id[o].label for o in room.object_ids if o in by_id)
            facts = (room.label, round(float(room.area)), tuple(labels))
            if done.get(("room", room.id), ("", None))[1] == facts:
                continue
            floor = floors.get(room.floor_id)
            text = self._ask_model(self._summarizer.room, room, labels, floor.label if floor else "")
            if text:
                new[("room", room.id)] = (text, facts)
        for floor in graph.floors:
            rooms = [copy.copy(r) for r in graph.rooms if r.floor_id == floor.id]  # the published graph stays as it is
            facts = tuple((r.id, r.label, round(float(r.area))) for r in rooms)
            if not rooms or done.get(("floor", floor.id), ("", None))[1] == facts:
                continue
            for r in rooms:
                r.summary = new.get(("room", r.id), done.get(("room", r.id), ("", None)))[0]
            text = self._ask_model(self._summarizer.floor, floor, rooms)
            if text:
                new[("floor", floor.id)] = (text, facts)
        with self._lock:
            if generation != self._generation or not new:
                return
            self._summaries.update(new)
            self._counts["summaries"] += len(new)
            latest = self._graph
        if latest is not None:
            self._publish(latest)  # the same graph, now with its summaries

    def _ask_model(self, call: Callable[..., str], *args: Any) -> str:
        from ..core.retrieval.llm_client import ChatError

        try:
            return call(*args)
        except ChatError as e:
            with self._lock:
                self._counts[f"summary_failed_{e.kind}"] += 1
            self.node.get_logger().warning(f"room summary failed: {e}", throttle_duration_sec=30.0)
            return ""

    # ------------------------------------------------------------------ outputs

    def graph(self) -> SceneGraph | None:
        with self._lock:
            return self._graph

    def rooms_of_objects(self) -> dict[int, int]:
        """{object id: room id} of the last published graph (what core3d/objects' room_id says)."""
        with self._lock:
            return self._rooms

    def _on_get(self, req: Any, resp: Any) -> Any:
        with self._lock:
            msg, graph = self._msg, self._graph
        if msg is None:
            resp.success, resp.message = False, "no scene graph yet: the hierarchy is built while mapping"
            return resp
        resp.success, resp.graph = True, msg
        resp.message = graph.note or f"{len(graph.floors)} floor(s), {len(graph.rooms)} room(s)"
        return resp

    def counters(self) -> dict[str, Any]:
        """What /diagnostics shows of the hierarchy."""
        with self._lock:
            g = self._graph
            values: dict[str, Any] = {f"hierarchy_{k}": v for k, v in sorted(self._counts.items())}
            values["hierarchy_update_ms"] = f"{self._update_ms:.1f}"
        values["hierarchy_floors"] = len(g.floors) if g is not None else 0
        values["hierarchy_rooms"] = len(g.rooms) if g is not None else 0
        with self._kf_lock:
            if self._keyframes is not None:
                values["hierarchy_room_keyframes"] = len(self._keyframes.frames)
        return values

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)
        for worker in (self._label_worker, self._summary_worker):
            if worker is not None:
                worker.stop(timeout)


class SceneGraphMirror:
    """The query node's copy of the mapping node's scene graph: subscribes to the latched
    ``core3d/scene_graph`` (a late start gets the last graph) and keeps the newest as a
    SceneGraph; an unreadable message is counted and the previous graph kept."""

    def __init__(
        self, node: Node, guard: Callable[[str, Callable[..., Any]], Callable[..., Any]], *, topic: str = "core3d/scene_graph", callback_group: Any = None
    ):
        from core3d.msg import SceneGraph as SceneGraphMsg

        self._node = node
        self._lock = threading.Lock()
        self._graph: SceneGraph | None = None
        self.unreadable = 0
        self.subscription = node.create_subscription(
            SceneGraphMsg, topic, guard("scene_graph", self._on_graph), MAP_QOS, callback_group=callback_group
        )

    def _on_graph(self, msg: Any) -> None:
        try:
            graph = msg_to_scene_graph(msg)
        except Exception as e:  # a message the conversion cannot read: counted, the last graph kept
            with self._lock:
                self.unreadable += 1
            self._node.get_logger().warning(f"unreadable scene graph: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._graph = graph

    def graph(self) -> SceneGraph | None:
        with self._lock:
            return self._graph


class RoomIds:
    """core3d/Object.room_id in service answers (query results, get_object): {object id: room
    id} of the graph, rebuilt when a new graph object comes (published graphs are never changed
    in place), so a query pays a lookup per result, never a pass over the graph."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._graph: SceneGraph | None = None
        self._rooms: dict[int, int] = {}

    def fill(self, objects: Iterable[Any], graph: SceneGraph | None) -> None:
        with self._lock:
            if graph is not self._graph:
                self._graph, self._rooms = graph, room_of_objects(graph)
            rooms = self._rooms
        for msg in objects:
            msg.room_id = rooms.get(int(msg.id), 0)


def _thumbnail(rgb: np.ndarray | None, size: int = THUMBNAIL) -> np.ndarray | None:
    """A room keyframe's image: the frame scaled to ``size`` pixels on its longest side."""
    import cv2

    if rgb is None or not np.asarray(rgb).size:
        return None
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    if scale >= 1.0:
        return np.ascontiguousarray(rgb).copy()
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
