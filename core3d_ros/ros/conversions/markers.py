"""visualization_msgs/MarkerArray of the map (boxes and labels per object) and of query hits."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ...core.objects import MapSnapshot, ObjectInfo, OrientedBox
from .colors import color_rgba, instance_color
from .headers import make_header
from .poses import box_pose

# Corners of the unit cube (+-0.5) and the 12 edges between them, for LINE_LIST boxes.
_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]])
_MARKER_ID_MASK = 0x7FFFFFFF  # marker ids are int32


def box_corners(box: OrientedBox) -> np.ndarray:
    """(8, 3) corners of an oriented box in the world frame."""
    return (_CORNERS * np.asarray(box.extent, np.float64)) @ np.asarray(box.rotation, np.float64).T + np.asarray(
        box.center, np.float64
    )


def _box_marker(
    obj: ObjectInfo, *, ns: str, header: Header, style: str, rgba: ColorRGBA, line_width: float
) -> Marker:
    mk = Marker(header=header, ns=ns, id=int(obj.id) & _MARKER_ID_MASK, action=Marker.ADD)
    mk.color = rgba
    if style == "cube":
        mk.type = Marker.CUBE
        mk.pose = box_pose(obj.box)
        e = np.maximum(np.asarray(obj.box.extent, np.float64), 1e-3)
        mk.scale = Vector3(x=float(e[0]), y=float(e[1]), z=float(e[2]))
    elif style == "line_list":
        mk.type = Marker.LINE_LIST
        mk.pose.orientation.w = 1.0
        mk.scale.x = float(line_width)
        ends = box_corners(obj.box)[_EDGES.ravel()]
        mk.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in ends]
    else:
        raise ValueError(f"unknown box marker style {style!r}; expected 'line_list' or 'cube'")
    return mk


def _text_marker(obj: ObjectInfo, text: str, *, ns: str, header: Header, height: float) -> Marker:
    mk = Marker(header=header, ns=ns, id=int(obj.id) & _MARKER_ID_MASK, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    corners = box_corners(obj.box)
    top = float(corners[:, 2].max()) if len(corners) else 0.0
    c = np.asarray(obj.box.center, np.float64)
    mk.pose.position = Point(x=float(c[0]), y=float(c[1]), z=top + height)
    mk.pose.orientation.w = 1.0
    mk.scale.z = float(height)
    mk.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    mk.text = text
    return mk


def delete_all_marker(header: Header) -> Marker:
    return Marker(header=header, action=Marker.DELETEALL)


def snapshot_to_markers(
    snapshot: MapSnapshot,
    *,
    frame_id: str,
    stamp: Time | float = 0.0,
    style: str = "line_list",
    line_width: float = 0.01,
    text_height: float = 0.08,
    ns: str = "core3d",
) -> MarkerArray:
    """DELETEALL, then per object a box (``{ns}/boxes``) and an "id label" text (``{ns}/labels``).

    Marker ids equal object ids, so an object keeps its markers from one publication to the next;
    the leading DELETEALL removes markers of objects that left the map (merged or cleared).
    """
    header = make_header(frame_id, stamp)
    markers = [delete_all_marker(header)]
    for obj in snapshot.objects:
        markers.extend(object_markers(obj, header, style=style, line_width=line_width, text_height=text_height, ns=ns))
    return MarkerArray(markers=markers)


def object_markers(
    obj: ObjectInfo, header: Header, *, style: str = "line_list", line_width: float = 0.01,
    text_height: float = 0.08, ns: str = "core3d",
) -> list[Marker]:
    """One object's box (``{ns}/boxes``) and "id label" text (``{ns}/labels``); ids = object id."""
    rgba = color_rgba(instance_color(obj.id), 0.9)
    text = f"{obj.id} {obj.label}".strip()
    return [
        _box_marker(obj, ns=f"{ns}/boxes", header=header, style=style, rgba=rgba, line_width=line_width),
        _text_marker(obj, text, ns=f"{ns}/labels", header=header, height=text_height),
    ]


def delete_object_markers(object_id: int, header: Header, ns: str = "core3d") -> list[Marker]:
    """DELETE of the box and label that object_markers made for ``object_id``."""
    mid = int(object_id) & _MARKER_ID_MASK
    return [Marker(header=header, ns=f"{ns}/{kind}", id=mid, action=Marker.DELETE) for kind in ("boxes", "labels")]


def query_markers(
    hits: Sequence[tuple[ObjectInfo, float]],
    *,
    frame_id: str,
    stamp: Time | float = 0.0,
    ns: str = "core3d_query",
    text_height: float = 0.1,
) -> MarkerArray:
    """Highlighted boxes for query hits, best first: ``{ns}/boxes`` (translucent cubes, the best
    green, the rest orange), ``{ns}/outlines`` and ``{ns}/labels`` ("#rank label score")."""
    header = make_header(frame_id, stamp)
    markers = [delete_all_marker(header)]
    for rank, (obj, score) in enumerate(hits, start=1):
        rgb = (0.1, 0.9, 0.2) if rank == 1 else (1.0, 0.55, 0.0)
        markers.append(
            _box_marker(obj, ns=f"{ns}/boxes", header=header, style="cube", rgba=color_rgba(rgb, 0.35, 1.0), line_width=0.0)
        )
        markers.append(
            _box_marker(
                obj, ns=f"{ns}/outlines", header=header, style="line_list", rgba=color_rgba(rgb, 1.0, 1.0), line_width=0.02
            )
        )
        label = f"#{rank} {obj.label or 'object'} {obj.id} ({score:.2f})"
        markers.append(_text_marker(obj, label, ns=f"{ns}/labels", header=header, height=text_height))
    return MarkerArray(markers=markers)
