"""Moved objects, a part of :class:`.object_map.ObjectMap`: an object that free space removed
(a *departure*, free_space.py) and an object that appeared elsewhere (an *arrival*) within
``fusion.move_window`` seconds of it, alike, are reported as one object that moved: the arrival's
state gets ``moved_from`` (the departed object's centroid) and ``moved_at`` (when the move was
seen), which snapshots carry to :class:`~core3d_ros.core.objects.ObjectInfo` and the ROS
``core3d/Object`` (``has_moved_from``, ``moved_from``, ``moved_at``).

Alike: with embeddings on both, cosine >= ``move_min_cosine``; without (no encoder), mean colours
within ``move_max_color_distance`` (RGB in [0, 1]) and sizes (voxel counts and sorted box sides)
within a factor ``move_size_ratio``. The arrival must lie at least ``move_min_distance`` from the
old place (nearer is the same place seen again). The best match wins (highest cosine, else
nearest colour); each departure and each arrival is used once.

Departures are described as the object was before it started to lose voxels (its first cleared
voxel takes the description), so ``moved_from`` is its whole old place. Arrivals are the objects
created since ``move_window`` seconds before the departure (object ids grow with time: a short
list of (stamp, next id) marks finds them), and only those whose state (embedding, or voxel
count) may match have their voxels read, so a frame's cost follows the objects created in the
window, never the map; nothing runs while no departure is pending.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .voxels import key_centers


@dataclass
class Footprint:
    """What a move is matched on: an object's centroid, mean colour (RGB in [0, 1]), voxels,
    sorted axis-aligned box sides and embedding (unit norm, or None)."""

    centroid: np.ndarray
    color: np.ndarray
    voxels: int
    sides: np.ndarray
    embedding: np.ndarray | None


@dataclass
class Departure:
    oid: int
    stamp: float
    where: Footprint


def _alike(a: Footprint, b: Footprint, cfg) -> float | None:
    """A match score (higher is better) when ``b`` may be ``a`` moved, else None."""
    if float(np.linalg.norm(a.centroid - b.centroid)) < cfg.move_min_distance:
        return None
    if a.embedding is not None and b.embedding is not None:
        cos = float(np.dot(a.embedding, b.embedding))
        return cos if cos >= cfg.move_min_cosine else None
    r = float(cfg.move_size_ratio)
    if max(a.voxels, b.voxels) > r * max(1, min(a.voxels, b.voxels)):
        return None
    lo, hi = np.minimum(a.sides, b.sides), np.maximum(a.sides, b.sides)
    if np.any(hi > r * lo):
        return None
    d = float(np.linalg.norm(a.color - b.color))
    return -d if d <= cfg.move_max_color_distance else None


def _may_be_alike(a: Footprint, st, cfg) -> bool:
    """What :func:`_alike` needs that the object's state tells without reading its voxels."""
    e = st.embedding
    if a.embedding is not None and e is not None:
        return float(np.dot(a.embedding, e)) >= cfg.move_min_cosine
    r = float(cfg.move_size_ratio)
    return max(a.voxels, st.num_voxels) <= r * max(1, min(a.voxels, st.num_voxels))


class Moves:
    """Departures, arrivals and the moves they make (a part of :class:`.object_map.ObjectMap`)."""

    def _clear_moves(self) -> None:
        self._intact: dict[int, Footprint] = {}  # objects losing voxels: as they were before
        self._departures: list[Departure] = []  # removed objects not matched yet (within the window)
        self._id_marks: deque[tuple[float, int]] = deque()  # (stamp, next_id) per frame, the window's
        self._moved_ids: set[int] = set()  # arrivals already given a moved_from

    def _footprint(self, oid: int) -> Footprint | None:
        """The object as it is now (costs its voxels); None when it owns none."""
        st = self.objects.get(oid)
        rows = self.member_rows(oid)
        rows = rows[self.owner[rows] == oid] if len(rows) else rows
        if st is None or len(rows) == 0:
            return None
        pts = key_centers(self.keys[rows], self.voxel_size).astype(np.float64)
        return Footprint(
            centroid=pts.mean(axis=0),
            color=np.clip(self.colors[rows].mean(axis=0), 0, 255) / 255.0,
            voxels=int(len(rows)),
            sides=np.sort(pts.max(axis=0) - pts.min(axis=0) + self.voxel_size),
            embedding=st.embedding,
        )

    def _losing(self, oid: int) -> None:
        """``oid`` is about to lose its first voxels to free space: keep its description."""
        if oid not in self._intact and self.cfg.move_window > 0:
            fp = self._footprint(oid)
            if fp is not None:
                self._intact[oid] = fp

    def _departed(self, oid: int, stamp: float) -> None:
        """``oid`` was removed by free space at ``stamp``."""
        fp = self._intact.pop(oid, None)
        st = self.objects.get(oid)
        if fp is None or self.cfg.move_window <= 0 or st is None or st.num_observations < self.cfg.min_object_observations:
            return
        self._departures.append(Departure(oid, float(stamp), fp))

    def _match_moves(self, stamp: float, stats) -> None:
        """Once per fused frame: pair pending departures with arrivals (module overview)."""
        window = float(self.cfg.move_window)
        if window <= 0:
            return
        marks = self._id_marks
        marks.append((float(stamp), int(self.next_id)))
        oldest = min([d.stamp for d in self._departures], default=float(stamp))
        while len(marks) > 1 and marks[1][0] < oldest - window:
            marks.popleft()
        self._departures = [d for d in self._departures if stamp - d.stamp <= window]
        if self.frames % 256 == 0:  # forget objects gone since (merged away, dropped)
            self._intact = {o: f for o, f in self._intact.items() if o in self.objects}
            self._moved_ids &= self.objects.keys()
        if not self._departures:
            return
        first_id = marks[0][1]
        arrivals = {}
        for oid in range(first_id, int(self.next_id)):
            st = self.objects.get(oid)
            if st is None or oid in self._moved_ids or st.num_observations < self.cfg.min_object_observations:
                continue
            if st.num_voxels < max(1, self.cfg.min_segment_voxels):
                continue
            arrivals[oid] = st
        if not arrivals:
            return
        prints: dict[int, Footprint | None] = {}
        for dep in sorted(self._departures, key=lambda d: d.stamp):
            best, best_score = None, None
            for oid, st in arrivals.items():
                if oid == dep.oid or oid in self._moved_ids or abs(st.first_seen - dep.stamp) > window:
                    continue
                if not _may_be_alike(dep.where, st, self.cfg):
                    continue
                if oid not in prints:
                    prints[oid] = self._footprint(oid)
                if prints[oid] is None:
                    continue
                score = _alike(dep.where, prints[oid], self.cfg)
                if score is not None and (best_score is None or score > best_score):
                    best, best_score = oid, score
            if best is None:
                continue
            st = self.objects[best]
            st.moved_from = dep.where.centroid.astype(np.float64)
            st.moved_at = float(stamp)
            self._moved_ids.add(best)
            self._departures.remove(dep)
            self._dirty.add(best)
            self.version += 1
            stats.moved_objects.append((best, dep.oid))
