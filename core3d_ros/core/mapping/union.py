"""Several robots' object tables served as one map (ROS-free).

Each robot's mapping node streams its own map (core/mapping/mirror.py keeps one mirror per
robot); the maps share one map frame. A :class:`MapUnion` holds every robot's objects and serves
their union: objects that two robots both mapped are merged with CORE-3D's balanced IoV test
(``core/fusion/association.balanced``: IoV(a, b) > gamma, IoV(b, a) > gamma,
|IoV(a, b) - IoV(b, a)| < delta) on the voxel samples the stream carries.

What the test compares (our choice): the two objects' stream samples quantised on a voxel grid.
When both samples hold all of their objects' voxels (objects up to ``ros.stream_voxel_sample``
voxels), the grid is the map's voxel size, and the IoVs are CORE-3D's exactly. A bigger object's
sample is every k-th of its voxels (k = voxels / sample), so two robots' samples of one surface
rarely hit the same voxels; the comparison grid then grows to ``ceil(2 sqrt(k))`` voxels, the
side of a patch of a surface that holds about four sample points, so that a covered cell is
found covered by either sample (98 % of the time for a plane) and the IoVs keep their meaning.

Incremental: an object is indexed by the cells of a coarse grid (``cell`` metres) that its
axis-aligned bounds cover; a changed object is tested only against other robots' objects whose
bounds overlap its own, found through that index; removing an object drops its merges and
re-groups only its former partners. Merged objects form groups (connected components of the
passing pairs); a group is served as its representative, the member with the most voxels (the
best observed; ties: the earlier robot in the list, then the lower id), which carries the
group's other members as ``merged``.

Ids: each robot numbers its objects itself, so the union serves object ``id`` of robot number
``i`` (of ``n``) as ``id * n + i``: unique, in each robot's id order, and unchanged with one
robot. ``origin`` maps a served id back to the robot, its own id and what was merged into it.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..fusion.association import balanced
from ..fusion.voxels import pack
from ..hierarchy.graph import SceneGraph
from ..objects import MapSnapshot, ObjectInfo

Key = tuple[int, int]  # (robot number, the robot's own object id)
# An object whose bounds cover more index cells than this (a wall or floor of a big building at a
# small ``cell``, or a box blown up by an outlier) is not put in the grid: it is kept in a short
# list that every change is checked against, and its own changes are checked against all
# objects, so that one such box cannot fill memory with cells.
MAX_INDEX_CELLS = 4096


@dataclass
class Origin:
    """Where a served object came from."""

    robot: str
    id: int  # the id in that robot's map
    merged: list[tuple[str, int]] = field(default_factory=list)  # (robot, id) merged into it


@dataclass(frozen=True)
class UnionView:
    """The union at one instant, consistent and never changed afterwards: what queries read."""

    snapshot: MapSnapshot  # the served objects, by served id
    origins: dict[int, Origin]  # served id -> where it came from
    groups: dict[tuple[str, int], Origin]  # (robot, its id) -> the served object holding it
    objects: dict[tuple[str, int], ObjectInfo]  # (robot, its id) -> the object, merged or not


@dataclass
class UnionStats:
    objects: int = 0  # served (after merging)
    per_robot: dict[str, int] = field(default_factory=dict)  # each robot's table size
    merged: int = 0  # objects served as part of another robot's object
    groups: int = 0  # served objects with at least one merged member
    pair_tests: int = 0  # balanced IoV tests run so far


def _bounds(obj: ObjectInfo) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of an object's oriented box."""
    b = obj.box
    half = np.abs(np.asarray(b.rotation, float)) @ (np.asarray(b.extent, float) / 2)
    c = np.asarray(b.center, float)
    return c - half, c + half


def _stride(obj: ObjectInfo) -> float:
    """Voxels per sample point (1: the sample is all of the object's voxels)."""
    n = max(1, len(obj.points))
    return max(1.0, float(obj.num_voxels) / n)


def compare_cell(a: ObjectInfo, b: ObjectInfo, voxel_size: float) -> float:
    """The grid (metres) on which the samples of ``a`` and ``b`` are compared (module docstring)."""
    k = max(_stride(a), _stride(b))
    return voxel_size if k <= 1.0 else voxel_size * math.ceil(2.0 * math.sqrt(k))


def sample_keys(obj: ObjectInfo, cell: float) -> np.ndarray:
    """Sorted distinct keys of the cells (side ``cell``) that ``obj``'s sample points fall in."""
    coords = np.floor(np.asarray(obj.points, np.float64).reshape(-1, 3) / cell).astype(np.int64)
    try:
        return np.unique(pack(coords))
    except ValueError:  # beyond the packable range (a map kilometres wide at 1 cm): rows instead
        rows = np.unique(coords, axis=0)
        return np.unique(rows.view([("", np.int64)] * 3).reshape(-1))


def iov_of_keys(ka: np.ndarray, kb: np.ndarray) -> tuple[float, float]:
    if len(ka) == 0 or len(kb) == 0:
        return 0.0, 0.0
    inter = len(np.intersect1d(ka, kb, assume_unique=True))
    return inter / len(ka), inter / len(kb)


def sample_iov(a: ObjectInfo, b: ObjectInfo, voxel_size: float) -> tuple[float, float]:
    """IoV(a, b) = |A ∩ B| / |A| and IoV(b, a) = |A ∩ B| / |B| of the two samples' cells."""
    cell = compare_cell(a, b, voxel_size)
    return iov_of_keys(sample_keys(a, cell), sample_keys(b, cell))


class MapUnion:
    """The union of several robots' object tables; see the module docstring. Thread-safe: one
    writer (the stream callbacks) and any number of readers."""

    def __init__(self, robots: Iterable[str], gamma: float = 0.5, delta: float = 0.3, cell: float = 1.0):
        self.robots = list(robots)
        if not self.robots or len(set(self.robots)) != len(self.robots):
            raise ValueError(f"robots must be distinct and at least one, got {self.robots!r}")
        self._index = {r: i for i, r in enumerate(self.robots)}
        self.gamma, self.delta, self.cell = float(gamma), float(delta), float(cell)
        self._lock = threading.Lock()
        self._objects: dict[Key, ObjectInfo] = {}  # each robot's objects (their own ids)
        self._served_copy: dict[Key, ObjectInfo] = {}  # the same with the served id
        self._voxel = {i: 0.025 for i in range(len(self.robots))}
        self._keys: dict[Key, dict[float, np.ndarray]] = {}  # sample cell keys per comparison grid
        self._cells: dict[Key, list[tuple[int, int, int]]] = {}
        self._grid: dict[tuple[int, int, int], set[Key]] = {}
        self._large: set[Key] = set()  # bounds over MAX_INDEX_CELLS cells: not in the grid
        self._bounds: dict[Key, tuple[np.ndarray, np.ndarray]] = {}
        self._edges: dict[Key, set[Key]] = {}
        self._rep: dict[Key, Key] = {}  # member -> its group's representative
        self._members: dict[Key, list[Key]] = {}  # representative -> the group (itself first)
        self._pair_tests = 0
        self._view: UnionView | None = None
        self._meta = {"stamp": 0.0, "frames": {}}

    # ------------------------------------------------------------------ ids

    def served_id(self, robot: str, oid: int) -> int:
        return int(oid) * len(self.robots) + self._index[robot]

    def _key_of(self, served: int) -> Key:
        n = len(self.robots)
        return (served % n, served // n)

    # ------------------------------------------------------------------ reading

    def view(self) -> UnionView:
        """The union as of the last change: built on the first call after a change (one pass over
        the objects), then handed out without waiting, also while a change is being applied."""
        v = self._view
        if v is not None:
            return v
        with self._lock:
            if self._view is None:
                self._view = self._build_view()
            return self._view

    def _build_view(self) -> UnionView:
        name = self.robots
        origins: dict[int, Origin] = {}
        groups: dict[tuple[str, int], Origin] = {}
        for rep, members in self._members.items():
            o = Origin(name[rep[0]], rep[1], [(name[r], i) for r, i in members if (r, i) != rep])
            origins[self.served_id(name[rep[0]], rep[1])] = o
            for r, i in members:
                groups[(name[r], i)] = o
        frames = self._meta["frames"]
        snap = MapSnapshot(
            objects=[self._served_copy[self._key_of(sid)] for sid in sorted(origins)],
            voxel_size=self._voxel[0], stamp=float(self._meta["stamp"]), frames=int(sum(frames.values())),
        )
        objects = {(name[r], i): o for (r, i), o in self._objects.items()}
        return UnionView(snap, origins, groups, objects)

    def snapshot(self) -> MapSnapshot:
        """The served objects (each group's representative, with its served id), by served id."""
        return self.view().snapshot

    def origin(self, served: int) -> Origin | None:
        """Robot, own id and merged members of a served object (None: not served)."""
        return self.view().origins.get(int(served))

    def get(self, robot: str, oid: int) -> ObjectInfo | None:
        """Robot ``robot``'s object ``oid`` (its own id; merged or not)."""
        return self.view().objects.get((robot, int(oid)))

    def group_of(self, robot: str, oid: int) -> Origin | None:
        """The served object that holds robot ``robot``'s object ``oid``."""
        return self.view().groups.get((robot, int(oid)))

    def stats(self) -> UnionStats:
        with self._lock:
            per = {r: 0 for r in self.robots}
            for r, _ in self._objects:
                per[self.robots[r]] += 1
            groups = sum(1 for m in self._members.values() if len(m) > 1)
            return UnionStats(
                objects=len(self._members), per_robot=per, merged=len(self._objects) - len(self._members),
                groups=groups, pair_tests=self._pair_tests,
            )

    # ------------------------------------------------------------------ writing

    def update(
        self,
        robot: str,
        changed: Iterable[ObjectInfo] = (),
        removed: Iterable[int] = (),
        *,
        full: bool = False,
        voxel_size: float | None = None,
        stamp: float | None = None,
        frames: int | None = None,
    ) -> None:
        """Apply one robot's change: ``changed`` objects (new or changed) and ``removed`` ids;
        ``full``: ``changed`` is the robot's whole table (objects not in it leave)."""
        r = self._index[robot]
        changed = list(changed)
        with self._lock:
            if voxel_size is not None and voxel_size > 0:
                self._voxel[r] = float(voxel_size)
            if stamp is not None:
                self._meta["stamp"] = max(float(self._meta["stamp"]), float(stamp))
            if frames is not None:
                self._meta["frames"][r] = int(frames)
            gone = set(int(i) for i in removed)
            if full:
                keep = {int(o.id) for o in changed}
                gone |= {i for rr, i in self._objects if rr == r and i not in keep}
            touched: set[Key] = set()
            for oid in gone:
                touched |= self._remove((r, oid))
            for obj in changed:
                touched |= self._put((r, int(obj.id)), obj)
            self._regroup(touched)
            self._view = None  # readers keep the last view until the next one is built

    # ------------------------------------------------------------------ internals (under the lock)

    def _grid_cells(self, lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int, int]] | None:
        """The index cells the bounds cover; None when more than MAX_INDEX_CELLS."""
        a = np.floor(lo / self.cell).astype(np.int64)
        b = np.floor(hi / self.cell).astype(np.int64)
        if float(np.prod((b - a + 1).astype(np.float64))) > MAX_INDEX_CELLS:
            return None
        return [(x, y, z) for x in range(a[0], b[0] + 1) for y in range(a[1], b[1] + 1) for z in range(a[2], b[2] + 1)]

    def _unindex(self, key: Key) -> None:
        self._large.discard(key)
        for c in self._cells.pop(key, ()):
            s = self._grid.get(c)
            if s is not None:
                s.discard(key)
                if not s:
                    del self._grid[c]
        self._bounds.pop(key, None)
        self._keys.pop(key, None)

    def _drop_edges(self, key: Key) -> set[Key]:
        partners = self._edges.pop(key, set())
        for p in partners:
            self._edges.get(p, set()).discard(key)
        return partners

    def _remove(self, key: Key) -> set[Key]:
        """Drop ``key``; returns the objects whose groups must be recomputed."""
        if key not in self._objects:
            return set()
        del self._objects[key]
        self._served_copy.pop(key, None)
        self._unindex(key)
        return {key} | self._drop_edges(key)

    def _put(self, key: Key, obj: ObjectInfo) -> set[Key]:
        """Store ``key`` and test it against the other robots' objects whose bounds overlap."""
        r, oid = key
        served = self.served_id(self.robots[r], oid)
        self._objects[key] = obj
        self._served_copy[key] = obj if served == oid else dataclasses.replace(obj, id=served)
        touched = {key} | self._drop_edges(key)
        self._unindex(key)
        lo, hi = _bounds(obj)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return touched  # served alone, never merged
        self._bounds[key] = (lo, hi)
        cells = self._grid_cells(lo, hi)
        candidates: set[Key] = set(self._large)
        if cells is None:
            self._large.add(key)
            candidates |= set(self._bounds)  # rare: checked against every object's bounds
        else:
            self._cells[key] = cells
            for c in cells:
                here = self._grid.setdefault(c, set())
                candidates |= here
                here.add(key)
        candidates.discard(key)
        for other in candidates:
            if other[0] == r:
                continue  # one robot's objects are its own mapper's business
            olo, ohi = self._bounds[other]
            if np.any(lo > ohi) or np.any(olo > hi):
                continue
            self._pair_tests += 1
            voxel = max(self._voxel[r], self._voxel[other[0]])
            cell = compare_cell(obj, self._objects[other], voxel)
            iov_ab, iov_ba = iov_of_keys(self._cell_keys(key, cell), self._cell_keys(other, cell))
            if balanced(iov_ab, iov_ba, self.gamma, self.delta):
                self._edges.setdefault(key, set()).add(other)
                self._edges.setdefault(other, set()).add(key)
                touched.add(other)
        return touched

    def _cell_keys(self, key: Key, cell: float) -> np.ndarray:
        per = self._keys.setdefault(key, {})
        if cell not in per:
            per[cell] = sample_keys(self._objects[key], cell)
        return per[cell]

    def _regroup(self, touched: set[Key]) -> None:
        """Recompute the groups (connected components of passing pairs) holding ``touched``.
        The old groups of the objects met are dissolved first; their members are grouped again
        by their edges only (a dropped merge splits a group)."""
        starts = deque(touched)
        seen: set[Key] = set()

        def dissolve(k: Key) -> None:
            old = self._rep.pop(k, None)
            if old is not None:
                for m in self._members.pop(old, ()):
                    self._rep.pop(m, None)
                    starts.append(m)

        for k in touched:
            dissolve(k)
        while starts:
            start = starts.popleft()
            if start in seen or start not in self._objects:
                continue
            group, todo = [], deque([start])
            seen.add(start)
            while todo:
                k = todo.popleft()
                dissolve(k)
                group.append(k)
                for p in self._edges.get(k, ()):
                    if p not in seen:
                        seen.add(p)
                        todo.append(p)
            rep = min(group, key=lambda k: (-self._objects[k].num_voxels, k[0], k[1]))
            self._members[rep] = [rep] + sorted(k for k in group if k != rep)
            for k in group:
                self._rep[k] = rep


def union_scene_graph(view: UnionView, graphs: dict[str, SceneGraph | None], robots: list[str]) -> SceneGraph | None:
    """The robots' scene graphs as one, on the union's served ids, for room-aware queries.

    Each robot segments its own floors and rooms; they are not merged (two robots that both saw
    the kitchen give two rooms labelled kitchen, each listing what its robot mapped there), so a
    room constraint holds for an object when it holds in its own robot's graph. Floor and room
    ids are numbered as object ids are (``id * n + i`` for robot ``i`` of ``n``); an object
    merged into another robot's object is listed as the object it is served as. A graph
    object per call: a query reads it without locks. None when no robot has a graph yet."""
    n = len(robots)
    have = [(i, r, graphs.get(r)) for i, r in enumerate(robots) if graphs.get(r) is not None]
    if not have:
        return None
    index = {r: i for i, r in enumerate(robots)}

    def served(robot: str, oids: list[int]) -> list[int]:  # what each object is served as
        return sorted({g.id * n + index[g.robot] for o in oids if (g := view.groups.get((robot, int(o)))) is not None})

    floors, rooms, notes = [], [], []
    for i, robot, g in have:
        floors += [dataclasses.replace(f, id=f.id * n + i, room_ids=[r * n + i for r in f.room_ids]) for f in g.floors]
        rooms += [
            dataclasses.replace(
                room, id=room.id * n + i, floor_id=room.floor_id * n + i,
                object_ids=served(robot, room.object_ids),
            )
            for room in g.rooms
        ]
        if g.note:
            notes.append(f"{robot}: {g.note}")
    first = have[0][2]
    return SceneGraph(
        up=first.up, up_source=first.up_source, note="; ".join(notes), version=sum(g.version for _, _, g in have),
        splits=sum(g.splits for _, _, g in have), merges=sum(g.merges for _, _, g in have), floors=floors, rooms=rooms,
    )
