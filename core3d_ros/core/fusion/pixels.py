"""The per-pixel stage of fusing a depth frame, on several threads: valid pixels -> the
frame's distinct voxels, each with its last pixel and the majority label of its pixels. The
result is identical to a one-thread pass over the pixels in order (back-projection, then
:func:`.blocks.dedupe_kernel`; the tests hold that reference): same voxels, same order, same
labels.

A 640x480 frame has 300 k pixels but only ~20 k distinct voxels at 2.5 cm, so this stage is
most of a frame's fusion time. The frame's blocks (8^3 voxels) are indexed in a dense grid over
the view frustum's bounding box, and each grid cell belongs to one of T threads (a hash of the
cell). Two compiled passes on T threads, then a merge:

1. ``_keys`` (row range k): each pixel with depth becomes a key (grid cell << 9 | the voxel's
   offset in its block); runs of consecutive pixels with one key and one label are appended
   to the list of the thread that owns their block.
2. ``_voxels`` (thread o): over its own runs, in pixel order, its blocks and voxels numbered
   in order of first appearance, and each voxel's last pixel and the Boyer-Moore majority of
   its labels (a run is its pixels' steps at once). Every pixel of a voxel is seen by one
   thread, in order, so these are the one-thread pass's.
3. ``_merge`` (one thread): blocks and voxels renumbered by first pixel, which is the
   one-thread numbering, and the frame's voxel table.

The passes release the interpreter lock and run on ordinary Python threads (:class:`.threads.ThreadTeam`):
no OpenMP pool spinning between frames beside the rest of the process.
"""
from __future__ import annotations

import numba
import numpy as np

from .threads import ThreadTeam, chunk


def _sjit(fn, fastmath=True):
    return numba.njit(cache=True, nogil=True, fastmath=fastmath)(fn)


def _owner(c, T):
    """The thread that owns grid cell c: a multiplicative hash of c onto 0..T-1 (neighbouring
    blocks go to different threads, so each gets a share of any view)."""
    return np.int64((((c * np.int64(2654435761)) & np.int64(0xFFFFFFFF)) * T) >> 32)


_owner = numba.njit(cache=True, nogil=True, inline="always")(_owner)


def _keys(k, T, depth, rxs, rys, M, t, lo, dims, label_flat, keys, runs, counts):
    """Pass 1 for row range k of T of the (h, w) depth image. First, branch-free (it
    vectorises): ``keys[i]`` (i = row * w + column) = grid cell << 9 | offset of the pixel's
    voxel in its block, -1 without depth. Then the pixels with depth, in pixel order, as runs:
    a run is consecutive pixels with one key and one label (on a 7-Scenes frame 3.4 pixels on
    average at 2.5 cm, 1.8 at 1 cm). Each run is appended to the list of the thread that owns
    its block: ``runs[:, o, k, :counts[k, o]]`` = (key, first pixel, pixels, label), and
    ``counts[k, T]`` is the range's pixels with depth. A point outside the grid (the grid holds
    the whole view frustum, so only a numerical slip could do this) makes ``counts[k, 0]`` -1
    and the caller takes the general path."""
    h, w = depth.shape
    a, b = chunk(h, k, T)
    m00, m01, m02 = np.float32(M[0, 0]), np.float32(M[0, 1]), np.float32(M[0, 2])
    m10, m11, m12 = np.float32(M[1, 0]), np.float32(M[1, 1]), np.float32(M[1, 2])
    m20, m21, m22 = np.float32(M[2, 0]), np.float32(M[2, 1]), np.float32(M[2, 2])
    t0, t1, t2 = np.float32(t[0]), np.float32(t[1]), np.float32(t[2])
    lo0, lo1, lo2 = np.int32(lo[0]), np.int32(lo[1]), np.int32(lo[2])
    d0, d1, d2 = np.uint32(dims[0]), np.uint32(dims[1]), np.uint32(dims[2])
    s0 = np.int32(dims[1] * dims[2])
    s1 = np.int32(dims[2])
    bad = False
    for r in range(a, b):
        ry = rys[r]
        base = r * w
        for u in range(w):
            z = depth[r, u]
            x = rxs[u] * z
            y = ry * z
            c0 = np.int32(np.floor(m00 * x + m01 * y + m02 * z + t0))
            c1 = np.int32(np.floor(m10 * x + m11 * y + m12 * z + t1))
            c2 = np.int32(np.floor(m20 * x + m21 * y + m22 * z + t2))
            r0 = (c0 >> 3) - lo0
            r1 = (c1 >> 3) - lo1
            r2 = (c2 >> 3) - lo2
            ok = z > 0
            bad |= ok & ((np.uint32(r0) >= d0) | (np.uint32(r1) >= d1) | (np.uint32(r2) >= d2))
            key = ((r0 * s0 + r1 * s1 + r2) << 9) | ((c0 & 7) << 6) | ((c1 & 7) << 3) | (c2 & 7)
            keys[base + u] = key if ok else np.int32(-1)
    if bad:
        counts[k, 0] = -1
        return
    cnt = np.zeros(T, np.int64)
    prev = np.int32(-1)
    o = 0
    n = np.int64(0)  # the current owner's count, kept in a register while the block stays
    rkey = np.int32(-1)  # the run being read: key, label, first pixel, pixels
    rlab = np.int32(0)
    rfirst = 0
    rlen = 0
    pixels = 0
    last = -2  # the previous pixel with depth
    for i in range(a * w, b * w):
        key = keys[i]
        if key < 0:
            continue
        pixels += 1
        c = key >> 9
        if c != prev:  # a new block (rare): its owner's list
            cnt[o] = n
            prev = c
            o = _owner(c, T)
            n = cnt[o]
        # Without a branch on the run (runs are short: it would go either way at random):
        # a pixel that starts a run takes the next entry, and every pixel rewrites its run's.
        lab = np.int32(label_flat[i])
        start = (key != rkey) | (lab != rlab) | (i != last + 1)  # a run has no gap
        n += start
        rfirst = i if start else rfirst
        rlen = 1 if start else rlen + 1
        rkey = key
        rlab = lab
        last = i
        runs[0, o, k, n - 1] = key
        runs[1, o, k, n - 1] = rfirst
        runs[2, o, k, n - 1] = rlen
        runs[3, o, k, n - 1] = lab
    cnt[o] = n
    for q in range(T):
        counts[k, q] = cnt[q]
    counts[k, T] = pixels


def _voxels(o, T, runs, counts, cell_local, bfirst, bcell, first, vcell, cand, rep, votes, vlut, nbv):
    """Pass 2 for thread o of T, over its runs of pixels (from every row range, in pixel order): its
    blocks, numbered in order of first appearance among them (``cell_local[c]``, a cell only
    this thread writes; ``bfirst``/``bcell``: each block's first pixel and grid cell), then
    its voxels, likewise (``first``, ``rep``: first and last pixel; ``vcell``: local block << 9
    | offset; ``cand``: the Boyer-Moore majority of the voxel's labels). ``nbv[o]`` = (blocks,
    voxels). A voxel is looked up only when the key changes (neighbouring runs often share
    one) and its vote stays in registers until then. A run of m pixels with one label is m
    Boyer-Moore steps at once, with the same outcome. ``votes`` and ``vlut`` are work rows; a
    ``vlut`` row too short for the thread's blocks returns voxels = -1 (the caller grows it)."""
    lkey = runs[0]
    nb = 0
    prevc = -1
    for k in range(T):
        for j in range(counts[k, o]):
            c = lkey[o, k, j] >> 9
            if c != prevc:
                prevc = c
                if cell_local[c] < 0:
                    cell_local[c] = nb
                    bfirst[o, nb] = runs[1, o, k, j]
                    bcell[o, nb] = c
                    nb += 1
    nbv[o, 0] = nb
    if nb * 512 > vlut.shape[1]:
        nbv[o, 1] = -1
        return
    vlut[o, : nb * 512] = -1
    nv = 0
    prev = -1
    v = -1
    c_cand = np.int32(0)
    c_votes = np.int32(0)
    last = 0
    for k in range(T):
        for j in range(counts[k, o]):
            key = lkey[o, k, j]
            if key != prev:
                if v >= 0:  # write back the voxel left
                    cand[o, v] = c_cand
                    votes[o, v] = c_votes
                    rep[o, v] = last
                prev = key
                cell = (np.int64(cell_local[key >> 9]) << 9) | (key & 511)
                v = vlut[o, cell]
                if v < 0:
                    v = nv
                    vlut[o, cell] = nv
                    vcell[o, nv] = cell
                    first[o, nv] = runs[1, o, k, j]
                    c_cand = np.int32(0)
                    c_votes = np.int32(0)
                    nv += 1
                else:
                    c_cand = cand[o, v]
                    c_votes = votes[o, v]
            m = runs[2, o, k, j]
            lab = runs[3, o, k, j]
            # m steps of Boyer-Moore with one label: (c, n) -> (lab, n + m) when n is 0 or c
            # is lab; else (c, n - m) while m <= n, and (lab, m - n) beyond
            if c_votes == 0 or c_cand == lab:
                c_cand = lab
                c_votes += m
            elif m <= c_votes:
                c_votes -= m
            else:
                c_cand = lab
                c_votes = m - c_votes
            last = runs[1, o, k, j] + m - 1
    if v >= 0:
        cand[o, v] = c_cand
        rep[o, v] = last
    nbv[o, 1] = nv


def _earliest(T, head, count, first):
    """Of T lists sorted by first pixel (``first[o, :count[o]]``, next unread at ``head[o]``),
    the one whose next entry comes first."""
    best = -1
    for o in range(T):
        if head[o] < count[o] and (best < 0 or first[o, head[o]] < first[best, head[best]]):
            best = o
    return best


_earliest = numba.njit(cache=True, nogil=True, inline="always")(_earliest)


def _merge(T, lo, dims, cell_local, bfirst, bcell, first, vcell, cand, rep, nbv, vlut):
    """The threads' blocks and voxels in order of first pixel (the one-thread numbering):
    block coordinates, per grid cell its block (``cell_local`` becomes the global table), the
    voxels' cells (block << 9 | offset), labels, last pixels and the voxel table (with one
    more block of -1 after the last: the absent block of dbscan_padded; ``vlut`` is a work array
    of at least (blocks + 1) * 512 entries, filled here)."""
    s0 = dims[1] * dims[2]
    s1 = dims[2]
    B = 0
    V = 0
    for o in range(T):
        B += nbv[o, 0]
        V += nbv[o, 1]
    blocks = np.empty((B, 3), np.int32)
    gblock = np.empty((T, bfirst.shape[1]), np.int64)
    head = np.zeros(T, np.int64)
    for g in range(B):
        best = _earliest(T, head, nbv[:, 0], bfirst)
        j = head[best]
        head[best] += 1
        c = bcell[best, j]
        gblock[best, j] = g
        cell_local[c] = g
        blocks[g, 0] = c // s0 + lo[0]
        blocks[g, 1] = (c % s0) // s1 + lo[1]
        blocks[g, 2] = c % s1 + lo[2]
    vlut = vlut[: (B + 1) * 512]
    vlut[:] = -1
    voxel = np.empty(V, np.int64)
    label = np.empty(V, np.int64)
    last = np.empty(V, np.int64)
    head[:] = 0
    for g in range(V):
        best = _earliest(T, head, nbv[:, 1], first)
        j = head[best]
        head[best] += 1
        lc = vcell[best, j]
        cell = (gblock[best, lc >> 9] << 9) | (lc & 511)
        voxel[g] = cell
        label[g] = cand[best, j]
        last[g] = rep[best, j]
        vlut[cell] = g
    return blocks, voxel, label, last, vlut


keys_kernel = _sjit(_keys, fastmath=False)  # IEEE arithmetic, no fused multiply-adds: every path floors the same value
voxels_kernel = _sjit(_voxels)
merge_kernel = _sjit(_merge)


class DepthVoxels:
    """The outcome of :func:`depth_voxels`: ``status`` is "ok", "few_valid_depth",
    "out_of_range" or "too_large" (the frustum's block grid exceeds the dense limit: use the
    general path). When "ok": ``points`` valid pixels; ``lo``/``dims`` the block grid;
    ``cell_block``, ``blocks``, ``voxel``, ``label``, ``rep`` (each voxel's last pixel, an index
    into the flattened image) and ``vlut`` as :class:`.blocks.FrameVoxels` holds them."""

    __slots__ = ("status", "points", "lo", "dims", "cell_block", "blocks", "voxel", "label", "rep", "vlut")

    def __init__(self, status: str, points: int = 0):
        self.status = status
        self.points = points


MAX_GRID_CELLS = 1 << 22  # keys are int32: cell << 9 | offset


def frustum_grid(M, t, zmax: float, rxs: np.ndarray, rys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block grid (lowest block, blocks per axis) holding every point the camera can see up to
    depth ``zmax``: the bounding box of the view pyramid (its apex and far corners) in voxel
    units (``M``, ``t``: camera to world, scaled), widened by a voxel against rounding."""
    corners = np.array(
        [[0.0, 0.0, 0.0]] + [[x * zmax, y * zmax, zmax] for x in (rxs.min(), rxs.max()) for y in (rys.min(), rys.max())]
    )
    world = corners @ np.asarray(M, np.float64).T + np.asarray(t, np.float64)
    lo = np.floor(world.min(axis=0)).astype(np.int64) - 1
    hi = np.floor(world.max(axis=0)).astype(np.int64) + 1
    return lo >> 3, (hi >> 3) - (lo >> 3) + 1


def depth_voxels(team: ThreadTeam, depth, rxs, rys, M, t, label_flat, min_valid: int, max_coord: int, max_cells: int) -> DepthVoxels:
    """The per-pixel stage of a frame. ``depth``: (h, w) float32 metres, 0 = invalid;
    ``rxs``/``rys``: (u - cx) / fx per column and (v - cy) / fy per row (float32); a pixel's
    voxel is floor(M @ (rx z, ry z, z) + t) (M and t: camera to world in voxel units);
    ``label_flat``: the (h * w) label image. The result's tables (``cell_block``, ``vlut``) are
    the team's work arrays: valid until its next frame."""
    T = team.threads
    zmax = float(depth.max()) if depth.size else 0.0
    if not np.isfinite(zmax):
        return DepthVoxels("out_of_range")
    if zmax <= 0:
        return DepthVoxels("few_valid_depth")
    lo, dims = frustum_grid(M, t, zmax, rxs, rys)
    if max(-lo.min(), (lo + dims).max()) * 8 > max_coord:
        return DepthVoxels("out_of_range")
    if int(np.prod(dims)) > min(max_cells, MAX_GRID_CELLS):
        return DepthVoxels("too_large")
    h = depth.shape[0]
    step = ((h + T - 1) // T) * depth.shape[1]  # pixels of one row range
    keys = team.scratch("keys", (depth.size,))
    runs = team.scratch("runs", (4, T, T, step))
    counts = np.empty((T, T + 1), np.int64)  # runs per (row range, owner); pixels per range
    team.run(keys_kernel, depth, rxs, rys, M, t, lo, dims, label_flat, keys, runs, counts)
    if (counts < 0).any():  # pragma: no cover - the grid holds the frustum
        return DepthVoxels("too_large")
    n = int(counts[:, T].sum())
    if n < max(1, min_valid):
        return DepthVoxels("few_valid_depth", n)
    cells = int(np.prod(dims))
    cap = max(1, int(counts[:, :T].sum(axis=0).max()))  # the most runs one thread has
    work = [team.scratch(name, (T, cap)) for name in ("bfirst", "bcell", "first", "vcell", "cand", "rep", "votes")]
    nbv = np.zeros((T, 2), np.int64)
    vlut_row = team.sizes.get("vlut_row", 512 * 256)  # per-thread voxel table (grown as needed)
    while True:
        cell_local = team.scratch("cells", (cells,))
        cell_local.fill(-1)
        vlut = team.scratch("vlut", (T, vlut_row))
        team.run(voxels_kernel, runs, counts, cell_local, *work, vlut, nbv)
        if (nbv[:, 1] >= 0).all():
            break
        # rare: a thread met more blocks than a row holds
        vlut_row = team.sizes["vlut_row"] = 512 * (int(nbv[:, 0].max()) * 5 // 4 + 1)
    out = DepthVoxels("ok", n)
    bfirst, bcell, first, vcell, cand, rep, _ = work
    table = team.scratch("vlut_frame", ((int(nbv[:, 0].sum()) + 1) * 512,))
    out.blocks, out.voxel, out.label, out.rep, out.vlut = merge_kernel(T, lo, dims, cell_local, bfirst, bcell, first, vcell, cand, rep, nbv, table)
    out.lo, out.dims, out.cell_block = lo, dims, cell_local
    return out
