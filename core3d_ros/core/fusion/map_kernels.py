"""Compiled passes over the map's voxel rows (numba), each one loop where array code would make
several passes with (rows, slots) temporaries:

- ``voxel_rows_kernel``: the map row of each frame voxel, through the block table;
- ``overlaps_kernel``: association's counts, each object's visible part and the (segments x
  objects) intersections;
- ``vote_kernel`` / ``vote_part_kernel``: the slot votes, owners and colours of a frame's rows,
  in one range or in the team's ranges (the same result as the array vote the tests hold as
  its oracle);
- ``map_neighbour_rows_kernel``: the map rows next to frame voxels, for the hidden-side join;
- ``pair_codes_kernel``: the object pairs that share voxels, for the merge pass.
"""
from __future__ import annotations

import numba
import numpy as np

from .blocks import block_step
from .threads import chunk


def _jit(fn, fastmath=True):
    return numba.njit(cache=True, nogil=True, fastmath=fastmath)(fn)


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


def _pair_codes(rows, ids):
    """For the given voxel rows (repeats allowed), ``min(a, b) << 32 | max(a, b)`` for every
    two ids held in one row's slots, in a (not deduplicated) int64 array."""
    K = ids.shape[1]
    n = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        m = 0
        for j in range(K):
            if ids[r, j] >= 0:
                m += 1
        n += m * (m - 1) // 2
    out = np.empty(n, np.int64)
    n = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(K):
            a = ids[r, j]
            if a < 0:
                continue
            for k in range(j + 1, K):
                b = ids[r, k]
                if b < 0:
                    continue
                out[n] = (np.int64(min(a, b)) << 32) | np.int64(max(a, b))
                n += 1
    return out


pair_codes_kernel = _jit(_pair_codes)


def _voxel_rows(block_number, voxel_block, voxel_offset, btable):
    """Map row of each frame voxel: ``btable[block_number[voxel_block[v]], voxel_offset[v]]``,
    -1 where its block is not in the map (``block_number`` -1)."""
    V = voxel_block.shape[0]
    out = np.empty(V, np.int64)
    for v in range(V):
        b = block_number[voxel_block[v]]
        out[v] = btable[b, voxel_offset[v]] if b >= 0 else -1
    return out


voxel_rows_kernel = _jit(_voxel_rows)


def _map_neighbour_rows(cells, map_nbr, btable, offsets):
    """(M, K) map row of the voxel at each of the K offsets (components in [-8, 8]) from each
    frame voxel (``cells``: frame block << 9 | offset), -1 where the map has none;
    ``map_nbr``: (B, 27) map block number of each frame block's neighbouring blocks (column
    (sx+1)*9 + (sy+1)*3 + (sz+1)), -1 where the map has none; ``btable``: (map blocks, 512)
    rows."""
    M = cells.shape[0]
    K = offsets.shape[0]
    out = np.empty((M, K), np.int64)
    for i in range(M):
        cell = cells[i]
        for j in range(K):
            col, off = block_step(cell, offsets[j, 0], offsets[j, 1], offsets[j, 2])
            mb = map_nbr[cell >> 9, col]
            out[i, j] = btable[mb, off] if mb >= 0 else -1
    return out


map_neighbour_rows_kernel = _jit(_map_neighbour_rows)
