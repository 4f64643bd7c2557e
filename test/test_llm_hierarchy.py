"""Hierarchical retrieval in the model steps: floor / room constraints through the LLM path, the
decide step's room context, and the token budget at 10,000 objects (local chat server)."""
from __future__ import annotations

import json

import pytest
from test_room_queries import BagOfWordsEncoder, building

from core3d_ros.config import ConfigError, LlmConfig, RetrievalConfig, from_dict
from core3d_ros.core.retrieval.engine import QueryEngine
from core3d_ros.core.retrieval.llm import LlmRetriever, parsed_from_reply
from core3d_ros.core.retrieval.llm.hierarchy import estimate_tokens, fit_budget, text_of
from core3d_ros.tools.chat_server import Behaviour, ChatServer, user_text
from core3d_ros.tools.query_eval import context_sizes, synthetic_building


@pytest.fixture(scope="module")
def server():
    with ChatServer() as srv:
        yield srv


@pytest.fixture
def srv(server):
    server.script()
    server.clear()
    yield server
    server.script()


def retriever(srv, **llm) -> LlmRetriever:
    cfg = RetrievalConfig(top_k=5)
    cfg.llm = LlmConfig(enabled=True, base_url=srv.url, model="m", call_timeout=5.0, **llm)
    return LlmRetriever(QueryEngine(cfg, BagOfWordsEncoder()), cfg.llm)


def stage(answer, name):
    return next(s for s in answer.stages if s.name == name)


def test_room_constraint_through_the_llm_path_and_the_rooms_in_the_decide_context(srv):
    snap, g = building()
    a = retriever(srv).answer(snap, "the chair in the room with the sofa", graph=g)
    assert a.results[0].object_id == 11 and 12 not in [h.object_id for h in a.results]
    h = stage(a, "hierarchy")
    assert h.status == "ok" and "room 'the room with the sofa'" in h.detail and "1 of 3 room(s)" in h.detail
    dec = json.loads(user_text(next(r["body"] for r in srv.requests if r["step"] == "decide")))
    assert [r["id"] for r in dec["hierarchy"]["rooms"]][0] == 2
    assert dec["hierarchy"]["decomposition"] == {"floor": "", "room": "the room with the sofa", "object": "chair", "anchors": []}
    assert dec["hierarchy"]["candidate_rooms"][str(a.results[0].object_id)] == 2
    assert [f["id"] for f in dec["hierarchy"]["floors"]] == [1]
    assert "context" in stage(a, "decide").detail and "tokens" in stage(a, "decide").detail


def test_a_missing_room_says_so_on_the_llm_path_too(srv):
    snap, g = building()
    a = retriever(srv).answer(snap, "the mug in the bathroom", graph=g)
    assert a.results == [] and "no room labelled 'bathroom'" in a.message
    assert stage(a, "decide").status == "skipped"


def test_the_llm_parse_location_is_used_and_a_reply_without_one_keeps_the_parsers(srv):
    snap, g = building()
    reply = {"target": "chair", "attributes": [], "relations": [], "facing": None,
             "location": {"floor": 2, "floor_id": None, "room": None, "room_id": None, "room_with": None}}
    srv.script({"parse": Behaviour(content=reply)})
    a = retriever(srv, decide=False, verify=False).answer(snap, "upstairs, the seat", graph=g)  # words the rules do not know
    assert a.results[0].object_id == 12 and a.room_ids == [7]
    assert a.parsed.location.floor_rank == 2 and a.parsed.location.text == "on the second floor"
    old = {"target": "mug", "attributes": [], "relations": [], "facing": None}  # no location key at all
    srv.script({"parse": Behaviour(content=old)})
    a = retriever(srv, decide=False, verify=False).answer(snap, "the mug in the kitchen", graph=g)
    assert [h.object_id for h in a.results][:1] == [2] and a.room_ids == [1]
    p, _ = parsed_from_reply(old, "x")
    assert p.location is None


def test_without_a_graph_the_hierarchy_stage_is_skipped_and_says_why(srv):
    snap, _ = building()
    a = retriever(srv).answer(snap, "the mug in the kitchen")
    assert stage(a, "hierarchy").status == "skipped" and "no scene graph" in stage(a, "hierarchy").detail
    assert "was ignored" in a.message


def test_fit_budget_trims_rooms_then_anchors_then_candidates_and_refuses_the_impossible():
    payload = {
        "request": "the chair", "relations": [],
        "candidates": [{"id": i, "label": "chair", "center": [1.0, 2.0, 3.0]} for i in range(8)],
        "anchors": {"table": [{"id": 100 + i} for i in range(6)]},
        "hierarchy": {"rooms": [{"id": i, "summary": "x" * 200} for i in range(6)], "floors": [{"id": 1, "summary": ""}]},
    }
    full = estimate_tokens(json.dumps(payload, ensure_ascii=False))
    text, n, trimmed = fit_budget(json.loads(json.dumps(payload)), full)
    assert trimmed == [] and n == full
    text, n, trimmed = fit_budget(json.loads(json.dumps(payload)), full - 30)  # a room is ~57 tokens
    assert trimmed == ["rooms"] and n <= full - 30 and len(json.loads(text)["hierarchy"]["rooms"]) == 5
    text, n, trimmed = fit_budget(json.loads(json.dumps(payload)), 150)
    d = json.loads(text)
    assert n <= 150 and trimmed[:2] == ["rooms", "anchors"] and len(d["anchors"]["table"]) == 1
    assert len(d["hierarchy"]["rooms"]) == 1
    from core3d_ros.core.retrieval.llm import StepFailed

    with pytest.raises(StepFailed, match="context_tokens"):
        fit_budget(json.loads(json.dumps(payload)), 10)


def test_token_budget_holds_at_10000_objects_and_the_context_does_not_grow(srv):
    """2,500 and 10,000 objects (100 and 400 rooms): the requests stay under the budget and the
    decide context is the same size (top-k per level: candidates, anchors, rooms)."""
    report = context_sizes((2500, 10000), queries=("the chair in the kitchen on the second floor", "the chair closest to the table"))
    small, big = report["per_objects"][2500], report["per_objects"][10000]
    assert big["rooms"] > 3 * small["rooms"] > 200  # the graph grew with the map ...
    assert big["max_tokens_per_request"] <= report["budget"] == 2048
    decide = [{q["query"]: q["steps"]["decide"]["tokens"] for q in r["per_query"]} for r in (small, big)]
    for q in decide[1]:
        assert abs(decide[1][q] - decide[0][q]) < 0.15 * decide[0][q], q  # ... the context did not
    for q in big["per_query"]:
        assert "decide" in q["steps"] and "hierarchy:ok" in q["stages"]


def test_a_small_budget_trims_the_decide_context_and_skips_what_cannot_fit(srv):
    from core3d_ros.tools.bench.query import FakeTextEncoder

    cfg = RetrievalConfig()
    cfg.llm = LlmConfig(enabled=True, base_url=srv.url, model="m", call_timeout=5.0, context_tokens=400, candidates=8)
    enc = FakeTextEncoder(64)
    snap, g = synthetic_building(10000, encoder=enc)
    a = LlmRetriever(QueryEngine(cfg, enc), cfg.llm).answer(snap, "the chair closest to the table in the kitchen", graph=g)
    dec = stage(a, "decide")
    assert dec.status == "ok" and "trimmed" in dec.detail
    for r in srv.requests:
        assert sum(estimate_tokens(text_of(m["content"])) for m in r["body"]["messages"]) <= 400
    with pytest.raises(ConfigError, match="retrieval.llm.context_tokens"):
        from_dict({"retrieval": {"llm": {"context_tokens": 10}}})
