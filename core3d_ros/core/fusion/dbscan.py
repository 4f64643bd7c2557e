"""The DBSCAN split of masks' 3-D voxels (CORE-3D step 1): each mask's voxels in a frame are
clustered by DBSCAN, so that objects touching in the image but not in space separate.

The points clustered are voxel centres, so DBSCAN's eps-neighbourhood is a fixed set of integer
voxel offsets (``neighbour_offsets``), looked up through the frame's block table.
``dbscan_padded`` clusters all masks at once: a branch-free neighbour search on the team's
threads that packs each voxel's neighbours, a union-find over only those, resolving each voxel's
root once, and border voxels settled by looking only at the few voxels that are not core (a
plain DBSCAN rescans every voxel's neighbours). Tested against scikit-learn's DBSCAN and,
numbering included, against a plain reference kernel that the tests hold.
"""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

from .blocks import block_step
from .threads import ThreadTeam, chunk


def _sjit(fn):
    return numba.njit(cache=True, nogil=True, fastmath=True)(fn)


@lru_cache(maxsize=8)
def neighbour_offsets(eps_voxels: float) -> np.ndarray:
    """Half of the integer offsets within Euclidean distance eps_voxels: one of each pair
    (o, -o), which is all a symmetric neighbourhood needs."""
    r = int(np.floor(eps_voxels))
    g = np.arange(-r, r + 1)
    off = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    norm = np.linalg.norm(off, axis=1)
    positive = np.array([tuple(o) > (0, 0, 0) for o in off])
    return off[(norm > 0) & (norm <= eps_voxels + 1e-9) & positive]


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
            col, off = block_step(cell, -offsets[j, 0], -offsets[j, 1], -offsets[j, 2])
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
                col, off = block_step(cell, offsets[j, 0], offsets[j, 1], offsets[j, 2])
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
    neighbours within ``offsets`` (the half-neighbourhood of :func:`neighbour_offsets`)
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
