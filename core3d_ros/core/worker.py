"""A bounded queue served by one thread: callbacks hand work over and return at once.

    worker = Worker(handle, capacity=1, name="perception")   # capacity 1: always the newest item
    worker.put(item)        # never blocks; when full, the oldest waiting item is dropped (counted)
    worker.stats()          # submitted / dropped / handled / errors / waiting
    worker.waiting_items()  # a copy of the items not yet handled, oldest first
    worker.stop()

An exception in ``handle`` is passed to ``on_error`` and counted; the thread keeps serving.
"""
from __future__ import annotations

import threading
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class WorkerStats:
    submitted: int = 0
    dropped: int = 0  # replaced by newer items before the thread got to them
    handled: int = 0
    errors: int = 0
    waiting: int = 0
    busy: bool = False


class Worker(Generic[T]):
    def __init__(
        self,
        handle: Callable[[T], None],
        capacity: int,
        name: str,
        on_error: Callable[[Exception, str], None] | None = None,
    ):
        if capacity < 1:
            raise ValueError(f"worker queue capacity must be >= 1, got {capacity}")
        self._handle = handle
        self._capacity = int(capacity)
        self._on_error = on_error
        self._queue: deque[T] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._stats = WorkerStats()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> bool:
        """Queue ``item``; False when an older waiting item had to be dropped for it."""
        with self._cv:
            dropped = len(self._queue) >= self._capacity
            if dropped:
                self._queue.popleft()
                self._stats.dropped += 1
            self._queue.append(item)
            self._stats.submitted += 1
            self._cv.notify()
        return not dropped

    def stats(self) -> WorkerStats:
        with self._cv:
            s = WorkerStats(**vars(self._stats))
            s.waiting = len(self._queue)
            return s

    def waiting_items(self) -> list[T]:
        """The items not yet taken by the thread, oldest first (a copy)."""
        with self._cv:
            return list(self._queue)

    def idle(self) -> bool:
        with self._cv:
            return not self._queue and not self._stats.busy

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                item = self._queue.popleft()
                self._stats.busy = True
            try:
                self._handle(item)
            except Exception as e:  # one bad item never stops the worker
                with self._cv:
                    self._stats.errors += 1
                if self._on_error is not None:
                    self._on_error(e, traceback.format_exc())
            finally:
                with self._cv:
                    self._stats.busy = False
                    self._stats.handled += 1
