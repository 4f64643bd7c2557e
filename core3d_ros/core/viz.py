"""Pictures of a map: a top-down PNG with object boxes and ids, and a PLY for 3-D viewers."""
from __future__ import annotations

import os

import cv2
import numpy as np

from .fileio import atomic_output, atomic_write_bytes
from .objects import MapSnapshot


def instance_color(oid: int) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour per object id (golden-ratio hue steps)."""
    hue = (oid * 0.618033988749895) % 1.0
    hsv = np.array([[[hue * 179, 200, 230]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _ground_frame(up) -> np.ndarray:
    up = np.asarray(up, float)
    up = up / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    if abs(up[2]) > 0.9:  # z-up maps: keep world x to the right, y up in the picture
        a = np.array([1.0, 0.0, 0.0]) - up * up[0]
        a /= np.linalg.norm(a)
    return np.stack([a, np.cross(up, a)], axis=1)  # 3x2 projection onto the ground plane


def render_topdown(snapshot: MapSnapshot, up=(0.0, 0.0, 1.0), size: int = 900, margin: int = 40) -> np.ndarray:
    """RGB image of the map seen from above: points in instance colours, boxes, ids and labels."""
    img = np.full((size, size, 3), 255, np.uint8)
    objs = [o for o in snapshot.objects if len(o.points)]
    if not objs:
        cv2.putText(img, "empty map", (margin, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        return img
    P = _ground_frame(up)
    upv = np.asarray(up, float) / np.linalg.norm(up)
    all_xy = np.concatenate([o.points @ P for o in objs])
    lo, hi = all_xy.min(axis=0), all_xy.max(axis=0)
    scale = (size - 2 * margin) / max(float((hi - lo).max()), 1e-6)

    def to_px(xy: np.ndarray) -> np.ndarray:
        px = (xy - lo) * scale + margin
        return np.stack([px[:, 0], size - px[:, 1]], axis=1).astype(np.int32)

    # Draw low objects first so that things on top of others stay visible.
    objs.sort(key=lambda o: float(np.max(o.points @ upv)))
    half = max(1, int(round(scale * snapshot.voxel_size / 2)))  # draw each voxel at its true size
    for o in objs:
        layer = np.zeros((size, size), np.uint8)
        px = to_px(o.points @ P)
        ok = (px[:, 0] >= 0) & (px[:, 0] < size) & (px[:, 1] >= 0) & (px[:, 1] < size)
        layer[px[ok, 1], px[ok, 0]] = 1
        layer = cv2.dilate(layer, np.ones((2 * half + 1, 2 * half + 1), np.uint8))
        img[layer > 0] = instance_color(o.id)
    for o in objs:
        col = instance_color(o.id)
        b = o.box
        corners = np.array([[sx, sy, 0.0] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]) * 0.5
        # The box's two axes closest to the ground plane.
        axes = np.argsort(np.abs(b.rotation.T @ upv))[:2]
        local = np.zeros((4, 3))
        local[:, axes[0]], local[:, axes[1]] = corners[:, 0] * b.extent[axes[0]], corners[:, 1] * b.extent[axes[1]]
        world = b.center + local @ b.rotation.T
        cv2.polylines(img, [to_px(world @ P).reshape(-1, 1, 2)], True, tuple(int(c * 0.6) for c in col), 1, cv2.LINE_AA)
        text = f"{o.id} {o.label}".strip()
        c = to_px((b.center @ P)[None])[0]
        cv2.putText(img, text, (int(c[0]) - 10, int(c[1])), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
        cv2.putText(img, text, (int(c[0]) - 10, int(c[1])), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    # Scale bar: one metre.
    cv2.line(img, (margin, size - 15), (margin + int(scale), size - 15), (0, 0, 0), 3)
    cv2.putText(img, "1 m", (margin, size - 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return img


def write_topdown_png(snapshot: MapSnapshot, path: str | os.PathLike, up=(0.0, 0.0, 1.0)) -> str:
    img = render_topdown(snapshot, up)
    ok, buf = cv2.imencode(".png", img[:, :, ::-1])
    if not ok:
        raise OSError("PNG encoding failed")
    return atomic_write_bytes(path, buf.tobytes())


# The header Open3D writes for our clouds, used as is for a map without points (Open3D refuses
# to write an empty cloud, and an empty map is a normal result of a short sequence).
_EMPTY_PLY = (
    b"ply\nformat binary_little_endian 1.0\ncomment core3d: empty map (no objects)\nelement vertex 0\n"
    b"property float x\nproperty float y\nproperty float z\n"
    b"property float red\nproperty float green\nproperty float blue\nproperty int instance\nend_header\n"
)


def write_ply(snapshot: MapSnapshot, path: str | os.PathLike, by_instance: bool = True) -> str:
    """PLY of the map's voxel centres, coloured by instance (or observed colour), with an
    ``instance`` property per point; written by Open3D to a temporary file, then renamed. A map
    without points gives a valid PLY with zero vertices and the same properties."""
    objs = snapshot.objects
    n = sum(len(o.points) for o in objs)
    if n == 0:
        return atomic_write_bytes(path, _EMPTY_PLY)
    import open3d as o3d

    pts = np.concatenate([o.points for o in objs]) if n else np.zeros((0, 3), np.float32)
    if by_instance:
        cols = [np.tile(np.array(instance_color(o.id), np.uint8), (len(o.points), 1)) for o in objs]
    else:
        cols = [o.colors for o in objs]
    col = np.concatenate(cols) if n else np.zeros((0, 3), np.uint8)
    ids = np.concatenate([np.full(len(o.points), o.id, np.int32) for o in objs]) if n else np.zeros(0, np.int32)
    pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(pts.astype(np.float32)))
    pcd.point.colors = o3d.core.Tensor(col.astype(np.float32) / 255.0)
    pcd.point.instance = o3d.core.Tensor(ids[:, None])
    with atomic_output(path, suffix=".ply") as tmp:
        if not o3d.t.io.write_point_cloud(tmp, pcd, write_ascii=False):
            raise OSError(f"could not write {path}")
    return str(path)
