"""The bird's-eye columns (core/hierarchy/columns.py) against a direct computation from the rows."""
from __future__ import annotations

import numpy as np

from core3d_ros.core.hierarchy.columns import NONE_HIGH, NONE_LOW, SLAB, TILE, Columns


def direct(rows: dict, bands, origin, shape):
    """(low, high) per band from {(a, b, bin): count}, on the grid at ``origin`` of ``shape``."""
    out = []
    for lo, hi in bands:
        low = np.full(shape, NONE_LOW, np.int64)
        high = np.full(shape, NONE_HIGH, np.int64)
        for (a, b, z), n in rows.items():
            if n > 0 and lo <= z <= hi:
                r, c = b - origin[1], a - origin[0]
                low[r, c], high[r, c] = min(low[r, c], z), max(high[r, c], z)
        out.append((low, high))
    return out


def test_spans_match_the_rows_through_additions_and_removals():
    rng = np.random.default_rng(0)
    cols, rows = Columns(), {}
    batches = []
    for _step in range(30):
        if batches and rng.random() < 0.4:  # a re-sent block: its old rows taken away
            cells, bins, n = batches.pop(int(rng.integers(len(batches))))
            cols.add(cells, bins, -n)
            sign = -1
        else:
            m = int(rng.integers(1, 200))
            cells = rng.integers(-70, 70, size=(m, 2))
            bins = rng.integers(-40, 60, size=m)
            n = rng.integers(1, 4, size=m)
            cols.add(cells, bins, n)
            batches.append((cells, bins, n))
            sign = 1
        for (a, b), z, k in zip(cells.tolist(), bins.tolist(), n.tolist()):
            rows[(a, b, z)] = rows.get((a, b, z), 0) + sign * k
        bands = [(-40, 59), (-3, 20), (5, 5), (17, 47)]
        origin, got, clipped = cols.spans(bands, 10**9)
        assert not clipped
        if not any(v > 0 for v in rows.values()):
            assert got[0][0].size == 0
            continue
        assert origin[0] % TILE == 0 and origin[1] % TILE == 0
        want = direct(rows, bands, origin, got[0][0].shape)
        for (gl, gh), (wl, wh) in zip(got, want):
            assert np.array_equal(gl, wl) and np.array_equal(gh, wh)
    # everything taken away again: no tile is kept
    for cells, bins, n in batches:
        cols.add(cells, bins, -n)
    assert len(cols) == 0 and cols.nbytes() == 0


def test_a_grid_too_large_keeps_the_bulk():
    cols = Columns()
    a, b = np.meshgrid(np.arange(100), np.arange(60))
    cells = np.column_stack([a.ravel(), b.ravel()])
    cols.add(cells, np.zeros(len(cells), np.int64), np.ones(len(cells), np.int64))
    cols.add(np.array([[90_000, -50_000]]), np.array([0]), np.array([1]))  # one stray point
    origin, [(low, _)], clipped = cols.spans([(0, SLAB - 1)], 1_000_000)
    assert clipped and low.shape[0] * low.shape[1] <= 1_000_000
    assert np.count_nonzero(low == 0) == 100 * 60
