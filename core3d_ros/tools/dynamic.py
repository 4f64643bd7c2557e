"""``core3d eval --dynamic``: does the map stay true when the room changes?

Per seed and segmenter, two runs of the synthetic room (every frame fused):

- *changed*: pass 1 flies the trajectory through the room as generated; then one object is
  taken away (``remove``) and another moved (``move``), and passes 2.. fly the same trajectory
  through the changed room;
- *control*: every pass flies the changed room (a run that never saw the change).

After each pass of the changed run it reports the ghost voxels (map voxels of reported objects
where only the removed object was: its ground-truth voxels minus every voxel of the changed
room), and the moved object's voxels and objects at its old place and at its new one (each
place: its ground-truth voxels minus the other room's). The geometry layer too: its TSDF surface
samples where only the removed object was (``tsdf_ghost_voxels``, see :func:`_tsdf_ghosts`). And
the move as reported (core/fusion/moves.py): whether the object at the moved object's new place
says it moved (``moved_reported``), how far its ``moved_from`` lies from the old place's centre
(``moved_from_error_m``), and how many other objects say they moved (``other_moved_objects``). At the end, every static object's IoU
(Hungarian match against the changed room's ground truth) in both runs, and the largest
difference.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

DEFAULT_REMOVE = ("sofa",)
DEFAULT_MOVE = {"mug": (-0.6, 0.0, 0.0)}  # along the table, away from the monitor and the book


class _Pass:
    """A dataset's frames with stamps (and indices) shifted, so that a second flight of the same
    trajectory continues the first in time."""

    def __init__(self, scene, pass_index: int):
        self.scene, self.k = scene, pass_index

    def __len__(self) -> int:
        return len(self.scene)

    def __getitem__(self, i: int):
        f = self.scene[i]
        n = len(self.scene)
        return dataclasses.replace(f, stamp=f.stamp + self.k * n / 30.0 + self.k, index=f.index + self.k * n)


def _region_count(pred: dict[int, np.ndarray], region: np.ndarray, min_voxels: int = 1) -> tuple[int, int]:
    """(voxels of reported objects inside ``region``, objects with at least ``min_voxels`` there)."""
    total, objects = 0, 0
    for keys in pred.values():
        n = int(np.isin(keys, region, assume_unique=True).sum())
        total += n
        objects += n >= min_voxels
    return total, objects


def _tsdf_ghosts(geometry, region: np.ndarray, room: np.ndarray, voxel_size: float) -> int:
    """TSDF surface samples left where only the removed object was. A sample is a voxel corner
    (Open3D samples at multiples of the voxel size); it counts when one of the 8 object-map voxels
    around it is in ``region`` and none is a voxel of the changed room (``room``). Whole map:
    evaluation only."""
    from ..core.fusion.voxels import pack

    if geometry is None or not len(region):
        return 0
    points, _, _ = geometry.surface(geometry.all_blocks())
    corner = np.round(points.astype(np.float64) / voxel_size).astype(np.int64)
    near_region = np.zeros(len(corner), bool)
    near_room = np.zeros(len(corner), bool)
    for off in np.array(np.meshgrid([-1, 0], [-1, 0], [-1, 0], indexing="ij")).reshape(3, -1).T:
        keys = pack(corner + off)
        near_region |= np.isin(keys, region)
        near_room |= np.isin(keys, room)
    return int((near_region & ~near_room).sum())


def _move_report(mapper, pred: dict[int, np.ndarray], new_region: np.ndarray, old_centre: np.ndarray | None) -> dict:
    """The object holding most of the new place, whether it reports a move and from how far
    off the old place's centre; and the other objects that report one."""
    snap = mapper.snapshot()
    moved = {o.id: o for o in snap.objects if o.moved_from is not None}
    counts = {oid: int(np.isin(keys, new_region, assume_unique=True).sum()) for oid, keys in pred.items()} if len(new_region) else {}
    at_new = max(counts, key=counts.get) if counts and max(counts.values()) > 0 else None
    obj = moved.get(at_new) if at_new is not None else None
    err = float(np.linalg.norm(np.asarray(obj.moved_from) - old_centre)) if obj is not None and old_centre is not None else None
    return {
        "moved_reported": obj is not None,
        "moved_from": None if obj is None else [float(v) for v in obj.moved_from],
        "moved_from_error_m": err,
        "other_moved_objects": len([o for o in moved if o != at_new]),
    }


def evaluate_dynamic(
    base,
    segmenters: Iterable[str],
    seeds: Iterable[int],
    frames: int,
    remove: Sequence[str] = DEFAULT_REMOVE,
    move: Mapping[str, Sequence[float]] | None = None,
    passes: int = 2,
    progress: Callable[[str], Callable[[Iterable], Iterable]] | None = None,
) -> dict:
    from ..config import with_overrides
    from ..core.datasets import make_scene
    from ..core.mapper import Mapper
    from ..core.fusion.voxels import key_centers
    from .evaluation import collect_ground_truth, evaluate_instances
    from .runs import map_frames

    move = dict(DEFAULT_MOVE if move is None else move)
    if passes < 2:
        raise ValueError("--dynamic needs at least 2 passes (one before the change, one after)")
    seeds = list(seeds)
    report: dict = {"seeds": seeds, "frames": frames, "passes": passes, "remove": list(remove),
                    "move": {k: list(map(float, v)) for k, v in move.items()}, "segmenters": {}}
    for name in segmenters:
        cfg = with_overrides(base, segmenter={"name": name}, keyframes={"enabled": False})
        vs = cfg.fusion.voxel_size
        min_vox = max(1, cfg.fusion.min_segment_voxels)
        per_seed = {}
        for seed in seeds:
            before = make_scene(seed=seed, num_frames=frames)
            after = make_scene(seed=seed, num_frames=frames, remove=remove, move=move)
            gt_b = collect_ground_truth([before[i] for i in range(len(before))], vs, stride=1)
            gt_a = collect_ground_truth([after[i] for i in range(len(after))], vs, stride=1)
            all_b = np.unique(np.concatenate(list(gt_b.voxels.values())))
            all_a = np.unique(np.concatenate(list(gt_a.voxels.values())))
            removed_ids = [o.id for o in before.objects if o.class_name in set(remove)]
            moved_ids = [o.id for o in before.objects if o.class_name in move]
            ghost_region = np.setdiff1d(np.concatenate([gt_b.voxels.get(i, np.zeros(0, np.int64)) for i in removed_ids] or [np.zeros(0, np.int64)]), all_a)
            old_region = np.setdiff1d(np.concatenate([gt_b.voxels.get(i, np.zeros(0, np.int64)) for i in moved_ids] or [np.zeros(0, np.int64)]), all_a)
            new_region = np.setdiff1d(np.concatenate([gt_a.voxels.get(i, np.zeros(0, np.int64)) for i in moved_ids] or [np.zeros(0, np.int64)]), all_b)
            old_whole = np.concatenate([gt_b.voxels.get(i, np.zeros(0, np.int64)) for i in moved_ids] or [np.zeros(0, np.int64)])
            old_centre = key_centers(old_whole, vs).astype(np.float64).mean(axis=0) if len(old_whole) else None

            def reported(mapper):
                with mapper._lock:
                    pred = mapper.map.instance_voxels()
                    scores = {oid: float(mapper.map.objects[oid].num_observations) for oid in pred}
                return pred, scores

            changed, per_pass = Mapper(cfg), []
            for k in range(passes):
                scene = before if k == 0 else after
                map_frames(changed, _Pass(scene, k), progress(f"{name} seed {seed} changed pass {k + 1}") if progress else None)
                pred, _ = reported(changed)
                ghost, ghost_objects = _region_count(pred, ghost_region, min_vox)
                old_v, old_o = _region_count(pred, old_region, min_vox)
                new_v, new_o = _region_count(pred, new_region, min_vox)
                tsdf_ghost = _tsdf_ghosts(changed.geometry, ghost_region, all_a, vs)
                moved_report = _move_report(changed, pred, new_region, old_centre)
                per_pass.append({
                    "pass": k + 1, "room": "as generated" if k == 0 else "changed",
                    "ghost_voxels": ghost, "ghost_objects": ghost_objects, "tsdf_ghost_voxels": tsdf_ghost,
                    "moved_old_place_voxels": old_v, "moved_old_place_objects": old_o,
                    "moved_new_place_voxels": new_v, "moved_new_place_objects": new_o,
                    **moved_report,
                })
            control = Mapper(cfg)
            for k in range(passes):
                map_frames(control, _Pass(after, k), progress(f"{name} seed {seed} control pass {k + 1}") if progress else None)

            static_gt = {g: v for g, v in gt_a.voxels.items() if g not in set(moved_ids)}
            ious = {}
            for label, mapper in (("changed", changed), ("control", control)):
                pred, scores = reported(mapper)
                res = evaluate_instances(pred, static_gt, pred_scores=scores)
                ious[label] = {g: float(res.per_gt[g]["iou"]) for g in static_gt}
            diff = {g: ious["changed"][g] - ious["control"][g] for g in static_gt}
            worst = min(diff, key=lambda g: -abs(diff[g])) if diff else None
            per_seed[seed] = {
                "removed": {str(i): before.instance_classes[i] for i in removed_ids},
                "moved": {str(i): before.instance_classes[i] for i in moved_ids},
                "ghost_region_voxels": int(len(ghost_region)),
                "old_place_voxels": int(len(old_region)),
                "new_place_voxels": int(len(new_region)),
                "passes": per_pass,
                "static_iou": {str(g): {"class": gt_a.classes.get(g, ""), "changed": ious["changed"][g], "control": ious["control"][g]} for g in static_gt},
                "static_iou_max_abs_diff": float(abs(diff[worst])) if worst is not None else 0.0,
                "static_iou_worst": {"id": worst, "class": gt_a.classes.get(worst, "")} if worst is not None else None,
                "static_iou_mean": {k: float(np.mean(list(v.values()))) for k, v in ious.items()},
            }
        report["segmenters"][name] = {"per_seed": per_seed}
    return report


def summary_lines(report: dict) -> list[str]:
    """One line per segmenter, seed and pass, and one for the static objects."""
    lines = []
    for name, r in report["segmenters"].items():
        for seed, s in r["per_seed"].items():
            moved = "/".join(s["moved"].values()) or "-"
            removed = "/".join(s["removed"].values()) or "-"
            for p in s["passes"]:
                lines.append(
                    f"{name:10s} seed {seed} pass {p['pass']} ({p['room']:12s}) ghost voxels of the {removed} {p['ghost_voxels']:5d} "
                    f"(of {s['ghost_region_voxels']}, in {p['ghost_objects']} objects), TSDF surface {p.get('tsdf_ghost_voxels', 0):5d}; {moved} at old place {p['moved_old_place_voxels']:4d} voxels "
                    f"/ {p['moved_old_place_objects']} objects, at new place {p['moved_new_place_voxels']:4d} / {p['moved_new_place_objects']}"
                    + (f"; reported moved, from {p['moved_from_error_m']:.3f} m off the old place" if p.get("moved_reported") else "; not reported moved")
                    + (f" ({p['other_moved_objects']} other objects reported moved)" if p.get("other_moved_objects") else "")
                )
            w = s["static_iou_worst"]
            lines.append(
                f"{name:10s} seed {seed} static objects: mean IoU changed {s['static_iou_mean']['changed']:.3f}, control "
                f"{s['static_iou_mean']['control']:.3f}; largest |difference| {s['static_iou_max_abs_diff']:.3f}"
                + (f" ({w['class']} {w['id']})" if w else "")
            )
    return lines
