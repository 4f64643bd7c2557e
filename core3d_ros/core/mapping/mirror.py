"""A mirror of a mapping process's object table, kept from its versioned map stream.

The mapping node publishes, at each snapshot, the objects that changed and the ids that left
(a :class:`MapVersion` with ``full`` false), numbered 1, 2, 3, ... within a generation (its start
time); a full state (``full`` true) carries the whole table as of one sequence number. A
:class:`MapMirror` applies changes in sequence order and serves queries from a
:class:`MapSnapshot` of its table:

- a change whose seq follows the table's is applied;
- a gap in seq, a newer generation (a restarted mapper) or no table yet sets ``needs_state``:
  the caller fetches a full state and hands it to ``apply_state``; changes that arrive meanwhile
  wait in a bounded buffer and are applied after the state when they follow it;
- out of order (older seq), duplicated (same seq), an older (unknown) generation, another map's
  id, non-finite boxes or centroids, embeddings of another size than the table's, malformed
  voxel samples: counted by reason in ``stats().rejected``, never applied, the table unchanged.

ROS-free: ``ros/query_node.py`` converts messages to MapVersions and feeds them in. Nothing here
touches voxels beyond the bounded samples the stream carries; a snapshot is built on the first
query after a change (one pass over the objects, never over the map's voxels).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..objects import MapSnapshot, ObjectInfo


@dataclass
class StreamedObject(ObjectInfo):
    """An object as the map stream carries it: ``points`` / ``colors`` are a bounded sample of its
    voxels (enough for spatial relations); centroid, voxel count and mean colour are the mapping
    node's, over all its voxels."""

    full_centroid: np.ndarray = field(default_factory=lambda: np.zeros(3))
    full_num_voxels: int = 0
    full_mean_color: np.ndarray = field(default_factory=lambda: np.zeros(3))  # float RGB in [0, 1]

    @property
    def centroid(self) -> np.ndarray:  # type: ignore[override]
        return self.full_centroid

    @property
    def num_voxels(self) -> int:  # type: ignore[override]
        return int(self.full_num_voxels)

    @property
    def mean_color(self) -> np.ndarray:  # type: ignore[override]
        return self.full_mean_color


@dataclass
class MapVersion:
    """One message of the map stream, converted."""

    map_id: str
    generation: int
    seq: int
    full: bool
    stamp: float = 0.0
    voxel_size: float = 0.025
    frames: int = 0
    objects: list[ObjectInfo] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    viewpoint: np.ndarray | None = None  # 4x4 camera-to-world, the mapper's last pose


@dataclass
class TableChanges:
    """What changed in a mirror's table since the last ``take_changes``: ``full`` means the table
    was replaced (``objects`` is all of it); otherwise the objects added or changed, and the ids
    that left."""

    full: bool = False
    objects: dict[int, ObjectInfo] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return self.full or bool(self.objects) or bool(self.removed)


@dataclass
class MirrorStats:
    """Counters of a mirror; a copy."""

    map_id: str | None = None
    generation: int | None = None
    seq: int | None = None
    objects: int = 0
    applied: int = 0  # changes applied
    states: int = 0  # full states applied
    rejected: dict[str, int] = field(default_factory=dict)  # per reason, never applied
    resyncs: dict[str, int] = field(default_factory=dict)  # full states asked for, per reason
    pending: int = 0  # changes waiting for a full state
    age_s: float | None = None  # seconds since the table last changed (None: no table yet)
    needs_state: bool = False


class MapMirror:
    """The object table of one map, mirrored from its stream; thread-safe. See the module
    docstring. ``embedding_dim`` 0: the first embedding seen sets the size every other must have."""

    def __init__(self, embedding_dim: int = 0, max_pending: int = 256, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._dim = int(embedding_dim)
        self._max_pending = max(1, int(max_pending))
        self._table: dict[int, ObjectInfo] = {}
        self._map_id: str | None = None
        self._generation: int | None = None
        self._seq = 0
        self._meta = MapVersion("", 0, 0, True)  # stamp, voxel size, frames, viewpoint of the table
        self._pending: dict[tuple[int, int], tuple[int, MapVersion]] = {}  # (gen, seq) -> (arrival, change)
        self._arrivals = 0  # changes offered so far: marks when a state was asked for
        self._needs_state = True
        self._resyncs: dict[str, int] = {"first": 1}
        self._rejected: dict[str, int] = {}
        self._applied = 0
        self._states = 0
        self._changed_at: float | None = None
        self._snapshot: MapSnapshot | None = None
        self._changes = TableChanges()

    # ------------------------------------------------------------------ reading

    @property
    def has_table(self) -> bool:
        """True once the first full state has been applied."""
        with self._lock:
            return self._generation is not None

    @property
    def needs_state(self) -> bool:
        with self._lock:
            return self._needs_state

    def snapshot(self) -> MapSnapshot | None:
        """The table as a MapSnapshot (objects by id); None until the first full state."""
        with self._lock:
            if self._generation is None:
                return None
            if self._snapshot is None:
                m = self._meta
                objects = [self._table[k] for k in sorted(self._table)]
                self._snapshot = MapSnapshot(objects=objects, voxel_size=m.voxel_size, stamp=m.stamp, frames=m.frames)
            return self._snapshot

    def take_changes(self) -> TableChanges:
        """What changed since the last call (a union of several mirrors follows them by it)."""
        with self._lock:
            out, self._changes = self._changes, TableChanges()
            return out

    @property
    def meta(self) -> MapVersion:
        """The version the table is at (map id, seq, stamp, voxel size, frames, viewpoint)."""
        with self._lock:
            return self._meta

    def mark(self) -> int:
        """Call when asking for a full state; hand the value to ``apply_state``. A change that
        arrived before the request and is newer than the state it brought cannot have come from
        that map's publisher (a forgery or a stray): it is dropped, counted ``ahead_of_state``,
        instead of holding the mirror in a loop of state requests."""
        with self._lock:
            return self._arrivals

    @property
    def viewpoint(self) -> np.ndarray | None:
        with self._lock:
            return self._meta.viewpoint

    def stats(self) -> MirrorStats:
        with self._lock:
            return MirrorStats(
                map_id=self._map_id,
                generation=self._generation,
                seq=self._seq if self._generation is not None else None,
                objects=len(self._table),
                applied=self._applied,
                states=self._states,
                rejected=dict(self._rejected),
                resyncs=dict(self._resyncs),
                pending=len(self._pending),
                age_s=None if self._changed_at is None else max(0.0, self._clock() - self._changed_at),
                needs_state=self._needs_state,
            )

    # ------------------------------------------------------------------ writing

    def offer(self, v: MapVersion) -> str:
        """Take one message of the stream. Returns ``applied``, ``waiting`` (buffered until a
        full state: see ``needs_state``) or the reason it was rejected."""
        if v.full:
            return self.apply_state(v)
        with self._lock:
            self._arrivals += 1
            bad = self._check(v)
            if bad:
                return self._reject(bad)
            if self._generation is None:
                return self._wait(v, None)
            if v.generation < self._generation:
                return self._reject("unknown_generation")
            if v.generation > self._generation:
                return self._wait(v, "new_generation")
            if v.seq == self._seq or (int(v.generation), int(v.seq)) in self._pending:
                return self._reject("duplicate")
            if v.seq < self._seq:
                return self._reject("out_of_order")
            if v.seq > self._seq + 1:
                return self._wait(v, "gap")
            self._apply(v)
            self._drain()
            return "applied"

    def apply_state(self, v: MapVersion, mark: int | None = None) -> str:
        """Take a full state (``mark``: ``mark()``'s value when it was asked for). Returns
        ``applied``, ``stale`` (the table is as new or newer: ignored) or the reason it was
        rejected."""
        with self._lock:
            bad = self._check(v)
            if bad:
                return self._reject(bad)
            if self._generation is not None and v.generation < self._generation:
                return self._reject("unknown_generation")
            if mark is not None:
                for key, (arrival, _) in list(self._pending.items()):
                    if arrival <= mark and key > (int(v.generation), int(v.seq)):
                        del self._pending[key]
                        self._reject("ahead_of_state")
            if self._generation is not None and v.generation == self._generation and v.seq <= self._seq:
                self._drain()
                self._needs_state = self._gap_left()
                return "stale"
            self._table = {int(o.id): o for o in v.objects}
            self._changes = TableChanges(full=True, objects=dict(self._table))
            self._map_id, self._generation, self._seq = v.map_id, int(v.generation), int(v.seq)
            self._meta = v
            self._states += 1
            self._touch()
            self._needs_state = False
            self._drain()
            return "applied"

    # ------------------------------------------------------------------ internals (under the lock)

    def _reject(self, reason: str) -> str:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        return reason

    def _wait(self, v: MapVersion, reason: str | None) -> str:
        if len(self._pending) >= self._max_pending:
            self._pending.pop(min(self._pending))
            self._rejected["pending_overflow"] = self._rejected.get("pending_overflow", 0) + 1
        self._pending[(int(v.generation), int(v.seq))] = (self._arrivals, v)
        if reason is not None and not self._needs_state:
            self._resyncs[reason] = self._resyncs.get(reason, 0) + 1
        self._needs_state = True
        return "waiting"

    def _check(self, v: MapVersion) -> str:
        """The reason ``v`` must not be applied, or ''."""
        if self._map_id is not None and v.map_id != self._map_id:
            return "unknown_map"
        if v.seq < 0 or v.generation < 0:
            return "malformed"
        dim = self._dim
        for o in v.objects:
            box = o.box
            if not (
                np.all(np.isfinite(box.center)) and np.all(np.isfinite(box.rotation))
                and np.all(np.isfinite(box.extent)) and np.all(np.isfinite(np.asarray(o.centroid, float)))
            ):
                return "nan_box"
            pts = np.asarray(o.points)
            if pts.ndim != 2 or pts.shape[1] != 3 or len(np.asarray(o.colors)) != len(pts) or not np.all(np.isfinite(pts)):
                return "malformed_sample"
            if o.embedding is not None:
                e = np.asarray(o.embedding)
                n = int(e.shape[0]) if e.ndim == 1 else -1
                if n <= 0 or (dim and n != dim) or not np.all(np.isfinite(e)):
                    return "embedding_size" if n != dim else "nan_embedding"
                dim = n
        if dim and not self._dim:
            self._dim = dim  # the first embedding seen fixes the size
        return ""

    def _apply(self, v: MapVersion) -> None:
        ch = self._changes
        for o in v.objects:
            self._table[int(o.id)] = o
            ch.objects[int(o.id)] = o
            ch.removed.discard(int(o.id))
        for oid in v.removed:
            self._table.pop(int(oid), None)
            if not ch.full:  # a full change lists the whole table: what left is simply not in it
                ch.removed.add(int(oid))
            ch.objects.pop(int(oid), None)
        self._seq = int(v.seq)
        self._meta = v
        self._applied += 1
        self._touch()

    def _touch(self) -> None:
        self._snapshot = None
        self._changed_at = self._clock()

    def _drain(self) -> None:
        """Apply the buffered changes that follow the table; drop those it already covers."""
        for key in sorted(self._pending):
            gen, seq = key
            if gen < self._generation or (gen == self._generation and seq <= self._seq):
                del self._pending[key]  # covered by the state (or older): nothing to apply
            elif gen == self._generation and seq == self._seq + 1:
                self._apply(self._pending.pop(key)[1])
        if self._gap_left() and not self._needs_state:
            self._resyncs["gap"] = self._resyncs.get("gap", 0) + 1
            self._needs_state = True

    def _gap_left(self) -> bool:
        return bool(self._pending)
