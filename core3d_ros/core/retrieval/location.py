"""Floor and room constraints of a query ("in the kitchen", "on the second floor"), and their
resolution against the scene graph (core/hierarchy/graph.py).

Forms understood (on lower-cased tokens, determiners already removed by the parser):

    on | at | in  <ordinal> floor|storey|story|level     "on the second floor" -> floor rank 2
    on | at | in  ground|bottom|lowest floor            rank 1
    on | at | in  top|upper|highest floor               the highest floor
    on | at       floor|level|storey NUMBER             "on floor 2" -> floor id 2
    in | inside   room [number] NUMBER                  "in room 3" -> room id 3
    in | inside   room with|containing|that has PHRASE  "in the room with the sofa"
    in | inside | at  ROOM WORD                         "in the kitchen", "in the living room"

An ordinal names the floor's rank from the bottom (floors sorted by height); a number after
"floor" names the floor's id (the id RViz and the scene graph show). A ROOM WORD is one of
``ROOM_WORDS`` or any "<word> room" ("storage room"); it is matched against room labels.
Everything else (e.g. "the mug on the floor", "the mug in the box") stays an ordinary relation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

ROOM_WORDS: frozenset[str] = frozenset(
    """kitchen kitchenette bathroom bedroom office hallway hall corridor lobby garage laundry pantry
    study toilet restroom washroom closet attic basement lounge foyer entrance library nursery
    classroom lab laboratory workshop stairwell staircase balcony den cellar storage storeroom
    utility cloakroom workroom""".split()
)
_FLOOR_WORDS = frozenset(("floor", "storey", "story", "level"))
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5,
    "6th": 6, "7th": 7, "8th": 8, "9th": 9, "10th": 10,
    "ground": 1, "bottom": 1, "lowest": 1, "lower": 1,
    "top": -1, "upper": -1, "highest": -1, "uppermost": -1, "topmost": -1,
}
# after the parser dropped determiners ("that", "the"): "the room that has the sofa" -> room has sofa
_ROOM_WITH = (("which", "has"), ("which", "contains"), ("where", "is"), ("with",), ("containing",), ("has",),
              ("contains",), ("having",), ("holding",))
_FLOOR_PREPS = frozenset(("on", "at", "in"))
_ROOM_PREPS = frozenset(("in", "inside", "at", "within"))


@dataclass(frozen=True)
class Location:
    """Where the target must be. Any field may be unset (None / "")."""

    floor_rank: int | None = None  # 1 = lowest floor, 2 = next, ...; -1 = highest floor
    floor_id: int | None = None  # "floor 2": the scene graph's floor id
    room_id: int | None = None  # "room 3"
    room_label: str = ""  # "kitchen", "living room"
    room_with: object | None = None  # Phrase of an object the room must contain
    text: str = ""  # the constraint as understood, e.g. "on floor 2, in the kitchen"

    @property
    def has_floor(self) -> bool:
        return self.floor_rank is not None or self.floor_id is not None

    @property
    def has_room(self) -> bool:
        return self.room_id is not None or bool(self.room_label) or self.room_with is not None

    def to_dict(self) -> dict:
        return {
            "floor_rank": self.floor_rank,
            "floor_id": self.floor_id,
            "room_id": self.room_id,
            "room_label": self.room_label,
            "room_with": getattr(self.room_with, "text", None),
            "text": self.text,
        }


def _number(tok: str) -> int | None:
    return int(tok) if tok.isdigit() and len(tok) <= 6 else None


def ordinal_text(rank: int) -> str:
    if rank == -1:
        return "the top floor"
    names = {1: "first", 2: "second", 3: "third"}
    return f"the {names.get(rank, f'{rank}th')} floor"


def extract_location(
    tokens: list[str],
    starts_relation: Callable[[list[str], int], bool],
    parse_phrase: Callable[[list[str]], object],
) -> tuple[list[str], Location | None]:
    """(tokens without the floor / room phrases, Location or None); see the module doc.

    ``starts_relation(tokens, i)``: whether a spatial relation starts at i (ends a room-with
    phrase); ``parse_phrase``: the parser's noun-phrase reader (for "the room with PHRASE").
    Raises ValueError for a constraint given twice or a room-with phrase without an object."""
    out: list[str] = []
    found: dict = {}
    texts: list[str] = []
    i, n = 0, len(tokens)

    def put(key: str, value, text: str) -> None:
        if key in found and found[key] != value:
            raise ValueError(f"the query names two different {key.split('_')[0]}s")
        found[key] = value
        texts.append(text)

    while i < n:
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < n else ""
        nxt2 = tokens[i + 2] if i + 2 < n else ""
        # ---- floors
        if t in _FLOOR_PREPS and nxt in _ORDINALS and nxt2 in _FLOOR_WORDS:
            put("floor_rank", _ORDINALS[nxt], "on " + ordinal_text(_ORDINALS[nxt]))
            i += 3
            continue
        if t in ("on", "at") and nxt in _FLOOR_WORDS and _number(nxt2) is not None:
            put("floor_id", _number(nxt2), f"on floor {_number(nxt2)}")
            i += 3
            continue
        # ---- rooms
        if t in _ROOM_PREPS and nxt == "room":
            j = i + 2
            if j < n and tokens[j] in ("number", "no", "nr"):
                j += 1
            if j < n and _number(tokens[j]) is not None:
                put("room_id", _number(tokens[j]), f"in room {_number(tokens[j])}")
                i = j + 1
                continue
            m = next((len(w) for w in _ROOM_WITH if tuple(tokens[j : j + len(w)]) == w), 0)
            if m:
                k = j + m
                words: list[str] = []
                while k < n and not starts_relation(tokens, k) and not _starts_location(tokens, k):
                    words.append(tokens[k])
                    k += 1
                phrase = parse_phrase(words)
                if not getattr(phrase, "noun", "") and not getattr(phrase, "attributes", ()):
                    raise ValueError("'in the room with ...' names no object")
                put("room_with", phrase, f"in the room with the {phrase.text}")
                i = k
                continue
        if t in _ROOM_PREPS:
            label = ""
            if nxt in ROOM_WORDS:
                label, used = nxt, 2
            elif nxt2 == "room" and nxt and _number(nxt) is None and nxt not in ("same", "this", "other"):
                label, used = f"{nxt} room", 3
            if label:
                put("room_label", label, f"in the {label}")
                i += used
                continue
        out.append(t)
        i += 1
    if not found:
        return tokens, None
    return out, Location(
        floor_rank=found.get("floor_rank"),
        floor_id=found.get("floor_id"),
        room_id=found.get("room_id"),
        room_label=found.get("room_label", ""),
        room_with=found.get("room_with"),
        text=", ".join(texts),
    )


def _starts_location(tokens: list[str], i: int) -> bool:
    t = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    nxt2 = tokens[i + 2] if i + 2 < len(tokens) else ""
    if t in _FLOOR_PREPS and nxt in _ORDINALS and nxt2 in _FLOOR_WORDS:
        return True
    if t in ("on", "at") and nxt in _FLOOR_WORDS:
        return True
    return t in _ROOM_PREPS and (nxt == "room" or nxt in ROOM_WORDS or nxt2 == "room")


# ----------------------------------------------------------------------------- resolution


@dataclass
class Resolution:
    """What a Location selects in a scene graph: rooms (and so objects), or what is missing."""

    room_ids: list[int]  # rooms the target may be in
    object_ids: set[int]  # union of those rooms' object ids
    text: str  # e.g. "room 3 'kitchen' on floor 1"
    missing: str = ""  # non-empty: the floor / room named does not exist (the reason)


def _words(label: str) -> list[str]:
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in label.lower().replace("_", " ").split()]


def label_matches(label: str, wanted: str) -> bool:
    """A room label fits a wanted room word: same words, or the wanted words all in the label."""
    lw, ww = _words(label), _words(wanted)
    return bool(ww) and (lw == ww or all(w in lw for w in ww))


def _room_name(room) -> str:
    return f"room {room.id}" + (f" '{room.label}'" if room.label and room.label != f"room {room.id}" else "")


def _list(names: list[str], limit: int = 8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


def resolve_location(loc: Location, graph, rooms_with: Callable[[object], set[int]] | None = None) -> Resolution:
    """Rooms of ``graph`` (a SceneGraph) that satisfy ``loc``; ``rooms_with(phrase)``: ids of the
    rooms holding an object that matches the phrase (the engine's anchor search). Never raises
    for a missing floor / room: ``missing`` says what is not there."""
    floors = sorted(graph.floors, key=lambda f: f.height)
    rooms = list(graph.rooms)
    where = ""
    if loc.floor_id is not None:
        f = graph.floor(loc.floor_id)
        if f is None:
            return Resolution([], set(), loc.text, f"there is no floor {loc.floor_id} in the map (floors: {_list([str(x.id) for x in floors])})")
        rooms = [r for r in rooms if r.floor_id == f.id]
        where = f" on floor {f.id}"
    elif loc.floor_rank is not None:
        if not floors:
            return Resolution([], set(), loc.text, "the map has no floors yet")
        k = loc.floor_rank
        if k > len(floors):
            return Resolution([], set(), loc.text, f"the map has {len(floors)} floor(s), so there is no {ordinal_text(k)}")
        f = floors[-1] if k == -1 else floors[k - 1]
        rooms = [r for r in rooms if r.floor_id == f.id]
        where = f" on {ordinal_text(k)} (floor {f.id})"
    if loc.room_id is not None:
        r = graph.room(loc.room_id)
        if r is None:
            return Resolution([], set(), loc.text, f"there is no room {loc.room_id} in the map (rooms: {_list([str(x.id) for x in graph.rooms])})")
        if r not in rooms:
            return Resolution([], set(), loc.text, f"room {r.id} is on floor {r.floor_id}, not{where}")
        rooms = [r]
    if loc.room_label:
        hit = [r for r in rooms if label_matches(r.label, loc.room_label)]
        if not hit:
            return Resolution([], set(), loc.text, f"there is no room labelled '{loc.room_label}'{where} (rooms: {_list([_room_name(r) for r in rooms])})")
        rooms = hit
    if loc.room_with is not None:
        having = rooms_with(loc.room_with) if rooms_with is not None else set()
        hit = [r for r in rooms if r.id in having]
        if not hit:
            return Resolution([], set(), loc.text, f"no room{where} has a {loc.room_with.text}")
        rooms = hit
    if not rooms:
        return Resolution([], set(), loc.text, f"there are no rooms{where} yet")
    ids: set[int] = set()
    for r in rooms:
        ids.update(int(i) for i in r.object_ids)
    text = _list([_room_name(r) for r in rooms], 4) + (where or (f" on floor {rooms[0].floor_id}" if len({r.floor_id for r in rooms}) == 1 else ""))
    return Resolution([r.id for r in rooms], ids, text)
