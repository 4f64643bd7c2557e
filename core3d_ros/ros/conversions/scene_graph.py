"""core3d/SceneGraph, Floor and Room <-> core.hierarchy.graph, and the rooms as RViz markers.

The custom core3d messages (``core3d.msg``) are imported on use, as in ``objects.py``.
Room markers: per room a closed LINE_STRIP of its outline (``{ns}/outlines``) and its label as
text above the centroid (``{ns}/names``); marker ids are room ids, so a room that grows keeps
its markers, and the leading DELETEALL removes rooms that were merged or split away.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Point32, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from ...core.hierarchy.graph import Floor, Room, SceneGraph
from .colors import color_rgba, instance_color
from .headers import make_header
from .markers import delete_all_marker
from .objects import _core3d_msg

ROOM_MARKER_NS = "core3d_rooms"
_ID_MASK = 0x7FFFFFFF  # marker ids are int32
_UINT32_MAX = 2**32 - 1


def _uint32s(values: Any) -> list[int]:
    ids = [int(v) for v in values]
    bad = [v for v in ids if not 0 <= v <= _UINT32_MAX]
    if bad:
        raise ValueError(f"ids must fit uint32, got {bad[:3]}")
    return ids


def floor_to_msg(floor: Floor) -> Any:
    m = _core3d_msg()
    return m.Floor(
        id=int(floor.id), height=float(floor.height), ceiling=float(floor.ceiling), label=str(floor.label or ""),
        summary=str(floor.summary or ""), room_ids=_uint32s(floor.room_ids),
    )


def room_to_msg(room: Room) -> Any:
    m = _core3d_msg()
    c = np.asarray(room.centroid, np.float64).reshape(3)
    outline = np.asarray(room.outline, np.float64).reshape(-1, 3)
    return m.Room(
        id=int(room.id), floor_id=int(room.floor_id), label=str(room.label or ""),
        label_score=float(room.label_score), summary=str(room.summary or ""),
        centroid=Point(x=float(c[0]), y=float(c[1]), z=float(c[2])), area=float(room.area),
        outline=[Point32(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in outline],
        object_ids=_uint32s(room.object_ids), keyframe_ids=_uint32s(room.keyframe_ids),
    )


def scene_graph_to_msg(graph: SceneGraph, *, frame_id: str, stamp: Time | float = 0.0, map_id: str = "") -> Any:
    """SceneGraph -> core3d/SceneGraph (floors and rooms in the graph's order)."""
    m = _core3d_msg()
    up = np.asarray(graph.up, np.float64).reshape(3)
    return m.SceneGraph(
        header=make_header(frame_id, stamp), map_id=str(map_id), version=int(graph.version),
        up=Vector3(x=float(up[0]), y=float(up[1]), z=float(up[2])), up_source=str(graph.up_source),
        note=str(graph.note or ""), floors=[floor_to_msg(f) for f in graph.floors], rooms=[room_to_msg(r) for r in graph.rooms],
    )


def msg_to_scene_graph(msg: Any) -> SceneGraph:
    """core3d/SceneGraph -> SceneGraph (what the query node keeps of the mapping node's graph)."""
    floors = [
        Floor(
            id=int(f.id), height=float(f.height), ceiling=float(f.ceiling), label=str(f.label), summary=str(f.summary),
            room_ids=[int(i) for i in f.room_ids],
        )
        for f in msg.floors
    ]
    rooms = [
        Room(
            id=int(r.id), floor_id=int(r.floor_id),
            outline=np.array([[p.x, p.y, p.z] for p in r.outline], np.float64).reshape(-1, 3),
            area=float(r.area), centroid=np.array([r.centroid.x, r.centroid.y, r.centroid.z], np.float64),
            label=str(r.label), label_score=float(r.label_score), summary=str(r.summary),
            object_ids=[int(i) for i in r.object_ids], keyframe_ids=[int(i) for i in r.keyframe_ids],
        )
        for r in msg.rooms
    ]
    return SceneGraph(
        up=np.array([msg.up.x, msg.up.y, msg.up.z], np.float64), up_source=str(msg.up_source), note=str(msg.note),
        version=int(msg.version), floors=floors, rooms=rooms,
    )


def room_of_objects(graph: SceneGraph | None) -> dict[int, int]:
    """{object id: room id} of a graph (empty without one): what fills core3d/Object.room_id."""
    if graph is None:
        return {}
    return {int(oid): int(r.id) for r in graph.rooms for oid in r.object_ids}


def room_markers(
    graph: SceneGraph, *, frame_id: str, stamp: Time | float = 0.0, ns: str = ROOM_MARKER_NS,
    line_width: float = 0.04, text_height: float = 0.3,
) -> MarkerArray:
    """DELETEALL, then per room its outline as a closed LINE_STRIP and its label as TEXT, lifted
    a little along ``graph.up`` so that they stay visible above the floor's surface."""
    header = make_header(frame_id, stamp)
    up = np.asarray(graph.up, np.float64).reshape(3)
    markers = [delete_all_marker(header)]
    for room in graph.rooms:
        mid = int(room.id) & _ID_MASK
        rgba = color_rgba(instance_color(int(room.id)), 1.0)
        outline = np.asarray(room.outline, np.float64).reshape(-1, 3)
        if len(outline) >= 2:
            lifted = np.vstack([outline, outline[:1]]) + 0.02 * up  # closed
            line = Marker(header=header, ns=f"{ns}/outlines", id=mid, type=Marker.LINE_STRIP, action=Marker.ADD)
            line.pose.orientation.w = 1.0
            line.scale.x = float(line_width)
            line.color = rgba
            line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in lifted]
            markers.append(line)
        text = Marker(header=header, ns=f"{ns}/names", id=mid, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        c = np.asarray(room.centroid, np.float64).reshape(3) + 0.5 * up
        text.pose.position = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
        text.pose.orientation.w = 1.0
        text.scale.z = float(text_height)
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = room_title(room)
        markers.append(text)
    return MarkerArray(markers=markers)


def room_title(room: Room) -> str:
    """What a room's text marker says: its label (``room N`` without one) and, when the label
    came from the encoder, its score."""
    label = room.label or f"room {room.id}"
    return f"{label} ({room.label_score:.2f})" if room.label_score > 0 else label
