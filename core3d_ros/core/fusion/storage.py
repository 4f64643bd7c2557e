"""The fusion map's storage: :class:`VoxelStore`, the base of :class:`.object_map.ObjectMap`,
holds the voxel rows, the block table that finds them and the per-object row index (the layout
is in :mod:`.object_map`'s overview). What reads one object costs that object, not the map.

Rows are never moved. Memory follows the live map, not its history:

- Released rows: a voxel that no object holds any more (cleared by free space, or its objects
  removed) gives its row back (:meth:`VoxelStore._release_rows`): its key becomes -1, its block
  table entry -1, and the row joins a free list that :meth:`VoxelStore._insert_voxels` takes
  from before it hands out a new row. A block whose voxels are all released leaves the block
  hash, and its block-table row is taken by the next new block. ``num_voxels`` counts live
  voxels; ``rows_used`` the rows ever handed out (live + free).
- Growth never copies the map: the arrays are reserved once for ``max_voxels`` rows (and a
  share of that in blocks) as uncommitted memory (``np.empty``: the system backs a page only
  when it is written) and initialised ``ROW_CHUNK`` rows (``BLOCK_CHUNK`` blocks) at a time, as
  the map reaches them; the block hash is made with as many slots (up to
  ``HASH_CAPACITY_MAX``), so it does not rehash either. Only a map past its reservation (blocks
  beyond ``BLOCK_RESERVE_MAX``, or an allocation the system refuses) grows by doubling, with a
  copy.
"""
from __future__ import annotations

import numpy as np

from ...config import FusionConfig
from .blocks import BLOCK_VOXELS, BlockHash, block_offsets
from .records import ObjectState
from .voxels import pack, unique_coords, unpack

ROW_CHUNK = 1 << 15  # voxel rows initialised at a time (about 2 MB with 4 slots)
BLOCK_CHUNK = 1 << 10  # block-table rows initialised at a time (2 MB)
ROW_RESERVE_MAX = 1 << 26  # voxel rows reserved at most (beyond: doubling growth)
BLOCK_RESERVE_MAX = 1 << 21  # blocks reserved at most (4 GiB of address space, not of memory)
BLOCKS_PER_VOXEL_RESERVED = 1 / 8  # blocks reserved per voxel of max_voxels
HASH_CAPACITY_MAX = 1 << 18  # block-hash slots made at start at most (about 1 MB; a sparser table looks up slower)

# Per voxel-row array: its trailing shape (None: (K,) slots), dtype and the value of an empty row.
_ROW_ARRAYS = {
    "keys": ((), np.int64, -1),
    "ids": (None, np.int32, -1),
    "hits": (None, np.int32, 0),
    "colors": ((3,), np.float32, 0),
    "color_n": ((), np.int32, 0),
    "owner": ((), np.int32, -1),
    "free": ((), np.int16, 0),  # frames that saw through the voxel since it was last seen occupied
    "_row_frame": ((), np.int32, -1),  # serial of the fused frame that anchors the row (pose corrections, voxel grain)
}


class _Rows:
    """Rows an object was given, as appended chunks; compacted when read, and when they hold
    more than twice the object's rows (rows it lost stay in them until then)."""

    __slots__ = ("chunks", "length")

    def __init__(self):
        self.chunks: list[np.ndarray] = []
        self.length = 0


def _reserve(shape: tuple, dtype, fallback: int) -> np.ndarray:
    """Uncommitted memory for ``shape`` (only written pages take memory); ``fallback`` rows when
    the system refuses the reservation."""
    try:
        return np.empty(shape, dtype)
    except MemoryError:
        return np.empty((fallback,) + shape[1:], dtype)


class VoxelStore:
    """Voxel rows (``keys``, ``ids``/``hits`` slots, ``colors``/``color_n``, ``owner``, ``free``;
    ``_n`` rows handed out, ``_free_rows[:_n_free]`` released ones), the block table (``_blocks``
    hash, ``_btable`` rows per block voxel, ``_bcount`` live voxels per block), the objects
    (``objects``, ``next_id``) and the rows each object was given (``_rows``). ``cfg``,
    ``device`` and ``K`` (slots per voxel) are set by :class:`.object_map.ObjectMap`."""

    def _clear_storage(self) -> None:
        """Empty block table, voxel rows and objects (reserved, nothing initialised yet)."""
        max_voxels = max(1, int(self.cfg.max_voxels))
        rows = min(max_voxels, ROW_RESERVE_MAX)
        for name, (tail, dtype, _) in _ROW_ARRAYS.items():
            setattr(self, name, _reserve((rows,) + ((self.K,) if tail is None else tail), dtype, ROW_CHUNK))
        blocks = int(min(max(max_voxels * BLOCKS_PER_VOXEL_RESERVED, BLOCK_CHUNK), BLOCK_RESERVE_MAX))
        # The hash table sized for the reserved blocks too (up to HASH_CAPACITY_MAX): growing it
        # rehashes every block in one frame (20-60 ms at 100 k blocks on a busy 2-core VM); its
        # empty slots cost about 4 bytes each.
        self._blocks = BlockHash(self.device, capacity=min(blocks, HASH_CAPACITY_MAX))
        self._btable = _reserve((blocks, BLOCK_VOXELS), np.int32, BLOCK_CHUNK)
        self._bcount = _reserve((len(self._btable),), np.int32, BLOCK_CHUNK)
        self._rows_init = 0  # rows [0, _rows_init) hold valid (empty or live) values
        self._blocks_init = 0
        self._n = 0
        self._free_rows = np.zeros(1024, np.int64)
        self._n_free = 0
        self.released_rows = 0  # rows given back since the map was made (counter)
        self.released_blocks = 0
        self._view_bytes = 0  # best-view bytes at the last budget pass, plus those set since (>= the truth)
        self.views_evicted = 0  # best views dropped for fusion.best_view_budget_mb (counter)
        self.objects: dict[int, ObjectState] = {}
        self._rows: dict[int, _Rows] = {}
        self.next_id = 1

    @property
    def num_voxels(self) -> int:
        """Live voxels (rows handed out and not released)."""
        return self._n - self._n_free

    @property
    def rows_used(self) -> int:
        """Rows handed out so far (live and free): live rows all lie below it."""
        return self._n

    def live_rows(self) -> np.ndarray:
        """Rows of live voxels, in increasing order (reads every row: for export, not per frame)."""
        return np.flatnonzero(self.keys[: self._n] >= 0)

    def memory_bytes(self) -> int:
        """Memory the map has written (and so holds): initialised rows and blocks, free list,
        block hash, per-object row index and object states."""
        row_bytes = sum(getattr(self, name)[:1].nbytes for name in _ROW_ARRAYS)
        arrays = self._rows_init * row_bytes + self._free_rows.nbytes
        index = self._blocks_init * (BLOCK_VOXELS + 1) * 4 + self._blocks.memory_bytes()
        rows = sum(c.nbytes for r in self._rows.values() for c in r.chunks)
        objects = sum(
            (s.embedding_sum.nbytes if s.embedding_sum is not None else 0) + (s.best_view.nbytes if s.best_view is not None else 0)
            for s in self.objects.values()
        )
        return int(arrays + index + rows + objects)

    def memory_report(self) -> dict:
        """What the map holds against what its live part needs, in bytes and rows (for the soak
        bench): ``held_bytes`` is :meth:`memory_bytes` (the map's: with snapshot summaries and pose
        corrections); ``live_bytes`` leaves out the storage's released rows and blocks and its
        initialised rows not handed out yet (summaries hold live voxels only, and count as live)."""
        row_bytes = sum(getattr(self, name)[:1].nbytes for name in _ROW_ARRAYS)
        held = self.memory_bytes()
        slack = (self._rows_init - self.num_voxels) * row_bytes + (self._blocks_init - self._blocks.live) * (BLOCK_VOXELS + 1) * 4
        return {
            "held_bytes": held,
            "live_bytes": int(held - slack - self._free_rows.nbytes),
            "live_voxels": self.num_voxels,
            "rows_used": self._n,
            "free_rows": self._n_free,
            "live_blocks": self._blocks.live,
            "blocks_used": self._blocks.size,
            "released_rows": self.released_rows,
            "released_blocks": self.released_blocks,
            "objects": len(self.objects),
            "views_evicted": self.views_evicted,
        }

    # ------------------------------------------------------------------ best views within a budget
    def _note_view(self, oid: int) -> None:
        """``oid`` took a new best view: keep all views within ``fusion.best_view_budget_mb``.
        The running count only grows between passes, so a pass (a look at every object with a
        view) runs once per tenth of the budget of new views at most."""
        st = self.objects.get(oid)
        if st is not None and st.best_view is not None:
            self._view_bytes += int(st.best_view.nbytes)
        if self._view_bytes > float(self.cfg.best_view_budget_mb) * 2**20:
            self._enforce_view_budget()

    def _enforce_view_budget(self) -> None:
        """Drop the best views of the objects seen longest ago (then the poorest) until the views
        take at most 0.9 x the budget; such an object takes the next view it is seen in."""
        budget = float(self.cfg.best_view_budget_mb) * 2**20
        held = sorted((st.last_seen, st.best_view_quality, oid) for oid, st in self.objects.items() if st.best_view is not None)
        total = sum(int(self.objects[oid].best_view.nbytes) for _, _, oid in held)
        if total > budget:
            for _, _, oid in held:
                if total <= 0.9 * budget:
                    break
                st = self.objects[oid]
                total -= int(st.best_view.nbytes)
                st.best_view, st.best_view_quality = None, -1.0
                self.views_evicted += 1
                self._dirty.add(oid)
        self._view_bytes = total

    # ------------------------------------------------------------------ growth (no map copy)
    def _grow(self, need: int) -> None:
        """Make rows [0, need) valid: initialise the next chunk of the reservation (never the
        whole map); past the reservation, double with a copy."""
        if need <= self._rows_init:
            return
        cap = len(self.keys)
        if need > cap:
            new = max(need, 2 * cap)
            for name in _ROW_ARRAYS:
                a = getattr(self, name)
                out = np.empty((new,) + a.shape[1:], a.dtype)
                out[: self._rows_init] = a[: self._rows_init]
                setattr(self, name, out)
            cap = new
        end = min(cap, max(need, self._rows_init + ROW_CHUNK))
        for name, (_, _, fill) in _ROW_ARRAYS.items():
            getattr(self, name)[self._rows_init : end] = fill
        self._rows_init = end

    def _grow_blocks(self, need: int) -> None:
        """Make block-table rows [0, need) valid (as :meth:`_grow` for voxel rows)."""
        if need <= self._blocks_init:
            return
        cap = len(self._btable)
        if need > cap:
            new = max(need, 2 * cap)
            table = np.empty((new, BLOCK_VOXELS), np.int32)
            table[: self._blocks_init] = self._btable[: self._blocks_init]
            count = np.empty(new, np.int32)
            count[: self._blocks_init] = self._bcount[: self._blocks_init]
            self._btable, self._bcount, cap = table, count, new
        end = min(cap, max(need, self._blocks_init + BLOCK_CHUNK))
        self._btable[self._blocks_init : end] = -1
        self._bcount[self._blocks_init : end] = 0
        self._blocks_init = end

    # ------------------------------------------------------------------ lookups
    def _rows_of_blocks(self, block_numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        ok = block_numbers >= 0
        rows = np.full(len(block_numbers), -1, np.int64)
        rows[ok] = self._btable[block_numbers[ok], offsets[ok]]
        return rows

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given voxel keys, -1 where absent (released voxels are absent)."""
        keys = np.asarray(keys, np.int64)
        if len(keys) == 0:
            return np.zeros(0, np.int64)
        bc, off = block_offsets(unpack(keys))
        ub, inv = unique_coords(bc)
        return self._rows_of_blocks(self._blocks.find(ub)[inv.reshape(-1)], off)

    # ------------------------------------------------------------------ rows in, rows out
    def _insert_voxels(self, coords: np.ndarray, block_numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Rows for new voxels (absent from the map, distinct; their blocks in the block hash),
        released rows first; -1 beyond max_voxels live voxels."""
        room = max(0, int(self.cfg.max_voxels) - self.num_voxels)
        n = min(len(coords), room)
        rows = np.full(len(coords), -1, np.int64)
        if n == 0:
            return rows
        k = min(n, self._n_free)
        reused = self._free_rows[self._n_free - k : self._n_free]
        self._n_free -= k
        self._grow(self._n + n - k)
        new = np.concatenate([reused, np.arange(self._n, self._n + n - k, dtype=np.int64)])
        self._n += n - k
        self.keys[new] = pack(coords[:n])
        self._btable[block_numbers[:n], offsets[:n]] = new
        ub, count = np.unique(block_numbers[:n], return_counts=True)
        self._bcount[ub] += count.astype(np.int32)
        rows[:n] = new
        return rows

    def _release_rows(self, rows: np.ndarray) -> int:
        """Give back the rows among ``rows`` that no object holds any more: key and block-table
        entry reset, row on the free list; blocks left without voxels leave the block hash.
        Costs the rows given, not the map. Returns the rows released."""
        rows = np.asarray(rows, np.int64)
        if not (len(rows) < 2 or np.all(rows[1:] > rows[:-1])):  # callers often pass sorted distinct rows
            rows = np.unique(rows)
        rows = rows[(rows >= 0) & (rows < self._n)]
        if len(rows) == 0:
            return 0
        rows = rows[(self.keys[rows] >= 0) & (self.ids[rows] < 0).all(axis=1)]
        if len(rows) == 0:
            return 0
        bc, off = block_offsets(unpack(self.keys[rows]))
        ub, inv = unique_coords(bc)
        nums = self._blocks.find(ub)
        bn = nums[inv.reshape(-1)]
        if np.any(bn < 0):  # a live row outside the block hash: never released, never reused
            rows, off, bn = rows[bn >= 0], off[bn >= 0], bn[bn >= 0]
        self._unsummarise(rows)  # snapshot.py: they leave their objects' summaries while their keys hold
        self._btable[bn, off] = -1
        ubn, count = np.unique(bn, return_counts=True)
        self._bcount[ubn] -= count.astype(np.int32)
        for name, (_, _, fill) in _ROW_ARRAYS.items():
            getattr(self, name)[rows] = fill
        if self._n_free + len(rows) > len(self._free_rows):
            grown = np.zeros(max(2 * len(self._free_rows), self._n_free + len(rows)), np.int64)
            grown[: self._n_free] = self._free_rows[: self._n_free]
            self._free_rows = grown
        self._free_rows[self._n_free : self._n_free + len(rows)] = rows
        self._n_free += len(rows)
        self.released_rows += len(rows)
        gone = nums >= 0
        gone[gone] = self._bcount[nums[gone]] <= 0
        if gone.any():
            self._blocks.erase(ub[gone], nums[gone])
            self.released_blocks += int(gone.sum())
        return len(rows)

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
        r.length = len(rows)
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
        """Record that the sorted, distinct ``rows`` now hold ``oid`` (new to each of them).
        The object's index is compacted when it holds more than twice its rows (amortised:
        what it costs, the rows appended since the last compaction paid for)."""
        r = self._rows.setdefault(oid, _Rows())
        r.chunks.append(rows)
        r.length += len(rows)
        st = self.objects[oid]
        st.num_voxels += len(rows)
        if r.length > 2 * st.num_voxels + 256:
            self.member_rows(oid)

    def _lose_slots(self, ids: np.ndarray) -> None:
        """Each entry of ``ids`` lost one voxel slot: their counts go down and they become dirty
        (the next snapshot) and lost (the pass that drops objects left without voxels)."""
        if len(ids) == 0:
            return
        gone, n = np.unique(ids, return_counts=True)
        for oid, k in zip(gone.tolist(), n.tolist()):
            self.objects[oid].num_voxels -= k
        self._dirty.update(gone.tolist())
        self._lost.update(gone.tolist())

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
            ub, inv = unique_coords(bc)
            numbers = omap._blocks.insert(ub)
            omap._grow_blocks(len(ub))
            omap._btable[numbers[inv.reshape(-1)], off] = np.arange(n, dtype=np.int32)
            omap._bcount[numbers] = np.bincount(inv.reshape(-1), minlength=len(ub)).astype(np.int32)
        for st in states:
            st.num_voxels = 0
            omap.objects[st.id] = st
        r, s = np.nonzero(ids[:n] >= 0)
        omap._add_rows(ids[r, s].astype(np.int64), r.astype(np.int64))
        omap._update_owner(np.arange(n, dtype=np.int64))
        omap._release_rows(np.flatnonzero((ids[:n] < 0).all(axis=1)))  # voxels no object holds
        omap.next_id = int(next_id)
        omap.frames = int(frames)
        omap._dirty = set(omap.objects)
        omap._enforce_view_budget()
        omap.version += 1
        return omap
