"""The map read out, a part of :class:`.object_map.ObjectMap`. A snapshot assigns each voxel to
its owner, so reported objects partition the map's voxels. Snapshots are cached per object:
only objects whose voxels, observations or embeddings changed since the last snapshot are
rebuilt; the part that reads the map (``begin_snapshot``, under the fusion lock) is apart from
the part that builds boxes and labels (``finish_snapshot``, outside it).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..objects import MapSnapshot, ObjectInfo, OrientedBox
from .voxels import key_centers


class Snapshots:
    """Snapshots and instance voxels (a part of :class:`.object_map.ObjectMap`)."""

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

    def _object_raw(self, oid: int):
        """What a snapshot needs of one object, copied: its state and the rows it owns."""
        st = self.objects.get(oid)
        if st is None or st.num_observations < self.cfg.min_object_observations:
            return None
        rows = self.member_rows(oid)
        rows = rows[self.owner[rows] == oid]
        if len(rows) < self.cfg.min_segment_voxels:
            return None
        return dataclasses.replace(st), self.keys[rows].copy(), self.colors[rows].copy()

    def _info_from_raw(self, oid: int, raw, labeler, up) -> ObjectInfo:
        st, keys, colors = raw
        pts = key_centers(keys, self.voxel_size)
        emb = st.embedding
        label, score = labeler(emb) if (labeler is not None and emb is not None) else ("", 0.0)
        return ObjectInfo(
            id=oid,
            points=pts,
            colors=np.clip(colors, 0, 255).astype(np.uint8),
            box=OrientedBox.from_points(pts, up=up, min_extent=self.voxel_size),
            num_observations=st.num_observations,
            first_seen=st.first_seen,
            last_seen=st.last_seen,
            embedding=emb,
            label=label,
            label_score=float(score),
            best_view=st.best_view,
            moved_from=None if st.moved_from is None else np.asarray(st.moved_from, np.float64).copy(),
            moved_at=float(st.moved_at),
        )

    def snapshot(self, stamp: float = 0.0, labeler=None, up: np.ndarray | None = None) -> MapSnapshot:
        """Consistent copy of the objects. Cached until the map changes; then only the objects
        changed since the last snapshot are rebuilt. (One thread; see begin/finish_snapshot for
        building outside a lock that fusion holds.)"""
        return self.finish_snapshot(self.begin_snapshot(labeler, up), stamp, labeler, up)

    def begin_snapshot(self, labeler=None, up: np.ndarray | None = None):
        """The part of a snapshot that reads the map (call it under the fusion lock): copies of
        the objects changed since the last snapshot. Its cost follows the change, not the map."""
        up_key = None if up is None else tuple(np.asarray(up, float).tolist())
        key = (self.version, up_key, id(labeler))
        if self._snapshot is not None and self._snapshot_key == key:
            return key, None, self.frames
        if self._snapshot_key is None or self._snapshot_key[1:] != key[1:]:
            dirty = set(self.objects) | set(self._infos)  # a different view: rebuild all
        else:
            dirty = self._dirty
        self._dirty = set()
        return key, {oid: self._object_raw(oid) for oid in dirty}, self.frames

    def finish_snapshot(self, parts, stamp: float = 0.0, labeler=None, up: np.ndarray | None = None) -> MapSnapshot:
        """The rest (boxes, labels), from ``begin_snapshot``'s copies only: needs no lock, as
        long as one thread builds snapshots at a time."""
        key, raw, frames = parts
        if raw is None:
            return self._snapshot
        for oid, r in raw.items():
            if r is None:
                self._infos.pop(oid, None)
            else:
                self._infos[oid] = self._info_from_raw(oid, r, labeler, up)
        objects = [self._infos[o] for o in sorted(self._infos)]
        self._snapshot = MapSnapshot(objects=objects, voxel_size=self.voxel_size, stamp=stamp, frames=frames)
        self._snapshot_key = key
        return self._snapshot
