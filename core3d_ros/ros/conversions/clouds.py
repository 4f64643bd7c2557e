"""sensor_msgs/PointCloud2 (x, y, z, packed rgb) <-> numpy, and the map's points coloured by instance."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField

from ...core.objects import MapSnapshot, ObjectInfo
from .colors import instance_color
from .errors import ConversionError
from .headers import make_header

CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
_CLOUD_FIELDS = (
    ("x", 0, PointField.FLOAT32),
    ("y", 4, PointField.FLOAT32),
    ("z", 8, PointField.FLOAT32),
    ("rgb", 12, PointField.FLOAT32),  # packed 0x00RRGGBB read as float32 (PCL / RViz convention)
)


def points_to_cloud(
    points: np.ndarray, colors: np.ndarray | None = None, *, frame_id: str = "", stamp: Time | float = 0.0
) -> PointCloud2:
    """(N, 3) points + optional (N, 3) uint8 RGB -> unorganised PointCloud2 (x, y, z, rgb)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    n = len(pts)
    rec = np.empty(n, dtype=CLOUD_DTYPE)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is None:
        rec["rgb"] = 0x00FFFFFF
    else:
        c = np.asarray(colors).reshape(-1, 3).astype(np.uint32)
        if len(c) != n:
            raise ValueError(f"{len(c)} colours for {n} points")
        rec["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    return records_to_cloud(rec, frame_id=frame_id, stamp=stamp)


def records_to_cloud(rec: np.ndarray, *, frame_id: str = "", stamp: Time | float = 0.0) -> PointCloud2:
    """(N,) CLOUD_DTYPE records -> unorganised PointCloud2 (x, y, z, rgb)."""
    n = len(rec)
    msg = PointCloud2()
    msg.header = make_header(frame_id, stamp)
    msg.height, msg.width = 1, n
    msg.fields = [PointField(name=name, offset=off, datatype=dt, count=1) for name, off, dt in _CLOUD_FIELDS]
    msg.is_bigendian = False
    msg.point_step = CLOUD_DTYPE.itemsize
    msg.row_step = CLOUD_DTYPE.itemsize * n
    msg.is_dense = bool(all(np.isfinite(rec[axis]).all() for axis in ("x", "y", "z")))
    msg.data = rec.tobytes()
    return msg


def cloud_to_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 with float32 x/y/z (and optionally packed rgb) -> ((N, 3) float32, (N, 3) uint8 or None)."""
    fields = {f.name: f for f in msg.fields}
    for name in ("x", "y", "z"):
        if name not in fields or fields[name].datatype != PointField.FLOAT32:
            raise ConversionError(f"point cloud needs float32 field {name!r}")
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = ["x", "y", "z"], [order + "f4"] * 3, [fields[n].offset for n in "xyz"]
    if "rgb" in fields:
        names.append("rgb")
        formats.append(order + "u4")
        offsets.append(fields["rgb"].offset)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(msg.point_step)})
    n = int(msg.width) * int(msg.height)
    if len(msg.data) < n * msg.point_step:
        raise ConversionError(f"point cloud data has {len(msg.data)} bytes, expected {n * msg.point_step}")
    rec = np.frombuffer(msg.data, dtype=dtype, count=n)
    pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    rgb = None
    if "rgb" in fields:
        v = rec["rgb"].astype(np.uint32)
        rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=1).astype(np.uint8)
    return pts, rgb


def snapshot_to_cloud(snapshot: MapSnapshot, *, frame_id: str, stamp: Time | float = 0.0, step: int = 1) -> PointCloud2:
    """All objects' voxel centres (every ``step``-th of each), coloured by instance (a
    deterministic colour per id)."""
    return records_to_cloud(cloud_records([object_cloud(o, step) for o in snapshot.objects]), frame_id=frame_id, stamp=stamp)


def object_cloud(obj: ObjectInfo, step: int = 1) -> np.ndarray:
    """Every ``step``-th voxel centre of one object, in its instance colour, as CLOUD_DTYPE records."""
    pts = np.asarray(obj.points, np.float32).reshape(-1, 3)[::step]
    rec = np.empty(len(pts), CLOUD_DTYPE)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    r, g, b = instance_color(obj.id)
    rec["rgb"] = (r << 16) | (g << 8) | b
    return rec


def cloud_records(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The records of several objects, in order, as one array."""
    return np.concatenate(parts) if len(parts) else np.zeros(0, CLOUD_DTYPE)
