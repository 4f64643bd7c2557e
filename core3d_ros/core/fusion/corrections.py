"""Pose corrections in the fusion map, a part of :class:`.object_map.ObjectMap`.

Anchors. Every fused depth frame is recorded in the map's :class:`~..mapping.corrections.KeyframeTable`
(stamp -> the camera pose it was fused with). Each object remembers the frame that anchored
it: the one whose vote gave it most voxels (``ObjectState.anchor``, ``anchor_votes``; on a merge
the survivor keeps the better-voted anchor of the two). The frame that saw most of an object is
the one whose pose error its voxels mostly carry.

Correction. :meth:`PoseCorrections.apply_corrections` hands a batch of (stamp, corrected camera
pose) to the table, which validates it (a refused batch leaves the map bit-identical) and
returns each moved frame's delta ``T_new @ inv(T_old)``. Every object anchored to a moved frame
moves rigidly with that delta: its slots are taken out of its old voxel rows, then its voxel
centres are transformed and re-keyed; at each new key its (id, hits) slot is merged with what
is there (a free slot, else the weakest slot when that has fewer hits; else the voxel is not
taken). Two old voxels that land on one new key keep the larger hit count. All moving objects
leave before any arrives, so objects that move together never collide with each other's old
places. Owners, the per-object row index and the dirty set follow, so boxes, centroids and
relations are rebuilt by the normal snapshot path; moved rows join the next merge pass.

Cost: the moved objects' voxels (plus a look-up of the anchor index per moved frame); objects
anchored elsewhere are not read. Emptied rows stay in the table as empty voxels (as free-space
clearing leaves them); a later frame that sees them occupied reuses them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..mapping.corrections import CorrectionResult, KeyframeTable
from .blocks import block_offsets
from .voxels import MAX_COORD, pack, unpack, voxel_coords


@dataclass
class CorrectionStats:
    """What applying one batch of corrections did to the map."""

    rejected: str = ""  # the whole batch refused (the map is unchanged)
    refused: dict = field(default_factory=dict)  # reason -> count (skipped entries or the batch)
    frames: int = 0  # recorded frames whose pose changed
    objects: list[int] = field(default_factory=list)  # objects moved
    voxels: int = 0  # object slots moved
    dropped_voxels: int = 0  # slots that found no room at their new voxel
    seconds: float = 0.0
    # The 8^3 blocks the moved objects left, each with the delta of the moved object that had
    # most voxels in it: what the geometry layer moves (core/mapping/geometry_correction.py).
    blocks: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    block_deltas: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))


class PoseCorrections:
    """Anchors and rigid moves of objects on pose corrections (see the module doc)."""

    def _clear_corrections(self) -> None:
        cfg = self.cfg
        self.keyframes = KeyframeTable(int(cfg.correction_frames), float(cfg.correction_stamp_tolerance), float(cfg.correction_max_gap))
        self._anchored: dict[float, set[int]] = {}  # frame stamp -> objects anchored there (lazily cleaned)
        self._frame_votes: list[tuple[np.ndarray, np.ndarray]] = []  # (ids, voxels) voted this frame

    # ------------------------------------------------------------------ anchors
    def integrate_frame(self, depth, intrinsics, pose, rgb, labels, stamp, observations=None, stride=1):
        self._frame_votes = []
        stats = super().integrate_frame(depth, intrinsics, pose, rgb, labels, stamp, observations, stride)
        if not stats.rejected and self.keyframes.record(stamp, pose):
            self._anchor(float(stamp))
        for s in self.keyframes.take_dropped():
            self._anchored.pop(s, None)
        self._frame_votes = []
        return stats

    def _vote(self, rows, oid, colors, max_weight: int = 20) -> None:
        if len(oid):
            ids, n = np.unique(oid, return_counts=True)
            self._frame_votes.append((ids.astype(np.int64), n))
        super()._vote(rows, oid, colors, max_weight)

    def _anchor(self, stamp: float) -> None:
        """Objects that got more voxels from this frame than from their anchor take it as anchor."""
        for ids, n in self._frame_votes:
            for oid, k in zip(ids.tolist(), n.tolist()):
                oid = self._alias.get(oid, oid)
                st = self.objects.get(oid)
                if st is not None and k > st.anchor_votes:
                    st.anchor, st.anchor_votes = stamp, int(k)
                    self._anchored.setdefault(stamp, set()).add(oid)

    def _merge_pair(self, keep: int, gone: int) -> None:
        g = self.objects.get(gone)
        anchor, votes = (g.anchor, g.anchor_votes) if g is not None else (None, 0)
        super()._merge_pair(keep, gone)
        k = self.objects.get(keep)
        if k is not None and anchor is not None and votes > k.anchor_votes:
            k.anchor, k.anchor_votes = anchor, votes
            self._anchored.setdefault(anchor, set()).add(keep)

    def anchored_to(self, stamp: float) -> list[int]:
        """Objects anchored to the frame of ``stamp`` (costs those objects)."""
        ids = self._anchored.get(stamp)
        if not ids:
            return []
        live = {o for o in ids if o in self.objects and self.objects[o].anchor == stamp}
        self._anchored[stamp] = live
        return sorted(live)

    # ------------------------------------------------------------------ corrections
    def apply_corrections(self, corrections, issued: float | None = None) -> CorrectionStats:
        """Apply a batch of (stamp, corrected 4x4 camera pose): see the module doc."""
        t0 = time.perf_counter()
        res: CorrectionResult = self.keyframes.apply(corrections, issued)
        stats = CorrectionStats(rejected=res.rejected, refused=dict(res.refused), frames=len(res.deltas))
        if res.rejected or not res.deltas:
            stats.seconds = time.perf_counter() - t0
            return stats
        moves = [(oid, d) for s, d in res.deltas.items() for oid in self.anchored_to(s)]
        # Every moving object leaves first (its slots, hits and colours are kept) ...
        leaving = [(oid, d, self._take_out(oid)) for oid, d in moves]
        stats.blocks, stats.block_deltas = _blocks_left([d for _, d in moves], [out[0] for _, _, out in leaving])
        # ... then each arrives at its new keys.
        for oid, delta, (keys, hits, colors, color_n) in leaving:
            moved, dropped = self._put_in(oid, delta, keys, hits, colors, color_n)
            stats.voxels += moved
            stats.dropped_voxels += dropped
        stats.objects = [oid for oid, _ in moves]
        self._drop_empty()
        self.version += 1
        stats.seconds = time.perf_counter() - t0
        return stats

    def _take_out(self, oid: int):
        """Remove ``oid``'s slot from every row holding it; returns (keys, hits, colours, colour
        counts) of those rows."""
        rows = self.member_rows(oid)
        slot = (self.ids[rows] == oid).argmax(axis=1)
        out = (self.keys[rows].copy(), self.hits[rows, slot].copy(), self.colors[rows].copy(), self.color_n[rows].copy())
        self.ids[rows, slot] = -1
        self.hits[rows, slot] = 0
        self._rows.pop(oid, None)
        self.objects[oid].num_voxels = 0
        self._update_owner(rows)
        self._dirty.add(oid)
        self._lost.add(oid)
        return out

    def _put_in(self, oid: int, delta: np.ndarray, keys, hits, colors, color_n) -> tuple[int, int]:
        """Insert ``oid``'s voxels at their keys moved by ``delta``; returns (slots placed, dropped)."""
        if len(keys) == 0:
            return 0, 0
        centres = (unpack(keys) + 0.5) * self.voxel_size @ delta[:3, :3].T + delta[:3, 3]
        coords = voxel_coords(centres, self.voxel_size)
        inside = np.all(np.abs(coords) <= MAX_COORD - 8, axis=1)
        dropped = int((~inside).sum())
        coords, hits, colors, color_n = coords[inside], hits[inside], colors[inside], color_n[inside]
        new_keys = pack(coords)
        # Old voxels that land on one new key: the most hits wins (and its colour).
        order = np.lexsort((-hits, new_keys))
        first = order[np.r_[True, new_keys[order][1:] != new_keys[order][:-1]]]
        dropped += len(new_keys) - len(first)
        new_keys, coords, hits, colors, color_n = new_keys[first], coords[first], hits[first], colors[first], color_n[first]
        rows = self.lookup(new_keys)
        absent = rows < 0
        if absent.any():
            bc, off = block_offsets(coords[absent])
            ub, inv = np.unique(bc, axis=0, return_inverse=True)
            nums = self._blocks.find(ub)
            missing = nums < 0
            if missing.any():
                nums[missing] = self._blocks.insert(ub[missing])
                self._grow_blocks(self._blocks.size)
            rows[absent] = self._insert_voxels(coords[absent], nums[inv.reshape(-1)], off)
        ok = rows >= 0
        dropped += int((~ok).sum())
        rows, hits, colors, color_n = rows[ok], hits[ok], colors[ok], color_n[ok]
        # A free slot, else the weakest slot when it has fewer hits.
        ids_r = self.ids[rows]
        free = ids_r < 0
        has_free = free.any(axis=1)
        weakest = np.where(ids_r >= 0, self.hits[rows], np.iinfo(np.int32).max).argmin(axis=1)
        slot = np.where(has_free, free.argmax(axis=1), weakest)
        take = has_free | (self.hits[rows, weakest] < hits)
        dropped += int((~take).sum())
        rows, slot, hits, colors, color_n = rows[take], slot[take], hits[take], colors[take], color_n[take]
        evicted = self.ids[rows, slot]
        lost = evicted[evicted >= 0]
        if len(lost):
            gone, n = np.unique(lost, return_counts=True)
            for o, k in zip(gone.tolist(), n.tolist()):
                self.objects[o].num_voxels -= k
            self._dirty.update(gone.tolist())
            self._lost.update(gone.tolist())
        self.ids[rows, slot] = oid
        self.hits[rows, slot] = hits
        # Colours: a weighted blend with what the voxel held.
        n_old = self.color_n[rows].astype(np.float32)
        w = n_old + color_n
        blend = (self.colors[rows] * n_old[:, None] + colors * color_n[:, None]) / np.maximum(w, 1)[:, None]
        self.colors[rows] = np.where((w > 0)[:, None], blend, colors)
        self.color_n[rows] = np.minimum(w, 20).astype(self.color_n.dtype)
        self.free[rows] = 0
        order = np.argsort(rows)
        self._give_rows(oid, rows[order])
        self._update_owner(rows)
        self._merge_touched.append(rows)
        self._dirty.add(oid)
        return len(rows), dropped


def _blocks_left(deltas: list[np.ndarray], keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The blocks holding the moved objects' old voxels, and per block the delta of the object
    with most voxels in it."""
    if not keys or not sum(len(k) for k in keys):
        return np.zeros((0, 3), np.int32), np.zeros((0, 4, 4))
    blocks, counts, owner = [], [], []
    for j, k in enumerate(keys):
        if len(k):
            b, n = np.unique(block_offsets(unpack(k))[0], axis=0, return_counts=True)
            blocks.append(b)
            counts.append(n)
            owner.append(np.full(len(b), j))
    b, n, o = np.concatenate(blocks), np.concatenate(counts), np.concatenate(owner)
    bk = pack(b.astype(np.int64))
    order = np.lexsort((-n, bk))
    first = order[np.r_[True, bk[order][1:] != bk[order][:-1]]]
    return b[first].astype(np.int32), np.stack(deltas)[o[first]]
