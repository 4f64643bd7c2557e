"""Approximate-time synchronisation of colour, depth, camera info and pose (TF look-ups: tf.py).

core3d always uses its own synchroniser, also where ``message_filters`` is installed, so that a
robot and this repository's tests behave the same and every lost colour frame is counted with a
reason (``no_pose``, ``stale_pose``, ``out_of_order``, ...), which message_filters cannot report.

Policy (reference topic = colour; every colour frame is decided exactly once):

- Each topic has a queue of at most ``queue_size`` messages, kept sorted by stamp. When a
  queue overflows, the oldest waiting colour frame is decided first with what is there (see
  below); then a partner queue drops its oldest message (counted in ``dropped``).
- The oldest waiting colour frame (stamp ``c``) is decided only when every partner topic is
  *decided*: its queue holds a message stamped at or after ``c``. Until then a closer partner
  may still arrive, so the frame waits, even when the partners queued so far lie within the
  slop (a camera that publishes colour first must not get the previous frame's depth and
  pose). Nothing that arrives later can make the set better: a later message only widens it.
- The set emitted is the one with the smallest spread (latest minus earliest stamp, colour
  included) among the queued partners within their tolerance of ``c`` (``slop``; for the
  pose topic ``max(slop, max_pose_age)``); ties go to the set closest to ``c``.
- The colour frame is rejected when a decided partner has no message within its tolerance,
  or when the colour queue overflows and the oldest frame still has no acceptable partner. The
  reason is ``no_<topic>`` for a failing partner that never had a message (preferred when
  several fail), else ``unsynced_<topic>`` (for the pose topic: ``no_pose`` / ``stale_pose``).
- A colour message stamped at or before the last decided colour frame is out of order
  (dropped, reason ``out_of_order``); a partner message older than the partner message last
  used is dropped and counted in ``out_of_order`` too. A used partner message stays queued, so
  a slower topic (a 10 Hz camera info beside a 30 Hz camera) serves every colour frame for
  which it is still the best match; messages older than it are discarded.

Latency: a frame is emitted when the first partner message at or after its stamp arrives (at
once for identical stamps, else up to one partner period later).
"""
from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np



@dataclass
class SyncedSet:
    stamp: float  # reference (colour) stamp, seconds
    messages: dict[str, Any]  # topic key -> message
    stamps: dict[str, float]  # topic key -> stamp of the chosen message


@dataclass
class Rejected:
    stamp: float  # reference stamp of the lost colour frame
    reason: str


@dataclass
class SyncStats:
    received: Counter = field(default_factory=Counter)  # per topic key
    emitted: int = 0
    rejected: Counter = field(default_factory=Counter)  # colour frames lost, per reason
    dropped: Counter = field(default_factory=Counter)  # partner messages dropped on overflow, per key
    out_of_order: Counter = field(default_factory=Counter)  # per topic key

    def copy(self) -> "SyncStats":
        return SyncStats(
            Counter(self.received), self.emitted, Counter(self.rejected), Counter(self.dropped), Counter(self.out_of_order)
        )


@dataclass(order=True)
class _Item:
    stamp: float
    seq: int
    msg: Any = field(compare=False)


class ApproximateTimeSync:
    """Thread-safe approximate-time synchroniser; see the module docstring for the policy.

    ``add(key, msg, stamp)`` returns the sets completed and the colour frames rejected by that
    message (also passed to ``on_set`` / ``on_reject`` when given; these run outside the lock,
    so with concurrent ``add`` calls their order across threads is not defined). Memory is
    bounded by ``queue_size`` messages per topic.
    """

    def __init__(
        self,
        keys: Sequence[str],
        *,
        slop: float,
        queue_size: int,
        reference: str | None = None,
        tolerances: dict[str, float] | None = None,
        reasons: dict[str, tuple[str, str]] | None = None,
        on_set: Callable[[SyncedSet], None] | None = None,
        on_reject: Callable[[Rejected], None] | None = None,
    ):
        if len(keys) < 1 or len(set(keys)) != len(keys):
            raise ValueError(f"sync needs distinct topic keys, got {list(keys)}")
        if not slop >= 0:
            raise ValueError(f"sync slop must be >= 0, got {slop}")
        if queue_size < 1:
            raise ValueError(f"sync queue size must be >= 1, got {queue_size}")
        self.keys = list(keys)
        self.reference = reference or self.keys[0]
        if self.reference not in self.keys:
            raise ValueError(f"reference {self.reference!r} is not one of {self.keys}")
        self.partners = [k for k in self.keys if k != self.reference]
        self.slop = float(slop)
        self.queue_size = int(queue_size)
        self.tolerances = {k: max(self.slop, float((tolerances or {}).get(k, self.slop))) for k in self.partners}
        self.reasons = {k: (reasons or {}).get(k, (f"no_{k}", f"unsynced_{k}")) for k in self.partners}
        self.on_set = on_set
        self.on_reject = on_reject
        self._queues: dict[str, list[_Item]] = {k: [] for k in self.keys}
        self._last_ref: float | None = None
        self._last_used: dict[str, float] = {}
        self._seen: set[str] = set()
        self._seq = 0
        self._lock = threading.Lock()
        self._stats = SyncStats()

    # ------------------------------------------------------------------ public

    def add(self, key: str, msg: Any, stamp: float) -> tuple[list[SyncedSet], list[Rejected]]:
        if key not in self._queues:
            raise KeyError(f"unknown sync topic key {key!r}; known: {self.keys}")
        stamp = float(stamp)
        sets: list[SyncedSet] = []
        rejects: list[Rejected] = []
        with self._lock:
            self._stats.received[key] += 1
            if not np.isfinite(stamp):
                self._stats.out_of_order[key] += 1
                if key == self.reference:
                    rejects.append(self._reject(stamp, "out_of_order"))
            elif key == self.reference and self._last_ref is not None and stamp <= self._last_ref:
                self._stats.out_of_order[key] += 1
                rejects.append(self._reject(stamp, "out_of_order"))
            elif key != self.reference and key in self._last_used and stamp < self._last_used[key]:
                self._stats.out_of_order[key] += 1
            else:
                self._insert(key, msg, stamp)
                self._seen.add(key)
                overflow = key != self.reference and len(self._queues[key]) > self.queue_size
                # A full partner queue first forces a decision on the oldest colour frame, so
                # evicting the partner's oldest message cannot cost that frame its match.
                self._match(sets, rejects, force=overflow)
                q = self._queues[key]
                while len(q) > self.queue_size:
                    q.pop(0)
                    self._stats.dropped[key] += 1
        for s in sets:
            if self.on_set is not None:
                self.on_set(s)
        for r in rejects:
            if self.on_reject is not None:
                self.on_reject(r)
        return sets, rejects

    def stats(self) -> SyncStats:
        with self._lock:
            return self._stats.copy()

    def queue_lengths(self) -> dict[str, int]:
        with self._lock:
            return {k: len(q) for k, q in self._queues.items()}

    def reset(self) -> None:
        """Forget queued messages and stamp history (e.g. after a time jump in bag replay)."""
        with self._lock:
            for q in self._queues.values():
                q.clear()
            self._last_ref = None
            self._last_used.clear()

    # ------------------------------------------------------------------ internals

    def _reject(self, stamp: float, reason: str) -> Rejected:
        self._stats.rejected[reason] += 1
        return Rejected(stamp, reason)

    def _insert(self, key: str, msg: Any, stamp: float) -> None:
        self._seq += 1
        bisect.insort(self._queues[key], _Item(stamp, self._seq, msg))

    def _candidates(self, key: str, c: float) -> list[_Item]:
        """Queued messages of ``key`` within its tolerance of ``c``, oldest first."""
        q = self._queues[key]
        tol = self.tolerances[key]
        stamps = [it.stamp for it in q]
        lo = bisect.bisect_left(stamps, c - tol)
        hi = bisect.bisect_right(stamps, c + tol)
        return q[lo:hi]

    @staticmethod
    def _smallest_spread(c: float, cands: dict[str, list[_Item]]) -> dict[str, _Item]:
        """The set (one candidate per partner) with the smallest spread, colour stamp included.

        The best set has some lowest stamp ``lo`` <= c; given ``lo``, each partner's best choice
        is its earliest candidate at or after ``lo``. Trying every candidate stamp <= c (and c)
        as ``lo`` therefore finds the optimum in O(candidates x partners x log). Ties go to the
        set closest to the colour frame.
        """
        lows = sorted({c, *(it.stamp for items in cands.values() for it in items if it.stamp <= c)})
        spread: float | None = None
        for lo in lows:
            choice: list[float] = []
            for items in cands.values():
                i = bisect.bisect_left([it.stamp for it in items], lo)
                if i == len(items):
                    break
                choice.append(items[i].stamp)
            else:
                s = max(c, *choice) - lo
                spread = s if spread is None else min(spread, s)
        if spread is None:
            return {}
        # Among the windows [lo, lo + spread] that hold c, each partner takes its candidate in
        # the window closest to the colour frame; ties between windows go to the closest set.
        best: float | None = None
        picks: dict[str, _Item] = {}
        eps = 1e-9
        for lo in lows:
            hi = lo + spread
            if c > hi + eps:
                continue
            choice = {}
            for key, items in cands.items():
                inside = [it for it in items if lo - eps <= it.stamp <= hi + eps]
                if not inside:
                    break
                choice[key] = min(inside, key=lambda it: (abs(it.stamp - c), -it.stamp))
            else:
                score = sum(abs(it.stamp - c) for it in choice.values())
                if best is None or score < best:
                    best, picks = score, choice
        return picks

    def _match(self, sets: list[SyncedSet], rejects: list[Rejected], force: bool = False) -> None:
        ref = self._queues[self.reference]
        while ref:
            head = ref[0]
            c = head.stamp
            forced = force or len(ref) > self.queue_size
            force = False
            cands: dict[str, list[_Item]] = {}
            failures: list[str] = []
            waiting = False
            for key in self.partners:
                q = self._queues[key]
                # decided: a message at or after c is queued. Any later message can only
                # widen a set (the first one at or after c dominates it), so nothing better
                # can still arrive.
                decided = bool(q) and q[-1].stamp >= c
                cands[key] = self._candidates(key, c)
                if not cands[key] and (decided or forced):
                    failures.append(key)
                elif not decided:
                    waiting = True
            # report a partner that never sent anything before one that is merely off in time
            never = [k for k in failures if k not in self._seen]
            failed = self._reason((never or failures)[0]) if failures else None
            if failed is None and waiting and not forced:
                return  # a closer partner may still arrive
            ref.pop(0)
            self._last_ref = c
            if failed is not None:
                rejects.append(self._reject(c, failed))
                continue
            picks = self._smallest_spread(c, cands)
            msgs = {self.reference: head.msg}
            stamps = {self.reference: c}
            for key, item in picks.items():
                msgs[key] = item.msg
                stamps[key] = item.stamp
                self._last_used[key] = item.stamp
                q = self._queues[key]
                while q and q[0].stamp < item.stamp:  # older partners can no longer be used
                    q.pop(0)
            self._stats.emitted += 1
            sets.append(SyncedSet(c, msgs, stamps))

    def _reason(self, key: str) -> str:
        missing, unsynced = self.reasons[key]
        return missing if key not in self._seen else unsynced


# --------------------------------------------------------------------------- pose checks
