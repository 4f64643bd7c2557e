"""The mapping node's side of the perception link: frames kept by stamp, observations fused late.

Every synced frame is buffered (``ros.frame_buffer`` frames; a frame that perception claimed on
``core3d/perception/claims`` is kept until its observation arrives, up to
``ros.max_pinned_frames``). Each ``core3d/Observation`` is decoded and validated in a worker,
matched with its own frame by stamp, and fused under the map lock, which is held only while
fusing. An observation whose frame has left the buffer is counted as ``late`` and dropped; a
malformed one is counted by reason (``size_mismatch``, ``bad_labels``, ``bad_embedding``, ...) and
never fused.

Staleness is the time from a frame's arrival to the fusion of its masks. Observations dropped as
``late`` are in the distribution too, not left out: a late observation's staleness is taken as
the time from its frame's arrival (remembered here for the last ``ARRIVALS_KEPT`` frames, after
the frame itself has left the buffer) or, when that is not known, from its header stamp (the
node's clock), to the moment it was dropped: a lower bound of what its staleness would have been,
since it was never fused. ``/diagnostics`` gives ``staleness_s_p50``/``_p95``/``_max`` over the
last ``STALENESS_WINDOW`` samples (``staleness_samples`` of them), and beside them
``staleness_late_drops``: every late drop since start (the same count as
``observations_rejected_late``, published even when 0).
"""
from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..core.frame import Frame
from ..core.framebuffer import FrameBuffer
from ..core.observation import ObservationError
from ..core.worker import Worker
from . import conversions as conv
from .observation_msgs import CLAIMS_TOPIC, OBSERVATION_QOS, OBSERVATIONS_TOPIC, msg_to_observation
from .protocols import FrameMapper

if TYPE_CHECKING:
    from rclpy.node import Node

    from ..config import RosConfig

STALENESS_WINDOW = 256  # recent staleness samples kept for the percentiles (late drops included)
ARRIVALS_KEPT = 4096  # frames whose arrival time is remembered (a late drop's staleness starts there)


class LateFusion:
    """Subscribes on ``node``, fuses into ``mapper``; ``first_time(key)`` says whether a warning
    is the first of its kind (the node's once-per-reason logging)."""

    def __init__(self, node: Node, ros: RosConfig, mapper: FrameMapper, first_time: Callable[[str], bool]):
        from core3d.msg import Observation as ObservationMsg
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from std_msgs.msg import Header

        self.node = node
        self.mapper = mapper
        self._first_time = first_time
        self.buffer = FrameBuffer(ros.frame_buffer, max_pinned=ros.max_pinned_frames)
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._rejected: Counter = Counter()
        self._staleness: deque[float] = deque(maxlen=STALENESS_WINDOW)
        self._late_drops = 0
        self._arrivals: OrderedDict[float, float] = OrderedDict()  # stamp -> time.monotonic(), bounded
        self._waiting: dict[float, Any] = {}  # observations that arrived before their frame
        self._dim: int | None = mapper.encoder.dim if mapper.encoder is not None else None
        self._worker: Worker[Any] = Worker(self._fuse, capacity=16, name="core3d_late_fusion", on_error=self._on_error)
        group = MutuallyExclusiveCallbackGroup()
        self._subs = [
            node.create_subscription(ObservationMsg, OBSERVATIONS_TOPIC, self._on_observation, OBSERVATION_QOS, callback_group=group),
            node.create_subscription(Header, CLAIMS_TOPIC, self._on_claim, OBSERVATION_QOS, callback_group=group),
        ]

    # ------------------------------------------------------------------ frames (mapping worker)

    def add_frame(self, frame: Frame) -> Any:
        """Check a synced frame, integrate it into the TSDF and buffer it (FrameError rejects it)."""
        frame = self.mapper.integrate_geometry(frame)  # FrameError: refused, nothing buffered
        self.buffer.add(frame)
        arrived = self.buffer.arrived(frame.stamp)
        with self._lock:
            if arrived is not None:
                self._arrivals[float(frame.stamp)] = arrived
                while len(self._arrivals) > ARRIVALS_KEPT:
                    self._arrivals.popitem(last=False)
            ready = [s for s in self._waiting if s <= frame.stamp + self.buffer.tolerance]
            retry = [self._waiting.pop(s) for s in ready]  # their frame is here, or never will be
        for msg in retry:
            self._worker.put(msg)
        return None

    # ------------------------------------------------------------------ observations

    def _on_claim(self, header: Any) -> None:
        self.buffer.pin(conv.to_seconds(header.stamp))

    def _on_observation(self, msg: Any) -> None:
        with self._lock:
            self._counts["observations_received"] += 1
        if not self._worker.put(msg):
            self._reject("queue_full")

    def _fuse(self, msg: Any) -> None:
        stamp = conv.to_seconds(msg.header.stamp)
        try:
            obs = msg_to_observation(msg, dim=self._dim)
            dim = self._embedding_dim(obs)
        except ObservationError as e:
            self._reject(e.reason, str(e))
            return
        arrived = self.buffer.arrived(stamp)  # kept with the frame (before take: a pinned one leaves then)
        frame, why = self.buffer.take(stamp)
        if frame is None:
            newest = self.buffer.newest()
            if why == "unknown_stamp" and (newest is None or stamp > newest) and self._wait(stamp, msg):
                return  # perception was faster than this node's own frame: fused when it arrives
            if why == "late":
                self._late(stamp)
            self._reject(why, f"no buffered frame at {stamp:.3f} s")
            return
        if obs.labels.shape != frame.shape:
            self._reject("size_mismatch", f"observation {obs.labels.shape} vs frame {frame.shape}")
            return
        self._dim = self._dim or dim
        self.mapper.fuse_observation(frame, obs)  # the mapper holds its lock while fusing only
        with self._lock:
            self._counts["observations_fused"] += 1
            if arrived is not None:
                self._staleness.append(time.monotonic() - arrived)

    def _late(self, stamp: float) -> None:
        """A late drop enters the staleness distribution (see the module docstring) and the
        ``staleness_late_drops`` counter: from its frame's arrival if remembered, otherwise from
        its stamp on this node's clock, to now (a lower bound: it was never fused)."""
        now = time.monotonic()
        with self._lock:
            arrived = self._arrival_of(stamp)
        if arrived is not None:
            staleness = now - arrived
        else:
            staleness = self.node.get_clock().now().nanoseconds * 1e-9 - stamp
        with self._lock:
            self._late_drops += 1
            self._staleness.append(max(0.0, staleness))

    def _arrival_of(self, stamp: float) -> float | None:
        """The remembered arrival of the frame of ``stamp`` (within the buffer's tolerance); under the lock."""
        hit = self._arrivals.get(stamp)
        if hit is not None:
            return hit
        tol = self.buffer.tolerance
        return next((t for s, t in self._arrivals.items() if abs(s - stamp) <= tol), None)

    def _wait(self, stamp: float, msg: Any) -> bool:
        with self._lock:
            if stamp not in self._waiting and len(self._waiting) >= self.buffer.max_pinned:
                return False
            self._waiting[stamp] = msg
            return True

    @staticmethod
    def _embedding_dim(obs: Any) -> int | None:
        dims = {len(r.embedding) for r in obs.masks if r.embedding is not None}
        if len(dims) > 1:
            raise ObservationError("bad_embedding", f"embeddings of several lengths {sorted(dims)}")
        return dims.pop() if dims else None

    def _reject(self, reason: str, detail: str = "") -> None:
        with self._lock:
            self._rejected[reason] += 1
        if self._first_time(f"observation_{reason}"):
            log = self.node.get_logger().error if reason == "error" else self.node.get_logger().warning
            log(f"observation rejected ({reason}): {detail or reason} (further ones are counted in /diagnostics)")

    def _on_error(self, error: Exception, trace: str) -> None:
        self._reject("error", f"{type(error).__name__}: {error}\n{trace}")

    # ------------------------------------------------------------------ diagnostics

    def counters(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out.update({f"observations_rejected_{k}": v for k, v in sorted(self._rejected.items())})
            out["staleness_late_drops"] = self._late_drops  # in the distribution below, not left out
            out["staleness_samples"] = len(self._staleness)
            if self._staleness:
                s = np.asarray(self._staleness)
                out["staleness_s_p50"] = f"{np.percentile(s, 50):.3f}"
                out["staleness_s_p95"] = f"{np.percentile(s, 95):.3f}"
                out["staleness_s_max"] = f"{s.max():.3f}"
        out["frames_buffered"] = len(self.buffer)
        return out

    def idle(self) -> bool:
        return self._worker.idle()

    def stop(self) -> None:
        self._worker.stop()
