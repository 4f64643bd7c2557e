"""Recent frames by stamp, so that an observation computed later fuses against its own frame.

    buf = FrameBuffer(capacity=30)
    buf.add(frame)                 # at sensor rate; the oldest unpinned frame leaves when full
    buf.pin(stamp)                 # perception started on this frame: keep it until taken
    frame, why = buf.take(stamp)   # (Frame, "") or (None, "late" | "unknown_stamp")
    buf.arrived(stamp)             # time.monotonic() when the frame was added, while buffered

Memory is bounded by ``capacity`` frames plus ``max_pinned`` pinned ones, and by ``max_bytes``:
beyond it the oldest unpinned frames leave (``evicted_for_bytes`` counts them; the newest frame
always stays). A pin keeps the frame a
slow model is working on (seconds on a CPU) without buffering every frame in between.
"""
from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict

import numpy as np

from ..frame import Frame


class FrameBuffer:
    def __init__(self, capacity: int, max_pinned: int = 4, tolerance: float = 1e-6, max_bytes: float = float("inf")):
        if capacity < 1:
            raise ValueError(f"frame buffer capacity must be >= 1, got {capacity}")
        if not max_bytes > 0:
            raise ValueError(f"frame buffer max_bytes must be > 0, got {max_bytes}")
        self.capacity = int(capacity)
        self.max_bytes = float(max_bytes)
        self.bytes = 0  # held by the buffered frames' images
        self.evicted_for_bytes = 0
        self.max_pinned = int(max_pinned)
        self.tolerance = float(tolerance)
        self._frames: OrderedDict[float, Frame] = OrderedDict()  # insertion (stamp) order
        self._arrived: dict[float, float] = {}  # stamp -> time.monotonic() at add
        self._stamps: list[float] = []  # sorted
        self._pinned: OrderedDict[float, None] = OrderedDict()
        self._pending: list[float] = []  # pins asked for before their frame arrived
        self._oldest_dropped: float | None = None  # newest stamp that has left the buffer
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def add(self, frame: Frame) -> None:
        stamp = float(frame.stamp)
        with self._lock:
            if stamp in self._frames:
                return
            self._frames[stamp] = frame
            self.bytes += frame_bytes(frame)
            self._arrived[stamp] = time.monotonic()
            bisect.insort(self._stamps, stamp)
            pending = [p for p in self._pending if abs(p - stamp) <= self.tolerance]
            if pending:
                self._pending = [p for p in self._pending if p not in pending]
                self._pin_key(stamp)
            unpinned = [s for s in self._stamps if s not in self._pinned]
            while len(unpinned) > self.capacity:
                self._drop(unpinned.pop(0))
            while self.bytes > self.max_bytes and len(unpinned) > 1:
                self._drop(unpinned.pop(0))
                self.evicted_for_bytes += 1

    def arrived(self, stamp: float) -> float | None:
        """time.monotonic() when the frame of ``stamp`` was added; None once it has left."""
        with self._lock:
            key = self._find(stamp)
            return None if key is None else self._arrived[key]

    def newest(self) -> float | None:
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def pin(self, stamp: float) -> bool:
        """Keep the frame of ``stamp`` until it is taken. A frame not buffered yet is pinned when
        it arrives (False is returned then); at most ``max_pinned`` pins are kept."""
        with self._lock:
            key = self._find(stamp)
            if key is None:
                self._pending = [*self._pending, float(stamp)][-max(self.max_pinned, 1) :]
                return False
            self._pin_key(key)
            return True

    def _pin_key(self, key: float) -> None:
        self._pinned[key] = None
        while len(self._pinned) > self.max_pinned:  # the oldest pin gives way
            old, _ = self._pinned.popitem(last=False)
            if len([s for s in self._stamps if s not in self._pinned]) > self.capacity:
                self._drop(old)

    def take(self, stamp: float) -> tuple[Frame | None, str]:
        """The frame of ``stamp`` (it stays buffered unless pinned), or None and why."""
        with self._lock:
            key = self._find(stamp)
            if key is None:
                late = self._oldest_dropped is not None and stamp <= self._oldest_dropped + self.tolerance
                return None, "late" if late else "unknown_stamp"
            frame = self._frames[key]
            if self._pinned.pop(key, 0) is None:
                unpinned = [s for s in self._stamps if s not in self._pinned]
                while len(unpinned) > self.capacity:
                    self._drop(unpinned.pop(0))
            return frame, ""

    def _find(self, stamp: float) -> float | None:
        i = bisect.bisect_left(self._stamps, stamp - self.tolerance)
        if i < len(self._stamps) and abs(self._stamps[i] - stamp) <= self.tolerance:
            return self._stamps[i]
        return None

    def _drop(self, stamp: float) -> None:
        self.bytes -= frame_bytes(self._frames.pop(stamp))
        del self._arrived[stamp]
        self._stamps.remove(stamp)
        self._pinned.pop(stamp, None)
        if self._oldest_dropped is None or stamp > self._oldest_dropped:
            self._oldest_dropped = stamp


def frame_bytes(frame: Frame) -> int:
    """Bytes of a frame's images (colour, depth and ground-truth instances when present)."""
    return sum(int(a.nbytes) for a in (frame.rgb, frame.depth, frame.instance_ids) if isinstance(a, np.ndarray))
