"""The scene graph's data model: floors -> rooms -> object ids (ROS-free, numpy only).

Geometry is in the map frame. ``up`` is the map's unit up direction; heights are coordinates
along it; room outlines are polygons in the floor plane, stored as 3-D points at the floor's
height so that they can be drawn and published without knowing the plane's axes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UP_SOURCES = ("parameter", "dataset", "estimated", "default")


@dataclass
class Floor:
    id: int  # 1, 2, ... stable while the map grows
    height: float  # elevation of the floor surface along up (m)
    ceiling: float  # elevation of the next floor or the highest surface above (m)
    label: str = ""
    summary: str = ""
    room_ids: list[int] = field(default_factory=list)


@dataclass
class Room:
    id: int  # stable while the room grows
    floor_id: int
    outline: np.ndarray  # (N, 3) float, polygon at the floor's height, counter-clockwise seen from above
    area: float  # m^2
    centroid: np.ndarray  # (3,)
    label: str = ""  # room class, or "room N" without an encoder
    label_score: float = 0.0
    summary: str = ""
    object_ids: list[int] = field(default_factory=list)
    keyframe_ids: list[int] = field(default_factory=list)


@dataclass
class SceneGraph:
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    up_source: str = "default"  # one of UP_SOURCES
    note: str = ""  # why the hierarchy is degraded (one floor / one room), or empty
    version: int = 0  # bumped on every change
    splits: int = 0  # events so far: a room that became several (the largest part keeps its id)
    merges: int = 0  # ... several rooms that became one (it keeps the id of the largest)
    floors: list[Floor] = field(default_factory=list)
    rooms: list[Room] = field(default_factory=list)
    # the builder's thinned camera centres (N, 3) in the map frame, which its floors stand on:
    # saved with the map so that a loaded hierarchy is rebuilt with the same floors and ids
    # (HierarchyBuilder.seed); not part of the ROS message. None: not known.
    camera_path: np.ndarray | None = None

    def room(self, room_id: int) -> Room | None:
        return next((r for r in self.rooms if r.id == room_id), None)

    def floor(self, floor_id: int) -> Floor | None:
        return next((f for f in self.floors if f.id == floor_id), None)

    def room_of_object(self, object_id: int) -> Room | None:
        return next((r for r in self.rooms if object_id in r.object_ids), None)
