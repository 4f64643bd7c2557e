"""Oracles of the fusion tests: plain versions of passes that the engine runs compiled (or
runs faster), kept here because only the tests use them (import: ``from fusion_reference import
array_vote``).

- ``backproject_kernel``: a depth image's valid pixels to voxel coordinates, one pixel at a
  time; with the engine's ``dedupe_kernel`` it is the one-thread reference of the threaded
  per-pixel stage (:func:`core3d_ros.core.fusion.pixels.depth_voxels`).
- ``dbscan_kernel``: the frame's DBSCAN split in its plainest form (every voxel's neighbours
  looked up, a union-find, border voxels by a second scan); the engine's branch-free, threaded
  ``dbscan_padded`` must give the same segments, numbering included. It is itself checked
  against scikit-learn.
- ``array_vote`` / ``array_blend_colors``: the slot vote and colour blend in array code.
"""
from __future__ import annotations

import numba
import numpy as np


def _backproject(depth_flat, rx, ry, M, t, cx, cy, cz, index):
    """Valid pixels of a (sub-sampled, flattened) depth image -> voxel coordinates (world / voxel
    size, floored) as three int32 rows, the pixels' indices, and the smallest and largest
    coordinate before flooring (for the caller's range check). Writes into the given work
    arrays (reused across frames) and returns how many pixels were valid."""
    size = depth_flat.shape[0]
    m00, m01, m02 = np.float32(M[0, 0]), np.float32(M[0, 1]), np.float32(M[0, 2])
    m10, m11, m12 = np.float32(M[1, 0]), np.float32(M[1, 1]), np.float32(M[1, 2])
    m20, m21, m22 = np.float32(M[2, 0]), np.float32(M[2, 1]), np.float32(M[2, 2])
    t0, t1, t2 = np.float32(t[0]), np.float32(t[1]), np.float32(t[2])
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    k = 0
    for i in range(size):
        z = depth_flat[i]
        if z > 0:
            x = rx[i] * z
            y = ry[i] * z
            w0 = m00 * x + m01 * y + m02 * z + t0
            w1 = m10 * x + m11 * y + m12 * z + t1
            w2 = m20 * x + m21 * y + m22 * z + t2
            lo = min(lo, min(w0, min(w1, w2)))
            hi = max(hi, max(w0, max(w1, w2)))
            cx[k] = np.int32(np.floor(w0))
            cy[k] = np.int32(np.floor(w1))
            cz[k] = np.int32(np.floor(w2))
            index[k] = i
            k += 1
    return k, lo, hi


# Voxel coordinates are computed without fast-math: in IEEE order and without fused
# multiply-adds, as the engine's per-pixel stage computes them, so that both floor the same
# value and put a point in the same voxel.
backproject_kernel = numba.njit(cache=True, nogil=True, fastmath=False)(_backproject)


def _find_root(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def _dbscan(voxel, vlut, nbr, labels, offsets, min_samples, min_size):
    """DBSCAN of each label's voxels at once (labels > 0), neighbours through the frame's block
    table. Returns per voxel its segment (clusters of at least ``min_size`` voxels, numbered
    0, 1, ... in order of their first voxel) or -1 (noise, small cluster or unlabelled)."""
    V = voxel.shape[0]
    K = offsets.shape[0]
    nbtab = np.full((V, K), -1, np.int32)
    degree = np.zeros(V, np.int64)
    for v in range(V):
        lab = labels[v]
        if lab <= 0:
            continue
        cell = voxel[v]
        vb = cell >> 9
        o = cell & 511
        ox = o >> 6
        oy = (o >> 3) & 7
        oz = o & 7
        for j in range(K):
            lx = ox + offsets[j, 0]
            ly = oy + offsets[j, 1]
            lz = oz + offsets[j, 2]
            col = ((lx >> 3) + 1) * 9 + ((ly >> 3) + 1) * 3 + ((lz >> 3) + 1)
            b = nbr[vb, col]
            if b < 0:
                continue
            u = vlut[(b << 9) | ((lx & 7) << 6) | ((ly & 7) << 3) | (lz & 7)]
            if u < 0 or labels[u] != lab:
                continue
            nbtab[v, j] = u
            degree[v] += 1
            degree[u] += 1
    parent = np.arange(V)
    core = np.zeros(V, np.bool_)
    for v in range(V):
        core[v] = labels[v] > 0 and degree[v] + 1 >= min_samples
    for v in range(V):
        if not core[v]:
            continue
        for j in range(K):
            u = nbtab[v, j]
            if u >= 0 and core[u]:
                ru = _find_root(parent, u)
                rv = _find_root(parent, v)
                if ru != rv:
                    if ru < rv:
                        parent[rv] = ru
                    else:
                        parent[ru] = rv
    out = np.full(V, -1, np.int64)
    for v in range(V):
        if core[v]:
            out[v] = _find_root(parent, v)
    # Border points: not core, within eps of a core point -> that core point's cluster.
    for v in range(V):
        for j in range(K):
            u = nbtab[v, j]
            if u < 0:
                continue
            if core[v] and not core[u] and out[u] < 0:
                out[u] = out[v]
            elif core[u] and not core[v] and out[v] < 0:
                out[v] = out[u]
    # Segments: clusters of at least min_size voxels, numbered 0.. in order of first voxel.
    size = np.zeros(V, np.int64)
    for v in range(V):
        if out[v] >= 0:
            size[out[v]] += 1
    number = np.full(V, -1, np.int64)
    n = 0
    for v in range(V):
        root = out[v]
        if root >= 0 and size[root] >= min_size and number[root] < 0:
            number[root] = n
            n += 1
    for v in range(V):
        out[v] = number[out[v]] if out[v] >= 0 else -1
    return out


_find_root = numba.njit(cache=True, nogil=True)(_find_root)
dbscan_kernel = numba.njit(cache=True, nogil=True, fastmath=True)(_dbscan)


def array_vote(omap, rows: np.ndarray, oid) -> None:
    """The slot vote in array code: one observation of object ``oid[i]`` (or one id for all)
    added to the slots of ``rows[i]`` (distinct rows), with the rules of ``ObjectMap._vote``:
    a row holding the id gains a hit; else it takes a free slot; else its weakest slot is
    replaced when it had one hit and loses a hit otherwise. Colours are left as they are
    (:func:`array_blend_colors`). Tests also use it to plant ids in a map outside a frame."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return
    oid = np.broadcast_to(np.asarray(oid, np.int32), rows.shape)
    ids = omap.ids[rows]
    hits = omap.hits[rows]
    match = ids == oid[:, None]
    has = match.any(axis=1)
    # 1. Rows that already hold oid: one more hit.
    r = np.flatnonzero(has)
    omap.hits[rows[r], match[r].argmax(axis=1)] += 1
    # 2. Rows with a free slot: take it.
    free = (ids < 0) & ~has[:, None]
    fr = np.flatnonzero(free.any(axis=1))
    j = free[fr].argmax(axis=1)
    omap.ids[rows[fr], j] = oid[fr]
    omap.hits[rows[fr], j] = 1
    gained_rows, gained_ids = [rows[fr]], [oid[fr]]
    # 3. Full rows: the weakest slot loses a hit, or is replaced when it had one.
    r = np.flatnonzero(~has & ~free.any(axis=1))
    if len(r):
        j = hits[r].argmin(axis=1)
        replace = hits[r, j] <= 1
        rr, jj = rows[r[replace]], j[replace]
        lost, n_lost = np.unique(omap.ids[rr, jj], return_counts=True)
        for old, n in zip(lost.tolist(), n_lost.tolist()):
            omap.objects[old].num_voxels -= n
            omap._dirty.add(old)
            omap._lost.add(old)
        omap.ids[rr, jj] = oid[r[replace]]
        omap.hits[rr, jj] = 1
        gained_rows.append(rr)
        gained_ids.append(oid[r[replace]])
        keep = r[~replace]
        omap.hits[rows[keep], j[~replace]] -= 1
    omap._add_rows(np.concatenate(gained_ids), np.concatenate(gained_rows))
    omap._update_owner(rows)


def array_blend_colors(omap, rows: np.ndarray, colors: np.ndarray, max_weight: int = 20) -> None:
    """The colour blend of ``ObjectMap._vote`` in array code: a running mean over at most
    ``max_weight`` observations."""
    n = np.minimum(omap.color_n[rows], max_weight).astype(np.float32)
    omap.colors[rows] += (colors.astype(np.float32) - omap.colors[rows]) / (n + 1)[:, None]
    omap.color_n[rows] += 1
