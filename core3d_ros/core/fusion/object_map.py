"""The fusion map: a sparse voxel map whose voxels remember which object instances observed them.

:class:`ObjectMap` is the one public class. It is made of one part per role, one file each, all
working on the same state (listed in :meth:`ObjectMap.clear` and :class:`~.storage.VoxelStore`):

    storage.py      VoxelStore: voxel rows, block table, objects and the rows each was given
    integration.py  FrameIntegration: fusing one frame (depth image or point cloud), votes
    association.py  Association: segments against objects (IoV, balanced test), hidden sides
    merging.py      Merging: the merge pass, co-mask evidence, unions found by association
    free_space.py   FreeSpace: voxels a depth frame sees through, cleared; objects that leave
    corrections.py  PoseCorrections: fused frames' poses, objects' anchor frames, rigid moves
    snapshot.py     Snapshots: the map read out, rebuilt per changed object
    records.py      ObjectState, SegmentObservation, IntegrationStats

The compiled passes they call work per pixel (pixels.py), per frame voxel (blocks.py), on the
3-D split (dbscan.py) and per map row (map_kernels.py), on the fusion threads (threads.py).

Storage (two levels, no per-voxel hashing)
    Blocks of 8x8x8 voxels are keyed by their block coordinates in a C++ hash map
    (:class:`~.blocks.BlockHash`, ``open3d.core.HashMap``, CPU or CUDA). Each block owns a row of a
    dense (blocks, 512) table that gives, per voxel of the block, its row in the flat voxel arrays
    (-1: not stored). Per voxel row: the packed key, up to ``slots_per_voxel`` (object id, hits)
    slots, a running mean colour, and the owner (the slot with most hits). Per object: the number
    of voxel rows holding its id, observation count, first/last seen, an embedding sum and the
    rows it was ever given (compacted lazily), so that what reads one object costs that object.

Integration of one frame (cost follows the frame, not the map)
    1. The frame's points are deduplicated through blocks (:func:`~.pixels.depth_voxels` for a
       depth image, :class:`~.blocks.FrameVoxels` for points): compiled passes, no sort, no
       per-point hash; only the frame's few hundred blocks are looked up. Each voxel takes the
       label most of its points carry (a label image: 0 = no mask, i = mask i).
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

:func:`warm_up` compiles the kernels once per process on a few views made in warmup.py.
"""
from __future__ import annotations

import numpy as np

from ...config import FusionConfig
from .association import Association
from .corrections import PoseCorrections
from .free_space import FreeSpace
from .integration import FrameIntegration
from .merging import Merging
from .moves import Moves
from .records import IntegrationStats, ObjectState, SegmentObservation
from .snapshot import Snapshots
from .storage import VoxelStore
from .threads import ThreadTeam, default_threads

__all__ = ["IntegrationStats", "ObjectMap", "ObjectState", "SegmentObservation", "warm_up"]


class ObjectMap(VoxelStore, PoseCorrections, FrameIntegration, FreeSpace, Moves, Association, Merging, Snapshots):
    """The fusion map (see the module's overview): its roles are the bases it is made of, one
    file each; the state they share is set up by :meth:`clear`."""

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

    def memory_bytes(self) -> int:
        """Memory held by the map: storage (voxel rows, blocks, objects), the snapshot summaries
        (per-object centres and colours, per-row bookkeeping: tens of bytes per voxel)
        and pose corrections. Costs the objects (a sum per object): for reports, not per frame."""
        return VoxelStore.memory_bytes(self) + self.summary_bytes() + self.corrections_memory_bytes()

    def clear(self) -> None:
        """Empty the map (its configuration and threads stay)."""
        self._clear_storage()  # voxel rows, block table, objects, per-object rows (storage.py)
        self.frames = 0
        self.version = 0  # bumped on every change
        self._lost: set[int] = set()  # objects that lost voxels (or were created) this frame
        # association.py
        self._compact = np.full(1024, -1, np.int64)  # work array of the overlap kernel
        self._unions: list[list[int]] = []  # groups of objects a frame showed to be one (survivor first)
        # merging.py
        self._merge_touched: list[np.ndarray] = []  # voxel rows touched since the last merge pass
        self._merge_touched_n = 0  # rows in it (folded to distinct rows past the map's size)
        self._alias: dict[int, int] = {}  # merged-away id -> survivor, within one frame
        self._pair_votes: dict[int, dict[int, list[int]]] = {}  # [a][b] is [b][a]: [frames together, apart]
        self._clear_moves()  # moves.py
        self._clear_snapshots()  # snapshot.py: per-object summaries, rows marked since the last snapshot
        self._clear_corrections()  # corrections.py: the fused frames' poses, anchors


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
