"""Read-only views of the map's object instances, shared by ROS output, map files and queries."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class OrientedBox:
    center: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3), columns are the box axes in the world frame
    extent: np.ndarray  # (3,) full side lengths along the axes

    @classmethod
    def from_points(cls, points: np.ndarray, up: np.ndarray | None = None, min_extent: float = 0.0) -> "OrientedBox":
        """Bounding box of points.

        With ``up`` (the world's up direction) the box is gravity-aligned: one axis is ``up`` and
        the other two come from OpenCV's minimum-area rectangle of the points projected on the
        ground plane, which is what planners expect for furniture. Without it, the axes come from
        the points' principal components.
        """
        pts = np.asarray(points, dtype=np.float64)
        if len(pts) == 0:
            return cls(np.zeros(3), np.eye(3), np.zeros(3))
        if up is not None:
            R = _gravity_axes(pts, np.asarray(up, dtype=np.float64))
        elif len(pts) >= 4:
            _, vecs = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
            R = vecs[:, ::-1]  # largest spread first
        else:
            R = np.eye(3)
        if np.linalg.det(R) < 0:
            R[:, 2] = -R[:, 2]
        local = pts @ R
        lo, hi = local.min(axis=0), local.max(axis=0)
        return cls(R @ ((lo + hi) / 2), R, np.maximum(hi - lo, min_extent))

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        local = (np.asarray(points, dtype=np.float64) - self.center) @ self.rotation
        return np.all(np.abs(local) <= self.extent / 2 + margin, axis=1)


def _gravity_axes(pts: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Columns: two ground-plane axes (min-area rectangle) and ``up``; a right-handed frame."""
    import cv2

    up = up / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    ground = np.stack([pts @ a, pts @ b], axis=1).astype(np.float32)
    (_, _), (_, _), angle = cv2.minAreaRect(ground)
    t = np.deg2rad(angle)
    x = np.cos(t) * a + np.sin(t) * b
    return np.stack([x, np.cross(up, x), up], axis=1)


@dataclass
class ObjectInfo:
    id: int
    points: np.ndarray  # (N, 3) float32 voxel centres, world frame
    colors: np.ndarray  # (N, 3) uint8 mean colour per voxel
    box: OrientedBox
    num_observations: int
    first_seen: float
    last_seen: float
    embedding: np.ndarray | None = None  # (D,) float32, unit norm, when semantics are on
    label: str = ""  # label guess from the vocabulary ("" when unknown)
    label_score: float = 0.0
    best_view: np.ndarray | None = None  # HxWx3 uint8 crop of the best observation
    moved_from: np.ndarray | None = None  # (3,) centroid of its previous place when it was seen to move
    moved_at: float = 0.0  # when the move was seen (seconds; with moved_from)

    @property
    def num_voxels(self) -> int:
        return int(len(self.points))

    @property
    def centroid(self) -> np.ndarray:
        return self.points.mean(axis=0) if len(self.points) else np.zeros(3, np.float32)

    @property
    def mean_color(self) -> np.ndarray:
        """Mean colour as float RGB in [0, 1]."""
        if len(self.colors) == 0:
            return np.zeros(3)
        return self.colors.reshape(-1, 3).mean(axis=0) / 255.0


@dataclass
class MapSnapshot:
    """A consistent copy of the map at one instant; safe to read while mapping continues."""

    objects: list[ObjectInfo] = field(default_factory=list)
    voxel_size: float = 0.025
    stamp: float = 0.0
    frames: int = 0

    _by_id: dict[int, ObjectInfo] | None = field(default=None, repr=False, compare=False)

    def by_id(self) -> dict[int, ObjectInfo]:
        """Objects by id, built once per snapshot (queries and get_object look up in it)."""
        if self._by_id is None:
            self._by_id = {o.id: o for o in self.objects}
        return self._by_id
