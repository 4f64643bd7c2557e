"""Floor and room constraints: parsing, and the rule-based engine filtering by a hand-made
scene graph (two floors, three rooms)."""
from __future__ import annotations

import numpy as np
import pytest
from test_query_engine import BagOfWordsEncoder, emb, mug_at, on_floor, table

from core3d_ros.config import RetrievalConfig
from core3d_ros.core.hierarchy.graph import Floor, Room, SceneGraph
from core3d_ros.core.objects import MapSnapshot
from core3d_ros.core.retrieval import QueryEngine, QueryError, parse_query
from core3d_ros.core.retrieval.location import label_matches

# ------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, target, loc",
    [
        ("the mug in the kitchen", "mug", {"room_label": "kitchen"}),
        ("find the mug inside the living room", "mug", {"room_label": "living room"}),
        ("the chair in room 3", "chair", {"room_id": 3}),
        ("the chair in room number 12", "chair", {"room_id": 12}),
        ("the chair on the second floor", "chair", {"floor_rank": 2}),
        ("the lamp on the 3rd floor", "lamp", {"floor_rank": 3}),
        ("the lamp on the ground floor", "lamp", {"floor_rank": 1}),
        ("the lamp on the top floor", "lamp", {"floor_rank": -1}),
        ("the lamp on floor 2", "lamp", {"floor_id": 2}),
        ("the sink on level 4", "sink", {"floor_id": 4}),
        ("the chair in the room with the sofa", "chair", {"room_with": "sofa"}),
        ("the chair in the room that has the red sofa", "chair", {"room_with": "red sofa"}),
        ("where is the chair that is in the office", "chair", {"room_label": "office"}),
    ],
)
def test_each_constraint_form_is_parsed(text, target, loc):
    p = parse_query(text)
    assert p.target == target
    assert p.relations == []
    got = p.location.to_dict()
    for key in ("floor_rank", "floor_id", "room_id", "room_with"):
        assert got[key] == loc.get(key), key
    assert got["room_label"] == loc.get("room_label", "")
    assert p.to_dict()["location"] == got


def test_constraints_combine_with_relations_and_each_other():
    p = parse_query("the chair on the first floor, in the room with the sofa")
    assert p.target == "chair" and p.relations == []
    assert p.location.floor_rank == 1 and p.location.room_with.noun == "sofa"
    assert p.location.text == "on the first floor, in the room with the sofa"
    p = parse_query("the mug on the table in the kitchen")
    assert p.relations == [("on", "table")] and p.location.room_label == "kitchen"
    # the room-with phrase ends where a relation starts: the relation is the target's
    p = parse_query("the largest chair in the room with the sofa near the window")
    assert p.attributes == ["largest"] and p.relations == [("near", "window")]
    assert p.location.room_with.text == "sofa"
    p = parse_query("what is in the kitchen")  # any object of the room
    assert p.target == "" and p.location.room_label == "kitchen"


@pytest.mark.parametrize(
    "text, relations",
    [
        ("the mug on the floor", [("on", "floor")]),  # the floor surface, not a storey
        ("the mug in the box", [("in", "box")]),
        ("the book on top of the shelf", [("on", "shelf")]),
        ("the box in the room", [("in", "room")]),
    ],
)
def test_ordinary_relations_stay_relations(text, relations):
    p = parse_query(text)
    assert p.location is None and p.relations == relations


def test_contradictory_or_empty_constraints_are_query_errors():
    with pytest.raises(QueryError, match="two different rooms"):
        parse_query("the mug in room 2 in room 3")
    with pytest.raises(QueryError, match="names no object"):
        parse_query("the chair in the room with the")


def test_room_labels_match_plural_and_partial_words():
    assert label_matches("kitchen", "kitchen") and label_matches("Living Room", "living room")
    assert label_matches("kitchens", "kitchen") and not label_matches("kitchen", "bathroom")
    assert not label_matches("", "kitchen")


# ------------------------------------------------------------------------- filtering by a graph


def building() -> tuple[MapSnapshot, SceneGraph]:
    """Floor 1 (z 0): room 1 kitchen {table 1, mug 2 on it, chair 5}, room 2 living room {sofa 10,
    mug 3, chair 11 (larger)}; floor 2 (z 3): room 7 bedroom {chair 12, mug 13}. Object 20 is in
    no room."""
    objs = [
        table(1, embedding=emb("table"), label="table"),
        mug_at(2, 0.3, 0.1, 0.75, embedding=emb("mug"), label="mug"),
        on_floor(5, 0.0, -0.9, (0.45, 0.45, 0.9), embedding=emb("chair")),
        on_floor(10, 6.0, 2.0, (2.0, 0.9, 0.8), embedding=emb("sofa")),
        mug_at(3, 6.0, 0.0, 0.0, embedding=emb("mug"), label="mug"),
        on_floor(11, 5.0, 0.5, (0.6, 0.6, 1.0), embedding=emb("chair")),
        mug_at(13, 0.5, 0.5, 3.0, embedding=emb("mug")),
        on_floor(20, 9.0, 9.0, (0.5, 0.5, 0.5), embedding=emb("chair")),
    ]
    c12 = on_floor(12, 0.0, 0.0, (0.45, 0.45, 0.9), embedding=emb("chair"))
    c12.points = c12.points + np.float32([0, 0, 3.0])
    c12.box.center = c12.box.center + np.array([0, 0, 3.0])
    objs.append(c12)
    square = lambda x0, y0, z: np.array([[x0, y0, z], [x0 + 4, y0, z], [x0 + 4, y0 + 4, z], [x0, y0 + 4, z]], float)  # noqa: E731
    g = SceneGraph(
        floors=[Floor(2, 3.0, 6.0, room_ids=[7]), Floor(1, 0.0, 3.0, room_ids=[1, 2])],  # ids not in height order
        rooms=[
            Room(1, 1, square(-2, -2, 0), 16.0, np.array([0, 0, 0.0]), "kitchen", object_ids=[1, 2, 5]),
            Room(2, 1, square(4, -2, 0), 16.0, np.array([6, 0, 0.0]), "living room", object_ids=[10, 3, 11]),
            Room(7, 2, square(-2, -2, 3), 16.0, np.array([0, 0, 3.0]), "bedroom", object_ids=[12, 13, 999]),
        ],
    )
    return MapSnapshot(objects=objs, voxel_size=0.02, stamp=1.0, frames=10), g


@pytest.fixture()
def engine() -> QueryEngine:
    return QueryEngine(RetrievalConfig(top_k=10), BagOfWordsEncoder())


def ids(answer) -> list[int]:
    return [h.object_id for h in answer.results]


@pytest.mark.parametrize(
    "text, expected, rooms",
    [
        ("the mug in the kitchen", [2], [1]),
        ("the mug in the living room", [3], [2]),
        ("the chair on the second floor", [12], [7]),
        ("the chair on the top floor", [12], [7]),
        ("the chair on floor 2", [12], [7]),
        ("the chair in room 2", [11], [2]),
        ("the chair in the room with the sofa", [11], [2]),
        ("the mug on the first floor, in the room with the table", [2], [1]),
    ],
)
def test_constraints_keep_only_the_rooms_objects(engine, text, expected, rooms):
    snap, g = building()
    a = engine.answer(snap, text, graph=g)
    chosen = [i for i in ids(a) if a.results[ids(a).index(i)].score > 0.5 * a.results[0].score]
    assert chosen == expected
    assert a.room_ids == rooms
    assert "restricted to" in a.message


def test_a_floor_keeps_all_its_rooms_and_superlatives_rank_within_them(engine):
    snap, g = building()
    a = engine.answer(snap, "the largest chair on the first floor", graph=g)
    assert sorted(a.room_ids) == [1, 2]
    assert ids(a)[0] == 11  # larger than chair 5; chair 12 (floor 2) and 20 (no room) are out
    assert 12 not in ids(a) and 20 not in ids(a)
    a = engine.answer(snap, "what is in the kitchen", graph=g)
    assert sorted(ids(a)) == [1, 2, 5]  # no noun: every object of the room


@pytest.mark.parametrize(
    "text, why",
    [
        ("the mug in the bathroom", "no room labelled 'bathroom'"),
        ("the chair on the third floor", "2 floor(s), so there is no the third floor"),
        ("the chair on floor 5", "there is no floor 5"),
        ("the chair in room 9", "there is no room 9"),
        ("the mug on the second floor in the kitchen", "no room labelled 'kitchen' on the second floor"),
        ("the chair in room 7 on floor 1", "room 7 is on floor 2"),
    ],
)
def test_a_missing_floor_or_room_gives_no_results_and_says_what_is_missing(engine, text, why):
    snap, g = building()
    a = engine.answer(snap, text, graph=g)
    assert a.results == []
    assert why in a.message and "no results" in a.message


def test_without_a_graph_the_constraint_is_ignored_and_said_so(engine):
    snap, _ = building()
    a = engine.answer(snap, "the mug in the kitchen")
    assert {2, 3, 13} <= set(ids(a)[:3])
    assert "'in the kitchen' was ignored" in a.message


def test_stale_graph_ids_are_skipped_and_the_graph_is_indexed_once_per_version(engine):
    snap, g = building()
    a = engine.answer(snap, "the mug on the second floor", graph=g)  # room 7 lists object 999
    assert ids(a)[0] == 13
    engine.answer(snap, "the chair in the room with the sofa", graph=g)
    first = engine._graph_rooms[2]
    assert first[10] == 2
    engine.answer(snap, "the mug in the room with the table", graph=g)
    assert engine._graph_rooms[2] is first
    g.rooms[1].object_ids.remove(10)
    g.rooms[2].object_ids.append(10)  # the sofa moves to the bedroom
    g.version += 1
    a = engine.answer(snap, "the chair in the room with the sofa", graph=g)
    assert a.room_ids == [7] and ids(a)[0] == 12


def test_the_best_match_in_the_room_counts_even_when_better_ones_are_elsewhere(engine):
    """Kitchen chair 5 is a fair match for "chair" (cosine ~0.9), the exact chairs are in other
    rooms: it scores 1 in the kitchen. A loose match (~0.6) is still found, with a lower score;
    a room without anything like the noun (the bedroom has no table) gives no results."""
    snap, g = building()
    chair5 = next(o for o in snap.objects if o.id == 5)
    chair5.embedding = emb("chair", "chair", "chair", "wooden")
    a = engine.answer(snap, "the chair in the kitchen", graph=g)
    assert ids(a)[0] == 5 and a.results[0].score == pytest.approx(1.0) and a.results[0].similarity < 0.97
    chair5.embedding = emb("chair", "wooden", "old")
    engine._cache.clear()
    a = engine.answer(snap, "the chair in the kitchen", graph=g)
    assert ids(a)[0] == 5 and 1e-9 < a.results[0].score < 0.01 and a.results[0].similarity < 0.7
    a = engine.answer(snap, "the table in the bedroom", graph=g)
    assert a.results == [] and "no object matches" in a.message


def test_a_room_label_the_parser_does_not_know_is_read_from_the_graph(engine):
    snap, g = building()
    g.rooms[1].label = "games"  # not a room word: "in the games" parses as a relation
    assert parse_query("the chair in the games").relations == [("in", "games")]
    a = engine.answer(snap, "the chair in the games", graph=g)
    assert a.parsed.location.room_label == "games" and a.parsed.relations == [] and a.room_ids == [2]
    assert ids(a)[0] == 11
    a = engine.answer(snap, "the mug in the box", graph=g)  # no room is called that: a relation
    assert a.parsed.location is None and a.parsed.relations == [("in", "box")]
