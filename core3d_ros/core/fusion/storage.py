"""The fusion map's storage: :class:`VoxelStore`, the base of :class:`.object_map.ObjectMap`,
holds the voxel rows, the block table that finds them and the per-object row index (the layout
is in :mod:`.object_map`'s overview). Rows are appended, never moved; arrays grow by doubling;
what reads one object costs that object, not the map.
"""
from __future__ import annotations

import numpy as np

from ...config import FusionConfig
from .blocks import BLOCK_VOXELS, BlockHash, block_offsets
from .records import ObjectState
from .voxels import pack, unpack


class _Rows:
    """Rows an object was given, as appended chunks; compacted when read."""

    __slots__ = ("chunks",)

    def __init__(self):
        self.chunks: list[np.ndarray] = []


class VoxelStore:
    """Voxel rows (``keys``, ``ids``/``hits`` slots, ``colors``/``color_n``, ``owner``; ``_n``
    in use), the block table (``_blocks`` hash, ``_btable`` rows per block voxel), the objects
    (``objects``, ``next_id``) and the rows each object was given (``_rows``). ``cfg``,
    ``device`` and ``K`` (slots per voxel) are set by :class:`.object_map.ObjectMap`."""

    def _clear_storage(self) -> None:
        """Empty block table, voxel rows and objects (arrays of 1024 rows to begin with)."""
        self._blocks = BlockHash(self.device)
        self._btable = np.full((0, BLOCK_VOXELS), -1, np.int32)
        self._n = 0
        cap = 1024
        self.keys = np.zeros(cap, np.int64)
        self.ids = np.full((cap, self.K), -1, np.int32)
        self.hits = np.zeros((cap, self.K), np.int32)
        self.colors = np.zeros((cap, 3), np.float32)
        self.color_n = np.zeros(cap, np.int32)
        self.owner = np.full(cap, -1, np.int32)
        self.free = np.zeros(cap, np.int16)  # frames that saw through the voxel since it was last seen occupied
        self.objects: dict[int, ObjectState] = {}
        self._rows: dict[int, _Rows] = {}
        self.next_id = 1

    @property
    def num_voxels(self) -> int:
        return self._n

    def memory_bytes(self) -> int:
        """Memory held by the map: voxel arrays, block table and hash, object states."""
        arrays = sum(a.nbytes for a in (self.keys, self.ids, self.hits, self.colors, self.color_n, self.owner, self.free))
        index = self._btable.nbytes + self._blocks.memory_bytes()
        rows = sum(c.nbytes for r in self._rows.values() for c in r.chunks)
        objects = sum(
            (s.embedding_sum.nbytes if s.embedding_sum is not None else 0) + (s.best_view.nbytes if s.best_view is not None else 0)
            for s in self.objects.values()
        )
        return int(arrays + index + rows + objects)

    def _grow(self, need: int) -> None:
        cap = len(self.keys)
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def grown(a, fill):
            out = np.full((new,) + a.shape[1:], fill, a.dtype)
            out[:cap] = a
            return out

        self.keys = grown(self.keys, 0)
        self.ids = grown(self.ids, -1)
        self.hits = grown(self.hits, 0)
        self.colors = grown(self.colors, 0)
        self.color_n = grown(self.color_n, 0)
        self.owner = grown(self.owner, -1)
        self.free = grown(self.free, 0)

    def _grow_blocks(self, need: int) -> None:
        cap = len(self._btable)
        if need <= cap:
            return
        table = np.full((max(need, 2 * cap, 256), BLOCK_VOXELS), -1, np.int32)
        table[:cap] = self._btable
        self._btable = table

    def _rows_of_blocks(self, block_numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        ok = block_numbers >= 0
        rows = np.full(len(block_numbers), -1, np.int64)
        rows[ok] = self._btable[block_numbers[ok], offsets[ok]]
        return rows

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given voxel keys, -1 where absent."""
        keys = np.asarray(keys, np.int64)
        if len(keys) == 0:
            return np.zeros(0, np.int64)
        bc, off = block_offsets(unpack(keys))
        ub, inv = np.unique(bc, axis=0, return_inverse=True)
        return self._rows_of_blocks(self._blocks.find(ub)[inv.reshape(-1)], off)

    def _insert_voxels(self, coords: np.ndarray, block_numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Rows for new voxels (absent from the map, distinct); -1 beyond max_voxels."""
        room = max(0, int(self.cfg.max_voxels) - self._n)
        n = min(len(coords), room)
        rows = np.full(len(coords), -1, np.int64)
        if n == 0:
            return rows
        self._grow(self._n + n)
        new = np.arange(self._n, self._n + n, dtype=np.int64)
        self.keys[new] = pack(coords[:n])
        self._btable[block_numbers[:n], offsets[:n]] = new
        self._n += n
        rows[:n] = new
        return rows

    def member_rows(self, oid: int) -> np.ndarray:
        """Sorted rows whose slots hold ``oid`` (costs the object's size, not the map's)."""
        r = self._rows.get(oid)
        if r is None or not r.chunks:
            return np.zeros(0, np.int64)
        if len(r.chunks) > 1:
            # Chunks are sorted runs: a stable sort merges them in about linear time.
            rows = np.sort(np.concatenate(r.chunks), kind="stable")
            rows = rows[np.r_[True, rows[1:] != rows[:-1]]]
        else:
            rows = r.chunks[0]
        rows = rows[(self.ids[rows] == oid).any(axis=1)]
        r.chunks = [rows]
        return rows

    def _add_rows(self, oids: np.ndarray, rows: np.ndarray) -> None:
        """Record that ``rows[i]`` now holds ``oids[i]`` (grouped per object, one append each)."""
        if len(rows) == 0:
            return
        order = np.argsort(oids, kind="stable")
        o, r = oids[order], rows[order]
        starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
        ends = np.append(starts[1:], len(o))
        for s, e in zip(starts.tolist(), ends.tolist()):
            self._give_rows(int(o[s]), np.sort(r[s:e]))

    def _give_rows(self, oid: int, rows: np.ndarray) -> None:
        """Record that the sorted, distinct ``rows`` now hold ``oid`` (new to each of them)."""
        self._rows.setdefault(oid, _Rows()).chunks.append(rows)
        self.objects[oid].num_voxels += len(rows)

    def _update_owner(self, rows: np.ndarray) -> None:
        """Recompute the owner of ``rows``; objects whose ownership changed become dirty."""
        if len(rows) == 0:
            return
        old = self.owner[rows]
        hits = np.where(self.ids[rows] >= 0, self.hits[rows], -1)
        best = hits.argmax(axis=1)
        ar = np.arange(len(rows))
        new = np.where(hits[ar, best] >= 0, self.ids[rows, best], -1)
        self.owner[rows] = new
        changed = old != new
        self._mark_rows(rows[changed])  # snapshot.py keeps the owners' summaries by change
        if changed.any():
            self._dirty.update(np.unique(np.concatenate([old[changed], new[changed]])).tolist())

    def owners(self) -> np.ndarray:
        """Per row, the id of the slot with most hits (-1 for rows without ids)."""
        return self.owner[: self._n].copy()

    # ------------------------------------------------------------------ construction from arrays
    @classmethod
    def from_arrays(cls, cfg: FusionConfig, keys, ids, hits, colors, color_n, states: list[ObjectState], next_id: int, frames: int) -> "VoxelStore":
        """A map holding the given voxel rows and objects (used by the map-file loader; the
        arrays are validated there)."""
        omap = cls(cfg)
        n = len(keys)
        omap._grow(n)
        omap.keys[:n], omap.ids[:n], omap.hits[:n] = keys, ids, hits
        omap.colors[:n], omap.color_n[:n] = colors, color_n
        omap._n = n
        if n:
            bc, off = block_offsets(unpack(keys))
            ub, inv = np.unique(bc, axis=0, return_inverse=True)
            numbers = omap._blocks.insert(ub)
            omap._grow_blocks(len(ub))
            omap._btable[numbers[inv.reshape(-1)], off] = np.arange(n, dtype=np.int32)
        for st in states:
            st.num_voxels = 0
            omap.objects[st.id] = st
        r, s = np.nonzero(ids[:n] >= 0)
        omap._add_rows(ids[r, s].astype(np.int64), r.astype(np.int64))
        omap._update_owner(np.arange(n, dtype=np.int64))
        omap.next_id = int(next_id)
        omap.frames = int(frames)
        omap._dirty = set(omap.objects)
        omap.version += 1
        return omap
