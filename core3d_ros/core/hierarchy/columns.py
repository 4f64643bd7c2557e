"""Bird's-eye columns of the surface: for each ground cell and height bin, how many surface
points the TSDF blocks hold there, kept in tiles of TILE x TILE cells by SLAB height bins.

    cols = Columns()
    cols.add(cells, bins, counts)            # counts < 0 take a re-sent block's old rows away
    origin, [(low, high), ...], clipped = cols.spans([(lo_bin, hi_bin), ...], max_cells)

``spans`` answers, per cell of a floor's grid, the lowest and highest occupied height bin within
each band [lo_bin, hi_bin]. Each tile keeps, beside its counts, a 16-bit mask per cell of the bins that
are occupied, so ``spans`` pastes one small mask per tile and height slab and finds the bins with
two table look-ups: its cost follows the floor's area in cells, never the number of surface
points, and a floor's rooms are segmented again without reading a point.
"""
from __future__ import annotations

import numpy as np

TILE = 32  # cells per tile side
SLAB = 16  # height bins per tile (the bits of a uint16 mask)
NONE_LOW = np.iinfo(np.int64).max  # ``low`` of a cell with nothing in the span
NONE_HIGH = np.iinfo(np.int64).min

_m = np.arange(1 << SLAB)
_LOWEST = np.array([(m & -m).bit_length() - 1 for m in _m.tolist()], np.int64)  # -1 for 0
_HIGHEST = np.array([m.bit_length() - 1 for m in _m.tolist()], np.int64)
_BIT = (1 << np.arange(SLAB)).astype(np.uint16)


class Columns:
    def __init__(self) -> None:
        # (tile a, tile b, slab) -> [counts int32 (SLAB, TILE, TILE), occupied-bin masks uint16 (TILE, TILE)]
        self._tiles: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._by_slab: dict[int, set[tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self._tiles)

    def nbytes(self) -> int:
        return sum(c.nbytes + m.nbytes for c, m in self._tiles.values())

    def add(self, cells: np.ndarray, bins: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` (N,) surface points at ground ``cells`` (N, 2) and height ``bins`` (N,);
        a tile whose counts all return to zero is dropped."""
        cells = np.asarray(cells, np.int64).reshape(-1, 2)
        bins = np.asarray(bins, np.int64).reshape(-1)
        counts = np.asarray(counts, np.int64).reshape(-1)
        if not len(counts):
            return
        t = np.column_stack([cells // TILE, bins // SLAB])
        t0 = t.min(axis=0)
        dims = tuple(int(d) for d in t.max(axis=0) - t0 + 1)
        flat, inverse = np.unique(np.ravel_multi_index(tuple((t - t0).T), dims), return_inverse=True)  # 1-D: fast
        keys = np.stack(np.unravel_index(flat, dims), axis=1) + t0
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
        local = np.column_stack([bins - t[:, 2] * SLAB, cells[:, 1] - t[:, 1] * TILE, cells[:, 0] - t[:, 0] * TILE])
        for k, key in enumerate(map(tuple, keys.tolist())):
            sel = order[starts[k]: starts[k + 1]]
            entry = self._tiles.get(key)
            if entry is None:
                entry = (np.zeros((SLAB, TILE, TILE), np.int32), np.zeros((TILE, TILE), np.uint16))
            c, _ = entry
            z, b, a = local[sel].T
            np.add.at(c, (z, b, a), counts[sel].astype(np.int32))
            occupied = c > 0
            if not occupied.any():
                self._tiles.pop(key, None)
                self._by_slab.get(key[2], set()).discard(key[:2])
                continue
            mask = np.bitwise_or.reduce(occupied * _BIT[:, None, None], axis=0).astype(np.uint16)
            self._tiles[key] = (c, mask)
            self._by_slab.setdefault(key[2], set()).add(key[:2])

    def spans(self, bands: list[tuple[int, int]], max_cells: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], bool]:
        """(origin, [(low, high) per band], clipped) on one grid: ``low``/``high`` [b, a] the
        lowest/highest occupied bin in the band [lo_bin, hi_bin] of each cell (NONE_LOW /
        NONE_HIGH where none); cell [0, 0] is the global cell ``origin`` (a, b). A grid over
        ``max_cells`` (stray surface far away) keeps the tiles around the bulk (``clipped``)."""
        slabs = range(min(lo for lo, _ in bands) // SLAB, max(hi for _, hi in bands) // SLAB + 1)
        tiles = sorted(set().union(*(self._by_slab.get(s, set()) for s in slabs)))
        if not tiles:
            empty = np.zeros((0, 0), np.int64)
            return np.zeros(2, np.int64), [(empty, empty) for _ in bands], False
        ta = np.array(tiles, np.int64)
        lo_t, hi_t = ta.min(axis=0), ta.max(axis=0)
        clipped = bool(np.prod(hi_t - lo_t + 1) * TILE * TILE > max_cells)
        if clipped:  # the tiles around the bulk of the occupied cells
            w = np.array([sum(int(np.count_nonzero(self._tiles[(*t, s)][1])) for s in slabs if (*t, s) in self._tiles) for t in tiles], float)
            lo_t = np.array([_weighted_quantile(ta[:, i], w, 0.01) for i in range(2)], np.int64)
            hi_t = np.array([_weighted_quantile(ta[:, i], w, 0.99) for i in range(2)], np.int64)
            side = max(1, int(np.sqrt(max_cells)) // TILE)
            mid = (lo_t + hi_t) // 2
            lo_t, hi_t = np.maximum(lo_t, mid - side // 2), np.minimum(hi_t, mid - side // 2 + side - 1)
            tiles = [t for t in tiles if lo_t[0] <= t[0] <= hi_t[0] and lo_t[1] <= t[1] <= hi_t[1]]
        shape = ((hi_t[1] - lo_t[1] + 1) * TILE, (hi_t[0] - lo_t[0] + 1) * TILE)
        out = [(np.full(shape, NONE_LOW, np.int64), np.full(shape, NONE_HIGH, np.int64)) for _ in bands]
        for s in slabs:  # upwards: the first slab with a bit holds a cell's lowest
            masks = np.zeros(shape, np.uint16)
            for t in tiles:
                entry = self._tiles.get((*t, s))
                if entry is not None:
                    r, c = (t[1] - lo_t[1]) * TILE, (t[0] - lo_t[0]) * TILE
                    masks[r: r + TILE, c: c + TILE] = entry[1]
            for (lo_bin, hi_bin), (low, high) in zip(bands, out):
                z0, z1 = max(lo_bin - s * SLAB, 0), min(hi_bin - s * SLAB, SLAB - 1)
                if z0 > z1:
                    continue
                m = masks & np.uint16(((1 << (z1 + 1)) - 1) & ~((1 << z0) - 1))  # this band's bits
                hit = m > 0
                first = hit & (low == NONE_LOW)
                low[first] = s * SLAB + _LOWEST[m[first]]
                high[hit] = s * SLAB + _HIGHEST[m[hit]]
        return lo_t * TILE, out, clipped


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> int:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    return int(x[order][min(np.searchsorted(cw, q * cw[-1]), len(x) - 1)])
