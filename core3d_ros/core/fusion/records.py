"""What the fusion map records and reports: per object its state (:class:`ObjectState`), per
mask of a frame what it brings besides geometry (:class:`SegmentObservation`), per fused frame
what happened (:class:`IntegrationStats`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ObjectState:
    """What the map knows of one object besides its voxels."""

    id: int
    num_voxels: int = 0  # rows whose slots hold this id
    cleared_voxels: int = 0  # rows it lost because frames saw through them (free_space.py)
    num_observations: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    embedding_sum: np.ndarray | None = None
    embedding_weight: float = 0.0
    best_view_quality: float = -1.0
    best_view: np.ndarray | None = None
    anchor: float | None = None  # stamp of the fused frame that gave it most voxels (pose corrections)
    anchor_votes: int = 0  # voxels that frame gave it
    moved_from: np.ndarray | None = None  # (3,) centroid of its old place, when it was seen to move (moves.py)
    moved_at: float = 0.0  # when the move was seen

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
    """What fusing one frame did."""

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
    free_voxels: int = 0  # map voxels the frame saw through (free-space evidence)
    cleared_voxels: int = 0  # voxels emptied because frames saw through them often enough
    cleared_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # their voxel keys
    removed_objects: list[int] = field(default_factory=list)  # objects removed by that clearing
    free_skipped: str = ""  # reason code when the frame gave no free-space evidence
    moved_objects: list[tuple[int, int]] = field(default_factory=list)  # (object, the removed object it is) seen to move
