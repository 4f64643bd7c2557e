"""The neighbourhood of the DBSCAN split of masks' 3-D voxels (CORE-3D step 1).

The points clustered are voxel centres, so DBSCAN's eps-neighbourhood is a fixed set of integer
voxel offsets; the split itself (:func:`.pkernels.dbscan_padded`) looks neighbours up through the
frame's block table at those offsets.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def neighbour_offsets(eps_voxels: float) -> np.ndarray:
    """Half of the integer offsets within Euclidean distance eps_voxels: one of each pair
    (o, -o), which is all a symmetric neighbourhood needs."""
    r = int(np.floor(eps_voxels))
    g = np.arange(-r, r + 1)
    off = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    norm = np.linalg.norm(off, axis=1)
    positive = np.array([tuple(o) > (0, 0, 0) for o in off])
    return off[(norm > 0) & (norm <= eps_voxels + 1e-9) & positive]
