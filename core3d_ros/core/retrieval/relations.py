"""Geometric spatial relations between map objects, as soft scores in [0, 1].

Every object is summarised by a gravity-aligned box (``Geometry``): a vertical interval
[z_lo, z_hi] along the world up axis and a yaw-oriented rectangle (footprint) in the horizontal
plane. The summary first comes from the object's OrientedBox (vectorised over all objects, cheap)
and is refined from the voxel points for the objects a query actually compares
(``Geometry.refine``): exact vertical interval, footprint and centroid.

Relations (target t, anchor a):

- near:      gap d between the two gravity boxes (0 when touching or overlapping);
             score = 1 / (1 + exp((d - near_distance) / near_softness)).
- far_from:  1 - near.
- on:        t's bottom within contact_tolerance of a's top (Gaussian), t's centre above a's
             top, and t's footprint centre inside a's footprint (soft margin).
- above:     t's bottom above a's top (soft step), and the footprints overlap.
- under:     t's top below a's top (soft step), t's centre below a's top, and t's footprint
             centre inside a's footprint.
- in:        t's centroid inside a's OrientedBox (soft margin) and t no larger than a.
- left_of / right_of / in_front_of / behind: from a viewpoint. With a camera pose the view
             direction to the anchor is the ray from the camera to the anchor (perspective);
             the score is the cosine between the anchor->target direction and the wanted
             direction, times a small lateral separation term and a proximity term
             (lateral_range).
- between:   t's centroid projects inside the segment a1-a2 (horizontal plane) and lies within
             max(between_tolerance, 0.25 * |a1 a2|) of it.

Viewpoints are 4x4 camera-to-world poses with OpenCV optical axes (z forward, x right, y down).
Without one, the default view is a virtual observer on the -y side of the map looking along +y
(horizontally), so that for a z-up map +x is "right" and smaller x is "left"; distances for
closest / farthest are then measured from that observer, which is only a convention.

Superlatives (largest, smallest, tallest, shortest, highest, lowest, closest, farthest,
leftmost, rightmost) are scored over a candidate set, see ``superlative_scores``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..objects import ObjectInfo

_EPS = 1e-9


@dataclass
class RelationParams:
    near_distance: float = 0.5  # metres: gap at which "near" scores 0.5
    near_softness: float = 0.1  # metres: logistic width of the near threshold
    contact_tolerance: float = 0.05  # metres: "on" contact between bottom and top surfaces
    footprint_margin: float = 0.03  # metres: soft margin of footprint / box containment
    lateral_range: float = 2.0  # metres: left/right/front/behind fade beyond this distance
    between_tolerance: float = 0.3  # metres: minimum lateral tolerance for "between"

    @classmethod
    def from_config(cls, cfg) -> "RelationParams":
        """Take the matching fields of a RetrievalConfig (missing ones keep their defaults)."""
        kw = {k: float(getattr(cfg, k)) for k in cls.__dataclass_fields__ if hasattr(cfg, k)}
        return cls(**kw)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross is slow for single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def unit(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(3)
    n = np.linalg.norm(a)
    if not np.isfinite(n) or n < _EPS:
        raise ValueError(f"up axis must be a finite non-zero 3-vector, got {v!r}")
    return a / n


def horizontal_basis(up: np.ndarray) -> np.ndarray:
    """(2, 3) orthonormal rows spanning the plane perpendicular to ``up``, right-handed with up.

    The second row is world +y projected on the plane (world +x when up is along y), the first is
    second x up, so for z-up the basis is (+x, +y).
    """
    ref = np.array([0.0, 1.0, 0.0]) if abs(up[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    h2 = ref - up * (ref @ up)
    h2 /= np.linalg.norm(h2)
    h1 = _cross(h2, up)
    return np.stack([h1, h2])


@dataclass
class View:
    position: np.ndarray  # (3,) observer position, world frame
    forward: np.ndarray  # (3,) unit, horizontal
    right: np.ndarray  # (3,) unit, horizontal, forward x up
    perspective: bool  # True: directions are taken from rays through the observer


def make_view(viewpoint: np.ndarray | None, up: np.ndarray, centers: np.ndarray | None = None) -> View:
    """Observer from a 4x4 camera-to-world pose, or the default -y side observer (see module doc)."""
    if viewpoint is not None:
        T = np.asarray(viewpoint, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("viewpoint must be a finite 4x4 camera-to-world matrix")
        pos = T[:3, 3].copy()
        fwd = T[:3, 2] - up * (T[:3, 2] @ up)
        if np.linalg.norm(fwd) < 1e-3:  # looking straight down/up: image top is "forward"
            cam_up = -T[:3, 1]
            fwd = cam_up - up * (cam_up @ up)
            if np.linalg.norm(fwd) < 1e-3:
                fwd = horizontal_basis(up)[1]
        fwd = fwd / np.linalg.norm(fwd)
        return View(pos, fwd, _cross(fwd, up), True)
    hb = horizontal_basis(up)
    fwd = hb[1]
    if centers is not None and len(centers):
        c = np.asarray(centers, dtype=np.float64)
        mid = c.mean(axis=0)
        span = float(np.max(np.abs((c - mid) @ fwd))) if len(c) else 0.0
        pos = mid - fwd * (span + 1.0)
    else:
        pos = -fwd
    return View(pos, fwd, _cross(fwd, up), False)


class Geometry:
    """Gravity-aligned summaries of a list of objects, in arrays (see module doc)."""

    def __init__(self, objects: Sequence[ObjectInfo], up: Sequence[float] = (0.0, 0.0, 1.0), pad: float = 0.0):
        self.objects = objects
        self.up = unit(up)
        self.hb = horizontal_basis(self.up)  # (2, 3)
        self.pad = float(pad)  # added to every half extent (voxel centres -> voxel surfaces)
        n = len(objects)
        if n:
            cen = np.array([o.box.center for o in objects], dtype=np.float64).reshape(n, 3)
            rot = np.array([o.box.rotation for o in objects], dtype=np.float64).reshape(n, 3, 3)
            ext = np.array([o.box.extent for o in objects], dtype=np.float64).reshape(n, 3)
        else:
            cen, rot, ext = np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3))
        bad = ~(np.all(np.isfinite(cen), axis=1) & np.all(np.isfinite(rot), axis=(1, 2)) & np.all(np.isfinite(ext), axis=1))
        if np.any(bad):
            cen[bad], rot[bad], ext[bad] = 0.0, np.eye(3), 0.0
        ext = np.abs(ext)
        self.box_center = cen
        self.box_rot = rot
        self.box_half = ext / 2 + self.pad
        self.volume = np.prod(ext + 2 * self.pad, axis=1)
        # vertical interval
        up_comp = np.abs(np.einsum("nkj,k->nj", rot, self.up))  # |R_j . up|
        vhalf = 0.5 * np.sum(up_comp * ext, axis=1) + self.pad
        zc = cen @ self.up
        self.z_lo = zc - vhalf
        self.z_hi = zc + vhalf
        # footprint: yaw from the most horizontal box axis
        rh = np.einsum("dk,nkj->ndj", self.hb, rot)  # (n, 2, 3) horizontal parts of the box axes
        norms = np.linalg.norm(rh, axis=1)  # (n, 3)
        kstar = np.argmax(norms, axis=1)
        a1 = rh[np.arange(n), :, kstar] if n else np.zeros((0, 2))
        a1 = a1 / np.maximum(np.linalg.norm(a1, axis=1, keepdims=True), _EPS)
        a1[np.linalg.norm(a1, axis=1) < 0.5] = (1.0, 0.0)
        a2 = np.stack([-a1[:, 1], a1[:, 0]], axis=1)
        self.foot_axes = np.stack([a1, a2], axis=1)  # (n, 2, 2): rows are the axes
        fh = np.stack(
            [0.5 * np.sum(np.abs(np.einsum("nd,ndj->nj", a, rh)) * ext, axis=1) for a in (a1, a2)], axis=1
        )
        self.foot_half = fh + self.pad
        self.foot_center = cen @ self.hb.T  # (n, 2)
        self.center = cen.copy()  # refined to the points' centroid
        self.refined = np.zeros(n, dtype=bool)

    def __len__(self) -> int:
        return len(self.objects)

    def refine(self, idx: np.ndarray | Sequence[int]) -> None:
        """Recompute the summaries of objects ``idx`` from their voxel points (once each).

        Vectorised over objects: points are concatenated and reduced per object segment.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        todo = np.unique(idx[~self.refined[idx]]) if len(idx) else idx
        if not len(todo):
            return
        pts_list = []
        for i in todo:
            p = np.asarray(self.objects[i].points).reshape(-1, 3)
            pts_list.append(p)
        counts = np.array([len(p) for p in pts_list], dtype=np.int64)
        self.refined[todo] = True
        keep = counts > 0
        if not keep.any():
            return
        todo, counts = todo[keep], counts[keep]
        P = np.concatenate([p for p, k in zip(pts_list, keep) if k], axis=0)
        if P.dtype != np.float32 and P.dtype != np.float64:
            P = P.astype(np.float64)
        finite = np.isfinite(P.sum(axis=1))
        if not finite.all():  # drop non-finite points; objects left empty keep their box summary
            seg = np.repeat(np.arange(len(todo)), counts)
            P, seg = P[finite], seg[finite]
            counts = np.bincount(seg, minlength=len(todo))
            keep = counts > 0
            todo, counts = todo[keep], counts[keep]
            if not len(todo):
                return
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        proj = np.concatenate([self.hb, self.up[None]], axis=0)  # (3, 3): h1, h2, up
        q = np.einsum("md,kd->mk", P, proj.astype(P.dtype))  # (M, 3): horizontal coords, height
        self.z_lo[todo] = np.minimum.reduceat(q[:, 2], starts) - self.pad
        self.z_hi[todo] = np.maximum.reduceat(q[:, 2], starts) + self.pad
        ax = self.foot_axes[todo]  # (K, 2, 2)
        ax_pp = np.repeat(ax, counts, axis=0)  # (M, 2, 2)
        loc = np.einsum("md,mkd->mk", q[:, :2], ax_pp)  # (M, 2)
        lo = np.minimum.reduceat(loc, starts, axis=0)
        hi = np.maximum.reduceat(loc, starts, axis=0)
        self.foot_half[todo] = (hi - lo) / 2 + self.pad
        self.foot_center[todo] = np.einsum("kj,kjd->kd", (lo + hi) / 2, ax)
        self.center[todo] = np.add.reduceat(P, starts, axis=0, dtype=np.float64) / counts[:, None]

    def carry(self, prev: "Geometry", here: np.ndarray, there: np.ndarray) -> None:
        """Take from ``prev`` what it refined of the objects it shares with this geometry:
        object ``here[i]`` is ``prev``'s object ``there[i]`` (the same object, so the same points
        and box); with another up vector or pad nothing is taken."""
        if prev.pad != self.pad or not np.array_equal(prev.up, self.up):
            return
        done = prev.refined[there]
        a, b = here[done], there[done]
        for name in ("z_lo", "z_hi", "foot_half", "foot_center", "center"):
            getattr(self, name)[a] = getattr(prev, name)[b]
        self.refined[a] = True

    # ------------------------------------------------------------------ derived arrays
    @property
    def heights(self) -> np.ndarray:
        return self.z_hi - self.z_lo

    def horizontal(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.hb.T


# ---------------------------------------------------------------------------- helpers


def _soft_inside(x: np.ndarray, half: np.ndarray, margin: float) -> np.ndarray:
    """1 well inside |x| <= half, 0 beyond half + margin, linear across [half - m, half + m]."""
    m = max(margin, 1e-6)
    return np.clip(0.5 + (half - np.abs(x)) / (2 * m), 0.0, 1.0)


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _pair_components(g: Geometry, ti: np.ndarray, ai: np.ndarray):
    """(T, A) arrays: footprint centre offset (dx, dy) and its coordinates in the anchor axes."""
    ft, fa = g.foot_center[ti], g.foot_center[ai]
    dx = ft[:, 0][:, None] - fa[:, 0][None, :]
    dy = ft[:, 1][:, None] - fa[:, 1][None, :]
    ca, sa = g.foot_axes[ai, 0, 0][None, :], g.foot_axes[ai, 0, 1][None, :]  # anchor axis 1 = (c, s)
    u = dx * ca + dy * sa  # along anchor axis 1
    v = -dx * sa + dy * ca  # along anchor axis 2 = (-s, c)
    return dx, dy, u, v


def _footprint_inside(g: Geometry, ti: np.ndarray, ai: np.ndarray, margin: np.ndarray | float) -> np.ndarray:
    """(T, A): softly, is the target's footprint centre inside the anchor's footprint?

    A scalar ``margin`` is a soft border; a per-target array widens the footprint instead (the
    target's own half size: any overlap of the footprints counts).
    """
    _, _, u, v = _pair_components(g, ti, ai)
    hu = g.foot_half[ai, 0][None, :]
    hv = g.foot_half[ai, 1][None, :]
    m = np.asarray(margin, dtype=np.float64)
    if m.ndim == 0:
        return _soft_inside(u, hu, float(m)) * _soft_inside(v, hv, float(m))
    w = m[:, None]
    return _soft_inside(u, hu + w, 1e-3) * _soft_inside(v, hv + w, 1e-3)


def gap_distance(g: Geometry, ti: np.ndarray, ai: np.ndarray) -> np.ndarray:
    """(T, A) distance between the gravity boxes of targets and anchors (0 when they overlap).

    Horizontal separation: the larger of the biggest separating-axis gap over the four footprint
    axes and the distance to the target's bounding rectangle in the anchor's axes; both are lower
    bounds of the true rectangle distance, and the second is exact for aligned footprints.
    """
    ti = np.asarray(ti, dtype=np.int64)
    ai = np.asarray(ai, dtype=np.int64)
    dv = np.maximum(
        np.maximum(g.z_lo[ti][:, None] - g.z_hi[ai][None, :], g.z_lo[ai][None, :] - g.z_hi[ti][:, None]), 0.0
    )
    dx, dy, u_a, v_a = _pair_components(g, ti, ai)
    ct, st = g.foot_axes[ti, 0, 0][:, None], g.foot_axes[ti, 0, 1][:, None]
    ca, sa = g.foot_axes[ai, 0, 0][None, :], g.foot_axes[ai, 0, 1][None, :]
    cos_d = np.abs(ct * ca + st * sa)  # |cos| of the yaw difference
    sin_d = np.abs(ct * sa - st * ca)
    ht0, ht1 = g.foot_half[ti, 0][:, None], g.foot_half[ti, 1][:, None]
    ha0, ha1 = g.foot_half[ai, 0][None, :], g.foot_half[ai, 1][None, :]
    u_t = np.abs(dx * ct + dy * st)
    v_t = np.abs(-dx * st + dy * ct)
    # gaps along the target's axes, then the anchor's
    gap = u_t - ht0 - (cos_d * ha0 + sin_d * ha1)
    gap = np.maximum(gap, v_t - ht1 - (sin_d * ha0 + cos_d * ha1))
    gap = np.maximum(gap, np.abs(u_a) - ha0 - (cos_d * ht0 + sin_d * ht1))
    gap = np.maximum(gap, np.abs(v_a) - ha1 - (sin_d * ht0 + cos_d * ht1))
    dh = np.maximum(gap, 0.0)
    # distance from the anchor rectangle to the target's bounding rectangle in the anchor's
    # axes: also a lower bound, and exact (diagonal offsets included) for aligned footprints
    # (and the same with the roles swapped, which keeps the distance symmetric)
    gu = np.maximum(np.abs(u_a) - ha0 - (cos_d * ht0 + sin_d * ht1), 0.0)
    gv = np.maximum(np.abs(v_a) - ha1 - (sin_d * ht0 + cos_d * ht1), 0.0)
    dh = np.maximum(dh, np.sqrt(gu * gu + gv * gv))
    gu = np.maximum(u_t - ht0 - (cos_d * ha0 + sin_d * ha1), 0.0)
    gv = np.maximum(v_t - ht1 - (sin_d * ha0 + cos_d * ha1), 0.0)
    dh = np.maximum(dh, np.sqrt(gu * gu + gv * gv))
    return np.sqrt(dh * dh + dv * dv)


# ---------------------------------------------------------------------------- relations


def near_scores(g: Geometry, ti, ai, p: RelationParams) -> np.ndarray:
    d = gap_distance(g, ti, ai)
    z = np.clip((d - p.near_distance) / max(p.near_softness, 1e-6), -50, 50)
    return 1.0 / (1.0 + np.exp(z))


def far_scores(g: Geometry, ti, ai, p: RelationParams) -> np.ndarray:
    return 1.0 - near_scores(g, ti, ai, p)


def on_scores(g: Geometry, ti, ai, p: RelationParams) -> np.ndarray:
    ti = np.asarray(ti, dtype=np.int64)
    ai = np.asarray(ai, dtype=np.int64)
    tol = max(p.contact_tolerance, 1e-6)
    contact = g.z_lo[ti][:, None] - g.z_hi[ai][None, :]
    contact_term = np.exp(-0.5 * (contact / tol) ** 2)
    zc_t = g.center[ti] @ g.up
    above_term = _smoothstep(-tol, tol, zc_t[:, None] - g.z_hi[ai][None, :])
    inside = _footprint_inside(g, ti, ai, p.footprint_margin)
    return contact_term * above_term * inside


def above_scores(g: Geometry, ti, ai, p: RelationParams) -> np.ndarray:
    ti = np.asarray(ti, dtype=np.int64)
    ai = np.asarray(ai, dtype=np.int64)
    tol = max(p.contact_tolerance, 1e-6)
    gap = g.z_lo[ti][:, None] - g.z_hi[ai][None, :]
    step = _smoothstep(-tol, 0.0, gap)  # resting on top counts as above
    overlap = _footprint_inside(g, ti, ai, g.foot_half[ti].min(axis=1) + p.footprint_margin)
    return step * overlap


def under_scores(g: Geometry, ti, ai, p: RelationParams) -> np.ndarray:
    ti = np.asarray(ti, dtype=np.int64)
    ai = np.asarray(ai, dtype=np.int64)
    tol = max(p.contact_tolerance, 1e-6)
    top_below = _smoothstep(-tol, tol, g.z_hi[ai][None, :] - g.z_hi[ti][:, None])
    zc_t = g.center[ti] @ g.up
    centre_below = _smoothstep(0.0, 2 * tol, g.z_hi[ai][None, :] - zc_t[:, None])
    inside = _footprint_inside(g, ti, ai, p.footprint_margin)
    return top_below * centre_below * inside


def in_scores(g: Geometry, ti, ai, p: RelationParams) -> np.ndarray:
    ti = np.asarray(ti, dtype=np.int64)
    ai = np.asarray(ai, dtype=np.int64)
    d = g.center[ti][:, None, :] - g.box_center[ai][None, :, :]  # (T, A, 3)
    rot = g.box_rot[ai]  # (A, 3, 3), columns are the box axes
    inside = np.ones((len(ti), len(ai)))
    for j in range(3):
        loc = np.sum(d * rot[None, :, :, j], axis=2)  # (T, A) along box axis j
        inside *= _soft_inside(loc, g.box_half[ai, j][None, :], p.footprint_margin)
    vt = g.volume[ti][:, None]
    va = g.volume[ai][None, :]
    # the target must not be larger than the container: 1 up to 0.8x its volume, 0 from 1.2x
    smaller = np.clip((1.2 - vt / np.maximum(va, 1e-12)) / 0.4, 0.0, 1.0)
    return inside * smaller


def _directional(g: Geometry, ti, ai, p: RelationParams, view: View, which: str) -> np.ndarray:
    ti = np.asarray(ti, dtype=np.int64)
    ai = np.asarray(ai, dtype=np.int64)
    ca = g.center[ai]
    if view.perspective:
        fwd = ca - view.position
        fwd = fwd - np.outer(fwd @ g.up, g.up)
        n = np.linalg.norm(fwd, axis=1, keepdims=True)
        fwd = np.where(n > 1e-3, fwd / np.maximum(n, 1e-9), view.forward[None, :])
    else:
        fwd = np.broadcast_to(view.forward, ca.shape)
    right = np.cross(fwd, g.up)  # (A, 3)
    d = g.center[ti][:, None, :] - ca[None, :, :]  # (T, A, 3)
    lat = np.sum(d * right[None], axis=2)
    dep = np.sum(d * fwd[None], axis=2)
    dist_h = np.sqrt(lat * lat + dep * dep) + 1e-9
    comp = {"left_of": -lat, "right_of": lat, "in_front_of": -dep, "behind": dep}[which]
    direction = np.clip(comp / dist_h, 0.0, 1.0)
    separation = _smoothstep(0.02, 0.12, comp)
    prox = 1.0 / (1.0 + np.exp(np.clip((dist_h - p.lateral_range) / (0.2 * max(p.lateral_range, 1e-3)), -50, 50)))
    return direction * separation * prox


def left_of_scores(g, ti, ai, p, view):
    return _directional(g, ti, ai, p, view, "left_of")


def right_of_scores(g, ti, ai, p, view):
    return _directional(g, ti, ai, p, view, "right_of")


def in_front_of_scores(g, ti, ai, p, view):
    return _directional(g, ti, ai, p, view, "in_front_of")


def behind_scores(g, ti, ai, p, view):
    return _directional(g, ti, ai, p, view, "behind")


def between_scores(g: Geometry, ti, a1, a2, p: RelationParams) -> np.ndarray:
    """(T, A1, A2): is the target between anchors a1[j] and a2[k] (horizontal plane)?"""
    ti = np.asarray(ti, dtype=np.int64)
    a1 = np.asarray(a1, dtype=np.int64)
    a2 = np.asarray(a2, dtype=np.int64)
    pt = g.horizontal(g.center[ti])  # (T, 2)
    p1 = g.horizontal(g.center[a1])  # (A1, 2)
    p2 = g.horizontal(g.center[a2])  # (A2, 2)
    segx = p2[None, :, 0] - p1[:, None, 0]  # (A1, A2)
    segy = p2[None, :, 1] - p1[:, None, 1]
    L2 = segx * segx + segy * segy
    relx = pt[:, None, 0] - p1[None, :, 0]  # (T, A1)
    rely = pt[:, None, 1] - p1[None, :, 1]
    dot = relx[:, :, None] * segx[None] + rely[:, :, None] * segy[None]  # (T, A1, A2)
    L2s = np.maximum(L2, 1e-9)[None]
    t = dot / L2s
    perp2 = np.maximum((relx * relx + rely * rely)[:, :, None] - dot * t, 0.0)
    tol = np.maximum(p.between_tolerance, 0.25 * np.sqrt(L2))[None]
    along = _smoothstep(0.0, 0.12, t) * _smoothstep(0.0, 0.12, 1.0 - t)
    score = along * np.exp(-0.5 * perp2 / (tol * tol))
    valid = (L2 > 1e-6) & (a1[:, None] != a2[None, :])
    return np.where(valid[None], score, 0.0)


PAIR_RELATIONS = {
    "near": near_scores,
    "far_from": far_scores,
    "on": on_scores,
    "above": above_scores,
    "under": under_scores,
    "in": in_scores,
}
VIEW_RELATIONS = {
    "left_of": left_of_scores,
    "right_of": right_of_scores,
    "in_front_of": in_front_of_scores,
    "behind": behind_scores,
}


def pair_scores(relation: str, g: Geometry, ti, ai, p: RelationParams, view: View | None = None) -> np.ndarray:
    """(T, A) scores of a two-place relation; a target is never related to itself (score 0)."""
    ti = np.asarray(ti, dtype=np.int64).reshape(-1)
    ai = np.asarray(ai, dtype=np.int64).reshape(-1)
    if relation in PAIR_RELATIONS:
        s = PAIR_RELATIONS[relation](g, ti, ai, p)
    elif relation in VIEW_RELATIONS:
        if view is None:
            view = make_view(None, g.up, g.center)
        s = VIEW_RELATIONS[relation](g, ti, ai, p, view)
    else:
        raise ValueError(f"unknown relation {relation!r}")
    return np.where(ti[:, None] == ai[None, :], 0.0, s)


# ---------------------------------------------------------------------------- superlatives

# superlative -> (quantity, larger is better)
SUPERLATIVE_QUANTITY: dict[str, tuple[str, bool]] = {
    "largest": ("volume", True),
    "smallest": ("volume", False),
    "tallest": ("height", True),
    "shortest": ("height", False),
    "highest": ("top", True),
    "lowest": ("bottom", False),
    "closest": ("distance", False),
    "farthest": ("distance", True),
    "leftmost": ("lateral", False),
    "rightmost": ("lateral", True),
}


def superlative_values(name: str, g: Geometry, idx, view: View | None = None) -> tuple[np.ndarray, bool]:
    """Raw quantity behind a superlative for objects ``idx`` and whether larger is better."""
    if name not in SUPERLATIVE_QUANTITY:
        raise ValueError(f"unknown superlative {name!r}")
    qty, larger = SUPERLATIVE_QUANTITY[name]
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if qty == "volume":
        v = g.volume[idx]
    elif qty == "height":
        v = g.heights[idx]
    elif qty == "top":
        v = g.z_hi[idx]
    elif qty == "bottom":
        v = g.z_lo[idx]
    else:
        if view is None:
            view = make_view(None, g.up, g.center)
        d = g.center[idx] - view.position
        if qty == "distance":
            v = np.linalg.norm(d, axis=1)
        else:
            v = d @ view.right
    return np.asarray(v, dtype=np.float64), larger


def superlative_scores(
    name: str,
    g: Geometry,
    idx,
    base: np.ndarray,
    view: View | None = None,
    gate: float = 0.5,
    floor: float = 0.1,
) -> np.ndarray:
    """Multiplier in [floor, 1] per object of ``idx`` for a superlative.

    The eligible set is the objects whose ``base`` score is at least ``gate`` x the best base
    score; the quantity is min-max normalised over that set (1 for the extreme), so the winner
    among good matches gets 1 and ineligible objects can never overtake it.
    """
    v, larger = superlative_values(name, g, idx, view)
    return extreme_scores(v, larger, base, gate, floor)


def extreme_scores(v: np.ndarray, larger: bool, base: np.ndarray, gate: float = 0.5, floor: float = 0.1) -> np.ndarray:
    """Multiplier in [floor, 1] per object for a quantity ``v`` to maximise (``larger``) or
    minimise, normalised over the eligible objects (see ``superlative_scores``)."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    base = np.asarray(base, dtype=np.float64).reshape(-1)
    if len(v) == 0:
        return v
    if not larger:
        v = -v
    bmax = float(np.max(base)) if len(base) else 0.0
    elig = base >= gate * bmax if bmax > 0 else np.ones(len(v), dtype=bool)
    lo, hi = float(v[elig].min()), float(v[elig].max())
    if hi - lo < 1e-12:
        s = np.where(v >= hi, 1.0, floor)
    else:
        s = floor + (1.0 - floor) * (v - lo) / (hi - lo)
    return np.clip(s, floor, 1.0)


# ---------------------------------------------------------------------------- pairwise helpers


def relation_score(
    relation: str,
    target: ObjectInfo,
    anchor: ObjectInfo,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    viewpoint: np.ndarray | None = None,
    params: RelationParams | None = None,
    pad: float = 0.0,
) -> float:
    """Score in [0, 1] of ``target <relation> anchor`` for two objects (refined from points)."""
    g = Geometry([target, anchor], up, pad)
    g.refine([0, 1])
    view = make_view(viewpoint, g.up, g.center) if relation in VIEW_RELATIONS else None
    return float(pair_scores(relation, g, [0], [1], params or RelationParams(), view)[0, 0])


def between_score(
    target: ObjectInfo,
    anchor1: ObjectInfo,
    anchor2: ObjectInfo,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    params: RelationParams | None = None,
) -> float:
    g = Geometry([target, anchor1, anchor2], up)
    g.refine([0, 1, 2])
    return float(between_scores(g, [0], [1], [2], params or RelationParams())[0, 0, 0])
