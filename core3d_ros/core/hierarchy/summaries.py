"""Room and floor summaries through the OpenAI-compatible endpoint (``retrieval.llm``), grounded
in what the map holds: a room's label, area and the labels of its objects; a floor's rooms with
their labels and summaries. Optional: without an endpoint rooms and floors have no summary.

    summarizer = Summarizer(ChatClient(cfg.retrieval.llm))
    text = summarizer.room(room, ["chair", "chair", "table"], floor_label="floor 1")
    text = summarizer.floor(floor, rooms)

Each call sends one bounded request (at most ``MAX_OBJECTS`` object labels, counted by label,
and ``MAX_ROOMS`` rooms per floor) and expects ``{"summary": "..."}``; the reply is cut to
``MAX_CHARS``. A failed call raises ChatError (retrieval/llm_client.py); the caller runs these
off the mapping and query threads (ros/scene_graph.py) and keeps going without the summary.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Sequence

from ..retrieval.llm_client import ChatError
from .graph import Floor, Room

MAX_OBJECTS = 40  # distinct object labels sent per room (the most frequent)
MAX_ROOMS = 30  # rooms sent per floor (the largest)
MAX_CHARS = 400  # a longer summary is cut

SYSTEM = (
    "You describe the rooms and floors of a building mapped by a robot, for people and planners. "
    "Use only the facts given: labels, areas, the objects found in a room, the rooms of a floor. "
    'Reply with one JSON object {"summary": "..."}: one or two plain sentences, nothing that is '
    "not listed."
)

ROOM_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
    "additionalProperties": False,
}


def _counted(labels: Sequence[str]) -> list[str]:
    counts = Counter(str(x).strip() for x in labels if str(x).strip())
    return [f"{n} x {label}" if n > 1 else label for label, n in counts.most_common(MAX_OBJECTS)]


class Summarizer:
    """One chat client; ``room`` and ``floor`` each make one call (see the module doc)."""

    def __init__(self, client: Any, timeout: float | None = None):
        self.client = client
        self.timeout = timeout

    def _ask(self, facts: dict) -> str:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": json.dumps(facts, ensure_ascii=False)},
        ]
        reply = self.client.chat(messages, timeout=self.timeout, schema=ROOM_SCHEMA, schema_name="core3d_summary")
        text = reply.data.get("summary")
        if not isinstance(text, str) or not text.strip():
            raise ChatError("malformed", "the reply has no 'summary' text")
        return " ".join(text.split())[:MAX_CHARS]

    def room(self, room: Room, object_labels: Sequence[str], floor_label: str = "") -> str:
        """A room's summary from its label, area and objects (unlabelled objects are counted)."""
        unlabelled = sum(1 for x in object_labels if not str(x).strip())
        facts: dict[str, Any] = {
            "room": room.label or f"room {room.id}",
            "floor": floor_label,
            "area_m2": round(float(room.area), 1),
            "objects": _counted(object_labels),
        }
        if unlabelled:
            facts["unlabelled_objects"] = unlabelled
        return self._ask(facts)

    def floor(self, floor: Floor, rooms: Sequence[Room]) -> str:
        """A floor's summary from its rooms' labels, areas and summaries (the largest rooms)."""
        largest = sorted(rooms, key=lambda r: -float(r.area))[:MAX_ROOMS]
        facts = {
            "floor": floor.label or f"floor {floor.id}",
            "rooms": [
                {"room": r.label or f"room {r.id}", "area_m2": round(float(r.area), 1), "summary": r.summary[:MAX_CHARS]}
                for r in largest
            ],
        }
        return self._ask(facts)
