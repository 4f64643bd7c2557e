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
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..config import MapperConfig
from .camera import sampling_stride
from .fusion.object_map import IntegrationStats, ObjectMap, SegmentObservation, warm_up
from .frame import Frame, FrameError
from .mapio import load_map, save_map
from .objects import MapSnapshot
from .segment.base import Mask2D, Segmenter, make_segmenter
from .segment.progressive import progressive_merge


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
    timings_ms: dict[str, float] = field(default_factory=dict)


class Mapper:
    def __init__(self, cfg: MapperConfig | None = None, segmenter: Segmenter | None = None, encoder=None):
        self.cfg = cfg or MapperConfig()
        self._segmenter = segmenter  # built on first use: a mapper that only loads and queries needs none
        if encoder is None and self.cfg.embed.name != "none":
            from .embed.base import make_encoder

            encoder = make_encoder(self.cfg.embed)
        self.encoder = encoder
        self._labeler = None
        if encoder is not None and getattr(encoder, "semantic", False):
            from .embed.labels import LabelGuesser

            self._labeler = LabelGuesser(encoder, self.cfg.retrieval.vocabulary or None)
        from .keyframes import KeyframeSelector

        self.keyframes = KeyframeSelector(self.cfg.keyframes)
        self.map = ObjectMap(self.cfg.fusion)
        warm_up(self.cfg.fusion)  # compiled kernels ready before the first frame (once per process)
        self.last_pose: np.ndarray | None = None
        self._lock = threading.RLock()

    @property
    def segmenter(self) -> Segmenter:
        if self._segmenter is None:
            self._segmenter = make_segmenter(self.cfg.segmenter)
        return self._segmenter

    # ------------------------------------------------------------------ frames
    def process(self, frame: Frame) -> FrameStats:
        frame.validate()
        stats = FrameStats(index=frame.index)
        t_start = time.perf_counter()
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
        stats.keyframe = self.keyframes.is_keyframe(frame.pose, frame.index)
        if not stats.keyframe:
            return stats
        with _timed(stats, "segment"):
            masks = progressive_merge(self.segmenter.segment(frame), self.cfg.segmenter.progressive)
        stats.masks = len(masks)
        observations = None
        if self.encoder is not None and masks:
            with _timed(stats, "embed"):
                observations = self._observe(frame, masks)
        with _timed(stats, "fusion"), self._lock:
            ist = fuse_frame(self.map, frame, masks, observations)
        if ist.rejected:
            raise FrameError(ist.rejected, "the fusion engine refused the frame; the map is unchanged")
        stats.segments, stats.created, stats.associated = ist.segments, ist.created, ist.associated
        stats.merged, stats.dropped_voxels = ist.merged, ist.dropped_voxels
        stats.timings_ms["total"] = (time.perf_counter() - t_start) * 1e3
        return stats

    def _observe(self, frame: Frame, masks: list[Mask2D]) -> list[SegmentObservation]:
        from .embed.crops import embed_masks, view_quality

        embeddings = embed_masks(self.encoder, frame.rgb, masks, self.cfg.embed)
        out = []
        for m, e in zip(masks, embeddings):
            ys, xs = np.nonzero(m.mask)
            crop = frame.rgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].copy()
            out.append(SegmentObservation(embedding=e, view_quality=view_quality(m.mask, m.mask.shape), view_crop=crop))
        return out

    # ------------------------------------------------------------------ map access
    def snapshot(self) -> MapSnapshot:
        with self._lock:
            return self.map.snapshot(stamp=time.time(), labeler=self._labeler, up=self.cfg.retrieval.up_axis)

    def clear(self) -> None:
        with self._lock:
            self.map.clear()

    def save(self, path: str) -> str:
        with self._lock:
            return save_map(self.map, path)

    def load(self, path: str) -> None:
        new = load_map(path, self.cfg.fusion)  # validated before anything changes
        with self._lock:
            self.map = new


def label_image(masks: list[Mask2D], shape: tuple[int, int]) -> np.ndarray:
    """One uint16 label image from 2-D masks (0 = no mask, i = ``masks[i - 1]``). Larger masks
    are painted first, so that a small mask lying on a larger one stays visible."""
    if len(masks) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(masks)} masks exceed the label image's range")
    labels = np.zeros(shape, np.uint16)
    order = sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i].mask)))
    for i in order:
        np.copyto(labels, np.uint16(i + 1), where=np.asarray(masks[i].mask, bool))
    return labels


def fuse_frame(
    omap: ObjectMap, frame: Frame, masks: list[Mask2D], observations: list[SegmentObservation] | None = None
) -> IntegrationStats:
    """The fusion stage: paint the masks into one label image, back-project the frame
    (``fusion.pixel_stride``, 0 = automatic) and integrate it. A frame the engine refuses
    (too few valid depth pixels, coordinates out of range) leaves the map unchanged and is
    returned with ``stats.rejected`` set."""
    cfg = omap.cfg
    labels = label_image(masks, frame.depth.shape)
    stride = cfg.pixel_stride or sampling_stride(frame.depth, frame.intrinsics, cfg.voxel_size)
    stats = omap.integrate_frame(frame.depth, frame.intrinsics, frame.pose, frame.rgb, labels, frame.stamp, observations, stride=stride)
    stats.stride = stride
    return stats


@contextmanager
def _timed(stats: FrameStats, name: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        stats.timings_ms[name] = stats.timings_ms.get(name, 0.0) + (time.perf_counter() - t) * 1e3
