"""Pictures of a map: a top-down PNG (structure in grey, labelled objects, scale, legend) and a PLY."""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..core.fileio import atomic_output, atomic_write_bytes
from ..core.objects import MapSnapshot


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


def _axis_name(v: np.ndarray) -> str:
    """'y' for +y (z-up maps), '-y', '+z', ... for the map axis a picture direction follows
    within 10 degrees; '' when it follows none."""
    k = int(np.argmax(np.abs(v)))
    if abs(v[k]) < np.cos(np.radians(10.0)):
        return ""
    name = "xyz"[k]
    if v[k] > 0:
        return name if name == "y" else "+" + name
    return "-" + name


STRUCTURE_LABELS = {
    "floor": "floor", "ground": "floor", "carpet": "floor", "rug": "floor",
    "wall": "wall", "walls": "wall", "window": "wall", "door": "wall", "doorframe": "wall",
    "ceiling": "ceiling",
}
# Structure shades (RGB): floor light, walls dark, ceiling only outlined (it would hide the room).
STRUCTURE_COLORS = {"floor": (222, 222, 222), "wall": (120, 120, 120), "ceiling": (170, 170, 170)}


def structure_kind(obj, up=(0.0, 0.0, 1.0), all_objects=None) -> str | None:
    """'floor' / 'wall' / 'ceiling' for room structure, else None.

    By label when the map has one (floor, wall, ceiling, door, window, ...); otherwise by the
    gravity-aligned box: a large flat horizontal box (>= 1 m^2, height < 10 % of its length and
    < 0.15 m) is floor, or ceiling when it lies above the middle of the map's height range; a
    thin, long, tall vertical box (thickness < 0.15 m, length and height >= 1 m) is a wall.
    """
    label = (obj.label or "").strip().lower()
    if label in STRUCTURE_LABELS:
        return STRUCTURE_LABELS[label]
    upv = np.asarray(up, float) / np.linalg.norm(up)
    b = obj.box
    along_up = np.abs(b.rotation.T @ upv)
    k = int(np.argmax(along_up))
    if along_up[k] < 0.9:  # not gravity-aligned: no structure call
        return None
    height = float(b.extent[k])
    flat = sorted(float(b.extent[i]) for i in range(3) if i != k)
    thin, length = flat
    if length * thin >= 1.0 and height < max(0.1 * length, 0.02) and height < 0.15:
        if all_objects:
            tops = [float(np.max(o.points @ upv)) for o in all_objects if len(o.points)]
            bottoms = [float(np.min(o.points @ upv)) for o in all_objects if len(o.points)]
            level = float(b.center @ upv)
            if tops and level > (min(bottoms) + max(tops)) / 2 + 0.5:
                return "ceiling"
        return "floor"
    if thin < 0.15 and length >= 1.0 and height >= 1.0:
        return "wall"
    return None


def _wall_like(ground_xy: np.ndarray, height: np.ndarray) -> bool:
    """Points whose ground footprint is thin (< 0.2 m) and long (>= 1 m) and that rise >= 1 m."""
    if len(ground_xy) < 10 or float(np.ptp(height)) < 1.0:
        return False
    (_, _), (w, h), _ = cv2.minAreaRect(np.asarray(ground_xy, np.float32))
    return min(w, h) < 0.2 and max(w, h) >= 1.0


def _text_size(text: str, scale: float, thickness: int = 1) -> tuple[int, int, int]:
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    return w, h, base


def place_labels(
    anchors: list[tuple[float, float]],
    sizes: list[tuple[int, int]],
    width: int,
    height: int,
    pad: int = 2,
    keep_clear: int = 4,
    fits_inside: list[bool] | None = None,
) -> list[tuple[int, int, int, int] | None]:
    """Greedy label placement without overlap: for each anchor (in the given priority order) the
    first candidate rectangle (centred on it, then on rings of growing radius around it) that
    stays inside the picture, overlaps no label placed before and covers no other anchor (a
    ``keep_clear`` px square around each, so small objects stay visible); a label covers its
    own anchor only where ``fits_inside`` says the object is larger than the label. Returns
    (x0, y0, x1, y1) per label, or None when no free spot was found."""
    placed: list[tuple[int, int, int, int]] = []
    marks = [(ax - keep_clear, ay - keep_clear, ax + keep_clear, ay + keep_clear) for ax, ay in anchors]
    out: list[tuple[int, int, int, int] | None] = []
    offsets = [(0.0, 0.0)]
    for radius in (14, 26, 40, 56, 76, 100, 130, 170):
        n = max(12, int(2 * np.pi * radius / 12))
        offsets += [(radius * np.cos(a), radius * np.sin(a)) for a in np.linspace(0, 2 * np.pi, n, endpoint=False)]
    for i, ((ax, ay), (w, h)) in enumerate(zip(anchors, sizes)):
        inside = True if fits_inside is None else fits_inside[i]
        others = [m for j, m in enumerate(marks) if (j != i and anchors[j] != anchors[i]) or (j == i and not inside)]
        spot = None
        for dx, dy in offsets:
            x0, y0 = int(round(ax + dx - w / 2)) - pad, int(round(ay + dy - h / 2)) - pad
            rect = (x0, y0, x0 + w + 2 * pad, y0 + h + 2 * pad)
            if rect[0] < 0 or rect[1] < 0 or rect[2] >= width or rect[3] >= height:
                continue
            if any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed + others):
                continue
            spot = rect
            break
        if spot is not None:
            placed.append(spot)
        out.append(spot)
    return out


def _nice_length(metres: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above ``metres``."""
    if metres <= 0:
        return 1.0
    k = np.floor(np.log10(metres))
    for m in (5, 2, 1):
        if m * 10**k <= metres:
            return float(m * 10**k)
    return float(10**k)


def render_topdown(
    snapshot: MapSnapshot, up=(0.0, 0.0, 1.0), size: int = 900, margin: int = 40, legend_width: int = 260, rooms=()
) -> np.ndarray:
    """RGB picture of the map seen from above, with a legend panel on the right.

    Room structure (floor, walls, ceiling; see ``structure_kind``; and every voxel at floor level)
    is drawn in grey, objects in
    their instance colour (lowest first, so things on tables stay visible) with their box outline
    and a label (``id label``, or ``id``) placed without overlap, joined to the object by a thin
    line when moved off it. A scale bar and north arrow (map x right, y up for z-up maps; the arrow
names the map axis it follows otherwise) sit in
    the bottom-left corner; the legend lists the structure shades and every object. ``rooms``
    (the hierarchy's Room list) are outlined in dark blue with their label.
    """
    img = np.full((size, size + legend_width, 3), 255, np.uint8)
    objs = [o for o in snapshot.objects if len(o.points)]
    if not objs:
        cv2.putText(img, "empty map", (margin, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        return img
    P = _ground_frame(up)
    upv = np.asarray(up, float) / np.linalg.norm(up)
    all_xy = np.concatenate([o.points @ P for o in objs])
    lo, hi = all_xy.min(axis=0), all_xy.max(axis=0)
    scale = (size - 2 * margin) / max(float((hi - lo).max()), 1e-6)
    # centre the map in the drawing area
    lo = lo - ((size - 2 * margin) / scale - (hi - lo)) / 2

    def to_px(xy: np.ndarray) -> np.ndarray:
        px = (xy - lo) * scale + margin
        return np.stack([px[:, 0], size - px[:, 1]], axis=1).astype(np.int32)

    kinds = {o.id: structure_kind(o, up, objs) for o in objs}
    # Voxels at floor level are floor whichever object holds them (segmenters often give an
    # object a strip of the floor around it, or a wall its foot): they are drawn grey, and an
    # unlabelled object with (almost) nothing above the floor counts as floor.
    heights = {o.id: o.points @ upv for o in objs}
    floor_level = float(np.percentile(np.concatenate(list(heights.values())), 2))
    floor_tol = max(2.0 * snapshot.voxel_size, 0.04)
    raised = {o.id: heights[o.id] > floor_level + floor_tol for o in objs}
    for o in objs:
        if kinds[o.id] is not None or o.label:
            continue
        if raised[o.id].mean() < 0.05:
            kinds[o.id] = "floor"
        elif _wall_like(o.points[raised[o.id]] @ P, heights[o.id][raised[o.id]]):
            kinds[o.id] = "wall"  # what rises above the floor is a thin, long, tall slab
    structure = [o for o in objs if kinds[o.id]]
    things = [o for o in objs if not kinds[o.id]]
    half = max(1, int(round(scale * snapshot.voxel_size / 2)))  # each voxel at its true size
    kernel = np.ones((2 * half + 1, 2 * half + 1), np.uint8)

    def footprint(points: np.ndarray) -> np.ndarray:
        layer = np.zeros((size, size), np.uint8)
        px = to_px(points @ P)
        ok = (px[:, 0] >= 0) & (px[:, 0] < size) & (px[:, 1] >= 0) & (px[:, 1] < size)
        layer[px[ok, 1], px[ok, 0]] = 1
        return cv2.dilate(layer, kernel) > 0

    canvas = img[:, :size]
    floor_pts = [o.points[~raised[o.id]] for o in things]
    floor_pts += [o.points for o in structure if kinds[o.id] == "floor"]
    if floor_pts:
        canvas[footprint(np.concatenate(floor_pts))] = STRUCTURE_COLORS["floor"]
    for o in structure:
        if kinds[o.id] == "wall":
            canvas[footprint(o.points)] = STRUCTURE_COLORS["wall"]
        elif kinds[o.id] == "ceiling":  # outline only: a filled ceiling would hide the room
            mask = footprint(o.points)
            edges = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            canvas[edges] = STRUCTURE_COLORS["ceiling"]
    things.sort(key=lambda o: float(np.max(heights[o.id])))  # low first
    for o in things:
        canvas[footprint(o.points[raised[o.id]])] = instance_color(o.id)
    centres: dict[int, np.ndarray] = {}
    for o in things:
        b = o.box
        corners = np.array([[sx, sy] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]) * 0.5
        axes = np.argsort(np.abs(b.rotation.T @ upv))[:2]  # the box's two axes nearest the ground
        local = np.zeros((4, 3))
        local[:, axes[0]], local[:, axes[1]] = corners[:, 0] * b.extent[axes[0]], corners[:, 1] * b.extent[axes[1]]
        world = b.center + local @ b.rotation.T
        col = tuple(int(c * 0.55) for c in instance_color(o.id))
        cv2.polylines(canvas, [to_px(world @ P).reshape(-1, 1, 2)], True, col, 1, cv2.LINE_AA)
        centres[o.id] = to_px((b.center @ P)[None])[0]

    # labels: small objects first (they need a spot close by), none covering another object's centre
    font, fscale = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    labelled = sorted(things, key=lambda o: o.num_voxels)
    texts = [f"{o.id} {o.label}".strip() for o in labelled]
    sizes = [(_text_size(t, fscale)[0], _text_size(t, fscale)[1] + _text_size(t, fscale)[2]) for t in texts]
    fits = [bool(min(o.box.extent[a] for a in np.argsort(np.abs(o.box.rotation.T @ upv))[:2]) * scale > 1.5 * h) and bool(
        max(o.box.extent[a] for a in np.argsort(np.abs(o.box.rotation.T @ upv))[:2]) * scale > 1.2 * w
    ) for o, (w, h) in zip(labelled, sizes)]
    rects = place_labels([tuple(map(float, centres[o.id])) for o in labelled], sizes, size, size, fits_inside=fits)
    for o, text, rect in zip(labelled, texts, rects):
        if rect is None:
            continue
        x0, y0, x1, y1 = rect
        c = centres[o.id]
        if not (x0 <= c[0] <= x1 and y0 <= c[1] <= y1):  # moved off the object: leader line
            nearest = (int(np.clip(c[0], x0, x1)), int(np.clip(c[1], y0, y1)))
            cv2.line(canvas, (int(c[0]), int(c[1])), nearest, (60, 60, 60), 1, cv2.LINE_AA)
            cv2.circle(canvas, (int(c[0]), int(c[1])), 2, (60, 60, 60), -1)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (255, 255, 255), -1)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), tuple(int(v * 0.55) for v in instance_color(o.id)), 1)
        cv2.putText(canvas, text, (x0 + 2, y1 - 2 - _text_size(text, fscale)[2] // 2), font, fscale, (0, 0, 0), 1, cv2.LINE_AA)

    for room in rooms:  # the hierarchy's room outlines (all floors; they overlap in a top view)
        if len(room.outline) < 3:
            continue
        poly = to_px(np.asarray(room.outline, float) @ P)
        cv2.polylines(canvas, [poly.reshape(-1, 1, 2)], True, (30, 50, 160), 2, cv2.LINE_AA)
        c = to_px((np.asarray(room.centroid, float) @ P)[None])[0]
        cv2.putText(canvas, room.label or f"room {room.id}", (int(c[0]) - 20, int(c[1])), font, 0.5, (30, 50, 160), 1, cv2.LINE_AA)

    # scale bar (a round length near a fifth of the picture) and north arrow
    metres = _nice_length((size - 2 * margin) / scale / 5)
    bar = int(round(metres * scale))
    x0, y0 = margin, size - 14
    cv2.rectangle(canvas, (x0 - 4, y0 - 24), (x0 + bar + 60, y0 + 6), (255, 255, 255), -1)
    cv2.line(canvas, (x0, y0), (x0 + bar, y0), (0, 0, 0), 3)
    for x in (x0, x0 + bar):
        cv2.line(canvas, (x, y0 - 6), (x, y0 + 4), (0, 0, 0), 2)
    cv2.putText(canvas, f"{metres:g} m", (x0 + bar + 12, y0 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.arrowedLine(canvas, (size - 24, 56), (size - 24, 22), (0, 0, 0), 2, tipLength=0.35)
    north = _axis_name(P[:, 1])
    (tw, _), _ = cv2.getTextSize(north, font, 0.45, 1)
    cv2.putText(canvas, north, (size - 34 - tw, 34), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)

    # legend panel
    panel = img[:, size:]
    panel[:] = (248, 248, 248)
    cv2.line(img, (size, 0), (size, size), (180, 180, 180), 1)
    y = 28
    cv2.putText(panel, "core3d map (top view)", (12, y), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    y += 20
    n_struct = {k: sum(1 for o in structure if kinds[o.id] == k) for k in STRUCTURE_COLORS}
    cv2.putText(panel, f"{len(things)} objects, {len(structure)} structure", (12, y), font, 0.42, (60, 60, 60), 1, cv2.LINE_AA)
    y += 24
    for kind, col in STRUCTURE_COLORS.items():
        if kind == "ceiling":
            cv2.rectangle(panel, (12, y - 11), (30, y + 3), col, 2)
        else:
            cv2.rectangle(panel, (12, y - 11), (30, y + 3), col, -1)
        cv2.putText(panel, f"{kind} ({n_struct[kind]})", (38, y), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        y += 20
    y += 8
    line_h = 18
    rows = max(0, (size - y - 30) // line_h)
    listed = sorted(things, key=lambda o: o.id)
    for o in listed[:rows]:
        cv2.rectangle(panel, (12, y - 11), (30, y + 3), instance_color(o.id), -1)
        text = f"{o.id} {o.label or '(no label)'}  {o.num_voxels * snapshot.voxel_size ** 3 * 1e3:.1f} L"
        cv2.putText(panel, text[:34], (38, y), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        y += line_h
    if len(listed) > rows:
        cv2.putText(panel, f"... and {len(listed) - rows} more", (12, y), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    placed = sum(r is not None for r in rects)
    if placed < len(rects):
        cv2.putText(panel, f"{len(rects) - placed} labels did not fit", (12, size - 12), font, 0.4, (120, 0, 0), 1, cv2.LINE_AA)
    return img


def write_topdown_png(snapshot: MapSnapshot, path: str | os.PathLike, up=(0.0, 0.0, 1.0), rooms=()) -> str:
    img = render_topdown(snapshot, up, rooms=rooms)
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
