"""Map files: a versioned ``.npz`` of plain arrays (no pickle), written atomically.

Loading validates every array (names, dtypes, shapes, value ranges) before anything is
swapped in, so a damaged or hostile file yields MapFileError and leaves the current map intact.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from ..config import FusionConfig
from .fileio import atomic_output
from .fusion.object_map import ObjectMap, ObjectState

FORMAT = "core3d-map"
VERSION = 1
MAX_VOXELS_IN_FILE = 50_000_000


class MapFileError(ValueError):
    """A map file that cannot be loaded (damaged, wrong version, inconsistent)."""


def save_map(omap: ObjectMap, path: str | os.PathLike) -> str:
    """Write the map to ``path`` (".npz" appended when missing) atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    n = omap.num_voxels
    states = list(omap.objects.values())
    dim = next((len(s.embedding_sum) for s in states if s.embedding_sum is not None), 0)
    emb = np.zeros((len(states), dim), np.float32)
    emb_w = np.zeros(len(states), np.float32)
    views, view_shapes, view_q = [], np.zeros((len(states), 3), np.int64), np.full(len(states), -1.0, np.float32)
    for i, s in enumerate(states):
        if s.embedding_sum is not None and len(s.embedding_sum) == dim:
            emb[i], emb_w[i] = s.embedding_sum, s.embedding_weight
        if s.best_view is not None:
            v = np.ascontiguousarray(s.best_view, dtype=np.uint8).reshape(s.best_view.shape[0], s.best_view.shape[1], -1)
            views.append(v.reshape(-1))
            view_shapes[i] = v.shape
            view_q[i] = s.best_view_quality
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION, np.int64),
        "voxel_size": np.array(omap.voxel_size, np.float64),
        "frames": np.array(omap.frames, np.int64),
        "next_id": np.array(omap.next_id, np.int64),
        "keys": omap.keys[:n],
        "ids": omap.ids[:n],
        "hits": omap.hits[:n],
        "colors": omap.colors[:n],
        "color_n": omap.color_n[:n],
        "obj_id": np.array([s.id for s in states], np.int64),
        "obj_num_voxels": np.array([s.num_voxels for s in states], np.int64),
        "obj_num_observations": np.array([s.num_observations for s in states], np.int64),
        "obj_first_seen": np.array([s.first_seen for s in states], np.float64),
        "obj_last_seen": np.array([s.last_seen for s in states], np.float64),
        "obj_embedding_sum": emb,
        "obj_embedding_weight": emb_w,
        "obj_view_shape": view_shapes,
        "obj_view_quality": view_q,
        "obj_views": np.concatenate(views) if views else np.zeros(0, np.uint8),
    }
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    return str(path)


def _get(data, name: str, dtype, ndim: int) -> np.ndarray:
    if name not in data:
        raise MapFileError(f"missing array {name!r}")
    arr = data[name]
    if arr.dtype != np.dtype(dtype) or arr.ndim != ndim:
        raise MapFileError(f"array {name!r} has dtype {arr.dtype} / ndim {arr.ndim}, expected {np.dtype(dtype)} / {ndim}")
    return arr


def load_map(path: str | os.PathLike, cfg: FusionConfig) -> ObjectMap:
    """Read and validate a map file; returns a new ObjectMap (raises MapFileError)."""
    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"no map file at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return _build(data, cfg)
    except MapFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise MapFileError(f"cannot read map file {path}: {e}") from None


def _build(data, cfg: FusionConfig) -> ObjectMap:
    if str(_get(data, "format", "<U10", 0)) != FORMAT:
        raise MapFileError("not a core3d map file")
    version = int(_get(data, "version", np.int64, 0))
    if version != VERSION:
        raise MapFileError(f"map file version {version} is not supported (expected {VERSION})")
    voxel_size = float(_get(data, "voxel_size", np.float64, 0))
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise MapFileError("voxel size must be positive")
    keys = _get(data, "keys", np.int64, 1)
    n = len(keys)
    if n > MAX_VOXELS_IN_FILE:
        raise MapFileError(f"{n} voxels exceed the limit of {MAX_VOXELS_IN_FILE}")
    ids = _get(data, "ids", np.int32, 2)
    hits = _get(data, "hits", np.int32, 2)
    colors = _get(data, "colors", np.float32, 2)
    color_n = _get(data, "color_n", np.int32, 1)
    K = ids.shape[1] if ids.ndim == 2 else 0
    if ids.shape[0] != n or hits.shape != ids.shape or colors.shape != (n, 3) or color_n.shape != (n,):
        raise MapFileError("voxel arrays have inconsistent shapes")
    if len(np.unique(keys)) != n:
        raise MapFileError("duplicate voxel keys")
    if not np.all(np.isfinite(colors)):
        raise MapFileError("non-finite colours")
    obj_id = _get(data, "obj_id", np.int64, 1)
    m = len(obj_id)
    fields = {
        "obj_num_voxels": (np.int64, 1),
        "obj_num_observations": (np.int64, 1),
        "obj_first_seen": (np.float64, 1),
        "obj_last_seen": (np.float64, 1),
        "obj_embedding_weight": (np.float32, 1),
        "obj_view_quality": (np.float32, 1),
    }
    obj = {k: _get(data, k, dt, nd) for k, (dt, nd) in fields.items()}
    emb = _get(data, "obj_embedding_sum", np.float32, 2)
    view_shape = _get(data, "obj_view_shape", np.int64, 2)
    views = _get(data, "obj_views", np.uint8, 1)
    if any(len(v) != m for v in obj.values()) or emb.shape[0] != m or view_shape.shape != (m, 3):
        raise MapFileError("object arrays have inconsistent lengths")
    if len(np.unique(obj_id)) != m or (m and obj_id.min() < 1):
        raise MapFileError("object ids must be unique and positive")
    used = np.unique(ids[ids >= 0])
    if not np.all(np.isin(used, obj_id)) or np.any(ids < -1):
        raise MapFileError("voxel slots refer to unknown objects")
    if np.any(view_shape < 0) or int(np.prod(view_shape, axis=1).sum()) != len(views):
        raise MapFileError("best-view images do not match their shapes")
    next_id = int(_get(data, "next_id", np.int64, 0))
    if m and next_id <= obj_id.max():
        raise MapFileError("next object id must exceed every object id")

    if K < 1:
        raise MapFileError("voxels need at least one object slot")
    fusion = dataclasses.replace(cfg, voxel_size=voxel_size, slots_per_voxel=K)
    offset = 0
    states = []
    for i in range(m):
        size = int(np.prod(view_shape[i]))
        view = views[offset : offset + size].reshape(view_shape[i]) if size else None
        offset += size
        st = ObjectState(
            id=int(obj_id[i]),
            num_voxels=int(obj["obj_num_voxels"][i]),
            num_observations=int(obj["obj_num_observations"][i]),
            first_seen=float(obj["obj_first_seen"][i]),
            last_seen=float(obj["obj_last_seen"][i]),
            best_view_quality=float(obj["obj_view_quality"][i]),
            best_view=view,
        )
        if emb.shape[1] and obj["obj_embedding_weight"][i] > 0:
            st.embedding_sum = emb[i].copy()
            st.embedding_weight = float(obj["obj_embedding_weight"][i])
        states.append(st)
    return ObjectMap.from_arrays(fusion, keys, ids, hits, colors, color_n, states, next_id, int(_get(data, "frames", np.int64, 0)))
