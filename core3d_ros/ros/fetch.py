"""What the map stream does not carry, fetched on demand from the mapping node that owns an
object: all of its voxels (``include_points``) and its best-view crop (``include_best_view``), through that node's
``<namespace>/core3d/mapping/get_object`` (the mapping node's own get_object when a query node
serves ``core3d/get_object``; see ``ros.query_namespace``).

A fetch never holds the query node's executor: the service callbacks that fetch are coroutines
that ``await`` one future, completed when every request has been answered or when
``query.fetch_timeout`` has passed (a timer thread), whichever comes first; the executor serves
other callbacks meanwhile. A request left unanswered is withdrawn and the object answered from
what the stream carries (its voxel sample; no image), with the reason in the response's message.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future

FETCH_SERVICE = "core3d/mapping/get_object"


def fetch_service_name(namespace: str) -> str:
    """The owning mapping node's get_object for a robot namespace ('' : the node beside us)."""
    ns = namespace.rstrip("/")
    return f"{ns}/{FETCH_SERVICE}" if ns else FETCH_SERVICE


@dataclass
class Fetched:
    """One object's answer from its mapping node: messages ready to put in a response."""

    points: Any = None  # sensor_msgs/PointCloud2, or None
    best_view: Any = None  # sensor_msgs/Image, or None


@dataclass
class FetchResult:
    got: dict[tuple[str, int], Fetched]
    failed: dict[tuple[str, int], str]  # why, per object

    def note(self, what: str, fallback: str = "from the map stream's voxel sample") -> str:
        """One sentence for a response message about the objects that fell back ('' if none)."""
        if not self.failed:
            return ""
        reasons = Counter(self.failed.values())
        why = "; ".join(f"{r} ({n})" if n > 1 else r for r, n in reasons.items())
        return f"{what} of {len(self.failed)} object(s) {fallback}: {why}"


class ObjectFetcher:
    """Fetches objects from their robots' mapping nodes; see the module docstring."""

    def __init__(self, node: Node, robots: list[str], timeout: float):
        from core3d.srv import GetObject  # the package's built interfaces

        self.node = node
        self.timeout = float(timeout)
        self._GetObject = GetObject
        group = ReentrantCallbackGroup()  # responses are taken while fetching callbacks wait
        self.clients = {r: node.create_client(GetObject, fetch_service_name(r), callback_group=group) for r in robots}
        self._lock = threading.Lock()
        self.counts: Counter = Counter()  # fetched, fetch_timeouts, fetch_unavailable, fetch_failed

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    async def fetch(self, wanted: list[tuple[str, int]], *, points: bool = True, best_view: bool = False) -> FetchResult:
        """Ask each object's mapping node for it; at most ``timeout`` seconds in all."""
        out = FetchResult({}, {})
        calls: dict[tuple[str, int], tuple[Any, Any]] = {}
        for robot, oid in dict.fromkeys(wanted):
            client = self.clients.get(robot)
            if client is None or not client.service_is_ready():
                out.failed[(robot, oid)] = f"{fetch_service_name(robot)} is not available"
                continue
            req = self._GetObject.Request(id=int(oid), include_points=bool(points))
            req.include_best_view = bool(best_view)
            calls[(robot, oid)] = (client, client.call_async(req))
        if calls:
            await self._all_or_timeout([f for _, f in calls.values()])
        for key, (client, f) in calls.items():
            if not f.done():
                client.remove_pending_request(f)
                f.cancel()
                out.failed[key] = f"{fetch_service_name(key[0])} did not answer within {self.timeout:g} s (query.fetch_timeout)"
                continue
            resp = f.result()
            if resp is None or not resp.success:
                msg = getattr(resp, "message", "") or "no answer"
                out.failed[key] = f"{fetch_service_name(key[0])} failed: {msg}"
                continue
            out.got[key] = Fetched(
                points=resp.points if points else None,
                best_view=resp.best_view if best_view and len(resp.best_view.data) else None,
            )
        timeouts = sum(1 for r in out.failed.values() if "did not answer" in r)
        self._count("fetched", len(out.got))
        self._count("fetch_timeouts", timeouts)
        self._count("fetch_failed", len(out.failed) - timeouts)
        return out

    async def _all_or_timeout(self, futures: list[Any]) -> None:
        """Return when every future is done or ``timeout`` has passed; the executor is free
        meanwhile (this coroutine waits on one future that a timer thread or the last answer
        completes)."""
        done: Future = Future(executor=self.node.executor)
        done.add_done_callback(lambda _: None)  # completing it wakes the executor
        lock = threading.Lock()

        def finish(_: Any = None, *, timed_out: bool = False) -> None:
            with lock:
                if not done.done() and (timed_out or all(f.done() for f in futures)):
                    done.set_result(True)

        timer = threading.Timer(self.timeout, finish, kwargs={"timed_out": True})
        timer.daemon = True
        timer.start()
        for f in futures:
            f.add_done_callback(finish)
        try:
            await done
        finally:
            timer.cancel()
