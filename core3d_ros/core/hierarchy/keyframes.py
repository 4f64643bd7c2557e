"""Room keyframes (KeySG III-B): per room, a few views that together cover its surface.

    rk = RoomKeyframes(cfg.hierarchy)
    kf = rk.offer(stamp, pose, intrinsics, depth, builder, objects=..., image=crop)  # None: not kept
    rk.apply(graph)          # Room.keyframe_ids from the kept set (after each builder update)

They sit beside the motion keyframes (core/keyframes.py), not instead of them: the mapping node
offers its motion keyframes here, and this keeps the subset that covers each room, for the
semantic and language steps that want a room's views (labels, descriptions, summaries).

A view is back-projected (every ``stride``-th pixel of its depth) and assigned to the room that
holds most of its points (the camera centre's room when none of its points lies in a room yet).
Its coverage is the set of ``coverage_cell`` cells of those points inside that room. Greedy
coverage per room: a view is kept when it adds at least ``keyframe_min_gain`` of its cells to
what the room's kept views cover; once a room holds ``keyframes_per_room`` views, a new one
replaces the kept view that covers least on its own, when the new one adds more. Beyond
``keyframe_bytes`` in all, the view covering least on its own anywhere goes. Each kept view has
its pose, intrinsics, an optional image (crop or thumbnail; its bytes count) and the objects
visible in it: the points of the room's objects that project into the view in front of its depth
(an occlusion check against the depth image), so the check reads one room's objects only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ...config import HierarchyConfig
from ..camera import CameraIntrinsics
from .graph import SceneGraph

SAMPLE_POINTS = 64  # world points kept per view to re-assign it when room ids change
OBJECT_SAMPLE = 200  # points per object projected for the visibility check
MIN_VISIBLE = 5  # ... of which this many must pass it


@dataclass
class RoomKeyframe:
    id: int
    stamp: float
    pose: np.ndarray  # (4, 4) camera-to-map
    intrinsics: CameraIntrinsics
    room_id: int
    cells: np.ndarray  # (K,) int64 coverage cells of the room's surface it sees
    sample: np.ndarray  # (<= SAMPLE_POINTS, 3) float32 of its points in the room
    object_ids: list[int] = field(default_factory=list)
    image: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(self.cells.nbytes + self.sample.nbytes + self.pose.nbytes + 8 * len(self.object_ids)
                   + (self.image.nbytes if self.image is not None else 0))


def _cell_keys(points: np.ndarray, size: float) -> np.ndarray:
    """One int64 per ``size`` cube (21 bits per axis, wrapping beyond +-10^6 cells)."""
    q = np.floor(points / size).astype(np.int64) & 0x1FFFFF
    return np.unique((q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2])


def back_project(depth: np.ndarray, intrinsics: CameraIntrinsics, pose: np.ndarray, stride: int) -> np.ndarray:
    """World points of every ``stride``-th valid depth pixel."""
    z = np.asarray(depth, np.float32)[::stride, ::stride]
    v, u = np.nonzero(np.isfinite(z) & (z > 0))
    zz = z[v, u].astype(np.float64)
    k = intrinsics
    cam = np.stack([(u * stride - k.cx) / k.fx * zz, (v * stride - k.cy) / k.fy * zz, zz], axis=1)
    return cam @ np.asarray(pose, float)[:3, :3].T + np.asarray(pose, float)[:3, 3]


def visible_objects(
    objects: Iterable[Any], pose: np.ndarray, intrinsics: CameraIntrinsics, depth: np.ndarray, tolerance: float = 0.1
) -> list[int]:
    """Ids of the objects (``id``, ``points``) of which at least MIN_VISIBLE sampled points
    project into the image no farther than ``tolerance`` metres behind the depth there."""
    T = np.linalg.inv(np.asarray(pose, float))
    k = intrinsics
    d = np.asarray(depth, np.float32)
    h, w = d.shape
    out = []
    for o in objects:
        pts = np.asarray(o.points, float).reshape(-1, 3)
        if not len(pts):
            continue
        pts = pts[:: max(1, len(pts) // OBJECT_SAMPLE)]
        c = pts @ T[:3, :3].T + T[:3, 3]
        front = c[:, 2] > 1e-3
        c = c[front]
        u = np.round(c[:, 0] / c[:, 2] * k.fx + k.cx).astype(np.int64)
        v = np.round(c[:, 1] / c[:, 2] * k.fy + k.cy).astype(np.int64)
        inb = (u >= 0) & (v >= 0) & (u < w) & (v < h)
        if np.count_nonzero(inb) < MIN_VISIBLE:
            continue
        zd = d[v[inb], u[inb]]
        seen = (zd > 0) & (c[inb, 2] <= zd + tolerance)
        if np.count_nonzero(seen) >= MIN_VISIBLE:
            out.append(int(o.id))
    return out


class RoomKeyframes:
    def __init__(self, cfg: HierarchyConfig):
        self.cfg = cfg
        self.frames: dict[int, RoomKeyframe] = {}
        self._next_id = 1
        self.stats = {"offered": 0, "kept": 0, "replaced": 0, "dropped_for_bytes": 0, "no_room": 0}

    # ------------------------------------------------------------------------------ queries
    def of_room(self, room_id: int) -> list[RoomKeyframe]:
        return sorted((kf for kf in self.frames.values() if kf.room_id == room_id), key=lambda kf: kf.id)

    @property
    def nbytes(self) -> int:
        return sum(kf.nbytes for kf in self.frames.values())

    def _unique(self, kf: RoomKeyframe) -> int:
        """Cells of its room that only ``kf`` covers."""
        others = [o.cells for o in self.of_room(kf.room_id) if o.id != kf.id]
        if not others:
            return len(kf.cells)
        return int(np.count_nonzero(~np.isin(kf.cells, np.concatenate(others))))

    # ------------------------------------------------------------------------------ offering
    def offer(
        self,
        stamp: float,
        pose: np.ndarray,
        intrinsics: CameraIntrinsics,
        depth: np.ndarray,
        builder,
        objects: Iterable[Any] | None = None,
        image: np.ndarray | None = None,
        stride: int = 4,
    ) -> RoomKeyframe | None:
        """Consider a view (``depth`` at ``intrinsics``' resolution, read every ``stride``-th
        pixel) for its room's keyframes; ``builder`` (a HierarchyBuilder) says where the rooms
        are. Returns the kept keyframe, or None. ``objects``: candidates for the visibility
        check (``id``, ``points``); only those of the view's room are projected."""
        self.stats["offered"] += 1
        pose = np.asarray(pose, float)
        points = back_project(depth, intrinsics, pose, max(1, int(stride)))
        if not len(points):
            return None
        rooms = builder.room_at(points)
        ids, counts = np.unique(rooms[rooms > 0], return_counts=True)
        if len(ids):
            room = int(ids[np.argmax(counts)])
        else:
            room = int(builder.room_at(pose[:3, 3][None])[0])
        if room == 0:
            self.stats["no_room"] += 1
            return None
        mine = points[rooms == room] if len(ids) else points
        cells = _cell_keys(mine, self.cfg.coverage_cell)
        kept = self.of_room(room)
        covered = np.concatenate([k.cells for k in kept]) if kept else np.zeros(0, np.int64)
        new = int(np.count_nonzero(~np.isin(cells, covered)))
        if new < self.cfg.keyframe_min_gain * len(cells) or new == 0:
            return None
        if len(kept) >= self.cfg.keyframes_per_room:
            weakest = min(kept, key=self._unique)
            if new <= self._unique(weakest):
                return None
            del self.frames[weakest.id]
            self.stats["replaced"] += 1
        sample = mine[:: max(1, len(mine) // SAMPLE_POINTS)][:SAMPLE_POINTS].astype(np.float32)
        visible: list[int] = []
        if objects is not None:
            graph_room = builder.graph.room(room)
            wanted = set(graph_room.object_ids) if graph_room is not None else set()
            visible = visible_objects((o for o in objects if int(o.id) in wanted), pose, intrinsics, depth)
        kf = RoomKeyframe(self._next_id, float(stamp), pose.copy(), intrinsics, room, cells, sample, visible, image)
        self._next_id += 1
        self.frames[kf.id] = kf
        self.stats["kept"] += 1
        self._bound_bytes()
        return kf if kf.id in self.frames else None

    def _bound_bytes(self) -> None:
        while len(self.frames) > 1 and self.nbytes > self.cfg.keyframe_bytes:
            weakest = min(self.frames.values(), key=self._unique)
            del self.frames[weakest.id]
            self.stats["dropped_for_bytes"] += 1

    # ------------------------------------------------------------------------------ upkeep
    def reassign(self, builder) -> None:
        """After an update: views whose room id is gone (a split or merge) move to the room
        that now holds most of their sampled points (or are dropped)."""
        live = {r.id for r in builder.graph.rooms}
        for kf in list(self.frames.values()):
            if kf.room_id in live:
                continue
            rooms = builder.room_at(kf.sample)
            ids, counts = np.unique(rooms[rooms > 0], return_counts=True)
            if not len(ids):
                del self.frames[kf.id]
                continue
            kf.room_id = int(ids[np.argmax(counts)])
        for rid in live:  # a merge may leave a room over its count
            kept = self.of_room(rid)
            while len(kept) > self.cfg.keyframes_per_room:
                del self.frames[min(kept, key=self._unique).id]
                kept = self.of_room(rid)

    def apply(self, graph: SceneGraph) -> SceneGraph:
        """Set each room's ``keyframe_ids`` from the kept views."""
        for room in graph.rooms:
            room.keyframe_ids = [kf.id for kf in self.of_room(room.id)]
        return graph
