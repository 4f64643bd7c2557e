"""``core3d eval --queries``: room-aware and relational query accuracy on synthetic scenes.

The scene is a building composed of mapped synthetic rooms (core/datasets/synthetic.py): room j
of building seed s is the room of seed 10 s + j, mapped on its own with the oracle segmenter
and the oracle encoder (tools/oracle_encoder.py: perfect nouns, so the figures measure
retrieval, not a vision-language model; the mask crop alone is embedded, ``ORACLE_FUSION``), then placed on floor j // rooms_per_floor at x offset
(j % rooms_per_floor) x 5.6 m and height 3 m per floor. Rooms are labelled by their place on
the floor (kitchen, office, bedroom, living room), so labels repeat on every floor. The scene
graph is the true one (each room holds the objects mapped in it). To give relations
distractors, the small objects that stand on furniture (mug, book, vase) stay there in one room
of the building only and are moved to the floor beside it elsewhere.

Queries, generated from the ground truth:

- room-object ("the mug in the office") and floor-room-object ("the mug in the office on the
  second floor"), HOV-SG / KeySG style; Recall@1 and @5 answered with the scene graph and
  without it (the constraint ignored). A hit is a result whose voxels overlap a target's
  ground-truth voxels with IoU >= 0.25.
- Sr3D-style referring expressions over the whole building: "the T closest to the A", "the T
  farthest from the A", "the T on the A", "the T between the A and the B", "the T to the
  left / right of the A" (left / right from the engine's default observer on the -y side
  looking along +y). An expression is kept only when it is unambiguous in the ground truth:
  the anchors are the only ones of their class, the target class has at least two instances
  (distractors), and the relation picks one of them by a margin (see ``referring_expressions``).
  Accuracy: the top result has IoU >= 0.25 with the target.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable

import numpy as np

from ..config import MapperConfig, with_overrides
from ..core.hierarchy.graph import Floor, Room, SceneGraph
from ..core.objects import MapSnapshot, ObjectInfo
from ..core.retrieval import QueryEngine
from .query_scenes import ORACLE_FUSION, EvalScene, GtObject, match_objects

ROOM_LABELS = ("kitchen", "office", "bedroom", "living room")
ORDINALS = ("first", "second", "third", "fourth", "fifth")
STRUCTURE = ("floor", "wall", "ceiling")
ROOM_PITCH = 5.6  # metres between room centres along x (rooms are at most 5.5 m wide, walls included)
STOREY = 3.0  # metres between floors
MOVABLE = {"mug": (0.0, -0.6), "book": (-0.6, 0.0), "vase": (-0.55, 0.0)}  # xy step off the support
IOU_HIT = 0.25


def _map_room(seed: int, move: dict, frames: int, cfg: MapperConfig, classes: list[str]):
    """(mapped objects, {map id: {instance id: IoU}}, scene) of one synthetic room."""
    from ..core.datasets import make_scene
    from ..core.mapper import Mapper
    from .oracle_encoder import OracleEncoder, class_coded

    scene = make_scene(seed=seed, num_frames=frames, move=move)
    mapper = Mapper(cfg, encoder=OracleEncoder(classes))
    rendered = []
    for i in range(len(scene)):
        f = scene[i]
        rendered.append(dataclasses.replace(f, rgb=None))  # kept for the ground-truth voxels
        mapper.process(class_coded(f, classes))
    return mapper.snapshot().objects, match_objects(mapper, rendered), scene


def _moved(obj_cls: str, scene_objects) -> tuple[float, float, float]:
    o = next(x for x in scene_objects if x.class_name == obj_cls)
    dx, dy = MOVABLE[obj_cls]
    return (dx, dy, -float(o.bbox_min[2]))  # down onto the floor, beside its support


def build_scene(
    seed: int = 0,
    rooms: int = 4,
    rooms_per_floor: int = 2,
    frames: int = 60,
    base: MapperConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalScene:
    """The building of ``seed`` (see the module doc), mapped room by room."""
    from ..core.datasets import make_scene
    from ..core.datasets.synthetic import COLORS

    classes = list(COLORS)
    cfg = with_overrides(base or MapperConfig(), segmenter={"name": "oracle"}, retrieval={"vocabulary": classes},
                         embed=ORACLE_FUSION)
    rng = np.random.default_rng(seed)
    layouts = [make_scene(seed=10 * seed + j, num_frames=1) for j in range(rooms)]
    keep_on: dict[str, int] = {}  # movable class -> the one room where it stays on its support
    for c in MOVABLE:
        having = [j for j, s in enumerate(layouts) if any(o.class_name == c for o in s.objects)]
        if having:
            keep_on[c] = int(rng.choice(having))
    objects: list[ObjectInfo] = []
    gt: dict[int, GtObject] = {}
    match: dict[int, dict[int, float]] = {}
    floors: dict[int, Floor] = {}
    graph_rooms: list[Room] = []
    info = []
    for j, lay in enumerate(layouts):
        s = 10 * seed + j
        present = {o.class_name for o in lay.objects}
        move = {c: _moved(c, lay.objects) for c in MOVABLE if c in present and keep_on.get(c, j) != j}
        t0 = time.perf_counter()
        objs, m, scene = _map_room(s, move, frames, cfg, classes)
        fl, pos = j // rooms_per_floor + 1, j % rooms_per_floor
        off = np.array([pos * ROOM_PITCH, 0.0, (fl - 1) * STOREY])
        rid = j + 1
        ids = []
        for o in objs:
            nid = 1000 * j + int(o.id)
            box = dataclasses.replace(o.box, center=np.asarray(o.box.center) + off)
            objects.append(dataclasses.replace(o, id=nid, points=(o.points + off).astype(np.float32), box=box))
            match[nid] = {1000 * j + g: v for g, v in m.get(int(o.id), {}).items()}
            ids.append(nid)
        for so in scene.instances:
            gt[1000 * j + so.id] = GtObject(1000 * j + so.id, so.class_name, so.bbox_min + off, so.bbox_max + off, rid, fl)
        W, D = scene.room_size
        corners = np.array([[-W / 2, -D / 2, 0], [W / 2, -D / 2, 0], [W / 2, D / 2, 0], [-W / 2, D / 2, 0]]) + off
        graph_rooms.append(Room(rid, fl, corners, W * D, off.copy(), ROOM_LABELS[pos % len(ROOM_LABELS)], object_ids=ids))
        f = floors.setdefault(fl, Floor(fl, off[2], off[2] + 2.6))
        f.room_ids.append(rid)
        info.append({"room": rid, "seed": s, "moved_off_support": sorted(move), "objects_mapped": len(objs),
                     "map_seconds": round(time.perf_counter() - t0, 1)})
        if progress:
            progress(f"seed {seed}: room {rid}/{rooms} mapped ({len(objs)} objects)")
    graph = SceneGraph(floors=sorted(floors.values(), key=lambda f: f.id), rooms=graph_rooms, up_source="dataset", version=1)
    snap = MapSnapshot(objects=objects, voxel_size=cfg.fusion.voxel_size, stamp=1.0, frames=rooms * frames)
    return EvalScene(snap, graph, gt, match, info)


# ----------------------------------------------------------------------------- queries


def room_object_queries(scene: EvalScene) -> list[dict]:
    """room-object and floor-room-object queries with their target ground-truth keys."""
    rooms = {r.id: r for r in scene.graph.rooms}
    out: dict[str, dict] = {}
    for g in scene.gt.values():
        if g.cls in STRUCTURE or g.room not in rooms:
            continue
        label = rooms[g.room].label
        same_label = {r.id for r in rooms.values() if r.label == label}
        t1 = f"the {g.cls} in the {label}"
        out.setdefault(t1, {"text": t1, "kind": "room-object", "targets": sorted(
            x.key for x in scene.gt.values() if x.cls == g.cls and x.room in same_label)})
        t2 = f"the {g.cls} in the {label} on the {ORDINALS[g.floor - 1]} floor"
        out.setdefault(t2, {"text": t2, "kind": "floor-room-object", "targets": sorted(
            x.key for x in scene.gt.values() if x.cls == g.cls and x.room == g.room)})
    return list(out.values())


def _gap(a: GtObject, b: GtObject) -> float:
    d = np.maximum(np.maximum(a.lo - b.hi, b.lo - a.hi), 0.0)
    return float(np.linalg.norm(d))


def _on(t: GtObject, a: GtObject) -> bool:
    c = t.center
    return abs(t.lo[2] - a.hi[2]) < 0.05 and bool(np.all(c[:2] >= a.lo[:2]) and np.all(c[:2] <= a.hi[:2]))


def _between(t: GtObject, a: GtObject, b: GtObject) -> tuple[float, float]:
    """(position along a->b in [0, 1] inside, distance off the line over the tolerance)."""
    p, q, x = a.center[:2], b.center[:2], t.center[:2]
    seg = q - p
    L = float(np.linalg.norm(seg))
    s = float((x - p) @ seg) / max(L * L, 1e-9)
    perp = float(np.linalg.norm(x - (p + s * seg)))
    return s, perp / max(0.3, 0.25 * L)


def _side(t: GtObject, a: GtObject) -> tuple[float, float]:
    """(lateral offset along +x, horizontal distance) of t from a, default observer (-y, looking +y)."""
    d = t.center[:2] - a.center[:2]
    return float(d[0]), float(np.linalg.norm(d))


def referring_expressions(scene: EvalScene, margin: float = 0.3) -> list[dict]:
    """Sr3D-style expressions that the ground truth makes unambiguous: the target class has at
    least two instances (distractors), and the relation, taken over every instance of the anchor
    class (the nearest one for closest / farthest), holds for exactly one of them while every
    other clearly fails (closest / farthest: by ``margin`` metres of box gap). ``mapped``: the
    target and every instance of the anchor classes were mapped (a map object with IoU >= 0.25);
    only those expressions are scored, as the others measure the mapping, not the reasoning."""
    seen = _seen_classes(scene)
    mapped = _mapped(scene)
    by_cls: dict[str, list[GtObject]] = {}
    for g in scene.gt.values():
        if g.cls not in STRUCTURE and g.cls in seen:
            by_cls.setdefault(g.cls, []).append(g)
    out: list[dict] = []

    def add(rel: str, text: str, target: GtObject, n: int, anchors) -> None:
        ok = target.key in mapped and all(a.key in mapped for a in anchors)
        out.append({"text": text, "relation": rel, "target": target.key, "distractors": n - 1, "mapped": ok})

    def one(ts, holds: list[bool], fails: list[bool]) -> GtObject | None:
        """The one target the relation holds for, when every other clearly fails."""
        sat = [k for k, h in enumerate(holds) if h]
        return ts[sat[0]] if len(sat) == 1 and all(k == sat[0] or f for k, f in enumerate(fails)) else None

    def left(t, a, sign):  # lateral offset along +x (default observer), and horizontal distance
        dx, dist = _side(t, a)
        return sign * dx >= 0.2 and dist <= 1.8 and sign * dx >= 0.7 * dist

    def not_left(t, a, sign):
        dx, dist = _side(t, a)
        return sign * dx <= 0.0 or dist >= 2.5

    classes = sorted(by_cls)
    for tc in classes:
        ts = by_cls[tc]
        if len(ts) < 2:
            continue
        for ac in classes:
            if ac == tc:
                continue
            As = by_cls[ac]
            d = sorted((min(_gap(t, a) for a in As), t.key) for t in ts)
            if d[1][0] - d[0][0] >= margin:
                add("closest", f"the {tc} closest to the {ac}", scene.gt[d[0][1]], len(ts), As)
            if d[-1][0] - d[-2][0] >= margin:
                add("farthest", f"the {tc} farthest from the {ac}", scene.gt[d[-1][1]], len(ts), As)
            for rel, sign in (("left", -1), ("right", 1)):
                t = one(ts, [any(left(t, a, sign) for a in As) for t in ts], [all(not_left(t, a, sign) for a in As) for t in ts])
                if t is not None:
                    add(rel, f"the {tc} to the {rel} of the {ac}", t, len(ts), As)
            on = [any(_on(t, a) for a in As) for t in ts]
            t = one(ts, on, [not x for x in on])
            if t is not None:
                add("on", f"the {tc} on the {ac}", t, len(ts), As)
            for bc in classes:
                if bc <= ac or bc == tc:
                    continue
                pairs = [(a, b) for a in As for b in by_cls[bc]]  # any pair, as the engine reads it
                fits = [[_between(t, a, b) for a, b in pairs] for t in ts]
                t = one(ts, [any(0.15 <= s <= 0.85 and r <= 1.0 for s, r in f) for f in fits],
                        [all(s < -0.1 or s > 1.1 or r > 2.0 for s, r in f) for f in fits])
                if t is not None:
                    add("between", f"the {tc} between the {ac} and the {bc}", t, len(ts), As + by_cls[bc])
    return out


def _mapped(scene: EvalScene) -> set[int]:
    """Ground-truth keys that some map object overlaps with IoU >= 0.25."""
    return {g for m in scene.match.values() for g, iou in m.items() if iou >= IOU_HIT}


def _seen_classes(scene: EvalScene) -> set[str]:
    """Classes with at least one mapped object (a class never mapped cannot be an anchor)."""
    return {scene.gt[g].cls for g in _mapped(scene)}


# ----------------------------------------------------------------------------- scoring


def _hit(scene: EvalScene, object_id: int, targets: Iterable[int]) -> bool:
    m = scene.match.get(object_id, {})
    return any(m.get(t, 0.0) >= IOU_HIT for t in targets)


def recall(scene: EvalScene, engine: QueryEngine, queries: list[dict], graph: SceneGraph | None, ks=(1, 5)) -> dict:
    """Recall@k over ``queries`` (answered with ``graph``, or without a graph when None)."""
    hits = {k: 0 for k in ks}
    for q in queries:
        a = engine.answer(scene.snapshot, q["text"], top_k=max(ks), graph=graph)
        ids = [h.object_id for h in a.results]
        for k in ks:
            hits[k] += any(_hit(scene, i, q["targets"]) for i in ids[:k])
    n = max(len(queries), 1)
    return {f"recall@{k}": hits[k] / n for k in ks} | {"queries": len(queries)}


def accuracy(scene: EvalScene, engine: QueryEngine, exprs: list[dict]) -> dict:
    """Top-1 accuracy at IoU 0.25 per relation type, and over all expressions."""
    per: dict[str, list[int]] = {}
    failures = []
    unmapped = sum(1 for e in exprs if not e["mapped"])
    for e in (e for e in exprs if e["mapped"]):
        a = engine.answer(scene.snapshot, e["text"], top_k=1)
        ok = bool(a.results) and _hit(scene, a.results[0].object_id, [e["target"]])
        per.setdefault(e["relation"], []).append(int(ok))
        if not ok and len(failures) < 20:
            failures.append(e["text"])
    out = {r: {"accuracy": float(np.mean(v)), "expressions": len(v)} for r, v in sorted(per.items())}
    allv = [x for v in per.values() for x in v]
    out["all"] = {"accuracy": float(np.mean(allv)) if allv else 0.0, "expressions": len(allv)}
    out["failures"] = failures
    out["not_mapped"] = unmapped  # generated, but the target or an anchor was not mapped: not scored
    return out


def scrambled(graph: SceneGraph, shift: int = 1) -> SceneGraph:
    """The same graph with each room's objects handed to the room ``shift`` places on (a wrong
    assignment, for checking that the figures depend on the hierarchy)."""
    rooms = [dataclasses.replace(r, object_ids=list(graph.rooms[(k + shift) % len(graph.rooms)].object_ids))
             for k, r in enumerate(graph.rooms)]
    return dataclasses.replace(graph, rooms=rooms, version=graph.version + 1)


def evaluate_scene(scene: EvalScene, cfg: MapperConfig | None = None) -> dict:
    from ..core.datasets.synthetic import COLORS
    from .oracle_encoder import OracleEncoder

    classes = list(COLORS)
    base = cfg or MapperConfig()
    engine = QueryEngine(with_overrides(base, retrieval={"vocabulary": classes}).retrieval, OracleEncoder(classes))
    rq = room_object_queries(scene)
    out: dict = {"objects": len(scene.snapshot.objects), "rooms": len(scene.graph.rooms), "floors": len(scene.graph.floors)}
    for kind in ("room-object", "floor-room-object"):
        qs = [q for q in rq if q["kind"] == kind]
        out[kind] = {"with_hierarchy": recall(scene, engine, qs, scene.graph), "without_hierarchy": recall(scene, engine, qs, None)}
        for name, g in scene.graphs.items():
            out[kind][f"with_{name}_hierarchy"] = recall(scene, engine, qs, g)
    out["referring"] = accuracy(scene, engine, referring_expressions(scene))
    return out


def evaluate_queries(
    base: MapperConfig | None = None,
    seeds: Iterable[int] = (0,),
    frames: int = 60,
    rooms: int = 4,
    context_objects: Iterable[int] = (100, 10000),
    progress: Callable[[str], None] | None = None,
    scenes: Iterable[str] = ("rooms", "building"),
    frames_per_room: int = 24,
) -> dict:
    """The report of ``core3d eval --queries`` (see the module doc) per scene kind: ``rooms``
    (the building of ``rooms`` mapped synthetic rooms, ``frames`` each) and ``building`` (the
    synthetic two-storey building, ``frames_per_room``, tools/query_building.py), per seed and
    the mean; and the LLM context per query at ``context_objects`` objects (``context_sizes``)."""
    seeds = list(seeds)
    report: dict = {"seeds": seeds, "encoder": "oracle (evaluation only)", "segmenter": "oracle", "iou_hit": IOU_HIT,
                    "scenes": {}}
    for kind in scenes:
        if kind not in ("rooms", "building"):
            raise ValueError(f"unknown query-evaluation scene {kind!r} (rooms | building)")
        per_seed = {}
        for s in seeds:
            if kind == "rooms":
                scene = build_scene(s, rooms=rooms, frames=frames, base=base, progress=progress)
            else:
                from .query_building import build_building_scene

                scene = build_building_scene(s, frames_per_room, base=base, progress=progress)
            r = evaluate_scene(scene, base)
            r["scene"] = scene.rooms
            per_seed[s] = r
        report["scenes"][kind] = {"per_seed": per_seed, "mean": _mean([per_seed[s] for s in seeds]),
                                  **({"rooms": rooms, "frames_per_room": frames} if kind == "rooms" else {"frames_per_room": frames_per_room})}
    if context_objects:
        report["llm_context"] = context_sizes(context_objects, cfg=base.retrieval if base else None)
    return report


def _mean(results: list[dict]) -> dict:
    out: dict = {}
    for kind in ("room-object", "floor-room-object"):
        out[kind] = {h: {m: float(np.mean([r[kind][h][m] for r in results])) for m in ("recall@1", "recall@5")}
                     | {"queries": int(sum(r[kind][h]["queries"] for r in results))} for h in results[0][kind]}
    rels = sorted({k for r in results for k in r["referring"] if k not in ("failures", "not_mapped")})
    out["referring"] = {}
    for rel in rels:
        n = sum(r["referring"].get(rel, {}).get("expressions", 0) for r in results)
        hit = sum(r["referring"].get(rel, {}).get("accuracy", 0.0) * r["referring"].get(rel, {}).get("expressions", 0) for r in results)
        out["referring"][rel] = {"accuracy": hit / n if n else 0.0, "expressions": n}
    return out


def summary_table(report: dict) -> str:
    """Markdown tables of the mean figures."""
    lines = ["| scene | queries | scene graph | queries asked | Recall@1 | Recall@5 |", "|---|---|---|---|---|---|"]
    for name, sc in report["scenes"].items():
        for kind in ("room-object", "floor-room-object"):
            for h, v in sc["mean"][kind].items():
                graph = h.removeprefix("with_").removesuffix("_hierarchy").replace("hierarchy", "true") if h != "without_hierarchy" else "none"
                lines.append(f"| {name} | {kind} | {graph} | {v['queries']} | {v['recall@1']:.3f} | {v['recall@5']:.3f} |")
    lines += ["", "| scene | relation | expressions | A@0.25 |", "|---|---|---|---|"]
    for name, sc in report["scenes"].items():
        for rel, v in sc["mean"]["referring"].items():
            lines.append(f"| {name} | {rel} | {v['expressions']} | {v['accuracy']:.3f} |")
    ctx = report.get("llm_context")
    if ctx:
        lines += ["", f"| objects | rooms | max tokens per model request (budget {ctx['budget']}) |", "|---|---|---|"]
        for n, v in ctx["per_objects"].items():
            lines.append(f"| {n} | {v['rooms']} | {v['max_tokens_per_request']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- LLM context size

CONTEXT_QUERIES = (
    "the chair in the kitchen on the second floor",
    "the mug on the table in the room with the window",
    "the chair closest to the table",
    "the largest box in room 3",
)
_SUMMARY = ("A {label} with a table, chairs, a window and shelves along the walls; "
            "daylight from the east, a door to the corridor on the west side, tidy.")


def synthetic_building(n: int, per_room: int = 25, seed: int = 0, dim: int = 64, encoder=None) -> tuple[MapSnapshot, SceneGraph]:
    """A random map of ``n`` objects (tools/bench/query.random_snapshot) cut into 5 m x 5 m rooms
    of about ``per_room`` objects, half of them on floor 1 and half on floor 2, labelled from
    ROOM_LABELS, each with a summary of about 150 characters (a scene graph that grows with
    the map, for the context-size measurement)."""
    from .bench.query import FakeTextEncoder, random_snapshot

    snap = random_snapshot(n, dim=dim, seed=seed, encoder=encoder or FakeTextEncoder(dim), views=True)
    side = max(np.sqrt(n), 2.0)
    cells = max(int(round(side / np.sqrt(per_room))), 1)
    step = side / cells
    members: dict[int, list[int]] = {}
    for o in snap.objects:
        cx = min(int(o.box.center[0] // step), cells - 1)
        cy = min(int(o.box.center[1] // step), cells - 1)
        members.setdefault(cy * cells + cx + 1, []).append(int(o.id))
    floors = {1: Floor(1, 0.0, 3.0), 2: Floor(2, 3.0, 6.0)}
    rooms = []
    half = (len(members) + 1) // 2
    for k, cell in enumerate(sorted(members)):
        fl, rid = 1 if k < half else 2, k + 1
        label = ROOM_LABELS[(k if k < half else k - half) % len(ROOM_LABELS)]  # every label on every floor
        cx, cy = (cell - 1) % cells, (cell - 1) // cells
        c = np.array([(cx + 0.5) * step, (cy + 0.5) * step, 0.0])
        outline = c + np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]) * step / 2
        rooms.append(Room(rid, fl, outline, step * step, c, label, summary=_SUMMARY.format(label=label), object_ids=members[cell]))
        floors[fl].room_ids.append(rid)
    return snap, SceneGraph(floors=[floors[1], floors[2]], rooms=rooms, version=1)


def context_sizes(objects: Iterable[int] = (100, 10000), queries: Iterable[str] = CONTEXT_QUERIES, cfg=None) -> dict:
    """Per map size: what the model steps sent per query to a local chat server (tools/
    chat_server.py, auto replies), all steps on, with the scene graph: estimated text tokens
    per step request (system prompt included) and images per request. ``budget`` is
    retrieval.llm.context_tokens; every figure must stay at or below it."""
    from ..config import LlmConfig, RetrievalConfig
    from ..core.retrieval.llm import LlmRetriever
    from ..core.retrieval.llm.hierarchy import estimate_tokens, text_of
    from .bench.query import FakeTextEncoder
    from .chat_server import ChatServer, image_urls

    out: dict = {"queries": list(queries), "per_objects": {}}
    with ChatServer() as srv:
        for n in objects:
            rcfg = cfg or RetrievalConfig()
            rcfg = dataclasses.replace(rcfg, llm=dataclasses.replace(rcfg.llm if cfg else LlmConfig(), enabled=True, base_url=srv.url, model="local"))
            enc = FakeTextEncoder(64)
            snap, graph = synthetic_building(n, encoder=enc)
            retr = LlmRetriever(QueryEngine(rcfg, enc), rcfg.llm)
            per_query, steps_max = [], {}
            for q in queries:
                srv.clear()
                a = retr.answer(snap, q, graph=graph)
                sent = {}
                for r in list(srv.requests):
                    msgs = r["body"]["messages"]
                    tok = sum(estimate_tokens(text_of(m["content"])) for m in msgs)
                    sent[r["step"]] = {"tokens": tok, "images": len(image_urls(r["body"]))}
                    steps_max[r["step"]] = max(steps_max.get(r["step"], 0), tok)
                per_query.append({"query": q, "steps": sent, "max_tokens": max((v["tokens"] for v in sent.values()), default=0),
                                  "stages": [f"{s.name}:{s.status}" for s in a.stages]})
            retr.close()
            out["per_objects"][n] = {"rooms": len(graph.rooms), "max_tokens_per_request": max(p["max_tokens"] for p in per_query),
                                     "max_tokens_per_step": steps_max, "per_query": per_query}
        out["budget"] = int(rcfg.llm.context_tokens)
    return out
