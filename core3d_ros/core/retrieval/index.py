"""The arrays a query works on, derived once per map snapshot (ids, labels, embeddings, boxes,
colours, a KD-tree on demand); cached by QueryEngine.index, keyed by the snapshot."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..objects import MapSnapshot, ObjectInfo
from .relations import Geometry, make_view


def _as_vector(e: Any) -> np.ndarray | None:
    """An embedding as a 1-D array, or None when missing or malformed."""
    if e is None:
        return None
    if not isinstance(e, np.ndarray):
        try:
            e = np.asarray(e, dtype=np.float32)
        except (TypeError, ValueError):
            return None
    if e.ndim != 1 or e.shape[0] == 0:
        return None
    return e


class SnapshotIndex:
    """Arrays derived once from a snapshot: ids, labels, embeddings, geometry, colours."""

    def __init__(self, snapshot: MapSnapshot, up: list[float]):
        self.objects: tuple[ObjectInfo, ...] = tuple(snapshot.objects)
        n = len(self.objects)
        self.ids = np.array([int(o.id) for o in self.objects], dtype=np.int64)
        self.labels = [str(o.label or "") for o in self.objects]
        self.by_label: dict[str, np.ndarray] = {}
        tmp: dict[str, list[int]] = {}
        for i, lab in enumerate(self.labels):
            if lab:
                tmp.setdefault(lab.strip().lower(), []).append(i)
        self.by_label = {k: np.array(v, dtype=np.int64) for k, v in tmp.items()}
        self.geometry = Geometry(self.objects, up, pad=max(float(snapshot.voxel_size), 0.0) / 2)
        # embeddings: the most common dimension wins; others count as missing
        embs = [_as_vector(o.embedding) for o in self.objects]
        dims: dict[int, int] = {}
        for e in embs:
            if e is not None:
                dims[e.shape[0]] = dims.get(e.shape[0], 0) + 1
        self.dim = max(dims, key=dims.get) if dims else 0
        zero = np.zeros(self.dim, dtype=np.float32)
        has = np.array([e is not None and e.shape[0] == self.dim for e in embs], dtype=bool)
        if self.dim and n:
            self.emb = np.stack([e if h else zero for e, h in zip(embs, has)]).astype(np.float32, copy=False)
            norms = np.linalg.norm(self.emb, axis=1)
            ok = has & np.isfinite(norms) & (norms > 1e-8)
            scale = np.where(ok, 1.0 / np.where(ok, norms, 1.0), 0.0).astype(np.float32)
            self.emb *= scale[:, None]  # unit rows; missing / invalid rows become zero
            self.has_emb = ok
        else:
            self.emb = np.zeros((n, self.dim), dtype=np.float32)
            self.has_emb = np.zeros(n, dtype=bool)
        # default observer (see relations.make_view), fixed per snapshot
        self.default_view = make_view(None, self.geometry.up, self.geometry.box_center)
        self._colors = np.full((n, 3), np.nan)
        self._rows: dict[int, int] | None = None  # object id -> row, built on first use
        self._tree: Any = None  # KD-tree over box centres, built on first use
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.objects)

    def mean_colors(self, idx: np.ndarray) -> np.ndarray:
        todo = idx[np.isnan(self._colors[idx, 0])]
        if len(todo):
            with self.lock:
                for i in todo:  # an object's own mean (a streamed object carries it; its colours are a sample)
                    self._colors[i] = np.asarray(self.objects[i].mean_color, dtype=np.float64)
        return self._colors[idx]

    def rows_of(self, object_ids) -> np.ndarray:
        """Sorted rows of the given object ids (ids not in the snapshot are skipped)."""
        if self._rows is None:
            with self.lock:
                if self._rows is None:
                    self._rows = {int(i): r for r, i in enumerate(self.ids.tolist())}
        rows = self._rows
        return np.array(sorted(rows[i] for i in object_ids if i in rows), dtype=np.int64)

    def carry(self, prev: "SnapshotIndex") -> None:
        """Per-object values ``prev`` derived already (refined geometry, mean colours), for the
        objects both indices hold: a map version shares its unchanged objects with the last one
        (the same ObjectInfo), so a new version costs its changed objects, not another pass over
        every object's points by the next queries. Costs one look-up per object."""
        where = {id(o): j for j, o in enumerate(prev.objects)}  # prev holds them: ids are unique
        pairs = [(i, where[id(o)]) for i, o in enumerate(self.objects) if id(o) in where]
        if not pairs:
            return
        here, there = np.array(pairs, dtype=np.int64).T
        with prev.lock:
            self.geometry.carry(prev.geometry, here, there)
            self._colors[here] = prev._colors[there]

    def neighbours(self, sel: np.ndarray, radius: float) -> np.ndarray:
        """Objects whose box centre lies within ``radius`` of an object in ``sel`` (unique, in the
        order of the first ``sel`` object they are near)."""
        if self._tree is None:
            with self.lock:
                if self._tree is None:
                    from scipy.spatial import cKDTree

                    self._tree = cKDTree(self.geometry.box_center)
        lists = self._tree.query_ball_point(self.geometry.box_center[sel], r=radius, return_sorted=True)
        if not len(lists):
            return np.zeros(0, dtype=np.int64)
        flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
        _, first = np.unique(flat, return_index=True)
        return flat[np.sort(first)]  # unique, in the order of ``sel``

    def refine(self, idx: np.ndarray) -> None:
        if len(idx) and not np.all(self.geometry.refined[idx]):
            with self.lock:
                self.geometry.refine(idx)
