"""``core3d eval --drift``: does the map follow pose corrections from SLAM?

Per seed and segmenter, the synthetic room (every frame fused) is mapped four times and each map
evaluated as ``core3d eval`` does (:func:`.runs.evaluate_mapper`, against the ground truth of the
true poses):

- *drift-free*: the true poses;
- *drifted*: the poses with injected drift, never corrected;
- *corrected at the end*: the same drifted poses; after the last frame, the true poses of every
  fused frame are published as corrections (one batch: a SLAM's optimised path after it closed
  the loop);
- *corrected partway*: a SLAM that closes loops as it goes: every ``correct_every`` frames the
  true poses of the frames fused so far are published, and the drift then starts again from the
  corrected pose (odometry after a loop closure continues from the corrected estimate); a last
  batch after the last frame.

Drift model: the camera's pose error is a rigid motion of the world that grows linearly with the
distance travelled since the drift began (the first frame, or the last correction): a
translation of ``rate`` (metres per metre, along a fixed horizontal direction drawn per seed)
and a yaw of ``yaw_rate`` (degrees per metre) about the vertical through the camera where the
drift began: ``T_drifted = D(s) @ T_true`` with ``D(s) = Trans(rate * s * u) @ RotZ_p0(yaw_rate * s)``.

Each map is also scored on a grid of twice the voxel size (``coarse_mean_iou_gt``): a voxel
moved by a correction whose frame's depth is no longer kept can land one voxel off, which that
score forgives. The time of each correction batch (object map and TSDF) is reported;
``timing_voxel`` adds one corrected-at-the-end run of seed ``seeds[0]`` at that voxel size
(1 cm), timed only (``timing_only``: that run alone).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

import numpy as np

RUNS = ("drift_free", "drifted", "corrected_end", "corrected_partway")


def drift_transform(distance: float, origin: np.ndarray, direction: np.ndarray, rate: float, yaw_rate: float) -> np.ndarray:
    """D(s) of the module doc: translation ``rate * s`` along ``direction`` after a yaw of
    ``yaw_rate * s`` degrees about the vertical through ``origin``."""
    a = np.radians(yaw_rate * distance)
    R = np.eye(4)
    R[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    to, back = np.eye(4), np.eye(4)
    to[:3, 3], back[:3, 3] = -origin, origin
    T = back @ R @ to
    T[:3, 3] += rate * distance * np.asarray(direction, float)
    return T


class _Drifted:
    """A scene's frames with drifted poses; ``reset(i)`` starts the drift again at frame i."""

    def __init__(self, scene, rate: float, yaw_rate: float, seed: int):
        self.scene, self.rate, self.yaw_rate = scene, rate, yaw_rate
        ang = np.random.default_rng([seed, 17]).uniform(0, 2 * np.pi)
        self.direction = np.array([np.cos(ang), np.sin(ang), 0.0])
        eyes = np.array([scene.pose(i)[:3, 3] for i in range(len(scene))])
        self.travelled = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(eyes, axis=0), axis=1))]
        self.start = 0

    def reset(self, i: int) -> None:
        self.start = i

    def pose(self, i: int) -> np.ndarray:
        s = self.travelled[i] - self.travelled[self.start]
        return drift_transform(s, self.scene.pose(self.start)[:3, 3], self.direction, self.rate, self.yaw_rate) @ self.scene.pose(i)

    def frame(self, i: int):
        f = self.scene[i]
        return dataclasses.replace(f, pose=self.pose(i))


def _run(cfg, scene, truth, mode: str, rate: float, yaw_rate: float, seed: int, correct_every: int, progress=None) -> dict:
    from ..core.mapper import Mapper
    from ..core.mapping.geometry_correction import apply_corrections
    from .runs import evaluate_mapper

    mapper = Mapper(cfg)
    drifted = _Drifted(scene, rate, yaw_rate, seed)
    fused: list[int] = []
    batches = []
    max_err = 0.0

    def correct(last: bool) -> None:
        batch = [(scene.stamp(i), scene.pose(i)) for i in fused]
        t0 = time.perf_counter()
        st = apply_corrections(mapper, batch, issued=float(len(batches)))
        batches.append({
            "after_frame": fused[-1], "corrections": len(batch), "seconds": time.perf_counter() - t0, "engine_seconds": st.seconds,
            "frames_moved": st.frames, "objects_moved": len(st.objects), "voxels_moved": st.voxels, "dropped_voxels": st.dropped_voxels,
            "tsdf_blocks_moved": int(len(st.blocks)), "rejected": st.rejected, "refused": dict(st.refused),
        })

    indices = range(len(scene))
    for i in progress(indices) if progress else indices:
        frame = scene[i] if mode == "drift_free" else drifted.frame(i)
        max_err = max(max_err, float(np.linalg.norm(frame.pose[:3, 3] - scene.pose(i)[:3, 3])))
        mapper.process(frame)
        fused.append(i)
        if mode == "corrected_partway" and correct_every > 0 and (i + 1) % correct_every == 0 and i + 1 < len(scene):
            correct(False)
            drifted.reset(i + 1)
    if mode in ("corrected_end", "corrected_partway"):
        correct(True)
    metrics = evaluate_mapper(mapper, truth) if truth is not None else {}
    if truth is not None:
        metrics["coarse_mean_iou_gt"] = _coarse_iou(mapper, truth)
    return {"max_position_error_m": max_err, "corrections": batches, **metrics}


def _coarse_iou(mapper, truth) -> float:
    """Mean IoU (all ground-truth instances) on a grid of twice the voxel size: what re-keying
    whole voxels loses (a corrected voxel lands up to one voxel off) matters less there."""
    from ..core.fusion.voxels import pack, unpack
    from .evaluation import collect_ground_truth, evaluate_instances

    gt = collect_ground_truth(truth, 2 * mapper.cfg.fusion.voxel_size, stride=1)
    with mapper._lock:
        pred = {o: np.unique(pack(unpack(k) // 2)) for o, k in mapper.map.instance_voxels().items()}
        scores = {o: float(mapper.map.objects[o].num_observations) for o in pred}
    return float(evaluate_instances(pred, gt.voxels, pred_scores=scores).mean_iou_gt)


def evaluate_drift(
    base,
    segmenters: Iterable[str],
    seeds: Iterable[int],
    frames: int,
    rate: float = 0.01,
    yaw_rate: float = 0.5,
    correct_every: int = 15,
    timing_voxel: float | None = 0.01,
    progress: Callable[[str], Callable[[Iterable], Iterable]] | None = None,
    timing_only: bool = False,
) -> dict:
    from ..config import with_overrides
    from ..core.datasets import make_scene

    if rate < 0 or yaw_rate < 0 or correct_every < 0:
        raise ValueError("--drift-rate, --drift-yaw and --correct-every must be >= 0")
    seeds = list(seeds)
    report: dict = {
        "seeds": seeds, "frames": frames, "drift": {"rate_m_per_m": rate, "yaw_deg_per_m": yaw_rate, "correct_every": correct_every},
        "segmenters": {},
    }
    segmenters = list(segmenters)
    for name in [] if timing_only else segmenters:
        cfg = with_overrides(base, segmenter={"name": name}, keyframes={"enabled": False})
        per_seed = {}
        for seed in seeds:
            scene = make_scene(seed=seed, num_frames=frames)
            truth = [scene[i] for i in range(len(scene))]
            per_seed[seed] = {
                mode: _run(cfg, scene, truth, mode, rate, yaw_rate, seed, correct_every, progress(f"{name} seed {seed} {mode}") if progress else None)
                for mode in RUNS
            }
        mean = {mode: float(np.mean([per_seed[s][mode]["all_instances"]["mean_iou_gt"] for s in seeds])) for mode in RUNS}
        coarse = {mode: float(np.mean([per_seed[s][mode]["coarse_mean_iou_gt"] for s in seeds])) for mode in RUNS}
        report["segmenters"][name] = {
            "per_seed": per_seed,
            "mean_iou_gt": mean,
            "coarse_mean_iou_gt": coarse,
            "ratio_to_drift_free": {m: (mean[m] / mean["drift_free"] if mean["drift_free"] > 0 else 0.0) for m in RUNS},
        }
    if timing_voxel:
        name = segmenters[0] if segmenters else "oracle"
        cfg = with_overrides(base, segmenter={"name": name}, keyframes={"enabled": False}, fusion={"voxel_size": float(timing_voxel)})
        scene = make_scene(seed=seeds[0], num_frames=frames)
        r = _run(cfg, scene, None, "corrected_end", rate, yaw_rate, seeds[0], correct_every, progress(f"{name} timing at {timing_voxel} m") if progress else None)
        report["timing"] = {"segmenter": name, "seed": seeds[0], "voxel_size": float(timing_voxel), **r["corrections"][-1]}
    return report


def summary_lines(report: dict) -> list[str]:
    lines = []
    d = report["drift"]
    lines.append(f"drift {d['rate_m_per_m']} m/m + {d['yaw_deg_per_m']} deg/m; partway corrections every {d['correct_every']} frames")
    for name, r in report["segmenters"].items():
        for seed, s in r["per_seed"].items():
            lines.append(
                f"{name:10s} seed {seed} mean IoU (all GT): " + ", ".join(f"{m} {s[m]['all_instances']['mean_iou_gt']:.3f}" for m in RUNS)
                + f"; max drift {s['drifted']['max_position_error_m']:.3f} m"
            )
        m, q = r["mean_iou_gt"], r["ratio_to_drift_free"]
        lines.append(f"{name:10s} mean: " + ", ".join(f"{k} {m[k]:.3f} ({q[k]:.2f}x)" for k in RUNS))
        c = r["coarse_mean_iou_gt"]
        lines.append(f"{name:10s} mean at twice the voxel size: " + ", ".join(f"{k} {c[k]:.3f}" for k in RUNS))
    t = report.get("timing")
    if t:
        lines.append(
            f"correction at {t['voxel_size'] * 100:.0f} cm ({t['segmenter']} seed {t['seed']}): {t['corrections']} keyframes, "
            f"{t['objects_moved']} objects / {t['voxels_moved']} voxels / {t['tsdf_blocks_moved']} TSDF blocks moved in {t['seconds'] * 1e3:.0f} ms "
            f"(object map {t['engine_seconds'] * 1e3:.0f} ms)"
        )
    return lines
