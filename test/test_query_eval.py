"""core3d eval --queries on a small building (two mapped synthetic rooms on two floors): the
figures are computed from the map and the graph, so a wrong graph or a missing object lowers them."""
from __future__ import annotations

import dataclasses
import json

import pytest

from core3d_ros.cli import main
from core3d_ros.core.datasets.synthetic import COLORS
from core3d_ros.core.retrieval import QueryEngine
from core3d_ros.config import RetrievalConfig
from core3d_ros.tools.oracle_encoder import OracleEncoder
from core3d_ros.tools.query_eval import (
    accuracy,
    build_scene,
    recall,
    referring_expressions,
    room_object_queries,
    scrambled,
    summary_table,
)


@pytest.fixture(scope="module")
def scene():
    return build_scene(0, rooms=2, rooms_per_floor=1, frames=16)


@pytest.fixture(scope="module")
def engine():
    return QueryEngine(RetrievalConfig(vocabulary=list(COLORS)), OracleEncoder(list(COLORS)))


def test_building_and_queries_come_from_the_ground_truth(scene):
    assert [r.floor_id for r in scene.graph.rooms] == [1, 2] and [r.label for r in scene.graph.rooms] == ["kitchen", "kitchen"]
    qs = room_object_queries(scene)
    chair = next(q for q in qs if q["text"] == "the chair in the kitchen on the second floor")
    assert chair["kind"] == "floor-room-object" and [scene.gt[t].room for t in chair["targets"]] == [2]
    both = next(q for q in qs if q["text"] == "the chair in the kitchen")
    assert sorted(scene.gt[t].room for t in both["targets"]) == [1, 2]
    # the mug stands on the table in one room only: "the mug on the table" is unambiguous
    on = [e for e in referring_expressions(scene) if e["text"] == "the mug on the table"]
    assert len(on) == 1 and on[0]["distractors"] == 1


def test_recall_depends_on_the_graph(scene, engine):
    qs = [q for q in room_object_queries(scene) if q["kind"] == "floor-room-object"]
    good = recall(scene, engine, qs, scene.graph)
    flat = recall(scene, engine, qs, None)
    wrong = recall(scene, engine, qs, scrambled(scene.graph))  # each room given the other's objects
    assert good["queries"] == len(qs) > 5
    assert good["recall@1"] >= 0.8
    assert flat["recall@1"] < good["recall@1"] - 0.2  # same class in both rooms: a coin toss without the graph
    assert wrong["recall@1"] < 0.2 < good["recall@1"]
    assert flat["recall@5"] >= good["recall@1"]  # the target is among the top 5 even without the graph


def test_relation_accuracy_is_scored_against_the_mapped_target(scene, engine):
    exprs = [e for e in referring_expressions(scene) if e["mapped"]]
    assert exprs and {"closest", "farthest"} <= {e["relation"] for e in exprs}
    acc = accuracy(scene, engine, exprs)
    assert acc["all"]["expressions"] == len(exprs) and acc["all"]["accuracy"] >= 0.9
    # moving every target's map object far away breaks the relations: accuracy drops
    targets = {e["target"] for e in exprs}
    moved = []
    for o in scene.snapshot.objects:
        if any(g in targets and v >= 0.25 for g, v in scene.match.get(o.id, {}).items()):
            o = dataclasses.replace(o, points=o.points + 50.0, box=dataclasses.replace(o.box, center=o.box.center + 50.0))
        moved.append(o)
    bad = dataclasses.replace(scene, snapshot=dataclasses.replace(scene.snapshot, objects=moved, _by_id=None))
    assert accuracy(bad, engine, exprs)["all"]["accuracy"] < acc["all"]["accuracy"] - 0.3


def test_cli_eval_queries_writes_json_and_a_table(tmp_path, capsys, monkeypatch):
    import core3d_ros.tools.query_eval as qe

    calls = {}

    def fake_build(seed, rooms, frames, base=None, progress=None, **kw):
        calls["args"] = (seed, rooms, frames)
        return build_scene(seed, rooms=2, rooms_per_floor=1, frames=8)

    monkeypatch.setattr(qe, "build_scene", fake_build)
    out = tmp_path / "q.json"
    assert main(["eval", "--queries", "--query-scenes", "rooms", "--seed", "3", "--frames", "8", "--query-rooms", "2",
                 "--context-objects", "100", "--json", str(out)]) == 0
    assert calls["args"] == (3, 2, 8)
    report = json.loads(out.read_text())
    assert list(report["scenes"]) == ["rooms"]
    mean = report["scenes"]["rooms"]["mean"]
    assert set(mean) == {"room-object", "floor-room-object", "referring"}
    assert set(mean["room-object"]) == {"with_hierarchy", "without_hierarchy"}
    assert report["llm_context"]["per_objects"]["100"]["max_tokens_per_request"] <= report["llm_context"]["budget"]
    assert "| rooms | floor-room-object | true |" in capsys.readouterr().out
    assert summary_table(report).startswith("| scene | queries |")


def test_the_building_with_its_built_graph(engine):
    """The synthetic two-storey building in one walk, with the HierarchyBuilder's graph beside
    the true one: the built graph serves room queries as the true one does, a scrambled one not."""
    from core3d_ros.tools.query_building import build_building_scene

    b = build_building_scene(0, frames_per_room=12)
    built = b.graphs["built"]
    assert len(built.floors) == 2 and {r.label for r in built.rooms} <= {r.label for r in b.graph.rooms}
    qs = [q for q in room_object_queries(b) if q["kind"] == "room-object"]
    true = recall(b, engine, qs, b.graph)
    got = recall(b, engine, qs, built)
    flat = recall(b, engine, qs, None)
    assert got["recall@1"] >= true["recall@1"] - 0.1 and got["recall@1"] > flat["recall@1"] + 0.2
    assert recall(b, engine, qs, scrambled(built))["recall@1"] < got["recall@1"] - 0.3
