"""What the query evaluation (query_eval.py) evaluates: a mapped scene with its ground-truth
objects, rooms and floors (EvalScene), built by query_eval (synthetic rooms) or query_building
(the two-storey building), and the match of map objects to ground truth."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.hierarchy.graph import SceneGraph
from ..core.objects import MapSnapshot

# the mask crop only: the context crops (box, large, huge, surroundings) hold other classes, and
# mixing them in would blur the oracle's one-hot, which is what the evaluation holds fixed
ORACLE_FUSION = {"w_mask": 1.0, "w_bbox": 0.0, "w_large": 0.0, "w_huge": 0.0, "w_sur": 0.0}


@dataclass
class GtObject:
    key: int  # building-level ground-truth id: 1000 x room index + instance id
    cls: str
    lo: np.ndarray  # axis-aligned box, building frame
    hi: np.ndarray
    room: int | None  # room id in the true graph (None: structure)
    floor: int  # floor id (0: none)

    @property
    def center(self) -> np.ndarray:
        return (self.lo + self.hi) / 2


@dataclass
class EvalScene:
    snapshot: MapSnapshot
    graph: SceneGraph
    gt: dict[int, GtObject]
    match: dict[int, dict[int, float]]  # map object id -> {gt key: IoU > 0}
    rooms: list[dict] = field(default_factory=list)  # what was built: per room (or building) facts
    graphs: dict[str, SceneGraph] = field(default_factory=dict)  # more graphs to evaluate (e.g. the built one)


# ----------------------------------------------------------------------------- mapping


def match_objects(mapper, frames) -> dict[int, dict[int, float]]:
    """{map object id: {ground-truth instance id: IoU > 0}} from the frames' instance ids."""
    from .evaluation import collect_ground_truth, intersection_matrix

    gt = collect_ground_truth(frames, mapper.cfg.fusion.voxel_size, stride=2)
    with mapper._lock:
        pred = mapper.map.instance_voxels()
    pids, gids = list(pred), list(gt.voxels)
    inter = intersection_matrix([pred[p] for p in pids], [gt.voxels[g] for g in gids])
    match: dict[int, dict[int, float]] = {}
    for a, p in enumerate(pids):
        for b in np.flatnonzero(inter[a] > 0):
            g = gids[b]
            iou = inter[a, b] / (len(pred[p]) + len(gt.voxels[g]) - inter[a, b])
            match.setdefault(int(p), {})[int(g)] = float(iou)
    return match
