"""Observations fused late, each against its own frame (ROS-free).

    late = LateFusion(mapper, frame_buffer=30, max_pinned=4)
    ready = late.add_frame(frame)        # TSDF + buffer; observations that waited for it come back
    late.claim(stamp)                    # perception started on this frame: keep it until used
    outcome = late.offer(stamp, obs)     # "fused" | "waiting" | a rejection reason
    late.counters()                      # counts, rejections by reason, staleness

Every frame is integrated into the geometry layer and buffered (``frame_buffer`` frames; a
claimed frame is kept until its observation arrives, up to ``max_pinned``). An observation is
matched with its frame by stamp and fused (the mapper holds its lock while fusing only). One
whose frame has left the buffer is rejected as ``late``; one that arrives before its frame
waits for it (as many as the frame buffer holds: perception can run several frames ahead of a
busy mapping worker); a malformed one is rejected by reason (``size_mismatch``,
``bad_embedding``, ...) and never fused.

Staleness is the time from a frame's arrival to the fusion of its masks. Observations rejected
as ``late`` are in the distribution too, not left out: their staleness is taken from the frame's
arrival (remembered for the last ``ARRIVALS_KEPT`` frames, after the frame itself has left the
buffer) or, when that is not known, from the observation's stamp on ``clock``, to the moment it
was dropped: a lower bound, since it was never fused. ``counters()`` gives
``staleness_s_p50``/``_p95``/``_max`` over the last ``STALENESS_WINDOW`` samples
(``staleness_samples``) and ``staleness_late_drops``, every late drop since start.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque
from typing import Any, Callable

import numpy as np

from ..frame import Frame
from ..observation import Observation, ObservationError
from .framebuffer import FrameBuffer

STALENESS_WINDOW = 256  # recent staleness samples kept for the percentiles (late drops included)
ARRIVALS_KEPT = 4096  # frames whose arrival time is remembered (a late drop's staleness starts there)

FUSED, WAITING = "fused", "waiting"


class LateFusion:
    """``mapper`` needs ``integrate_geometry(frame)``, ``fuse_observation(frame, obs)`` and
    ``encoder`` (its ``dim`` fixes the embeddings' length; None: the first observation's).
    ``clock()`` is the time the stamps are on (seconds), for late drops of unknown frames."""

    def __init__(
        self, mapper: Any, frame_buffer: int, max_pinned: int, clock: Callable[[], float] = time.time, max_bytes: float = float("inf")
    ):
        self.mapper = mapper
        self.buffer = FrameBuffer(frame_buffer, max_pinned=max_pinned, max_bytes=max_bytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._rejected: Counter = Counter()
        self._staleness: deque[float] = deque(maxlen=STALENESS_WINDOW)
        self._late_drops = 0
        self._arrivals: OrderedDict[float, float] = OrderedDict()  # stamp -> time.monotonic(), bounded
        self._waiting: dict[float, Observation] = {}  # observations that arrived before their frame
        self.dim: int | None = mapper.encoder.dim if mapper.encoder is not None else None

    # ------------------------------------------------------------------ frames

    def add_frame(self, frame: Frame) -> list[tuple[float, Observation]]:
        """Integrate a frame into the TSDF and buffer it (FrameError rejects it); returns the
        observations that waited for a frame up to this one, to be offered again."""
        frame = self.mapper.integrate_geometry(frame)  # FrameError: refused, nothing buffered
        self.buffer.add(frame)
        arrived = self.buffer.arrived(frame.stamp)
        with self._lock:
            if arrived is not None:
                self._arrivals[float(frame.stamp)] = arrived
                while len(self._arrivals) > ARRIVALS_KEPT:
                    self._arrivals.popitem(last=False)
            ready = [s for s in self._waiting if s <= frame.stamp + self.buffer.tolerance]
            return [(s, self._waiting.pop(s)) for s in ready]  # their frame is here, or never will be

    def claim(self, stamp: float) -> None:
        self.buffer.pin(stamp)

    # ------------------------------------------------------------------ observations

    def received(self) -> None:
        self.count("observations_received")

    def offer(self, stamp: float, obs: Observation) -> tuple[str, str]:
        """Match and fuse: (FUSED, ""), (WAITING, "") or (reason, detail) when rejected (counted)."""
        try:
            dim = self._embedding_dim(obs)
        except ObservationError as e:
            return self.reject(e.reason), str(e)
        arrived = self.buffer.arrived(stamp)  # kept with the frame (before take: a pinned one leaves then)
        frame, why = self.buffer.take(stamp)
        if frame is None:
            newest = self.buffer.newest()
            if why == "unknown_stamp" and (newest is None or stamp > newest) and self._wait(stamp, obs):
                return WAITING, ""  # perception was faster than this node's own frame
            if why == "late":
                self._late(stamp)
            return self.reject(why), f"no buffered frame at {stamp:.3f} s"
        if obs.labels.shape != frame.shape:
            return self.reject("size_mismatch"), f"observation {obs.labels.shape} vs frame {frame.shape}"
        self.dim = self.dim or dim
        self.mapper.fuse_observation(frame, obs)  # the mapper holds its lock while fusing only
        with self._lock:
            self._counts["observations_fused"] += 1
            if arrived is not None:
                self._staleness.append(time.monotonic() - arrived)
        return FUSED, ""

    def reject(self, reason: str) -> str:
        """Count an observation rejected for ``reason`` (also those refused before decoding)."""
        with self._lock:
            self._rejected[reason] += 1
        return reason

    def count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _late(self, stamp: float) -> None:
        now = time.monotonic()
        with self._lock:
            arrived = self._arrival_of(stamp)
            staleness = now - arrived if arrived is not None else self._clock() - stamp
            self._late_drops += 1
            self._staleness.append(max(0.0, staleness))

    def _arrival_of(self, stamp: float) -> float | None:
        """The remembered arrival of the frame of ``stamp`` (within the buffer's tolerance); under the lock."""
        hit = self._arrivals.get(stamp)
        if hit is not None:
            return hit
        tol = self.buffer.tolerance
        return next((t for s, t in self._arrivals.items() if abs(s - stamp) <= tol), None)

    def _wait(self, stamp: float, obs: Observation) -> bool:
        with self._lock:
            if stamp not in self._waiting and len(self._waiting) >= self.buffer.capacity:
                return False
            self._waiting[stamp] = obs
            return True

    @staticmethod
    def _embedding_dim(obs: Observation) -> int | None:
        dims = {len(r.embedding) for r in obs.masks if r.embedding is not None}
        if len(dims) > 1:
            raise ObservationError("bad_embedding", f"embeddings of several lengths {sorted(dims)}")
        return dims.pop() if dims else None

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
        out["frames_buffered_mb"] = f"{self.buffer.bytes / 2**20:.1f}"
        out["frames_evicted_for_bytes"] = self.buffer.evicted_for_bytes
        return out
