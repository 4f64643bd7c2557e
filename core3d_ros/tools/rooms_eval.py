"""``core3d eval --rooms``: floors and rooms built online on the synthetic building, against its
ground truth, after half of the walk and after all of it.

Per seed: the building (core/datasets/building.py) is mapped with the oracle segmenter; every
frame's camera centre goes to the HierarchyBuilder and, every ``feed_every`` frames (a map
publication), the TSDF blocks changed since the last one; ``update`` runs at its own bounded
rate on the frames' clock. Then, on what has been seen (the true rooms where the camera has
flown at least half of its loop; a room entered a few frames ago is not yet one):

- room segmentation: true footprints and predicted rooms rasterised on the builder's grid,
  matched one to one by IoU (Hungarian); mean IoU over the true rooms (unmatched: 0);
- objects in the right room: each mapped object (structure left out) is given the true object
  nearest to most of its points and that object's true room; right when the predicted room is
  the one matched to it;
- floors found: predicted floors within 0.25 m of a true floor, of the true floors visited;
- cost: builder time per update call (the recompute) and per frame (feeding: camera + changed
  blocks' rows), wall-clock ms on this machine; the TSDF surface extraction of the changed
  blocks (which the mapping node's surface publisher does anyway) is reported apart.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Iterable

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..config import MapperConfig, with_overrides
from ..core.datasets.building import BuildingScene, make_building
from ..core.hierarchy.builder import HierarchyBuilder
from ..core.hierarchy.up import resolve_up
from ..core.mapper import Mapper

STRUCTURE = ("floor", "wall", "ceiling")
TARGETS = {"mean_iou": 0.85, "objects_right": 0.95}


def _true_instance(scene: BuildingScene, points: np.ndarray, sample: int = 200) -> int:
    """The scene instance nearest to most of ``points`` (distance to its boxes)."""
    pts = points[:: max(1, len(points) // sample)]
    ids, los, his = [], [], []
    for obj in scene.instances:
        for p in obj.parts:
            ids.append(obj.id)
            los.append(np.subtract(p.center, np.divide(p.size, 2)))
            his.append(np.add(p.center, np.divide(p.size, 2)))
    lo, hi = np.array(los), np.array(his)
    d = np.linalg.norm(np.maximum(0.0, np.maximum(lo[None] - pts[:, None], pts[:, None] - hi[None])), axis=2)
    nearest = np.asarray(ids)[np.argmin(d, axis=1)]
    vals, counts = np.unique(nearest, return_counts=True)
    return int(vals[np.argmax(counts)])


def score(builder: HierarchyBuilder, scene: BuildingScene, objects: list, visited: set[int]) -> dict:
    """Room IoU, objects in the right room and floors found, over the visited true rooms."""
    cell = builder.cell
    true_rooms = [r for r in scene.rooms if r.id in visited]
    floors = builder.floors_state()
    pred: list[tuple[int, np.ndarray, np.ndarray]] = []  # (room id, origin, mask)
    for fl in floors:
        for rid in fl.room_ids:
            pred.append((rid, fl.origin, fl.labels == rid))
    iou = np.zeros((len(true_rooms), len(pred)))
    for i, tr in enumerate(true_rooms):
        for j, (rid, origin, mask) in enumerate(pred):
            fl = builder.floor_of_height(tr.height + 1.0)
            if fl is None or rid not in fl.room_ids:
                continue
            bb, aa = np.mgrid[0: mask.shape[0], 0: mask.shape[1]]
            x = (aa + origin[0] + 0.5) * cell
            y = (bb + origin[1] + 0.5) * cell
            truth = (x >= tr.lo[0]) & (x <= tr.hi[0]) & (y >= tr.lo[1]) & (y <= tr.hi[1])
            inter = np.count_nonzero(truth & mask)
            union = np.count_nonzero(truth) + np.count_nonzero(mask) - inter
            iou[i, j] = inter / union if union else 0.0
    match: dict[int, int] = {}  # predicted room id -> true room id
    per_room = {tr.id: 0.0 for tr in true_rooms}
    if iou.size:
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] > 0:
                match[pred[c][0]] = true_rooms[r].id
                per_room[true_rooms[r].id] = float(iou[r, c])
    right = total = 0
    wrong: list[dict] = []
    for o in objects:
        if not len(o.points):
            continue
        gid = _true_instance(scene, np.asarray(o.points, float))
        if scene.instance_classes[gid] in STRUCTURE:
            continue
        truth = scene.object_room.get(gid)
        if truth not in visited:
            continue
        total += 1
        got = match.get(builder.object_room(o.id))
        if got == truth:
            right += 1
        else:
            wrong.append({"object": int(o.id), "class": scene.instance_classes[gid], "true_room": truth, "room": got})
    true_floors = sorted({scene.room(r).height for r in visited})
    found = sum(any(abs(f.height - h) < 0.25 for f in floors) for h in true_floors)
    return {
        "rooms_true": len(true_rooms),
        "rooms_found": len(pred),
        "mean_iou": float(np.mean(list(per_room.values()))) if per_room else 0.0,
        "iou_per_room": {str(k): round(v, 4) for k, v in per_room.items()},
        "objects": total,
        "objects_right": right / total if total else 0.0,
        "objects_wrong": wrong,
        "floors_true": len(true_floors),
        "floors_found": int(found),
        "floors_predicted": len(floors),
        "splits": builder.graph.splits,
        "merges": builder.graph.merges,
        "note": builder.graph.note,
    }


def evaluate_building(
    base: MapperConfig,
    seed: int,
    frames_per_room: int = 24,
    feed_every: int = 10,
    width: int = 320,
    height: int = 240,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict:
    """Map the building of ``seed`` and score its hierarchy at half and at the end of the walk."""
    cfg = with_overrides(base, segmenter={"name": "oracle"})
    scene = make_building(seed, frames_per_room=frames_per_room, width=width, height=height, depth=cfg.depth)
    up, source, detail = resolve_up(cfg.retrieval.up_axis, scene)
    cfg = with_overrides(cfg, retrieval={"up_axis": [float(v) for v in up]})
    mapper = Mapper(cfg)
    builder = HierarchyBuilder(cfg.hierarchy, cfg.fusion.voxel_size, up=up, up_source=source)
    n = len(scene)
    half = n // 2
    feed_ms: list[float] = []
    update_ms: list[float] = []
    mapping_ms: list[float] = []
    surface_ms: list[float] = []
    report: dict = {"seed": seed, "frames": n, "up": [round(float(v), 4) for v in up], "up_source": source, "up_detail": detail}
    indices = range(n)
    for i in progress(indices) if progress else indices:
        frame = scene[i]
        t0 = time.perf_counter()
        mapper.process(frame)
        t1 = time.perf_counter()
        builder.add_camera(frame.pose[:3, 3])
        if (i + 1) % feed_every == 0 or i + 1 in (half, n):
            blocks = mapper.geometry.take_dirty()
            ts = time.perf_counter()
            points, _, block_of = mapper.geometry.surface(blocks)  # the surface publisher's work
            surface_ms.append((time.perf_counter() - ts) * 1e3)
            t1 += time.perf_counter() - ts
            builder.add_surface(blocks, points, block_of)
        t2 = time.perf_counter()
        if builder.due(frame.stamp):
            builder.update(mapper.snapshot().objects, now=frame.stamp)
            update_ms.append(builder.stats["last_update_ms"])
        mapping_ms.append((t1 - t0) * 1e3)
        feed_ms.append((t2 - t1) * 1e3)
        if i + 1 in (half, n):
            objects = mapper.snapshot().objects
            builder.update(objects, now=frame.stamp, force=True)
            update_ms.append(builder.stats["last_update_ms"])
            seen = Counter(r for r in scene.frame_room[: i + 1] if r is not None)
            visited = {r for r, k in seen.items() if k >= frames_per_room // 2}
            report["half" if i + 1 == half else "full"] = score(builder, scene, objects, visited)
    report["cost_ms"] = {
        "update_mean": float(np.mean(update_ms)) if update_ms else 0.0,
        "update_max": float(np.max(update_ms)) if update_ms else 0.0,
        "updates": len(update_ms),
        "feed_per_frame_mean": float(np.mean(feed_ms)),
        "surface_extraction_per_frame_mean": float(np.sum(surface_ms)) / n,
        "mapping_per_frame_mean": float(np.mean(mapping_ms)),
    }
    return report


def evaluate_rooms(base: MapperConfig, seeds: Iterable[int], frames_per_room: int = 24, progress=None) -> dict:
    seeds = list(seeds)
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = evaluate_building(base, seed, frames_per_room, progress=progress(f"building {seed}") if progress else None)
    mean = {
        part: {
            k: float(np.mean([per_seed[s][part][k] for s in seeds]))
            for k in ("mean_iou", "objects_right", "floors_found", "floors_true", "rooms_found", "rooms_true")
        }
        for part in ("half", "full")
    }
    cost = {k: float(np.mean([per_seed[s]["cost_ms"][k] for s in seeds])) for k in per_seed[seeds[0]]["cost_ms"]}
    return {"seeds": seeds, "frames_per_room": frames_per_room, "targets": TARGETS, "per_seed": per_seed, "mean": mean, "cost_ms": cost}


def summary_lines(report: dict) -> list[str]:
    lines = []
    rows = [(str(s), report["per_seed"][s]) for s in report["seeds"]]
    for label, r in rows:
        for part in ("half", "full"):
            m = r[part]
            lines.append(
                f"seed {label} {part:4s}: rooms {m['rooms_found']}/{m['rooms_true']}  mean IoU {m['mean_iou']:.3f}  "
                f"objects in the right room {m['objects_right']:.3f} ({m['objects']})  floors {m['floors_found']}/{m['floors_true']}"
                + (f"  note: {m['note']}" if m["note"] else "")
            )
        lines.append(f"seed {label} up {r['up']} ({r['up_source']})")
    for part in ("half", "full"):
        m = report["mean"][part]
        lines.append(
            f"mean {part:4s}: mean IoU {m['mean_iou']:.3f} (target >= {TARGETS['mean_iou']})  objects in the right room "
            f"{m['objects_right']:.3f} (target >= {TARGETS['objects_right']})  floors {m['floors_found']:.2f}/{m['floors_true']:.2f}"
        )
    c = report["cost_ms"]
    lines.append(
        f"cost: hierarchy update {c['update_mean']:.1f} ms mean, {c['update_max']:.1f} ms max ({c['updates']:.0f} calls); "
        f"feeding the builder {c['feed_per_frame_mean']:.2f} ms per frame (the TSDF surface of changed blocks, shared with the "
        f"surface publisher, {c['surface_extraction_per_frame_mean']:.1f} ms per frame; mapping itself {c['mapping_per_frame_mean']:.1f} ms per frame)"
    )
    return lines
