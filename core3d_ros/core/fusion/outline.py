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
  its last point: then that part is rebuilt from all the object's points (one pass);
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

    __slots__ = ("u", "a", "b", "stale_hull", "stale_z", "hull", "hull_n", "pending", "zlo", "zhi", "zlo_n", "zhi_n", "passes", "scanned")

    def __init__(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray]):
        self.u, self.a, self.b = axes
        self.stale_hull = self.stale_z = True
        self.hull = np.zeros(0, np.complex128)  # vertices, sorted (as complex numbers)
        self.hull_n = np.zeros(0, np.int64)  # points of the set on each
        self.pending: list[np.ndarray] = []  # ground points added since the hull was merged
        self.zlo = self.zhi = 0.0
        self.zlo_n = self.zhi_n = 0
        self.passes = 0  # rebuilds from all the points (hull or range)
        self.scanned = 0  # points those rebuilds read

    def _ground(self, pts: np.ndarray) -> np.ndarray:
        return _dot(pts, self.a) + 1j * _dot(pts, self.b)

    def add(self, pts: np.ndarray) -> None:
        if len(pts) == 0:
            return
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

    def box(self, pts: np.ndarray, voxel: float) -> OrientedBox:
        """The box of ``pts`` (the whole current set), rebuilding what went stale."""
        if self.stale_hull:
            g = self._ground(pts)
            self._set_hull(g, np.ones(len(g), np.int64))
            self.pending = []
            self.stale_hull = False
            self.passes += 1
            self.scanned += len(pts)
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
