"""The synthetic two-storey building (core/datasets/building.py) as a scene for ``core3d eval
--queries`` (tools/query_eval.py).

The building is mapped in one walk with the oracle segmenter and the oracle encoder, and the
HierarchyBuilder (core/hierarchy/builder.py) is fed as in ``core3d eval --rooms``: every
camera centre, the changed TSDF blocks every ``feed_every`` frames, an update when due and a
forced one at the end. Two scene graphs are evaluated:

- ``true``: the building's rooms (ids, floors, kinds as labels), each holding the map objects
  whose best-overlapping ground-truth object stands in it;
- ``built``: the builder's graph, each built room labelled with the kind of the true room
  holding its centroid (oracle room names, as the oracle encoder gives object names: without a
  room classifier the builder only numbers rooms), so that "the mug in the kitchen" can be
  asked of it; floors and object membership are the builder's own.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..config import MapperConfig, with_overrides
from ..core.hierarchy.graph import Floor, Room, SceneGraph
from .query_scenes import ORACLE_FUSION, EvalScene, GtObject, match_objects


def build_building_scene(
    seed: int = 0,
    frames_per_room: int = 24,
    base: MapperConfig | None = None,
    feed_every: int = 10,
    progress: Callable[[str], None] | None = None,
) -> EvalScene:
    from ..core.datasets.building import WALL_HEIGHT, make_building
    from ..core.datasets.synthetic import COLORS
    from ..core.hierarchy.builder import HierarchyBuilder
    from ..core.mapper import Mapper
    from .oracle_encoder import OracleEncoder, class_coded

    classes = list(COLORS)
    cfg = with_overrides(base or MapperConfig(), segmenter={"name": "oracle"}, embed=ORACLE_FUSION,
                         retrieval={"vocabulary": classes, "up_axis": [0.0, 0.0, 1.0]})
    scene = make_building(seed, frames_per_room=frames_per_room, depth=cfg.depth)
    mapper = Mapper(cfg, encoder=OracleEncoder(classes))
    builder = HierarchyBuilder(cfg.hierarchy, cfg.fusion.voxel_size, up=(0.0, 0.0, 1.0), up_source="dataset")
    n = len(scene)
    frames = []
    for i in range(n):
        f = scene[i]
        frames.append(dataclasses.replace(f, rgb=None))  # kept for the ground-truth voxels
        mapper.process(class_coded(f, classes))
        builder.add_camera(f.pose[:3, 3])
        if (i + 1) % feed_every == 0 or i + 1 == n:
            blocks = mapper.geometry.take_dirty()
            points, _, block_of = mapper.geometry.surface(blocks)
            builder.add_surface(blocks, points, block_of)
        if builder.due(f.stamp):
            builder.update(mapper.snapshot().objects, now=f.stamp)
        if progress and (i + 1) % 50 == 0:
            progress(f"building {seed}: frame {i + 1}/{n}")
    snap = mapper.snapshot()
    builder.update(snap.objects, now=scene.stamp(n - 1), force=True)
    match = match_objects(mapper, frames)

    gt: dict[int, GtObject] = {}
    for so in scene.instances:
        rid = scene.object_room.get(so.id)
        fl = scene.room(rid).floor + 1 if rid is not None else 0
        gt[so.id] = GtObject(so.id, so.class_name, so.bbox_min.copy(), so.bbox_max.copy(), rid, fl)
    # the true graph: each map object in the true room of its best-overlapping true object
    members: dict[int, list[int]] = {}
    for oid, m in match.items():
        if m:
            g = max(m, key=m.get)
            if gt[g].room is not None:
                members.setdefault(gt[g].room, []).append(oid)
    floors = {k + 1: Floor(k + 1, h, h + WALL_HEIGHT) for k, h in enumerate(scene.floor_heights)}
    rooms = []
    for tr in scene.rooms:
        (x0, y0), (x1, y1) = tr.lo, tr.hi
        outline = np.array([[x0, y0, tr.height], [x1, y0, tr.height], [x1, y1, tr.height], [x0, y1, tr.height]])
        c = np.array([(x0 + x1) / 2, (y0 + y1) / 2, tr.height])
        rooms.append(Room(tr.id, tr.floor + 1, outline, tr.area, c, tr.kind, object_ids=sorted(members.get(tr.id, []))))
        floors[tr.floor + 1].room_ids.append(tr.id)
    true_graph = SceneGraph(floors=list(floors.values()), rooms=rooms, up_source="dataset", version=1)
    built = builder.graph
    named = []
    for r in built.rooms:
        t = scene.true_room_of(np.asarray(r.centroid, float) + np.array([0.0, 0.0, 0.1]))
        named.append(dataclasses.replace(r, label=scene.room(t).kind if t is not None else r.label))
    built = dataclasses.replace(built, rooms=named, version=built.version + 1)
    info = [{"seed": seed, "frames": n, "rooms_true": len(scene.rooms), "rooms_built": len(built.rooms),
             "floors_built": len(built.floors), "objects_mapped": len(snap.objects), "builder_note": built.note}]
    return EvalScene(snap, true_graph, gt, match, info, graphs={"built": built})
