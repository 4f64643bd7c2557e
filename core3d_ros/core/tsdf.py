"""The geometry layer: every synced frame integrated into a TSDF (Open3D's VoxelBlockGrid).

    layer = GeometryLayer(voxel_size=0.025, max_depth=5.0, device="cpu", clear=True)
    layer.integrate(frame)                       # at sensor rate; the frame's blocks become dirty
    blocks = layer.take_dirty()                  # (B, 3) block coordinates changed since the last call
    points, colors, block_of = layer.surface(blocks)   # surface voxels of those blocks only
    layer.save(path); GeometryLayer.load(path, ...)

This is the standard surface map planners and RViz expect, in the same frame and voxel size as
the object map. Open3D hashes 8^3-voxel blocks, so a frame costs what the frame touches; the
publishers read only dirty blocks, so nothing per frame or per publish scans the whole map. The
same code runs on CUDA (``device="cuda"``) where Open3D was built with it.

Clearing (``clear``): Open3D's ``compute_unique_block_coordinates`` gives only the blocks within
the truncation band of the frame's surface, so a surface that left (a sofa carried away) would
never be revisited. As nvblox does, every *existing* block in view is integrated too: rays
through every 8th pixel (the min-pooled depth of free_space.py) are marched from the camera to the
measured depth, the blocks they pass are looked up in the grid's hash map (``find``; nothing new
is allocated), and their union with the surface blocks goes to ``integrate``. Voxels in front of
the measured depth then move towards +truncation, so the old surface fades; the cost follows the
frustum's blocks, never the map. Weights are capped at ``max_weight`` in the integrated blocks
(as nvblox caps them) so that a surface seen for an hour still clears in a bounded number of
frames. Holes and depth beyond ``max_depth`` are no evidence (Open3D skips those pixels).

Carving (``carve``, with ``clear``): the running average moves a voxel that was inside an object
(tsdf near -1) towards its new value one frame at a time, so on the way it passes the surface
band and, seen a few times only, stays there: a ghost surface where the object was. After a sofa
left the synthetic room, every remaining TSDF ghost was such a voxel (seen 2-9 times in the second
pass; most 2-9 cm in front of the wall that had been behind the sofa, so that their new value,
their distance to the wall, is small and the average needs tens of frames to leave the band). A
voxel held on or behind a surface (tsdf at most half a voxel) whose whole image footprint has
depth beyond it by more than ``CARVE_MARGIN_VOXELS`` voxels (or ``CARVE_NOISE * z^2``, the
depth noise) contradicts the stored value outright: the frame sees through it. Its weight is
reset (tsdf +1, weight 0) before integration, so it restarts from this frame's measurement. The
test is free_space.py's, on the full-resolution depth (every pixel of the footprint of the
sphere about the sample, not min-pooled cells, which at a grazing wall take depth from too far
aside): a surface the frame sees within the footprint (a grazing wall, a thin object, the surface
being mapped) never carves, nor does a hole or a footprint leaving the image; only a surface
measured more than the margin behind where the map holds it does (a thing that left, or depth
noise or pose error beyond the margin: on 7-Scenes redkitchen, 200 static frames, carving took
28 of 14,132 surface samples). The voxels inside the margin, 2-9 cm in front of a surface behind,
still average their way out (33 of the 95 ghosts above).
"""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numba
import numpy as np

from .fileio import atomic_output
from .frame import Frame
from .fusion.blocks import MAX_DENSE_BLOCK_CELLS
from .fusion.free_space import NEAR, POOL, frustum_blocks_kernel, pool_min_kernel

DEPTH_SCALE = 1000.0  # frames are integrated as uint16 millimetres, Open3D's native input
RAY_STRIDE = 2  # clearing: the depth image is min-pooled at every RAY_STRIDE-th pixel
CARVE_MARGIN_VOXELS = 2.0  # carving: depth beyond a voxel by this much sees through it (fusion.free_margin_voxels' default)
CARVE_NOISE = 0.005  # carving: ... or by this times z^2, the depth noise (fusion.free_margin_quadratic's default)


@numba.njit(cache=True, nogil=True, inline="always")
def _seen_through(px, py, pz, depth, max_depth, fx, fy, cx, cy, Rt, tc, rad, margin, margin_quad):
    """Whether every pixel of the image footprint of the sphere of radius ``rad`` about (px, py,
    pz) has valid depth (up to ``max_depth``) beyond the centre by more than ``max(margin,
    margin_quad * z^2)``; a footprint leaving the image is no evidence."""
    x = Rt[0, 0] * px + Rt[0, 1] * py + Rt[0, 2] * pz + tc[0]
    y = Rt[1, 0] * px + Rt[1, 1] * py + Rt[1, 2] * pz + tc[1]
    z = Rt[2, 0] * px + Rt[2, 1] * py + Rt[2, 2] * pz + tc[2]
    if z - rad <= NEAR:
        return False
    u = fx * x / z + cx
    v = fy * y / z + cy
    ru = fx * rad / (z - rad) + 0.5
    rv = fy * rad / (z - rad) + 0.5
    h, w = depth.shape
    u0, u1 = math.floor(u - ru), math.ceil(u + ru)
    v0, v1 = math.floor(v - rv), math.ceil(v + rv)
    if u0 < 0 or v0 < 0 or u1 > w - 1 or v1 > h - 1:
        return False
    need = z + max(margin, margin_quad * z * z)
    d = depth[int(v + 0.5), int(u + 0.5)]  # the centre's pixel first: a voxel on a seen surface fails there, at once
    if not (d > need and d <= max_depth):
        return False
    for r in range(v0, v1 + 1):
        for c in range(u0, u1 + 1):
            d = depth[r, c]
            if not (d > need and d <= max_depth):  # nearer, a hole (0, NaN) or too far: no
                return False
    return True


@numba.njit(cache=True, nogil=True)
def carve_kernel(tsdf, weight, rows, bcoords, res, band, depth, max_depth, fx, fy, cx, cy, Rt, tc, voxel, margin_voxels, margin_quad):
    """Reset (tsdf 1, weight 0) the voxels of grid rows ``rows`` (block coordinates ``bcoords``;
    voxel o of a block at offset (o % res, o // res % res, o // res^2)) that are held on or
    behind a surface (tsdf <= ``band``) and that the frame sees through with ``margin_voxels``
    voxels (or ``margin_quad * z^2``) to spare (module overview, carving). Returns how many."""
    n = 0
    rad = 0.8661 * voxel  # the bounding sphere of the voxel-sized cube about the sample
    for i in range(rows.shape[0]):
        t = tsdf[rows[i]]
        wt = weight[rows[i]]
        for o in range(t.shape[0]):
            if wt[o] > 0 and t[o] <= band:
                px = (bcoords[i, 0] * res + o % res) * voxel  # Open3D samples at multiples of the voxel
                py = (bcoords[i, 1] * res + (o // res) % res) * voxel
                pz = (bcoords[i, 2] * res + o // (res * res)) * voxel
                if _seen_through(px, py, pz, depth, max_depth, fx, fy, cx, cy, Rt, tc, rad, margin_voxels * voxel, margin_quad):
                    t[o] = 1.0
                    wt[o] = 0.0
                    n += 1
    return n


@numba.njit(cache=True, nogil=True)
def clamp_rows_kernel(w, rows, cap):
    """w[rows] = min(w[rows], cap), in place."""
    for i in range(rows.shape[0]):
        row = w[rows[i]]
        for j in range(row.shape[0]):
            if row[j] > cap:
                row[j] = cap


@numba.njit(cache=True, nogil=True)
def surface_kernel(tsdf, weight, color, bufs, blocks, res, voxel, band, min_weight):
    """Surface voxels of the blocks at grid rows ``bufs`` (block coordinates ``blocks``), read
    straight from the grid's memory: ``tsdf`` / ``weight`` (capacity, res^3), ``color``
    (capacity, res^3, 3), voxels x fastest, as Open3D lays them out. A voxel is on the surface
    when |tsdf| <= ``band`` (in truncation units) and its weight >= ``min_weight``. Returns
    (points (N, 3) float32 at the voxels' corners as Open3D's coordinates, colours (N, 3)
    float32, the index into ``bufs`` of each)."""
    per = res * res * res
    n = 0
    for i in range(bufs.shape[0]):
        t, w = tsdf[bufs[i]], weight[bufs[i]]
        for j in range(per):
            if abs(t[j]) <= band and w[j] >= min_weight:
                n += 1
    points = np.empty((n, 3), np.float32)
    colors = np.empty((n, 3), np.float32)
    block_of = np.empty(n, np.int64)
    k = 0
    for i in range(bufs.shape[0]):
        row = bufs[i]
        t, w, c = tsdf[row], weight[row], color[row]
        for j in range(per):
            if abs(t[j]) <= band and w[j] >= min_weight:
                points[k, 0] = (blocks[i, 0] * res + j % res) * voxel
                points[k, 1] = (blocks[i, 1] * res + (j // res) % res) * voxel
                points[k, 2] = (blocks[i, 2] * res + j // (res * res)) * voxel
                colors[k] = c[j]
                block_of[k] = i
                k += 1
    return points, colors, block_of


def _block_keys(blocks: np.ndarray) -> np.ndarray:
    """(B, 3) block coordinates -> (B,) int64, one per block (21 bits per axis)."""
    b = np.asarray(blocks, np.int64) + (1 << 20)
    return (b[:, 0] << 42) | (b[:, 1] << 21) | b[:, 2]


class GeometryError(ValueError):
    """A geometry file that cannot be loaded, or a device that does not exist."""


def _device(name: str):
    import open3d.core as o3c

    name = (name or "cpu").strip().lower()
    if name == "auto":
        name = "cuda" if o3c.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not o3c.cuda.is_available():
        raise GeometryError(f"geometry.device={name!r} but Open3D has no CUDA device here; use 'cpu' or 'auto'")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise GeometryError(f"geometry.device must be auto, cpu or cuda[:N], got {name!r}")
    return o3c.Device("CUDA:" + name.split(":")[1] if ":" in name else ("CUDA:0" if name == "cuda" else "CPU:0"))


class GeometryLayer:
    def __init__(
        self,
        voxel_size: float,
        max_depth: float,
        device: str = "cpu",
        block_resolution: int = 8,
        block_count: int = 10_000,
        trunc_voxels: float = 4.0,
        min_weight: float = 1.0,
        clear: bool = True,
        max_weight: float = 0.0,
        carve: bool = False,
        carve_interval: int = 1,
        vbg=None,
    ):
        import open3d as o3d
        import open3d.core as o3c

        if not voxel_size > 0:
            raise GeometryError(f"voxel size must be positive, got {voxel_size}")
        self.o3d, self.o3c = o3d, o3c
        self.device = _device(device)
        self.voxel_size = float(voxel_size)
        self.max_depth = float(max_depth)
        self.block_resolution = int(block_resolution)
        self.trunc_voxels = float(trunc_voxels)
        self.min_weight = float(min_weight)
        self.clear = bool(clear)
        self.max_weight = float(max_weight)  # 0: no cap
        self.carve = bool(carve)
        self.carve_interval = max(1, int(carve_interval))  # carve in every n-th integrated frame
        self.carved_voxels = 0  # voxels reset by carving (all frames)
        self.empty_frames = 0  # frames without a valid depth pixel (skipped)
        self.cleared_blocks = 0  # existing blocks integrated for clearing only (all frames)
        self.vbg = vbg or o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=self.voxel_size,
            block_resolution=self.block_resolution,
            block_count=int(block_count),  # the hash map grows beyond this as needed
            device=self.device,
        )
        self._dirty: dict[tuple[int, int, int], None] = {}
        self._lock = threading.Lock()
        self.frames = 0

    @property
    def num_blocks(self) -> int:
        return int(self.vbg.hashmap().size())

    def integrate(self, frame: Frame) -> int:
        """Integrate one frame; returns the number of blocks it touched (the surface blocks, and
        with ``clear`` the existing blocks its rays pass)."""
        o3c, o3d = self.o3c, self.o3d
        depth_m = np.nan_to_num(np.asarray(frame.depth, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        depth_mm = np.round(depth_m * DEPTH_SCALE)
        if not ((depth_mm > 0) & (depth_m <= self.max_depth)).any():
            self.empty_frames += 1  # no valid depth: nothing to integrate (Open3D would raise)
            return 0
        depth = o3d.t.geometry.Image(o3c.Tensor(np.clip(depth_mm, 0, 65535).astype(np.uint16)).to(self.device))
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(frame.rgb)).to(self.device))
        K = o3c.Tensor(frame.intrinsics.matrix, o3c.float64)
        extrinsic = o3c.Tensor(np.linalg.inv(frame.pose), o3c.float64)
        with self._lock:
            blocks = self.vbg.compute_unique_block_coordinates(depth, K, extrinsic, DEPTH_SCALE, self.max_depth, self.trunc_voxels)
            if self.clear and self.num_blocks:
                # Every other pixel is enough to stop the rays (spaced half a block apart anyway).
                pooled = pool_min_kernel(depth_m[::RAY_STRIDE, ::RAY_STRIDE], POOL)
                pooled[pooled > self.max_depth] = 0.0  # Open3D skips those pixels: no ray that far
                blocks = self._with_blocks_in_view(blocks, pooled, frame)
                if self.carve and blocks.shape[0] and self.frames % self.carve_interval == 0:
                    self._carve(blocks, depth_m, frame)
            if blocks.shape[0] == 0:
                return 0
            self.vbg.integrate(blocks, depth, color, K, extrinsic, DEPTH_SCALE, self.max_depth, self.trunc_voxels)
            if self.max_weight > 0:
                self._cap_weights(blocks)
            for b in map(tuple, blocks.cpu().numpy().tolist()):
                self._dirty[b] = None
            self.frames += 1
            return int(blocks.shape[0])

    def _with_blocks_in_view(self, surface_blocks, pooled: np.ndarray, frame: Frame):
        """The surface blocks and the allocated blocks that the frame's rays pass (module
        overview, clearing), as one (B, 3) int32 tensor without repeats. ``pooled``: the
        frame's depth min-pooled at RAY_STRIDE (0: no evidence)."""
        o3c = self.o3c
        pose = np.asarray(frame.pose, np.float64)
        intr = frame.intrinsics
        ok, rays = frustum_blocks_kernel(
            pooled, POOL, RAY_STRIDE, float(intr.fx), float(intr.fy), float(intr.cx), float(intr.cy),
            np.ascontiguousarray(pose[:3, :3]), np.ascontiguousarray(pose[:3, 3]),
            self.block_resolution * self.voxel_size, MAX_DENSE_BLOCK_CELLS,
        )
        if not ok or len(rays) == 0:
            return surface_blocks
        surf = surface_blocks.cpu().numpy().astype(np.int32).reshape(-1, 3)
        rays = rays[~np.isin(_block_keys(rays), _block_keys(surf))]  # those not integrated anyway
        if len(rays) == 0:
            return surface_blocks
        _, found = self.vbg.hashmap().find(o3c.Tensor(rays).to(self.device))
        rays = rays[found.cpu().numpy().astype(bool)]
        if len(rays) == 0:
            return surface_blocks
        self.cleared_blocks += len(rays)
        return o3c.Tensor(np.ascontiguousarray(np.concatenate([surf, rays]), np.int32)).to(self.device)

    def _carve(self, blocks, depth_m: np.ndarray, frame: Frame) -> None:
        """Reset the voxels of ``blocks`` that the frame sees through (module overview,
        carving). On the CPU in the grid's memory; on a GPU on a host copy of those blocks."""
        o3c = self.o3c
        buf, found = self.vbg.hashmap().find(blocks)
        found = found.cpu().numpy().astype(bool)
        if not found.any():
            return
        bcoords = np.ascontiguousarray(blocks.cpu().numpy().astype(np.int64).reshape(-1, 3)[found])
        buf = buf[o3c.Tensor(np.flatnonzero(found).astype(np.int64)).to(self.device)].to(o3c.int64)
        per_block = self.block_resolution**3
        tsdf = self.vbg.attribute("tsdf").reshape((-1, per_block))  # views of the grid
        weight = self.vbg.attribute("weight").reshape((-1, per_block))
        cpu = self.device.get_type() == o3c.Device.DeviceType.CPU
        if cpu:
            t, w, rows = tsdf.numpy(), weight.numpy(), buf.numpy()
        else:
            t, w = tsdf[buf].cpu().numpy(), weight[buf].cpu().numpy()
            rows = np.arange(len(bcoords), dtype=np.int64)
        pose = np.asarray(frame.pose, np.float64)
        Rt = np.ascontiguousarray(pose[:3, :3].T)
        intr = frame.intrinsics
        n = carve_kernel(
            t, w, rows, bcoords, self.block_resolution, np.float32(0.5 / self.trunc_voxels), depth_m, self.max_depth,
            float(intr.fx), float(intr.fy), float(intr.cx), float(intr.cy), Rt, -Rt @ pose[:3, 3], self.voxel_size,
            CARVE_MARGIN_VOXELS, CARVE_NOISE,
        )
        if n and not cpu:
            tsdf[buf] = o3c.Tensor(t).to(self.device)
            weight[buf] = o3c.Tensor(w).to(self.device)
        self.carved_voxels += int(n)

    def _cap_weights(self, blocks) -> None:
        """Clamp the weights of ``blocks`` (all allocated) to ``max_weight``. On the CPU through
        a numpy view of the grid's weights (Open3D's own advanced indexing costs more than the
        integration); on a GPU with Open3D's indexing."""
        o3c = self.o3c
        buf, _ = self.vbg.hashmap().find(blocks)
        weight = self.vbg.attribute("weight").reshape((-1, self.block_resolution**3))  # a view
        if self.device.get_type() == o3c.Device.DeviceType.CPU:
            clamp_rows_kernel(weight.numpy(), buf.numpy().astype(np.int64), np.float32(self.max_weight))  # the grid's memory
            return
        idx = buf.to(o3c.int64)
        weight[idx] = weight[idx].clip(0.0, self.max_weight)

    def take_dirty(self) -> np.ndarray:
        """(B, 3) int32 coordinates of the blocks changed since the last call (and forget them)."""
        with self._lock:
            out = np.array(list(self._dirty), np.int32).reshape(-1, 3)
            self._dirty.clear()
            return out

    def blocks(self) -> np.ndarray:
        """(B, 3) int32 coordinates of every block the grid holds: a whole-map pass, for a map
        that was just loaded (its blocks are not dirty), never per frame."""
        with self._lock:
            hashmap = self.vbg.hashmap()
            return hashmap.key_tensor()[hashmap.active_buf_indices()].cpu().numpy().astype(np.int32).reshape(-1, 3)

    def surface(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Surface voxels of the given blocks: (N, 3) float32 sample points, (N, 3) uint8 colours and
        (N,) the row in ``blocks`` each voxel belongs to. A voxel is on the surface when its
        signed distance is within half a voxel and it was observed ``min_weight`` times."""
        o3c = self.o3c
        blocks = np.asarray(blocks, np.int32).reshape(-1, 3)
        if len(blocks) == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64)
        with self._lock:
            buf, found = self.vbg.hashmap().find(o3c.Tensor(blocks).to(self.device))
            found = found.cpu().numpy().astype(bool)
            rows = np.flatnonzero(found)
            if len(rows) == 0:
                return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64)
            band = 0.5 / self.trunc_voxels  # tsdf is the signed distance over the truncation distance
            if self.device.get_type() == o3c.Device.DeviceType.CPU:  # the grid's memory, read in place
                per = self.block_resolution**3
                points, color, of = surface_kernel(
                    self.vbg.attribute("tsdf").reshape((-1, per)).numpy(), self.vbg.attribute("weight").reshape((-1, per)).numpy(),
                    self.vbg.attribute("color").reshape((-1, per, 3)).numpy(), buf.numpy()[rows].astype(np.int64),
                    blocks[rows], self.block_resolution, np.float32(self.voxel_size), np.float32(band), np.float32(self.min_weight),
                )
                return points, np.clip(color, 0, 255).astype(np.uint8), rows[of]
            buf = buf[o3c.Tensor(rows.astype(np.int64)).to(self.device)]
            coords, flat = self.vbg.voxel_coordinates_and_flattened_indices(buf)
            tsdf = self.vbg.attribute("tsdf").reshape((-1,))[flat].cpu().numpy()
            weight = self.vbg.attribute("weight").reshape((-1,))[flat].cpu().numpy()
            color = self.vbg.attribute("color").reshape((-1, 3))[flat].cpu().numpy()
            coords = coords.cpu().numpy()
        keep = (np.abs(tsdf) <= band) & (weight >= self.min_weight)
        per_block = self.block_resolution**3
        block_of = rows[np.arange(len(tsdf)) // per_block]
        points = coords.astype(np.float32)  # the TSDF's sample points
        return points[keep], np.clip(color[keep], 0, 255).astype(np.uint8), block_of[keep]

    def all_blocks(self) -> np.ndarray:
        """(B, 3) int32 coordinates of every allocated block. Whole-map: for evaluation and
        tools, never per frame or per publication."""
        with self._lock:
            hm = self.vbg.hashmap()
            keys = hm.key_tensor()[hm.active_buf_indices().to(self.o3c.int64)]
            return keys.cpu().numpy().astype(np.int32).reshape(-1, 3)

    def save(self, path: str | os.PathLike) -> str:
        """Write the TSDF to ``path`` (an .npz of plain arrays, written atomically)."""
        path = Path(path)
        with self._lock, atomic_output(path) as tmp:
            tmp_npz = str(tmp) + ".npz"  # Open3D appends .npz to names without it
            self.vbg.save(tmp_npz)
            os.replace(tmp_npz, tmp)
        return str(path)

    @classmethod
    def load(cls, path: str | os.PathLike, max_depth: float, device: str = "cpu", **kwargs) -> "GeometryLayer":
        """Read a TSDF written by ``save`` (GeometryError when it is not one)."""
        import zipfile

        import open3d as o3d

        path = Path(path)
        if not path.is_file():
            raise GeometryError(f"no geometry file at {path}")
        try:  # check the archive with numpy first: no pickle, plain arrays only
            with np.load(path, allow_pickle=False) as data:
                names = set(data.files)
                voxel_size = float(np.ravel(data["voxel_size"])[0]) if "voxel_size" in names else 0.0
                resolution = int(np.ravel(data["block_resolution"])[0]) if "block_resolution" in names else 0
                empty = "key" in names and data["key"].shape[:1] == (0,)
        except (OSError, ValueError, IndexError, zipfile.BadZipFile, EOFError) as e:
            raise GeometryError(f"cannot read geometry file {path}: {e}") from None
        if not {"voxel_size", "block_resolution", "key"} <= names or not voxel_size > 0 or resolution < 1:
            raise GeometryError(f"{path} is not a geometry file")
        if empty:  # Open3D refuses to load a grid without blocks; an empty map is just that
            return cls(voxel_size, max_depth, device, block_resolution=resolution, **kwargs)
        try:
            vbg = o3d.t.geometry.VoxelBlockGrid.load(str(path))
        except RuntimeError as e:
            raise GeometryError(f"cannot load geometry file {path}: {e}") from None
        return cls(voxel_size, max_depth, device, block_resolution=resolution, vbg=vbg.to(_device(device)), **kwargs)
