"""The mapping node's map stream: core3d/map_updates and core3d/get_map_state.

At each map publication the objects that changed since the last one (the snapshot hands on the
same ObjectInfo for an object that did not change, so finding them is an identity check per
object) go out once as a core3d/MapUpdate with the next sequence number, with the ids that left;
nothing is sent when nothing changed, except at the first publication, which always goes out
(seq 1, empty for an empty map): a restarted node's new generation reaches the query nodes at
once, and they drop the old generation's table instead of serving it as current. The map id is the node's fully qualified name and the
generation its start time in nanoseconds, so a restarted node starts a new generation. A late
joiner, or a query node that saw a gap, calls core3d/get_map_state: the whole table as of the
last published sequence number, from the per-object messages already built (no map pass).
The stream is reliable and volatile (keep-last ``STREAM_DEPTH``): what a reader misses it
recovers through the state service, never from a replay of old updates.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Callable

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..config import MapperConfig
from ..core.objects import MapSnapshot
from .conversions.map_stream import map_update_msg, object_state_to_msg
from .publishing import ObjectMessages

STREAM_DEPTH = 50
STREAM_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    depth=STREAM_DEPTH,
    durability=DurabilityPolicy.VOLATILE,
)


def _state_bytes(msg: Any) -> int:
    """Approximate serialized size of an ObjectState (its arrays and a fixed part)."""
    return 200 + len(msg.object.label) + 2 * len(msg.embedding_fp16) + 4 * len(msg.sample_points) + len(msg.sample_colors)


class MapStream:
    """Publishes the map stream and serves its full state; see the module docstring."""

    def __init__(
        self,
        node: Node,
        cfg: MapperConfig,
        viewpoint: Callable[[], Any],
        *,
        guard: Callable[[str, Callable[..., Any]], Callable[..., Any]],
        service_qos: QoSProfile,
        callback_group: Any = None,
    ):
        from core3d.msg import MapUpdate  # the package's built interfaces
        from core3d.srv import GetMapState

        self.node = node
        self.cfg = cfg
        self.map_id = node.get_fully_qualified_name()
        self.generation = time.time_ns()
        self.seq = 0
        self._viewpoint = viewpoint
        self._states = ObjectMessages(lambda obj: object_state_to_msg(obj, cfg.ros.stream_voxel_sample))
        self._lock = threading.Lock()
        self._snapshot: MapSnapshot | None = None
        self._every: list[Any] = []
        self._stamp: Any = node.get_clock().now().to_msg()
        self._frames = 0
        self._voxel_size = float(cfg.fusion.voxel_size)
        self._pose: np.ndarray | None = None
        self._counts: Counter = Counter()
        self.publisher = node.create_publisher(MapUpdate, "core3d/map_updates", STREAM_QOS)
        self.service = node.create_service(
            GetMapState, "core3d/get_map_state", guard("get_map_state", self._on_get_state),
            qos_profile=service_qos, callback_group=callback_group,
        )

    def publish(self, snap: MapSnapshot, stamp: Any) -> None:
        """Send what changed since the last call (nothing when nothing did)."""
        with self._lock:  # one version at a time, and the state service sees whole versions
            if snap is self._snapshot:
                return
            self._snapshot = snap
            every, changed, removed = self._states.update(snap.objects)
            self._every = every
            self._stamp, self._frames, self._voxel_size = stamp, int(snap.frames), float(snap.voxel_size)
            self._pose = self._viewpoint()
            if not changed and not removed and self.seq > 0:
                return  # the first publication goes out even when empty: it announces the generation
            self.seq += 1
            msg = self._message(full=False, objects=changed, removed=removed)
            self.publisher.publish(msg)
            self._counts["updates"] += 1
            self._counts["objects_sent"] += len(changed)
            self._counts["removed_sent"] += len(removed)
            self._counts["bytes_sent"] += sum(_state_bytes(s) for s in changed) + 4 * len(removed) + 300

    def _message(self, *, full: bool, objects: list[Any], removed: list[int]) -> Any:
        return map_update_msg(
            frame_id=self.cfg.ros.map_frame, stamp=self._stamp, map_id=self.map_id, generation=self.generation,
            seq=self.seq, full=full, voxel_size=self._voxel_size, frames=self._frames,
            objects=objects, removed=removed, viewpoint=self._pose,
        )

    def _on_get_state(self, req: Any, resp: Any) -> Any:
        with self._lock:
            resp.state = self._message(full=True, objects=list(self._every), removed=[])
            self._counts["states_served"] += 1
        resp.success = True
        resp.message = f"{len(resp.state.objects)} objects at seq {resp.state.seq}"
        return resp

    def counters(self) -> dict[str, Any]:
        """For /diagnostics: stream_seq, stream_updates, stream_objects_sent, ..."""
        with self._lock:
            out = {"stream_seq": self.seq, "stream_generation": self.generation}
            out.update({f"stream_{k}": v for k, v in sorted(self._counts.items())})
            return out
