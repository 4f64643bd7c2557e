"""The Mapper: runs one frame through segmentation, (optional) embedding and fusion.

    mapper = Mapper(cfg)                      # cfg: MapperConfig; builds segmenter/encoder by name
    stats = mapper.process(frame)             # raises FrameError(reason) for a bad frame
    snap = mapper.snapshot()                  # MapSnapshot, consistent, thread-safe
    mapper.save(path); mapper.load(path); mapper.clear()

Keyframes: segmentation and embedding (the model inference) run on keyframes chosen by camera
motion; a non-keyframe only updates ``last_pose`` (the viewpoint for queries) and is counted.
With ``keyframes.enabled: false`` every valid frame is fused.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..config import MapperConfig, up_vector
from .camera import sampling_stride
from .fusion.object_map import IntegrationStats, ObjectMap, SegmentObservation, warm_up
from .frame import Frame, FrameError
from .mapio import load_map, save_map
from .masks import paint_largest_first
from .objects import MapSnapshot
from .observation import Observation
from .perception import Perception, describe_masks
from .segment.base import Mask2D, Segmenter, make_segmenter


@dataclass
class FrameStats:
    index: int
    keyframe: bool = True
    masks: int = 0
    segments: int = 0
    created: int = 0
    associated: int = 0
    merged: int = 0
    dropped_voxels: int = 0
    cleared_voxels: int = 0  # voxels emptied because frames saw through them (fusion.free_space)
    removed_objects: list[int] = field(default_factory=list)  # objects removed by that clearing
    timings_ms: dict[str, float] = field(default_factory=dict)


class Mapper:
    def __init__(
        self, cfg: MapperConfig | None = None, segmenter: Segmenter | None = None, encoder=None, *, segment: bool = True
    ):
        """Builds every back-end now, so that a bad name, checkpoint or device fails at start-up
        (BackendError naming the parameter), not at the first keyframe. ``segment=False``: a
        mapper that only loads, saves and answers queries; no segmenter is built."""
        self.cfg = cfg or MapperConfig()
        if segmenter is None and segment:
            segmenter = make_segmenter(self.cfg.segmenter)
        if encoder is None and self.cfg.embed.name != "none":
            from .embed.base import make_encoder

            encoder = make_encoder(self.cfg.embed)
        self.encoder = encoder  # also for text queries, with or without a segmenter
        self.perception: Perception | None = None  # the models of the inline path
        if segmenter is not None:
            self.perception = Perception(self.cfg, segmenter=segmenter, encoder=encoder)
        self._labeler = None
        if encoder is not None and getattr(encoder, "semantic", False):
            from .embed.labels import LabelGuesser

            self._labeler = LabelGuesser(encoder, self.cfg.retrieval.vocabulary or None)
        self.map = ObjectMap(self.cfg.fusion)
        self.geometry = self._new_geometry()
        warm_up(self.cfg.fusion)  # compiled kernels ready before the first frame (once per process)
        self.last_pose: np.ndarray | None = None
        # the scene graph (core/hierarchy) as last built by whoever runs the builder; saved with
        # the map, read back by load (None, with hierarchy_error saying why, when damaged)
        self.hierarchy = None
        self.hierarchy_error = ""
        self._lock = threading.RLock()  # fusion and map swaps
        self._snapshot_lock = threading.Lock()
        self._generation = 0  # bumped when the map is replaced or cleared (its version restarts)
        self._last_snapshot: tuple[tuple[int, int], MapSnapshot] | None = None

    def _new_geometry(self):
        g = self.cfg.geometry
        if not g.enabled:
            return None
        from .tsdf import GeometryError, GeometryLayer
        from .registry import BackendError

        try:
            return GeometryLayer(
                self.cfg.fusion.voxel_size,
                self.cfg.depth.max_depth,
                device=g.device,
                block_count=g.block_count,
                trunc_voxels=g.trunc_voxels,
                min_weight=g.min_weight,
                clear=g.clear,
                max_weight=g.max_weight,
                carve=g.carve,
                carve_interval=g.carve_interval,
            )
        except GeometryError as e:
            raise BackendError(str(e)) from None

    def integrate_geometry(self, frame: Frame) -> Frame:
        """Every synced frame when perception runs elsewhere: checks (``check_frame``) and the TSDF
        surface map (its own lock; the object map is untouched). Returns the checked frame, the
        one observations of its stamp are fused against."""
        frame = self.check_frame(frame)
        if self.geometry is not None:
            self.geometry.integrate(frame)
        return frame

    @property
    def segmenter(self) -> Segmenter:
        if self.perception is None:
            raise RuntimeError("this Mapper was built with segment=False: it loads and queries maps only")
        return self.perception.segmenter

    # ------------------------------------------------------------------ frames
    def check_frame(self, frame: Frame) -> Frame:
        """Validate a frame before it touches either map (FrameError with its reason): a tracking
        jump of more than ``fusion.max_pose_jump`` is refused once; a frame with too few depth
        pixels inside the sensor's range (a camera against a wall) is refused; depth outside the
        range is dropped. Tracks the camera (``last_pose``, the viewpoint of queries)."""
        frame.validate()
        previous, self.last_pose = self.last_pose, frame.pose.copy()
        jump = self.cfg.fusion.max_pose_jump
        if jump > 0 and previous is not None:
            moved = float(np.linalg.norm(frame.pose[:3, 3] - previous[:3, 3]))
            if moved > jump:
                raise FrameError("pose_jump", f"camera moved {moved:.1f} m since the previous frame (limit {jump} m)")
        # Depth outside the sensor's range (a camera pressed against a wall reads ~0) is invalid.
        lo, hi = self.cfg.depth.min_depth, self.cfg.depth.max_depth
        in_range = (frame.depth >= lo) & (frame.depth <= hi)
        valid = int(np.count_nonzero(in_range))
        if valid < self.cfg.fusion.min_valid_pixels:
            raise FrameError("few_valid_depth", f"{valid} depth pixels in [{lo}, {hi}] m (fusion.min_valid_pixels {self.cfg.fusion.min_valid_pixels})")
        if valid < np.count_nonzero(frame.depth > 0):
            frame = dataclasses.replace(frame, depth=np.where(in_range, frame.depth, np.float32(0)).astype(np.float32))
        return frame

    def process(self, frame: Frame) -> FrameStats:
        """Inline mapping of one frame: checks, TSDF, and on keyframes masks + embeddings + fusion."""
        stats = FrameStats(index=frame.index)
        t_start = time.perf_counter()
        frame = self.check_frame(frame)
        if self.geometry is not None:
            with _timed(stats, "geometry"):
                self.geometry.integrate(frame)
        perception = self.perception
        if perception is None:
            raise RuntimeError("this Mapper was built with segment=False: it loads and queries maps only")
        stats.keyframe = perception.keyframes.is_keyframe(frame.pose, frame.index)
        if not stats.keyframe:
            return stats
        with _timed(stats, "segment"):
            masks = perception.masks(frame)
        stats.masks = len(masks)
        observations = None
        # embeddings with an encoder; without one, best views only, for the retrieval's VLM steps
        if masks and (self.encoder is not None or self.cfg.retrieval.llm.enabled):
            with _timed(stats, "embed") if self.encoder is not None else contextlib.nullcontext():
                embeddings, qualities, crops = describe_masks(frame.rgb, masks, self.encoder, self.cfg.embed)
            observations = [
                SegmentObservation(
                    embedding=None if embeddings is None else embeddings[i], view_quality=qualities[i], view_crop=crops[i]
                )
                for i in range(len(masks))
            ]
        with _timed(stats, "fusion"), self._lock:
            ist = fuse_frame(self.map, frame, masks, observations)
        stats.segments, stats.created, stats.associated = ist.segments, ist.created, ist.associated
        stats.merged, stats.dropped_voxels = ist.merged, ist.dropped_voxels
        stats.cleared_voxels, stats.removed_objects = ist.cleared_voxels, list(ist.removed_objects)
        stats.timings_ms["total"] = (time.perf_counter() - t_start) * 1e3
        return stats

    def fuse_observation(self, frame: Frame, obs: "Observation") -> FrameStats:
        """Fuse an observation computed elsewhere (the perception node) against its own frame:
        the depth and pose buffered for the observation's stamp. The caller checks that they
        belong together (same stamp, validated observation)."""
        from .observation import decode_view

        stats = FrameStats(index=frame.index)
        t_start = time.perf_counter()
        # the label image as sent (renumbered to the records' order), not one boolean mask per record
        labels = observation_labels(obs)
        observations = None
        if any(r.embedding is not None for r in obs.masks):
            observations = [
                SegmentObservation(
                    embedding=None if r.embedding is None else np.asarray(r.embedding, np.float32),
                    view_quality=r.view_quality,
                    view_crop=decode_view(r.view_jpeg),
                )
                for r in obs.masks
            ]
        stats.masks = len(obs.masks)
        with _timed(stats, "fusion"), self._lock:
            ist = fuse_frame(self.map, frame, None, observations, labels=labels)
        if ist.rejected:
            raise FrameError(ist.rejected, "the fusion engine refused the frame; the map is unchanged")
        stats.segments, stats.created, stats.associated = ist.segments, ist.created, ist.associated
        stats.merged, stats.dropped_voxels = ist.merged, ist.dropped_voxels
        stats.cleared_voxels, stats.removed_objects = ist.cleared_voxels, list(ist.removed_objects)
        stats.timings_ms["total"] = (time.perf_counter() - t_start) * 1e3
        return stats

    # ------------------------------------------------------------------ map access
    # The fusion lock (``_lock``) is held only for fusion and for copying the map's state; a
    # snapshot or a map file is built from that copy outside the lock, so publishing, queries
    # and save_map never hold up the mapping of the next frame (issue 10, fault 3).

    def _frozen_map(self) -> tuple[ObjectMap, tuple[int, int]]:
        """A private copy of what a map file holds (voxel arrays and object states), and its
        version, so that compression and disk writes happen outside the fusion lock.

        Taken under the fusion lock; costs one memory copy of the voxel arrays, no scan. It
        serves ``save_map`` only: it keeps no per-object row index (``member_rows`` finds
        nothing in it), so nothing done through it can reach the live map's index.
        """
        with self._lock:
            m = self.map
            n = m.rows_used  # live rows all lie below it (released ones are left out on saving)
            frozen = ObjectMap.__new__(type(m))
            frozen.__dict__.update(m.__dict__)
            frozen.keys, frozen.ids, frozen.hits = m.keys[:n].copy(), m.ids[:n].copy(), m.hits[:n].copy()
            frozen.colors, frozen.color_n = m.colors[:n].copy(), m.color_n[:n].copy()
            frozen._rows = {}
            # ObjectState fields are replaced, never mutated in place: a shallow copy is a copy
            frozen.objects = {oid: dataclasses.replace(st) for oid, st in m.objects.items()}
            frozen._snapshot = None
            # what pose corrections save (corr_* arrays), copied too: fusion changes them in place
            frozen._row_frame, frozen._serials, frozen.keyframes = m._row_frame[:n].copy(), dict(m._serials), m.keyframes.copy()
            return frozen, (self._generation, m.version)

    def snapshot(self, wait: bool = True) -> MapSnapshot:
        """The latest map as a MapSnapshot. Under the fusion lock the engine only copies the
        objects changed since its last snapshot (cost follows the change, not the map); boxes
        and labels are built outside it, so building a snapshot never holds up mapping.

        ``wait=False`` (queries, publishing): when fusion or another snapshot build is busy, the
        last snapshot is returned at once; it is at most one map change old. So queries never
        wait for mapping either."""
        up = up_vector(self.cfg.retrieval.up_axis)
        last = self._last_snapshot
        if not self._snapshot_lock.acquire(blocking=wait or last is None):
            return last[1]  # another build is under way
        try:
            if not self._lock.acquire(blocking=wait or last is None):
                return last[1]  # fusing right now
            try:
                key = (self._generation, self.map.version)
                if self._last_snapshot is not None and self._last_snapshot[0] == key:
                    return self._last_snapshot[1]
                omap = self.map
                parts = omap.begin_snapshot(self._labeler, up)
            finally:
                self._lock.release()
            snap = omap.finish_snapshot(parts, time.time(), self._labeler, up)
            self._last_snapshot = (key, snap)
            return snap
        finally:
            self._snapshot_lock.release()

    def clear(self) -> None:
        with self._lock:
            self.map.clear()
            self._generation += 1
            self.geometry = self._new_geometry()
            self.hierarchy, self.hierarchy_error = None, ""

    def save(self, path: str) -> str:
        """The object map to ``path`` (.npz) and the TSDF beside it (``*.geometry.npz``), both
        written atomically outside the fusion lock (the object map from a copy, the TSDF under
        its own lock). The TSDF goes first: the object map's rename is the last step, so until
        the save answers, ``path`` still holds the previous map."""
        frozen, _ = self._frozen_map()
        if self.geometry is not None:
            self.geometry.save(geometry_path(map_file_path(path)))
        return save_map(frozen, path, hierarchy=self.hierarchy)

    def load(self, path: str) -> None:
        """Load a map (and its TSDF when saved with one); both are validated before either is
        swapped in, so a damaged file leaves the current map as it was."""
        from .tsdf import GeometryError, GeometryLayer
        from .mapio import MapFileError, load_hierarchy

        new = load_map(path, self.cfg.fusion)  # validated before anything changes
        try:  # derived data: a damaged hierarchy is dropped (and said), the map still loads
            hierarchy, hierarchy_error = load_hierarchy(path), ""
        except MapFileError as e:
            hierarchy, hierarchy_error = None, str(e)
        geometry = self._new_geometry()
        gpath = geometry_path(path)
        if geometry is not None and os.path.exists(gpath):
            g = self.cfg.geometry
            try:
                geometry = GeometryLayer.load(
                    gpath, self.cfg.depth.max_depth, device=g.device, trunc_voxels=g.trunc_voxels, min_weight=g.min_weight,
                    clear=g.clear, max_weight=g.max_weight, carve=g.carve, carve_interval=g.carve_interval,
                )
            except GeometryError as e:
                raise MapFileError(str(e)) from None
        with self._lock:
            self.map = new
            self._generation += 1
            self.geometry = geometry
            self.hierarchy, self.hierarchy_error = hierarchy, hierarchy_error


def map_file_path(path: str | os.PathLike) -> str:
    """The file ``save_map`` writes for ``path`` (".npz" appended when missing)."""
    p = str(path)
    return p if p.endswith(".npz") else p + ".npz"


def geometry_path(map_path: str | os.PathLike) -> str:
    """Where the TSDF of a map file lives: ``map.npz`` -> ``map.geometry.npz``."""
    p = str(map_path)
    return (p[: -len(".npz")] if p.endswith(".npz") else p) + ".geometry.npz"


def label_image(masks: list[Mask2D], shape: tuple[int, int]) -> np.ndarray:
    """One uint16 label image from 2-D masks (0 = no mask, i = ``masks[i - 1]``). Larger masks
    are painted first, so that a small mask lying on a larger one stays visible."""
    return paint_largest_first(
        [m.mask for m in masks], shape, np.uint16, areas=[m.area for m in masks], boxes=[m.box for m in masks]
    )


def fuse_frame(
    omap: ObjectMap,
    frame: Frame,
    masks: list[Mask2D] | None,
    observations: list[SegmentObservation] | None = None,
    labels: np.ndarray | None = None,
) -> IntegrationStats:
    """The fusion stage: paint the masks into one label image, back-project the frame
    (``fusion.pixel_stride``, 0 = automatic) and integrate it. A frame the engine refuses
    (too few valid depth pixels, coordinates out of range) leaves the map unchanged and is
    returned with ``stats.rejected`` set.

    ``labels``: the label image itself, (H, W) uint16, 0 = no mask, i = ``masks[i - 1]`` (what
    :func:`label_image` paints from ``masks``, and what the perception node sends); given, the
    masks are not painted (``masks`` may then be None)."""
    cfg = omap.cfg
    if labels is None:
        labels = label_image(masks, frame.depth.shape)
    stride = cfg.pixel_stride or sampling_stride(frame.depth, frame.intrinsics, cfg.voxel_size)
    stats = omap.integrate_frame(frame.depth, frame.intrinsics, frame.pose, frame.rgb, labels, frame.stamp, observations, stride=stride)
    stats.stride = stride
    return stats


def observation_labels(obs: "Observation") -> np.ndarray:
    """An observation's label image renumbered so that pixel value i is ``obs.masks[i - 1]``
    (0: no mask, and any value no record describes). The same image :func:`label_image` paints
    from the masks ``obs.labels == r.label`` (disjoint, so painting order does not matter)."""
    src = np.asarray(obs.labels)
    lut = np.zeros(max([int(src.max()) if src.size else 0] + [r.label for r in obs.masks]) + 1, np.uint16)
    for i, r in enumerate(obs.masks):
        lut[r.label] = i + 1
    return lut[src]


@contextmanager
def _timed(stats: FrameStats, name: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        stats.timings_ms[name] = stats.timings_ms.get(name, 0.0) + (time.perf_counter() - t) * 1e3
