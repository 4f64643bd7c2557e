"""Weight-free, class-agnostic segmentation of one depth image into planes and 3-D regions.

The geometric segmenter is the mask generator that needs no model weights: it lets the whole
pipeline run (and be tested) on any RGB-D stream, and gives the CORE-3D progressive merger a
coarse-to-fine mask hierarchy in the same form a SAM-family generator would.

Method (all in the camera frame, on a strided pixel grid, vectorised numpy + OpenCV):

1. **Organised point cloud.** Every ``pixel_stride``-th pixel (0: the stride that keeps a grid at least
   320 pixels wide) is back-projected. Neighbouring grid
   pixels are neighbouring surface samples, so no k-d tree is needed anywhere.
2. **Normals** from central differences of the organised cloud (``normal_radius`` grid pixels
   either side, cross product), oriented towards the camera and averaged over the same
   (2r+1)^2 window, which tames the Kinect's depth quantisation at range. Differences that
   straddle a depth discontinuity leave the pixel without a normal.
3. **Dominant planes** (floor, walls, table tops) by RANSAC with one-point hypotheses (a pixel and
   its normal define a plane), scored on a random subset in one matrix product, refined by a
   least-squares fit. Inliers must be close to the plane *and* share its orientation, so box sides
   standing on the floor do not join the floor. A plane is kept while it covers at least
   ``plane_min_fraction`` of the valid pixels (components smaller than a mask are handed back to
   the region step); up to ``max_planes``. Planes are reported as masks (``keep_planes``) and
   removed from the region step, which is what separates objects standing on them.
4. **Regions, coarse to fine.** For each level ``l`` a pixel is a boundary pixel when, towards a
   4-neighbour, (a) the 3-D step exceeds ``cluster_eps[l] * z + depth_noise * z^2`` (relative to
   depth because sample spacing and noise grow with it; a continuous surface exceeds it only
   when seen at a grazing angle, above ~80 degrees for 0.025 at stride 2), or (b) the surface
   folds concavely by more than ``concave_deg[l]`` between pixels ``normal_radius`` apart
   (the convexity criterion of LCCP / Tateno et al.: objects are mostly convex, and where two
   touch - a cup on a shelf, a box against a cabinet - the junction is concave). The normals
   are smoothed over their support, so a fold reads smaller than it is: a right-angled crease
   between a box and the floor measures ~35 degrees (10th-90th percentile 9-38). Connected
   components of the remaining pixels (``cv2.connectedComponents``, 4-connected) seed the
   regions; boundary pixels are then grown into the adjacent region when depth is continuous,
   and small invalid-depth holes (``hole_fill_px``) are filled from the nearest region. Finer
   levels use stricter thresholds, so their regions split the coarse ones; a fine region that
   repeats a coarser one (IoU >= 0.9) is not emitted again. Finally a plane takes in the regions
   it meets over a convex edge (a table top its front face and legs), while what stands on it
   (a concave crease, a step or a parallel offset surface) stays apart; see ``_join_planes``.
5. **Output.** Labels are upsampled to full resolution by nearest neighbour; each region of at
   least ``min_mask_pixels`` pixels becomes a :class:`Mask2D` with ``level`` = its level (planes
   at level 0). The score is ``valid_fraction * t / (t + score_width_px)`` with ``t`` the
   region's thickness (area over perimeter, full-resolution pixels): thin slivers along depth
   edges and regions that are mostly filled holes score low, solid regions close to 1.

Why not clustering in 3-D (DBSCAN on points)? On an organised image, image-space connected
components with 3-D edge tests give the same partition for a fraction of the cost (no
neighbour search), and run in a few milliseconds per level at 320x240. Colour is not used:
Kinect-style depth is not registered tightly enough to colour for colour edges to help, and
the downstream DBSCAN split and 3-D merging work on geometry too.

The step test uses the plain 3-D distance, not the distance along the normal: next to an
occlusion edge the normals lean into the step and would hide it.

Known limits: objects flush against each other with a convex or flat junction (books side by
side, a drawer front within its cabinet) are one region; objects thinner than the plane
threshold lying on a plane (a magazine, a game pad on a table) join the plane; thin structures
(cables, chair legs far away) have no normals and fall to the 3-D step test alone; Kinect-style
depth is offset from colour, so masks are offset from the objects in the colour image by the
same amount; and since fine regions nest inside coarse ones, a merger that only adds uncovered
masks uses the fine level where the coarse one left gaps or scored low.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from ...config import GeometricSegmenterConfig, SegmenterConfig
from ..frame import Frame
from .base import Mask2D, register_segmenter

# Plane hypotheses are scored on this many random valid pixels (accuracy/speed trade-off only).
_RANSAC_SAMPLE = 2048
# A finer-level region that overlaps a coarser one with at least this IoU is the same region.
_DUPLICATE_IOU = 0.9
# Across a plane/region border, normals (smoothed over the normals' support) this far apart count
# as a bend, convex or concave: clear of the few degrees of noise on a flat surface, well below
# the ~35 degrees a right-angled edge measures after the smoothing.
_BEND_DEG = 15.0


class GeometricSegmenter:
    """Planes + coarse-to-fine 3-D regions from the depth image (see the module docstring)."""

    name = "geometric"

    def __init__(self, cfg: GeometricSegmenterConfig | None = None, seed: int = 0):
        self.cfg = cfg if cfg is not None else GeometricSegmenterConfig()
        self.seed = int(seed)
        _validate(self.cfg)

    @property
    def levels(self) -> int:
        return len(self.cfg.cluster_eps)

    # ------------------------------------------------------------------ entry point
    def segment(self, frame: Frame) -> list[Mask2D]:
        cfg = self.cfg
        depth = np.asarray(frame.depth)
        if depth.ndim != 2:
            raise ValueError(f"depth must be an HxW image, got shape {depth.shape}")
        H, W = depth.shape
        s = working_stride(cfg, W)
        intr = frame.intrinsics

        z = np.array(depth[::s, ::s], dtype=np.float32)
        z[~np.isfinite(z)] = 0.0
        z[z < 0] = 0.0
        valid = z > 0
        min_grid_px = max(1, int(math.ceil(cfg.min_mask_pixels / (s * s))))
        if np.count_nonzero(valid) < min_grid_px:
            return []

        us = (np.arange(0, W, s, dtype=np.float32) - np.float32(intr.cx)) / np.float32(intr.fx)
        vs = (np.arange(0, H, s, dtype=np.float32) - np.float32(intr.cy)) / np.float32(intr.fy)
        P = (us[None, :] * z, vs[:, None] * z, z)
        noise = np.float32(cfg.depth_noise) * z * z
        N, has_normal = self._normals(P, valid, noise)

        if cfg.max_planes > 0:
            rng = np.random.default_rng(self.seed)
            plane_lab, n_planes = self._planes(P, N, has_normal, valid, noise, min_grid_px, rng)
        else:
            plane_lab, n_planes = np.zeros(z.shape, np.int32), 0

        pairs = _PairGeometry(P, N, has_normal, valid, noise, cfg.normal_radius)
        masks: list[Mask2D] = []
        previous: list[np.ndarray] = []
        for level, (eps, concave) in enumerate(zip(cfg.cluster_eps, cfg.concave_deg)):
            labels = self._regions(pairs, valid, plane_lab, n_planes, eps, concave, min_grid_px, s)
            masks.extend(self._emit(labels, valid, n_planes, level, previous, min_grid_px, (H, W), s))
            previous.append(labels)
        return masks

    # ------------------------------------------------------------------ normals
    def _normals(self, P, valid, noise):
        """Unit normals facing the camera from central differences, box-averaged; and where they exist."""
        k = self.cfg.normal_radius
        X, Y, Z = P
        h, w = Z.shape
        N = tuple(np.zeros((h, w), np.float32) for _ in range(3))
        has = np.zeros((h, w), dtype=bool)
        if h <= 2 * k or w <= 2 * k:
            return N, has
        c = (slice(k, h - k), slice(k, w - k))
        right, left = (slice(k, h - k), slice(2 * k, None)), (slice(k, h - k), slice(None, w - 2 * k))
        d, u = (slice(2 * k, None), slice(k, w - k)), (slice(None, h - 2 * k), slice(k, w - k))
        ok = valid[c] & valid[right] & valid[left] & valid[d] & valid[u]
        dx = [A[right] - A[left] for A in P]
        dy = [A[d] - A[u] for A in P]
        # A difference that spans a step the coarse level calls a discontinuity is no surface.
        max_len = (2 * k) * (np.float32(self.cfg.cluster_eps[0]) * Z[c] + noise[c])
        max_len *= max_len
        ok &= dx[0] * dx[0] + dx[1] * dx[1] + dx[2] * dx[2] <= max_len
        ok &= dy[0] * dy[0] + dy[1] * dy[1] + dy[2] * dy[2] <= max_len
        n = np.empty(ok.shape + (3,), np.float32)  # cross(dy, dx) faces the camera
        n[..., 0] = dy[1] * dx[2] - dy[2] * dx[1]
        n[..., 1] = dy[2] * dx[0] - dy[0] * dx[2]
        n[..., 2] = dy[0] * dx[1] - dy[1] * dx[0]
        norm = np.sqrt(n[..., 0] ** 2 + n[..., 1] ** 2 + n[..., 2] ** 2)
        ok &= norm > 0
        n *= (ok / np.where(ok, norm, 1.0)).astype(np.float32)[..., None]
        # Average unit normals over the same support (quantised depth makes single ones noisy).
        n = cv2.boxFilter(n, -1, (2 * k + 1, 2 * k + 1), normalize=False, borderType=cv2.BORDER_CONSTANT)
        norm = np.sqrt(n[..., 0] ** 2 + n[..., 1] ** 2 + n[..., 2] ** 2)
        ok &= norm > 0
        inv = (ok / np.where(ok, norm, 1.0)).astype(np.float32)
        for i in range(3):
            N[i][c] = n[..., i] * inv
        flip = (N[0] * X + N[1] * Y + N[2] * Z) > 0  # guard: must face the camera
        for i in range(3):
            N[i][flip] *= -1.0
        has[c] = ok
        return N, has

    # ------------------------------------------------------------------ planes
    def _planes(self, P, N, has_normal, valid, noise, min_grid_px, rng):
        cfg = self.cfg
        h, w = valid.shape
        thr = np.float32(cfg.plane_distance) + noise
        cos_t = np.float32(math.cos(math.radians(cfg.plane_normal_deg)))
        min_inliers = max(cfg.plane_min_fraction * np.count_nonzero(valid), min_grid_px)
        P_flat = [A.ravel() for A in P]
        N_flat = [A.ravel() for A in N]
        thr_flat = thr.ravel()
        labels = np.zeros((h, w), dtype=np.int32)
        free = valid.copy()  # valid and not yet in a plane
        seedable = valid & has_normal
        n_planes = 0
        for _ in range(cfg.max_planes):
            idx = np.flatnonzero(seedable)
            if idx.size < min_inliers:
                break
            # Hypotheses are scored, and the winner refined, on one random sample of pixels.
            sample = idx[rng.integers(0, idx.size, size=_RANSAC_SAMPLE)]
            Ps = np.stack([A[sample] for A in P_flat], axis=1)
            Nsm = np.stack([A[sample] for A in N_flat], axis=1)
            ts = thr_flat[sample]
            seeds = rng.integers(0, _RANSAC_SAMPLE, size=cfg.ransac_iterations)
            Nh = Nsm[seeds]
            dh = -np.einsum("ij,ij->i", Nh, Ps[seeds])
            votes = ((np.abs(Ps @ Nh.T + dh) < ts[:, None]) & (Nsm @ Nh.T > cos_t)).sum(axis=0)
            best = int(np.argmax(votes))
            n, d = Nh[best], float(dh[best])
            for _refine in range(2):
                inl = (np.abs(Ps @ n + d) < ts) & (Nsm @ n > cos_t)
                if np.count_nonzero(inl) < 3:
                    break
                n, d = _fit_plane(Ps[inl])
            agree = ~has_normal | (_dot(N, n) > cos_t)  # pixels without a normal go by distance
            inlier = (free & agree & (np.abs(_plane_dist(P, n, d)) < thr)).view(np.uint8)
            count, comp = cv2.connectedComponents(inlier, connectivity=8, ltype=cv2.CV_32S)
            areas = np.bincount(comp.ravel(), minlength=count)
            big = areas >= min_grid_px
            big[0] = False
            if areas[big].sum() < min_inliers:
                break
            members = big[comp]
            n_planes += 1
            labels[members] = n_planes
            free &= ~members
            seedable &= ~members
        return labels, n_planes

    # ------------------------------------------------------------------ regions
    def _regions(self, pairs: "_PairGeometry", valid, plane_lab, n_planes, eps, concave_deg, min_grid_px, s):
        h, w = valid.shape
        rest = valid & (plane_lab == 0)
        boundary = np.zeros((h, w), dtype=bool)
        eps = np.float32(eps)
        links = []
        for a, b, step, zmax, nmax in pairs.near:
            thr = eps * zmax + nmax
            cut = step > thr
            boundary[a] |= cut
            boundary[b] |= cut
            links.append((a, b, ~cut))
        if concave_deg < 180.0:
            cos_c = np.float32(math.cos(math.radians(concave_deg)))
            for a, b, fold_cos in pairs.far:
                fold = fold_cos < cos_c
                boundary[a] |= fold
                boundary[b] |= fold

        seeds = (rest & ~boundary).view(np.uint8)
        count, comp = cv2.connectedComponents(seeds, connectivity=4, ltype=cv2.CV_32S)
        areas = np.bincount(comp.ravel(), minlength=count)
        keep = areas >= max(1, min_grid_px // 4)
        keep[0] = False
        remap = np.zeros(count, dtype=np.int32)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32) + n_planes
        labels = remap[comp]
        in_plane = plane_lab > 0
        labels[in_plane] = plane_lab[in_plane]

        labels = _grow(labels, valid, links, steps=2 * self.cfg.normal_radius + 1)
        labels = self._join_planes(labels, pairs, n_planes, eps)
        return self._fill_holes(labels, valid, s)

    def _join_planes(self, labels, pairs: "_PairGeometry", n_planes, eps):
        """A plane takes in the regions it meets along a convex edge.

        Removing planes before the region step cuts every object that has a plane on it along
        the plane's outline: a table top from its front face and legs, a cabinet top from its
        doors. Where a plane meets a region, the pairs across their border say which it is: an
        object standing on the plane (or against it) meets it in a concave crease, a depth step or
        a parallel offset surface (a book on a table); a part of the same object continues it
        over a convex edge. A region joins the plane when the convex pairs (normals
        ``normal_radius`` apart bending convexly by more than ``_BEND_DEG``) outnumber all the
        other pairs across their border, steps included, and number at least the normals'
        support width (2 * normal_radius + 1). A region joins at most one plane, so that the
        floor and a wall are never chained together through a region between them.
        """
        n_lab = int(labels.max()) + 1
        if n_planes == 0 or n_lab <= n_planes + 1:
            return labels
        size = (n_planes + 1) * n_lab
        convex = np.zeros(size, np.int64)
        cut = np.zeros(size, np.int64)
        cos_bend = np.float32(math.cos(math.radians(_BEND_DEG)))

        def border(la, lb):  # plane * n_lab + region for pairs across a plane/region border
            pa = (la >= 1) & (la <= n_planes) & (lb > n_planes)
            pb = (lb >= 1) & (lb <= n_planes) & (la > n_planes)
            return np.where(pa, la * n_lab + lb, np.where(pb, lb * n_lab + la, -1))

        eps = np.float32(eps)
        for a, b, step, zmax, nmax in pairs.near:
            code = border(labels[a], labels[b])
            sel = (code >= 0) & (step > eps * zmax + nmax)
            cut += np.bincount(code[sel], minlength=size)
        for a, b, cosine, convexity in pairs.bend:
            code = border(labels[a], labels[b])
            across = code >= 0
            bent_convex = across & (cosine < cos_bend) & (convexity > 0)
            convex += np.bincount(code[bent_convex], minlength=size)
            # Concave, flat (an offset parallel surface: a book on the table) or unmeasured.
            cut += np.bincount(code[across & ~bent_convex], minlength=size)
        convex = convex.reshape(n_planes + 1, n_lab)
        cut = cut.reshape(n_planes + 1, n_lab)
        ok = (convex > cut) & (convex >= 2 * self.cfg.normal_radius + 1)
        if not ok.any():
            return labels
        best = np.where(ok, convex, -1).argmax(axis=0)
        regions = np.flatnonzero(ok.any(axis=0))
        remap = np.arange(n_lab, dtype=labels.dtype)
        remap[regions] = best[regions]
        return remap[labels]

    def _fill_holes(self, labels, valid, s):
        """Invalid-depth pixels within hole_fill_px of a region take the nearest region's label
        (``s``: the grid's stride)."""
        radius = self.cfg.hole_fill_px / s
        if radius <= 0:
            return labels
        holes = ~valid
        if not holes.any() or not (labels > 0).any():
            return labels
        src = (labels == 0).view(np.uint8)
        dist, nearest = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
        seed_flat = np.flatnonzero(labels)  # DIST_LABEL_PIXEL numbers the zero pixels in raster order
        take = holes & (labels == 0) & (dist <= radius)
        if take.any():
            labels[take] = labels.ravel()[seed_flat[nearest[take] - 1]]
        return labels

    # ------------------------------------------------------------------ output
    def _emit(self, labels, valid, n_planes, level, previous, min_grid_px, full_shape, s):
        cfg = self.cfg
        H, W = full_shape
        n_lab = int(labels.max())
        if n_lab == 0:
            return []
        flat = labels.ravel()
        area = np.bincount(flat, minlength=n_lab + 1)
        on_valid = np.bincount(flat[valid.ravel()], minlength=n_lab + 1)
        edge = np.zeros(labels.shape, dtype=bool)
        for a, b in _neighbour_pairs(1):
            differ = labels[a] != labels[b]
            edge[a] |= differ
            edge[b] |= differ
        edge[[0, -1], :] = True
        edge[:, [0, -1]] = True
        perim = np.bincount(flat[edge.ravel()], minlength=n_lab + 1)
        thick = s * area / np.maximum(perim, 1)
        score = (on_valid / np.maximum(area, 1)) * thick / (thick + cfg.score_width_px)

        ids = np.arange(1, n_lab + 1)
        ids = ids[area[1:] >= min_grid_px]
        if level > 0 or not cfg.keep_planes:
            ids = ids[ids > n_planes]
        if level > 0 and ids.size:
            ids = ids[~_repeats(labels, ids, area, previous)]
        if ids.size == 0:
            return []
        # Planes first, then regions from large to small.
        ids = ids[np.lexsort((-area[ids], ids > n_planes))]

        full = np.repeat(np.repeat(labels, s, axis=0), s, axis=1)[:H, :W]
        boxes = ndimage.find_objects(labels, max_label=n_lab)
        out = []
        for i in ids:
            ys, xs = boxes[i - 1]
            sl = (slice(ys.start * s, min(ys.stop * s, H)), slice(xs.start * s, min(xs.stop * s, W)))
            m = np.zeros((H, W), dtype=bool)
            m[sl] = full[sl] == i
            if np.count_nonzero(m[sl]) < cfg.min_mask_pixels:
                continue
            out.append(Mask2D(mask=m, score=float(np.clip(score[i], 0.0, 1.0)), level=level, source_id=-1))
        return out


class _PairGeometry:
    """Level-independent measurements between grid neighbours, computed once per frame.

    ``near``: 4-neighbour pairs (right, down) with the 3-D distance between them (0 where either
    is invalid: a hole is no evidence of a step, and regions never grow into holes), the larger
    depth and the larger noise term of the two. ``far``: pairs ``normal_radius`` apart with the
    cosine between their normals where the surface folds concavely (2 elsewhere).
    """

    def __init__(self, P, N, has_normal, valid, noise, k):
        Z = P[2]
        self.near = []
        for a, b in _neighbour_pairs(1):
            diff = [A[b] - A[a] for A in P]
            step = np.sqrt(diff[0] * diff[0] + diff[1] * diff[1] + diff[2] * diff[2])
            step[~(valid[a] & valid[b])] = 0.0
            self.near.append((a, b, step, np.maximum(Z[a], Z[b]), np.maximum(noise[a], noise[b])))
        self.far = []
        self.bend = []
        for a, b in _neighbour_pairs(k):
            cosine = N[0][a] * N[0][b] + N[1][a] * N[1][b] + N[2][a] * N[2][b]
            convexity = sum((N[i][a] - N[i][b]) * (P[i][a] - P[i][b]) for i in range(3))
            both = has_normal[a] & has_normal[b]
            fold = both & (convexity < 0)
            self.far.append((a, b, np.where(fold, cosine, np.float32(2.0))))
            self.bend.append((a, b, np.where(both, cosine, np.float32(2.0)), convexity))


def _grow(labels: np.ndarray, valid: np.ndarray, links, steps: int) -> np.ndarray:
    """Grow regions into unlabelled valid pixels along depth-continuous 4-neighbour links."""
    labelled = labels > 0
    open_ = valid & ~labelled
    for _ in range(steps):
        changed = False
        for a, b, link in links:
            for dst, src in ((a, b), (b, a)):
                ok = open_[dst] & labelled[src] & link
                if ok.any():
                    labels[dst][ok] = labels[src][ok]
                    labelled[dst] |= ok
                    open_[dst] &= ~ok
                    changed = True
        if not changed:
            break
    return labels


def _repeats(labels: np.ndarray, ids: np.ndarray, area: np.ndarray, previous: list[np.ndarray]) -> np.ndarray:
    """For each id: does a coarser level already hold (nearly) the same region?"""
    dup = np.zeros(ids.size, dtype=bool)
    n_fine = int(labels.max()) + 1
    for coarse in previous:
        n_coarse = int(coarse.max()) + 1
        joint = np.bincount(coarse.ravel().astype(np.int64) * n_fine + labels.ravel(), minlength=n_coarse * n_fine)
        joint = joint.reshape(n_coarse, n_fine)
        if n_coarse < 2:
            continue
        c_area = joint.sum(axis=1)
        inter = joint[1:, ids]  # coarse ids 1.. x fine ids
        union = c_area[1:, None] + area[ids][None, :] - inter
        dup |= (inter / np.maximum(union, 1)).max(axis=0) >= _DUPLICATE_IOU
    return dup


def _neighbour_pairs(k: int):
    """Slices (a, b) pairing each grid pixel with its neighbour k to the right, then k below."""
    yield (slice(None), slice(None, -k)), (slice(None), slice(k, None))
    yield (slice(None, -k), slice(None)), (slice(k, None), slice(None))


def _dot(N, n) -> np.ndarray:
    return N[0] * np.float32(n[0]) + N[1] * np.float32(n[1]) + N[2] * np.float32(n[2])


def _plane_dist(P, n, d: float) -> np.ndarray:
    return _dot(P, n) + np.float32(d)


def _fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane n.x + d = 0 through (N, 3) points, normal facing the camera (d > 0)."""
    pts = points.astype(np.float64)
    c = pts.mean(axis=0)
    q = pts - c
    _, vecs = np.linalg.eigh(q.T @ q)
    n = vecs[:, 0]
    d = -float(n @ c)
    if d < 0:
        n, d = -n, -d
    return n.astype(np.float32), d


WORKING_WIDTH = 320  # pixels across the grid the segmenter works on, with pixel_stride 0


def working_stride(cfg: GeometricSegmenterConfig, width: int) -> int:
    """The grid's stride for an image ``width`` pixels wide: ``pixel_stride``, or with 0 the
    largest that keeps the grid at least WORKING_WIDTH wide (2 for 640x480, 1 for 320x240). The
    thresholds in grid pixels (``normal_radius``, the normals' support) were set on such a grid;
    on a coarser one small things vanish and normals smooth over creases."""
    return cfg.pixel_stride if cfg.pixel_stride > 0 else max(1, width // WORKING_WIDTH)


def _validate(cfg: GeometricSegmenterConfig) -> None:
    def bad(name: str, why: str) -> ValueError:
        return ValueError(f"segmenter.geometric.{name}: {why}")

    if cfg.pixel_stride < 0:
        raise bad("pixel_stride", f"must be >= 0 (0: auto), got {cfg.pixel_stride}")
    if cfg.normal_radius < 1:
        raise bad("normal_radius", f"must be >= 1, got {cfg.normal_radius}")
    if not cfg.cluster_eps:
        raise bad("cluster_eps", "needs at least one level")
    if len(cfg.concave_deg) != len(cfg.cluster_eps):
        raise bad(
            "concave_deg",
            f"needs one value per level of cluster_eps ({len(cfg.cluster_eps)}), got {len(cfg.concave_deg)}",
        )
    if any(not (e > 0) for e in cfg.cluster_eps):
        raise bad("cluster_eps", f"values must be positive, got {cfg.cluster_eps}")
    if any(not (0 < a <= 180) for a in cfg.concave_deg):
        raise bad("concave_deg", f"values must lie in (0, 180], got {cfg.concave_deg}")
    if cfg.depth_noise < 0:
        raise bad("depth_noise", f"must be >= 0, got {cfg.depth_noise}")
    if not cfg.plane_distance > 0:
        raise bad("plane_distance", f"must be positive, got {cfg.plane_distance}")
    if not 0 < cfg.plane_normal_deg < 90:
        raise bad("plane_normal_deg", f"must lie in (0, 90), got {cfg.plane_normal_deg}")
    if not 0 < cfg.plane_min_fraction <= 1:
        raise bad("plane_min_fraction", f"must lie in (0, 1], got {cfg.plane_min_fraction}")
    if cfg.max_planes < 0:
        raise bad("max_planes", f"must be >= 0, got {cfg.max_planes}")
    if cfg.ransac_iterations < 1:
        raise bad("ransac_iterations", f"must be >= 1, got {cfg.ransac_iterations}")
    if cfg.hole_fill_px < 0:
        raise bad("hole_fill_px", f"must be >= 0, got {cfg.hole_fill_px}")
    if cfg.min_mask_pixels < 1:
        raise bad("min_mask_pixels", f"must be >= 1, got {cfg.min_mask_pixels}")
    if not cfg.score_width_px > 0:
        raise bad("score_width_px", f"must be positive, got {cfg.score_width_px}")


@register_segmenter("geometric")
def _make_geometric(cfg: SegmenterConfig) -> GeometricSegmenter:
    return GeometricSegmenter(cfg.geometric)
