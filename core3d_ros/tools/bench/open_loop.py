"""Queries on a fixed schedule (open loop), as a planner on the robot asks them: the schedule
(``run_open_loop``), its figures (``open_loop_stats``) and a client in a process of its own
(``QueryClient``), for ``core3d bench load`` and ``core3d bench online``."""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Sequence

from ..nodes import QUERIES
from .common import percentile
from .graph import Peer

QUERY_TIMEOUT_S = 10.0  # a query not answered this long after its scheduled time is a timeout
# Queries sent and not yet answered, at most; one more waits for a slot, timed from its
# schedule. Below the node's request queue (ros.service_queue, 100): with ROS's default service
# QoS (KEEP_LAST 10) a burst beyond 10 lost the oldest requests without a word, which the
# node now avoids; the client's own response queue is as deep as this (Peer client_depth).
MAX_IN_FLIGHT = 64
TIMING_RULE = "from scheduled send, open loop; timeouts counted at the timeout"


def _latency_stats(ms: list[float]) -> dict:
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else math.nan,
    }


class QueryRecord:
    """One query of an open-loop run: ``scheduled`` (when it was due: t0 + k / qps), ``sent``
    (when it was actually sent; None: never sent, it timed out waiting for a free slot),
    ``answered`` (when its response came; None: none within the timeout), whether the response
    said success, and its message when not. Times in seconds of CLOCK_MONOTONIC."""

    __slots__ = ("scheduled", "sent", "answered", "success", "message")

    def __init__(self, scheduled: float, sent: float | None = None, answered: float | None = None,
                 success: bool = False, message: str = ""):
        self.scheduled, self.sent, self.answered, self.success, self.message = scheduled, sent, answered, success, message

    def astuple(self) -> tuple:
        return (self.scheduled, self.sent, self.answered, self.success, self.message)

    def __repr__(self) -> str:
        return f"QueryRecord{self.astuple()!r}"


def run_open_loop(
    send: Callable[[int], Any],
    qps: float,
    stop: Any,
    timeout: float = QUERY_TIMEOUT_S,
    max_in_flight: int = MAX_IN_FLIGHT,
    cancel: Callable[[Any], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[QueryRecord]:
    """Queries on a fixed schedule until ``stop`` (an Event) is set: query k is due at
    t0 + k / ``qps`` whether or not the earlier ones were answered (open loop), so queueing in
    the server shows in the latencies instead of slowing the client down.

    ``send(k)`` sends query k and returns a future (``add_done_callback``, ``result``: an
    rclpy or a concurrent.futures one); its result's ``success`` (when it has one) decides
    success. At most ``max_in_flight`` queries are outstanding: a query due while all slots
    are taken is sent as soon as one frees, and still timed from when it was due. A query not
    answered ``timeout`` seconds after it was due is given up (``cancel(future)``, e.g. the
    client's remove_pending_request) and stays unanswered; one that was due that long and
    never got a slot is not sent at all. Once ``stop`` is seen, the queries due by then (late
    ones, held back by the bound) still go out, no later one does, and those in flight get
    their answer or their timeout. Returns one record per query due before ``stop`` was seen,
    in schedule order.
    """
    if qps <= 0 or timeout <= 0 or max_in_flight < 1:
        raise ValueError(f"qps and timeout must be positive and max_in_flight >= 1, got {qps}, {timeout}, {max_in_flight}")
    cond = threading.Condition()
    records: list[QueryRecord] = []
    pending: dict[int, tuple[QueryRecord, Any]] = {}

    def done(k: int, future: Any) -> None:
        now = clock()
        try:
            resp = future.result()
            ok = bool(getattr(resp, "success", True))
            msg = "" if ok else str(getattr(resp, "message", ""))[:200]
        except BaseException as e:  # a failed call: answered, not successful
            ok, msg = False, f"{type(e).__name__}: {e}"[:200]
        with cond:
            if k in pending:  # not given up already
                rec = pending.pop(k)[0]
                rec.answered, rec.success, rec.message = now, ok, msg
                cond.notify_all()

    def expire(now: float) -> None:
        with cond:
            gone = [k for k, (rec, _) in pending.items() if now - rec.scheduled >= timeout]
            futures = [pending.pop(k)[1] for k in gone]
        if cancel is not None:
            for f in futures:
                cancel(f)

    t0 = clock()
    k = 0
    stop_at: float | None = None  # when ``stop`` was seen: queries due by then are still sent
    while True:
        due = t0 + k / qps
        while stop_at is None:
            now = clock()
            expire(now)
            if stop.is_set():
                stop_at = now
            elif now >= due:
                break
            else:
                stop.wait(min(due - now, 0.05))
        if stop_at is not None and due > stop_at:
            break
        rec = QueryRecord(due)
        records.append(rec)
        with cond:  # a free slot, or the query's whole timeout spent waiting for one
            while len(pending) >= max_in_flight and clock() - due < timeout:
                cond.wait(0.01)
                cond.release()
                try:
                    expire(clock())
                finally:
                    cond.acquire()
            full = len(pending) >= max_in_flight
        if not full:
            rec.sent = clock()
            future = send(k)
            with cond:
                pending[k] = (rec, future)
            future.add_done_callback(lambda f, k=k: done(k, f))
        k += 1
    while True:  # the last ones: answered or timed out
        expire(clock())
        with cond:
            if not pending:
                break
            cond.wait(0.02)
    return records


def open_loop_stats(records: Sequence[QueryRecord], timeout: float, start: float, end: float) -> dict:
    """Figures of the queries due in [``start``, ``end``] (monotonic seconds).

    ``ms``: latency from the scheduled send to the response, every query due in the window,
    a timed-out one counted at the timeout (``timeout``). ``ms_from_send``: from the actual
    send, answered queries only: the figure a closed-loop client reports, for comparison (it
    hides the time a query waited to be sent and leaves timeouts out). ``qps_achieved``:
    responses that arrived inside the window, per second of the window. ``send_lag_ms``: how
    late the client sent, past the schedule (its own delay, or the in-flight bound)."""
    window = [r for r in records if start <= r.scheduled <= end]
    ms: list[float] = []
    ms_send: list[float] = []
    lag: list[float] = []
    answered = timed_out = never_sent = failed = 0
    messages: list[str] = []
    for r in window:
        if r.sent is not None:
            lag.append((r.sent - r.scheduled) * 1e3)
        if r.answered is not None and r.answered - r.scheduled < timeout:
            answered += 1
            ms.append((r.answered - r.scheduled) * 1e3)
            ms_send.append((r.answered - (r.sent if r.sent is not None else r.scheduled)) * 1e3)
            if not r.success:
                failed += 1
                messages.append(r.message)
        else:
            timed_out += 1
            never_sent += r.sent is None
            ms.append(timeout * 1e3)
    span = max(end - start, 1e-9)
    arrived = sum(1 for r in records if r.answered is not None and start <= r.answered <= end
                  and r.answered - r.scheduled < timeout)
    return {
        "window_s": span,
        "scheduled": len(window),
        "sent": sum(1 for r in window if r.sent is not None),
        "answered": answered,
        "timed_out": timed_out,
        "timed_out_never_sent": never_sent,
        # when the first timed-out queries were due, seconds into the window: a stall or a burst
        "timed_out_due_at_s": [round(r.scheduled - start, 3) for r in window
                               if not (r.answered is not None and r.answered - r.scheduled < timeout)][:20],
        "failed": failed,  # answered, success false
        "failures": messages[:5],
        "qps_achieved": arrived / span,
        "ms": _latency_stats(ms),
        "ms_from_send": _latency_stats(ms_send),
        "send_lag_ms": _latency_stats(lag),
    }


def _query_client_main(domain_id: int, qps: float, timeout: float, max_in_flight: int,
                       ready: Any, stop: Any, results: Any) -> None:
    """The body of QueryClient's process: its own rclpy context, open-loop queries until ``stop``."""
    peer = Peer(domain_id, name="core3d_query_client", client_depth=max(10, max_in_flight))
    records: list[QueryRecord] = []
    failures: list[str] = []
    try:
        if peer.clients["query"].wait_for_service(timeout_sec=120.0):  # the only service it calls
            ready.set()
            client = peer.clients["query"]

            def send(k: int) -> Any:
                return client.call_async(peer.request("query", text=QUERIES[k % len(QUERIES)], top_k=5))

            records = run_open_loop(send, qps, stop, timeout, max_in_flight, cancel=client.remove_pending_request)
        else:
            failures.append("core3d/query did not come up")
            ready.set()
    except BaseException as e:  # reported, not lost with the process
        failures.append(f"the query client failed: {type(e).__name__}: {e}")
    finally:
        results.put(([r.astuple() for r in records], failures))
        peer.close()


class QueryClient:
    """Queries at ``qps`` on a fixed schedule (open loop: see run_open_loop) from a process of
    its own, as a planner on the robot asks them: the figures then hold the node and the
    transport, not this process replaying the frames.

    ``stop()`` returns (latencies as (monotonic time answered, ms from the scheduled send),
    failures: a message per query not answered within ``timeout`` or answered without
    success, and the client's own errors); ``records`` then holds every query (QueryRecord)
    for open_loop_stats and ``errors`` the client's own errors (it did not start, it failed).
    CLOCK_MONOTONIC is the same clock in every process of the machine."""

    def __init__(self, domain_id: int, qps: float, timeout: float = QUERY_TIMEOUT_S, max_in_flight: int = MAX_IN_FLIGHT):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter: rclpy must not be forked
        self.timeout, self.max_in_flight = float(timeout), int(max_in_flight)
        self.records: list[QueryRecord] = []
        self.errors: list[str] = []
        self._ready, self._stop, self._results = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(
            target=_query_client_main,
            args=(domain_id, qps, self.timeout, self.max_in_flight, self._ready, self._stop, self._results),
            daemon=True,
        )
        self.proc.start()

    def wait_ready(self, timeout: float = 120.0) -> bool:
        return self._ready.wait(timeout)

    def stop(self, timeout: float | None = None) -> tuple[list, list[str]]:
        import queue

        self._stop.set()
        try:  # the queries in flight get their timeout first
            rows, errors = self._results.get(timeout=timeout if timeout is not None else self.timeout + 30.0)
        except queue.Empty:
            rows, errors = [], ["the query client process gave no results"]
        self.proc.join(10.0)
        if self.proc.is_alive():
            self.proc.kill()
        self.records = [QueryRecord(*row) for row in rows]
        self.errors = list(errors)
        failures = list(errors)
        latencies = []
        for r in self.records:
            if r.answered is not None and r.answered - r.scheduled < self.timeout:
                latencies.append((r.answered, (r.answered - r.scheduled) * 1e3))
                if not r.success:
                    failures.append(r.message)
            else:
                failures.append(f"core3d/query did not answer within {self.timeout:g} s of its scheduled send")
        return latencies, failures
