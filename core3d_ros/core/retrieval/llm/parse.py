"""The parse step's text side: the facing clause the rule-based parser does not know, and the
ParsedQuery built from a parse reply that fits PARSE_SCHEMA."""
from __future__ import annotations

import re

from ..location import Location, ordinal_text
from ..parser import ParsedQuery, Phrase, RelationClause
from .schemas import PARSE_SCHEMA, StepFailed, check_reply

_WORD_RE = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")
_FACING_RE = re.compile(
    r"\b(?:(?:that|which|who)\s+(?:is|are)\s+)?(?:facing\s+(?:towards?\s+)?|faces\s+|turned\s+towards?\s+|"
    r"pointing\s+(?:at|towards?)\s+|pointed\s+(?:at|towards?)\s+|looking\s+(?:at|towards?)\s+)",
    re.IGNORECASE,
)
_FACING_STOP = frozenset(
    "near on under in inside next beside above below behind left right between by close far with and that "
    "which who in_front".split()
)


def split_facing(text: str) -> tuple[str, str]:
    """("the chair near the door", "the tv") for "the chair facing the tv near the door";
    (text, "") when the query has no facing clause."""
    m = _FACING_RE.search(text)
    if not m:
        return text, ""
    rest = text[m.end() :]
    words = list(_WORD_RE.finditer(rest))
    end = 0
    for w in words:
        if w.group(0).lower() in _FACING_STOP:
            break
        end = w.end()
    anchor = rest[:end].strip()
    remaining = (text[: m.start()] + " " + rest[end:]).strip()
    return " ".join(remaining.split()), anchor


def _clean_noun(noun: str) -> str:
    words = _WORD_RE.findall(noun.lower())
    return " ".join(w for w in words if w not in ("the", "a", "an"))[:64]


def _phrase(d: dict) -> Phrase:
    noun = _clean_noun(d["noun"])
    attrs = tuple(dict.fromkeys(d["attributes"]))
    return Phrase(" ".join([*attrs, noun]).strip(), noun, attrs, False)


def parsed_from_reply(data: dict, text: str) -> tuple[ParsedQuery, Phrase | None]:
    """(ParsedQuery, facing anchor or None) from a parse reply; StepFailed when it does not fit."""
    check_reply(data, PARSE_SCHEMA, "parse")
    target = _phrase({"noun": data["target"], "attributes": data["attributes"]})
    clauses: list[RelationClause] = []
    for r in data["relations"]:
        anchors = tuple(_phrase(a) for a in r["anchors"])
        if any(not a.noun and not a.attributes for a in anchors):
            raise StepFailed(f"relation {r['relation']!r} has an empty anchor")
        if r["relation"] == "between":
            anchors = anchors if len(anchors) == 2 else (anchors[0], anchors[0])
        elif len(anchors) != 1:
            raise StepFailed(f"relation {r['relation']!r} takes one anchor, got {len(anchors)}")
        clauses.append(RelationClause(r["relation"], anchors))
    facing = _phrase(data["facing"]) if data["facing"] is not None else None
    if facing is not None and not facing.noun and not facing.attributes:
        facing = None
    if not target.noun and not target.attributes and not clauses and facing is None:
        raise StepFailed("reply names no object, attribute or relation")
    parsed = ParsedQuery(
        location=_location(data.get("location")),
        text=text,
        target=target.noun,
        attributes=list(target.attributes),
        relations=[(c.relation, a.text) for c in clauses for a in c.anchors],
        target_phrase=target,
        clauses=clauses,
    )
    return parsed, facing


def _location(d: dict | None) -> Location | None:
    """The floor / room constraint of a parse reply (None when it names none)."""
    if not d:
        return None
    rank = d.get("floor") if d.get("floor") not in (0,) else None
    room = _clean_noun(d.get("room") or "")
    with_ = _phrase(d["room_with"]) if d.get("room_with") else None
    if with_ is not None and not with_.noun and not with_.attributes:
        with_ = None
    loc = Location(floor_rank=rank, floor_id=d.get("floor_id"), room_id=d.get("room_id"), room_label=room, room_with=with_)
    if not loc.has_floor and not loc.has_room:
        return None
    parts = [f"on floor {loc.floor_id}" if loc.floor_id is not None else "",
             f"on {ordinal_text(rank)}" if rank is not None and loc.floor_id is None else "",
             f"in room {loc.room_id}" if loc.room_id is not None else "",
             f"in the {room}" if room else "", f"in the room with the {with_.text}" if with_ is not None else ""]
    return Location(loc.floor_rank, loc.floor_id, loc.room_id, room, with_, ", ".join(p for p in parts if p))


def phrase_query(phrase: Phrase) -> ParsedQuery:
    """A ParsedQuery that looks for ``phrase`` alone (used to find anchors)."""
    return ParsedQuery(
        text=phrase.text, target=phrase.noun, attributes=list(phrase.attributes), target_phrase=phrase
    )
