"""A deterministic synthetic room with known 3-D object instances, rendered by ray casting.

The world frame is z-up with the floor at z = 0. The room has a floor and four walls (each an
instance of class ``floor`` / ``wall``) and 7-10 pieces of furniture built from boxes and
cylinders, each of one flat, distinct colour; some stand on others (a mug, a monitor and maybe a
book on the table, maybe a vase on the cabinet), so spatial queries such as "the mug on the
table" have a ground-truth answer. A camera flies one loop at about 1.4 m height looking at the
middle of the room; every frame carries per-pixel instance ids and their class names.

Rendering uses ``open3d.t.geometry.RaycastingScene`` on the CPU (a few milliseconds per
320x240 frame). Everything (layout, trajectory, image noise) is a function of the seed, and a
frame depends only on the seed and its index, so random access is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ...config import DepthConfig
from ..camera import CameraIntrinsics, decode_depth
from ..frame import Frame
from .base import DatasetError, register_dataset

# Class colours (RGB). Fixed per class so colour words in queries stay meaningful.
COLORS: dict[str, tuple[int, int, int]] = {
    "floor": (115, 112, 108),
    "wall": (208, 200, 182),
    "table": (140, 90, 45),  # brown
    "chair": (200, 35, 35),  # red
    "sofa": (40, 70, 200),  # blue
    "cabinet": (40, 160, 70),  # green
    "mug": (235, 200, 30),  # yellow
    "monitor": (28, 28, 32),  # black
    "lamp": (245, 245, 235),  # white
    "crate": (235, 125, 30),  # orange
    "vase": (140, 60, 175),  # purple
    "trash bin": (30, 170, 180),  # cyan
    "book": (225, 90, 160),  # pink
    # the building (building.py)
    "ceiling": (236, 236, 240),
    "bed": (170, 190, 80),  # olive
    "shelf": (70, 110, 130),  # slate
}

STRUCTURE_CLASSES = ("floor", "wall")
TABLE_HEIGHT = 0.75
WALL_HEIGHT = 2.6
CAMERA_HEIGHT = 1.4
FPS = 30.0
HFOV_DEG = 60.0


@dataclass(frozen=True)
class Primitive:
    """One solid part: an axis-aligned box, or a z-axis cylinder (size = 2r, 2r, height)."""

    kind: str  # "box" | "cylinder"
    center: tuple[float, float, float]
    size: tuple[float, float, float]


@dataclass(eq=False)
class SceneObject:
    id: int
    class_name: str
    color: tuple[int, int, int]
    center: np.ndarray  # (3,) centre of the axis-aligned bounding box, metres, world frame
    size: np.ndarray  # (3,) extents of the axis-aligned box that bounds the object
    supported_by: int | None = None  # id of the object it stands on (None: the floor)
    parts: list[Primitive] = field(default_factory=list, repr=False)

    @property
    def bbox_min(self) -> np.ndarray:
        return self.center - self.size / 2

    @property
    def bbox_max(self) -> np.ndarray:
        return self.center + self.size / 2

    @property
    def top(self) -> float:
        return float(self.center[2] + self.size[2] / 2)


def _box(cx: float, cy: float, z0: float, sx: float, sy: float, sz: float) -> Primitive:
    """Box with footprint centre (cx, cy), from height z0 up by sz."""
    return Primitive("box", (cx, cy, z0 + sz / 2), (sx, sy, sz))


def _cyl(cx: float, cy: float, z0: float, r: float, h: float) -> Primitive:
    return Primitive("cylinder", (cx, cy, z0 + h / 2), (2 * r, 2 * r, h))


def _make_object(oid: int, cls: str, parts: list[Primitive], supported_by: int | None = None) -> SceneObject:
    lo = np.min([np.subtract(p.center, np.divide(p.size, 2)) for p in parts], axis=0)
    hi = np.max([np.add(p.center, np.divide(p.size, 2)) for p in parts], axis=0)
    return SceneObject(
        id=oid,
        class_name=cls,
        color=COLORS[cls],
        center=(lo + hi) / 2,
        size=hi - lo,
        supported_by=supported_by,
        parts=parts,
    )


def _layout(rng: np.random.Generator) -> tuple[tuple[float, float], list[SceneObject], list[SceneObject]]:
    """Room size, structure instances (floor, walls) and furniture for one seed."""
    W = 5.0 + rng.uniform(-0.3, 0.3)  # x extent of the free interior
    D = 4.0 + rng.uniform(-0.2, 0.2)  # y extent
    hx, hy, t = W / 2, D / 2, 0.1
    structures = [
        _make_object(1, "floor", [_box(0.0, 0.0, -0.05, W + 2 * t, D + 2 * t, 0.05)]),
        _make_object(2, "wall", [_box(-hx - t / 2, 0.0, 0.0, t, D + 2 * t, WALL_HEIGHT)]),
        _make_object(3, "wall", [_box(hx + t / 2, 0.0, 0.0, t, D + 2 * t, WALL_HEIGHT)]),
        _make_object(4, "wall", [_box(0.0, -hy - t / 2, 0.0, W, t, WALL_HEIGHT)]),
        _make_object(5, "wall", [_box(0.0, hy + t / 2, 0.0, W, t, WALL_HEIGHT)]),
    ]
    u = rng.uniform
    objects: list[SceneObject] = []
    next_id = 6

    def add(cls: str, parts: list[Primitive], on: int | None = None) -> SceneObject:
        nonlocal next_id
        obj = _make_object(next_id, cls, parts, on)
        objects.append(obj)
        next_id += 1
        return obj

    # Table (top 1.2 x 0.8 at 0.75 m) with four legs.
    tx, ty = 0.3 + u(-0.2, 0.2), 0.1 + u(-0.15, 0.15)
    tw, td, top_t, leg = 1.2, 0.8, 0.04, 0.05
    legs = [
        _box(tx + sx * (tw / 2 - 0.06), ty + sy * (td / 2 - 0.06), 0.0, leg, leg, TABLE_HEIGHT - top_t)
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    table = add("table", [_box(tx, ty, TABLE_HEIGHT - top_t, tw, td, top_t), *legs])

    # Things on the table: monitor at the back, mug at the front right, maybe a book at the left.
    mx = tx + u(-0.15, 0.1)
    my = ty + 0.22
    add(
        "monitor",
        [
            _box(mx, my, TABLE_HEIGHT, 0.24, 0.16, 0.02),
            _box(mx, my, TABLE_HEIGHT + 0.02, 0.04, 0.04, 0.12),
            _box(mx, my - 0.02, TABLE_HEIGHT + 0.1, 0.6, 0.04, 0.36),
        ],
        table.id,
    )
    add("mug", [_cyl(tx + 0.38 + u(-0.05, 0.05), ty - 0.2 + u(-0.05, 0.05), TABLE_HEIGHT, 0.05, 0.11)], table.id)

    # Chair in front of the table (towards -y), backrest away from it.
    cx, cy = tx - 0.2 + u(-0.1, 0.1), ty - 0.78
    seat_h, s = 0.45, 0.45
    chair_legs = [
        _box(cx + sx * (s / 2 - 0.03), cy + sy * (s / 2 - 0.03), 0.0, 0.04, 0.04, seat_h - 0.05)
        for sx in (-1, 1)
        for sy in (-1, 1)
    ]
    add(
        "chair",
        [_box(cx, cy, seat_h - 0.05, s, s, 0.05), _box(cx, cy - s / 2 + 0.025, seat_h, s, 0.05, 0.45), *chair_legs],
    )

    # Sofa against the +y wall.
    sx0 = -1.0 + u(-0.3, 0.2)
    sy0 = hy - 0.45
    add(
        "sofa",
        [
            _box(sx0, sy0, 0.0, 2.0, 0.9, 0.42),
            _box(sx0, hy - 0.1, 0.42, 2.0, 0.2, 0.43),
            _box(sx0 - 0.925, sy0 - 0.1, 0.42, 0.15, 0.7, 0.2),
            _box(sx0 + 0.925, sy0 - 0.1, 0.42, 0.15, 0.7, 0.2),
        ],
    )

    # Cabinet against the +x wall, with two handles facing the room.
    kx, ky, kh = hx - 0.225, 0.9 + u(-0.2, 0.2), 1.1
    cabinet = add(
        "cabinet",
        [
            _box(kx, ky, 0.0, 0.45, 0.9, kh),
            _box(kx - 0.235, ky - 0.1, 0.6, 0.02, 0.03, 0.15),
            _box(kx - 0.235, ky + 0.1, 0.6, 0.02, 0.03, 0.15),
        ],
    )

    # Floor lamp in the (-x, -y) corner.
    lx, ly = -hx + 0.35, -hy + 0.35
    add("lamp", [_cyl(lx, ly, 0.0, 0.18, 0.04), _cyl(lx, ly, 0.04, 0.02, 1.3), _cyl(lx, ly, 1.3, 0.2, 0.3)])

    # Up to three optional objects, chosen by the seed.
    optional = ["crate", "vase", "trash bin", "book"]
    chosen = set(rng.choice(optional, size=int(rng.integers(0, 4)), replace=False).tolist())
    if "crate" in chosen:
        add("crate", [_box(hx - 0.5 + u(-0.1, 0.05), -hy + 0.45 + u(0.0, 0.1), 0.0, 0.5, 0.5, 0.4)])
    if "vase" in chosen:
        add("vase", [_cyl(kx + u(-0.05, 0.05), ky + u(-0.2, 0.2), kh, 0.07, 0.25)], cabinet.id)
    if "trash bin" in chosen:
        add("trash bin", [_cyl(-hx + 0.3, 0.1 + u(-0.2, 0.2), 0.0, 0.15, 0.35)])
    if "book" in chosen:
        add("book", [_box(tx - 0.42, ty - 0.15 + u(-0.05, 0.05), TABLE_HEIGHT, 0.2, 0.15, 0.04)], table.id)
    return (W, D), structures, objects


def camera_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """The synthetic camera: HFOV_DEG horizontal field of view, principal point in the middle."""
    f = width / (2.0 * np.tan(np.radians(HFOV_DEG) / 2))
    return CameraIntrinsics(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward) looking from eye at target."""
    f = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = r, d, f, eye
    return T


def _trajectory(rng: np.random.Generator, num_frames: int, room: tuple[float, float]) -> np.ndarray:
    """One loop around the room centre at about 1.4 m height, looking inwards."""
    W, D = room
    a, b = 0.31 * W, 0.27 * D  # ellipse radii, well inside the walls
    phase = rng.uniform(0.0, 2 * np.pi)
    wobble = rng.uniform(0.0, 2 * np.pi, size=3)
    poses = np.empty((num_frames, 4, 4))
    for i in range(num_frames):
        th = phase + 2 * np.pi * i / max(num_frames, 1)
        eye = np.array([a * np.cos(th), b * np.sin(th), CAMERA_HEIGHT + 0.1 * np.sin(2 * th + wobble[0])])
        target = np.array(
            [0.35 * np.cos(2 * th + wobble[1]), 0.25 * np.sin(3 * th + wobble[2]), 0.6 + 0.1 * np.cos(th)]
        )
        poses[i] = look_at(eye, target)
    return poses


def _changed(objects: list[SceneObject], remove: Iterable[str], move: Mapping[str, Sequence[float]]) -> list[SceneObject]:
    """``objects`` without the classes named in ``remove``, and those named in ``move`` shifted
    by their (x, y, z) offset in metres (same ids)."""
    names = {o.class_name for o in objects}
    remove = set(remove)
    unknown = sorted((remove | set(move)) - names)
    if unknown:
        raise ValueError(f"no object of class {unknown} in this scene (it has {sorted(names)})")
    out = []
    for o in objects:
        if o.class_name in remove:
            continue
        if o.class_name in move:
            off = np.asarray(move[o.class_name], float)
            if off.shape != (3,) or not np.all(np.isfinite(off)):
                raise ValueError(f"move offset of {o.class_name} must be 3 finite numbers, got {move[o.class_name]!r}")
            parts = [Primitive(p.kind, tuple(np.add(p.center, off).tolist()), p.size) for p in o.parts]
            o = _make_object(o.id, o.class_name, parts, o.supported_by)
        out.append(o)
    return out


def check_render(width: int, height: int, noise: float) -> None:
    """The rendering arguments a synthetic scene accepts (ValueError otherwise)."""
    if width < 8 or height < 8:
        raise ValueError(f"image size too small: {width}x{height}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")


class SyntheticScene:
    """A rendered synthetic room; implements the Dataset protocol (frames rendered on access)."""

    def __init__(
        self,
        seed: int = 0,
        num_frames: int = 60,
        width: int = 320,
        height: int = 240,
        noise: float = 0.0,
        depth: DepthConfig | None = None,
        remove: Iterable[str] = (),
        move: Mapping[str, Sequence[float]] | None = None,
    ):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        check_render(width, height, noise)
        self.seed = int(seed)
        self.noise = float(noise)
        self.up = (0.0, 0.0, 1.0)  # the world frame is z-up, floor at z = 0
        self.depth_config = depth if depth is not None else DepthConfig()
        self.name = f"synthetic-{self.seed}"
        self.intrinsics = camera_intrinsics(width, height)

        rng = np.random.default_rng(self.seed)
        self.room_size, self.structures, self.objects = _layout(rng)
        # The same room with objects taken away or moved (the layout and the trajectory draw
        # the same numbers, so both scenes share every other object and every pose).
        self.objects = _changed(self.objects, remove, move or {})
        self.instances: list[SceneObject] = [*self.structures, *self.objects]
        self.instance_classes: dict[int, str] = {o.id: o.class_name for o in self.instances}
        self.poses = _trajectory(rng, int(num_frames), self.room_size)
        self._check_cameras()
        self._init_renderer()

    def _init_renderer(self) -> None:
        """Palette, camera rays and the ray-casting scene of ``self.instances``."""
        self._scene = None  # built on first use (and rebuilt after unpickling)
        width, height = self.intrinsics.width, self.intrinsics.height
        max_id = max(self.instance_classes)
        self._palette = np.zeros((max_id + 1, 3), dtype=np.float32)
        for obj in self.instances:
            self._palette[obj.id] = obj.color
        v, u = np.mgrid[0:height, 0:width].astype(np.float32)
        intr = self.intrinsics
        self._dirs_cam = np.ascontiguousarray(
            np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], axis=-1).reshape(-1, 3),
            dtype=np.float32,
        )
        light = np.array([0.35, -0.45, 0.82])
        self._light = (light / np.linalg.norm(light)).astype(np.float32)
        self._build_raycaster()

    def _build_raycaster(self) -> None:
        """Ray-casting scene: one geometry per primitive, mapped back to its instance."""
        import open3d as o3d

        self._scene = o3d.t.geometry.RaycastingScene()
        geom_to_inst = []
        for obj in self.instances:
            for p in obj.parts:
                if p.kind == "box":
                    mesh = o3d.geometry.TriangleMesh.create_box(*p.size)
                    mesh.translate(np.subtract(p.center, np.divide(p.size, 2)))
                else:
                    mesh = o3d.geometry.TriangleMesh.create_cylinder(
                        radius=p.size[0] / 2, height=p.size[2], resolution=32
                    )
                    mesh.translate(p.center)
                gid = self._scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
                assert gid == len(geom_to_inst)
                geom_to_inst.append(obj.id)
        self._geom_to_inst = np.array(geom_to_inst + [0], dtype=np.int32)  # last entry: no hit

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_scene"] = None  # open3d scenes do not pickle
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _check_cameras(self) -> None:
        for i, T in enumerate(self.poses):
            eye = T[:3, 3]
            for obj in self.instances:
                if np.all(eye > obj.bbox_min - 0.05) and np.all(eye < obj.bbox_max + 0.05):
                    raise RuntimeError(f"camera {i} of seed {self.seed} is inside {obj.class_name} {obj.id}")

    # Dataset protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.poses)

    def pose(self, i: int) -> np.ndarray:
        return self.poses[i].copy()

    def stamp(self, i: int) -> float:
        return (i % len(self)) / FPS

    def object(self, oid: int) -> SceneObject:
        for obj in self.instances:
            if obj.id == oid:
                return obj
        raise KeyError(oid)

    def objects_of_class(self, class_name: str) -> list[SceneObject]:
        return [o for o in self.instances if o.class_name == class_name]

    def render(self, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noise-free (shading, z-depth, instance ids) for an arbitrary camera-to-world pose."""
        import open3d as o3d

        if self._scene is None:
            self._build_raycaster()
        h, w = self.intrinsics.height, self.intrinsics.width
        rays = np.empty((self._dirs_cam.shape[0], 6), dtype=np.float32)
        rays[:, :3] = np.asarray(pose[:3, 3], dtype=np.float32)
        # float32 @ float32 with a contiguous right operand keeps numpy's fast path
        np.matmul(self._dirs_cam, np.ascontiguousarray(np.asarray(pose[:3, :3]).T, dtype=np.float32), out=rays[:, 3:])
        hit = self._scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()  # along unnormalised directions whose camera z is 1: z-depth
        gid = hit["geometry_ids"].numpy()
        no_hit = len(self._geom_to_inst) - 1
        miss = ~np.isfinite(t) | (gid >= no_hit)
        ids = self._geom_to_inst[np.where(miss, no_hit, gid)]
        n = hit["primitive_normals"].numpy()
        # Lambert term of the normal turned towards the camera: flip where it faces the ray.
        n_dot_l = n @ self._light
        n_dot_ray = np.einsum("ij,ij->i", n, rays[:, 3:])
        n_dot_l = np.where(n_dot_ray > 0, -n_dot_l, n_dot_l)
        shade = np.float32(0.55) + np.float32(0.45) * np.maximum(n_dot_l, np.float32(0.0))
        shade[miss] = 0.0
        depth = np.where(miss, np.float32(0.0), t).astype(np.float32, copy=False)
        return shade.reshape(h, w), depth.reshape(h, w), ids.reshape(h, w)

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"frame index {i} out of range for {n} frames")
        i %= n
        pose = self.poses[i].copy()
        shade, z, ids = self.render(pose)
        rng = np.random.default_rng([self.seed, i])
        rgb = self._palette[ids] * shade[..., None] + 2.0 * rng.standard_normal(ids.shape + (3,), dtype=np.float32)
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        if self.noise > 0:
            valid = z > 0
            z = z + np.float32(self.noise) * rng.standard_normal(z.shape, dtype=np.float32)
            z[~valid] = 0.0
        dc = self.depth_config
        depth = decode_depth(z, "32FC1", min_depth=dc.min_depth, max_depth=dc.max_depth)
        return Frame(
            rgb=rgb,
            depth=depth,
            intrinsics=self.intrinsics,
            pose=pose,
            stamp=i / FPS,
            index=i,
            instance_ids=ids.astype(np.int32),
            instance_classes=dict(self.instance_classes),
        )

    def __repr__(self) -> str:
        return f"SyntheticScene(seed={self.seed}, frames={len(self)}, objects={len(self.objects)})"


def make_scene(
    seed: int = 0,
    num_frames: int = 60,
    width: int = 320,
    height: int = 240,
    noise: float = 0.0,
    *,
    depth: DepthConfig | None = None,
    remove: Iterable[str] = (),
    move: Mapping[str, Sequence[float]] | None = None,
) -> SyntheticScene:
    """Build the synthetic room for ``seed``; ``noise`` is the depth noise std in metres.
    ``remove``: class names of objects taken out of the room; ``move``: class name -> (x, y, z)
    offset in metres (the room after a change, seen along the same trajectory)."""
    return SyntheticScene(seed=seed, num_frames=num_frames, width=width, height=height, noise=noise, depth=depth, remove=remove, move=move)


def named_seed(path: str, name: str) -> int | None:
    """'NAME' or 'NAME:SEED' -> seed (0 without one); anything else -> None."""
    text = str(path)
    if text == name:
        return 0
    if text.startswith(name + ":"):
        try:
            return int(text.split(":", 1)[1])
        except ValueError:
            raise DatasetError(f"{name} seed must be an integer: {text!r}") from None
    return None


def synthetic_seed(path: str) -> int | None:
    """'synthetic' or 'synthetic:SEED' -> seed; anything else -> None."""
    return named_seed(path, "synthetic")


def _is_synthetic(path: Path) -> bool:
    return synthetic_seed(str(path)) is not None and not path.exists()


@register_dataset("synthetic", detect=_is_synthetic, order=0)
def open_synthetic(
    path: str | Path, depth: DepthConfig | None = None, max_frames: int | None = None, stride: int = 1
) -> SyntheticScene:
    """The room of ``synthetic[:SEED]`` as a dataset. The camera loop is always complete:
    ``max_frames`` sets its number of frames, 60 // ``stride`` by default."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n = max(1, 60 // int(stride)) if max_frames is None else int(max_frames)
    return make_scene(seed=synthetic_seed(str(path)) or 0, num_frames=n, depth=depth)
