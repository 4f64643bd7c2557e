"""The outline of one object's points for its gravity-aligned box, kept by change (a part of the
snapshot summaries, :mod:`.snapshot`).

``OrientedBox.from_points(points, up)`` is the minimum-area rectangle of the points' ground
projection times their range along ``up``; the rectangle depends only on the convex hull of the
ground points. :class:`Outline` keeps that hull (its vertices, with how many of the object's
points project onto each: a column of voxels shares one ground point) and the up range (with
how many points lie at each end), so that:

- points added cost the hull plus the new points (the hull of the old vertices and the new
  points; an extreme point of the larger set that was in the smaller one was extreme there);
- points removed cost the removed points, unless a hull vertex or an end of the up range loses
  its last point: then that part is rebuilt, the range from all the object's points, the hull
  from each row's first and last occupied cell of a grid of ground cells (with up along a grid
  axis, the usual case: voxel columns counted per cell, kept by change) or else from all the
  points;
- the box is found on the hull's vertices.

Ground points are complex numbers (x + iy) so that equal points compare equal in one array
operation; projections are element-wise, so a point projects to the same value whichever array
it is in.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..objects import OrientedBox


def ground_axes(up) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ``up`` and the two ground-plane axes ``OrientedBox.from_points`` projects on."""
    up = np.asarray(up, np.float64)
    up = up / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    return up, a, np.cross(up, a)


def _dot(pts: np.ndarray, v: np.ndarray) -> np.ndarray:
    p = pts.astype(np.float64)
    return p[:, 0] * v[0] + p[:, 1] * v[1] + p[:, 2] * v[2]


class Outline:
    """Ground hull and up range of a changing point set (see the module docstring)."""

    __slots__ = ("u", "a", "b", "stale_hull", "stale_z", "hull", "hull_n", "pending", "zlo", "zhi", "zlo_n", "zhi_n",
                 "passes", "scanned", "voxel", "grid", "origin")

    def __init__(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray], voxel: float = 0.0):
        self.u, self.a, self.b = axes
        # Up along a grid axis (the usual case): ground points are voxel columns, counted in a
        # grid, and a lost hull vertex is found again from each grid row's first and last
        # occupied column instead of from all the points.
        aligned = voxel > 0 and all(np.count_nonzero(v) == 1 for v in axes)
        self.voxel = float(voxel) if aligned else 0.0
        self.grid = np.zeros((0, 0), np.int32)  # points per ground cell (grid mode)
        self.origin = np.zeros(2, np.int64)  # the cell of grid[0, 0]
        self.stale_hull = self.stale_z = True
        self.hull = np.zeros(0, np.complex128)  # vertices, sorted (as complex numbers)
        self.hull_n = np.zeros(0, np.int64)  # points of the set on each
        self.pending: list[np.ndarray] = []  # ground points added since the hull was merged
        self.zlo = self.zhi = 0.0
        self.zlo_n = self.zhi_n = 0
        self.passes = 0  # rebuilds from all the points (hull or range)
        self.scanned = 0  # points those rebuilds read

    def _cells(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) ground cells of voxel centres (grid mode)."""
        return np.floor(np.stack([_dot(pts, self.a), _dot(pts, self.b)], axis=1) / self.voxel).astype(np.int64)

    def _ground(self, pts: np.ndarray) -> np.ndarray:
        if self.voxel:  # the cell's centre: every path computes the same value for a column
            return self._cell_ground(self._cells(pts))
        return _dot(pts, self.a) + 1j * _dot(pts, self.b)

    def _cell_ground(self, cells: np.ndarray) -> np.ndarray:
        return (cells[:, 0] + 0.5) * self.voxel + 1j * ((cells[:, 1] + 0.5) * self.voxel)

    def _count(self, pts: np.ndarray, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) the points' cells in the grid, growing it."""
        c = self._cells(pts)
        lo, hi = c.min(axis=0), c.max(axis=0)
        o, shape = self.origin, np.array(self.grid.shape)
        if self.grid.size == 0 or np.any(lo < o) or np.any(hi >= o + shape):
            new_lo = np.minimum(lo, o) if self.grid.size else lo
            new_hi = np.maximum(hi, o + shape - 1) if self.grid.size else hi
            span = new_hi - new_lo + 1
            margin = span // 4 + 1  # room to grow: copies stay rare
            new_lo, span = new_lo - margin, span + 2 * margin
            grid = np.zeros(tuple(span.tolist()), np.int32)
            if self.grid.size:
                at = o - new_lo
                grid[at[0] : at[0] + shape[0], at[1] : at[1] + shape[1]] = self.grid
            self.grid, self.origin = grid, new_lo
        rel = c - self.origin
        np.add.at(self.grid, (rel[:, 0], rel[:, 1]), sign)

    def add(self, pts: np.ndarray) -> None:
        if len(pts) == 0:
            return
        if self.voxel:
            self._count(pts, 1)
        if not self.stale_hull:
            self.pending.append(self._ground(pts))
            if sum(map(len, self.pending)) > 4096:  # bounded while no box is asked for
                self._merge()
        if not self.stale_z:
            z = _dot(pts, self.u)
            lo, hi = z.min(), z.max()
            if lo < self.zlo:
                self.zlo, self.zlo_n = float(lo), int(np.count_nonzero(z == lo))
            elif lo == self.zlo:
                self.zlo_n += int(np.count_nonzero(z == lo))
            if hi > self.zhi:
                self.zhi, self.zhi_n = float(hi), int(np.count_nonzero(z == hi))
            elif hi == self.zhi:
                self.zhi_n += int(np.count_nonzero(z == hi))

    def remove(self, pts: np.ndarray) -> None:
        if len(pts) == 0:
            return
        if self.voxel:
            self._count(pts, -1)
        if not self.stale_hull:
            self._merge()
            g = self._ground(pts)
            at = np.clip(np.searchsorted(self.hull, g), 0, len(self.hull) - 1)  # the hull is sorted
            on = self.hull[at] == g
            if on.any():
                self.hull_n -= np.bincount(at[on], minlength=len(self.hull))
                if (self.hull_n <= 0).any():
                    self.stale_hull = True
        if not self.stale_z:
            z = _dot(pts, self.u)
            self.zlo_n -= int(np.count_nonzero(z == self.zlo))
            self.zhi_n -= int(np.count_nonzero(z == self.zhi))
            if self.zlo_n <= 0 or self.zhi_n <= 0:
                self.stale_z = True

    def _merge(self) -> None:
        """The pending points into the hull (costs the hull plus those points)."""
        if not self.pending:
            return
        self._set_hull(np.concatenate([self.hull, *self.pending]), np.concatenate([self.hull_n, np.ones(sum(map(len, self.pending)), np.int64)]))
        self.pending = []

    def _set_hull(self, g: np.ndarray, n: np.ndarray) -> None:
        """The hull of the ground points ``g`` that ``n`` points each stand for (no sort of
        ``g``: its points are matched against the few vertices)."""
        if len(g) > 2:
            idx = cv2.convexHull(np.stack([g.real, g.imag], axis=1).astype(np.float32), returnPoints=False).reshape(-1)
            hull = np.unique(g[idx])
        else:
            hull = np.unique(g)
        at = np.clip(np.searchsorted(hull, g), 0, len(hull) - 1)
        on = hull[at] == g
        self.hull = hull
        self.hull_n = np.bincount(at[on], weights=n[on], minlength=len(hull)).astype(np.int64)

    def _hull_from_grid(self, pts: np.ndarray) -> None:
        """The hull from each grid row's first and last occupied cell (a point between two
        others of its row is no hull vertex); the grid is filled from ``pts`` the first time."""
        if self.grid.size == 0 and len(pts):
            self._count(pts, 1)
        occ = self.grid > 0
        rows = np.flatnonzero(occ.any(axis=1))
        self.scanned += int(self.grid.size)
        if not len(rows):
            self.hull, self.hull_n = np.zeros(0, np.complex128), np.zeros(0, np.int64)
            return
        sub = occ[rows]
        first = sub.argmax(axis=1)
        last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
        two = last != first
        r = np.concatenate([rows, rows[two]])
        col = np.concatenate([first, last[two]])
        cells = np.stack([r, col], axis=1) + self.origin
        self._set_hull(self._cell_ground(cells), self.grid[r, col].astype(np.int64))

    def box(self, pts: np.ndarray, voxel: float) -> OrientedBox:
        """The box of ``pts`` (the whole current set), rebuilding what went stale."""
        if self.stale_hull:
            if self.voxel:
                self._hull_from_grid(pts)
            else:
                g = self._ground(pts)
                self._set_hull(g, np.ones(len(g), np.int64))
                self.scanned += len(pts)
            self.pending = []
            self.stale_hull = False
            self.passes += 1
        else:
            self._merge()
        if self.stale_z:
            z = _dot(pts, self.u)
            self.zlo, self.zhi = float(z.min()), float(z.max())
            self.zlo_n, self.zhi_n = int(np.count_nonzero(z == self.zlo)), int(np.count_nonzero(z == self.zhi))
            self.stale_z = False
            self.passes += 1
            self.scanned += len(pts)
        h = self.hull
        (_, _), (_, _), angle = cv2.minAreaRect(np.stack([h.real, h.imag], axis=1).astype(np.float32))
        t = np.deg2rad(angle)
        c, s = np.cos(t), np.sin(t)
        x = c * self.a + s * self.b
        R = np.stack([x, np.cross(self.u, x), self.u], axis=1)
        gx, gy = c * h.real + s * h.imag, -s * h.real + c * h.imag
        lo = np.array([gx.min(), gy.min(), self.zlo])
        hi = np.array([gx.max(), gy.max(), self.zhi])
        return OrientedBox(R @ ((lo + hi) / 2), R, np.maximum(hi - lo, voxel))
