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
    def from_points(cls, points: np.ndarray, min_extent: float = 0.0) -> "OrientedBox":
        """PCA box: axes from the covariance of the points, extents from their span."""
        pts = np.asarray(points, dtype=np.float64)
        if len(pts) == 0:
            return cls(np.zeros(3), np.eye(3), np.zeros(3))
        mean = pts.mean(axis=0)
        if len(pts) < 4:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            return cls((lo + hi) / 2, np.eye(3), np.maximum(hi - lo, min_extent))
        _, vecs = np.linalg.eigh(np.cov((pts - mean).T))
        R = vecs[:, ::-1]  # largest spread first
        if np.linalg.det(R) < 0:
            R[:, 2] = -R[:, 2]
        local = (pts - mean) @ R
        lo, hi = local.min(axis=0), local.max(axis=0)
        center = mean + R @ ((lo + hi) / 2)
        return cls(center, R, np.maximum(hi - lo, min_extent))

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        local = (np.asarray(points, dtype=np.float64) - self.center) @ self.rotation
        return np.all(np.abs(local) <= self.extent / 2 + margin, axis=1)


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

    def by_id(self) -> dict[int, ObjectInfo]:
        return {o.id: o for o in self.objects}
