"""The fusion map: a sparse voxel map whose voxels remember which object instances observed them.

Storage (two levels, no per-voxel hashing)
    Blocks of 8x8x8 voxels are keyed by their block coordinates in a C++ hash map
    (:class:`~.blocks.BlockHash`, ``open3d.core.HashMap``, CPU or CUDA). Each block owns a row of a
    dense (blocks, 512) table that gives, per voxel of the block, its row in the flat voxel arrays
    (-1: not stored). Per voxel row: the packed key, up to ``slots_per_voxel`` (object id, hits)
    slots, a running mean colour, and the owner (the slot with most hits). Per object: the number
    of voxel rows holding its id, observation count, first/last seen, an embedding sum and the
    rows it was ever given (compacted lazily), so that what reads one object costs that object.

Integration of one frame (cost follows the frame, not the map)
    1. The frame's points are deduplicated through blocks (:class:`~.blocks.FrameVoxels`): two
       bincounts, no sort, no per-point hash; only the frame's few hundred blocks are looked up.
       Each voxel takes the label of its points (a label image: 0 = no mask, i = mask i).
    2. Looking up the frame's voxels gives every object's *visible* part |A ∩ F|.
    3. Each mask's voxels are split by DBSCAN into 3-D segments (all masks at once, on the
       frame's voxel grid). A segment S is compared with the objects in its voxels by
       intersection over volume against their visible parts: IoV(S, A) = |S ∩ A| / |S| and
       IoV(A, S) = |S ∩ A| / |A ∩ F|. The parts of one mask that lie mostly inside the same object
       are tested together (an object cut in two by an occluder is one observation). A segment
       joins the best object that passes CORE-3D's test (both > gamma, |difference| < delta),
       otherwise founds a new one. All of this is dense (segments x objects) array algebra.
    4. Voxel slots vote: the associated id gains a hit; a voxel whose slots are full takes the new
       id only when its weakest slot has a single hit, else that hit is removed.

Merging
    Every ``merge_interval`` frames, pairs of objects that share voxels *touched since the last
    pass* are tested with the balanced IoV test on their full voxel sets and merged. The pass costs
    what was touched, never the whole map.

Output
    A snapshot assigns each voxel to its owner, so reported objects partition the map's voxels.
    Snapshots are cached per object: only objects whose voxels, observations or embeddings changed
    since the last snapshot are rebuilt.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field

import numpy as np

from ...config import FusionConfig
from ..objects import MapSnapshot, ObjectInfo, OrientedBox
from .blocks import BLOCK_VOXELS, MAX_DENSE_BLOCK_CELLS, BlockHash, FrameVoxels, block_offsets, gather_rows_kernel
from .map_kernels import map_neighbour_rows_kernel, overlaps_kernel, pair_codes_kernel, vote_kernel, vote_part_kernel, voxel_rows_kernel
from .pixels import depth_voxels
from .dbscan import dbscan_padded, neighbour_offsets
from .threads import ThreadTeam, chunk, default_threads
from .voxels import key_centers, pack, unpack, voxel_coords

MAX_COORD = (1 << 20) - 1  # packable voxel coordinate range (21 bits per axis)


@dataclass
class ObjectState:
    id: int
    num_voxels: int = 0  # rows whose slots hold this id
    num_observations: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    embedding_sum: np.ndarray | None = None
    embedding_weight: float = 0.0
    best_view_quality: float = -1.0
    best_view: np.ndarray | None = None

    def add_embedding(self, embedding: np.ndarray | None, weight: float = 1.0) -> None:
        if embedding is None or weight <= 0:
            return
        e = np.asarray(embedding, dtype=np.float32) * weight
        self.embedding_sum = e.copy() if self.embedding_sum is None else self.embedding_sum + e
        self.embedding_weight += weight

    @property
    def embedding(self) -> np.ndarray | None:
        if self.embedding_sum is None:
            return None
        n = float(np.linalg.norm(self.embedding_sum))
        return self.embedding_sum / n if n > 0 else None


@dataclass
class SegmentObservation:
    """What one 2-D mask contributes besides geometry (set by the pipeline when semantics are on)."""

    embedding: np.ndarray | None = None
    view_quality: float = 0.0
    view_crop: np.ndarray | None = None


@dataclass
class IntegrationStats:
    segments: int = 0
    created: int = 0
    associated: int = 0
    merged: int = 0
    dropped_voxels: int = 0  # new voxels refused because the map reached max_voxels
    touched: set[int] = field(default_factory=set)
    points: int = 0  # back-projected points of the frame
    stride: int = 0  # pixel stride they were sampled with
    voxels: int = 0  # distinct voxels of the frame
    rejected: str = ""  # reason code when the frame was refused (the map is then unchanged)


_RAYS: dict = {}


def _rays(intr, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sampled pixel (row-major), (u - cx) / fx and (v - cy) / fy as float32 (cached)."""
    key = (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy, stride)
    r = _RAYS.get(key)
    if r is None:
        rx, ry = _ray_axes(intr, stride)
        r = (np.tile(rx, len(ry)), np.repeat(ry, len(rx)))
        if len(_RAYS) > 8:
            _RAYS.clear()
        _RAYS[key] = r
    return r


def _ray_axes(intr, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(u - cx) / fx per sampled column and (v - cy) / fy per sampled row, float32 (what
    :func:`_rays` repeats per pixel)."""
    rx = ((np.arange(0, intr.width, stride) - intr.cx) / intr.fx).astype(np.float32)
    ry = ((np.arange(0, intr.height, stride) - intr.cy) / intr.fy).astype(np.float32)
    return rx, ry


def balanced(iov_ab, iov_ba, gamma: float, delta: float):
    """CORE-3D test: both IoVs above gamma and close to each other."""
    return (iov_ab > gamma) & (iov_ba > gamma) & (np.abs(iov_ab - iov_ba) < delta)


class _Rows:
    """Rows an object was given, as appended chunks; compacted when read."""

    __slots__ = ("chunks",)

    def __init__(self):
        self.chunks: list[np.ndarray] = []


# The 27 block steps (-1..1 per axis) from a block to itself and its neighbours.
_BLOCK_STEPS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.int64)

class ObjectMap:
    def __init__(self, cfg: FusionConfig):
        if cfg.voxel_size <= 0:
            raise ValueError("fusion.voxel_size must be positive")
        for name in ("pixel_stride", "co_mask_votes", "min_valid_pixels", "min_segment_voxels", "merge_interval", "threads"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"fusion.{name} must be >= 0, got {getattr(cfg, name)}")
        if cfg.slots_per_voxel < 1:
            raise ValueError(f"fusion.slots_per_voxel must be >= 1, got {cfg.slots_per_voxel}")
        if not cfg.max_pose_jump >= 0:
            raise ValueError(f"fusion.max_pose_jump must be >= 0, got {cfg.max_pose_jump}")
        dev = str(cfg.device).lower()
        if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"fusion.device must be cpu, cuda or cuda:N, got {cfg.device!r}")
        self.cfg = cfg
        self.voxel_size = float(cfg.voxel_size)
        self.K = int(cfg.slots_per_voxel)
        self.device = getattr(cfg, "device", "cpu") or "cpu"
        # The threads of the per-pixel stage (this one and threads - 1 workers, started on first use).
        self._team = ThreadTeam(cfg.threads or default_threads())
        self.clear()

    @property
    def threads(self) -> int:
        """Threads of the per-pixel stage (``fusion.threads``, 0 resolved to the cores)."""
        return self._team.threads

    # ------------------------------------------------------------------ storage
    def clear(self) -> None:
        self._blocks = BlockHash(self.device)
        self._btable = np.full((0, BLOCK_VOXELS), -1, np.int32)
        self._n = 0
        cap = 1024
        self.keys = np.zeros(cap, np.int64)
        self.ids = np.full((cap, self.K), -1, np.int32)
        self.hits = np.zeros((cap, self.K), np.int32)
        self.colors = np.zeros((cap, 3), np.float32)
        self.color_n = np.zeros(cap, np.int32)
        self.owner = np.full(cap, -1, np.int32)
        self.objects: dict[int, ObjectState] = {}
        self._rows: dict[int, _Rows] = {}
        self.next_id = 1
        self.frames = 0
        self.version = 0  # bumped on every change
        self._dirty: set[int] = set()  # objects changed since the last snapshot
        self._lost: set[int] = set()  # objects that lost voxels (or were created) this frame
        self._merge_touched: list[np.ndarray] = []  # voxel rows touched since the last merge pass
        self._infos: dict[int, ObjectInfo] = {}
        self._alias: dict[int, int] = {}  # merged-away id -> survivor, within one frame
        self._compact = np.full(1024, -1, np.int64)  # work array of the overlap kernel
        self._pair_votes: dict[int, dict[int, list[int]]] = {}  # [a][b] is [b][a]: [frames together, apart]
        self._unions: list[list[int]] = []
        self._snapshot: MapSnapshot | None = None
        self._snapshot_key = None

    @property
    def num_voxels(self) -> int:
        return self._n

    def memory_bytes(self) -> int:
        """Memory held by the map: voxel arrays, block table and hash, object states."""
        arrays = sum(a.nbytes for a in (self.keys, self.ids, self.hits, self.colors, self.color_n, self.owner))
        index = self._btable.nbytes + self._blocks.memory_bytes()
        rows = sum(c.nbytes for r in self._rows.values() for c in r.chunks)
        objects = sum(
            (s.embedding_sum.nbytes if s.embedding_sum is not None else 0) + (s.best_view.nbytes if s.best_view is not None else 0)
            for s in self.objects.values()
        )
        return int(arrays + index + rows + objects)

    def _grow(self, need: int) -> None:
        cap = len(self.keys)
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def grown(a, fill):
            out = np.full((new,) + a.shape[1:], fill, a.dtype)
            out[:cap] = a
            return out

        self.keys = grown(self.keys, 0)
        self.ids = grown(self.ids, -1)
        self.hits = grown(self.hits, 0)
        self.colors = grown(self.colors, 0)
        self.color_n = grown(self.color_n, 0)
        self.owner = grown(self.owner, -1)

    def _grow_blocks(self, need: int) -> None:
        cap = len(self._btable)
        if need <= cap:
            return
        table = np.full((max(need, 2 * cap, 256), BLOCK_VOXELS), -1, np.int32)
        table[:cap] = self._btable
        self._btable = table

    def _rows_of_blocks(self, block_numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        ok = block_numbers >= 0
        rows = np.full(len(block_numbers), -1, np.int64)
        rows[ok] = self._btable[block_numbers[ok], offsets[ok]]
        return rows

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given voxel keys, -1 where absent."""
        keys = np.asarray(keys, np.int64)
        if len(keys) == 0:
            return np.zeros(0, np.int64)
        bc, off = block_offsets(unpack(keys))
        ub, inv = np.unique(bc, axis=0, return_inverse=True)
        return self._rows_of_blocks(self._blocks.find(ub)[inv.reshape(-1)], off)

    def _insert_voxels(self, coords: np.ndarray, block_numbers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Rows for new voxels (absent from the map, distinct); -1 beyond max_voxels."""
        room = max(0, int(self.cfg.max_voxels) - self._n)
        n = min(len(coords), room)
        rows = np.full(len(coords), -1, np.int64)
        if n == 0:
            return rows
        self._grow(self._n + n)
        new = np.arange(self._n, self._n + n, dtype=np.int64)
        self.keys[new] = pack(coords[:n])
        self._btable[block_numbers[:n], offsets[:n]] = new
        self._n += n
        rows[:n] = new
        return rows

    def member_rows(self, oid: int) -> np.ndarray:
        """Sorted rows whose slots hold ``oid`` (costs the object's size, not the map's)."""
        r = self._rows.get(oid)
        if r is None or not r.chunks:
            return np.zeros(0, np.int64)
        if len(r.chunks) > 1:
            # Chunks are sorted runs: a stable sort merges them in about linear time.
            rows = np.sort(np.concatenate(r.chunks), kind="stable")
            rows = rows[np.r_[True, rows[1:] != rows[:-1]]]
        else:
            rows = r.chunks[0]
        rows = rows[(self.ids[rows] == oid).any(axis=1)]
        r.chunks = [rows]
        return rows

    def _add_rows(self, oids: np.ndarray, rows: np.ndarray) -> None:
        """Record that ``rows[i]`` now holds ``oids[i]`` (grouped per object, one append each)."""
        if len(rows) == 0:
            return
        order = np.argsort(oids, kind="stable")
        o, r = oids[order], rows[order]
        starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
        ends = np.append(starts[1:], len(o))
        for s, e in zip(starts.tolist(), ends.tolist()):
            oid = int(o[s])
            self._rows.setdefault(oid, _Rows()).chunks.append(np.sort(r[s:e]))
            self.objects[oid].num_voxels += e - s

    def _update_owner(self, rows: np.ndarray) -> None:
        """Recompute the owner of ``rows``; objects whose ownership changed become dirty."""
        if len(rows) == 0:
            return
        old = self.owner[rows]
        hits = np.where(self.ids[rows] >= 0, self.hits[rows], -1)
        best = hits.argmax(axis=1)
        ar = np.arange(len(rows))
        new = np.where(hits[ar, best] >= 0, self.ids[rows, best], -1)
        self.owner[rows] = new
        changed = old != new
        if changed.any():
            self._dirty.update(np.unique(np.concatenate([old[changed], new[changed]])).tolist())

    # ------------------------------------------------------------------ integration
    def integrate_frame(
        self,
        depth: np.ndarray,
        intrinsics,
        pose: np.ndarray,
        rgb: np.ndarray,
        labels: np.ndarray,
        stamp: float,
        observations: list[SegmentObservation] | None = None,
        stride: int = 1,
    ) -> IntegrationStats:
        """Fuse one RGB-D frame: depth (H, W) float32 metres (0 = invalid), camera-to-world
        pose, rgb (H, W, 3) uint8 and a label image (H, W) (0 = no mask, i = mask i, whose
        observation is ``observations[i - 1]``). Every ``stride``-th pixel is used."""
        if labels.shape != depth.shape:
            raise ValueError(f"label image {labels.shape} does not match depth {depth.shape}")
        H, W = depth.shape
        d = np.ascontiguousarray(depth[::stride, ::stride] if stride > 1 else depth, dtype=np.float32)
        flat = d.reshape(-1)
        min_valid = max(1, int(getattr(self.cfg, "min_valid_pixels", 1)) // (stride * stride))
        scale = 1.0 / self.voxel_size
        M = np.asarray(pose[:3, :3], np.float64) * scale
        t = np.asarray(pose[:3, 3], np.float64) * scale
        lab = labels[::stride, ::stride] if stride > 1 else labels
        rxs, rys = _ray_axes(intrinsics, stride)
        dv = depth_voxels(self._team, d, rxs, rys, M, t, np.ascontiguousarray(lab).reshape(-1), min_valid, MAX_COORD - 8, MAX_DENSE_BLOCK_CELLS)
        if dv.status in ("few_valid_depth", "out_of_range"):
            return IntegrationStats(rejected=dv.status, stride=stride, points=dv.points)
        if dv.status == "ok":
            fv = FrameVoxels.from_depth(dv)
            colors = rgb[::stride, ::stride] if stride > 1 else rgb
            frame_colors = gather_rows_kernel(np.ascontiguousarray(colors, dtype=np.uint8).reshape(-1, 3), fv.rep)
            stats = IntegrationStats(points=dv.points, stride=stride, voxels=len(fv))
            return self._integrate_voxels(fv, frame_colors, fv.label, stamp, observations, stats)
        # "too_large": a view frustum whose block grid exceeds the dense limit takes the general
        # path: back-projection with array code, then the points' own blocks (FrameVoxels).
        n_valid = int(np.count_nonzero(flat > 0))
        if n_valid < min_valid:
            return IntegrationStats(rejected="few_valid_depth", stride=stride, points=n_valid)
        rx, ry = _rays(intrinsics, stride)
        valid = np.flatnonzero(flat > 0)
        z = flat[valid]
        x = rx[valid]
        x *= z
        y = ry[valid]
        y *= z
        # World coordinates in voxel units, one contiguous row per axis (3 multiply-adds each).
        R = np.asarray(pose[:3, :3], np.float64) * scale
        t = np.asarray(pose[:3, 3], np.float64) * scale
        coords = np.empty((3, len(valid)), np.int32)
        w = np.empty(len(valid), np.float32)
        tmp = np.empty(len(valid), np.float32)
        for i in range(3):
            np.multiply(x, np.float32(R[i, 0]), out=w)
            w += np.multiply(y, np.float32(R[i, 1]), out=tmp)
            w += np.multiply(z, np.float32(R[i, 2]), out=tmp)
            w += np.float32(t[i])
            lo, hi = float(w.min()), float(w.max())
            if not (np.isfinite(lo) and np.isfinite(hi)) or max(-lo, hi) > MAX_COORD - 8:
                return IntegrationStats(rejected="out_of_range", stride=stride, points=len(valid))
            np.floor(w, out=w)
            coords[i] = w
        return self._finish_frame(coords, valid, stride, W, rgb, labels, stamp, observations)

    def _finish_frame(self, coords, valid, stride, W, rgb, labels, stamp, observations) -> IntegrationStats:
        if stride > 1:  # pixel index in the full image
            w = (W + stride - 1) // stride
            pix = (valid // w) * stride * W + (valid % w) * stride
        else:
            pix = valid
        stats = IntegrationStats(points=len(valid), stride=stride)
        return self._integrate_coords(coords, rgb.reshape(-1, 3), labels.reshape(-1), pix, stamp, observations, stats)

    def integrate_points(
        self,
        points: np.ndarray,
        colors: np.ndarray,
        labels: np.ndarray,
        stamp: float,
        observations: list[SegmentObservation] | None = None,
    ) -> IntegrationStats:
        """Fuse one frame given as points: (N, 3) world points, (N, 3) uint8 colours, (N,) labels
        (0 = no mask, i = mask i, whose observation is ``observations[i - 1]``). The point-level
        entry, used by the tests and for offline point clouds; depth images take
        :meth:`integrate_frame`."""
        points = np.asarray(points)
        stats = IntegrationStats(points=len(points))
        if len(points) == 0:
            stats.rejected = "no_points"
            return stats
        if not np.all(np.isfinite(points)):
            stats.rejected = "bad_points"
            return stats
        coords = voxel_coords(points, self.voxel_size)
        if np.abs(coords).max() > MAX_COORD - 8:
            stats.rejected = "out_of_range"
            return stats
        coords = np.ascontiguousarray(coords.T.astype(np.int32))
        return self._integrate_coords(coords, np.asarray(colors), np.asarray(labels), np.arange(len(points)), stamp, observations, stats)

    def _integrate_coords(self, coords, colors, labels, pix, stamp, observations, stats) -> IntegrationStats:
        """``coords``: (3, N) int32 voxel coordinates of the frame's points; ``colors`` and ``labels``
        indexed by ``pix`` (the points' pixels)."""
        fv = FrameVoxels(coords, labels=labels, pix=pix)
        V = len(fv)
        stats.voxels = V
        # Per frame voxel, one representative point (the last one written) gives its colour and
        # label: the points of one voxel lie on the same bit of surface.
        if fv.rep is not None:
            rep = pix[fv.rep]
        else:
            rep = np.empty(V, np.int64)
            rep[fv.point_voxel] = pix
        if colors.dtype == np.uint8 and colors.ndim == 2 and colors.shape[1] == 3:
            frame_colors = gather_rows_kernel(np.ascontiguousarray(colors), rep)
        else:
            frame_colors = colors[rep]
        vlabel = fv.label if fv.label is not None else labels[rep].astype(np.int64)
        return self._integrate_voxels(fv, frame_colors, vlabel, stamp, observations, stats)

    def _integrate_voxels(self, fv: FrameVoxels, frame_colors, vlabel, stamp, observations, stats) -> IntegrationStats:
        """Fuse the frame's distinct voxels: ``frame_colors`` (V, 3) uint8 and ``vlabel`` (V,)
        their colour and majority label."""
        cfg = self.cfg
        V = len(fv)

        # 3-D segments: DBSCAN of each mask's voxels (all masks at once). Meanwhile, on a worker
        # thread: the frame's blocks in the map and the map rows of its voxels (-1: new).
        vb, vo = fv.voxel_block, fv.voxel_offset

        def map_rows():
            fblock_num = self._blocks.find(fv.blocks)
            # compiled: no (V,) temporaries, and it leaves the interpreter lock
            return fblock_num, voxel_rows_kernel(fblock_num, vb, vo, self._btable)

        seg, (fblock_num, rows) = self._segments(fv, vlabel, beside=map_rows)
        n_seg = int(seg.max()) + 1 if V else 0
        stats.segments = n_seg
        if n_seg == 0:
            self.frames += 1
            self.version += 1
            return stats
        in_seg = seg >= 0
        seg_size = np.bincount(seg[in_seg], minlength=n_seg)
        seg_label = np.zeros(n_seg, np.int64)
        seg_label[seg[in_seg]] = vlabel[in_seg]

        targets = self._associate(rows, seg, seg_size, seg_label)
        if cfg.hidden_side_voxels > 0:
            self._hidden_sides(fv, seg, seg_size, rows, targets)
        new = targets < 0
        stats.created = int(new.sum())
        stats.associated = n_seg - stats.created
        for s in np.flatnonzero(new).tolist():
            targets[s] = self.next_id
            self.objects[self.next_id] = ObjectState(id=self.next_id, first_seen=stamp)
            self._lost.add(self.next_id)  # dropped at the end of the frame if it got no voxel
            self.next_id += 1

        for group in self._unions:
            for gone in group[1:]:
                keep = group[0]
                if gone in self.objects and keep in self.objects and gone != keep:
                    self._merge_pair(keep, gone)
                    stats.merged += 1
        targets = np.array([self._resolve(t) for t in targets.tolist()], np.int64)

        # New voxels of segments: new blocks first, then rows.
        sv = np.flatnonzero(in_seg)
        need = sv[rows[sv] < 0]
        if len(need):
            nb_need = np.unique(vb[need])
            absent = nb_need[fblock_num[nb_need] < 0]
            if len(absent):
                numbers = self._blocks.insert(fv.blocks[absent])
                self._grow_blocks(self._blocks.size)
                fblock_num[absent] = numbers
            vcoords = fv.blocks[vb[need]].astype(np.int64) * 8 + np.stack([(vo[need] >> 6) & 7, (vo[need] >> 3) & 7, vo[need] & 7], axis=1)
            rows[need] = self._insert_voxels(vcoords, fblock_num[vb[need]], vo[need])
            stats.dropped_voxels = int((rows[need] < 0).sum())
        ok = sv[rows[sv] >= 0]
        r = rows[ok]
        t = targets[seg[ok]].astype(np.int32)
        self._vote(r, t, frame_colors[ok])
        self._merge_touched.append(r)

        if cfg.co_mask_votes > 0:
            stats.merged += self._co_mask_evidence(targets, seg_label)
            targets = np.array([self._resolve(t) for t in targets.tolist()], np.int64)
        touched = np.unique(targets)
        for oid in touched.tolist():
            st = self.objects[oid]
            st.num_observations += 1  # one observation per object and frame
            st.last_seen = stamp
        self._dirty.update(touched.tolist())
        stats.touched = set(touched.tolist())
        if observations is not None:
            self._observe(targets, seg_size, seg_label, observations)

        self.frames += 1
        if cfg.merge_interval > 0 and self.frames % cfg.merge_interval == 0:
            stats.merged += self.merge_objects()
        self._drop_empty()
        self._alias.clear()
        self.version += 1
        return stats

    def _co_mask_evidence(self, targets: np.ndarray, seg_label: np.ndarray) -> int:
        """Objects seen inside one 2-D mask are evidence of one thing; objects seen in different
        masks of the same frame, evidence of two. Pieces of one object that the map holds apart
        (parts cut by an occluder, legs first seen without their top) are merged once they have
        been seen together in ``co_mask_votes`` frames and more often together than apart.
        The cost follows the frame's objects: (objects seen in the frame)^2 pairs."""
        per_mask: dict[int, set[int]] = {}
        for t, m in zip(targets.tolist(), seg_label.tolist()):
            per_mask.setdefault(m, set()).add(t)
        votes = self._pair_votes
        together: set[tuple[int, int]] = set()
        for g in per_mask.values():
            g = sorted(g)
            for i in range(len(g)):
                for j in range(i + 1, len(g)):
                    together.add((g[i], g[j]))
        seen = {t for g in per_mask.values() for t in g}
        seen_sorted = sorted(seen)
        for i, a in enumerate(seen_sorted):
            row = votes.setdefault(a, {})
            for b in seen_sorted[i + 1 :]:
                v = row.get(b)
                if v is None:
                    v = [0, 0]
                    row[b] = v
                    votes.setdefault(b, {})[a] = v
                v[0 if (a, b) in together else 1] += 1
        merged = 0
        for a, b in sorted(together):
            a, b = self._resolve(a), self._resolve(b)
            if a == b or a not in self.objects or b not in self.objects:
                continue
            t, apart = votes.get(a, {}).get(b, (0, 0))
            if t >= self.cfg.co_mask_votes and t > apart:
                keep, gone = (a, b) if self.objects[a].num_voxels >= self.objects[b].num_voxels else (b, a)
                self._merge_pair(keep, gone)
                merged += 1
        return merged

    def _hidden_sides(self, fv: FrameVoxels, seg: np.ndarray, seg_size: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> None:
        """The other face of a thin thing: a segment that shows space the map has not seen (it
        founds a new object, or most of its voxels are new) joins an object the frame does not
        see when the two lie next to each other (within ``hidden_side_voxels``) over most of
        both. The front and the back of a thin thing (a screen, a door, a board) are never in
        one view and share no voxel, so neither the IoV test nor the co-mask evidence can join
        them. The object must be unseen in this frame (no segment went to it) and, where the
        segment went to an existing object, the two must never have been seen in one frame:
        what is seen together is no hidden side, which keeps a book apart from the table under
        it and a box from the wall behind it. Both shares must pass the balanced test (gamma,
        delta), so a small piece does not join a large object it touches, nor the reverse.
        Costs the new-space segments' voxels times the (2r+1)^3 neighbourhood."""
        n_seg = len(seg_size)
        in_seg = seg >= 0
        fresh = np.bincount(seg[in_seg & (rows < 0)], minlength=n_seg)
        check = np.flatnonzero(fresh > self.cfg.gamma * seg_size)
        if len(check) == 0 or not self.objects:
            return
        r = int(self.cfg.hidden_side_voxels)
        in_check = np.isin(seg, check)
        # Along the axes only (6 r voxels, not (2r+1)^3): a face within r voxels of the other
        # is met along the axis nearest its normal.
        steps = np.arange(1, r + 1)
        offs = np.concatenate([np.eye(3, dtype=np.int64)[None] * k for k in np.r_[steps, -steps]]).reshape(-1, 3)
        if r <= 8:
            # A voxel within r <= 8 voxels of another lies in its block or one of the 26 around
            # it: the map blocks around the frame blocks of the segments' voxels, found once,
            # give every neighbour's map row by block arithmetic. While the camera explores,
            # most new space has no map block around it and is skipped.
            has = np.zeros(len(fv.blocks), bool)
            has[fv.voxel_block[in_check]] = True
            ub = np.flatnonzero(has)
            around = self._blocks.find((fv.blocks[ub][:, None, :] + _BLOCK_STEPS[None]).reshape(-1, 3)).reshape(len(ub), 27)
            map_nbr = np.full((len(fv.blocks), 27), -1, np.int64)
            map_nbr[ub] = around
            in_check &= (map_nbr >= 0).any(axis=1)[fv.voxel_block]
            if not in_check.any():
                return
            vseg = seg[in_check]
            nrows = map_neighbour_rows_kernel(fv.voxel[in_check], map_nbr, self._btable, offs).reshape(-1)
            n_src = len(vseg)
        else:  # farther than the blocks around (the configuration bounds r at 8): look the neighbours up
            coords = fv.voxel_coords()[in_check]
            vseg = seg[in_check]
            near = (coords[:, None, :] + offs[None, :, :]).reshape(-1, 3)
            if near.min() < -MAX_COORD // 2 or near.max() > MAX_COORD // 2:
                return
            nrows = self.lookup(pack(near))
            n_src = len(coords)
        src = np.repeat(np.arange(n_src), len(offs))
        hit = nrows >= 0
        src, nrows = src[hit], nrows[hit]
        own = self.owner[nrows].astype(np.int64)
        # Candidates: objects no segment of this frame went to, other than the segment's own.
        ok = (own >= 0) & ~np.isin(own, targets[targets >= 0])  # the frame's objects, not every id issued
        src, nrows, own = src[ok], nrows[ok], own[ok]
        if len(own) == 0:
            return
        sseg = vseg[src]
        gamma, delta = self.cfg.gamma, self.cfg.delta
        taken: set[int] = set()
        for s in np.unique(sseg).tolist():
            t = int(targets[s])
            mine = sseg == s
            best, best_score = -1, 0.0
            for a in np.unique(own[mine]).tolist():
                if a in taken or a not in self.objects:
                    continue
                if t >= 0 and self._pair_votes.get(t, {}).get(a) is not None:
                    continue  # seen in one frame before: two things
                pick = mine & (own == a)
                seg_share = len(np.unique(src[pick])) / max(int(seg_size[s]), 1)
                obj_share = len(np.unique(nrows[pick])) / max(self.objects[a].num_voxels, 1)
                if balanced(seg_share, obj_share, gamma, delta) and min(seg_share, obj_share) > best_score:
                    best, best_score = a, min(seg_share, obj_share)
            if best < 0:
                continue
            taken.add(best)
            if t < 0:
                targets[s] = best
            else:
                big, small = (best, t) if self.objects[best].num_voxels >= self.objects[t].num_voxels else (t, best)
                self._unions.append([big, small])

    def _fold_votes(self, keep: int, gone: int) -> None:
        """Pair evidence of a merged-away object passes to its survivor (costs its pairs)."""
        votes = self._pair_votes
        for b, v in votes.pop(gone, {}).items():
            other = votes.get(b)
            if other is not None:
                other.pop(gone, None)
            if b == keep:
                continue
            w = votes.setdefault(keep, {}).get(b)
            if w is None:
                votes[keep][b] = v
                votes.setdefault(b, {})[keep] = v
            else:
                w[0], w[1] = max(w[0], v[0]), max(w[1], v[1])

    def _resolve(self, oid: int) -> int:
        while oid not in self.objects and oid in self._alias:
            oid = self._alias[oid]
        return oid

    def _segments(self, fv: FrameVoxels, vlabel: np.ndarray, beside=lambda: None):
        """Per frame voxel, its 3-D segment (-1: none): DBSCAN within each mask's voxels, parts
        smaller than ``min_segment_voxels`` dropped as noise. ``beside``: Python work that a
        worker thread does while the compiled clustering runs (in turn with one thread).
        Returns (segments, beside's result)."""
        cfg = self.cfg
        V = len(vlabel)
        labelled = vlabel > 0
        if not labelled.any():
            return np.full(V, -1, np.int64), beside()
        if getattr(cfg, "dbscan_split", True):
            return dbscan_padded(
                fv.voxel, fv._vlut, fv.block_neighbours(), vlabel, neighbour_offsets(cfg.dbscan_eps_voxels),
                int(cfg.dbscan_min_samples), int(cfg.min_segment_voxels), team=self._team, beside=beside,
            )
        # Without the split: one segment per mask (those of at least min_segment_voxels voxels).
        comp = np.where(labelled, vlabel, -1)
        keep = comp >= 0
        _, dense = np.unique(comp[keep], return_inverse=True)
        seg = np.full(V, -1, np.int64)
        seg[keep] = dense.reshape(-1)
        size = np.bincount(seg[keep])
        big = size >= cfg.min_segment_voxels
        remap = np.full(len(size), -1, np.int64)
        remap[big] = np.arange(int(big.sum()))
        seg[keep] = remap[seg[keep]]
        return seg, beside()

    def _associate(self, rows: np.ndarray, seg: np.ndarray, seg_size: np.ndarray, seg_label: np.ndarray) -> np.ndarray:
        """Target object per segment (-1: a new object), decided against the map before this frame.

        For each mask and candidate object A, the mask's segments lying mostly inside A
        (|S ∩ A| > gamma |S|) are taken together, as the mask saw them. Their union U passes when
        IoV(U, A) and IoV(A_visible, U) pass the balanced test; a segment joins the passing
        candidate with the best score, min(IoV(U, A), IoV(A_visible, U)). A_visible is A's
        voxels among the frame's segmented voxels.
        """
        gamma = self.cfg.gamma
        n_seg = len(seg_size)
        targets = np.full(n_seg, -1, np.int64)
        self._unions = []
        # An object's voxels that the frame saw but that lie in no segment (no mask there: depth
        # edges, holes, masks dropped as too small or unsure, DBSCAN noise) say nothing about
        # which mask is the object: its visible part is what the frame's segments cover.
        rows = np.where(seg >= 0, rows, -1)
        known = rows >= 0
        if not known.any():
            return targets
        if len(self._compact) < self.next_id + 1:
            self._compact = np.full(2 * (self.next_id + 1), -1, np.int64)
        objs, visible, inter = overlaps_kernel(rows, seg, self.ids, n_seg, self._compact)
        n_obj = len(objs)
        sk = seg[known]
        # A segment's voxels that the map has never seen say nothing for or against an object:
        # a view that extends a known object into new space must still find it. So the segment
        # side of the test counts the segment's known voxels only.
        if self.cfg.iov_known_only:
            seg_size = np.bincount(sk[sk >= 0], minlength=n_seg)
        inside = inter > gamma * seg_size[:, None]
        targets = self._choose(targets, inter, inside, visible, objs, seg_size, seg_label, n_seg, n_obj, rows, known)
        return targets

    def _choose(self, targets, inter, inside, visible, objs, seg_size, seg_label, n_seg, n_obj, rows, known):
        gamma, delta = self.cfg.gamma, self.cfg.delta
        # Per mask (dense over the masks present): union of its inside segments per object.
        masks, seg_mask = np.unique(seg_label, return_inverse=True)
        order = np.argsort(seg_mask, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(seg_mask[order]) != 0])
        U = np.add.reduceat((inter * inside)[order], starts, axis=0)
        US = np.add.reduceat((inside * seg_size[:, None].astype(np.float64))[order], starts, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iov_u = np.where(US > 0, U / np.maximum(US, 1), 0.0)
            iov_o = U / np.maximum(visible[None, :], 1)
        score = np.where(balanced(iov_u, iov_o, gamma, delta) & (US > 0), np.minimum(iov_u, iov_o), 0.0)
        seg_score = score[seg_mask] * inside
        best = seg_score.argmax(axis=1)
        has = seg_score[np.arange(n_seg), best] > 0
        targets[has] = objs[best[has]]
        self._unions = []
        share = self.cfg.union_min_share
        if share > 0:
            # A segment holding most of the visible part of two or more objects, each a real
            # share of it, whose union passes the balanced test against the segment: the
            # segmenter saw them as one thing, so they are merged and the segment joins them.
            contained = (inter > gamma * visible[None, :]) & (inter >= share * seg_size[:, None])
            slot = None  # the slots of the frame's known voxels, read once when needed
            for s in np.flatnonzero(contained.sum(axis=1) >= 2).tolist():
                group = objs[contained[s]]
                in_union = float(inter[s, contained[s]].sum())
                if slot is None:
                    slot = self.ids[rows[known]]
                visible_union = float(np.isin(slot, group).any(axis=1).sum())
                if balanced(in_union / seg_size[s], in_union / max(visible_union, 1), gamma, delta):
                    group = sorted(group.tolist(), key=lambda o: -self.objects[o].num_voxels)
                    targets[s] = group[0]
                    self._unions.append(group)
        return targets

    def _observe(self, targets, seg_size, seg_label, observations: list[SegmentObservation]) -> None:
        """Embeddings and best views: each segment adds its mask's embedding weighted by its share
        of the mask's voxels, so the parts of a split mask each carry their own part of it."""
        mask_total = np.bincount(seg_label, weights=seg_size)
        for s, oid in enumerate(targets.tolist()):
            m = int(seg_label[s]) - 1
            if not 0 <= m < len(observations):
                continue
            o = observations[m]
            st = self.objects[oid]
            st.add_embedding(o.embedding, float(seg_size[s] / max(mask_total[m + 1], 1)))
            if o.view_crop is not None and o.view_quality > st.best_view_quality:
                st.best_view_quality = o.view_quality
                st.best_view = o.view_crop

    def _vote(self, rows: np.ndarray, oid: np.ndarray, colors: np.ndarray, max_weight: int = 20) -> None:
        """Add one observation of object ``oid[i]`` to the slots of ``rows[i]`` (distinct rows)
        and blend ``colors[i]`` into its colour, in one compiled pass (on the team's threads
        for many rows). A row that holds ``oid`` gains a hit; else it takes a free slot; else
        its weakest slot is replaced when it had one hit, and loses a hit otherwise. Owners
        follow the slots."""
        args = (rows, oid, self.ids, self.hits, self.owner, self.colors, self.color_n, np.ascontiguousarray(colors, np.uint8), max_weight)
        T = self._team.threads
        if T == 1 or len(rows) < 4096:
            g_rows, g_ids, lost, o_old, o_new = vote_kernel(*args)
        else:  # the rows are distinct: ranges of them are voted on by the team at once
            R = len(rows)
            out = (np.empty(R, np.int64),) + tuple(np.empty(R, np.int32) for _ in range(4))
            counts = np.zeros((T, 3), np.int64)
            self._team.run(vote_part_kernel, *args, *out, counts)
            starts = [chunk(R, k, T)[0] for k in range(T)]
            pick = lambda a, col: np.concatenate([a[s : s + int(counts[k, col])] for k, s in enumerate(starts)])
            g_rows, g_ids = pick(out[0], 0), pick(out[1], 0)
            lost = pick(out[2], 1)
            o_old, o_new = pick(out[3], 2), pick(out[4], 2)
        if len(lost):
            gone, n_lost = np.unique(lost, return_counts=True)
            for old, n in zip(gone.tolist(), n_lost.tolist()):
                self.objects[old].num_voxels -= n
            self._dirty.update(gone.tolist())
            self._lost.update(gone.tolist())
        self._add_rows(g_ids.astype(np.int64), g_rows)
        if len(o_old):
            self._dirty.update(np.unique(np.concatenate([o_old, o_new])).tolist())

    def _drop_empty(self) -> None:
        """Remove objects left without voxels; only objects that lost voxels (or were created
        this frame) can have emptied."""
        for oid in [o for o in self._lost if o in self.objects and self.objects[o].num_voxels <= 0]:
            del self.objects[oid]
            self._rows.pop(oid, None)
            self._dirty.add(oid)
            if self._pair_votes:
                for b in self._pair_votes.pop(oid, {}):
                    self._pair_votes.get(b, {}).pop(oid, None)
        self._lost = set()

    # ------------------------------------------------------------------ merging
    def merge_objects(self) -> int:
        """Merge pairs of objects that share voxels touched since the last pass and pass the
        balanced IoV test on their full voxel sets. Costs what was touched, not the map."""
        touched = self._merge_touched
        self._merge_touched = []
        if not touched:
            return 0
        rows = np.concatenate(touched)  # duplicates only repeat pair codes, removed below
        codes = np.unique(pair_codes_kernel(rows, self.ids))  # one pass over the rows, no (rows, K) temporaries
        if len(codes) == 0:
            return 0
        a_ids, b_ids = codes >> 32, codes & 0xFFFFFFFF
        # Sizes by position among the ids present (never a table as long as the ids ever issued).
        present = np.unique(np.concatenate([a_ids, b_ids]))
        size = np.array([self.objects[o].num_voxels if o in self.objects else 0 for o in present.tolist()], np.float64)
        sa, sb = size[np.searchsorted(present, a_ids)], size[np.searchsorted(present, b_ids)]
        # A pair can only pass if the smaller holds more than gamma of the larger.
        keep = (np.minimum(sa, sb) > self.cfg.gamma * np.maximum(sa, sb)) & (np.minimum(sa, sb) > 0)
        a_ids, b_ids, sa, sb = a_ids[keep], b_ids[keep], sa[keep], sb[keep]
        if len(a_ids) == 0:
            return 0
        # Exact |A ∩ B|: scan the rows of the smaller object of each pair (once per object),
        # counting its partners' ids there.
        small = np.where(sa <= sb, a_ids, b_ids)
        other = np.where(sa <= sb, b_ids, a_ids)
        inter = np.zeros(len(a_ids), np.float64)
        order = np.argsort(small, kind="stable")
        starts = np.flatnonzero(np.r_[True, small[order][1:] != small[order][:-1]])
        ends = np.append(starts[1:], len(order))
        for s0, e0 in zip(starts.tolist(), ends.tolist()):
            idx = order[s0:e0]
            o = int(small[idx[0]])
            ids_o = self.ids[self.member_rows(o)]
            seen, counts = np.unique(ids_o[ids_o >= 0], return_counts=True)  # the object's size, not next_id
            at = np.minimum(np.searchsorted(seen, other[idx]), len(seen) - 1)
            inter[idx] = np.where(seen[at] == other[idx], counts[at], 0)
        iov_ab, iov_ba = inter / np.maximum(sa, 1), inter / np.maximum(sb, 1)
        ok = balanced(iov_ab, iov_ba, self.cfg.gamma, self.cfg.delta)
        cand = [(float(min(x, y)), int(a), int(b)) for x, y, a, b in zip(iov_ab[ok], iov_ba[ok], a_ids[ok], b_ids[ok])]
        cand.sort(key=lambda c: -c[0])
        alias: dict[int, int] = {}

        def root(x: int) -> int:
            while x in alias:
                x = alias[x]
            return x

        merged = 0
        for _, x, y in cand:
            x, y = root(x), root(y)
            if x == y:
                continue
            keep, gone = (x, y) if self.objects[x].num_voxels >= self.objects[y].num_voxels else (y, x)
            self._merge_pair(keep, gone)
            alias[gone] = keep
            merged += 1
        if merged:
            self.version += 1
        return merged

    def _merge_pair(self, keep: int, gone: int) -> None:
        rows = self.member_rows(gone)
        slots = (self.ids[rows] == gone).argmax(axis=1)
        has_keep = (self.ids[rows] == keep).any(axis=1)
        # Rows holding both: fold the hits into keep's slot and free gone's slot.
        r, s = rows[has_keep], slots[has_keep]
        keep_slot = (self.ids[r] == keep).argmax(axis=1)
        self.hits[r, keep_slot] += self.hits[r, s]
        self.ids[r, s] = -1
        self.hits[r, s] = 0
        # Rows holding only gone: relabel.
        only = rows[~has_keep]
        self.ids[only, slots[~has_keep]] = keep
        k, g = self.objects[keep], self.objects.pop(gone)
        self._rows.pop(gone, None)
        self._alias[gone] = keep
        if self._pair_votes:
            self._fold_votes(keep, gone)
        self._rows.setdefault(keep, _Rows()).chunks.append(np.sort(only))
        k.num_voxels += len(only)
        k.num_observations += g.num_observations
        k.first_seen = min(k.first_seen, g.first_seen)
        k.last_seen = max(k.last_seen, g.last_seen)
        if g.embedding_sum is not None:
            k.add_embedding(g.embedding_sum / max(g.embedding_weight, 1e-9), g.embedding_weight)
        if g.best_view_quality > k.best_view_quality:
            k.best_view_quality, k.best_view = g.best_view_quality, g.best_view
        self._dirty.update((keep, gone))
        self._update_owner(rows)
        self.version += 1

    # ------------------------------------------------------------------ output
    def owners(self) -> np.ndarray:
        """Per row, the id of the slot with most hits (-1 for rows without ids)."""
        return self.owner[: self._n].copy()

    def instance_voxels(self, min_observations: int | None = None) -> dict[int, np.ndarray]:
        """Object id -> sorted voxel keys of the voxels it owns (the map's partition).
        Reads the whole map: for evaluation and export, not for per-frame use."""
        min_obs = self.cfg.min_object_observations if min_observations is None else min_observations
        own = self.owner[: self._n]
        order = np.argsort(own, kind="stable")
        sorted_own = own[order]
        ids, starts = np.unique(sorted_own, return_index=True)
        ends = np.append(starts[1:], len(order))
        out = {}
        for oid, s, e in zip(ids.tolist(), starts.tolist(), ends.tolist()):
            if oid < 0 or e - s < self.cfg.min_segment_voxels:
                continue
            state = self.objects.get(oid)
            if state is None or state.num_observations < min_obs:
                continue
            out[oid] = np.sort(self.keys[order[s:e]])
        return out

    def _object_raw(self, oid: int):
        """What a snapshot needs of one object, copied: its state and the rows it owns."""
        st = self.objects.get(oid)
        if st is None or st.num_observations < self.cfg.min_object_observations:
            return None
        rows = self.member_rows(oid)
        rows = rows[self.owner[rows] == oid]
        if len(rows) < self.cfg.min_segment_voxels:
            return None
        return dataclasses.replace(st), self.keys[rows].copy(), self.colors[rows].copy()

    def _info_from_raw(self, oid: int, raw, labeler, up) -> ObjectInfo:
        st, keys, colors = raw
        pts = key_centers(keys, self.voxel_size)
        emb = st.embedding
        label, score = labeler(emb) if (labeler is not None and emb is not None) else ("", 0.0)
        return ObjectInfo(
            id=oid,
            points=pts,
            colors=np.clip(colors, 0, 255).astype(np.uint8),
            box=OrientedBox.from_points(pts, up=up, min_extent=self.voxel_size),
            num_observations=st.num_observations,
            first_seen=st.first_seen,
            last_seen=st.last_seen,
            embedding=emb,
            label=label,
            label_score=float(score),
            best_view=st.best_view,
        )

    def snapshot(self, stamp: float = 0.0, labeler=None, up: np.ndarray | None = None) -> MapSnapshot:
        """Consistent copy of the objects. Cached until the map changes; then only the objects
        changed since the last snapshot are rebuilt. (One thread; see begin/finish_snapshot for
        building outside a lock that fusion holds.)"""
        return self.finish_snapshot(self.begin_snapshot(labeler, up), stamp, labeler, up)

    def begin_snapshot(self, labeler=None, up: np.ndarray | None = None):
        """The part of a snapshot that reads the map (call it under the fusion lock): copies of
        the objects changed since the last snapshot. Its cost follows the change, not the map."""
        up_key = None if up is None else tuple(np.asarray(up, float).tolist())
        key = (self.version, up_key, id(labeler))
        if self._snapshot is not None and self._snapshot_key == key:
            return key, None, self.frames
        if self._snapshot_key is None or self._snapshot_key[1:] != key[1:]:
            dirty = set(self.objects) | set(self._infos)  # a different view: rebuild all
        else:
            dirty = self._dirty
        self._dirty = set()
        return key, {oid: self._object_raw(oid) for oid in dirty}, self.frames

    def finish_snapshot(self, parts, stamp: float = 0.0, labeler=None, up: np.ndarray | None = None) -> MapSnapshot:
        """The rest (boxes, labels), from ``begin_snapshot``'s copies only: needs no lock, as
        long as one thread builds snapshots at a time."""
        key, raw, frames = parts
        if raw is None:
            return self._snapshot
        for oid, r in raw.items():
            if r is None:
                self._infos.pop(oid, None)
            else:
                self._infos[oid] = self._info_from_raw(oid, r, labeler, up)
        objects = [self._infos[o] for o in sorted(self._infos)]
        self._snapshot = MapSnapshot(objects=objects, voxel_size=self.voxel_size, stamp=stamp, frames=frames)
        self._snapshot_key = key
        return self._snapshot

    # ------------------------------------------------------------------ construction from arrays
    @classmethod
    def from_arrays(cls, cfg: FusionConfig, keys, ids, hits, colors, color_n, states: list[ObjectState], next_id: int, frames: int) -> "ObjectMap":
        """A map holding the given voxel rows and objects (used by the map-file loader; the
        arrays are validated there)."""
        omap = cls(cfg)
        n = len(keys)
        omap._grow(n)
        omap.keys[:n], omap.ids[:n], omap.hits[:n] = keys, ids, hits
        omap.colors[:n], omap.color_n[:n] = colors, color_n
        omap._n = n
        if n:
            bc, off = block_offsets(unpack(keys))
            ub, inv = np.unique(bc, axis=0, return_inverse=True)
            numbers = omap._blocks.insert(ub)
            omap._grow_blocks(len(ub))
            omap._btable[numbers[inv.reshape(-1)], off] = np.arange(n, dtype=np.int32)
        for st in states:
            st.num_voxels = 0
            omap.objects[st.id] = st
        r, s = np.nonzero(ids[:n] >= 0)
        omap._add_rows(ids[r, s].astype(np.int64), r.astype(np.int64))
        omap._update_owner(np.arange(n, dtype=np.int64))
        omap.next_id = int(next_id)
        omap.frames = int(frames)
        omap._dirty = set(omap.objects)
        omap.version += 1
        return omap


_WARM = False


def warm_up(cfg: FusionConfig | None = None) -> None:
    """Compile (or load from numba's cache) the engine's kernels once per process, so that no
    real frame pays it (a cold cache costs 0.2-0.7 s per kernel). A few small ray-cast views of
    a room corner (:mod:`.warmup`), with the production argument types, reach every kernel that
    ``cfg`` uses: the per-pixel stage, the DBSCAN split, association, the hidden-side join,
    votes (on ``cfg``'s threads) and the merge pass."""
    global _WARM
    if _WARM:
        return
    from dataclasses import replace

    from .warmup import VOXEL_SIZE, warm_up_frames

    base = cfg or FusionConfig()
    omap = ObjectMap(replace(base, device="cpu", voxel_size=VOXEL_SIZE, merge_interval=1, co_mask_votes=1))
    for i, f in enumerate(warm_up_frames()):
        omap.integrate_frame(f.depth, f.intrinsics, f.pose, f.rgb, f.labels, float(i))
    _WARM = True
