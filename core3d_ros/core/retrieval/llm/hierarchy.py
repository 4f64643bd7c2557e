"""Hierarchical retrieval for the model steps (KeySG-style), and the context's token budget.

The query is decomposed into target floor / room / object / anchors (``decomposition``); the
rule-based engine, given the scene graph, ranks only the objects of the rooms the floor / room
constraint selects (top ``candidates`` objects, top ``anchors`` anchors per phrase); the decide
step is then told about at most ``rooms`` rooms (those the constraint selected, then the
candidates' rooms, best first) and their floors. What a step sends is measured in estimated
tokens (``estimate_tokens``: UTF-8 bytes / 4, rounded up, a common rule of thumb for BPE
tokenisers on English and JSON; images are not counted, their number is bounded by
``candidates``) and must fit ``retrieval.llm.context_tokens``: the decide context is trimmed
to fit (rooms, anchors, candidates, summaries, in that order), and a step whose text still
does not fit fails (the rule-based answer stands) without being sent. Nothing here reads more
than the graph's rooms of the candidates: the context does not grow with the map.
"""
from __future__ import annotations

import json
from typing import Any

from ..location import ordinal_text
from .schemas import StepFailed

_SUMMARY_CHARS = 200


def estimate_tokens(text: str) -> int:
    """Estimated tokens of a text: UTF-8 bytes / 4, rounded up (see the module doc)."""
    return (len(text.encode("utf-8")) + 3) // 4


def text_of(content: Any) -> str:
    """The text parts of a message's content (a string, or a list of parts), joined."""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def decomposition(parsed) -> dict:
    """{"floor", "room", "object", "anchors"}: the levels a query names ("" / [] when unnamed)."""
    loc = parsed.location
    floor = room = ""
    if loc is not None:
        if loc.floor_id is not None:
            floor = f"floor {loc.floor_id}"
        elif loc.floor_rank is not None:
            floor = ordinal_text(loc.floor_rank)
        if loc.room_id is not None:
            room = f"room {loc.room_id}"
        elif loc.room_label:
            room = loc.room_label
        elif loc.room_with is not None:
            room = f"the room with the {loc.room_with.text}"
    return {
        "floor": floor,
        "room": room,
        "object": parsed.target_phrase.text,
        "anchors": [a.text for c in parsed.clauses for a in c.anchors],
    }


def scene_context(graph, room_of: dict[int, int], selected: list[int], candidate_ids: list[int], k: int) -> dict:
    """The top ``k`` rooms for the decide step (the constraint's ``selected`` rooms holding a
    candidate first, then the candidates' rooms in rank order, then other selected rooms) with
    their floors, and each candidate's room."""
    order: list[int] = []
    cand_rooms = [room_of.get(i) for i in candidate_ids]
    sel = set(selected)
    for r in [r for r in cand_rooms if r in sel] + [r for r in cand_rooms if r is not None] + list(selected):
        if r not in order:
            order.append(r)
    rooms = []
    for rid in order[: max(int(k), 0)]:
        r = graph.room(rid)
        if r is not None:
            rooms.append({"id": r.id, "floor": r.floor_id, "label": r.label, "summary": r.summary[:_SUMMARY_CHARS],
                          "objects": len(r.object_ids)})
    floors = []
    for fid in dict.fromkeys(r["floor"] for r in rooms):
        f = graph.floor(fid)
        if f is not None:
            floors.append({"id": f.id, "label": f.label, "summary": f.summary[:_SUMMARY_CHARS], "rooms": len(f.room_ids)})
    return {"floors": floors, "rooms": rooms, "candidate_rooms": {str(i): r for i, r in zip(candidate_ids, cand_rooms) if r is not None}}


def fit_budget(payload: dict, budget: int) -> tuple[str, int, list[str]]:
    """(JSON text, its estimated tokens, what was trimmed) of a decide payload cut to ``budget``
    tokens; StepFailed when even the smallest form does not fit."""
    trimmed: list[str] = []

    def dump() -> str:
        return json.dumps(payload, ensure_ascii=False, allow_nan=False)

    text = dump()
    scene = payload.get("hierarchy")
    steps = []
    if scene is not None:
        steps.append(("rooms", lambda: len(scene["rooms"]) > 1 and scene["rooms"].pop() is not None))
    steps.append(("anchors", lambda: _pop_longest(payload.get("anchors", {}))))
    steps.append(("candidates", lambda: len(payload["candidates"]) > 1 and payload["candidates"].pop() is not None))
    if scene is not None:
        steps.append(("summaries", lambda: _cut_summaries(scene)))
        steps.append(("hierarchy", lambda: payload.pop("hierarchy", None) is not None))
    for name, step in steps:
        while estimate_tokens(text) > budget and step():
            if name not in trimmed:
                trimmed.append(name)
            text = dump()
    n = estimate_tokens(text)
    if n > budget:
        raise StepFailed(f"the smallest context is {n} tokens, over retrieval.llm.context_tokens ({budget})")
    return text, n, trimmed


def _pop_longest(anchors: dict) -> bool:
    if not anchors:
        return False
    key = max(anchors, key=lambda a: len(anchors[a]))
    if len(anchors[key]) <= 1:
        return False
    anchors[key].pop()
    return True


def _cut_summaries(scene: dict) -> bool:
    changed = False
    for item in [*scene["rooms"], *scene["floors"]]:
        if len(item.get("summary", "")) > 40:
            item["summary"] = item["summary"][:40]
            changed = True
    return changed
