"""A deterministic synthetic two-storey building with rooms, doorways and furniture per room.

    scene = make_building(seed=0)             # or open_dataset("synthetic-building:0")
    scene.rooms          # ground truth: TrueRoom(id, floor, kind, lo, hi, height) per room
    scene.object_room    # object id -> true room id (furniture only)
    scene.floor_heights  # [0.0, 3.0]
    scene.frame_room     # per frame: the true room id holding the camera (None in a doorway)

The world frame is z-up. Each storey is a W x D rectangle (about 8 x 6 m inside its outer walls)
divided into three rooms by interior walls with 0.9 m x 2.1 m doorways; the second storey is
divided the other way. Storey k's floor lies at z = 3k, its walls are 2.7 m high and a 0.3 m
slab (ceiling below, floor above) separates the storeys. Each room gets a kind (kitchen, living
room, office, bedroom, bathroom, storage) and the furniture of that kind, placed along its walls
away from the doorways, with small things on tables and cabinets (mug, monitor, book, vase).

The camera walks through every room: a loop inside each room (looking across it, pitch varying
so that floor and walls are both seen), then through the doorway into the next; after the last
room of the ground floor it is carried up (an elevator: one jump of 3 m) into the nearest room
upstairs. All furniture is lower than the camera's path (1.4 m), so the camera is never inside
an object. Rendering is the synthetic room's (ray casting on the CPU, see synthetic.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import DepthConfig
from .base import register_dataset
from .synthetic import (
    COLORS,
    FPS,
    Primitive,
    SceneObject,
    SyntheticScene,
    _make_object,
    camera_intrinsics,
    check_render,
    look_at,
    named_seed,
)

STOREY_HEIGHT = 3.0
WALL_HEIGHT = 2.7
SLAB = 0.15  # each of the two boxes between storeys (ceiling below, floor above)
T_OUT, T_IN = 0.15, 0.12  # wall thickness: outer, interior
DOOR_WIDTH, DOOR_HEIGHT = 0.9, 2.1
CAMERA_HEIGHT = 1.4
STEP = 0.2  # metres per frame between rooms

ROOM_KINDS = ("kitchen", "living room", "office", "bedroom", "bathroom", "storage")
# Furniture per kind: (class, things standing on it).
FURNITURE: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "kitchen": [("table", ("mug",)), ("chair", ()), ("cabinet", ()), ("trash bin", ())],
    "living room": [("sofa", ()), ("lamp", ()), ("cabinet", ("vase",))],
    "office": [("table", ("monitor", "book")), ("chair", ()), ("shelf", ())],
    "bedroom": [("bed", ()), ("lamp", ()), ("cabinet", ())],
    "bathroom": [("cabinet", ()), ("trash bin", ())],
    "storage": [("shelf", ()), ("crate", ()), ("crate", ())],
}


@dataclass(frozen=True)
class TrueRoom:
    id: int  # 1, 2, ... in visiting order
    floor: int  # 0: ground floor, 1: upstairs
    kind: str
    lo: tuple[float, float]  # interior footprint (between the wall faces), x/y minimum
    hi: tuple[float, float]
    height: float  # floor elevation (z)

    @property
    def center(self) -> np.ndarray:
        return (np.asarray(self.lo) + np.asarray(self.hi)) / 2

    @property
    def area(self) -> float:
        return float(np.prod(np.subtract(self.hi, self.lo)))

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        return self.lo[0] + margin <= x <= self.hi[0] - margin and self.lo[1] + margin <= y <= self.hi[1] - margin


@dataclass(frozen=True)
class Door:
    rooms: tuple[int, int]  # indices into the storey's room list
    center: tuple[float, float]
    normal: tuple[float, float]  # unit, across the wall (from rooms[0] to rooms[1])


def _box(x0: float, y0: float, z0: float, x1: float, y1: float, z1: float) -> Primitive:
    return Primitive("box", ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), (x1 - x0, y1 - y0, z1 - z0))


def _wall_with_door(along: str, fixed: tuple[float, float], span: tuple[float, float], door: float | None, z: float) -> list[Primitive]:
    """A wall along x (fixed = its y range) or along y (fixed = its x range), from span[0] to
    span[1], with a doorway centred at ``door`` (None: solid)."""
    pieces = [(span[0], span[1], z, z + WALL_HEIGHT)] if door is None else [
        (span[0], door - DOOR_WIDTH / 2, z, z + WALL_HEIGHT),
        (door + DOOR_WIDTH / 2, span[1], z, z + WALL_HEIGHT),
        (door - DOOR_WIDTH / 2, door + DOOR_WIDTH / 2, z + DOOR_HEIGHT, z + WALL_HEIGHT),
    ]
    a, b = fixed
    if along == "x":
        return [_box(s0, a, z0, s1, b, z1) for s0, s1, z0, z1 in pieces]
    return [_box(a, s0, z0, b, s1, z1) for s0, s1, z0, z1 in pieces]


def _plan(rng: np.random.Generator, W: float, D: float, split_x_first: bool, z: float):
    """Three rooms of one storey: (room rectangles, interior wall primitives, doors).
    ``split_x_first``: a wall across x splits the storey, the right part is split across y;
    otherwise the same with x and y exchanged."""
    u = rng.uniform
    if split_x_first:
        xs, ys = W * u(0.38, 0.48), D * u(0.42, 0.58)
        rooms = [((0.0, 0.0), (xs, D)), ((xs + T_IN, 0.0), (W, ys)), ((xs + T_IN, ys + T_IN), (W, D))]
        d1 = u(0.7, ys - 0.7)  # on the wall x = xs, between room 0 and room 1
        d2 = u(xs + T_IN + 0.7, W - 0.7)  # on the wall y = ys, between room 1 and room 2
        walls = _wall_with_door("y", (xs, xs + T_IN), (0.0, D), d1, z) + _wall_with_door("x", (ys, ys + T_IN), (xs + T_IN, W), d2, z)
        doors = [Door((0, 1), (xs + T_IN / 2, d1), (1.0, 0.0)), Door((1, 2), (d2, ys + T_IN / 2), (0.0, 1.0))]
    else:
        ys, xs = D * u(0.42, 0.55), W * u(0.4, 0.6)
        rooms = [((0.0, ys + T_IN), (xs, D)), ((0.0, 0.0), (W, ys)), ((xs + T_IN, ys + T_IN), (W, D))]
        d1 = u(0.7, xs - 0.7)  # on the wall y = ys, between room 0 (top left) and room 1 (bottom)
        d2 = u(xs + T_IN + 0.7, W - 0.7)  # on the wall y = ys, between room 1 and room 2 (top right)
        walls = (
            _wall_with_door("x", (ys, ys + T_IN), (0.0, xs + T_IN), d1, z)
            + _wall_with_door("x", (ys, ys + T_IN), (xs + T_IN, W), d2, z)
            + _wall_with_door("y", (xs, xs + T_IN), (ys + T_IN, D), None, z)
        )
        doors = [Door((0, 1), (d1, ys + T_IN / 2), (0.0, -1.0)), Door((1, 2), (d2, ys + T_IN / 2), (0.0, 1.0))]
    return rooms, walls, doors


# Furniture in local coordinates: u along the wall, v away from it (v = 0 at the wall), z up.
def _piece(cls: str) -> tuple[tuple[float, float], list[tuple[float, float, float, float, float, float]]]:
    """(footprint (length along the wall, depth), boxes (u0, v0, z0, u1, v1, z1)) of a class."""
    if cls == "table":
        L, Dp, h, t = 1.2, 0.8, 0.75, 0.04
        legs = [(u0, v0, 0.0, u0 + 0.05, v0 + 0.05, h - t) for u0 in (0.03, L - 0.08) for v0 in (0.03, Dp - 0.08)]
        return (L, Dp), [(0.0, 0.0, h - t, L, Dp, h), *legs]
    if cls == "chair":
        s = 0.45
        legs = [(u0, v0, 0.0, u0 + 0.04, v0 + 0.04, 0.4) for u0 in (0.02, s - 0.06) for v0 in (0.02, s - 0.06)]
        return (s, s), [(0.0, 0.0, 0.4, s, s, 0.45), (0.0, 0.0, 0.45, s, 0.05, 0.9), *legs]
    if cls == "sofa":
        return (2.0, 0.9), [(0.0, 0.0, 0.0, 2.0, 0.9, 0.42), (0.0, 0.0, 0.42, 2.0, 0.2, 0.85)]
    if cls == "cabinet":
        return (0.9, 0.45), [(0.0, 0.0, 0.0, 0.9, 0.45, 1.1)]
    if cls == "bed":
        return (1.4, 2.0), [(0.0, 0.0, 0.0, 1.4, 2.0, 0.5), (0.0, 0.0, 0.5, 1.4, 0.08, 0.95)]
    if cls == "shelf":
        return (1.0, 0.35), [(0.0, 0.0, 0.0, 1.0, 0.35, 1.2)]
    if cls == "crate":
        return (0.5, 0.5), [(0.0, 0.0, 0.0, 0.5, 0.5, 0.4)]
    if cls == "trash bin":
        return (0.3, 0.3), [(0.0, 0.0, 0.0, 0.3, 0.3, 0.35)]
    if cls == "lamp":
        return (0.4, 0.4), [(0.1, 0.1, 0.0, 0.3, 0.3, 0.04), (0.18, 0.18, 0.04, 0.22, 0.22, 0.95), (0.0, 0.0, 0.95, 0.4, 0.4, 1.25)]
    raise ValueError(cls)


SMALL = {  # (footprint side, height) of things standing on furniture
    "mug": (0.1, 0.11),
    "monitor": (0.5, 0.4),
    "book": (0.2, 0.04),
    "vase": (0.14, 0.25),
}


def _to_world(box, wall: str, room_lo, room_hi, offset: float, z: float) -> Primitive:
    """A local box placed against ``wall`` (xmin|xmax|ymin|ymax) at ``offset`` along it."""
    u0, v0, z0, u1, v1, z1 = box
    (x0, y0), (x1, y1) = room_lo, room_hi
    if wall == "ymin":
        return _box(x0 + offset + u0, y0 + v0, z + z0, x0 + offset + u1, y0 + v1, z + z1)
    if wall == "ymax":
        return _box(x0 + offset + u0, y1 - v1, z + z0, x0 + offset + u1, y1 - v0, z + z1)
    if wall == "xmin":
        return _box(x0 + v0, y0 + offset + u0, z + z0, x0 + v1, y0 + offset + u1, z + z1)
    return _box(x1 - v1, y0 + offset + u0, z + z0, x1 - v0, y0 + offset + u1, z + z1)


def _footprint(parts: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.min([np.subtract(p.center, np.divide(p.size, 2)) for p in parts], axis=0)
    hi = np.max([np.add(p.center, np.divide(p.size, 2)) for p in parts], axis=0)
    return lo, hi


def _furnish(rng, room: TrueRoom, doors: list[tuple[float, float]], next_id: int) -> list[SceneObject]:
    """The furniture of ``room``'s kind along its walls, clear of doorways and of each other."""
    out: list[SceneObject] = []
    taken: list[tuple[np.ndarray, np.ndarray]] = []
    lo, hi = room.lo, room.hi
    for cls, on_top in FURNITURE[room.kind]:
        (L, Dp), boxes = _piece(cls)
        for _ in range(60):
            wall = ("xmin", "xmax", "ymin", "ymax")[int(rng.integers(4))]
            length = (hi[0] - lo[0]) if wall in ("ymin", "ymax") else (hi[1] - lo[1])
            if length < L + 0.2:
                continue
            offset = rng.uniform(0.1, length - L - 0.1)
            parts = [_to_world(b, wall, lo, hi, offset, room.height) for b in boxes]
            flo, fhi = _footprint(parts)
            if any(np.hypot(*np.maximum(0.0, np.maximum(flo[:2] - d, np.asarray(d) - fhi[:2]))) < 1.0 for d in doors):
                continue  # keep doorways free
            if any(np.all(flo[:2] < thi[:2] + 0.15) and np.all(tlo[:2] - 0.15 < fhi[:2]) for tlo, thi in taken):
                continue
            break
        else:
            continue  # no room for it
        taken.append((flo, fhi))
        base = _make_object(next_id, cls, parts)
        out.append(base)
        next_id += 1
        top = float(base.bbox_max[2])
        for k, small in enumerate(on_top):
            side, h = SMALL[small]
            n = len(on_top)
            cx = flo[0] + (fhi[0] - flo[0]) * (k + 1) / (n + 1)
            cy = flo[1] + (fhi[1] - flo[1]) * (0.5 + 0.15 * rng.uniform(-1, 1))
            part = _box(cx - side / 2, cy - side * 0.3, top, cx + side / 2, cy + side * 0.3, top + h)
            out.append(_make_object(next_id, small, [part], base.id))
            next_id += 1
    return out


def _loop(room: TrueRoom, n: int, start: float, phase: float) -> list[np.ndarray]:
    """``n`` poses on an ellipse around the room's centre, looking across the room."""
    c = room.center
    half = (np.asarray(room.hi) - np.asarray(room.lo)) / 2
    a, b = 0.4 * half
    poses = []
    for i in range(n):
        th = start + 2 * np.pi * i / n
        off = np.array([a * np.cos(th), b * np.sin(th)])
        eye = np.array([*(c + off), room.height + CAMERA_HEIGHT + 0.05 * np.sin(3 * th + phase)])
        target = np.array([*(c - 2.5 * off), room.height + 1.0 + 0.45 * np.sin(2 * th + phase)])
        poses.append(look_at(eye, target))
    return poses


def _walk(points: list[np.ndarray], z: float) -> list[np.ndarray]:
    """Poses every STEP metres along a polyline, looking 2 m ahead along it."""
    poses = []
    for p, q in zip(points[:-1], points[1:]):
        d = q - p
        length = float(np.linalg.norm(d))
        if length < 1e-6:
            continue
        direction = d / length
        for s in np.arange(0.0, length, STEP):
            xy = p + direction * s
            eye = np.array([*xy, z + CAMERA_HEIGHT])
            poses.append(look_at(eye, np.array([*(xy + 2.0 * direction), z + 1.1])))
    return poses


class BuildingScene(SyntheticScene):
    """The rendered building; implements the Dataset protocol like SyntheticScene."""

    def __init__(
        self,
        seed: int = 0,
        frames_per_room: int = 24,
        width: int = 320,
        height: int = 240,
        noise: float = 0.0,
        depth: DepthConfig | None = None,
        max_frames: int | None = None,
    ):
        if frames_per_room < 4:
            raise ValueError(f"frames_per_room must be >= 4, got {frames_per_room}")
        check_render(width, height, noise)
        self.seed = int(seed)
        self.noise = float(noise)
        self.up = (0.0, 0.0, 1.0)
        self.kind = "synthetic-building"
        self.depth_config = depth if depth is not None else DepthConfig()
        self.name = f"synthetic-building-{self.seed}"
        self.intrinsics = camera_intrinsics(width, height)
        rng = np.random.default_rng([self.seed, 7])
        u = rng.uniform
        W, D = 8.0 + u(-0.5, 0.5), 6.0 + u(-0.3, 0.3)
        self.size = (W, D)
        self.floor_heights = [0.0, STOREY_HEIGHT]
        first = bool(rng.integers(2))
        kinds = [ROOM_KINDS[i] for i in rng.permutation(len(ROOM_KINDS))]

        structures: list[SceneObject] = []
        objects: list[SceneObject] = []
        self.rooms: list[TrueRoom] = []
        self.object_room: dict[int, int] = {}
        plans = []
        next_id = 1

        def structure(cls: str, parts: list[Primitive]) -> None:
            nonlocal next_id
            structures.append(_make_object(next_id, cls, parts))
            next_id += 1

        for k, z in enumerate(self.floor_heights):
            structure("floor", [_box(-T_OUT, -T_OUT, z - SLAB, W + T_OUT, D + T_OUT, z)])
            structure("ceiling", [_box(-T_OUT, -T_OUT, z + WALL_HEIGHT, W + T_OUT, D + T_OUT, z + WALL_HEIGHT + SLAB)])
            for parts in (
                [_box(-T_OUT, -T_OUT, z, 0.0, D + T_OUT, z + WALL_HEIGHT)],
                [_box(W, -T_OUT, z, W + T_OUT, D + T_OUT, z + WALL_HEIGHT)],
                [_box(0.0, -T_OUT, z, W, 0.0, z + WALL_HEIGHT)],
                [_box(0.0, D, z, W, D + T_OUT, z + WALL_HEIGHT)],
            ):
                structure("wall", parts)
            rects, walls, doors = _plan(rng, W, D, first if k == 0 else not first, z)
            for w in walls:  # one instance per wall piece (a doorway's jambs and lintel apart)
                structure("wall", [w])
            plans.append((rects, doors, z))

        # Rooms and their furniture (ids of the rooms: in the order the camera visits them).
        self.frame_room: list[int | None] = []
        poses: list[np.ndarray] = []
        last_xy: np.ndarray | None = None
        for k, (rects, doors, z) in enumerate(plans):
            # the walk: room 0 -> 1 -> 2 (doors 0-1 and 1-2), or back, starting at the end
            # nearest to where the camera left the storey below
            order = [0, 1, 2]
            if last_xy is not None:
                centres = [np.add(lo, hi) / 2 for lo, hi in rects]
                if np.linalg.norm(centres[2] - last_xy) < np.linalg.norm(centres[0] - last_xy):
                    order = [2, 1, 0]
            ids = {}
            for i in order:
                lo, hi = rects[i]
                room = TrueRoom(len(self.rooms) + 1, k, kinds[len(self.rooms)], lo, hi, z)
                ids[i] = room.id
                self.rooms.append(room)
                doors_here = [d.center for d in doors if i in d.rooms]
                furniture = _furnish(rng, room, doors_here, next_id)
                next_id += len(furniture)
                objects += furniture
                self.object_room.update({o.id: room.id for o in furniture})
            for step, i in enumerate(order):
                room = self.room(ids[i])
                if step > 0:  # through the doorway from the previous room
                    prev = order[step - 1]
                    door = next(d for d in doors if set(d.rooms) == {prev, i})
                    sign = 1.0 if door.rooms[0] == prev else -1.0
                    n = np.asarray(door.normal) * sign
                    c = np.asarray(door.center)
                    start = poses[-1][:2, 3]
                    nxt_start_angle = float(np.arctan2(*(c - room.center)[::-1]))
                    loop = _loop(room, frames_per_room, nxt_start_angle, u(0, 2 * np.pi))
                    walk = _walk([start, c - 0.6 * n, c + 0.6 * n, loop[0][:2, 3]], z)
                    poses += walk
                    self.frame_room += [self._room_at(p[:3, 3]) for p in walk]
                    poses += loop
                else:
                    angle = 0.0 if last_xy is None else float(np.arctan2(*(last_xy - room.center)[::-1]))
                    loop = _loop(room, frames_per_room, angle, u(0, 2 * np.pi))
                    poses += loop
                self.frame_room += [room.id] * len(loop)
            last_xy = poses[-1][:2, 3].copy()

        self.structures, self.objects = structures, objects
        self.instances = [*structures, *objects]
        self.instance_classes = {o.id: o.class_name for o in self.instances}
        self.poses = np.array(poses)
        if max_frames is not None:
            self.poses = self.poses[: int(max_frames)]
            self.frame_room = self.frame_room[: int(max_frames)]
        self._check_cameras()
        self._init_renderer()

    def room(self, room_id: int) -> TrueRoom:
        return next(r for r in self.rooms if r.id == room_id)

    def _room_at(self, p: np.ndarray) -> int | None:
        for r in self.rooms:
            if r.height - 0.5 <= p[2] <= r.height + WALL_HEIGHT and r.contains(p[0], p[1]):
                return r.id
        return None

    def true_room_of(self, point: np.ndarray) -> int | None:
        """The true room holding a 3-D point (None: a wall, a doorway or outside)."""
        return self._room_at(np.asarray(point, float))

    def _check_cameras(self) -> None:
        for i, T in enumerate(self.poses):
            eye = T[:3, 3]
            for obj in self.instances:
                for p in obj.parts:
                    lo = np.subtract(p.center, np.divide(p.size, 2)) - 0.05
                    hi = np.add(p.center, np.divide(p.size, 2)) + 0.05
                    if np.all(eye > lo) and np.all(eye < hi):
                        raise RuntimeError(f"camera {i} of building {self.seed} is inside {obj.class_name} {obj.id}")

    def stamp(self, i: int) -> float:
        return (i % len(self)) / FPS

    def __repr__(self) -> str:
        return f"BuildingScene(seed={self.seed}, frames={len(self)}, rooms={len(self.rooms)}, objects={len(self.objects)})"


def make_building(seed: int = 0, frames_per_room: int = 24, width: int = 320, height: int = 240, noise: float = 0.0,
                  *, depth: DepthConfig | None = None, max_frames: int | None = None) -> BuildingScene:
    """The building of ``seed``; ``max_frames`` keeps the first part of the walk."""
    return BuildingScene(seed, frames_per_room, width, height, noise, depth, max_frames)


PREFIX = "synthetic-building"


def building_seed(path: str) -> int | None:
    """'synthetic-building' or 'synthetic-building:SEED' -> seed; anything else -> None."""
    return named_seed(path, PREFIX)


def _is_building(path: Path) -> bool:
    return building_seed(str(path)) is not None and not path.exists()


@register_dataset("synthetic-building", detect=_is_building, order=0)
def open_building(path: str | Path, depth: DepthConfig | None = None, max_frames: int | None = None, stride: int = 1) -> BuildingScene:
    """The building of ``synthetic-building[:SEED]``: 24 frames per room, or 24 // ``stride``;
    ``max_frames`` keeps the first part of the walk."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return make_building(seed=building_seed(str(path)) or 0, frames_per_room=max(4, 24 // int(stride)), depth=depth, max_frames=max_frames)


__all__ = ["BuildingScene", "COLORS", "TrueRoom", "make_building", "open_building"]
