"""Faster compiled kernels of the fusion engine (tested on hand-made and real frames against
plain reference kernels that the tests hold, and against scikit-learn's DBSCAN).

- ``dbscan_padded``: the frame's DBSCAN split with a branch-free neighbour search on several
  threads that packs each voxel's neighbours, a union-find over only those, resolving each
  voxel's root once, and border voxels settled by looking only at the few voxels that are not
  core (a plain DBSCAN rescans every voxel's neighbours).
- ``block_neighbours_kernel``: the 27 neighbouring blocks of each frame block
  (:meth:`.blocks.FrameVoxels.block_neighbours` without numpy temporaries).
- ``pair_codes_kernel``: the object pairs that share voxels, for the merge pass.
"""
from __future__ import annotations

import numba
import numpy as np

from .kernels import chunk
from .team import ThreadTeam


def _sjit(fn):
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


def _step(cell, dx, dy, dz):
    """The voxel at offset (dx, dy, dz), each in [-8, 8], from ``cell`` (block << 9 | offset
    in the block): (column of its block among the 27 around the cell's block, as
    ``block_neighbours`` numbers them, (sx+1)*9 + (sy+1)*3 + (sz+1); its offset in that block)."""
    o = cell & 511
    lx = (o >> 6) + dx
    ly = ((o >> 3) & 7) + dy
    lz = (o & 7) + dz
    return ((lx >> 3) + 1) * 9 + ((ly >> 3) + 1) * 3 + ((lz >> 3) + 1), ((lx & 7) << 6) | ((ly & 7) << 3) | (lz & 7)


_step = numba.njit(cache=True, nogil=True, inline="always")(_step)


def _clusters(voxel, vlut, nbr, labels, offsets, nbtab, nboff, nfwd, degree, min_samples, min_size):
    """The DBSCAN split after its neighbour search (``nbtab[v, :nfwd[v]]``: v's neighbours at
    the forward offsets, in offset order, and ``nboff`` their offsets' numbers; ``degree``:
    neighbours per voxel; ``vlut`` and ``nbr`` padded with the absent block, as
    :func:`_neighbours` takes them): core voxels, their union-find, border voxels and the
    segment numbers of :func:`dbscan_padded`."""
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
        for i in range(nfwd[v]):
            u = nbtab[v, i]
            if core[u]:
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
    # Border points: not core, within eps of a core point -> that core point's cluster. A plain
    # loop over the pairs (v ascending, then offset j) gives a border voxel x the cluster of the
    # first pair it meets: (c, j) with c core and x its neighbour at offset j, or (x, j) with
    # x's neighbour at offset j core. So: the core neighbour with the smallest c * K + j.
    for x in range(V):
        if core[x] or labels[x] <= 0 or degree[x] == 0:
            continue
        lab = labels[x]
        best = -1
        key = np.int64(1) << 62
        for i in range(nfwd[x]):  # in offset order: the first core one has the smallest j
            u = nbtab[x, i]
            if core[u]:
                key = np.int64(x) * K + nboff[x, i]
                best = u
                break
        cell = voxel[x]
        for j in range(K):  # the voxels that have x at offset j: x - offset j
            col, off = _step(cell, -offsets[j, 0], -offsets[j, 1], -offsets[j, 2])
            u = vlut[(nbr[cell >> 9, col] << 9) | off]
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


cluster_kernel = _sjit(_clusters)


def _neighbours(k, T, voxel, vlut, nbr, labels, offsets, nbtab, nboff, nfwd, degrees):
    """Part k of T of the DBSCAN split's neighbour search, branch-free: ``vlut`` carries one
    more block of -1 after the frame's B blocks (the "absent" block) and ``nbr`` names block B
    where a neighbouring block is absent (no -1), so every look-up is the same few loads, with
    no test of whether it leaves the voxel's block or finds a voxel (those branches go either
    way at random on a surface and cost most of a plain search's time). For the voxels of range
    k: its neighbours with v's label at the (forward) offsets, packed in offset order into
    ``nbtab[v, :nfwd[v]]`` with the offsets' numbers in ``nboff`` (so the clustering visits
    only the neighbours there are, about 4 of 13 on a surface); each pair found counts for both
    ends in this part's own row ``degrees[k]`` (summed over the parts by the caller), so no two
    threads write one array. Offsets must lie in [-8, 8]."""
    V = voxel.shape[0]
    K = offsets.shape[0]
    a, b = chunk(V, k, T)
    degree = degrees[k]
    degree[:] = 0
    for v in range(a, b):
        lab = labels[v]
        n = 0
        if lab > 0:
            cell = voxel[v]
            vb = cell >> 9
            for j in range(K):
                col, off = _step(cell, offsets[j, 0], offsets[j, 1], offsets[j, 2])
                u = vlut[(nbr[vb, col] << 9) | off]
                uu = max(u, 0)
                m = (u >= 0) & (labels[uu] == lab)
                nbtab[v, n] = uu  # kept only when m (n moves on): no branch
                nboff[v, n] = j
                n += m
                degree[uu] += m  # adds 0 to voxel 0 when there is no neighbour
            degree[v] += n
        nfwd[v] = n


neighbours_kernel = _sjit(_neighbours)


def dbscan_padded(voxel, vlut, nbr, labels, offsets, min_samples, min_size, team: ThreadTeam | None = None, beside=None):
    """DBSCAN of each label's voxels at once (``labels`` > 0; 0: unlabelled, never clustered),
    neighbours within ``offsets`` (the half-neighbourhood of :func:`.split.neighbour_offsets`)
    through the frame's block table (``voxel``: block << 9 | offset; ``vlut``: voxel of each
    cell; ``nbr``: (B, 27) neighbouring blocks, -1 where absent); a voxel is core with at least
    ``min_samples`` voxels of its label within eps, itself included, as in scikit-learn. Returns
    per voxel its segment: clusters of at least ``min_size`` voxels, numbered 0, 1, ... in
    order of their first voxel, or -1 (noise, small cluster, unlabelled). A border voxel joins
    the cluster of the core neighbour met first in a scan of the neighbour pairs (voxel v
    ascending, then offset j from v).
    The neighbour search runs on the ``team``'s threads (one part of the voxels each); the
    clusters (union-find, border voxels, numbering) on this thread while a worker runs
    ``beside()`` (Python). Returns the segments, or (segments, beside's result) when ``beside``
    is given. Without a team: one thread, in turn. ``vlut`` may hold the absent block (length
    at least (B + 1) * 512, as :func:`.pixels.depth_voxels` makes it); otherwise a padded copy
    is made."""
    B = nbr.shape[0]
    if vlut.shape[0] < (B + 1) * 512:  # depth_voxels makes it with the absent block; else a copy
        padded = np.full((B + 1) * 512, -1, np.int32)
        padded[: B * 512] = vlut[: B * 512]
        vlut = padded
    nbr = np.where(nbr >= 0, nbr, B)
    team = team or ThreadTeam(1)
    V, K = voxel.shape[0], offsets.shape[0]
    side = beside or (lambda: None)
    if V == 0:
        out = (np.zeros(0, np.int64), side())
    else:
        nbtab = team.scratch("dbscan_nbtab", (V, K))
        nboff = team.scratch("dbscan_nboff", (V, K), np.int16)
        nfwd = team.scratch("dbscan_nfwd", (V,))
        degrees = team.scratch("dbscan_degrees", (team.threads, V))
        team.run(neighbours_kernel, voxel, vlut, nbr, labels, offsets, nbtab, nboff, nfwd, degrees)
        degree = degrees[0] if team.threads == 1 else degrees.sum(axis=0, dtype=np.int32)
        args = (voxel, vlut, nbr, labels, offsets, nbtab, nboff, nfwd, degree, min_samples, min_size)
        out = team.beside(cluster_kernel, args, side)
    return out if beside is not None else out[0]


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


def _gather_rows(colors, rows):
    """``colors[rows]`` for (N, 3) uint8 colours."""
    V = rows.shape[0]
    out = np.empty((V, 3), np.uint8)
    for v in range(V):
        p = rows[v]
        out[v, 0] = colors[p, 0]
        out[v, 1] = colors[p, 1]
        out[v, 2] = colors[p, 2]
    return out


gather_rows_kernel = _sjit(_gather_rows)


def _voxel_rows(block_number, voxel_block, voxel_offset, btable):
    """Map row of each frame voxel: ``btable[block_number[voxel_block[v]], voxel_offset[v]]``,
    -1 where its block is not in the map (``block_number`` -1)."""
    V = voxel_block.shape[0]
    out = np.empty(V, np.int64)
    for v in range(V):
        b = block_number[voxel_block[v]]
        out[v] = btable[b, voxel_offset[v]] if b >= 0 else -1
    return out


voxel_rows_kernel = _sjit(_voxel_rows)


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
            col, off = _step(cell, offsets[j, 0], offsets[j, 1], offsets[j, 2])
            mb = map_nbr[cell >> 9, col]
            out[i, j] = btable[mb, off] if mb >= 0 else -1
    return out


map_neighbour_rows_kernel = _sjit(_map_neighbour_rows)
