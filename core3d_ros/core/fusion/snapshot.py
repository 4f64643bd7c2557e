"""The map read out, a part of :class:`.object_map.ObjectMap`. A snapshot assigns each voxel to
its owner, so reported objects partition the map's voxels.

Per-object summaries are kept up to date by what changed, not rebuilt from each object's voxels.
The map marks a row whenever its owner or its colour changes (``_mark_rows``, called where
ownership changes, ``_update_owner`` and the clearing of seen-through voxels, and where colours
are blended, the vote); each row is marked once until the next snapshot. A snapshot takes the
marked rows and applies them to the summaries of the objects that lost, kept or gained them:

- per object, its rows with their voxel centres and colours in dense arrays (a row leaves by
  moving the last row into its place; it joins at the end), so the snapshot's points and colours
  are one copy of those arrays, with no sort, gather or ownership test;
- exact integer sums of voxel coordinates and colours (centroid and mean colour);
- the outline that decides the gravity-aligned box: the convex hull of the ground projection
  and the range along up (:mod:`.outline`), so the box equals a full fit's and costs the
  object only when a hull vertex or an end of the up range loses its last point.

So the part of a snapshot that reads the map (``begin_snapshot``, under the fusion lock) costs
the rows that changed; the part that builds boxes, labels and copies (``finish_snapshot``)
runs outside it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..objects import MapSnapshot, ObjectInfo, OrientedBox
from .outline import Outline, ground_axes
from .voxels import unpack

@dataclasses.dataclass
class SummaryInfo(ObjectInfo):
    """An ObjectInfo whose centroid and mean colour come from its summary's running sums (for
    the points and colours it was made with: a copy with other ones computes them)."""

    summary_centroid: np.ndarray | None = None
    summary_mean_color: np.ndarray | None = None
    summary_of: tuple | None = None  # (points, colors) the two values describe

    def _summarised(self) -> bool:
        return self.summary_of is not None and self.summary_of[0] is self.points and self.summary_of[1] is self.colors

    @property
    def centroid(self) -> np.ndarray:
        return self.summary_centroid if self._summarised() else ObjectInfo.centroid.fget(self)

    @property
    def mean_color(self) -> np.ndarray:
        return self.summary_mean_color if self._summarised() else ObjectInfo.mean_color.fget(self)


class _Summary:
    """What a snapshot reports of one object's voxels, kept by change: its rows with their
    voxel centres and colours in dense arrays (a row leaves by moving the last row into its
    place; it joins at the end), exact sums of voxel coordinates and colours, and the outline
    of its gravity-aligned box (:class:`.outline.Outline`, for the up vector ``view``; without
    an up vector, principal axes, which every point moves: a changed object is fitted in full).
    """

    __slots__ = ("n", "rows", "pts", "cols", "key_sum", "col_sum", "view", "outline", "changed", "fits", "fit_points", "box_cache")

    def __init__(self):
        self.n = 0
        self.rows = np.empty(16, np.int32)  # map rows (max_voxels < 2**31)
        self.pts = np.empty((16, 3), np.float32)
        self.cols = np.empty((16, 3), np.uint8)
        self.key_sum = np.zeros(3, np.int64)  # sum of the voxel coordinates (exact)
        self.col_sum = np.zeros(3, np.int64)  # sum of the reported (uint8) colours (exact)
        self.view = None  # the up vector (tuple) of ``outline``
        self.outline: Outline | None = None
        self.changed = True
        self.fits = 0  # full fits without an up vector
        self.fit_points = 0
        self.box_cache: OrientedBox | None = None

    def nbytes(self) -> int:
        grid = self.outline.grid.nbytes if self.outline is not None else 0
        return self.rows.nbytes + self.pts.nbytes + self.cols.nbytes + grid

    @property
    def passes(self) -> int:
        """Passes over all the object's points for its box so far."""
        return self.fits + (self.outline.passes if self.outline is not None else 0)

    @property
    def scanned(self) -> int:
        """Points those passes read (full fits counted at the object's size then)."""
        return self.fit_points + (self.outline.scanned if self.outline is not None else 0)

    def _reserve(self, need: int) -> None:
        cap = len(self.rows)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name in ("rows", "pts", "cols"):
            a = getattr(self, name)
            b = np.empty((new,) + a.shape[1:], a.dtype)
            b[: self.n] = a[: self.n]
            setattr(self, name, b)

    def add(self, rows: np.ndarray, coords: np.ndarray, pts: np.ndarray, cols: np.ndarray, pos_of_row: np.ndarray) -> None:
        """Append rows (not in the summary) with their voxel coordinates, centres and colours."""
        k = len(rows)
        self._reserve(self.n + k)
        s = slice(self.n, self.n + k)
        self.rows[s], self.pts[s], self.cols[s] = rows, pts, cols
        pos_of_row[rows] = np.arange(self.n, self.n + k)
        self.n += k
        self.key_sum += coords.sum(axis=0)
        self.col_sum += cols.sum(axis=0, dtype=np.int64)
        self.changed = True
        if self.outline is not None:
            self.outline.add(pts)

    def remove(self, pos: np.ndarray, coords: np.ndarray, pos_of_row: np.ndarray) -> None:
        """Remove the rows at positions ``pos`` (distinct) with their voxel coordinates: the
        last rows move into the holes."""
        k = len(pos)
        if self.outline is not None:
            self.outline.remove(self.pts[pos])
        self.key_sum -= coords.sum(axis=0)
        self.col_sum -= self.cols[pos].sum(axis=0, dtype=np.int64)
        keep = self.n - k
        holes = pos[pos < keep]
        in_tail = np.zeros(k, bool)
        in_tail[pos[pos >= keep] - keep] = True
        movers = np.arange(keep, self.n)[~in_tail]
        self.rows[holes], self.pts[holes], self.cols[holes] = self.rows[movers], self.pts[movers], self.cols[movers]
        pos_of_row[self.rows[holes]] = holes
        self.n = keep
        self.changed = True

    def recolour(self, pos: np.ndarray, cols: np.ndarray) -> None:
        self.col_sum += cols.sum(axis=0, dtype=np.int64) - self.cols[pos].sum(axis=0, dtype=np.int64)
        self.cols[pos] = cols

    def box(self, axes, view, voxel: float) -> OrientedBox:
        """The box (outside the fusion lock; ``axes``: ``ground_axes(up)``, None without up)."""
        if not self.changed and self.box_cache is not None and self.view == view:
            return self.box_cache
        pts = self.pts[: self.n]
        self.changed = False
        if self.view != view or self.outline is None and axes is not None:
            self.view = view
            self.outline = Outline(axes, voxel) if axes is not None else None
        if self.outline is None:
            self.fits += 1
            self.fit_points += len(pts)
            self.box_cache = OrientedBox.from_points(pts, up=None, min_extent=voxel)
        else:
            self.box_cache = self.outline.box(pts, voxel)
        return self.box_cache



def _by_object(rows: np.ndarray, by: np.ndarray, sel: np.ndarray):
    """(object id, its rows, their positions in ``rows``) for the selected ``rows``, grouped by
    ``by`` (one sort, whatever the number of objects)."""
    r, o = rows[sel], by[sel]
    order = np.argsort(o)
    r, o = r[order], o[order]
    starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]]) if len(o) else np.zeros(0, np.int64)
    ends = np.append(starts[1:], len(o))
    idx = np.flatnonzero(sel)[order]
    for s, e in zip(starts.tolist(), ends.tolist()):
        yield int(o[s]), r[s:e], idx[s:e]

class Snapshots:
    """Snapshots and instance voxels (a part of :class:`.object_map.ObjectMap`)."""

    def _clear_snapshots(self) -> None:
        """Snapshot state of an empty map (called by ``ObjectMap.clear``)."""
        self._dirty: set[int] = set()  # objects changed since the last snapshot
        self._infos: dict[int, ObjectInfo] = {}
        self._snapshot: MapSnapshot | None = None
        self._snapshot_key = None
        self._summaries: dict[int, _Summary] = {}
        self._marked_rows: list[np.ndarray] = []  # rows whose owner or colour changed, once each
        self._mark = np.zeros(0, bool)  # per row: in _marked_rows
        self._sum_owner = np.zeros(0, np.int32)  # per row: the object whose summary holds it (-1)
        self._sum_pos = np.zeros(0, np.int32)  # per row: its position in that summary
        self.box_passes = 0  # passes over an object's points for its box, and the points read
        self.box_pass_points = 0

    def _mark_rows(self, rows: np.ndarray) -> None:
        """Note rows whose owner or colour changed (the hook of storage and integration)."""
        if len(rows) == 0:
            return
        rows = np.asarray(rows, np.int64)
        need = int(rows.max()) + 1
        if len(self._mark) < need:  # the rows in use, doubling (never the storage's whole reservation)
            n = len(self._mark)
            cap = max(need, 2 * n, 1 << 15)
            self._mark = np.concatenate([self._mark, np.zeros(cap - n, bool)])
            self._sum_owner = np.concatenate([self._sum_owner, np.full(cap - n, -1, np.int32)])
            self._sum_pos = np.concatenate([self._sum_pos, np.zeros(cap - n, np.int32)])
        new = rows[~self._mark[rows]]
        if len(new):
            self._mark[new] = True
            self._marked_rows.append(new)

    def _unsummarise(self, rows: np.ndarray) -> None:
        """Rows about to be released (storage.py) leave their objects' summaries now, while their
        keys are still theirs: a released row may come back as another voxel before the next
        snapshot. Costs the rows given."""
        rows = rows[rows < len(self._sum_owner)]
        old = self._sum_owner[rows]
        held = old >= 0
        if not held.any():
            return
        for oid, r, _ in _by_object(rows, old, held):
            s = self._summaries[oid]
            s.remove(self._sum_pos[r], unpack(self.keys[r]), self._sum_pos)
            if s.n == 0:
                del self._summaries[oid]
            self._dirty.add(oid)
        self._sum_owner[rows[held]] = -1

    def summary_bytes(self) -> int:
        """Memory of the snapshot summaries (per-object arrays and per-row bookkeeping)."""
        return int(sum(s.nbytes() for s in self._summaries.values()) + self._mark.nbytes + self._sum_owner.nbytes + self._sum_pos.nbytes)

    def instance_voxels(self, min_observations: int | None = None) -> dict[int, np.ndarray]:
        """Object id -> sorted voxel keys of the voxels it owns (the map's partition).
        Reads the whole map: for evaluation and export, not for per-frame use."""
        min_obs = self.cfg.min_object_observations if min_observations is None else min_observations
        own = self.owner[: self._n]
        order = np.argsort(own, kind="stable")
        sorted_own = own[order]
        ids, starts = np.unique(sorted_own, return_index=True)
        ends = np.append(starts[1:], len(order))
        out = {}
        for oid, s, e in zip(ids.tolist(), starts.tolist(), ends.tolist()):
            if oid < 0 or e - s < self.cfg.min_segment_voxels:
                continue
            state = self.objects.get(oid)
            if state is None or state.num_observations < min_obs:
                continue
            out[oid] = np.sort(self.keys[order[s:e]])
        return out

    def _apply_marked(self) -> set[int]:
        """Apply the marked rows to the summaries (under the fusion lock; costs those rows).
        Returns the objects whose summaries changed."""
        if not self._marked_rows:
            return set()
        rows = np.concatenate(self._marked_rows)  # distinct: a row is marked once
        self._marked_rows = []
        self._mark[rows] = False
        old = self._sum_owner[rows].astype(np.int64)
        new = self.owner[rows].astype(np.int64)
        cols = np.clip(self.colors[rows], 0, 255).astype(np.uint8)
        changed: set[int] = set()
        voxel = self.voxel_size

        # Rows that stay with their object: only their colour can have changed.
        for oid, r, i in _by_object(rows, old, (old == new) & (old >= 0)):
            self._summaries[oid].recolour(self._sum_pos[r], cols[i])
            changed.add(oid)
        # Rows that leave an object, then rows that join one.
        for oid, r, _ in _by_object(rows, old, (old != new) & (old >= 0)):
            self._summaries[oid].remove(self._sum_pos[r], unpack(self.keys[r]), self._sum_pos)
            changed.add(oid)
        for oid, r, i in _by_object(rows, new, (old != new) & (new >= 0)):
            s = self._summaries.get(oid)
            if s is None:
                s = self._summaries[oid] = _Summary()
            coords = unpack(self.keys[r])
            s.add(r, coords, ((coords + 0.5) * voxel).astype(np.float32), cols[i], self._sum_pos)
            changed.add(oid)
        self._sum_owner[rows] = new
        for oid in changed:
            if self._summaries[oid].n == 0:
                del self._summaries[oid]
        return changed

    def _info(self, oid: int, st, s: _Summary, labeler, axes, view, relabel: bool) -> ObjectInfo:
        voxel = self.voxel_size
        emb = st.embedding
        prev = self._infos.get(oid)
        if relabel or prev is None:
            label, score = labeler(emb) if (labeler is not None and emb is not None) else ("", 0.0)
        else:
            label, score = prev.label, prev.label_score
        n = s.n
        points, colors = s.pts[:n].copy(), s.cols[:n].copy()
        passes, scanned = s.passes, s.scanned
        box = s.box(axes, view, voxel)
        self.box_passes += s.passes - passes
        self.box_pass_points += s.scanned - scanned
        return SummaryInfo(
            id=oid,
            points=points,
            colors=colors,
            box=box,
            num_observations=st.num_observations,
            first_seen=st.first_seen,
            last_seen=st.last_seen,
            embedding=emb,
            label=label,
            label_score=float(score),
            best_view=st.best_view,
            moved_from=None if st.moved_from is None else np.asarray(st.moved_from, np.float64).copy(),
            moved_at=float(st.moved_at),
            summary_centroid=((s.key_sum / n + 0.5) * voxel).astype(np.float32),
            summary_mean_color=s.col_sum / (n * 255.0),
            summary_of=(points, colors),
        )

    def snapshot(self, stamp: float = 0.0, labeler=None, up: np.ndarray | None = None) -> MapSnapshot:
        """Consistent copy of the objects. Cached until the map changes; then only the objects
        changed since the last snapshot are rebuilt. (One thread; see begin/finish_snapshot for
        building outside a lock that fusion holds.)"""
        return self.finish_snapshot(self.begin_snapshot(labeler, up), stamp, labeler, up)

    def begin_snapshot(self, labeler=None, up: np.ndarray | None = None):
        """The part of a snapshot that reads the map (call it under the fusion lock): the marked
        rows applied to the summaries, and copies of the states of the objects changed since the
        last snapshot. Its cost follows the change, not the map."""
        up_key = None if up is None else tuple(np.asarray(up, float).tolist())
        key = (self.version, up_key, id(labeler))
        if self._snapshot is not None and self._snapshot_key == key:
            return key, None, self.frames, set()
        geometry = self._apply_marked()
        relabel = set(self._dirty)
        if self._snapshot_key is None or self._snapshot_key[1:] != key[1:]:
            relabel = set(self.objects) | set(self._infos)  # a different view: rebuild all
        self._dirty = set()
        minimum = self.cfg.min_object_observations
        states = {}
        for oid in relabel | geometry:
            st = self.objects.get(oid)
            s = self._summaries.get(oid)
            ok = st is not None and s is not None and st.num_observations >= minimum and s.n >= self.cfg.min_segment_voxels
            states[oid] = (dataclasses.replace(st), s) if ok else None
        return key, states, self.frames, relabel

    def finish_snapshot(self, parts, stamp: float = 0.0, labeler=None, up: np.ndarray | None = None) -> MapSnapshot:
        """The rest (boxes, labels, copies of the summaries' arrays), from ``begin_snapshot``'s
        result only: needs no lock, as long as one thread builds snapshots at a time."""
        key, states, frames, relabel = parts
        if states is None:
            return self._snapshot
        axes = ground_axes(up) if up is not None else None
        for oid, r in states.items():
            if r is None:
                self._infos.pop(oid, None)
            else:
                self._infos[oid] = self._info(oid, r[0], r[1], labeler, axes, key[1], oid in relabel)
        objects = [self._infos[o] for o in sorted(self._infos)]
        self._snapshot = MapSnapshot(objects=objects, voxel_size=self.voxel_size, stamp=stamp, frames=frames)
        self._snapshot_key = key
        return self._snapshot
