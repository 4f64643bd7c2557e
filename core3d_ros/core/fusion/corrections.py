"""Pose corrections in the fusion map, a part of :class:`.object_map.ObjectMap`.

Anchors. Every fused depth frame is recorded in the map's
:class:`~..mapping.corrections.KeyframeTable` (stamp -> the camera pose it was fused with) and
what it fused is anchored to it, at one of two grains (``fusion.correction_anchor``):

- ``voxel`` (default): each voxel row is anchored to the first recorded frame that voted into
  it (an int32 per row; per frame the rows it anchors, as chunks). A large object seen along a
  drifting trajectory (a wall, the floor) carries a different pose error in each part; each part
  follows its own frame.
- ``object``: each object is anchored to the frame whose vote gave it most voxels
  (``ObjectState.anchor``, ``anchor_votes``; kept in both grains; on a merge the survivor keeps
  the better-voted anchor of the two) and moves rigidly with it.

Correction. :meth:`PoseCorrections.apply_corrections` hands a batch of (stamp, corrected camera
pose) to the table, which validates it (a refused batch leaves the map bit-identical) and
returns each moved frame's delta ``T_new @ inv(T_old)``. What those frames anchor leaves its
rows first (whole rows for ``voxel``, the object's slot for ``object``: ids, hits and colours
kept), so things that move together never collide with each other's old places; then each
(object, hits) slot goes to the voxel of its transformed centre and is merged with what is there:
the same object keeps the larger hit count, else a free slot, else the weakest slot when that has
fewer hits, else it is dropped (counted). Several slots landing on one voxel merge in rounds,
strongest first. Owners, the per-object row index and the dirty set follow, so boxes, centroids
and relations are rebuilt by the normal snapshot path; then the merge pass runs on the moved
rows (pieces the drift kept apart, together again), with the pairs each moved object shared
before the move: a pair whose smaller object the move made mostly shared with the other merges
(a duplicate the drift made, laid on its original; merging.py).

Folded pixels (voxel grain, ``correction_copies``): a drifted frame's pixels that fell in rows
another frame had created (the drift folded them onto a different part of the surface) added no
row of their own, so moving rows alone would leave what only they saw empty. Each such kept pixel
of a corrected frame also marks its corrected voxel for the owner of the row it fell in (one hit,
anchored to that frame), the row itself staying with its own frame; only where, after the
moves, no object holds that voxel (a hole to fill, never a second slot: a copy carries the
row's owner, not necessarily what the pixel saw, so it neither overrides nor joins objects).

Cost: the moved rows (found through the per-frame row chunks, or the anchor index per object);
nothing else is read. Emptied rows stay in the table as empty voxels (as free-space clearing
leaves them); a later frame that sees them occupied reuses them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..mapping.corrections import CorrectionResult, DepthStore, KeyframeTable
from .blocks import block_offsets
from ..transforms import invert
from .voxels import MAX_COORD, pack, unpack, voxel_coords


@dataclass
class CorrectionStats:
    """What applying one batch of corrections did to the map."""

    rejected: str = ""  # the whole batch refused (the map is unchanged)
    refused: dict = field(default_factory=dict)  # reason -> count (skipped entries or the batch)
    frames: int = 0  # recorded frames whose pose changed
    objects: list[int] = field(default_factory=list)  # objects moved
    voxels: int = 0  # object slots placed at their new voxels (one per new voxel and object)
    dropped_voxels: int = 0  # slots that found no room there (full of objects with more hits) or left the key range
    merged: int = 0  # objects merged by the merge pass that follows
    reprojected: int = 0  # frames whose moved voxels came from their kept depth (the rest: moved centres)
    seconds: float = 0.0
    # The 8^3 blocks the moved objects left, each with the delta of the moved object that had
    # most voxels in it: what the geometry layer moves (core/mapping/geometry_correction.py).
    blocks: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    block_deltas: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))


class PoseCorrections:
    """Anchors and moves on pose corrections (see the module doc)."""

    def _clear_corrections(self) -> None:
        cfg = self.cfg
        self.keyframes = KeyframeTable(int(cfg.correction_frames), float(cfg.correction_stamp_tolerance), float(cfg.correction_max_gap))
        self._anchored: dict[float, set[int]] = {}  # frame stamp -> objects anchored there (lazily cleaned)
        self._frame_votes: list[tuple[np.ndarray, np.ndarray]] = []  # (ids, voxels) voted this frame
        self._serial = -1  # the frame being fused (-1: none, or a frame without a pose)
        self._next_serial = 0
        self._serials: dict[float, int] = {}  # recorded stamp -> frame serial
        # per voxel row, the serial of the frame that anchors it: storage.py's ``_row_frame`` (4 bytes)
        self._frame_rows: dict[int, list[np.ndarray]] = {}  # serial -> rows it anchors, int32 (lazily cleaned; 4 bytes)
        self._before_move = None  # (objects moving, their pair counts before): see apply_corrections
        self._pending_copies = None  # folded pixels' entries, placed after the moves
        self._depths = DepthStore(int(cfg.correction_depth_mb) << 20)  # serial -> depth fused (voxel grain)

    def corrections_memory_bytes(self) -> int:
        """Memory held for pose corrections: the frames' poses, the kept depth images and the
        per-frame row lists (each row's anchoring frame is a storage row array, counted there)."""
        chunks = sum(c.nbytes for cs in self._frame_rows.values() for c in cs)
        return int(self.keyframes.memory_bytes() + self._depths.memory_bytes() + chunks)

    @property
    def _per_voxel(self) -> bool:
        return self.cfg.correction_anchor == "voxel"

    # ------------------------------------------------------------------ anchors
    def integrate_frame(self, depth, intrinsics, pose, rgb, labels, stamp, observations=None, stride=1):
        self._frame_votes = []
        self._serial, self._next_serial = self._next_serial, self._next_serial + 1
        try:
            stats = super().integrate_frame(depth, intrinsics, pose, rgb, labels, stamp, observations, stride)
            if not stats.rejected and self.keyframes.record(stamp, pose):
                self._serials[float(stamp)] = self._serial
                self._anchor(float(stamp))
                if self._per_voxel and self._depths.max_bytes:
                    self._depths.add(self._serial, depth[::stride, ::stride], intrinsics, stride)
            else:
                self._frame_rows.pop(self._serial, None)  # a frame the table does not hold cannot be corrected
            for s in self.keyframes.take_dropped():
                self._anchored.pop(s, None)
                serial = self._serials.pop(s, -1)
                self._frame_rows.pop(serial, None)
                self._depths.drop(serial)
        finally:
            self._serial = -1
            self._frame_votes = []
        return stats

    def _vote(self, rows, oid, colors, max_weight: int = 20) -> None:
        if len(oid) and self._serial >= 0:
            top = int(oid.max())
            if top < 4 * len(oid) + 1024:  # a count per id: linear, no sort
                n = np.bincount(oid, minlength=top + 1)
                ids = np.flatnonzero(n)
                self._frame_votes.append((ids, n[ids]))
            else:
                ids, n = np.unique(oid, return_counts=True)
                self._frame_votes.append((ids.astype(np.int64), n))
        if self._per_voxel and self._serial >= 0 and len(rows):
            self._claim_rows(rows, self._serial)
        super()._vote(rows, oid, colors, max_weight)

    def _claim_rows(self, rows: np.ndarray, serials) -> None:
        """Rows without an anchoring frame take ``serials`` (one serial, or one per row)."""
        free = self._row_frame[rows] < 0
        rows = rows[free]
        if len(rows) == 0:
            return
        if np.isscalar(serials):  # one frame's rows (a fused frame): no grouping
            self._row_frame[rows] = serials
            self._frame_rows.setdefault(int(serials), []).append(rows.astype(np.int32))
            return
        serials = serials[free]
        self._row_frame[rows] = serials
        order = np.argsort(serials, kind="stable")
        r, sr = rows[order], serials[order]
        starts = np.flatnonzero(np.r_[True, sr[1:] != sr[:-1]])
        for a, b in zip(starts.tolist(), np.append(starts[1:], len(sr)).tolist()):
            self._frame_rows.setdefault(int(sr[a]), []).append(r[a:b].astype(np.int32))

    def _anchor(self, stamp: float) -> None:
        """Objects that got more voxels from this frame than from their anchor take it as anchor."""
        for ids, n in self._frame_votes:
            for oid, k in zip(ids.tolist(), n.tolist()):
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

    def rows_anchored_to(self, stamp: float) -> np.ndarray:
        """Voxel rows anchored to the frame of ``stamp`` that hold an object (costs those rows)."""
        serial = self._serials.get(stamp)
        chunks = self._frame_rows.get(serial) if serial is not None else None
        if not chunks:
            return np.zeros(0, np.int64)
        rows = np.unique(np.concatenate(chunks)).astype(np.int64)
        rows = rows[self._row_frame[rows] == serial]
        self._frame_rows[serial] = [rows.astype(np.int32)]
        return rows[(self.ids[rows] >= 0).any(axis=1)]

    # ------------------------------------------------------------------ saved with the map
    def correction_arrays(self, live: np.ndarray) -> dict[str, np.ndarray]:
        """What corrections need after a save and load (mapio's ``corr_*`` arrays): the
        recorded frames (stamps, poses, serials), each saved row's anchoring serial (``live``:
        the saved rows, in file order) and each object's anchor. Kept depth is not saved: after
        a load, the rows of frames fused before it move by their centres."""
        t = self.keyframes.state()
        states = list(self.objects.values())
        return {
            "corr_stamps": t["stamps"], "corr_poses": t["poses"], "corr_marks": t["marks"],
            "corr_serials": np.array([self._serials.get(float(x), -1) for x in t["stamps"].tolist()], np.int64),
            "corr_next_serial": np.array(self._next_serial, np.int64),
            "corr_row_frame": self._row_frame[live].astype(np.int32),
            "corr_obj_id": np.array([st.id for st in states], np.int64),
            "corr_obj_anchor": np.array([np.nan if st.anchor is None else st.anchor for st in states], np.float64),
            "corr_obj_anchor_votes": np.array([st.anchor_votes for st in states], np.int64),
        }

    def restore_corrections(self, arrays: dict[str, np.ndarray], n_rows: int) -> None:
        """A just-loaded map takes back what ``correction_arrays`` saved (validated by mapio;
        rows 0..n_rows-1 in file order); each frame's rows are regrouped
        once here, for the corrections that follow."""
        self.keyframes.restore(arrays["corr_stamps"], arrays["corr_poses"], arrays["corr_marks"])
        kept = set(self.keyframes.stamps.tolist())
        self._serials = {float(x): int(s) for x, s in zip(arrays["corr_stamps"].tolist(), arrays["corr_serials"].tolist()) if s >= 0 and x in kept}
        self._next_serial = int(arrays["corr_next_serial"])
        frame = np.asarray(arrays["corr_row_frame"], np.int32)[:n_rows]
        live = set(self._serials.values())
        frame = np.where(np.isin(frame, np.fromiter(live, np.int64, len(live))), frame, -1)
        held = np.flatnonzero((self._row_frame[:n_rows] < 0) & (frame >= 0) & (self.keys[:n_rows] >= 0))
        self._claim_rows(held, frame[held].astype(np.int64))
        for oid, anchor, votes in zip(arrays["corr_obj_id"].tolist(), arrays["corr_obj_anchor"].tolist(), arrays["corr_obj_anchor_votes"].tolist()):
            st = self.objects.get(oid)
            if st is not None and not np.isnan(anchor) and anchor in kept:
                st.anchor, st.anchor_votes = float(anchor), int(votes)
                self._anchored.setdefault(float(anchor), set()).add(st.id)

    # ------------------------------------------------------------------ corrections
    def apply_corrections(self, corrections, issued: float | None = None) -> CorrectionStats:
        """Apply a batch of (stamp, corrected 4x4 camera pose): see the module doc."""
        t0 = time.perf_counter()
        res: CorrectionResult = self.keyframes.apply(corrections, issued)
        stats = CorrectionStats(rejected=res.rejected, refused=dict(res.refused), frames=len(res.deltas))
        if res.rejected or not res.deltas:
            stats.seconds = time.perf_counter() - t0
            return stats
        stamps = list(res.deltas)
        deltas = np.stack([res.deltas[s] for s in stamps])
        # Everything that moves leaves first (slots, hits, colours kept), then arrives at its new
        # voxels (see the module doc).
        self._before_move, self._pending_copies = None, None
        if self._per_voxel:
            moved = self._voxel_moves(stamps, deltas, stats)
        else:
            objs = [(oid, j) for j, s in enumerate(stamps) for oid in self.anchored_to(s)]
            ids = sorted({o for o, _ in objs})
            self._before_move = (ids, *self.pair_counts(ids))
            left = [self._take_object(oid, j) for oid, j in objs]
            moved = [_centres(e, deltas, self.voxel_size) for e in left if e is not None]
        copies, self._pending_copies = self._pending_copies, None
        if not moved and copies is None:
            stats.seconds = time.perf_counter() - t0
            return stats
        rows_left = []
        if moved:
            entries = {k: np.concatenate([e[k] for e in moved]) for k in moved[0]}
            first = entries["taken"] == 1
            stats.blocks, stats.block_deltas = _blocks_left(entries["keys"][first], entries["delta"][first], deltas)
            stats.voxels, stats.dropped_voxels = self._place(entries)
            stats.objects = sorted(set(np.unique(entries["ids"]).tolist()))
            rows_left = entries["row"]
        if copies is not None:  # after the moves: only voxels that nothing holds
            at = self._lookup_keys(pack(copies["coords"]))
            empty = np.ones(len(at), bool)
            empty[at >= 0] = ~(self.ids[at[at >= 0]] >= 0).any(axis=1)
            if empty.any():
                stats.voxels += self._place({k: v[empty] for k, v in copies.items()})[0]
                stats.objects = sorted(set(stats.objects) | set(np.unique(copies["ids"][empty]).tolist()))
        self._drop_empty()
        self._release_rows(rows_left)  # storage.py: rows the move emptied (and nothing filled again) are reused
        if self.cfg.merge_interval > 0:
            stats.merged = self.merge_objects(self._before_move)  # pieces that the drift kept apart, now together
        self._before_move = None
        self.version += 1
        stats.seconds = time.perf_counter() - t0
        return stats

    def _lookup_keys(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given voxel keys, -1 where absent (``lookup`` with the blocks found by their
        packed keys: a 1-D unique, not a row-wise one)."""
        if len(keys) == 0:
            return np.zeros(0, np.int64)
        bc, off = block_offsets(unpack(keys))
        ub, inv = np.unique(pack(bc.astype(np.int64)), return_inverse=True)
        return self._rows_of_blocks(self._blocks.find(unpack(ub).astype(np.int32))[inv.reshape(-1)], off)

    def _take_object(self, oid: int, delta: int):
        """Remove ``oid``'s slot from every row holding it; returns its moving entries."""
        rows = self.member_rows(oid)
        slot = (self.ids[rows] == oid).argmax(axis=1)
        n = len(rows)
        entry = {
            "keys": self.keys[rows].copy(), "ids": np.full(n, oid, np.int32), "hits": self.hits[rows, slot].copy(),
            "colors": self.colors[rows].copy(), "color_n": self.color_n[rows].copy(), "delta": np.full(n, delta, np.int64),
            "frame": np.full(n, -1, np.int32), "row": rows.copy(),
        }
        self.ids[rows, slot] = -1
        self.hits[rows, slot] = 0
        self._rows.pop(oid, None)
        self.objects[oid].num_voxels = 0
        self._update_owner(rows)
        self._dirty.add(oid)
        self._lost.add(oid)
        return entry if n else None

    def _voxel_moves(self, stamps: list[float], deltas: np.ndarray, stats: CorrectionStats) -> list[dict]:
        """Voxel grain: the rows the corrected frames' kept pixels fell in go, whole, to every
        voxel those pixels fall in under the corrected poses; rows anchored to a corrected frame
        whose depth is no longer kept go to the voxel of their centre moved by that frame's
        delta. Returns the moving entries (``coords``: where each goes)."""
        vs = self.voxel_size
        j_of = {self._serials[s]: j for j, s in enumerate(stamps)}
        p_rows, p_keys, p_j, plain = [], [], [], []
        c_rows, c_keys, c_serial = [], [], []
        for j, s in enumerate(stamps):
            new_pose = self.keyframes.pose(s)
            pairs = self._depths.key_pairs(self._serials[s], invert(deltas[j]) @ new_pose, new_pose, vs)
            if pairs is None:
                plain.append(self.rows_anchored_to(s))
                continue
            stats.reprojected += 1
            old, new = pairs
            uo, inv = np.unique(old, return_inverse=True)
            rows = self._lookup_keys(uo)[inv.reshape(-1)]
            ok = rows >= 0
            own = ok.copy()
            own[ok] = self._row_frame[rows[ok]] == self._serials[s]  # the rows this frame anchors
            if self.cfg.correction_copies:
                c_rows.append(rows[ok & ~own])
                c_keys.append(new[ok & ~own])
                c_serial.append(np.full(int((ok & ~own).sum()), self._serials[s], np.int64))
            ok = own
            p_rows.append(rows[ok])
            p_keys.append(new[ok])
            p_j.append(np.full(int(ok.sum()), j, np.int64))
        cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)
        pr, pk, pj = cat(p_rows, np.int64), cat(p_keys, np.int64), cat(p_j, np.int64)
        held = (self.ids[pr] >= 0).any(axis=1) if len(pr) else np.zeros(0, bool)
        pr, pk, pj = pr[held], pk[held], pj[held]
        order = np.lexsort((pk, pr))
        pr, pk, pj = pr[order], pk[order], pj[order]
        if len(pr):
            first = np.r_[True, (pr[1:] != pr[:-1]) | (pk[1:] != pk[:-1])]
            pr, pk, pj = pr[first], pk[first], pj[first]
        rows = np.union1d(np.unique(pr), cat(plain, np.int64))
        self._pending_copies = self._copies(cat(c_rows, np.int64), cat(c_keys, np.int64), cat(c_serial, np.int64))
        e = self._take_rows(rows)
        if e is None:
            return []
        lo = np.searchsorted(pr, e["row"], side="left")
        cnt = np.searchsorted(pr, e["row"], side="right") - lo
        # the delta of each entry: its anchoring frame's when that one moved, else the first
        # corrected frame whose pixels fell in its row
        creator = np.array([j_of.get(f, -1) for f in e["frame"].tolist()], np.int64)
        e["delta"] = np.where(creator >= 0, creator, pj[np.minimum(lo, max(len(pj) - 1, 0))] if len(pj) else 0)
        return [_expand(e, lo, cnt, pk, _centres(e, deltas, vs)["coords"])]

    def _copies(self, rows: np.ndarray, keys: np.ndarray, serials: np.ndarray):
        """A corrected frame's kept pixels that fell in rows another frame anchors: what the
        frame saw there (the row's owner, one hit) also goes to the pixels' corrected voxels,
        the rows staying where they are (their own frame moves them, or nothing does)."""
        if len(rows) == 0:
            return None
        own = self.owner[rows]
        ok = own >= 0
        rows, keys, serials, own = rows[ok], keys[ok], serials[ok], own[ok]
        order = np.lexsort((rows, keys))
        rows, keys, serials, own = rows[order], keys[order], serials[order], own[order]
        first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
        rows, keys, serials, own = rows[first], keys[first], serials[first], own[first]
        n = len(rows)
        if n == 0:
            return None
        return {
            "keys": self.keys[rows].copy(), "ids": own.astype(np.int32), "hits": np.ones(n, self.hits.dtype), "colors": self.colors[rows].copy(),
            "color_n": np.ones(n, self.color_n.dtype), "row": np.full(n, -1, np.int64), "frame": serials.astype(np.int32),
            "delta": np.zeros(n, np.int64), "coords": unpack(keys), "taken": np.zeros(n, np.int8),
        }

    def _take_rows(self, rows: np.ndarray):
        """Empty whole voxel rows (every slot); returns their moving entries, one per slot."""
        if len(rows) == 0:
            return None
        r, k = np.nonzero(self.ids[rows] >= 0)
        src = rows[r]
        ids = self.ids[src, k].copy()
        moved = np.unique(ids).tolist()
        self._before_move = (moved, *self.pair_counts(moved))  # for the merge pass that follows
        entry = {
            "keys": self.keys[src].copy(), "ids": ids, "hits": self.hits[src, k].copy(), "colors": self.colors[src].copy(),
            "color_n": self.color_n[src].copy(), "row": src, "frame": self._row_frame[src].copy(), "delta": np.zeros(len(src), np.int64),
        }
        self._lose_slots(ids)
        self.ids[rows] = -1
        self.hits[rows] = 0
        self.color_n[rows] = 0
        self._row_frame[rows] = -1
        self._update_owner(rows)
        return entry

    def _place(self, e: dict) -> tuple[int, int]:
        """Insert moving entries (one object slot each) at their new voxels (``coords``), merged
        with what is there; returns (slots placed, slots dropped)."""
        coords = e["coords"]
        inside = np.all(np.abs(coords) <= MAX_COORD - 8, axis=1)
        keys = pack(np.where(inside[:, None], coords, 0))
        # One entry per (new key, object): the most hits.
        order = np.lexsort((-e["hits"], e["ids"], keys))
        order = order[inside[order]]
        k, i = keys[order], e["ids"][order]
        first = order[np.r_[True, (k[1:] != k[:-1]) | (i[1:] != i[:-1])]] if len(order) else order
        total = len(first) + int((~inside).sum())  # slots to place: one per new voxel and object
        keys, coords = keys[first], coords[first]
        ids, hits, colors, color_n, frame = (e[n][first] for n in ("ids", "hits", "colors", "color_n", "frame"))
        # Rows of the new keys (new blocks and rows where absent).
        uk, at, inv = np.unique(keys, return_index=True, return_inverse=True)
        urows = self._lookup_keys(uk)
        absent = urows < 0
        if absent.any():
            bc, off = block_offsets(coords[at[absent]])
            ub, binv = np.unique(bc, axis=0, return_inverse=True)
            nums = self._blocks.find(ub)
            missing = nums < 0
            if missing.any():
                nums[missing] = self._blocks.insert(ub[missing])
                self._grow_blocks(self._blocks.size)
            urows[absent] = self._insert_voxels(coords[at[absent]], nums[binv.reshape(-1)], off)
        rows = urows[inv.reshape(-1)]
        ok = rows >= 0
        rows, ids, hits, colors, color_n, frame = rows[ok], ids[ok], hits[ok], colors[ok], color_n[ok], frame[ok]
        # Entries sharing a row are merged in rounds (strongest first), each round distinct rows.
        order = np.lexsort((-hits, rows))
        rows, ids, hits, colors, color_n, frame = rows[order], ids[order], hits[order], colors[order], color_n[order], frame[order]
        starts = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
        rank = np.arange(len(rows)) - np.maximum.accumulate(np.where(starts, np.arange(len(rows)), 0))
        placed = 0
        for rnd in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = rank == rnd
            placed += self._merge_slots(rows[sel], ids[sel], hits[sel])
        # Colours (a weighted blend) and anchoring frames from each row's strongest entry.
        first = starts
        r, c, cn = rows[first], colors[first], color_n[first].astype(np.float32)
        n_old = self.color_n[r].astype(np.float32)
        w = n_old + cn
        blend = (self.colors[r] * n_old[:, None] + c * cn[:, None]) / np.maximum(w, 1)[:, None]
        self.colors[r] = np.where((w > 0)[:, None], blend, c)
        self.color_n[r] = np.minimum(w, 20).astype(self.color_n.dtype)
        self.free[r] = 0
        if self._per_voxel:
            f = frame[first]
            self._claim_rows(r[f >= 0], f[f >= 0])
        self._update_owner(r)
        self._merge_touched.append(r)
        return placed, max(0, total - placed)

    def _merge_slots(self, rows: np.ndarray, ids: np.ndarray, hits: np.ndarray) -> int:
        """Merge one (id, hits) slot into each of the distinct ``rows``: the same id keeps the
        larger hits; else a free slot; else the weakest slot when it has fewer hits. Returns the
        entries that found a place."""
        ids_r, hits_r = self.ids[rows], self.hits[rows]
        same = ids_r == ids[:, None]
        has_same = same.any(axis=1)
        s = same.argmax(axis=1)
        self.hits[rows[has_same], s[has_same]] = np.maximum(hits_r[has_same, s[has_same]], hits[has_same])
        free = ids_r < 0
        has_free = free.any(axis=1)
        weakest = np.where(ids_r >= 0, hits_r, np.iinfo(np.int32).max).argmin(axis=1)
        slot = np.where(has_free, free.argmax(axis=1), weakest)
        take = ~has_same & (has_free | (hits_r[np.arange(len(rows)), weakest] < hits))
        r, sl = rows[take], slot[take]
        evicted = self.ids[r, sl]
        self._lose_slots(evicted[evicted >= 0])
        self.ids[r, sl] = ids[take]
        self.hits[r, sl] = hits[take]
        self._add_rows(ids[take].astype(np.int64), r)
        self._dirty.update(np.unique(ids).tolist())
        return int(has_same.sum() + take.sum())


def _blocks_left(keys: np.ndarray, delta: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The blocks the moving entries left (``keys``), each with the delta (index ``delta`` into
    ``deltas``) of most of its entries."""
    if len(keys) == 0:
        return np.zeros((0, 3), np.int32), np.zeros((0, 4, 4))
    bk = pack(block_offsets(unpack(keys))[0].astype(np.int64))
    order = np.lexsort((delta, bk))  # runs of (block, delta)
    bk, delta = bk[order], delta[order]
    start = np.flatnonzero(np.r_[True, (bk[1:] != bk[:-1]) | (delta[1:] != delta[:-1])])
    n = np.diff(np.r_[start, len(bk)])
    rb, rd = bk[start], delta[start]
    order = np.lexsort((-n, rb))  # per block, its largest run first
    first = order[np.r_[True, rb[order][1:] != rb[order][:-1]]]
    return unpack(rb[first]).astype(np.int32), deltas[rd[first]]


def _centres(e: dict, deltas: np.ndarray, voxel_size: float) -> dict:
    """The entries, each going to the voxel of its centre moved by its delta (``coords``)."""
    d = deltas[e["delta"]]
    centres = (unpack(e["keys"]) + 0.5) * voxel_size
    out = dict(e)
    out["coords"] = voxel_coords(np.einsum("nij,nj->ni", d[:, :3, :3], centres) + d[:, :3, 3], voxel_size)
    out["taken"] = np.ones(len(e["keys"]), np.int8)
    return out


def _expand(e: dict, lo: np.ndarray, cnt: np.ndarray, dst: np.ndarray, fallback: np.ndarray) -> dict:
    """Entry i goes to each of the ``cnt[i]`` voxel keys ``dst[lo[i]:lo[i] + cnt[i]]`` (an entry
    may become several), or to ``fallback[i]`` when it has none. ``taken``: 1 on one copy of each
    original entry (for the counts)."""
    n = len(e["keys"])
    have = cnt > 0
    rep = np.where(have, cnt, 1)
    idx = np.repeat(np.arange(n), rep)
    k = np.arange(len(idx)) - np.repeat(np.cumsum(rep) - rep, rep)
    out = {name: v[idx] for name, v in e.items()}
    coords = fallback[idx].copy()
    hv = have[idx]
    coords[hv] = unpack(dst[(lo[idx] + k)[hv]])
    out["coords"] = coords
    out["taken"] = (k == 0).astype(np.int8)
    return out
