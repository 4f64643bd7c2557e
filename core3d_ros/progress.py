"""Start-up progress: say what a slow start is waiting for.

One line when a phase begins (with the seconds since the reporter was made), a ``still <phase>
(N s)`` line every ``every`` seconds while it lasts (from a daemon thread, so a blocking call
such as a numba compile or ``wait_for_service`` is covered too), and its duration when it
outlasted one interval. Lines go to stderr by default; a node passes its logger::

    progress = Progress("demo")                       # [demo   0.4 s] starting the mapping node...
    with progress.phase("waiting for the node's services") as p:
        ...
        p.detail = "12/48 frames"                     # shown in the next 'still ...' line

    progress = Progress("start-up", emit=node.get_logger().info)
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Phase:
    """A running phase; set ``detail`` to add how far it got to the 'still ...' lines."""

    def __init__(self, what: str, started: float):
        self.what = what
        self.started = started
        self.detail = ""


class Progress:
    """See the module docstring. ``every``: seconds between 'still ...' lines (0: none)."""

    def __init__(
        self,
        tag: str = "",
        emit: Callable[[str], None] | None = None,
        *,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.tag = tag
        self.every = float(every)
        self._emit = emit or _stderr
        self._clock = clock
        self._t0 = clock()

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def say(self, text: str) -> None:
        """One line, stamped with the seconds since this reporter was made."""
        stamp = f"{self.elapsed():5.1f} s"
        self._emit(f"[{self.tag} {stamp}] {text}" if self.tag else f"[{stamp}] {text}")

    @contextmanager
    def phase(self, what: str, every: float | None = None) -> Iterator[Phase]:
        """Announce ``what`` (``'<what>...'``), repeat ``'still <what> (N s)'`` every ``every``
        seconds (default: the reporter's; 0: none, when something else shows progress) while
        it lasts, and ``'<what>: done in N s'`` when it took longer than that."""
        every = self.every if every is None else float(every)
        p = Phase(what, self._clock())
        self.say(f"{what}...")
        stop = threading.Event()
        ticker = None
        if every > 0:
            ticker = threading.Thread(target=self._tick, args=(p, stop, every), name="core3d_progress", daemon=True)
            ticker.idle = True  # type: ignore[attr-defined]  # never "work in flight" (runner.exit_now_if_busy)
            ticker.start()
        failed = False
        try:
            yield p
        except BaseException:
            failed = True  # the exception says what went wrong, not a 'done' line
            raise
        finally:
            stop.set()
            if ticker is not None:
                ticker.join(1.0)
            took = self._clock() - p.started
            if not failed and took >= (every or self.every or float("inf")):
                self.say(f"{what}: done in {took:.1f} s")

    def _tick(self, p: Phase, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            detail = f", {p.detail}" if p.detail else ""
            self.say(f"still {p.what} ({self._clock() - p.started:.0f} s{detail})")
