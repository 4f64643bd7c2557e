"""Offline runs shared by the CLI and the tests: map a dataset, evaluate against ground truth."""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..core.datasets import Dataset, DatasetError
from ..core.frame import Frame, FrameError
from ..config import up_vector
from ..core.mapper import Mapper
from .viz import write_ply, write_topdown_png


@dataclass
class RunSummary:
    frames: int = 0
    processed: int = 0
    keyframes: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean per keyframe
    objects: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["rejected"] = dict(self.rejected)
        return d


def map_frames(
    mapper: Mapper, dataset: Dataset, progress: Callable[[Iterable], Iterable] | None = None
) -> RunSummary:
    """Run every frame of a dataset through the mapper; bad frames are counted, never fatal."""
    summary = RunSummary()
    totals: Counter = Counter()
    t0 = time.perf_counter()
    indices = range(len(dataset))
    for i in progress(indices) if progress else indices:
        summary.frames += 1
        try:
            frame = dataset[i]
            stats = mapper.process(frame)
        except DatasetError:
            summary.rejected["unreadable"] += 1
            continue
        except FrameError as e:
            summary.rejected[e.reason] += 1
            continue
        summary.processed += 1
        if stats.keyframe:
            summary.keyframes += 1
            totals.update(stats.timings_ms)
    summary.seconds = time.perf_counter() - t0
    summary.stage_ms = {k: v / max(summary.keyframes, 1) for k, v in totals.items()}
    summary.objects = len(mapper.snapshot().objects)
    return summary


def write_outputs(mapper: Mapper, out: str | Path) -> dict[str, str]:
    """Save the map, a top-down PNG and a PLY into ``out``; returns the paths."""
    out = Path(out)
    snap = mapper.snapshot()
    up = up_vector(mapper.cfg.retrieval.up_axis)
    return {
        "map": mapper.save(str(out / "map.npz")),
        "png": write_topdown_png(snap, out / "map.png", up=up),
        "ply": write_ply(snap, out / "map.ply"),
    }


def evaluate_mapper(mapper: Mapper, frames: list[Frame], ignore_classes=("floor", "wall", "ceiling")) -> dict:
    """3-D instance metrics of the mapper's map against the frames' ground-truth instances.

    Reported twice: over all instances, and over objects only (floor and walls ignored).
    """
    from .evaluation import collect_ground_truth, evaluate_instances

    gt = collect_ground_truth(frames, mapper.cfg.fusion.voxel_size, stride=1)
    with mapper._lock:
        pred = mapper.map.instance_voxels()
        scores = {oid: float(mapper.map.objects[oid].num_observations) for oid in pred}
    everything = evaluate_instances(pred, gt.voxels, pred_scores=scores)
    objects_only = evaluate_instances(pred, gt.voxels, pred_scores=scores, ignore_gt=gt.ignore_ids(ignore_classes))
    return {"all_instances": everything.to_dict(), "objects_only": objects_only.to_dict()}




SUMMARY_METRICS = ("mean_iou_gt", "mean_iou_matched", "ap", "precision", "recall", "num_pred", "over_segmented", "under_segmented")


def evaluate_seeds(
    base,
    segmenters: Iterable[str],
    seeds: Iterable[int],
    frames: int,
    progress: Callable[[str], Callable[[Iterable], Iterable]] | None = None,
) -> dict:
    """Map the synthetic room once per seed and segmenter (every frame fused) and evaluate it.

    Returns ``{"seeds": [...], "segmenters": {name: {"per_seed": {seed: metrics}, "mean":
    {part: {metric: mean over seeds}}}}}``; quality targets are judged on the mean.
    """
    import numpy as np

    from ..config import with_overrides
    from ..core.datasets import make_scene

    seeds = list(seeds)
    report: dict = {"seeds": seeds, "frames": frames, "segmenters": {}}
    for name in segmenters:
        cfg = with_overrides(base, segmenter={"name": name}, keyframes={"enabled": False})
        per_seed = {}
        for seed in seeds:
            scene = make_scene(seed=seed, num_frames=frames)
            mapper = Mapper(cfg)
            summary = map_frames(mapper, scene, progress(f"{name} seed {seed}") if progress else None)
            metrics = evaluate_mapper(mapper, [scene[i] for i in range(len(scene))])
            per_seed[seed] = {"run": summary.to_dict(), "objects_in_scene": len(scene.instances), **metrics}
        mean = {
            part: {k: float(np.mean([per_seed[s][part][k] for s in seeds])) for k in SUMMARY_METRICS}
            for part in ("all_instances", "objects_only")
        }
        report["segmenters"][name] = {"per_seed": per_seed, "mean": mean}
    return report
