"""Integer voxel keys: one int64 per voxel, 21 bits per axis (±1048576 voxels around the origin)."""
from __future__ import annotations

import numpy as np

_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
MAX_COORD = _OFFSET - 1  # packable voxel coordinate range (21 bits per axis: -MAX_COORD - 1 .. MAX_COORD)


def voxel_coords(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) float points -> (N, 3) int64 voxel coordinates."""
    return np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int64)


def pack(coords: np.ndarray) -> np.ndarray:
    """(N, 3) int64 voxel coordinates -> (N,) int64 keys."""
    c = coords + _OFFSET
    if c.size and (c.min() < 0 or c.max() > _MASK):
        raise ValueError("voxel coordinates out of range for 21-bit packing")
    return (c[:, 0] << (2 * _BITS)) | (c[:, 1] << _BITS) | c[:, 2]


def unpack(keys: np.ndarray) -> np.ndarray:
    """(N,) int64 keys -> (N, 3) int64 voxel coordinates."""
    keys = np.asarray(keys, dtype=np.int64)
    return np.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], axis=1) - _OFFSET


def unique_coords(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique (M, 3) int64 coordinates in lexicographic order, (N,) inverse): what
    ``np.unique(coords, axis=0, return_inverse=True)`` gives, through 1-D keys (more than ten
    times faster than numpy's row-wise unique)."""
    keys, inverse = np.unique(pack(np.asarray(coords, np.int64).reshape(-1, 3)), return_inverse=True)
    return unpack(keys), inverse.reshape(-1)


def voxel_keys(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) points -> (N,) int64 voxel keys (not deduplicated)."""
    return pack(voxel_coords(points, voxel_size))


def key_centers(keys: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N,) keys -> (N, 3) float32 voxel centres."""
    return ((unpack(keys) + 0.5) * voxel_size).astype(np.float32)
