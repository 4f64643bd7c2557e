"""Association of a frame's 3-D segments with the map's objects, a part of
:class:`.object_map.ObjectMap`: intersection over volume against each object's visible part
and CORE-3D's balanced test, decided against the map before the frame (step 3 of
:mod:`.object_map`'s overview), and the hidden side of thin things, which no IoV can join.
"""
from __future__ import annotations

import numpy as np

from .blocks import FrameVoxels
from .map_kernels import map_neighbour_rows_kernel, overlaps_kernel
from .voxels import MAX_COORD, pack


def balanced(iov_ab, iov_ba, gamma: float, delta: float):
    """CORE-3D test: both IoVs above gamma and close to each other."""
    return (iov_ab > gamma) & (iov_ba > gamma) & (np.abs(iov_ab - iov_ba) < delta)


# The 27 block steps (-1..1 per axis) from a block to itself and its neighbours.
_BLOCK_STEPS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.int64)


class Association:
    """Which object each segment of a frame is (a part of :class:`.object_map.ObjectMap`);
    pairs that the evidence says are one thing are left in ``_unions`` for merging."""

    def _associate(self, rows: np.ndarray, seg: np.ndarray, seg_size: np.ndarray, seg_label: np.ndarray) -> np.ndarray:
        """Target object per segment (-1: a new object), decided against the map before this frame.

        For each mask and candidate object A, the mask's segments lying mostly inside A
        (|S ∩ A| > gamma |S|) are taken together, as the mask saw them. Their union U passes when
        IoV(U, A) and IoV(A_visible, U) pass the balanced test; a segment joins the passing
        candidate with the best score, min(IoV(U, A), IoV(A_visible, U)). A_visible is A's
        voxels among the frame's segmented voxels.
        """
        gamma = self.cfg.gamma
        n_seg = len(seg_size)
        targets = np.full(n_seg, -1, np.int64)
        self._unions = []
        # An object's voxels that the frame saw but that lie in no segment (no mask there: depth
        # edges, holes, masks dropped as too small or unsure, DBSCAN noise) say nothing about
        # which mask is the object: its visible part is what the frame's segments cover.
        rows = np.where(seg >= 0, rows, -1)
        known = rows >= 0
        if not known.any():
            return targets
        if len(self._compact) < self.next_id + 1:
            self._compact = np.full(2 * (self.next_id + 1), -1, np.int64)
        objs, visible, inter = overlaps_kernel(rows, seg, self.ids, n_seg, self._compact)
        n_obj = len(objs)
        sk = seg[known]
        # A segment's voxels that the map has never seen say nothing for or against an object:
        # a view that extends a known object into new space must still find it. So the segment
        # side of the test counts the segment's known voxels only.
        if self.cfg.iov_known_only:
            seg_size = np.bincount(sk[sk >= 0], minlength=n_seg)
        inside = inter > gamma * seg_size[:, None]
        targets = self._choose(targets, inter, inside, visible, objs, seg_size, seg_label, n_seg, n_obj, rows, known)
        return targets

    def _choose(self, targets, inter, inside, visible, objs, seg_size, seg_label, n_seg, n_obj, rows, known):
        gamma, delta = self.cfg.gamma, self.cfg.delta
        # Per mask (dense over the masks present): union of its inside segments per object.
        masks, seg_mask = np.unique(seg_label, return_inverse=True)
        order = np.argsort(seg_mask, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(seg_mask[order]) != 0])
        U = np.add.reduceat((inter * inside)[order], starts, axis=0)
        US = np.add.reduceat((inside * seg_size[:, None].astype(np.float64))[order], starts, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iov_u = np.where(US > 0, U / np.maximum(US, 1), 0.0)
            iov_o = U / np.maximum(visible[None, :], 1)
        score = np.where(balanced(iov_u, iov_o, gamma, delta) & (US > 0), np.minimum(iov_u, iov_o), 0.0)
        seg_score = score[seg_mask] * inside
        best = seg_score.argmax(axis=1)
        has = seg_score[np.arange(n_seg), best] > 0
        targets[has] = objs[best[has]]
        self._unions = []
        share = self.cfg.union_min_share
        if share > 0:
            # A segment holding most of the visible part of two or more objects, each a real
            # share of it, whose union passes the balanced test against the segment: the
            # segmenter saw them as one thing, so they are merged and the segment joins them.
            contained = (inter > gamma * visible[None, :]) & (inter >= share * seg_size[:, None])
            slot = None  # the slots of the frame's known voxels, read once when needed
            for s in np.flatnonzero(contained.sum(axis=1) >= 2).tolist():
                group = objs[contained[s]]
                in_union = float(inter[s, contained[s]].sum())
                if slot is None:
                    slot = self.ids[rows[known]]
                visible_union = float(np.isin(slot, group).any(axis=1).sum())
                if balanced(in_union / seg_size[s], in_union / max(visible_union, 1), gamma, delta):
                    group = sorted(group.tolist(), key=lambda o: -self.objects[o].num_voxels)
                    targets[s] = group[0]
                    self._unions.append(group)
        return targets

    def _hidden_sides(self, fv: FrameVoxels, seg: np.ndarray, seg_size: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> None:
        """The other face of a thin thing: a segment that shows space the map has not seen (it
        founds a new object, or most of its voxels are new) joins an object the frame does not
        see when the two lie next to each other (within ``hidden_side_voxels``) over most of
        both. The front and the back of a thin thing (a screen, a door, a board) are never in
        one view and share no voxel, so neither the IoV test nor the co-mask evidence can join
        them. The object must be unseen in this frame (no segment went to it) and, where the
        segment went to an existing object, the two must never have been seen in one frame:
        what is seen together is no hidden side, which keeps a book apart from the table under
        it and a box from the wall behind it. Both shares must pass the balanced test (gamma,
        delta), so a small piece does not join a large object it touches, nor the reverse.
        Costs the new-space segments' voxels times the (2r+1)^3 neighbourhood."""
        n_seg = len(seg_size)
        in_seg = seg >= 0
        fresh = np.bincount(seg[in_seg & (rows < 0)], minlength=n_seg)
        check = np.flatnonzero(fresh > self.cfg.gamma * seg_size)
        if len(check) == 0 or not self.objects:
            return
        r = int(self.cfg.hidden_side_voxels)
        in_check = np.isin(seg, check)
        # Along the axes only (6 r voxels, not (2r+1)^3): a face within r voxels of the other
        # is met along the axis nearest its normal.
        steps = np.arange(1, r + 1)
        offs = np.concatenate([np.eye(3, dtype=np.int64)[None] * k for k in np.r_[steps, -steps]]).reshape(-1, 3)
        if r <= 8:
            # A voxel within r <= 8 voxels of another lies in its block or one of the 26 around
            # it: the map blocks around the frame blocks of the segments' voxels, found once,
            # give every neighbour's map row by block arithmetic. While the camera explores,
            # most new space has no map block around it and is skipped.
            has = np.zeros(len(fv.blocks), bool)
            has[fv.voxel_block[in_check]] = True
            ub = np.flatnonzero(has)
            around = self._blocks.find((fv.blocks[ub][:, None, :] + _BLOCK_STEPS[None]).reshape(-1, 3)).reshape(len(ub), 27)
            map_nbr = np.full((len(fv.blocks), 27), -1, np.int64)
            map_nbr[ub] = around
            in_check &= (map_nbr >= 0).any(axis=1)[fv.voxel_block]
            if not in_check.any():
                return
            vseg = seg[in_check]
            nrows = map_neighbour_rows_kernel(fv.voxel[in_check], map_nbr, self._btable, offs).reshape(-1)
            n_src = len(vseg)
        else:  # farther than the blocks around (the configuration bounds r at 8): look the neighbours up
            coords = fv.voxel_coords()[in_check]
            vseg = seg[in_check]
            near = (coords[:, None, :] + offs[None, :, :]).reshape(-1, 3)
            if near.min() < -MAX_COORD // 2 or near.max() > MAX_COORD // 2:
                return
            nrows = self.lookup(pack(near))
            n_src = len(coords)
        src = np.repeat(np.arange(n_src), len(offs))
        hit = nrows >= 0
        src, nrows = src[hit], nrows[hit]
        own = self.owner[nrows].astype(np.int64)
        # Candidates: objects no segment of this frame went to, other than the segment's own.
        ok = (own >= 0) & ~np.isin(own, targets[targets >= 0])  # the frame's objects, not every id issued
        src, nrows, own = src[ok], nrows[ok], own[ok]
        if len(own) == 0:
            return
        sseg = vseg[src]
        gamma, delta = self.cfg.gamma, self.cfg.delta
        taken: set[int] = set()
        for s in np.unique(sseg).tolist():
            t = int(targets[s])
            mine = sseg == s
            best, best_score = -1, 0.0
            for a in np.unique(own[mine]).tolist():
                if a in taken or a not in self.objects:
                    continue
                if t >= 0 and self._pair_votes.get(t, {}).get(a) is not None:
                    continue  # seen in one frame before: two things
                pick = mine & (own == a)
                seg_share = len(np.unique(src[pick])) / max(int(seg_size[s]), 1)
                obj_share = len(np.unique(nrows[pick])) / max(self.objects[a].num_voxels, 1)
                if balanced(seg_share, obj_share, gamma, delta) and min(seg_share, obj_share) > best_score:
                    best, best_score = a, min(seg_share, obj_share)
            if best < 0:
                continue
            taken.add(best)
            if t < 0:
                targets[s] = best
            else:
                big, small = (best, t) if self.objects[best].num_voxels >= self.objects[t].num_voxels else (t, best)
                self._unions.append([big, small])
