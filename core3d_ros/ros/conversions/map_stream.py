"""core3d/ObjectState and core3d/MapUpdate (the map stream) <-> the map's objects and the
mirror's MapVersion (core/mapping/mirror.py).

An ObjectState is a core3d/Object plus what a query needs that Object lacks: the embedding as
IEEE half floats (raw uint16 bits) and a bounded sample of the object's voxels (every k-th voxel,
at most ``max_sample``) with their colours, for spatial relations. Converting an object costs
its sample, never all its voxels beyond one strided view.
"""
from __future__ import annotations

import array
import math
from typing import Any, Iterable

import numpy as np

from ...core.mapping.mirror import MapVersion, StreamedObject
from ...core.objects import ObjectInfo, OrientedBox
from .errors import PoseError
from .headers import make_header, to_seconds
from .objects import _core3d_msg, object_to_msg
from .poses import matrix_to_pose, pose_to_matrix


def sample_rows(n: int, max_sample: int) -> slice:
    """Every k-th row of ``n`` so that at most ``max_sample`` remain (all of them when n fits)."""
    step = max(1, math.ceil(n / max(1, int(max_sample))))
    return slice(0, n, step)


def _packed(values: np.ndarray, typecode: str, dtype: Any) -> array.array:
    """A numpy array as the array.array a message's sequence field holds, copied as bytes (the
    generated setter would convert a numpy array element by element)."""
    return array.array(typecode, np.ascontiguousarray(values, dtype=dtype).tobytes())


def object_state_to_msg(obj: ObjectInfo, max_sample: int) -> Any:
    """ObjectInfo -> core3d/ObjectState (embedding as fp16, at most ``max_sample`` voxels)."""
    m = _core3d_msg()
    msg = m.ObjectState()
    msg.object = object_to_msg(obj)
    if obj.embedding is not None:
        e = np.asarray(obj.embedding, dtype=np.float32).reshape(-1)
        msg.embedding_fp16 = _packed(e.astype(np.float16).view(np.uint16), "H", np.uint16)
    rows = sample_rows(len(obj.points), max_sample)
    msg.sample_points = _packed(np.asarray(obj.points, dtype=np.float32)[rows], "f", np.float32)
    msg.sample_colors = _packed(np.asarray(obj.colors, dtype=np.uint8).reshape(-1, 3)[rows], "B", np.uint8)
    return msg


def map_update_msg(
    *,
    frame_id: str,
    stamp: Any,
    map_id: str,
    generation: int,
    seq: int,
    full: bool,
    voxel_size: float,
    frames: int,
    objects: Iterable[Any],
    removed: Iterable[int] = (),
    viewpoint: np.ndarray | None = None,
) -> Any:
    """A core3d/MapUpdate of ObjectState messages already built."""
    m = _core3d_msg()
    msg = m.MapUpdate()
    msg.header = make_header(frame_id, stamp)
    msg.map_id = str(map_id)
    msg.generation = int(generation)
    msg.seq = int(seq)
    msg.full = bool(full)
    msg.voxel_size = float(voxel_size)
    msg.frames = int(frames)
    if viewpoint is not None:
        try:
            msg.viewpoint = matrix_to_pose(viewpoint)
            msg.has_viewpoint = True
        except Exception:  # a malformed pose is simply not sent
            msg.has_viewpoint = False
    msg.objects = list(objects)
    msg.removed_ids = [int(i) for i in removed]
    return msg


def _vec(v: Any) -> np.ndarray:
    return np.array([v.x, v.y, v.z], dtype=np.float64)


def msg_to_streamed_object(msg: Any) -> StreamedObject:
    """core3d/ObjectState -> StreamedObject. Values are taken as they come (NaNs, odd sizes);
    the mirror checks them and refuses by reason."""
    o = msg.object
    try:
        T = pose_to_matrix(o.box_pose)
    except PoseError:
        T = np.full((4, 4), np.nan)  # refused by the mirror as a NaN box
    box = OrientedBox(center=T[:3, 3].copy(), rotation=T[:3, :3].copy(), extent=_vec(o.box_size))
    pts = np.asarray(msg.sample_points, dtype=np.float32)
    cols = np.asarray(msg.sample_colors, dtype=np.uint8)
    points = pts.reshape(-1, 3) if len(pts) % 3 == 0 else pts.reshape(1, -1)  # malformed: refused
    colors = cols.reshape(-1, 3) if len(cols) % 3 == 0 else cols.reshape(1, -1)
    emb = None
    if len(msg.embedding_fp16):
        emb = np.asarray(msg.embedding_fp16, dtype=np.uint16).view(np.float16).astype(np.float32)
    c = o.color
    return StreamedObject(
        id=int(o.id),
        points=points,
        colors=colors,
        box=box,
        num_observations=int(o.num_observations),
        first_seen=to_seconds(o.first_seen),
        last_seen=to_seconds(o.last_seen),
        embedding=emb,
        label=str(o.label),
        label_score=float(o.label_score),
        full_centroid=_vec(o.centroid),
        full_num_voxels=int(o.num_voxels),
        full_mean_color=np.array([c.r, c.g, c.b], dtype=np.float64),
        moved_from=_vec(o.moved_from) if o.has_moved_from else None,
        moved_at=to_seconds(o.moved_at) if o.has_moved_from else 0.0,
    )


def msg_to_map_version(msg: Any) -> MapVersion:
    """core3d/MapUpdate -> MapVersion."""
    viewpoint = None
    if msg.has_viewpoint:
        try:
            viewpoint = pose_to_matrix(msg.viewpoint)
        except PoseError:
            viewpoint = None
    return MapVersion(
        map_id=str(msg.map_id),
        generation=int(msg.generation),
        seq=int(msg.seq),
        full=bool(msg.full),
        stamp=to_seconds(msg.header.stamp),
        voxel_size=float(msg.voxel_size),
        frames=int(msg.frames),
        objects=[msg_to_streamed_object(s) for s in msg.objects],
        removed=[int(i) for i in msg.removed_ids],
        viewpoint=viewpoint,
    )
