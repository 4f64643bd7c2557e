"""Floors and rooms from the TSDF surface and the camera path, kept current while mapping.

    builder = HierarchyBuilder(cfg.hierarchy, voxel_size, up=up, up_source="dataset")
    builder.add_surface(blocks, points, block_of)    # GeometryLayer.surface(blocks) of changed blocks
    builder.add_camera(pose[:3, 3])                  # every frame: free space the robot went through
    graph = builder.update(objects, now)             # SceneGraph, or None when not due / unchanged

Feeding is cheap and incremental: each block's surface points are reduced to (ground cell,
height bin, count) rows and replace whatever that block sent before, so re-sent blocks never
count twice; a height histogram and the bird's-eye columns (columns.py: counts per cell and
height bin in tiles, with a mask of the occupied bins) are kept up to date from those rows.
``update`` does the real work at most every ``hierarchy.period`` seconds, and only for the
floors whose height band received changed blocks or cameras; a floor's grid is read from the
columns' masks, so an update costs the changed floor's area in cells, not its surface points.

Floors: peaks of the height histogram (a bin whose count stands out of its neighbourhood's
median, which the walls set, by ``min_floor_area`` of surface) with camera positions between
``min_camera_height`` and ``max_camera_height`` above them; peaks closer than ``storey_gap``
give one floor, the highest at least half as strong as the strongest (the floor above a ceiling
seen from below, not the table top above a floor). Cameras over no floor (stairs, a storey just
entered) are said in the note.

Rooms, per floor (rooms.py), on a bird's-eye grid of ``cell_size``: *inside* = cells with surface from the
floor up to the top of the wall band, plus discs around the camera path; *walls* = cells with
surface in the wall band (``wall_low`` .. ``wall_high`` above the floor: above furniture, below
door lintels, so doorways stay open); free = inside minus walls. Then a distance-transform
watershed: markers are the connected parts of free space farther than ``door_width`` / 2 from
any wall (a doorway's narrow free strip separates them; cv2.connectedComponents), and the free
space is flooded from them level by level down the distance transform (cv2.dilate within each
level, so fronts meet where the free space is narrowest: in the doorways), rooms sharing a boundary longer than 1.5 door widths are merged
(one room cut in two by furniture or an L-shape), regions under ``min_room_area`` are dropped, and
each room takes the wall cells next to it (the wall's inner face). Ids stay stable: a new room
takes the id of the old room whose cells it holds most of (``match_overlap``); one old room
becoming several is a split, several becoming one a merge (counted in the graph).

Each object belongs to the room holding most of its points' cells. Whatever the input, the
result is a graph: no floor surface, no cameras or an open plan degrade to one floor / one room
with the reason in ``SceneGraph.note``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import cv2
import numpy as np
from scipy.ndimage import find_objects

from ...config import HierarchyConfig
from ..retrieval.relations import horizontal_basis
from .graph import Floor, Room, SceneGraph
from .columns import Columns
from .rooms import FLOOR_BAND, floor_grid, paste, segment_floor

MIN_SUPPORT = 3  # camera positions (thinned to one per grid cell of travel) a floor needs above it


@dataclass
class _FloorState:
    id: int
    height: float
    ceiling: float
    origin: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))  # global cell of labels[0, 0] (a, b)
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))  # [b, a] -> room id (0: none)
    room_ids: list[int] = field(default_factory=list)
    note: str = ""
    degraded: bool = False  # no floor surface: one room of all that was seen


class HierarchyBuilder:
    def __init__(self, cfg: HierarchyConfig, voxel_size: float, up=(0.0, 0.0, 1.0), up_source: str = "default"):
        self.cfg = cfg
        self.voxel_size = float(voxel_size)
        up = np.asarray(up, float)
        self.up = up / np.linalg.norm(up)
        self.up_source = up_source
        self.basis = horizontal_basis(self.up)  # (2, 3): ground axes a, b (right-handed with up)
        self.cell = float(cfg.cell_size)
        self.hbin = float(cfg.height_bin)
        # per block: (cells (M, 2) int64, height bins (M,) int64, counts (M,) int64, height sums (M,))
        self._blocks: dict[tuple[int, int, int], tuple[np.ndarray, ...]] = {}
        self._columns = Columns()  # the same rows summed per (cell, height bin), in tiles
        self._hist = np.zeros(0, np.int64)
        self._hsum = np.zeros(0, np.float64)  # sum of the heights counted in each bin
        self._hist_lo = 0  # height bin of _hist[0]
        self._cam = np.zeros((64, 3))  # camera centres (ground a, b and height), thinned; rows [:_n_cam] used
        self._cam_xyz = np.zeros((64, 3))  # the same in the map frame (SceneGraph.camera_path: saved with the map)
        self._n_cam = 0
        self._dirty: list[tuple[float, float]] = []  # height ranges changed since the last update
        self._floors: list[_FloorState] = []
        self._next_floor_id = 1
        self._next_room_id = 1
        self._object_rooms: dict[int, tuple[int, int]] = {}  # object id -> (points seen, room id)
        self._last_update = -np.inf
        self.graph = SceneGraph(up=self.up.copy(), up_source=up_source)
        self.stats = {"updates": 0, "floors_recomputed": 0, "last_update_ms": 0.0, "blocks": 0}

    # ------------------------------------------------------------------------------ feeding
    def add_surface(self, blocks: np.ndarray, points: np.ndarray, block_of: np.ndarray) -> None:
        """Surface points of ``blocks`` (GeometryLayer.surface): each listed block's rows replace
        what it sent before (a listed block without points is emptied)."""
        blocks = np.asarray(blocks, np.int64).reshape(-1, 3)
        points = np.asarray(points, np.float64).reshape(-1, 3)
        block_of = np.asarray(block_of, np.int64).reshape(-1)
        if len(points) != len(block_of):
            raise ValueError(f"{len(points)} points but {len(block_of)} block indices")
        if len(block_of) and (block_of.min() < 0 or block_of.max() >= len(blocks)):
            raise ValueError("block_of indexes outside blocks")
        ok = np.all(np.isfinite(points), axis=1)
        points, block_of = points[ok], block_of[ok]
        h = points @ self.up
        g = points @ self.basis.T
        cells = np.floor(g / self.cell).astype(np.int64)
        hb = np.floor(h / self.hbin).astype(np.int64)
        if len(points):
            # one int64 key per (block, cell, height bin): a 1-D unique is much faster than rows
            cols = np.stack([block_of, cells[:, 0], cells[:, 1], hb], axis=1)
            lo = cols.min(axis=0)
            dims = tuple(int(d) for d in cols.max(axis=0) - lo + 1)
            flat = np.ravel_multi_index(tuple((cols - lo).T), dims)
            uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
            rows = np.stack(np.unravel_index(uniq, dims), axis=1) + lo
            sums = np.bincount(inverse.reshape(-1), weights=h, minlength=len(uniq))
        else:
            rows, counts, sums = np.zeros((0, 4), np.int64), np.zeros(0, np.int64), np.zeros(0)
        starts = np.searchsorted(rows[:, 0], np.arange(len(blocks) + 1)).tolist()
        cells_all, hb_all = rows[:, 1:3], rows[:, 3]
        old_entries = []
        for i, blk in enumerate(map(tuple, blocks.tolist())):
            old = self._blocks.pop(blk, None)
            if old is not None:
                old_entries.append(old)
            a, b = starts[i], starts[i + 1]
            if a < b:  # views into this call's arrays: they live while any of their blocks is not re-sent
                self._blocks[blk] = (cells_all[a:b], hb_all[a:b], counts[a:b], sums[a:b])
        lo_h, hi_h = np.inf, -np.inf
        if old_entries:
            old_hb = np.concatenate([o[1] for o in old_entries])
            old_n = -np.concatenate([o[2] for o in old_entries])
            self._hist_add(old_hb, old_n, -np.concatenate([o[3] for o in old_entries]))
            self._columns.add(np.concatenate([o[0] for o in old_entries]), old_hb, old_n)
            lo_h, hi_h = old_hb.min() * self.hbin, (old_hb.max() + 1) * self.hbin
        if len(rows):
            self._hist_add(hb_all, counts, sums)
            self._columns.add(cells_all, hb_all, counts)
            lo_h, hi_h = min(lo_h, hb_all.min() * self.hbin), max(hi_h, (hb_all.max() + 1) * self.hbin)
        if lo_h <= hi_h:
            self._dirty.append((float(lo_h), float(hi_h)))
        self.stats["blocks"] = len(self._blocks)
        self.stats["column_tiles"] = len(self._columns)

    def add_camera(self, position: np.ndarray) -> None:
        """A camera centre (map frame): free space the robot went through. Positions closer
        than a grid cell to the last one kept are skipped (the path stays small)."""
        p = np.asarray(position, float).reshape(3)
        if not np.all(np.isfinite(p)):
            return
        c = np.array([*(self.basis @ p), p @ self.up])
        if self._n_cam and np.linalg.norm(c - self._cam[self._n_cam - 1]) < self.cell:
            return
        if self._n_cam == len(self._cam):  # grown by doubling; graphs keep views of the old buffers
            self._cam = np.concatenate([self._cam, np.zeros_like(self._cam)])
            self._cam_xyz = np.concatenate([self._cam_xyz, np.zeros_like(self._cam_xyz)])
        self._cam[self._n_cam] = c
        self._cam_xyz[self._n_cam] = p
        self._n_cam += 1
        self._dirty.append((c[2] - self.cfg.max_camera_height, c[2]))

    @property
    def _cameras(self) -> np.ndarray:
        """(M, 3) the thinned camera centres so far (ground a, b and height): a view, never copied."""
        return self._cam[: self._n_cam]

    def seed(self, graph: SceneGraph) -> str:
        """Start from a loaded map's hierarchy: its camera path (``graph.camera_path``), and its
        floors and rooms (room outlines drawn on the grid) as the previous state that the next
        update's ids are matched against, so that a map saved and loaded keeps its floor and
        room ids. Call on a new builder, before feeding it. Returns "" or why the graph was not
        used (another up direction)."""
        if float(np.dot(np.asarray(graph.up, float), self.up)) < np.cos(np.radians(1.0)):
            return f"the loaded hierarchy's up {np.round(graph.up, 3).tolist()} is not this map's {np.round(self.up, 3).tolist()}"
        path = graph.camera_path if graph.camera_path is not None else np.zeros((0, 3))
        for p in np.asarray(path, float).reshape(-1, 3):
            self.add_camera(p)
        self._dirty.clear()  # the cameras alone change nothing until the surface comes
        floors = []
        for f in graph.floors:
            rooms = [r for r in graph.rooms if r.floor_id == f.id and len(r.outline) >= 3]
            origin, labels = self._draw_rooms(rooms)
            floors.append(_FloorState(f.id, f.height, f.ceiling, origin, labels, sorted(r.id for r in rooms)))
        self._floors = floors
        self._next_floor_id = max([f.id for f in graph.floors], default=0) + 1
        self._next_room_id = max([r.id for r in graph.rooms], default=0) + 1
        self.graph = SceneGraph(up=self.up.copy(), up_source=self.up_source, version=graph.version, splits=graph.splits, merges=graph.merges)
        return ""

    def _draw_rooms(self, rooms: list) -> tuple[np.ndarray, np.ndarray]:
        """(origin, [b, a] label grid) with each room's outline filled with its id."""
        if not rooms:
            return np.zeros(2, np.int64), np.zeros((0, 0), np.int32)
        polys = [(np.asarray(r.outline, float) @ self.basis.T) / self.cell - 0.5 for r in rooms]  # cell coordinates
        lo = np.floor(np.min([p.min(axis=0) for p in polys], axis=0)).astype(np.int64) - 1
        hi = np.ceil(np.max([p.max(axis=0) for p in polys], axis=0)).astype(np.int64) + 1
        labels = np.zeros((hi[1] - lo[1] + 1, hi[0] - lo[0] + 1), np.int32)
        for r, p in zip(rooms, polys):
            cv2.fillPoly(labels, [np.round(p - lo).astype(np.int32)], int(r.id))
        return lo, labels

    def _hist_add(self, hb: np.ndarray, n: np.ndarray, sums: np.ndarray) -> None:
        lo, hi = int(hb.min()), int(hb.max())
        if len(self._hist) == 0:
            self._hist_lo, self._hist, self._hsum = lo, np.zeros(hi - lo + 1, np.int64), np.zeros(hi - lo + 1)
        elif lo < self._hist_lo or hi >= self._hist_lo + len(self._hist):
            new_lo = min(lo, self._hist_lo)
            size = max(hi, self._hist_lo + len(self._hist) - 1) - new_lo + 1
            at = slice(self._hist_lo - new_lo, self._hist_lo - new_lo + len(self._hist))
            hist, hsum = np.zeros(size, np.int64), np.zeros(size)
            hist[at], hsum[at] = self._hist, self._hsum
            self._hist, self._hsum, self._hist_lo = hist, hsum, new_lo
        np.add.at(self._hist, hb - self._hist_lo, n)
        np.add.at(self._hsum, hb - self._hist_lo, sums)

    # ------------------------------------------------------------------------------ floors
    def _floor_peaks(self) -> tuple[np.ndarray, np.ndarray]:
        """(heights, prominence in m^2) of the histogram bins that stand out as horizontal surfaces."""
        c = self._hist.astype(np.float64)
        if len(c) < 3:
            return np.zeros(0), np.zeros(0)
        pair = c + np.maximum(np.r_[c[1:], 0.0], np.r_[0.0, c[:-1]])  # a surface split over two bins
        half = max(1, int(round(0.6 / self.hbin)))
        padded = np.pad(pair, half)  # zeros: no surface beyond the ends
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
        base = np.median(windows, axis=1)
        prom = (pair - base) * self.voxel_size**2
        local_max = pair >= np.maximum(np.r_[pair[1:], 0.0], np.r_[0.0, pair[:-1]])
        sel = np.flatnonzero(local_max & (prom >= self.cfg.min_floor_area))
        # the surface's height: the mean height of the bin and its stronger neighbour
        nb = np.where(np.r_[c[1:], 0.0][sel] >= np.r_[0.0, c[:-1]][sel], sel + 1, sel - 1).clip(0, len(c) - 1)
        heights = (self._hsum[sel] + self._hsum[nb]) / np.maximum(c[sel] + c[nb], 1.0)
        return heights, prom[sel]

    def _find_floors(self) -> tuple[list[float], str, bool]:
        """(floor heights, note, degraded: no floor surface anywhere).

        A floor candidate is a histogram peak with at least MIN_SUPPORT camera positions
        between ``min_camera_height`` and ``max_camera_height`` above it; candidates closer
        than ``storey_gap`` to each other (a table top and its floor, a ceiling seen from below
        and the floor above it) give one floor: the highest at least half as strong as the
        strongest of them. Cameras on stairs support no floor of their own, and are said."""
        cfg = self.cfg
        heights, prom = self._floor_peaks()
        cams = self._cameras[:, 2]
        if not len(cams):
            if len(heights):
                return [float(heights[np.argmax(prom)])], "no camera path: one floor at the strongest horizontal surface", False
            return self._degraded("no camera path and no floor surface")
        support = np.array([np.count_nonzero((cams >= h + cfg.min_camera_height) & (cams <= h + cfg.max_camera_height)) for h in heights])
        order = np.argsort(heights)
        cand = [(float(heights[i]), float(prom[i])) for i in order if support[i] >= MIN_SUPPORT]
        groups: list[list[tuple[float, float]]] = []
        for h, p in cand:
            if groups and h - groups[-1][-1][0] < cfg.storey_gap:
                groups[-1].append((h, p))
            else:
                groups.append([(h, p)])
        floors = [max(h for h, p in g if p >= 0.5 * max(q for _, q in g)) for g in groups]
        if not floors:
            return self._degraded(f"no floor surface under the cameras (from {cams.min():.2f} to {cams.max():.2f} m)")
        over = np.zeros(len(cams), bool)
        for h in floors:
            over |= (cams >= h + cfg.min_camera_height) & (cams <= h + cfg.max_camera_height)
        stray = int(np.count_nonzero(~over))
        note = ""
        if stray >= MIN_SUPPORT:
            note = (f"{stray} of {len(cams)} camera positions over no floor found (stairs, or a floor not seen "
                    f"enough yet, at {np.median(cams[~over]):.2f} m)")
        return floors, note, False

    def _degraded(self, reason: str) -> tuple[list[float], str, bool]:
        low = self._lowest_surface()
        if low is None:
            return [], reason + ": no surface yet", True
        return [low], reason + ": one floor at the lowest surface, one room", True

    def _lowest_surface(self) -> float | None:
        nz = np.flatnonzero(self._hist > 0)
        if len(nz) == 0:
            return None
        return float(self._hsum[nz[0]] / self._hist[nz[0]])

    def _ceiling(self, h: float) -> float:
        """Ceiling of the top floor: the lowest horizontal surface from 2 to 4 m above it, else
        ``max_camera_height`` + 0.5 m above it."""
        heights, _ = self._floor_peaks()
        above = heights[(heights >= h + 2.0) & (heights <= h + 4.0)]
        return float(above.min()) if len(above) else h + self.cfg.max_camera_height + 0.5

    # ------------------------------------------------------------------------------ rooms
    def _segment(self, fl: _FloorState) -> tuple[np.ndarray, np.ndarray, str]:
        """Room regions of one floor: (origin cell, label grid [b, a] of region numbers 1..K, note)."""
        cfg = self.cfg
        origin, inside, walls, gnote = floor_grid(self._columns, fl.height, cfg, self.hbin)
        cams = self._cameras
        cams = cams[(cams[:, 2] >= fl.height + cfg.min_camera_height) & (cams[:, 2] <= fl.height + cfg.max_camera_height)]
        cam_cells = np.floor(cams[:, :2] / self.cell).astype(np.int64)
        origin, labels, note = segment_floor(origin, inside, walls, cam_cells, fl.degraded, cfg, self.cell)
        return origin, labels, "; ".join(x for x in (gnote, note) if x)

    def _match_ids(self, old: _FloorState | None, origin: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Room ids for the regions 1..K of ``labels`` (a lookup table), stable against ``old``."""
        k = int(labels.max()) if labels.size else 0
        lut = np.zeros(k + 1, np.int32)
        if k == 0:
            return lut
        area_new = np.bincount(labels.ravel(), minlength=k + 1)
        inter: dict[tuple[int, int], int] = {}
        area_old: dict[int, int] = {}
        if old is not None and old.labels.size:
            # both grids on the union of their extents, in global cells
            lo = np.minimum(origin, old.origin)
            shape = np.maximum(origin + labels.shape[::-1], old.origin + old.labels.shape[::-1]) - lo
            a = paste(labels.astype(np.int64), origin, lo, shape)
            b = paste(old.labels.astype(np.int64), old.origin, lo, shape)
            m = (a > 0) & (b > 0)
            k_old = int(old.labels.max()) + 1
            pair_counts = np.bincount(a[m] * k_old + b[m], minlength=(k + 1) * k_old)  # 1-D counts: no row sort
            inter = {(int(p) // k_old, int(p) % k_old): int(pair_counts[p]) for p in np.flatnonzero(pair_counts)}
            counts = np.bincount(old.labels.ravel(), minlength=k_old)
            area_old = {int(i): int(counts[i]) for i in np.flatnonzero(counts[1:]) + 1}
        share = self.cfg.match_overlap
        taken_old: set[int] = set()
        for (new, oid), n in sorted(inter.items(), key=lambda kv: -kv[1]):
            if lut[new] or oid in taken_old or n < share * min(area_old[oid], area_new[new]):
                continue
            lut[new] = oid
            taken_old.add(oid)
        for new in range(1, k + 1):
            if not lut[new]:
                lut[new] = self._next_room_id
                self._next_room_id += 1
        # events: an old room substantially in several new rooms (split), or several old rooms
        # substantially in one new room (merge)
        holders: dict[int, int] = {}
        held: dict[int, int] = {}
        for (new, oid), n in inter.items():
            if n >= share * area_old[oid] or n >= share * area_new[new]:
                holders[oid] = holders.get(oid, 0) + 1
                held[new] = held.get(new, 0) + 1
        self.graph.splits += sum(1 for v in holders.values() if v > 1)
        self.graph.merges += sum(1 for v in held.values() if v > 1)
        return lut

    # ------------------------------------------------------------------------------ update
    def due(self, now: float | None = None) -> bool:
        """Whether ``update`` would recompute now (period passed and something changed): call
        it first to skip building the objects' list when not."""
        now = time.monotonic() if now is None else float(now)
        return now - self._last_update >= self.cfg.period and bool(self._dirty)

    def update(self, objects: Iterable[Any] = (), now: float | None = None, force: bool = False) -> SceneGraph | None:
        """Recompute what changed, at most every ``hierarchy.period`` seconds (``now``: seconds,
        default time.monotonic()). ``objects``: items with ``id`` and ``points`` (N, 3) (a
        MapSnapshot's objects). Returns the new graph, or None when not due or nothing changed."""
        now = time.monotonic() if now is None else float(now)
        if not force and now - self._last_update < self.cfg.period:
            return None
        objects = list(objects)
        if not self._dirty and not force and not self._objects_changed(objects):
            return None
        t0 = time.perf_counter()
        self._last_update = now
        dirty, self._dirty = self._dirty, []
        heights, note, degraded = self._find_floors()
        old_floors = self._floors
        floors: list[_FloorState] = []
        redone: set[int] = set()  # rooms of the floors segmented again: their objects are placed again
        for i, h in enumerate(heights):
            ceiling = heights[i + 1] if i + 1 < len(heights) else self._ceiling(h)
            match = min(old_floors, key=lambda f: abs(f.height - h), default=None)
            if match is not None and abs(match.height - h) < self.cfg.storey_gap / 2 and all(f.id != match.id for f in floors):
                fl = _FloorState(match.id, h, ceiling, match.origin, match.labels, match.room_ids, match.note, match.degraded)
                moved = abs(match.height - h) > self.hbin / 2
            else:
                match = None
                fl = _FloorState(self._next_floor_id, h, ceiling)
                self._next_floor_id += 1
                moved = True
            moved = moved or fl.degraded != degraded
            fl.degraded = degraded
            touched = moved or any(lo <= ceiling and hi >= h - FLOOR_BAND for lo, hi in dirty)
            if touched or force:
                origin, regions, fnote = self._segment(fl)
                lut = self._match_ids(match, origin, regions)
                fl.origin, fl.labels, fl.note = origin, lut[regions], fnote
                fl.room_ids = sorted(int(r) for r in np.unique(fl.labels[fl.labels > 0]))
                self.stats["floors_recomputed"] += 1
                redone.update(fl.room_ids)
                if match is not None:
                    redone.update(match.room_ids)
            floors.append(fl)
        self._floors = floors
        self._assign_objects(objects, redone)
        self.graph = self._build_graph(note)
        self.stats["updates"] += 1
        self.stats["last_update_ms"] = (time.perf_counter() - t0) * 1e3
        return self.graph

    def _objects_changed(self, objects: list) -> bool:
        return any(self._object_rooms.get(int(o.id), (-1,))[0] != len(o.points) for o in objects) or len(objects) != len(self._object_rooms)

    def _band(self, i: int) -> tuple[float, float]:
        """Heights that belong to floor ``i``: from 0.3 m below it (anything lower for the
        lowest) to 0.3 m below the next floor, or 0.3 m above its ceiling for the top one."""
        fl = self._floors[i]
        bottom = fl.height - 0.3 if i > 0 else -np.inf
        top = self._floors[i + 1].height - 0.3 if i + 1 < len(self._floors) else fl.ceiling + 0.3
        return bottom, top

    def floor_of_height(self, h: float) -> _FloorState | None:
        """The floor whose band holds height ``h`` (None: above the top floor's ceiling)."""
        for i, fl in enumerate(self._floors):
            bottom, top = self._band(i)
            if bottom <= h < top:
                return fl
        return None

    def room_at(self, points: np.ndarray) -> np.ndarray:
        """Room id of each point (N, 3) (0: in no room)."""
        p = np.asarray(points, float).reshape(-1, 3)
        out = np.zeros(len(p), np.int32)
        if not self._floors or not len(p):
            return out
        h = p @ self.up
        cells = np.floor((p @ self.basis.T) / self.cell).astype(np.int64)
        for i, fl in enumerate(self._floors):
            bottom, top = self._band(i)
            sel = np.flatnonzero((h >= bottom) & (h < top))
            if not len(sel) or not fl.labels.size:
                continue
            rel = cells[sel] - fl.origin
            ok = (rel[:, 0] >= 0) & (rel[:, 1] >= 0) & (rel[:, 0] < fl.labels.shape[1]) & (rel[:, 1] < fl.labels.shape[0])
            out[sel[ok]] = fl.labels[rel[ok, 1], rel[ok, 0]]
        return out

    def _assign_objects(self, objects: list, redone: set[int]) -> None:
        """Each object to the room holding most of its points; an object whose points did not
        change and whose room's floor was not segmented again keeps its room."""
        keep: dict[int, tuple[int, int]] = {}
        live = self._room_ids()
        for o in objects:
            oid = int(o.id)
            prev = self._object_rooms.get(oid)
            pts = np.asarray(o.points, float).reshape(-1, 3)
            if prev is not None and prev[0] == len(pts) and prev[1] in live and prev[1] not in redone:
                keep[oid] = prev
                continue
            rid = 0
            if len(pts):
                rooms = self.room_at(pts)
                ids, counts = np.unique(rooms[rooms > 0], return_counts=True)
                if len(ids):
                    rid = int(ids[np.argmax(counts)])
                else:
                    rid = self._nearest_room(pts.mean(axis=0))
            keep[oid] = (len(pts), rid)
        self._object_rooms = keep

    def _room_ids(self) -> set[int]:
        return {r for fl in self._floors for r in fl.room_ids}

    def _nearest_room(self, p: np.ndarray) -> int:
        fl = self.floor_of_height(float(p @ self.up))
        if fl is None or not fl.labels.size or not fl.room_ids:
            return 0
        c = np.floor((self.basis @ p) / self.cell) - fl.origin
        bb, aa = np.nonzero(fl.labels)
        j = int(np.argmin((aa - c[0]) ** 2 + (bb - c[1]) ** 2))
        return int(fl.labels[bb[j], aa[j]])

    def object_room(self, object_id: int) -> int:
        """Room id of an object (0: none) as of the last update."""
        return self._object_rooms.get(int(object_id), (0, 0))[1]

    def _build_graph(self, note: str) -> SceneGraph:
        g = self.graph
        floors, rooms = [], []
        by_room: dict[int, list[int]] = {}
        for oid, (_, rid) in sorted(self._object_rooms.items()):
            if rid:
                by_room.setdefault(rid, []).append(oid)
        notes = [note] if note else []
        for fl in self._floors:
            floors.append(Floor(id=fl.id, height=fl.height, ceiling=fl.ceiling, room_ids=list(fl.room_ids)))
            if fl.note:
                notes.append(f"floor {fl.id}: {fl.note}")
            # One pass over the floor's grid for the rooms' bounding boxes; each room then reads
            # its box only (grown by a cell of margin where the grid allows, so its outline traces
            # as on the whole grid), not the whole grid once per room.
            boxes = find_objects(fl.labels, max_label=max(fl.room_ids)) if fl.room_ids else []
            for rid in fl.room_ids:
                sl = boxes[rid - 1] if 0 < rid <= len(boxes) else None
                b0, a0 = (max(sl[0].start - 1, 0), max(sl[1].start - 1, 0)) if sl is not None else (0, 0)
                b1, a1 = (sl[0].stop + 1, sl[1].stop + 1) if sl is not None else (1, 1)
                mask = (fl.labels[b0:b1, a0:a1] == rid).astype(np.uint8)
                area = float(mask.sum()) * self.cell**2
                outline2 = self._outline(mask, fl.origin, (a0, b0))
                bb, aa = np.nonzero(mask)
                c2 = (np.array([(aa + a0).mean(), (bb + b0).mean()]) + fl.origin + 0.5) * self.cell
                old = g.room(rid)
                rooms.append(
                    Room(
                        id=rid, floor_id=fl.id, outline=self._to_3d(outline2, fl.height), area=area,
                        centroid=self._to_3d(c2[None], fl.height)[0],
                        label=old.label if old is not None and old.label else f"room {rid}",
                        label_score=old.label_score if old is not None else 0.0,
                        summary=old.summary if old is not None else "",
                        object_ids=by_room.get(rid, []),
                        keyframe_ids=list(old.keyframe_ids) if old is not None else [],
                    )
                )
        if not floors:
            notes.append("no floor yet")
        return SceneGraph(
            up=self.up.copy(), up_source=self.up_source, note="; ".join(notes), version=g.version + 1,
            splits=g.splits, merges=g.merges, floors=floors, rooms=rooms, camera_path=self._cam_xyz[: self._n_cam],
        )

    def _outline(self, mask: np.ndarray, origin: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Counter-clockwise polygon (ground a, b metres) around the largest part of a room mask
        whose cell [0, 0] is cell ``offset`` (a, b) of the floor's grid."""
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
        if not contours:
            return np.zeros((0, 2))
        c = max(contours, key=cv2.contourArea)
        c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2).astype(np.float64)
        xy = (c + origin + 0.5) * self.cell
        x, y = xy[:, 0], xy[:, 1]
        if 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) < 0:
            xy = xy[::-1]
        return xy

    def _to_3d(self, ab: np.ndarray, height: float) -> np.ndarray:
        ab = np.asarray(ab, float).reshape(-1, 2)
        return ab @ self.basis + height * self.up

    def floors_state(self) -> list[_FloorState]:
        """The floors with their label grids (for evaluation and drawing)."""
        return list(self._floors)
