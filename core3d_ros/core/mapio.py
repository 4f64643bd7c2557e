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
from .fusion.voxels import _OFFSET as _VOXEL_OFFSET
from .fusion.voxels import unpack as unpack_keys

FORMAT = "core3d-map"
VERSION = 2  # 2: the scene graph (hierarchy section below); 1 still loads
SUPPORTED_VERSIONS = (1, 2)
MAX_VOXELS_IN_FILE = 50_000_000


class MapFileError(ValueError):
    """A map file that cannot be loaded (damaged, wrong version, inconsistent)."""


def save_map(omap: ObjectMap, path: str | os.PathLike, hierarchy=None) -> str:
    """Write the map to ``path`` (".npz" appended when missing) atomically; returns the path.
    ``hierarchy``: a core.hierarchy SceneGraph stored with it (None: none)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    live = omap.live_rows()  # released rows are not part of the map
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
        "keys": omap.keys[live],
        "ids": omap.ids[live],
        "hits": omap.hits[live],
        "colors": omap.colors[live],
        "color_n": omap.color_n[live],
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
        # moves (version 2): the old place of an object seen to move (NaN: none) and when
        "obj_moved_from": np.array([s.moved_from if s.moved_from is not None else (np.nan,) * 3 for s in states], np.float64).reshape(-1, 3),
        "obj_moved_at": np.array([s.moved_at for s in states], np.float64),
    }
    arrays.update(omap.correction_arrays(live))  # optional in the format: older files load without
    if hierarchy is not None:
        arrays.update(hierarchy_arrays(hierarchy))
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
        if not zipfile.is_zipfile(path):
            raise MapFileError(f"{path} is not a core3d map file (not an .npz archive)")
        with np.load(path, allow_pickle=False) as data:
            return _build(data, cfg)
    except MapFileError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # numpy's hint to unpickle: never for a map file
            raise MapFileError(f"{path} is not a core3d map file (it holds pickled objects, refused)") from None
        raise MapFileError(f"cannot read map file {path}: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise MapFileError(f"cannot read map file {path}: {e}") from None


# Validation of the arrays of a map file, one function per group of fields, so that any map
# format (this one or a later version) can check what it reads with the same rules. Each raises
# MapFileError naming the field and what is wrong.

MAX_OBJECT_ID = int(np.iinfo(np.int32).max)  # voxel slots store ids as int32
MAX_TIME = float(np.iinfo(np.int32).max)  # seconds; a ROS Time holds int32 seconds
# Every voxel's neighbours must stay packable (fusion looks them up): one voxel of margin.
MAX_VOXEL_COORD = _VOXEL_OFFSET - 2
MIN_VOXEL_COORD = -_VOXEL_OFFSET + 1


def validate_header(voxel_size: float, frames: int, next_id: int) -> None:
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise MapFileError(f"voxel_size must be a positive finite number, got {voxel_size}")
    if frames < 0:
        raise MapFileError(f"frames must be >= 0, got {frames}")
    if not 1 <= next_id <= MAX_OBJECT_ID:
        raise MapFileError(f"next_id must lie in [1, {MAX_OBJECT_ID}], got {next_id}")


def validate_voxel_keys(keys: np.ndarray) -> None:
    """Keys must be packed 21-bit coordinates (see fusion/voxels.py), unique, with room for neighbours."""
    if np.any(keys < 0):
        raise MapFileError("voxel keys must be non-negative packed coordinates")
    coords = unpack_keys(keys)
    if coords.size and (coords.min() < MIN_VOXEL_COORD or coords.max() > MAX_VOXEL_COORD):
        raise MapFileError(
            f"voxel keys outside the packable range (coordinates must lie in [{MIN_VOXEL_COORD}, {MAX_VOXEL_COORD}])"
        )
    if len(np.unique(keys)) != len(keys):
        raise MapFileError("duplicate voxel keys")


def validate_voxel_arrays(keys: np.ndarray, ids: np.ndarray, hits: np.ndarray, colors: np.ndarray, color_n: np.ndarray) -> None:
    """Shapes and value ranges of the per-voxel arrays (keys, slot ids and hits, colours)."""
    n = len(keys)
    if n > MAX_VOXELS_IN_FILE:
        raise MapFileError(f"{n} voxels exceed the limit of {MAX_VOXELS_IN_FILE}")
    if ids.ndim != 2 or ids.shape[0] != n or hits.shape != ids.shape or colors.shape != (n, 3) or color_n.shape != (n,):
        raise MapFileError("voxel arrays have inconsistent shapes")
    if ids.shape[1] < 1:
        raise MapFileError("voxels need at least one object slot")
    validate_voxel_keys(keys)
    if np.any(ids < -1):
        raise MapFileError("voxel slot ids must be -1 (free) or an object id")
    if np.any(hits < 0):
        raise MapFileError("voxel hit counts must be >= 0")
    if not np.all(np.isfinite(colors)):
        raise MapFileError("non-finite colours")
    if np.any(colors < 0) or np.any(colors > 255):
        raise MapFileError("voxel colours must lie in [0, 255]")
    if np.any(color_n < 0):
        raise MapFileError("voxel colour counts must be >= 0")


def validate_object_arrays(
    obj_id: np.ndarray,
    num_voxels: np.ndarray,
    num_observations: np.ndarray,
    first_seen: np.ndarray,
    last_seen: np.ndarray,
    embedding_sum: np.ndarray,
    embedding_weight: np.ndarray,
    view_quality: np.ndarray,
) -> None:
    """Lengths and value ranges of the per-object arrays."""
    m = len(obj_id)
    columns = (num_voxels, num_observations, first_seen, last_seen, embedding_weight, view_quality)
    if any(len(v) != m for v in columns) or embedding_sum.shape[0] != m:
        raise MapFileError("object arrays have inconsistent lengths")
    if len(np.unique(obj_id)) != m or (m and (obj_id.min() < 1 or obj_id.max() > MAX_OBJECT_ID)):
        raise MapFileError(f"object ids must be unique and lie in [1, {MAX_OBJECT_ID}]")
    if np.any(num_voxels < 0):
        raise MapFileError("object voxel counts must be >= 0")
    if np.any(num_observations < 0):
        raise MapFileError("object observation counts must be >= 0")
    for name, t in (("first-seen", first_seen), ("last-seen", last_seen)):
        if not np.all(np.isfinite(t)):
            raise MapFileError(f"object {name} times must be finite")
        if np.any(t < 0) or np.any(t > MAX_TIME):
            raise MapFileError(f"object {name} times must lie in [0, {MAX_TIME:.0f}] s")
    if np.any(last_seen < first_seen):
        raise MapFileError("an object's last-seen time precedes its first-seen time")
    if not np.all(np.isfinite(embedding_sum)):
        raise MapFileError("object embeddings must be finite")
    if not np.all(np.isfinite(embedding_weight)) or np.any(embedding_weight < 0):
        raise MapFileError("object embedding weights must be finite and >= 0")
    if not np.all(np.isfinite(view_quality)) or np.any(view_quality < -1):
        raise MapFileError("object best-view qualities must be finite and >= -1")


def validate_slots(ids: np.ndarray, obj_id: np.ndarray, num_voxels: np.ndarray) -> None:
    """Every slot refers to a known object, and each object's voxel count matches the slots."""
    used, counts = np.unique(ids[ids >= 0], return_counts=True)
    if not np.all(np.isin(used, obj_id)):
        raise MapFileError("voxel slots refer to unknown objects")
    expected = np.zeros(len(obj_id), np.int64)
    if len(obj_id):
        order = np.argsort(obj_id)
        pos = order[np.searchsorted(obj_id, used, sorter=order)]
        expected[pos] = counts
    if not np.array_equal(expected, num_voxels):
        raise MapFileError("object voxel counts do not match the voxel slots")


def validate_views(view_shape: np.ndarray, views: np.ndarray, m: int) -> None:
    if view_shape.shape != (m, 3):
        raise MapFileError("object arrays have inconsistent lengths")
    if np.any(view_shape < 0) or np.any((view_shape[:, 2] != 0) & (view_shape[:, 2] != 3)):
        raise MapFileError("best-view shapes must be (height, width, 3) or empty")
    if np.any(view_shape > 1 << 16):
        raise MapFileError("best-view images are too large")
    if int(np.prod(view_shape, axis=1).sum()) != len(views):
        raise MapFileError("best-view images do not match their shapes")


def _moves(data, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Objects' old places and move times (absent before moves were saved: none moved)."""
    if "obj_moved_from" not in data:
        return np.full((m, 3), np.nan), np.zeros(m)
    moved_from = _get(data, "obj_moved_from", np.float64, 2)
    moved_at = _get(data, "obj_moved_at", np.float64, 1)
    if moved_from.shape != (m, 3) or len(moved_at) != m:
        raise MapFileError("object arrays have inconsistent lengths")
    some = np.isfinite(moved_from).all(axis=1)
    if np.any(~some & ~np.isnan(moved_from).all(axis=1)):
        raise MapFileError("an object's old place must be three finite numbers or none (NaN)")
    if not np.all(np.isfinite(moved_at)) or np.any(moved_at < 0) or np.any(moved_at > MAX_TIME):
        raise MapFileError(f"object move times must lie in [0, {MAX_TIME:.0f}] s")
    return moved_from, moved_at


def _build(data, cfg: FusionConfig) -> ObjectMap:
    if str(_get(data, "format", "<U10", 0)) != FORMAT:
        raise MapFileError("not a core3d map file")
    version = int(_get(data, "version", np.int64, 0))
    if version not in SUPPORTED_VERSIONS:
        raise MapFileError(f"map file version {version} is not supported (expected one of {SUPPORTED_VERSIONS})")
    voxel_size = float(_get(data, "voxel_size", np.float64, 0))
    frames = int(_get(data, "frames", np.int64, 0))
    next_id = int(_get(data, "next_id", np.int64, 0))
    validate_header(voxel_size, frames, next_id)
    keys = _get(data, "keys", np.int64, 1)
    n = len(keys)
    if n > MAX_VOXELS_IN_FILE:
        raise MapFileError(f"{n} voxels exceed the limit of {MAX_VOXELS_IN_FILE}")
    ids = _get(data, "ids", np.int32, 2)
    hits = _get(data, "hits", np.int32, 2)
    colors = _get(data, "colors", np.float32, 2)
    color_n = _get(data, "color_n", np.int32, 1)
    validate_voxel_arrays(keys, ids, hits, colors, color_n)
    K = ids.shape[1]
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
    validate_object_arrays(
        obj_id,
        obj["obj_num_voxels"],
        obj["obj_num_observations"],
        obj["obj_first_seen"],
        obj["obj_last_seen"],
        emb,
        obj["obj_embedding_weight"],
        obj["obj_view_quality"],
    )
    validate_slots(ids, obj_id, obj["obj_num_voxels"])
    validate_views(view_shape, views, m)
    if m and next_id <= obj_id.max():
        raise MapFileError("next object id must exceed every object id")
    moved_from, moved_at = _moves(data, m)

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
        if np.all(np.isfinite(moved_from[i])):
            st.moved_from, st.moved_at = moved_from[i].copy(), float(moved_at[i])
        if emb.shape[1] and obj["obj_embedding_weight"][i] > 0:
            st.embedding_sum = emb[i].copy()
            st.embedding_weight = float(obj["obj_embedding_weight"][i])
        states.append(st)
    corrections = _corrections(data, n, obj_id)
    omap = ObjectMap.from_arrays(fusion, keys, ids, hits, colors, color_n, states, next_id, frames)
    if corrections is not None:
        omap.restore_corrections(corrections, n)
    return omap


MAX_SAVED_FRAMES = 10_000_000  # recorded frames of a map file (one per fused frame)


def _corrections(data, n_rows: int, obj_id: np.ndarray) -> dict[str, np.ndarray] | None:
    """The ``corr_*`` arrays (pose corrections after a load: recorded frames' stamps, poses and
    serials, each row's anchoring frame, each object's anchor), validated; None when the file
    has none (saved before they were kept: corrections then move only frames fused later)."""
    if "corr_stamps" not in data.files:
        return None
    c = {
        "corr_stamps": _get(data, "corr_stamps", np.float64, 1), "corr_poses": _get(data, "corr_poses", np.float64, 3),
        "corr_marks": _get(data, "corr_marks", np.float64, 1), "corr_serials": _get(data, "corr_serials", np.int64, 1),
        "corr_next_serial": _get(data, "corr_next_serial", np.int64, 0), "corr_row_frame": _get(data, "corr_row_frame", np.int32, 1),
        "corr_obj_id": _get(data, "corr_obj_id", np.int64, 1), "corr_obj_anchor": _get(data, "corr_obj_anchor", np.float64, 1),
        "corr_obj_anchor_votes": _get(data, "corr_obj_anchor_votes", np.int64, 1),
    }
    stamps, poses, serials = c["corr_stamps"], c["corr_poses"], c["corr_serials"]
    k = len(stamps)
    if k > MAX_SAVED_FRAMES or poses.shape != (k, 4, 4) or len(serials) != k or c["corr_marks"].shape != (2,):
        raise MapFileError("corrections: frame arrays have inconsistent shapes")
    if not (np.all(np.isfinite(stamps)) and np.all(np.isfinite(poses))) or np.any(np.diff(stamps) <= 0):
        raise MapFileError("corrections: frame stamps must be finite and increasing, poses finite")
    next_serial = int(c["corr_next_serial"])
    used = serials[serials >= 0]
    if np.any(serials < -1) or len(np.unique(used)) != len(used) or (len(used) and used.max() >= next_serial):
        raise MapFileError("corrections: frame serials must be distinct and below the next serial")
    frame = c["corr_row_frame"]
    if len(frame) != n_rows or (n_rows and (frame.min() < -1 or frame.max() >= next_serial)):
        raise MapFileError("corrections: one anchoring frame per voxel row, each -1 or a serial")
    if not (len(c["corr_obj_id"]) == len(c["corr_obj_anchor"]) == len(c["corr_obj_anchor_votes"])) or not np.all(np.isin(c["corr_obj_id"], obj_id)):
        raise MapFileError("corrections: object anchors must name the file's objects")
    return c


# ---------------------------------------------------------------------------------- hierarchy
# Format version 2 adds the scene graph (core/hierarchy/graph.py) as ``hier_*`` arrays: plain
# numbers and unicode strings, ragged lists (outlines, object and keyframe ids) as one flat array
# and a length per row. Version 1 files have none and load without a hierarchy. The hierarchy is
# derived data (the builder recomputes it from the geometry): a damaged one is refused alone
# (``load_hierarchy`` raises MapFileError naming what is wrong) while the map itself still loads.

HIERARCHY_VERSION = 2
MAX_HIERARCHY_ROWS = 100_000  # floors, rooms, or outline points / ids of one list in all
MAX_CAMERA_PATH = 10_000_000  # camera centres (one per 0.1 m of travel: 1,000 km)


def _ragged(rows: list) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], np.int64)
    flat = [np.asarray(r) for r in rows if len(r)]
    return lengths, (np.concatenate(flat) if flat else np.zeros(0))


def hierarchy_arrays(graph) -> dict[str, np.ndarray]:
    """The ``hier_*`` arrays of a SceneGraph (what ``save_map(..., hierarchy=graph)`` writes)."""
    rooms, floors = graph.rooms, graph.floors
    out_len, outline = _ragged([np.asarray(r.outline, np.float64).reshape(-1, 3) for r in rooms])
    obj_len, objects = _ragged([list(r.object_ids) for r in rooms])
    kf_len, keyframes = _ragged([list(r.keyframe_ids) for r in rooms])
    fr_len, floor_rooms = _ragged([list(f.room_ids) for f in floors])
    return {
        "hier_up": np.asarray(graph.up, np.float64).reshape(3),
        "hier_up_source": np.array(str(graph.up_source)),
        "hier_note": np.array(str(graph.note or "")),
        "hier_version": np.array(int(graph.version), np.int64),
        "hier_events": np.array([graph.splits, graph.merges], np.int64),  # room splits, merges so far
        "hier_floor_id": np.array([f.id for f in floors], np.int64),
        "hier_floor_height": np.array([f.height for f in floors], np.float64),
        "hier_floor_ceiling": np.array([f.ceiling for f in floors], np.float64),
        "hier_floor_label": np.array([str(f.label) for f in floors] or [""], str)[: len(floors)],
        "hier_floor_summary": np.array([str(f.summary) for f in floors] or [""], str)[: len(floors)],
        "hier_floor_room_len": fr_len,
        "hier_floor_rooms": floor_rooms.astype(np.int64),
        "hier_room_id": np.array([r.id for r in rooms], np.int64),
        "hier_room_floor": np.array([r.floor_id for r in rooms], np.int64),
        "hier_room_area": np.array([r.area for r in rooms], np.float64),
        "hier_room_centroid": np.array([np.asarray(r.centroid, np.float64).reshape(3) for r in rooms], np.float64).reshape(-1, 3),
        "hier_room_label": np.array([str(r.label) for r in rooms] or [""], str)[: len(rooms)],
        "hier_room_label_score": np.array([r.label_score for r in rooms], np.float64),
        "hier_room_summary": np.array([str(r.summary) for r in rooms] or [""], str)[: len(rooms)],
        "hier_room_outline_len": out_len,
        "hier_room_outline": outline.astype(np.float64).reshape(-1, 3),
        "hier_room_object_len": obj_len,
        "hier_room_objects": objects.astype(np.int64),
        "hier_room_keyframe_len": kf_len,
        "hier_room_keyframes": keyframes.astype(np.int64),
        # optional (absent in older files): the builder's camera path, for HierarchyBuilder.seed
        **({} if graph.camera_path is None else {"hier_camera_path": np.asarray(graph.camera_path, np.float64).reshape(-1, 3)}),
    }


def _text(data, name: str, ndim: int) -> np.ndarray:
    if name not in data:
        raise MapFileError(f"hierarchy: missing array {name!r}")
    arr = data[name]
    if arr.dtype.kind != "U" or arr.ndim != ndim:
        raise MapFileError(f"hierarchy: array {name!r} must be text of ndim {ndim}, got {arr.dtype} / {arr.ndim}")
    return arr


def _hier(data, name: str, dtype, ndim: int) -> np.ndarray:
    try:
        arr = _get(data, name, dtype, ndim)
    except MapFileError as e:
        raise MapFileError(f"hierarchy: {e}") from None
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise MapFileError(f"hierarchy: array {name!r} holds non-finite values")
    return arr


def _split(lengths: np.ndarray, flat: np.ndarray, rows: int, what: str) -> list[np.ndarray]:
    if len(lengths) != rows or np.any(lengths < 0) or int(lengths.sum()) != len(flat):
        raise MapFileError(f"hierarchy: {what} lengths do not match their rows / values")
    return np.split(flat, np.cumsum(lengths)[:-1]) if rows else []


def _read_hierarchy(data):
    from .hierarchy.graph import UP_SOURCES, Floor, Room, SceneGraph

    up = _hier(data, "hier_up", np.float64, 1)
    if up.shape != (3,) or not 0.99 < float(np.linalg.norm(up)) < 1.01:
        raise MapFileError("hierarchy: up must be a unit 3-vector")
    up_source = str(_text(data, "hier_up_source", 0))
    if up_source not in UP_SOURCES:
        raise MapFileError(f"hierarchy: up source must be one of {' | '.join(UP_SOURCES)}, got {up_source!r}")
    version = int(_hier(data, "hier_version", np.int64, 0))
    if version < 0:
        raise MapFileError("hierarchy: version must be >= 0")
    events = _hier(data, "hier_events", np.int64, 1)
    if events.shape != (2,) or np.any(events < 0):
        raise MapFileError("hierarchy: events must be two counts >= 0 (splits, merges)")
    fid = _hier(data, "hier_floor_id", np.int64, 1)
    rid = _hier(data, "hier_room_id", np.int64, 1)
    nf, nr = len(fid), len(rid)
    if nf > MAX_HIERARCHY_ROWS or nr > MAX_HIERARCHY_ROWS:
        raise MapFileError(f"hierarchy: more than {MAX_HIERARCHY_ROWS} floors or rooms")
    for ids, what in ((fid, "floor"), (rid, "room")):
        if len(np.unique(ids)) != len(ids) or (len(ids) and (ids.min() < 1 or ids.max() > MAX_OBJECT_ID)):
            raise MapFileError(f"hierarchy: {what} ids must be unique and lie in [1, {MAX_OBJECT_ID}]")
    floor_cols = {k: _hier(data, f"hier_floor_{k}", np.float64, 1) for k in ("height", "ceiling")}
    floor_text = {k: _text(data, f"hier_floor_{k}", 1) for k in ("label", "summary")}
    room_floor = _hier(data, "hier_room_floor", np.int64, 1)
    area = _hier(data, "hier_room_area", np.float64, 1)
    score = _hier(data, "hier_room_label_score", np.float64, 1)
    centroid = _hier(data, "hier_room_centroid", np.float64, 2)
    room_text = {k: _text(data, f"hier_room_{k}", 1) for k in ("label", "summary")}
    if any(len(v) != nf for v in (*floor_cols.values(), *floor_text.values())):
        raise MapFileError("hierarchy: floor arrays have inconsistent lengths")
    if any(len(v) != nr for v in (room_floor, area, score, centroid, *room_text.values())) or centroid.shape[1:] != (3,):
        raise MapFileError("hierarchy: room arrays have inconsistent lengths")
    if np.any(floor_cols["ceiling"] < floor_cols["height"]):
        raise MapFileError("hierarchy: a floor's ceiling lies below its height")
    if np.any(area < 0):
        raise MapFileError("hierarchy: room areas must be >= 0")
    if not np.all(np.isin(room_floor, fid)):
        raise MapFileError("hierarchy: a room refers to an unknown floor")
    outline = _hier(data, "hier_room_outline", np.float64, 2)
    if outline.shape[1:] != (3,):
        raise MapFileError("hierarchy: room outlines must be (N, 3) points")
    ragged = {}
    for key, flat_name, rows in (
        ("outline", None, nr), ("object", "hier_room_objects", nr), ("keyframe", "hier_room_keyframes", nr),
        ("floor_room", "hier_floor_rooms", nf),
    ):
        prefix = "hier_floor_room" if key == "floor_room" else f"hier_room_{key}"
        lengths = _hier(data, f"{prefix}_len", np.int64, 1)
        flat = outline if flat_name is None else _hier(data, flat_name, np.int64, 1)
        if len(flat) > 50 * MAX_HIERARCHY_ROWS:
            raise MapFileError(f"hierarchy: too many {key} entries")
        if flat_name is not None and len(flat) and (flat.min() < 0 or flat.max() > MAX_OBJECT_ID):
            raise MapFileError(f"hierarchy: {key} ids must lie in [0, {MAX_OBJECT_ID}]")
        ragged[key] = _split(lengths, flat, rows, key)
    if ragged["floor_room"] and not np.all(np.isin(np.concatenate(ragged["floor_room"]), rid)):
        raise MapFileError("hierarchy: a floor lists an unknown room")
    floors = [
        Floor(
            id=int(fid[i]), height=float(floor_cols["height"][i]), ceiling=float(floor_cols["ceiling"][i]),
            label=str(floor_text["label"][i]), summary=str(floor_text["summary"][i]),
            room_ids=[int(v) for v in ragged["floor_room"][i]],
        )
        for i in range(nf)
    ]
    rooms = [
        Room(
            id=int(rid[i]), floor_id=int(room_floor[i]), outline=ragged["outline"][i].copy(), area=float(area[i]),
            centroid=centroid[i].copy(), label=str(room_text["label"][i]), label_score=float(score[i]),
            summary=str(room_text["summary"][i]), object_ids=[int(v) for v in ragged["object"][i]],
            keyframe_ids=[int(v) for v in ragged["keyframe"][i]],
        )
        for i in range(nr)
    ]
    camera_path = None
    if "hier_camera_path" in data.files:
        camera_path = _hier(data, "hier_camera_path", np.float64, 2)
        if camera_path.shape[1:] != (3,) or len(camera_path) > MAX_CAMERA_PATH:
            raise MapFileError(f"hierarchy: the camera path must be (N, 3) points, N <= {MAX_CAMERA_PATH}")
    return SceneGraph(
        up=up.copy(), up_source=up_source, note=str(_text(data, "hier_note", 0)), version=version,
        splits=int(events[0]), merges=int(events[1]), floors=floors, rooms=rooms, camera_path=camera_path,
    )


def load_hierarchy(path: str | os.PathLike):
    """The SceneGraph stored in a map file; None when the file has none (format version 1, or
    saved without one). Raises MapFileError when the file or its hierarchy is damaged; the map's
    own arrays are ``load_map``'s business, so a damaged hierarchy never stops the map loading."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "hier_up" not in data.files:
                return None
            return _read_hierarchy(data)
    except MapFileError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise MapFileError(f"hierarchy: cannot read {path}: {e}") from None
