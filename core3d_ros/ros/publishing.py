"""The mapping node's outputs: objects, markers, cloud, query markers, surface, /diagnostics.

One ``publish_map`` (the node's timer) takes a snapshot without waiting for a fusion in
progress and converts it only for topics that have subscribers; the TSDF surface goes out as the
blocks changed since the last publication. Map topics are reliable and transient-local (a late
RViz gets the last map); /diagnostics is a plain topic of depth 10.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from ..config import MapperConfig
from ..core.objects import ObjectInfo
from .conversions.clouds import cloud_records, object_cloud, records_to_cloud
from .conversions.headers import make_header
from .conversions.markers import delete_all_marker, delete_object_markers, object_markers, query_markers
from .conversions.objects import object_to_msg
from .protocols import MapView
from .conversions.surface import ShownBlocks, select_blocks, surface_markers
from .sync import SyncStats

MAP_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


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


@dataclass
class MappingReport:
    """Everything /diagnostics shows, gathered by the node from its parts."""

    counters: NodeCounters
    sync: SyncStats
    query_timing: dict[str, str] = field(default_factory=dict)  # query_ms_p50 / _p99
    late_fusion: dict[str, Any] = field(default_factory=dict)  # observations, staleness (late_fusion.py)
    stream: dict[str, Any] = field(default_factory=dict)  # the map stream's counters (map_stream.py)
    hierarchy: dict[str, Any] = field(default_factory=dict)  # the scene graph's counters (scene_graph.py)


class ObjectMessages:
    """Per-object messages kept from one publication to the next. A snapshot hands on the same
    ObjectInfo for an object that did not change, so only changed objects are converted; the
    rest is an identity check per object, never a pass over voxels."""

    def __init__(self, build: Callable[[ObjectInfo], Any]):
        self._build = build
        self._cache: dict[int, tuple[ObjectInfo, Any]] = {}

    def update(self, objects: list[ObjectInfo]) -> tuple[list[Any], list[Any], list[int]]:
        """(every object's message in snapshot order, the changed ones', ids that left)."""
        cache, fresh, changed = self._cache, {}, []
        for obj in objects:
            hit = cache.get(obj.id)
            if hit is None or hit[0] is not obj:
                hit = (obj, self._build(obj))
                changed.append(hit[1])
            fresh[obj.id] = hit
        removed = [oid for oid in cache if oid not in fresh]
        self._cache = fresh
        return [m for _, m in fresh.values()], changed, removed

    def clear(self) -> None:
        self._cache = {}


class MapCloud:
    """The records of core3d/cloud, kept from one publication to the next. An object's records
    are rebuilt when it changed; a map of more than ``max_points`` voxels is thinned to every
    2nd, 4th, ... voxel of each object (at most ``max_points`` in all, unless the map has more
    objects than that: one each), and all records are rebuilt only when that step changes (the
    map doubled or halved). A publication costs the changed objects and one copy of the
    records, whatever the map's size."""

    def __init__(self, max_points: int):
        self.max_points = max(1, int(max_points))
        self.step = 1
        self._records = ObjectMessages(lambda obj: object_cloud(obj, self.step))
        self._published = False

    def update(self, objects: list[ObjectInfo]) -> np.ndarray | None:
        """Every object's records in snapshot order; None when nothing changed since the last call."""
        sizes = [obj.num_voxels for obj in objects]
        step = 1
        while sum((n + step - 1) // step for n in sizes) > self.max_points and step < max(sizes, default=1):
            step *= 2
        if step != self.step:
            self.step = step
            self._records.clear()
        every, changed, removed = self._records.update(objects)
        if self._published and not changed and not removed:
            return None
        self._published = True
        return cloud_records(every)


class MapPublisher:
    """Owns the output publishers; ``report()`` gives the values /diagnostics shows."""

    def __init__(
        self, node: Node, cfg: MapperConfig, mapper: MapView, report: Callable[[], MappingReport],
        on_snapshot: Callable[[Any, Any], None] | None = None,
        take_dirty: Callable[[], tuple[Any, np.ndarray]] | None = None,
        rooms: Callable[[], dict[int, int]] | None = None,
    ):
        from core3d.msg import ObjectArray  # the package's built interfaces

        ros = cfg.ros
        self.node = node
        self.cfg = cfg
        self.mapper = mapper
        self._report = report
        self._on_snapshot = on_snapshot  # the map stream (map_stream.py), fed every publication
        # (geometry, blocks changed since the surface last took them): scene_graph.DirtyBlocks
        # when the hierarchy also reads changed blocks; else the geometry layer's own
        self._take_dirty = take_dirty
        self._rooms = rooms  # {object id: room id} of the scene graph, for core3d/objects' room_id
        self._ObjectArray = ObjectArray
        self.objects_pub = node.create_publisher(ObjectArray, "core3d/objects", MAP_QOS)
        self.markers_pub = node.create_publisher(MarkerArray, "core3d/markers", MAP_QOS)
        self.cloud_pub = node.create_publisher(PointCloud2, "core3d/cloud", MAP_QOS) if ros.publish_points else None
        self.query_markers_pub = node.create_publisher(MarkerArray, "core3d/query_markers", MAP_QOS)
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.surface_pub = None
        if ros.publish_surface and cfg.geometry.enabled:
            self.surface_pub = node.create_publisher(MarkerArray, "core3d/surface", MAP_QOS)
        self._lock = threading.Lock()
        self._objects = 0  # in the last published snapshot
        self._surface_reset = True  # the next surface publication starts with a DELETEALL
        self._surface_shown = ShownBlocks()  # blocks with a surface marker (the rest need no DELETE)
        self._query_hits: list[tuple[ObjectInfo, float]] | None = None  # of the last query, not yet published
        self._object_msgs = ObjectMessages(object_to_msg)
        self._marker_msgs = ObjectMessages(self._markers_of)
        self._cloud = MapCloud(ros.cloud_max_points)
        self._marker_subscribers = 0  # a new one gets every marker (DELETEALL first), the rest changes

    @property
    def objects(self) -> int:
        with self._lock:
            return self._objects

    def reset_surface(self) -> None:
        """The map was replaced (load, clear): the next surface publication starts afresh."""
        self._surface_reset = True

    def _now(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def publish_map(self) -> None:
        """Publish objects, markers, cloud (to subscribers present) and diagnostics once."""
        ros = self.cfg.ros
        stamp = self._now()
        snap = self.mapper.snapshot(wait=False)
        with self._lock:
            self._objects = len(snap.objects)
        header = make_header(ros.map_frame, stamp)
        if self._on_snapshot is not None:
            self._on_snapshot(snap, stamp)
        if self.objects_pub.get_subscription_count():
            msgs, _, _ = self._object_msgs.update(snap.objects)
            rooms = self._rooms() if self._rooms is not None else {}
            for msg in msgs:  # the room can change while the object does not
                msg.room_id = rooms.get(msg.id, 0)
            self.objects_pub.publish(self._ObjectArray(header=header, objects=msgs))
        self._publish_markers(snap, header)
        if self.cloud_pub is not None and self.cloud_pub.get_subscription_count():
            records = self._cloud.update(snap.objects)
            if records is not None:  # unchanged: the latched message stands
                self.cloud_pub.publish(records_to_cloud(records, frame_id=ros.map_frame, stamp=stamp))
        self.publish_surface(stamp)
        self._publish_pending_query_markers()
        self.diagnostics_pub.publish(self.diagnostics(stamp))

    def _markers_of(self, obj: ObjectInfo) -> list[Any]:
        return object_markers(obj, make_header(self.cfg.ros.map_frame, self._now()), style=self.cfg.ros.marker_style)

    def _publish_markers(self, snap: Any, header: Any) -> None:
        """Boxes and labels of the objects that changed, DELETE for those that left; all of
        them (after a DELETEALL) when a subscriber joined, so that it starts complete."""
        subscribers = self.markers_pub.get_subscription_count()
        joined, self._marker_subscribers = subscribers > self._marker_subscribers, subscribers
        if not subscribers:
            return
        per_object, changed, removed = self._marker_msgs.update(snap.objects)
        if joined:
            markers = [delete_all_marker(header)] + [m for ms in per_object for m in ms]
        else:
            markers = [m for oid in removed for m in delete_object_markers(oid, header)] + [m for ms in changed for m in ms]
            if not markers:
                return
        self.markers_pub.publish(MarkerArray(markers=markers))

    def publish_query_markers(self, hits: list[tuple[ObjectInfo, float]]) -> None:
        """The ranked (object, score) pairs of the last query, published with the next map
        publication: a planner asking 50 queries a second does not pay for 50 marker arrays."""
        with self._lock:
            self._query_hits = hits

    def _publish_pending_query_markers(self) -> None:
        with self._lock:
            hits, self._query_hits = self._query_hits, None
        if hits is not None:
            self.query_markers_pub.publish(query_markers(hits, frame_id=self.cfg.ros.map_frame, stamp=self._now()))

    def publish_surface(self, stamp: Any) -> None:
        """The TSDF blocks changed since the last publication (none of the rest of the map).
        Without subscribers the changes accumulate, so a first subscriber gets the whole map."""
        if self.surface_pub is None or not self.surface_pub.get_subscription_count():
            return
        if self._take_dirty is not None:
            geometry, blocks = self._take_dirty()
        else:
            geometry = self.mapper.geometry
            blocks = geometry.take_dirty() if geometry is not None else None
        if geometry is None:
            return
        if not len(blocks) and not self._surface_reset:
            return
        points, colors, block_of = geometry.surface(blocks)
        if self._surface_reset:
            self._surface_shown.clear()
        rows = self._surface_shown.to_send(blocks, block_of)
        if not len(rows) and not self._surface_reset:
            return
        blocks, points, colors, block_of = select_blocks(rows, blocks, points, colors, block_of)
        self.surface_pub.publish(
            surface_markers(
                blocks, points, colors, block_of, voxel_size=geometry.voxel_size,
                frame_id=self.cfg.ros.map_frame, stamp=stamp, clear_first=self._surface_reset,
            )
        )
        self._surface_reset = False

    def diagnostics(self, stamp: Any) -> DiagnosticArray:
        report = self._report()
        c, sync = report.counters, report.sync
        node = self.node
        status = DiagnosticStatus(name=f"{node.get_name()}: mapping", hardware_id=node.get_fully_qualified_name())
        if c.frames_received and not c.processed:
            status.level, status.message = DiagnosticStatus.WARN, "receiving images but no frame mapped yet"
        elif c.dropped or c.total_rejected:
            status.level, status.message = DiagnosticStatus.OK, "mapping; some frames dropped or rejected"
        else:
            status.level, status.message = DiagnosticStatus.OK, "mapping" if c.processed else "waiting for images"
        values: dict[str, Any] = {
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
        values.update(report.query_timing)
        if c.errors:
            status.level = DiagnosticStatus.ERROR
            status.message = f"{sum(c.errors.values())} unexpected callback error(s), see the log; still serving"
        values.update({f"errors_{k}": v for k, v in sorted(c.errors.items())})
        values.update(report.late_fusion)
        values.update(report.stream)
        values.update(report.hierarchy)
        values.update({f"received_{k}": v for k, v in sorted(c.received.items())})
        values.update({f"rejected_{k}": v for k, v in sorted(c.rejected.items())})
        values.update({f"sync_dropped_{k}": v for k, v in sorted(sync.dropped.items())})
        values.update({f"sync_out_of_order_{k}": v for k, v in sorted(sync.out_of_order.items())})
        values.update({f"time_{k}_ms": f"{v:.1f}" for k, v in c.timings_ms.items()})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return DiagnosticArray(header=make_header("", stamp), status=[status])
