"""Fusing one frame into the map, a part of :class:`.object_map.ObjectMap` (the steps are in
:mod:`.object_map`'s overview). Its cost follows the frame, not the map: the frame's voxels come
from the per-pixel stage (:mod:`.pixels`) or, for point clouds, :class:`~.blocks.FrameVoxels`;
each mask's voxels are split by DBSCAN (:mod:`.dbscan`) while a worker finds them in the map;
segments are associated (:mod:`.association`), pieces of one thing merged (:mod:`.merging`),
then voxel slots vote and masks' embeddings go to their objects.
"""
from __future__ import annotations

import numpy as np

from .blocks import MAX_DENSE_BLOCK_CELLS, FrameVoxels, gather_rows_kernel
from .dbscan import dbscan_padded, neighbour_offsets
from .map_kernels import vote_kernel, vote_part_kernel, voxel_rows_kernel
from .pixels import depth_voxels
from .records import IntegrationStats, ObjectState, SegmentObservation
from .threads import chunk
from .voxels import MAX_COORD, voxel_coords

_RAYS: dict = {}


def _rays(intr, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sampled pixel (row-major), (u - cx) / fx and (v - cy) / fy as float32 (cached)."""
    key = (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy, stride)
    r = _RAYS.get(key)
    if r is None:
        rx, ry = _ray_axes(intr, stride)
        r = (np.tile(rx, len(ry)), np.repeat(ry, len(rx)))
        if len(_RAYS) > 8:
            _RAYS.clear()
        _RAYS[key] = r
    return r


def _ray_axes(intr, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(u - cx) / fx per sampled column and (v - cy) / fy per sampled row, float32 (what
    :func:`_rays` repeats per pixel)."""
    rx = ((np.arange(0, intr.width, stride) - intr.cx) / intr.fx).astype(np.float32)
    ry = ((np.arange(0, intr.height, stride) - intr.cy) / intr.fy).astype(np.float32)
    return rx, ry


class FrameIntegration:
    """Fusing frames (a part of :class:`.object_map.ObjectMap`): ``integrate_frame`` for depth
    images, ``integrate_points`` for point clouds."""

    def integrate_frame(
        self,
        depth: np.ndarray,
        intrinsics,
        pose: np.ndarray,
        rgb: np.ndarray,
        labels: np.ndarray,
        stamp: float,
        observations: list[SegmentObservation] | None = None,
        stride: int = 1,
    ) -> IntegrationStats:
        """Fuse one RGB-D frame: depth (H, W) float32 metres (0 = invalid), camera-to-world
        pose, rgb (H, W, 3) uint8 and a label image (H, W) (0 = no mask, i = mask i, whose
        observation is ``observations[i - 1]``). Every ``stride``-th pixel is used."""
        if labels.shape != depth.shape:
            raise ValueError(f"label image {labels.shape} does not match depth {depth.shape}")
        H, W = depth.shape
        d = np.ascontiguousarray(depth[::stride, ::stride] if stride > 1 else depth, dtype=np.float32)
        flat = d.reshape(-1)
        min_valid = max(1, int(getattr(self.cfg, "min_valid_pixels", 1)) // (stride * stride))
        scale = 1.0 / self.voxel_size
        M = np.asarray(pose[:3, :3], np.float64) * scale
        t = np.asarray(pose[:3, 3], np.float64) * scale
        lab = labels[::stride, ::stride] if stride > 1 else labels
        rxs, rys = _ray_axes(intrinsics, stride)
        dv = depth_voxels(self._team, d, rxs, rys, M, t, np.ascontiguousarray(lab).reshape(-1), min_valid, MAX_COORD - 8, MAX_DENSE_BLOCK_CELLS)
        if dv.status in ("few_valid_depth", "out_of_range"):
            return IntegrationStats(rejected=dv.status, stride=stride, points=dv.points)
        if dv.status == "ok":
            fv = FrameVoxels.from_depth(dv)
            colors = rgb[::stride, ::stride] if stride > 1 else rgb
            frame_colors = gather_rows_kernel(np.ascontiguousarray(colors, dtype=np.uint8).reshape(-1, 3), fv.rep)
            stats = IntegrationStats(points=dv.points, stride=stride, voxels=len(fv))
            stats = self._integrate_voxels(fv, frame_colors, fv.label, stamp, observations, stats)
            self._free_space(d, intrinsics, pose, stride, stats, stamp)
            return stats
        # "too_large": a view frustum whose block grid exceeds the dense limit takes the general
        # path: back-projection with array code, then the points' own blocks (FrameVoxels).
        n_valid = int(np.count_nonzero(flat > 0))
        if n_valid < min_valid:
            return IntegrationStats(rejected="few_valid_depth", stride=stride, points=n_valid)
        rx, ry = _rays(intrinsics, stride)
        valid = np.flatnonzero(flat > 0)
        z = flat[valid]
        x = rx[valid]
        x *= z
        y = ry[valid]
        y *= z
        # World coordinates in voxel units, one contiguous row per axis (3 multiply-adds each).
        R = np.asarray(pose[:3, :3], np.float64) * scale
        t = np.asarray(pose[:3, 3], np.float64) * scale
        coords = np.empty((3, len(valid)), np.int32)
        w = np.empty(len(valid), np.float32)
        tmp = np.empty(len(valid), np.float32)
        for i in range(3):
            np.multiply(x, np.float32(R[i, 0]), out=w)
            w += np.multiply(y, np.float32(R[i, 1]), out=tmp)
            w += np.multiply(z, np.float32(R[i, 2]), out=tmp)
            w += np.float32(t[i])
            lo, hi = float(w.min()), float(w.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or max(-lo, hi) > MAX_COORD - 8:
                return IntegrationStats(rejected="out_of_range", stride=stride, points=len(valid))
            np.floor(w, out=w)
            coords[i] = w
        stats = self._finish_frame(coords, valid, stride, W, rgb, labels, stamp, observations)
        self._free_space(d, intrinsics, pose, stride, stats, stamp)
        return stats

    def _finish_frame(self, coords, valid, stride, W, rgb, labels, stamp, observations) -> IntegrationStats:
        if stride > 1:  # pixel index in the full image
            w = (W + stride - 1) // stride
            pix = (valid // w) * stride * W + (valid % w) * stride
        else:
            pix = valid
        stats = IntegrationStats(points=len(valid), stride=stride)
        return self._integrate_coords(coords, rgb.reshape(-1, 3), labels.reshape(-1), pix, stamp, observations, stats)

    def integrate_points(
        self,
        points: np.ndarray,
        colors: np.ndarray,
        labels: np.ndarray,
        stamp: float,
        observations: list[SegmentObservation] | None = None,
    ) -> IntegrationStats:
        """Fuse one frame given as points: (N, 3) world points, (N, 3) uint8 colours, (N,) labels
        (0 = no mask, i = mask i, whose observation is ``observations[i - 1]``). The point-level
        entry, used by the tests and for offline point clouds; depth images take
        :meth:`integrate_frame`."""
        points = np.asarray(points)
        stats = IntegrationStats(points=len(points))
        if len(points) == 0:
            stats.rejected = "no_points"
            return stats
        if not np.all(np.isfinite(points)):
            stats.rejected = "bad_points"
            return stats
        coords = voxel_coords(points, self.voxel_size)
        if np.abs(coords).max() > MAX_COORD - 8:
            stats.rejected = "out_of_range"
            return stats
        coords = np.ascontiguousarray(coords.T.astype(np.int32))
        return self._integrate_coords(coords, np.asarray(colors), np.asarray(labels), np.arange(len(points)), stamp, observations, stats)

    def _integrate_coords(self, coords, colors, labels, pix, stamp, observations, stats) -> IntegrationStats:
        """``coords``: (3, N) int32 voxel coordinates of the frame's points; ``colors`` and ``labels``
        indexed by ``pix`` (the points' pixels)."""
        fv = FrameVoxels(coords, labels=labels, pix=pix)
        V = len(fv)
        stats.voxels = V
        # Per frame voxel, one representative point (the last one written) gives its colour and
        # label: the points of one voxel lie on the same bit of surface.
        if fv.rep is not None:
            rep = pix[fv.rep]
        else:
            rep = np.empty(V, np.int64)
            rep[fv.point_voxel] = pix
        if colors.dtype == np.uint8 and colors.ndim == 2 and colors.shape[1] == 3:
            frame_colors = gather_rows_kernel(np.ascontiguousarray(colors), rep)
        else:
            frame_colors = colors[rep]
        vlabel = fv.label if fv.label is not None else labels[rep].astype(np.int64)
        return self._integrate_voxels(fv, frame_colors, vlabel, stamp, observations, stats)

    def _integrate_voxels(self, fv: FrameVoxels, frame_colors, vlabel, stamp, observations, stats) -> IntegrationStats:
        """Fuse the frame's distinct voxels: ``frame_colors`` (V, 3) uint8 and ``vlabel`` (V,)
        their colour and majority label."""
        cfg = self.cfg
        V = len(fv)

        # 3-D segments: DBSCAN of each mask's voxels (all masks at once). Meanwhile, on a worker
        # thread: the frame's blocks in the map and the map rows of its voxels (-1: new).
        vb, vo = fv.voxel_block, fv.voxel_offset

        def map_rows():
            fblock_num = self._blocks.find(fv.blocks)
            # compiled: no (V,) temporaries, and it leaves the interpreter lock
            return fblock_num, voxel_rows_kernel(fblock_num, vb, vo, self._btable)

        seg, (fblock_num, rows) = self._segments(fv, vlabel, beside=map_rows)
        self.free[rows[rows >= 0]] = 0  # seen occupied: free-space evidence starts again
        n_seg = int(seg.max()) + 1 if V else 0
        stats.segments = n_seg
        if n_seg == 0:
            self.frames += 1
            self.version += 1
            return stats
        in_seg = seg >= 0
        seg_size = np.bincount(seg[in_seg], minlength=n_seg)
        seg_label = np.zeros(n_seg, np.int64)
        seg_label[seg[in_seg]] = vlabel[in_seg]

        targets = self._associate(rows, seg, seg_size, seg_label)
        if cfg.hidden_side_voxels > 0:
            self._hidden_sides(fv, seg, seg_size, rows, targets)
        new = targets < 0
        stats.created = int(new.sum())
        stats.associated = n_seg - stats.created
        for s in np.flatnonzero(new).tolist():
            targets[s] = self.next_id
            self.objects[self.next_id] = ObjectState(id=self.next_id, first_seen=stamp)
            self._lost.add(self.next_id)  # dropped at the end of the frame if it got no voxel
            self.next_id += 1

        stats.merged += self._merge_unions()
        targets = np.array([self._resolve(t) for t in targets.tolist()], np.int64)

        # New voxels of segments: new blocks first, then rows.
        sv = np.flatnonzero(in_seg)
        need = sv[rows[sv] < 0]
        if len(need):
            nb_need = np.unique(vb[need])
            absent = nb_need[fblock_num[nb_need] < 0]
            if len(absent):
                numbers = self._blocks.insert(fv.blocks[absent])
                self._grow_blocks(self._blocks.size)
                fblock_num[absent] = numbers
            vcoords = fv.blocks[vb[need]].astype(np.int64) * 8 + np.stack([(vo[need] >> 6) & 7, (vo[need] >> 3) & 7, vo[need] & 7], axis=1)
            rows[need] = self._insert_voxels(vcoords, fblock_num[vb[need]], vo[need])
            stats.dropped_voxels = int((rows[need] < 0).sum())
        ok = sv[rows[sv] >= 0]
        r = rows[ok]
        t = targets[seg[ok]].astype(np.int32)
        self._vote(r, t, frame_colors[ok])
        self._note_touched(r)

        if cfg.co_mask_votes > 0:
            stats.merged += self._co_mask_evidence(targets, seg_label)
            targets = np.array([self._resolve(t) for t in targets.tolist()], np.int64)
        touched = np.unique(targets)
        for oid in touched.tolist():
            st = self.objects[oid]
            st.num_observations += 1  # one observation per object and frame
            st.last_seen = stamp
        self._dirty.update(touched.tolist())
        stats.touched = set(touched.tolist())
        if observations is not None:
            self._observe(targets, seg_size, seg_label, observations)

        self.frames += 1
        if cfg.merge_interval > 0 and self.frames % cfg.merge_interval == 0:
            stats.merged += self.merge_objects()
        self._drop_empty()
        self._alias.clear()
        self.version += 1
        return stats

    def _segments(self, fv: FrameVoxels, vlabel: np.ndarray, beside=lambda: None):
        """Per frame voxel, its 3-D segment (-1: none): DBSCAN within each mask's voxels, parts
        smaller than ``min_segment_voxels`` dropped as noise. ``beside``: Python work that a
        worker thread does while the compiled clustering runs (in turn with one thread).
        Returns (segments, beside's result)."""
        cfg = self.cfg
        V = len(vlabel)
        labelled = vlabel > 0
        if not labelled.any():
            return np.full(V, -1, np.int64), beside()
        if getattr(cfg, "dbscan_split", True):
            return dbscan_padded(
                fv.voxel, fv._vlut, fv.block_neighbours(), vlabel, neighbour_offsets(cfg.dbscan_eps_voxels),
                int(cfg.dbscan_min_samples), int(cfg.min_segment_voxels), team=self._team, beside=beside,
            )
        # Without the split: one segment per mask (those of at least min_segment_voxels voxels).
        comp = np.where(labelled, vlabel, -1)
        keep = comp >= 0
        _, dense = np.unique(comp[keep], return_inverse=True)
        seg = np.full(V, -1, np.int64)
        seg[keep] = dense.reshape(-1)
        size = np.bincount(seg[keep])
        big = size >= cfg.min_segment_voxels
        remap = np.full(len(size), -1, np.int64)
        remap[big] = np.arange(int(big.sum()))
        seg[keep] = remap[seg[keep]]
        return seg, beside()

    def _vote(self, rows: np.ndarray, oid: np.ndarray, colors: np.ndarray, max_weight: int = 20) -> None:
        """Add one observation of object ``oid[i]`` to the slots of ``rows[i]`` (distinct rows)
        and blend ``colors[i]`` into its colour, in one compiled pass (on the team's threads
        for many rows). A row that holds ``oid`` gains a hit; else it takes a free slot; else
        its weakest slot is replaced when it had one hit, and loses a hit otherwise. Owners
        follow the slots."""
        args = (rows, oid, self.ids, self.hits, self.owner, self.colors, self.color_n, np.ascontiguousarray(colors, np.uint8), max_weight)
        T = self._team.threads
        if T == 1 or len(rows) < 4096:
            g_rows, g_ids, lost, o_old, o_new = vote_kernel(*args)
        else:  # the rows are distinct: ranges of them are voted on by the team at once
            R = len(rows)
            out = (np.empty(R, np.int64),) + tuple(np.empty(R, np.int32) for _ in range(4))
            counts = np.zeros((T, 3), np.int64)
            self._team.run(vote_part_kernel, *args, *out, counts)
            starts = [chunk(R, k, T)[0] for k in range(T)]
            pick = lambda a, col: np.concatenate([a[s : s + int(counts[k, col])] for k, s in enumerate(starts)])
            g_rows, g_ids = pick(out[0], 0), pick(out[1], 0)
            lost = pick(out[2], 1)
            o_old, o_new = pick(out[3], 2), pick(out[4], 2)
        self._mark_rows(rows)  # colours (and some owners) changed: snapshot.py's summaries
        self._lose_slots(lost)
        self._add_rows(g_ids.astype(np.int64), g_rows)
        if len(o_old):
            self._dirty.update(np.unique(np.concatenate([o_old, o_new])).tolist())

    def _observe(self, targets, seg_size, seg_label, observations: list[SegmentObservation]) -> None:
        """Embeddings and best views: each segment adds its mask's embedding weighted by its share
        of the mask's voxels, so the parts of a split mask each carry their own part of it."""
        mask_total = np.bincount(seg_label, weights=seg_size)
        for s, oid in enumerate(targets.tolist()):
            m = int(seg_label[s]) - 1
            if not 0 <= m < len(observations):
                continue
            o = observations[m]
            st = self.objects[oid]
            st.add_embedding(o.embedding, float(seg_size[s] / max(mask_total[m + 1], 1)))
            if o.view_crop is not None and o.view_quality > st.best_view_quality:
                st.best_view_quality = o.view_quality
                st.best_view = o.view_crop
                self._note_view(oid)  # storage.py: views within fusion.best_view_budget_mb

    def _drop_empty(self) -> None:
        """Remove objects left without voxels; only objects that lost voxels (or were created
        this frame) can have emptied."""
        for oid in [o for o in self._lost if o in self.objects and self.objects[o].num_voxels <= 0]:
            del self.objects[oid]
            self._rows.pop(oid, None)
            self._dirty.add(oid)
            if self._pair_votes:
                for b in self._pair_votes.pop(oid, {}):
                    self._pair_votes.get(b, {}).pop(oid, None)
        self._lost = set()
