"""Compiled per-point and per-voxel loops of the fusion engine (numba): the frame's voxels
from its points (``dedupe_kernel``, the same voxels as the general path of
:class:`.blocks.FrameVoxels`), the overlap counts of association and the slot votes (the same
result as the array vote the tests hold as its oracle).

A numpy pipeline makes ~50 passes over a frame's points (block and voxel indices, two
bincounts, gathers); these loops make one or two.
"""
from __future__ import annotations

import numba
import numpy as np


def _jit(fn, fastmath=True):
    return numba.njit(cache=True, nogil=True, fastmath=fastmath)(fn)


def chunk(n, k, T):
    """Range k of T equal parts of 0..n (rows, pixels, voxels or rows of the map): (start, stop)."""
    step = (n + T - 1) // T
    a = min(n, k * step)
    return a, min(n, a + step)


chunk = numba.njit(cache=True, nogil=True, inline="always")(chunk)


def _dedupe(cx, cy, cz, max_cells, label_flat, pix):
    """The frame's distinct blocks and voxels (see :class:`.blocks.FrameVoxels`), in order of
    first appearance; per voxel its last point (``rep``) and the majority label of its points
    (``label_flat[pix[i]]`` per point i; Boyer-Moore vote, so a voxel on a mask boundary takes
    the label most of its pixels carry). Per-point voxel indices and counts
    are not made (empty arrays): the engine needs only ``rep``. Returns (ok, blocks, voxel, point_voxel, counts, rep, cell_block, vlut, lo, dims);
    ok=False when the block bounding box exceeds ``max_cells``."""
    n = cx.shape[0]
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for a in range(3):
        lo[a] = 1 << 40
        hi[a] = -(1 << 40)
    for i in range(n):
        bx = cx[i] >> 3
        by = cy[i] >> 3
        bz = cz[i] >> 3
        lo[0] = min(lo[0], bx)
        hi[0] = max(hi[0], bx)
        lo[1] = min(lo[1], by)
        hi[1] = max(hi[1], by)
        lo[2] = min(lo[2], bz)
        hi[2] = max(hi[2], bz)
    dims = hi - lo + 1
    if n == 0:
        dims[:] = 1
        lo[:] = 0
    cells = dims[0] * dims[1] * dims[2]
    empty = np.zeros(0, np.int64)
    if cells > max_cells:
        return False, np.zeros((0, 3), np.int32), empty, empty, empty, empty, empty, np.zeros(0, np.int32), lo, dims
    s0 = dims[1] * dims[2]
    s1 = dims[2]
    cell_block = np.full(cells, -1, np.int32)
    all_blocks = np.empty((min(n, cells), 3), np.int32)
    nb = 0
    for i in range(n):
        bx = cx[i] >> 3
        by = cy[i] >> 3
        bz = cz[i] >> 3
        c = (bx - lo[0]) * s0 + (by - lo[1]) * s1 + (bz - lo[2])
        if cell_block[c] < 0:
            cell_block[c] = nb
            all_blocks[nb, 0] = bx
            all_blocks[nb, 1] = by
            all_blocks[nb, 2] = bz
            nb += 1
    blocks = all_blocks[:nb].copy()
    vlut = np.full(nb * 512, -1, np.int32)
    voxel = np.empty(min(n, nb * 512), np.int64)
    rep = np.empty(min(n, nb * 512), np.int64)
    cand = np.zeros(min(n, nb * 512), np.int64)
    votes = np.zeros(min(n, nb * 512), np.int64)
    nv = 0
    for i in range(n):
        c = ((cx[i] >> 3) - lo[0]) * s0 + ((cy[i] >> 3) - lo[1]) * s1 + ((cz[i] >> 3) - lo[2])
        cell = (np.int64(cell_block[c]) << 9) | ((cx[i] & 7) << 6) | ((cy[i] & 7) << 3) | (cz[i] & 7)
        v = vlut[cell]
        if v < 0:
            v = nv
            vlut[cell] = nv
            voxel[nv] = cell
            nv += 1
        rep[v] = i
        lab = np.int64(label_flat[pix[i]])
        if votes[v] == 0:
            cand[v] = lab
            votes[v] = 1
        elif cand[v] == lab:
            votes[v] += 1
        else:
            votes[v] -= 1
    return True, blocks, voxel[:nv].copy(), cand[:nv].copy(), empty, rep[:nv].copy(), cell_block.astype(np.int64), vlut, lo, dims


dedupe_kernel = _jit(_dedupe)


def _vote_range(a, b, rows, oid, ids, hits, owner, colors, color_n, frame_colors, max_weight, g_rows, g_ids, lost, o_old, o_new):
    """Slot voting, owner update and colour blending of rows[a:b] (one id each); same rules
    as ``ObjectMap._vote``. Writes the gained rows and ids, lost ids, and old and new owners
    of rows whose owner changed from position a of the output arrays on; returns the three
    counts. Rows are distinct, so ranges of them can be voted on at the same time."""
    K = ids.shape[1]
    ng = a
    nl = a
    no = a
    for i in range(a, b):
        r = rows[i]
        o = oid[i]
        slot = -1
        free = -1
        weak = 0
        for j in range(K):
            if ids[r, j] == o:
                slot = j
            elif ids[r, j] < 0 and free < 0:
                free = j
            if hits[r, j] < hits[r, weak]:
                weak = j
        if slot >= 0:
            hits[r, slot] += 1
        elif free >= 0:
            ids[r, free] = o
            hits[r, free] = 1
            g_rows[ng] = r
            g_ids[ng] = o
            ng += 1
        elif hits[r, weak] <= 1:
            lost[nl] = ids[r, weak]
            nl += 1
            ids[r, weak] = o
            hits[r, weak] = 1
            g_rows[ng] = r
            g_ids[ng] = o
            ng += 1
        else:
            hits[r, weak] -= 1
        best = -1
        best_hits = -1
        for j in range(K):
            if ids[r, j] >= 0 and hits[r, j] > best_hits:
                best = ids[r, j]
                best_hits = hits[r, j]
        if best != owner[r]:
            o_old[no] = owner[r]
            o_new[no] = best
            no += 1
            owner[r] = best
        n = min(color_n[r], max_weight)
        for c in range(3):
            colors[r, c] += (np.float32(frame_colors[i, c]) - colors[r, c]) / np.float32(n + 1)
        color_n[r] += 1
    return ng - a, nl - a, no - a


def _vote(rows, oid, ids, hits, owner, colors, color_n, frame_colors, max_weight):
    """All rows in one range (see :func:`_vote_range`). Returns (gained rows, gained ids, lost
    ids, old owners, new owners) where the last two list only rows whose owner changed."""
    R = rows.shape[0]
    g_rows = np.empty(R, np.int64)
    g_ids = np.empty(R, np.int32)
    lost = np.empty(R, np.int32)
    o_old = np.empty(R, np.int32)
    o_new = np.empty(R, np.int32)
    ng, nl, no = _vote_range(0, R, rows, oid, ids, hits, owner, colors, color_n, frame_colors, max_weight, g_rows, g_ids, lost, o_old, o_new)
    return g_rows[:ng].copy(), g_ids[:ng].copy(), lost[:nl].copy(), o_old[:no].copy(), o_new[:no].copy()


def _vote_part(k, T, rows, oid, ids, hits, owner, colors, color_n, frame_colors, max_weight, g_rows, g_ids, lost, o_old, o_new, counts):
    """Range k of T of the rows (thread k of a team): :func:`_vote_range`, its counts in
    ``counts[k]``."""
    a, b = chunk(rows.shape[0], k, T)
    ng, nl, no = _vote_range(a, b, rows, oid, ids, hits, owner, colors, color_n, frame_colors, max_weight, g_rows, g_ids, lost, o_old, o_new)
    counts[k, 0] = ng
    counts[k, 1] = nl
    counts[k, 2] = no


_vote_range = numba.njit(cache=True, nogil=True, fastmath=True)(_vote_range)
vote_kernel = _jit(_vote)
vote_part_kernel = _jit(_vote_part)


def _overlaps(rows, seg, ids, n_seg, compact):
    """For the frame's voxels: the objects in their slots (numbered in ``compact``, which must
    be -1 for all ids on entry and is reset on exit), each object's visible count |A ∩ F|, and
    the (segments x objects) intersection counts |S ∩ A|."""
    K = ids.shape[1]
    objs = np.empty(rows.shape[0] * K, np.int64)
    n_obj = 0
    for v in range(rows.shape[0]):
        r = rows[v]
        if r < 0:
            continue
        for j in range(K):
            o = ids[r, j]
            if o >= 0 and compact[o] < 0:
                compact[o] = n_obj
                objs[n_obj] = o
                n_obj += 1
    visible = np.zeros(n_obj, np.float64)
    inter = np.zeros((n_seg, n_obj), np.float64)
    for v in range(rows.shape[0]):
        r = rows[v]
        if r < 0:
            continue
        s = seg[v]
        for j in range(K):
            o = ids[r, j]
            if o >= 0:
                c = compact[o]
                visible[c] += 1
                if s >= 0:
                    inter[s, c] += 1
    for i in range(n_obj):
        compact[objs[i]] = -1
    return objs[:n_obj].copy(), visible, inter


overlaps_kernel = _jit(_overlaps)
