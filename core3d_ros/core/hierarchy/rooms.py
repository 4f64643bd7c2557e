"""Rooms of one floor on a bird's-eye grid: a marker-controlled watershed of the distance
transform of the free space (see builder.py for how the grid's cells are found).

    origin, inside, walls, note = floor_grid(columns, floor_height, cfg, height_bin)
    origin, labels, note = segment_floor(origin, inside, walls, camera_cells, degraded, cfg, cell)

``floor_grid`` reads the floor's cells from the surface columns (columns.py): *inside* = cells
with surface from FLOOR_BAND below the floor to the top of the wall band, *walls* = cells with
surface in the wall band or rising from near the floor to near the band. ``camera_cells`` (M, 2)
are the cells of the camera centres of this floor. ``labels`` is a [b, a] grid of regions 1..K
(0: none) whose cell [0, 0] is the global cell ``origin``.
"""
from __future__ import annotations

import cv2
import numpy as np

from ...config import HierarchyConfig
from .columns import NONE_LOW, Columns

MAX_GRID_CELLS = 16_000_000  # a floor's grid beyond this (400 x 400 m at 0.1 m) keeps the bulk
FLOOR_BAND = 0.1  # metres: surface this close to the floor height is floor


def floor_grid(columns: Columns, height: float, cfg: HierarchyConfig, hbin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(origin, inside, walls, note) of the floor at ``height``; a bin is in a band when its
    centre is."""
    def first(m: float) -> int:
        return int(np.ceil(m / hbin - 0.5))

    top = int(np.floor((height + cfg.wall_high) / hbin - 0.5))
    origin, [(low, high), (vlow, vhigh)], clipped = columns.spans(
        [(first(height - FLOOR_BAND), top), (first(height + 0.2), top)], MAX_GRID_CELLS)
    inside = low != NONE_LOW
    walls = inside & ((high + 0.5) * hbin >= height + cfg.wall_low)
    # ... and cells whose surface rises from near the floor to near the band (a wall whose
    # band was not seen, a tall cupboard): vertical extent of at least wall_low - 0.3 m
    v = vlow != NONE_LOW
    walls[v] |= (vhigh[v] - vlow[v]) * hbin >= cfg.wall_low - 0.3
    note = "grid clipped to the bulk of the surface (stray surface far away)" if clipped else ""
    return origin, inside.astype(np.uint8), walls.astype(np.uint8), note


def segment_floor(
    origin: np.ndarray,
    inside: np.ndarray,
    walls: np.ndarray,
    cam_cells: np.ndarray,
    degraded: bool,
    cfg: HierarchyConfig,
    cell: float,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(origin, region grid, note) of one floor from its ``inside`` / ``walls`` grids [b, a]
    (cell [0, 0] at the global cell ``origin``); ``degraded`` (no floor surface): one region
    of all that was seen."""
    r_cam = int(np.ceil(cfg.camera_radius / cell))
    bb, aa = np.nonzero(inside)
    cam_cells = np.asarray(cam_cells, np.int64).reshape(-1, 2)
    surf = np.array([[aa.min(), bb.min()], [aa.max(), bb.max()]]) + origin if len(aa) else np.zeros((0, 2), np.int64)
    ext = np.concatenate([surf, cam_cells])
    if len(surf) and len(ext) and np.prod(ext.max(axis=0) - ext.min(axis=0) + 1) > MAX_GRID_CELLS:
        near = int(np.sqrt(MAX_GRID_CELLS)) // 4  # cameras far outside a clipped grid are left out with it
        cam_cells = cam_cells[np.all((cam_cells >= surf[0] - near) & (cam_cells <= surf[1] + near), axis=1)]
    allc = np.concatenate([surf, cam_cells - r_cam, cam_cells + r_cam])
    if len(allc) == 0:
        return np.zeros(2, np.int64), np.zeros((0, 0), np.int32), "no surface on this floor yet"
    lo_c, hi_c = allc.min(axis=0), allc.max(axis=0)
    new_origin = lo_c - r_cam - 2
    shape = hi_c + r_cam - new_origin + 3  # (a, b)
    inside, walls = (paste(g, origin, new_origin, shape) for g in (inside, walls))
    origin = new_origin
    k3 = np.ones((3, 3), np.uint8)
    # closings with zeros beyond the grid (OpenCV's default would keep a dilated rim there)
    inside = cv2.morphologyEx(inside, cv2.MORPH_CLOSE, k3, iterations=2, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    walls = cv2.morphologyEx(walls, cv2.MORPH_CLOSE, k3, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    for c in cam_cells - origin:
        cv2.circle(inside, (int(c[0]), int(c[1])), r_cam, 1, -1)
    inside = _fill_holes(inside)
    free = (inside & (1 - walls)).astype(np.uint8)
    if degraded:  # no floor to stand on: everything seen is one room
        return origin, inside.astype(np.int32), ""
    if not free.any():
        return origin, np.zeros_like(inside, np.int32), "no free space on this floor"
    dist = cv2.distanceTransform(free, cv2.DIST_L2, 5) * cell
    n, comp = cv2.connectedComponents((dist > cfg.door_width / 2).astype(np.uint8), connectivity=8)
    min_marker = max(1, int(0.25 / cell**2))
    markers = np.zeros(free.shape, np.int32)
    k = 0
    for i in range(1, n):
        m = comp == i
        if m.sum() >= min_marker:
            k += 1
            markers[m] = k + 1
    note = ""
    if k == 0:  # nothing wide enough for a marker: all free space is one room
        labels = free.astype(np.int32)
        note = "no space wider than hierarchy.door_width: one room"
    else:
        labels = _flood(np.where(markers > 0, markers - 1, 0), dist, free, cell)
        labels = _merge_wide(labels, k, cfg.door_width / cell)
    labels = _open_regions(labels)
    labels = _drop_small(labels, max(1, int(np.ceil(cfg.min_room_area / cell**2))))
    # each room takes the wall cells next to it (the wall's inner face lies in them)
    grown = cv2.dilate(labels.astype(np.float32), k3).astype(np.int32)
    labels = np.where((labels == 0) & (walls > 0) & (grown > 0), grown, labels)
    rooms = len(np.unique(labels[labels > 0]))
    if rooms == 1 and not note:
        note = "one room (no doorway-narrow passage found: a single room or an open plan)"
    return origin, labels, note


def paste(grid: np.ndarray, origin: np.ndarray, new_origin: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """``grid`` (cell [0, 0] at global ``origin``) on a zero grid of its dtype and ``shape``
    (a, b) whose cell [0, 0] is ``new_origin``; what falls outside is cut."""
    out = np.zeros((shape[1], shape[0]), grid.dtype)
    o = origin - new_origin  # (a, b) of grid[0, 0] in out
    a0, b0 = max(o[0], 0), max(o[1], 0)
    a1, b1 = min(o[0] + grid.shape[1], shape[0]), min(o[1] + grid.shape[0], shape[1])
    if a1 > a0 and b1 > b0:
        out[b0:b1, a0:a1] = grid[b0 - o[1]: b1 - o[1], a0 - o[0]: a1 - o[0]]
    return out


def _fill_holes(inside: np.ndarray) -> np.ndarray:
    """Unseen holes enclosed by seen surface (floor under the camera's path that no view
    looked at, floor behind furniture) are inside. A hole in a wall becomes free space too,
    but the watershed floods it last (it lies next to walls), so it joins no two rooms."""
    filled = inside.copy()
    contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled

def _flood(labels: np.ndarray, dist: np.ndarray, free: np.ndarray, cell: float) -> np.ndarray:
    """Marker-controlled watershed of the distance transform: the free space is flooded from
    the markers level by level, from far from the walls to next to them (one level per
    cell), each level by repeated 3x3 dilation within the cells at or above it; so two
    rooms meet where the free space is narrowest (the doorway)."""
    k3 = np.ones((3, 3), np.uint8)
    lab = labels.astype(np.float32)
    top = float(dist.max())
    for level in np.arange(top, -cell, -cell):
        allowed = (free > 0) & (dist >= max(level, 0.0))
        while True:
            grown = cv2.dilate(lab, k3)
            new = allowed & (lab == 0) & (grown > 0)
            if not new.any():
                break
            lab[new] = grown[new]
    return lab.astype(np.int32)

def _merge_wide(labels: np.ndarray, k: int, door_cells: float) -> np.ndarray:
    """Merge neighbouring regions whose shared boundary is longer than 1.5 door widths
    (``door_cells``: the door width in cells)."""
    if k < 2:
        return labels
    border = np.zeros((k + 1, k + 1), np.int64)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        m = (a > 0) & (b > 0) & (a != b)
        np.add.at(border, (a[m], b[m]), 1)
    border = border + border.T
    parent = list(range(k + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    limit = 1.5 * door_cells * 2  # both sides' cells are counted
    for a, b in zip(*np.nonzero(np.triu(border) > limit)):
        parent[find(int(a))] = find(int(b))
    lut = np.array([find(i) for i in range(k + 1)], np.int32)
    return lut[labels]

def _open_regions(labels: np.ndarray) -> np.ndarray:
    """Each region without its strips narrower than 3 cells (a region leaking along an
    unseen wall); the cells removed go to no room."""
    k3 = np.ones((3, 3), np.uint8)
    out = np.zeros_like(labels)
    for i in np.unique(labels[labels > 0]):
        m = cv2.morphologyEx((labels == i).astype(np.uint8), cv2.MORPH_OPEN, k3, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        out[m > 0] = i
    return out

def _drop_small(labels: np.ndarray, min_cells: int) -> np.ndarray:
    """Regions under ``min_cells`` dropped, the rest numbered 1..K again."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    small = ids[counts < min_cells]
    if len(small):
        labels = np.where(np.isin(labels, small), 0, labels)
    ids = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[labels]
