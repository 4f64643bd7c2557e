"""Oracles of the fusion tests: plain versions of passes that the engine runs compiled, kept here
because only the tests use them (import: ``from fusion_reference import array_vote``)."""
from __future__ import annotations

import numpy as np


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
