"""The fusion map: a sparse voxel hash whose voxels remember which object instances observed them.

Storage
    A dict maps each int64 voxel key to a row of flat numpy arrays. Per row: the key, up to
    ``slots_per_voxel`` (object id, hits) slots, and a running mean colour. Per object: the number
    of voxels holding its id, observation count, first/last seen, and an embedding sum.

Integration of one frame (cost depends on the frame, not the map)
    1. Back-project the frame's valid depth; its voxels F are what the camera sees now.
    2. Look F up in the hash; counting ids in their slots gives every object's *visible* part
       |A ∩ F| without touching the rest of the map.
    3. Each mask's voxels are split by DBSCAN into 3-D segments. A segment S is compared with the
       objects found in its voxels by intersection over volume against their visible parts:
       IoV(S, A) = |S ∩ A| / |S| and IoV(A, S) = |S ∩ A| / |A ∩ F|. It joins the best object that
       passes CORE-3D's test (both > gamma, |difference| < delta); otherwise it founds a new one.
       Comparing with the visible part lets a partial view of a large object associate with it,
       while a small object on a large one (a cushion on a sofa) fails the balance test. The
       parts of one mask that lie inside the same object are tested together, so an object cut
       in two by an occluder in front of it is still recognised.
    4. Voxel slots vote: the associated id gains a hit; a voxel whose slots are full takes the new
       id only when its weakest slot has a single hit, else that hit is removed.

Merging
    Every ``merge_interval`` frames, object pairs that share voxels are tested with the same
    balanced IoV test on their full voxel sets and merged. This pass is vectorised over the slot
    table (the only step whose cost grows with the map; it is amortised over the interval).
    Optionally (``union_min_share`` > 0) a segment that holds the visible parts of several
    objects unites them at once.

Output
    A snapshot assigns each voxel to the slot with most hits, so reported objects partition the
    map's voxels.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from ...config import FusionConfig
from ..objects import MapSnapshot, ObjectInfo, OrientedBox
from .split import split_segments
from .voxels import key_centers, voxel_keys


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
        if embedding is None:
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


def _members(indices: np.ndarray, size: int) -> np.ndarray:
    """Sorted unique values of ``indices`` (all < size), without sorting them."""
    flag = np.zeros(size, bool)
    flag[indices] = True
    return np.flatnonzero(flag)


def balanced(iov_ab: np.ndarray | float, iov_ba: np.ndarray | float, gamma: float, delta: float):
    """CORE-3D test: both IoVs above gamma and close to each other."""
    return (iov_ab > gamma) & (iov_ba > gamma) & (np.abs(iov_ab - iov_ba) < delta)


class ObjectMap:
    def __init__(self, cfg: FusionConfig):
        if cfg.voxel_size <= 0:
            raise ValueError("fusion.voxel_size must be positive")
        self.cfg = cfg
        self.voxel_size = float(cfg.voxel_size)
        self.K = int(cfg.slots_per_voxel)
        self.clear()

    # ------------------------------------------------------------------ storage
    def clear(self) -> None:
        self._row: dict[int, int] = {}
        self._n = 0
        cap = 1024
        self.keys = np.zeros(cap, np.int64)
        self.ids = np.full((cap, self.K), -1, np.int32)
        self.hits = np.zeros((cap, self.K), np.int32)
        self.colors = np.zeros((cap, 3), np.float32)
        self.color_n = np.zeros(cap, np.int32)
        self.objects: dict[int, ObjectState] = {}
        self.next_id = 1
        self.frames = 0
        self.version = 0  # bumped on every change; snapshots are cached per version
        self._snapshot: MapSnapshot | None = None

    @property
    def num_voxels(self) -> int:
        return self._n

    def memory_bytes(self) -> int:
        """Approximate memory held by the map: voxel arrays, the key index, object states."""
        arrays = sum(a.nbytes for a in (self.keys, self.ids, self.hits, self.colors, self.color_n))
        index = sys.getsizeof(self._row) + 32 * len(self._row)  # dict table + one int object per key
        objects = sum(
            (s.embedding_sum.nbytes if s.embedding_sum is not None else 0) + (s.best_view.nbytes if s.best_view is not None else 0)
            for s in self.objects.values()
        )
        return int(arrays + index + objects)

    def _grow(self, need: int) -> None:
        cap = len(self.keys)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        self.keys = np.resize(self.keys, new)
        ids = np.full((new, self.K), -1, np.int32)
        ids[:cap] = self.ids
        self.ids = ids
        hits = np.zeros((new, self.K), np.int32)
        hits[:cap] = self.hits
        self.hits = hits
        colors = np.zeros((new, 3), np.float32)
        colors[:cap] = self.colors
        self.colors = colors
        self.color_n = np.concatenate([self.color_n, np.zeros(new - cap, np.int32)])

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given keys, -1 where absent."""
        return np.fromiter(map(self._row.get, keys.tolist(), repeat(-1)), dtype=np.int64, count=len(keys))

    def _insert(self, keys: np.ndarray) -> np.ndarray:
        """Rows for new keys (absent from the map); fewer when max_voxels is reached."""
        room = max(0, int(self.cfg.max_voxels) - self._n)
        keys = keys[:room]
        n = len(keys)
        self._grow(self._n + n)
        rows = np.arange(self._n, self._n + n, dtype=np.int64)
        self.keys[rows] = keys
        self._row.update(zip(keys.tolist(), rows.tolist()))
        self._n += n
        return rows

    # ------------------------------------------------------------------ integration
    def integrate(
        self,
        points: np.ndarray,
        colors: np.ndarray,
        masks: list[np.ndarray],
        stamp: float,
        observations: list[SegmentObservation] | None = None,
    ) -> IntegrationStats:
        """Fuse one frame.

        points: (N, 3) world points of the frame's valid pixels; colors: (N, 3) uint8;
        masks: one (N,) bool array per 2-D mask, selecting its points.
        """
        cfg = self.cfg
        stats = IntegrationStats(points=len(points))
        if len(points) == 0:
            return stats
        keys = voxel_keys(points, self.voxel_size)
        frame_keys, inverse = np.unique(keys, return_inverse=True)
        frame_rows = self.lookup(frame_keys)
        visible = self._count_ids(frame_rows[frame_rows >= 0])
        # Mean colour per frame voxel.
        counts = np.bincount(inverse, minlength=len(frame_keys)).astype(np.float32)
        frame_colors = np.stack(
            [np.bincount(inverse, weights=colors[:, c], minlength=len(frame_keys)) for c in range(3)], axis=1
        ) / counts[:, None]

        groups = [_members(inverse[sel], len(frame_keys)) for sel in masks]
        segments = split_segments(frame_keys, groups, cfg.dbscan_eps_voxels, cfg.dbscan_min_samples, cfg.min_segment_voxels)
        stats.segments = len(segments)

        # Decide all associations against the map as it was before this frame.
        overlaps = [self._count_ids(frame_rows[vox][frame_rows[vox] >= 0]) for _, vox in segments]
        targets = [-1] * len(segments)
        by_mask: dict[int, list[int]] = {}
        for i, (m_idx, _) in enumerate(segments):
            by_mask.setdefault(m_idx, []).append(i)
        for parts in by_mask.values():
            chosen = self._associate([len(segments[i][1]) for i in parts], [overlaps[i] for i in parts], visible)
            for i, t in zip(parts, chosen):
                targets[i] = t

        unions = self._find_unions(segments, overlaps, targets, frame_rows, visible)

        seen_now: set[int] = set()
        for (m_idx, vox), target in zip(segments, targets):
            if target < 0:
                target = self.next_id
                self.next_id += 1
                self.objects[target] = ObjectState(id=target, first_seen=stamp)
                stats.created += 1
            else:
                stats.associated += 1
            obj = self.objects[target]
            rows = frame_rows[vox]
            new = rows < 0
            if np.any(new):
                new_rows = self._insert(frame_keys[vox[new]])
                stats.dropped_voxels += int(new.sum()) - len(new_rows)
                idx = np.flatnonzero(new)[: len(new_rows)]
                rows[idx] = new_rows
                frame_rows[vox[idx]] = new_rows
            ok = rows >= 0
            self._vote(rows[ok], target)
            self._blend_colors(rows[ok], frame_colors[vox[ok]])
            if target not in seen_now:  # one observation per object and frame
                obj.num_observations += 1
                seen_now.add(target)
            obj.last_seen = stamp
            if observations is not None:
                o = observations[m_idx]
                obj.add_embedding(o.embedding)
                if o.view_crop is not None and o.view_quality > obj.best_view_quality:
                    obj.best_view_quality = o.view_quality
                    obj.best_view = o.view_crop
            stats.touched.add(target)

        for group in unions:
            stats.merged += self._merge_group(group)
        self.frames += 1
        if cfg.merge_interval > 0 and self.frames % cfg.merge_interval == 0:
            stats.merged += self.merge_objects()
        self._drop_empty()
        self.version += 1
        return stats

    def _count_ids(self, rows: np.ndarray) -> dict[int, int]:
        slots = self.ids[rows]
        ids, counts = np.unique(slots[slots >= 0], return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    def _associate(self, sizes: list[int], overlaps: list[dict[int, int]], visible: dict[int, int]) -> list[int]:
        """Targets for the 3-D parts of one mask (-1: a new object).

        For each candidate object A, the parts lying mostly inside A (|p ∩ A| / |p| > gamma) are
        taken together, as the mask saw them: an object cut in two by an occluder is still one
        observation of A. Their union U passes when IoV(U, A) and IoV(A_visible, U) pass the
        balanced test. A part joins the passing candidate with the best score.
        """
        gamma, delta = self.cfg.gamma, self.cfg.delta
        best = [-1] * len(sizes)
        best_score = [0.0] * len(sizes)
        for oid in {o for ov in overlaps for o in ov}:
            inside = [i for i, ov in enumerate(overlaps) if ov.get(oid, 0) > gamma * sizes[i]]
            if not inside:
                continue
            inter = sum(overlaps[i][oid] for i in inside)
            iov_u = inter / sum(sizes[i] for i in inside)
            iov_o = inter / max(visible.get(oid, inter), 1)
            if not balanced(iov_u, iov_o, gamma, delta):
                continue
            score = min(iov_u, iov_o)
            for i in inside:
                if score > best_score[i]:
                    best[i], best_score[i] = oid, score
        return best

    def _find_unions(self, segments, overlaps, targets, frame_rows, visible) -> list[list[int]]:
        """Segments that are the union of several objects' visible parts.

        When one 3-D segment holds most of the visible part of two or more objects
        (|S ∩ A| > gamma |A_visible|), each a real share of the segment (|S ∩ A| >=
        union_min_share |S|, so that boundary voxels of a small neighbour do not count), and their union passes the balanced test against
        the segment, the segmenter has seen them as one thing: the objects are merged into the
        largest and the segment joins it. Returns the groups to merge (largest first). Objects
        seen as separate masks never meet here, so the balance test still keeps a cushion
        apart from its sofa when the segmenter separates them.
        """
        gamma, delta = self.cfg.gamma, self.cfg.delta
        groups: list[list[int]] = []
        if self.cfg.union_min_share <= 0:
            return groups
        for i, (_, vox) in enumerate(segments):
            share = self.cfg.union_min_share * len(vox)
            contained = [o for o, c in overlaps[i].items() if c > gamma * visible.get(o, c) and c >= share]
            if len(contained) < 2:
                continue
            rows = frame_rows[vox]
            in_union = int(np.isin(self.ids[rows[rows >= 0]], contained).any(axis=1).sum())
            seen = frame_rows[frame_rows >= 0]
            visible_union = int(np.isin(self.ids[seen], contained).any(axis=1).sum())
            if balanced(in_union / len(vox), in_union / max(visible_union, 1), gamma, delta):
                group = sorted(contained, key=lambda o: -self.objects[o].num_voxels)
                targets[i] = group[0]
                groups.append(group)
        return groups

    def _merge_group(self, group: list[int]) -> int:
        merged = 0
        keep = group[0]
        for gone in group[1:]:
            if gone in self.objects and keep in self.objects and gone != keep:
                self._merge_pair(keep, gone)
                merged += 1
        return merged

    def _vote(self, rows: np.ndarray, oid: int) -> None:
        """Add one observation of object ``oid`` to each row's slots."""
        if len(rows) == 0:
            return
        ids = self.ids[rows]
        hits = self.hits[rows]
        match = ids == oid
        has = match.any(axis=1)
        # 1. Rows that already hold oid: one more hit.
        r = np.flatnonzero(has)
        self.hits[rows[r], match[r].argmax(axis=1)] += 1
        # 2. Rows with a free slot: take it.
        free = (ids < 0) & ~has[:, None]
        r = np.flatnonzero(free.any(axis=1))
        j = free[r].argmax(axis=1)
        self.ids[rows[r], j] = oid
        self.hits[rows[r], j] = 1
        gained = len(r)
        # 3. Full rows: the weakest slot loses a hit, or is replaced when it had one.
        r = np.flatnonzero(~has & ~free.any(axis=1))
        if len(r):
            j = hits[r].argmin(axis=1)
            weak = hits[r, j]
            replace = weak <= 1
            rr, jj = rows[r[replace]], j[replace]
            for old, n in zip(*np.unique(self.ids[rr, jj], return_counts=True)):
                self.objects[int(old)].num_voxels -= int(n)
            self.ids[rr, jj] = oid
            self.hits[rr, jj] = 1
            gained += len(rr)
            self.hits[rows[r[~replace]], j[~replace]] -= 1
        self.objects[oid].num_voxels += gained

    def _blend_colors(self, rows: np.ndarray, colors: np.ndarray, max_weight: int = 20) -> None:
        n = np.minimum(self.color_n[rows], max_weight).astype(np.float32)
        self.colors[rows] += (colors.astype(np.float32) - self.colors[rows]) / (n + 1)[:, None]
        self.color_n[rows] += 1

    def _drop_empty(self) -> None:
        for oid in [o for o, s in self.objects.items() if s.num_voxels <= 0]:
            del self.objects[oid]

    # ------------------------------------------------------------------ merging
    def pair_overlaps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a, b, |A ∩ B|) for every pair of objects sharing at least one voxel (a < b)."""
        ids = self.ids[: self._n]
        pairs = []
        for i in range(self.K):
            for j in range(i + 1, self.K):
                a, b = ids[:, i], ids[:, j]
                ok = (a >= 0) & (b >= 0)
                lo = np.minimum(a[ok], b[ok]).astype(np.int64)
                hi = np.maximum(a[ok], b[ok]).astype(np.int64)
                pairs.append((lo << 32) | hi)
        if not pairs:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        codes, counts = np.unique(np.concatenate(pairs), return_counts=True)
        return codes >> 32, codes & 0xFFFFFFFF, counts

    def merge_objects(self) -> int:
        """Merge object pairs passing the balanced IoV test on their full voxel sets."""
        a, b, inter = self.pair_overlaps()
        if len(a) == 0:
            return 0
        size_a = np.array([self.objects[int(x)].num_voxels for x in a], np.float64)
        size_b = np.array([self.objects[int(x)].num_voxels for x in b], np.float64)
        iov_ab, iov_ba = inter / np.maximum(size_a, 1), inter / np.maximum(size_b, 1)
        ok = balanced(iov_ab, iov_ba, self.cfg.gamma, self.cfg.delta)
        order = np.argsort(-np.minimum(iov_ab, iov_ba)[ok])
        alias: dict[int, int] = {}

        def root(x: int) -> int:
            while x in alias:
                x = alias[x]
            return x

        merged = 0
        for x, y in zip(a[ok][order].tolist(), b[ok][order].tolist()):
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
        rows, slots = np.nonzero(self.ids[: self._n] == gone)
        has_keep = (self.ids[rows] == keep).any(axis=1)
        # Rows holding both: fold the hits into keep's slot and free gone's slot.
        r, s = rows[has_keep], slots[has_keep]
        keep_slot = (self.ids[r] == keep).argmax(axis=1)
        self.hits[r, keep_slot] += self.hits[r, s]
        self.ids[r, s] = -1
        self.hits[r, s] = 0
        # Rows holding only gone: relabel.
        self.ids[rows[~has_keep], slots[~has_keep]] = keep
        k, g = self.objects[keep], self.objects.pop(gone)
        k.num_voxels += int((~has_keep).sum())
        k.num_observations += g.num_observations
        k.first_seen = min(k.first_seen, g.first_seen)
        k.last_seen = max(k.last_seen, g.last_seen)
        if g.embedding_sum is not None:
            k.add_embedding(g.embedding_sum / max(g.embedding_weight, 1e-9), g.embedding_weight)
        if g.best_view_quality > k.best_view_quality:
            k.best_view_quality, k.best_view = g.best_view_quality, g.best_view

    # ------------------------------------------------------------------ output
    def owners(self) -> np.ndarray:
        """Per row, the id of the slot with most hits (-1 for rows without ids)."""
        hits = np.where(self.ids[: self._n] >= 0, self.hits[: self._n], -1)
        best = hits.argmax(axis=1)
        own = self.ids[np.arange(self._n), best]
        own[hits[np.arange(self._n), best] < 0] = -1
        return own

    def instance_voxels(self, min_observations: int | None = None) -> dict[int, np.ndarray]:
        """Object id -> sorted voxel keys of the voxels it owns (the map's partition)."""
        return {oid: keys for oid, keys, _ in self._partition(min_observations)}

    def _partition(self, min_observations: int | None = None):
        min_obs = self.cfg.min_object_observations if min_observations is None else min_observations
        own = self.owners()
        order = np.argsort(own, kind="stable")
        sorted_own = own[order]
        ids, starts = np.unique(sorted_own, return_index=True)
        ends = np.append(starts[1:], len(order))
        for oid, s, e in zip(ids.tolist(), starts.tolist(), ends.tolist()):
            if oid < 0 or e - s < self.cfg.min_segment_voxels:
                continue
            state = self.objects.get(oid)
            if state is None or state.num_observations < min_obs:
                continue
            rows = np.sort(order[s:e])
            yield oid, np.sort(self.keys[rows]), rows

    def snapshot(self, stamp: float = 0.0, labeler=None, up: np.ndarray | None = None) -> MapSnapshot:
        """Consistent copy of the objects (cached until the map changes)."""
        cache_key = (self.version, None if up is None else tuple(np.asarray(up, float).tolist()), id(labeler))
        if self._snapshot is not None and self._snapshot_key == cache_key:
            return self._snapshot
        objects = []
        for oid, keys, rows in self._partition():
            st = self.objects[oid]
            pts = key_centers(self.keys[rows], self.voxel_size)
            emb = st.embedding
            label, score = labeler(emb) if (labeler is not None and emb is not None) else ("", 0.0)
            objects.append(
                ObjectInfo(
                    id=oid,
                    points=pts,
                    colors=np.clip(self.colors[rows], 0, 255).astype(np.uint8),
                    box=OrientedBox.from_points(pts, up=up, min_extent=self.voxel_size),
                    num_observations=st.num_observations,
                    first_seen=st.first_seen,
                    last_seen=st.last_seen,
                    embedding=emb,
                    label=label,
                    label_score=float(score),
                    best_view=st.best_view,
                )
            )
        self._snapshot = MapSnapshot(objects=objects, voxel_size=self.voxel_size, stamp=stamp, frames=self.frames)
        self._snapshot_key = cache_key
        return self._snapshot
