"""Free-space evidence, a part of :class:`.object_map.ObjectMap`: a depth frame says which of
the map's voxels it sees through, and voxels seen through often enough are removed.

Per fused depth frame, every ``free_interval``-th (cost follows the frame's frustum blocks, never
the map):

1. The depth image (at the frame's stride) is min-pooled over cells of ``POOL`` x ``POOL``
   pixels; a hole (0 or NaN) makes its cell 0, so a cell is either the nearest valid depth in it
   or "no evidence".
2. Rays through pooled cells are marched from the camera to the cell's depth in steps of half a
   block; the distinct blocks they pass are looked up in the map's block hash. Only those
   blocks' voxel rows are read. The rays are spaced so that neighbouring rays lie at most half a
   block apart at the frame's farthest depth (as along a ray): every cell on a small image, every
   4th at 640x480 with 20 cm blocks and 3.5 m of depth.
3. A voxel (holding any object) is observed empty when the whole image footprint of its
   bounding sphere lies in the image and the nearest depth over that footprint is beyond the
   voxel centre's depth by more than ``max(free_margin_voxels * voxel, free_margin_quadratic *
   z^2)``. A surface point inside the voxel would fall in that footprint at most 0.87 voxel
   behind the centre, so a surface the frame sees inside the voxel (a wall at a grazing angle,
   a thin object) never counts as seen through; holes never count either.
4. Per row, ``free`` counts these observations since the row was last seen occupied (a frame
   whose depth lands in the voxel resets it). A row whose count reaches ``free_min_observations``
   and ``free_ratio`` x its hits (counted up to ``free_hits_cap``) is cleared: its slots emptied,
   its objects lose it. An object whose cleared voxels reach ``free_object_fraction`` of those it
   had is removed whole, and so leaves the next snapshot (publishers send DELETE for it).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .blocks import BLOCK, MAX_DENSE_BLOCK_CELLS

POOL = 4  # pixels per pooled cell side (of the image at the frame's stride)
NEAR = 0.05  # metres: nothing nearer the camera is judged


def _jit(fn):
    return numba.njit(cache=True, nogil=True, fastmath=False)(fn)


def _pool_min(depth, P):
    """Min over P x P cells of a depth image; a cell with any invalid pixel (<= 0, NaN, inf) is 0."""
    h, w = depth.shape
    ph = (h + P - 1) // P
    pw = (w + P - 1) // P
    out = np.empty((ph, pw), np.float32)
    row = np.empty(w, np.float32)
    for pr in range(ph):
        r0 = pr * P
        r1 = min(h, r0 + P)
        for c in range(w):  # branch-free (vectorises): a hole becomes 0, which wins every min
            z = depth[r0, c]
            row[c] = z if (z > 0) and (z < 3.0e38) else np.float32(0.0)
        for r in range(r0 + 1, r1):
            for c in range(w):
                z = depth[r, c]
                v = z if (z > 0) and (z < 3.0e38) else np.float32(0.0)
                row[c] = min(row[c], v)
        for pc in range(pw):
            c0 = pc * P
            m = row[c0]
            for c in range(c0 + 1, min(w, c0 + P)):
                m = min(m, row[c])
            out[pr, pc] = m
    return out


pool_min_kernel = _jit(_pool_min)


def _ray_block(pooled, P, stride, fx, fy, cx, cy, R, t, block_m, pr, pc, k, step):
    """Block coordinates of sample k of the ray through pooled cell (pr, pc)."""
    z = pooled[pr, pc]
    u = (pc * P + 0.5 * P) * stride
    v = (pr * P + 0.5 * P) * stride
    s = min(k * step, z)
    x = (u - cx) / fx * s
    y = (v - cy) / fy * s
    b0 = np.int64(math.floor((R[0, 0] * x + R[0, 1] * y + R[0, 2] * s + t[0]) / block_m))
    b1 = np.int64(math.floor((R[1, 0] * x + R[1, 1] * y + R[1, 2] * s + t[1]) / block_m))
    b2 = np.int64(math.floor((R[2, 0] * x + R[2, 1] * y + R[2, 2] * s + t[2]) / block_m))
    return b0, b1, b2


_ray_block = numba.njit(cache=True, nogil=True, inline="always")(_ray_block)


def _frustum_blocks(pooled, P, stride, fx, fy, cx, cy, R, t, block_m, max_cells):
    """Distinct blocks (block coordinates) passed by rays through pooled cells, from the camera
    to the cell's depth, sampled every half block along and across (module overview, step 2).
    Returns (ok, blocks); ok=False when the block grid of the rays' bounding box exceeds
    ``max_cells``."""
    ph, pw = pooled.shape
    step = 0.5 * block_m
    # The rays' bounding box: that of the camera and the four corner rays at the farthest depth
    # (the frustum is the convex hull of those five points); samples = what the rays will take.
    zmax = np.float64(0.0)
    for pr in range(ph):
        for pc in range(pw):
            z = pooled[pr, pc]
            if z > zmax:
                zmax = np.float64(z)
    every = 1
    if zmax > 0:  # cells between rays: at most half a block apart at zmax
        every = max(1, int(step * min(fx, fy) / (zmax * stride * P)))
    ns = 0
    for pr in range(0, ph, every):
        for pc in range(0, pw, every):
            z = pooled[pr, pc]
            if z > 0:
                ns += int(z / step) + 2
    lo0 = lo1 = lo2 = np.int64(1 << 40)
    hi0 = hi1 = hi2 = np.int64(-(1 << 40))
    if ns == 0:
        return True, np.zeros((0, 3), np.int32)
    for corner in range(5):
        if corner == 0:
            x = y = s = 0.0
        else:
            u = (0.5 * P if corner % 2 else (pw - 0.5) * P) * stride
            v = (0.5 * P if corner < 3 else (ph - 0.5) * P) * stride
            x = (u - cx) / fx * zmax
            y = (v - cy) / fy * zmax
            s = zmax
        b0 = np.int64(math.floor((R[0, 0] * x + R[0, 1] * y + R[0, 2] * s + t[0]) / block_m))
        b1 = np.int64(math.floor((R[1, 0] * x + R[1, 1] * y + R[1, 2] * s + t[1]) / block_m))
        b2 = np.int64(math.floor((R[2, 0] * x + R[2, 1] * y + R[2, 2] * s + t[2]) / block_m))
        lo0, hi0 = min(lo0, b0 - 1), max(hi0, b0 + 1)
        lo1, hi1 = min(lo1, b1 - 1), max(hi1, b1 + 1)
        lo2, hi2 = min(lo2, b2 - 1), max(hi2, b2 + 1)
    if lo0 > hi0:
        return True, np.zeros((0, 3), np.int32)
    d0, d1, d2 = hi0 - lo0 + 1, hi1 - lo1 + 1, hi2 - lo2 + 1
    cells = d0 * d1 * d2
    if cells > max_cells:
        return False, np.zeros((0, 3), np.int32)
    seen = np.zeros(cells, np.uint8)
    out = np.empty((min(cells, ns), 3), np.int32)
    nb = 0
    for pr in range(0, ph, every):
        for pc in range(0, pw, every):
            z = pooled[pr, pc]
            if not (z > 0):
                continue
            for k in range(int(z / step) + 2):
                b0, b1, b2 = _ray_block(pooled, P, stride, fx, fy, cx, cy, R, t, block_m, pr, pc, k, step)
                c = ((b0 - lo0) * d1 + (b1 - lo1)) * d2 + (b2 - lo2)
                if seen[c] == 0:
                    seen[c] = 1
                    out[nb, 0] = b0
                    out[nb, 1] = b1
                    out[nb, 2] = b2
                    nb += 1
    return True, out[:nb].copy()


frustum_blocks_kernel = _jit(_frustum_blocks)


def _seen_through(nums, bcoords, btable, owner, pooled, P, stride, w, h, fx, fy, cx, cy, Rt, tc, voxel, margin_voxels, margin_quad, near, out):
    """The rows (holding an object) of blocks ``nums`` (block coordinates ``bcoords``) that the
    frame sees through (module overview, step 3), written to ``out``; returns their number. A
    voxel's centre comes from its block and its offset (no look-up of its key). One thread: split
    over the fusion threads it ran slower on a loaded 2-core machine (the hand-offs)."""
    S = btable.shape[1]
    n = 0
    rad = 0.8661 * voxel  # bounding sphere of a voxel
    for i in range(nums.shape[0]):
        brow = btable[nums[i]]
        bx = bcoords[i, 0] * float(BLOCK)  # offsets o: (x, y, z) in 3 bits each (blocks.block_offsets)
        by = bcoords[i, 1] * float(BLOCK)
        bz = bcoords[i, 2] * float(BLOCK)
        for o in range(S):
            r = brow[o]
            if r >= 0 and owner[r] >= 0:
                px = (bx + ((o >> 6) & 7) + 0.5) * voxel
                py = (by + ((o >> 3) & 7) + 0.5) * voxel
                pz = (bz + (o & 7) + 0.5) * voxel
                if _through(px, py, pz, pooled, P, stride, w, h, fx, fy, cx, cy, Rt, tc, voxel, margin_voxels, margin_quad, near, rad):
                    out[n] = r
                    n += 1
    return n


seen_through_kernel = _jit(_seen_through)


def _through(px, py, pz, pooled, P, stride, w, h, fx, fy, cx, cy, Rt, tc, voxel, margin_voxels, margin_quad, near, rad):
    """Whether the frame sees through the voxel centred at (px, py, pz) (the test of step 3).
    ``P`` is always POOL (a constant here: the cell of a pixel is a shift, not a division)."""
    x = Rt[0, 0] * px + Rt[0, 1] * py + Rt[0, 2] * pz + tc[0]
    y = Rt[1, 0] * px + Rt[1, 1] * py + Rt[1, 2] * pz + tc[1]
    z = Rt[2, 0] * px + Rt[2, 1] * py + Rt[2, 2] * pz + tc[2]
    if z - rad <= near:
        return False
    iz = 1.0 / (z * stride)
    u = (fx * x + cx * z) * iz
    v = (fy * y + cy * z) * iz
    if not (u >= 0.0 and v >= 0.0 and u < w and v < h):
        return False
    need = z + max(margin_voxels * voxel, margin_quad * z * z)
    # The centre's cell first: a voxel on a seen surface fails there, at once.
    if not (pooled[int(v) // POOL, int(u) // POOL] > need):
        return False
    ir = rad / ((z - rad) * stride)
    ru = fx * ir + 1.0
    rv = fy * ir + 1.0
    u0 = math.floor(u - ru)
    u1 = math.ceil(u + ru)
    v0 = math.floor(v - rv)
    v1 = math.ceil(v + rv)
    if u0 < 0 or v0 < 0 or u1 > w - 1 or v1 > h - 1:
        return False
    for pr in range(v0 // POOL, v1 // POOL + 1):
        for pc in range(u0 // POOL, u1 // POOL + 1):
            if not (pooled[pr, pc] > need):
                return False
    return True


_through = numba.njit(cache=True, nogil=True, inline="always")(_through)


class FreeSpace:
    """Free-space evidence and clearing (a part of :class:`.object_map.ObjectMap`)."""

    def _free_space(self, d: np.ndarray, intr, pose: np.ndarray, stride: int, stats, stamp: float = 0.0) -> None:
        """Count the frame's evidence of empty voxels and clear those seen through often enough;
        then pair removed objects with new ones (moves.py). ``d``: the depth image at ``stride``
        (float32, 0 = invalid)."""
        self._look(d, intr, pose, stride, stats, stamp)
        self._match_moves(stamp, stats)

    def _look(self, d: np.ndarray, intr, pose: np.ndarray, stride: int, stats, stamp: float) -> None:
        cfg = self.cfg
        if not cfg.free_space or self._n == 0 or self.frames % max(1, int(cfg.free_interval)):
            return
        pose = np.asarray(pose, np.float64)
        R, t = pose[:3, :3], pose[:3, 3]
        pooled = pool_min_kernel(d, POOL)
        ok, blocks = frustum_blocks_kernel(
            pooled, POOL, stride, float(intr.fx), float(intr.fy), float(intr.cx), float(intr.cy), R, t, BLOCK * self.voxel_size, MAX_DENSE_BLOCK_CELLS
        )
        if not ok:
            stats.free_skipped = "frustum_too_large"
            return
        if len(blocks) == 0:
            return
        nums = self._blocks.find(blocks)
        found = nums >= 0
        if not found.any():
            return
        nums, bcoords = nums[found], np.ascontiguousarray(blocks[found])
        Rt = np.ascontiguousarray(R.T)
        h, w = d.shape
        out = self._team.scratch("free_rows", (len(nums) * self._btable.shape[1],), np.int64)
        n = seen_through_kernel(
            nums, bcoords, self._btable, self.owner, pooled, POOL, stride, w, h, float(intr.fx), float(intr.fy), float(intr.cx),
            float(intr.cy), Rt, -Rt @ t, self.voxel_size, float(cfg.free_margin_voxels), float(cfg.free_margin_quadratic), NEAR, out,
        )
        seen = out[:n].copy()
        stats.free_voxels = len(seen)
        if len(seen) == 0:
            return
        f = self.free[seen].astype(np.int64) + 1
        self.free[seen] = np.minimum(f, np.iinfo(self.free.dtype).max)
        hits = np.where(self.ids[seen] >= 0, self.hits[seen], 0).sum(axis=1)
        # Hits come from every frame, looks from every free_interval-th: a look stands for that
        # many frames against the hits, but free_min_observations counts looks.
        per_hit = cfg.free_ratio / max(1, int(cfg.free_interval))
        need = np.maximum(int(cfg.free_min_observations), np.ceil(per_hit * np.minimum(hits, int(cfg.free_hits_cap)) - 1e-9))
        clear = seen[f >= need]
        if len(clear):
            self._clear_rows(clear, stats, stamp)

    def _clear_rows(self, rows: np.ndarray, stats, stamp: float = 0.0) -> None:
        """Empty the slots of ``rows`` (observed empty); objects that lost most of their voxels
        this way are removed whole."""
        ids = self.ids[rows]
        gone = ids[ids >= 0]
        for oid in np.unique(gone).tolist():
            st = self.objects.get(oid)
            if st is not None and st.cleared_voxels == 0:
                self._losing(oid)  # its first voxels go: keep it as it was (moves.py)
        self.ids[rows] = -1
        self.hits[rows] = 0
        self.owner[rows] = -1
        self._mark_rows(rows)  # owners changed: snapshot.py's summaries
        self.color_n[rows] = 0
        self.free[rows] = 0
        stats.cleared_voxels += len(rows)
        stats.cleared_keys = np.concatenate([stats.cleared_keys, self.keys[rows]])
        if len(gone) == 0:
            return
        oids, n = np.unique(gone, return_counts=True)
        frac = float(self.cfg.free_object_fraction)
        for oid, k in zip(oids.tolist(), n.tolist()):
            st = self.objects.get(oid)
            if st is None:
                continue
            st.num_voxels -= k
            st.cleared_voxels += k
            self._dirty.add(oid)
            self._lost.add(oid)
            if st.num_voxels > 0 and st.cleared_voxels >= frac * (st.cleared_voxels + st.num_voxels):
                self._departed(oid, stamp)
                self._remove_object(oid)
                stats.removed_objects.append(oid)
            elif st.num_voxels <= 0:
                self._departed(oid, stamp)
                stats.removed_objects.append(oid)
        self._drop_empty()
        self._release_rows(rows)  # storage.py: rows no object holds go back to the free list
        self.version += 1

    def _remove_object(self, oid: int) -> None:
        """Take ``oid`` out of every voxel slot that holds it (the rest of those voxels stay)."""
        rows = self.member_rows(oid)
        if len(rows):
            slot = self.ids[rows] == oid
            self.ids[rows] = np.where(slot, -1, self.ids[rows])
            self.hits[rows] = np.where(slot, 0, self.hits[rows])
            self._update_owner(rows)
            self._release_rows(rows)  # storage.py: those it alone held
        self.objects[oid].num_voxels = 0
        self._lost.add(oid)
        self._dirty.add(oid)
