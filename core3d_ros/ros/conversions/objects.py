"""core3d/Object and core3d/ObjectArray from the map's objects.

The custom core3d messages (``core3d.msg``) are imported on use, so the standard-message
conversions work before the package's interfaces are built.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3

from ...core.objects import MapSnapshot, ObjectInfo
from .colors import color_rgba
from .headers import make_header, to_time
from .poses import box_pose


def _core3d_msg() -> Any:
    try:
        import core3d.msg as m
    except ImportError as e:  # pragma: no cover - depends on the build
        raise ImportError(
            "core3d.msg is not importable: build the package (colcon) and source its install space"
        ) from e
    return m


def object_to_msg(obj: ObjectInfo, room_id: int = 0) -> Any:
    """ObjectInfo -> core3d/Object; ``room_id``: its room in the scene graph (0: none)."""
    m = _core3d_msg()
    c = np.asarray(obj.centroid, dtype=np.float64)
    e = np.asarray(obj.box.extent, dtype=np.float64)
    msg = m.Object()
    msg.id = int(obj.id)
    msg.label = str(obj.label or "")
    msg.label_score = float(obj.label_score or 0.0)
    msg.centroid = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
    msg.box_pose = box_pose(obj.box)
    msg.box_size = Vector3(x=float(e[0]), y=float(e[1]), z=float(e[2]))
    msg.color = color_rgba(obj.mean_color, 1.0, scale=1.0)
    msg.num_voxels = int(obj.num_voxels)
    msg.num_observations = int(obj.num_observations)
    msg.first_seen = to_time(obj.first_seen)
    msg.last_seen = to_time(obj.last_seen)
    msg.room_id = int(room_id)
    moved = getattr(obj, "moved_from", None)
    if moved is not None and np.all(np.isfinite(moved)):
        p = np.asarray(moved, dtype=np.float64).reshape(3)
        msg.has_moved_from = True
        msg.moved_from = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
        msg.moved_at = to_time(getattr(obj, "moved_at", 0.0))
    return msg


def snapshot_to_object_array(
    snapshot: MapSnapshot, *, frame_id: str, stamp: Time | float = 0.0, rooms: dict[int, int] | None = None
) -> Any:
    """MapSnapshot -> core3d/ObjectArray (objects in snapshot order); ``rooms``: {object id: room id}."""
    m = _core3d_msg()
    msg = m.ObjectArray()
    msg.header = make_header(frame_id, stamp)
    msg.objects = [object_to_msg(o, (rooms or {}).get(o.id, 0)) for o in snapshot.objects]
    return msg
