"""Faster compiled kernels of the fusion engine, with results identical to the reference
kernels in :mod:`.kernels` (tested against them on hand-made and real frames).

- ``dbscan_kernel``: the frame's DBSCAN split (see :func:`.kernels._dbscan`) with its union-find
  resolving each voxel's root once, and border voxels settled by looking only at the few voxels
  that are not core (the reference rescans every voxel's neighbours).
- ``block_neighbours_kernel``: the 27 neighbouring blocks of each frame block
  (:meth:`.blocks.FrameVoxels.block_neighbours` without numpy temporaries).
- ``pair_codes_kernel``: the object pairs that share voxels, for the merge pass.
"""
from __future__ import annotations

import numpy as np

from .kernels import HAVE_NUMBA

if HAVE_NUMBA:
    import numba


def _sjit(fn):
    if not HAVE_NUMBA:
        return None
    return numba.njit(cache=True, nogil=True, fastmath=True)(fn)


def _block_neighbours(blocks, cell_block, lo, dims):
    """(B, 27) frame-block index of each block's neighbours (column (sx+1)*9 + (sy+1)*3 + (sz+1)),
    -1 where absent; as :meth:`.blocks.FrameVoxels.block_neighbours`."""
    B = blocks.shape[0]
    out = np.empty((B, 27), np.int64)
    s0 = dims[1] * dims[2]
    s1 = dims[2]
    for b in range(B):
        for sx in range(-1, 2):
            rx = blocks[b, 0] + sx - lo[0]
            for sy in range(-1, 2):
                ry = blocks[b, 1] + sy - lo[1]
                for sz in range(-1, 2):
                    rz = blocks[b, 2] + sz - lo[2]
                    col = (sx + 1) * 9 + (sy + 1) * 3 + (sz + 1)
                    if 0 <= rx < dims[0] and 0 <= ry < dims[1] and 0 <= rz < dims[2]:
                        out[b, col] = cell_block[rx * s0 + ry * s1 + rz]
                    else:
                        out[b, col] = -1
    return out


block_neighbours_kernel = _sjit(_block_neighbours)


def _clusters(voxel, vlut, nbr, labels, offsets, delta, nbtab, degree, min_samples, min_size):
    """The DBSCAN split after its neighbour table (``nbtab``: (V, K) neighbour voxel or -1;
    ``degree``: neighbours per voxel): core voxels, their union-find, border voxels and the
    segment numbers, as :func:`_dbscan` and :func:`_dbscan_padded` share them."""
    V = voxel.shape[0]
    K = offsets.shape[0]
    parent = np.arange(V)
    core = np.zeros(V, np.bool_)
    for v in range(V):
        core[v] = labels[v] > 0 and degree[v] + 1 >= min_samples
    for v in range(V):
        if not core[v]:
            continue
        rv = v
        while parent[rv] != rv:
            rv = parent[rv]
        for j in range(K):
            u = nbtab[v, j]
            if u >= 0 and core[u]:
                ru = u
                while parent[ru] != ru:
                    parent[ru] = parent[parent[ru]]
                    ru = parent[ru]
                if ru != rv:
                    if ru < rv:
                        parent[rv] = ru
                        rv = ru
                    else:
                        parent[ru] = rv
    # Roots are the smallest index of their set and parents are smaller than their children:
    # one ascending pass resolves every root.
    out = np.full(V, -1, np.int64)
    for v in range(V):
        if core[v]:
            p = parent[v]
            out[v] = v if p == v else out[p]
    # Border points: not core, within eps of a core point -> that core point's cluster. The
    # reference loop (v ascending, then offset j) gives a border voxel x the cluster of the
    # first pair it meets: (c, j) with c core and x its neighbour at offset j, or (x, j) with
    # x's neighbour at offset j core. So: the core neighbour with the smallest c * K + j.
    for x in range(V):
        if core[x] or labels[x] <= 0 or degree[x] == 0:
            continue
        lab = labels[x]
        best = -1
        key = np.int64(1) << 62
        for j in range(K):
            u = nbtab[x, j]
            if u >= 0 and core[u]:
                kk = np.int64(x) * K + j
                if kk < key:
                    key = kk
                    best = u
        cell = voxel[x]
        vb = cell >> 9
        o = cell & 511
        ox = o >> 6
        oy = (o >> 3) & 7
        oz = o & 7
        for j in range(K):
            lx = ox - offsets[j, 0]
            ly = oy - offsets[j, 1]
            lz = oz - offsets[j, 2]
            if (lx | ly | lz) & ~7 == 0:
                u = vlut[cell - delta[j]]
            else:
                b = nbr[vb, ((lx >> 3) + 1) * 9 + ((ly >> 3) + 1) * 3 + ((lz >> 3) + 1)]
                u = vlut[(b << 9) | ((lx & 7) << 6) | ((ly & 7) << 3) | (lz & 7)] if b >= 0 else -1
            if u >= 0 and core[u] and labels[u] == lab:
                kk = np.int64(u) * K + j
                if kk < key:
                    key = kk
                    best = u
        if best >= 0:
            out[x] = out[best]
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


_cluster_stage = _sjit(_clusters) or _clusters


def _dbscan(voxel, vlut, nbr, labels, offsets, min_samples, min_size):
    """Same contract and result as :func:`.kernels._dbscan` (the reference), faster: the
    neighbour table is written only for labelled voxels (no (V, K) fill), a neighbour inside
    the voxel's own block (most of them) is found at a fixed cell distance without the
    block-neighbour table, and the loops after the first skip unlabelled voxels."""
    V = voxel.shape[0]
    K = offsets.shape[0]
    nbtab = np.empty((V, K), np.int32)
    degree = np.zeros(V, np.int32)
    delta = np.empty(K, np.int64)
    for j in range(K):
        delta[j] = offsets[j, 0] * 64 + offsets[j, 1] * 8 + offsets[j, 2]
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
            if (lx | ly | lz) & ~7 == 0:  # inside the same block
                u = vlut[cell + delta[j]]
            else:
                b = nbr[vb, ((lx >> 3) + 1) * 9 + ((ly >> 3) + 1) * 3 + ((lz >> 3) + 1)]
                u = vlut[(b << 9) | ((lx & 7) << 6) | ((ly & 7) << 3) | (lz & 7)] if b >= 0 else -1
            if u >= 0 and labels[u] == lab:
                nbtab[v, j] = u
                degree[v] += 1
                degree[u] += 1
            else:
                nbtab[v, j] = -1
    return _cluster_stage(voxel, vlut, nbr, labels, offsets, delta, nbtab, degree, min_samples, min_size)


dbscan_kernel = _sjit(_dbscan)


def _dbscan_padded(voxel, vlut, nbr, labels, offsets, min_samples, min_size):
    """:func:`_dbscan` (same result) with a branch-free neighbour search: ``vlut`` carries one
    more block of -1 after the frame's B blocks (the "absent" block) and ``nbr`` names block B
    where a neighbouring block is absent (no -1), so every neighbour look-up is the same few
    loads, with no test of whether it leaves the voxel's block or finds a voxel (those branches
    go either way at random on a surface and cost most of the reference's time). Offsets must
    lie in [-8, 8]. See :func:`dbscan_padded`."""
    V = voxel.shape[0]
    K = offsets.shape[0]
    nbtab = np.empty((V, K), np.int32)
    degree = np.zeros(V, np.int32)
    delta = np.empty(K, np.int64)
    for j in range(K):
        delta[j] = offsets[j, 0] * 64 + offsets[j, 1] * 8 + offsets[j, 2]
    if V == 0:
        return np.zeros(0, np.int64)
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
            b = nbr[vb, ((lx >> 3) + 1) * 9 + ((ly >> 3) + 1) * 3 + ((lz >> 3) + 1)]
            u = vlut[(b << 9) | ((lx & 7) << 6) | ((ly & 7) << 3) | (lz & 7)]
            uu = max(u, 0)
            m = (u >= 0) & (labels[uu] == lab)
            nbtab[v, j] = u if m else -1
            degree[v] += m
            degree[uu] += m  # adds 0 to voxel 0 when there is no neighbour
    return _cluster_stage(voxel, vlut, nbr, labels, offsets, delta, nbtab, degree, min_samples, min_size)


dbscan_padded_kernel = _sjit(_dbscan_padded)


def dbscan_padded(voxel, vlut, nbr, labels, offsets, min_samples, min_size):
    """:func:`_dbscan`'s arguments and result, run by :func:`_dbscan_padded`: ``vlut`` may
    already hold the absent block (length at least (B + 1) * 512, as
    :func:`_dedupe_bounded` makes it); otherwise a padded copy is made."""
    B = nbr.shape[0]
    if vlut.shape[0] < (B + 1) * 512:
        padded = np.full((B + 1) * 512, -1, np.int32)
        padded[: B * 512] = vlut[: B * 512]
        vlut = padded
    nbr = np.where(nbr >= 0, nbr, B)
    return dbscan_padded_kernel(voxel, vlut, nbr, labels, offsets, min_samples, min_size)


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


pair_codes_kernel = _sjit(_pair_codes)


def _backproject_bounds(depth_flat, rx, ry, M, t, cx, cy, cz, index, fbounds):
    """:func:`.kernels._backproject` (same outputs, same arithmetic) that also writes the
    smallest and largest world coordinate per axis (voxel units, before flooring) into
    ``fbounds`` ((2, 3) float64: row 0 the minima, row 1 the maxima); the overall smallest and
    largest it returns are their minimum and maximum, so it tracks no more than the reference.
    Floored, they are the per-axis bounds of the voxel coordinates (flooring is monotonic), so
    that the deduplication needs no pass of its own to find the frame's block bounding box."""
    size = depth_flat.shape[0]
    m00, m01, m02 = np.float32(M[0, 0]), np.float32(M[0, 1]), np.float32(M[0, 2])
    m10, m11, m12 = np.float32(M[1, 0]), np.float32(M[1, 1]), np.float32(M[1, 2])
    m20, m21, m22 = np.float32(M[2, 0]), np.float32(M[2, 1]), np.float32(M[2, 2])
    t0, t1, t2 = np.float32(t[0]), np.float32(t[1]), np.float32(t[2])
    l0 = l1 = l2 = np.float32(np.inf)
    h0 = h1 = h2 = np.float32(-np.inf)
    k = 0
    for i in range(size):
        z = depth_flat[i]
        if z > 0:
            x = rx[i] * z
            y = ry[i] * z
            w0 = m00 * x + m01 * y + m02 * z + t0
            w1 = m10 * x + m11 * y + m12 * z + t1
            w2 = m20 * x + m21 * y + m22 * z + t2
            l0 = min(l0, w0)
            h0 = max(h0, w0)
            l1 = min(l1, w1)
            h1 = max(h1, w1)
            l2 = min(l2, w2)
            h2 = max(h2, w2)
            cx[k] = np.int32(np.floor(w0))
            cy[k] = np.int32(np.floor(w1))
            cz[k] = np.int32(np.floor(w2))
            index[k] = i
            k += 1
    fbounds[0, 0] = l0
    fbounds[0, 1] = l1
    fbounds[0, 2] = l2
    fbounds[1, 0] = h0
    fbounds[1, 1] = h1
    fbounds[1, 2] = h2
    return k, min(l0, min(l1, l2)), max(h0, max(h1, h2))


backproject_bounds_kernel = _sjit(_backproject_bounds)


def _dedupe_bounded(cx, cy, cz, ibounds, max_cells, label_flat, pix):
    """:func:`.kernels._dedupe` (same contract, identical outputs except that ``vlut`` has one
    more block, all -1, after the frame's blocks: the absent block of :func:`_dbscan_padded`) given the points' voxel
    coordinate bounds (``ibounds``, (2, 3): minima, maxima; from :func:`_backproject_bounds`):
    no bounds pass; the block pass skips points in the same block as the point before; the
    voxel pass looks a voxel up only when the point's voxel differs from the point before's
    (neighbouring pixels mostly share a voxel); per-voxel arrays are not zero-filled."""
    n = cx.shape[0]
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for a in range(3):
        if n == 0:
            lo[a] = 0
            hi[a] = 0
        else:
            lo[a] = ibounds[0, a] >> 3
            hi[a] = ibounds[1, a] >> 3
    dims = hi - lo + 1
    cells = dims[0] * dims[1] * dims[2]
    empty = np.zeros(0, np.int64)
    if cells > max_cells:
        return False, np.zeros((0, 3), np.int32), empty, empty, empty, empty, empty, np.zeros(0, np.int32), lo, dims
    s0 = dims[1] * dims[2]
    s1 = dims[2]
    cell_block = np.full(cells, -1, np.int32)
    all_blocks = np.empty((min(n, cells), 3), np.int32)
    nb = 0
    prev = np.int64(-1)
    for i in range(n):
        bx = cx[i] >> 3
        by = cy[i] >> 3
        bz = cz[i] >> 3
        c = (bx - lo[0]) * s0 + (by - lo[1]) * s1 + (bz - lo[2])
        if c == prev:
            continue
        prev = c
        if cell_block[c] < 0:
            cell_block[c] = nb
            all_blocks[nb, 0] = bx
            all_blocks[nb, 1] = by
            all_blocks[nb, 2] = bz
            nb += 1
    blocks = all_blocks[:nb].copy()
    vlut = np.full((nb + 1) * 512, -1, np.int32)  # one more block of -1: see _dbscan_padded
    m = min(n, nb * 512)
    voxel = np.empty(m, np.int64)
    rep = np.empty(m, np.int64)
    cand = np.empty(m, np.int64)
    votes = np.empty(m, np.int64)
    nv = 0
    px = np.int32(0)
    py = np.int32(0)
    pz = np.int32(0)
    v = -1
    for i in range(n):
        x = cx[i]
        y = cy[i]
        z = cz[i]
        if v < 0 or x != px or y != py or z != pz:
            px = x
            py = y
            pz = z
            c = ((x >> 3) - lo[0]) * s0 + ((y >> 3) - lo[1]) * s1 + ((z >> 3) - lo[2])
            cell = (np.int64(cell_block[c]) << 9) | ((x & 7) << 6) | ((y & 7) << 3) | (z & 7)
            v = vlut[cell]
            if v < 0:
                v = nv
                vlut[cell] = nv
                voxel[nv] = cell
                votes[nv] = 0
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


dedupe_bounded_kernel = _sjit(_dedupe_bounded)


def _gather_colors(colors, pix, rep):
    """``colors[pix[rep]]`` for (N, 3) uint8 colours: each voxel's representative pixel's colour."""
    V = rep.shape[0]
    out = np.empty((V, 3), np.uint8)
    for v in range(V):
        p = pix[rep[v]]
        out[v, 0] = colors[p, 0]
        out[v, 1] = colors[p, 1]
        out[v, 2] = colors[p, 2]
    return out


gather_colors_kernel = _sjit(_gather_colors)
