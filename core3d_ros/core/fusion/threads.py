"""The fusion engine's threads: a small team that runs a compiled pass on T threads at once
(``ThreadTeam.run``), or one compiled call beside Python work (``ThreadTeam.beside``); a pass
takes its part of the work with ``chunk``.

The passes release the interpreter lock and run on ordinary Python threads: no OpenMP pool
spinning between frames beside the rest of the process. A hand-off to a worker costs 60-85 us
on a 2-core VM (a sleeping thread waking on an idle core), so a pass is worth splitting only
when it is well above that.
"""
from __future__ import annotations

import os
import queue
import threading

import numba
import numpy as np


def default_threads() -> int:
    """The cores this process may use, at most 4 (the stage is memory-bound beyond that)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def chunk(n, k, T):
    """Range k of T equal parts of 0..n (rows, pixels, voxels or rows of the map): (start, stop)."""
    step = (n + T - 1) // T
    a = min(n, k * step)
    return a, min(n, a + step)


chunk = numba.njit(cache=True, nogil=True, inline="always")(chunk)


class _Worker(threading.Thread):
    """One thread of a team: runs the calls it is handed, in turn. A daemon thread, and marked
    ``idle`` while it waits, so that it neither holds up interpreter exit nor counts as busy
    work at a node's exit (:func:`core3d_ros.ros.runner.exit_now_if_busy`)."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.idle = True
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.start()

    def submit(self, fn, *args) -> "_Call":
        call = _Call()
        self._tasks.put((fn, args, call))
        return call

    def stop(self) -> None:
        self._tasks.put(None)

    def run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            fn, args, call = task
            self.idle = False
            try:
                call.value = fn(*args)
            except BaseException as e:  # handed to the caller
                call.error = e
            finally:
                self.idle = True
                call.done.set()
                # hold nothing of a finished call (its arguments would keep a map alive)
                task = fn = args = call = None


class _Call:
    __slots__ = ("value", "error", "done")

    def __init__(self):
        self.value = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def result(self):
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class ThreadTeam:
    """Runs a compiled pass ``fn(k, T, *args)`` for k = 0..T-1: k = 0 on the calling thread,
    the others on T - 1 worker threads (started on first use)."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self._pool: list[_Worker] | None = None
        self._lock = threading.Lock()
        self._scratch: dict[str, np.ndarray] = {}
        self.sizes: dict[str, int] = {}  # work-array sizes a pass has learned (grown as needed)

    def scratch(self, name: str, shape: tuple, dtype=np.int32) -> np.ndarray:
        """A work array kept between frames (uninitialised): fresh arrays of a frame's size
        would cost their page faults on every frame. One team serves one map at a time."""
        size = int(np.prod(shape))
        buf = self._scratch.get(name)
        if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
            buf = self._scratch[name] = np.empty(size + size // 4 + 1, dtype)
        return buf[:size].reshape(shape)

    def _workers(self) -> list[_Worker]:
        with self._lock:
            if self._pool is None:
                self._pool = [_Worker(f"core3d-fusion-{k}") for k in range(1, self.threads)]
            return self._pool

    def run(self, fn, *args) -> None:
        T = self.threads
        if T == 1:
            fn(0, 1, *args)
            return
        calls = [w.submit(fn, k, T, *args) for k, w in enumerate(self._workers(), start=1)]
        try:
            fn(0, T, *args)
        finally:
            for c in calls:
                c.result()

    def beside(self, compiled, args: tuple, side, side_args: tuple = ()):
        """``compiled(*args)`` on this thread and ``side(*side_args)`` on a worker at the same
        time; returns both results. ``compiled`` must be a compiled call that releases the
        interpreter lock at once (the side work, Python, runs meanwhile). One thread: in turn."""
        if self.threads == 1:
            return compiled(*args), side(*side_args)
        call = self._workers()[0].submit(side, *side_args)
        try:
            out = compiled(*args)
        finally:
            side_out = call.result()
        return out, side_out

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        for w in pool or ():
            w.stop()

    def __del__(self):
        self.close()
