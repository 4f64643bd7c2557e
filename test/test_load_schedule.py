"""The open-loop query schedule of ``core3d bench load`` (open_loop.run_open_loop and
open_loop.open_loop_stats), against fake servers in this process: no ROS needed.

Query k is due at t0 + k / qps whether or not the earlier ones were answered, and is timed
from then; a query not answered within the timeout counts at the timeout. A server stall of
S seconds then shows as latencies up to ~S for every query due during it, which a closed-loop
client timing from its own send (one query in flight) hides in a single slow query.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest

from core3d_ros.tools.bench import load
from core3d_ros.tools.bench.open_loop import QueryRecord, open_loop_stats, run_open_loop


class FakeServer:
    """Answers requests one at a time, in arrival order, ``service_s`` each; from ``stall_at``
    seconds after it starts it answers nothing for ``stall_s`` seconds (requests queue up).
    Requests whose index is in ``never`` get no answer at all."""

    def __init__(self, service_s: float = 0.002, stall_at: float = math.inf, stall_s: float = 0.0, never=()):
        self.service_s, self.never = service_s, set(never)
        self.t0 = time.monotonic()
        self.stall = (self.t0 + stall_at, self.t0 + stall_at + stall_s)
        self.requests: queue.Queue = queue.Queue()
        self.cancelled: list[Future] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send(self, k: int) -> Future:
        f: Future = Future()
        if k not in self.never:
            self.requests.put(f)
        return f

    def cancel(self, f: Future) -> None:
        self.cancelled.append(f)

    def _serve(self) -> None:
        while True:
            f = self.requests.get()
            if f is None:
                return
            now = time.monotonic()
            if self.stall[0] <= now < self.stall[1]:
                time.sleep(self.stall[1] - now)
            time.sleep(self.service_s)
            f.set_result(SimpleNamespace(success=True, message=""))

    def close(self) -> None:
        self.requests.put(None)
        self._thread.join(5.0)


def _run(server: FakeServer, qps: float, duration: float, **kw) -> list[QueryRecord]:
    stop = threading.Event()
    timer = threading.Timer(duration, stop.set)
    timer.start()
    try:
        return run_open_loop(server.send, qps, stop, cancel=server.cancel, **kw)
    finally:
        timer.cancel()
        server.close()


def test_stats_count_timeouts_at_the_timeout_and_time_from_the_schedule() -> None:
    recs = [
        QueryRecord(0.0, 0.0, 0.010, True),  # 10 ms
        QueryRecord(0.1, 0.1, 0.130, True),  # 30 ms
        QueryRecord(0.2, 0.25, 0.300, True),  # sent 50 ms late: 100 ms from schedule, 50 from send
        QueryRecord(0.3, 0.3, None),  # never answered: the timeout
        QueryRecord(0.4, None, None),  # never got a slot: the timeout, never sent
        QueryRecord(0.5, 0.5, 1.6),  # answered after the timeout (1 s): a timeout
        QueryRecord(0.6, 0.6, 0.62, False, "no map"),  # answered, not successful
        QueryRecord(5.0, 5.0, 5.001, True),  # outside the window
    ]
    s = open_loop_stats(recs, timeout=1.0, start=0.0, end=1.0)
    assert s["scheduled"] == 7 and s["sent"] == 6 and s["answered"] == 4
    assert s["timed_out"] == 3 and s["timed_out_never_sent"] == 1 and s["failed"] == 1
    assert s["failures"] == ["no map"]
    assert s["ms"]["n"] == 7 and s["ms"]["max"] == pytest.approx(1000.0)
    assert s["ms"]["p50"] == pytest.approx(100.0)  # 10 20 30 [100] 1000 1000 1000
    assert s["ms_from_send"]["n"] == 4 and s["ms_from_send"]["max"] == pytest.approx(50.0)
    # responses that arrived inside [0, 1] (the one at 1.6 is a timeout, not an answer)
    assert s["qps_achieved"] == pytest.approx(4 / 1.0)
    assert s["send_lag_ms"]["max"] == pytest.approx(50.0)
    empty = open_loop_stats([], timeout=1.0, start=0.0, end=2.0)
    assert empty["scheduled"] == 0 and empty["qps_achieved"] == 0.0 and math.isnan(empty["ms"]["p99"])


def test_queries_go_out_on_schedule_while_earlier_ones_are_unanswered() -> None:
    server = FakeServer(service_s=0.002, stall_at=0.0, stall_s=0.5)  # nothing answered for 0.5 s
    recs = _run(server, qps=40.0, duration=0.5, max_in_flight=64)
    t0 = recs[0].scheduled
    assert 15 <= len(recs) <= 22
    for k, r in enumerate(recs):
        assert r.scheduled == pytest.approx(t0 + k / 40.0)
        assert r.sent is not None and r.sent - r.scheduled < 0.15  # sent on time, not after the answer before
    assert all(r.answered is not None for r in recs)
    assert recs[0].answered - recs[0].scheduled > 0.3  # the first one waited for the stall


def test_a_stall_shows_in_open_loop_latencies_and_hides_in_closed_loop_ones() -> None:
    qps, stall_s = 50.0, 0.6
    # open loop: every query due during the stall waits for its end
    recs = _run(FakeServer(stall_at=0.4, stall_s=stall_s), qps, duration=1.6, max_in_flight=64)
    s = open_loop_stats(recs, 10.0, -math.inf, math.inf)
    slow = [r for r in recs if r.answered - r.scheduled > 0.2]
    assert s["timed_out"] == 0 and s["answered"] == len(recs)
    assert s["ms"]["max"] >= 0.7 * stall_s * 1e3  # up to ~S: the first query due in the stall
    assert len(slow) >= 8  # ~20 queries due in the first 0.4 s of the stall
    # sent on time, so the time from the send shows the same queueing
    assert sum(1 for r in recs if r.answered - r.sent > 0.2) >= 8

    # closed loop: one query in flight; its time from the send shows one slow query only
    closed = _run(FakeServer(stall_at=0.4, stall_s=stall_s), qps, duration=1.6, max_in_flight=1)
    c = open_loop_stats(closed, 10.0, -math.inf, math.inf)
    assert sum(1 for r in closed if r.answered - r.sent > 0.2) <= 2
    assert c["ms_from_send"]["p99"] < c["ms"]["p99"]
    # ... while the time from the schedule (what the bench reports) still shows the stall
    assert sum(1 for r in closed if r.answered - r.scheduled > 0.2) >= 8
    assert c["ms"]["max"] >= 0.7 * stall_s * 1e3
    assert c["send_lag_ms"]["max"] >= 0.5 * stall_s * 1e3  # the bound made the client late


def test_unanswered_queries_time_out_count_at_the_timeout_and_are_given_up() -> None:
    never = set(range(0, 100, 4))
    server = FakeServer(never=never)
    recs = _run(server, qps=50.0, duration=0.5, timeout=0.25)
    lost = [k for k, r in enumerate(recs) if r.answered is None]
    assert lost == [k for k in range(len(recs)) if k in never]
    assert len(server.cancelled) == len(lost)  # the client's pending requests are removed
    s = open_loop_stats(recs, 0.25, -math.inf, math.inf)
    assert s["timed_out"] == len(lost) and s["answered"] == len(recs) - len(lost)
    assert s["ms"]["n"] == len(recs) and s["ms"]["max"] == pytest.approx(250.0)
    assert s["ms_from_send"]["n"] == len(recs) - len(lost) and s["ms_from_send"]["max"] < 250.0


def test_a_full_in_flight_bound_delays_sends_but_not_the_clock_of_a_query() -> None:
    server = FakeServer(never=range(1000))  # a dead server: slots free only by timeouts
    recs = _run(server, qps=50.0, duration=0.5, timeout=0.2, max_in_flight=2)
    s = open_loop_stats(recs, 0.2, -math.inf, math.inf)
    assert s["answered"] == 0 and s["timed_out"] == len(recs) >= 20
    assert s["ms"]["max"] == pytest.approx(200.0) and s["ms"]["p50"] == pytest.approx(200.0)
    # query 2 waited for query 0's timeout (0.2 s after it was due): sent ~0.16 s late
    assert s["send_lag_ms"]["max"] >= 100.0
    for r in recs:  # a query is sent only while its own timeout still runs, or not at all
        assert r.sent is None or r.sent - r.scheduled < 0.2 + 0.05
    assert len(server.cancelled) == s["sent"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        run_open_loop(lambda k: Future(), 0.0, threading.Event())
    with pytest.raises(ValueError):
        run_open_loop(lambda k: Future(), 10.0, threading.Event(), max_in_flight=0)


def test_the_default_data_is_the_shared_7scenes_folder_beside_the_repository() -> None:
    repo = Path(__file__).resolve().parents[1]
    assert load.SHARED_7SCENES == repo.parent / "shared" / "data" / "7scenes-redkitchen"
