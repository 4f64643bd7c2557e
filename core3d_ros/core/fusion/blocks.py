"""Per-frame voxel deduplication through 8x8x8 blocks, without sorting and without a per-pixel hash.

A depth frame's 300 k pixels fall into ~10 k distinct voxels but only a few hundred distinct
blocks of 8^3 voxels. ``FrameVoxels`` finds them in one compiled pass over the points
(``dedupe_kernel``, below with the other compiled passes over a frame's voxels; depth images
take the threaded per-pixel stage of :mod:`.pixels` instead):

1. per point, voxel coordinates -> block coordinates (``>> 3``) and the offset inside the block;
2. the frame's blocks are indexed in a dense grid over the frame's own block bounding box (a few
   thousand cells for a camera frustum);
3. per point, ``frame_block * 512 + offset`` indexes a dense (blocks x 512) table of the frame's
   voxels.

A frame whose block bounding box exceeds ``MAX_DENSE_BLOCK_CELLS`` (points spread over a huge
box, never a camera frustum) takes the general path: sorted block keys (``np.unique``), then the
same (blocks x 512) table.

Everything after this step works per voxel (~10-60 k), not per pixel. Only the frame's blocks are
looked up in the persistent map (:class:`BlockHash`).
"""
from __future__ import annotations

import numba
import numpy as np

BLOCK = 8
BLOCK_VOXELS = BLOCK**3
MAX_DENSE_BLOCK_CELLS = 1 << 22  # frame block grids larger than this take the general path (np.unique)


def block_offsets(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) int voxel coordinates -> (N, 3) int32 block coordinates and (N,) offsets in [0, 512)."""
    c = np.asarray(coords)
    b = (c >> 3).astype(np.int32, copy=False)
    o = (c[:, 0] & 7) << 6
    o |= (c[:, 1] & 7) << 3
    o |= c[:, 2] & 7
    return b, o.astype(np.int64, copy=False)


def _block_keys(bc: np.ndarray) -> np.ndarray:
    b = bc.astype(np.int64) + (1 << 20)
    return (b[:, 0] << 42) | (b[:, 1] << 21) | b[:, 2]


def offset_coords(offsets: np.ndarray) -> np.ndarray:
    """Inverse of the offset part of :func:`block_offsets`: (N,) -> (N, 3) int64 in [0, 8)."""
    o = np.asarray(offsets, np.int64)
    return np.stack([(o >> 6) & 7, (o >> 3) & 7, o & 7], axis=1)


class FrameVoxels:
    """The distinct voxels of one frame and, per voxel, a representative point.

    Attributes: ``blocks`` (B, 3) int32 block coordinates; ``voxel`` (V,) cell indices
    ``frame_block * 512 + offset``; ``rep`` (V,) the last point of each voxel and ``label``
    (V,) the majority label of its points (compiled path), or ``point_voxel`` (N,) index into
    ``voxel`` and ``counts`` (V,) points per voxel (general path, voxels in increasing order).
    """

    def __init__(
        self,
        coords: np.ndarray,
        compiled: bool = True,
        labels: np.ndarray | None = None,
        pix: np.ndarray | None = None,
    ):
        """``coords``: (3, N) int32 voxel coordinates (one row per axis, contiguous).
        ``compiled``: the compiled pass (voxels in order of first appearance) where the frame's
        block grid is small enough; False: the general path always (tests compare the two).
        Depth images take :meth:`from_depth` instead (the threaded per-pixel stage)."""
        if not isinstance(coords, tuple):
            coords = np.ascontiguousarray(coords, dtype=np.int32)
        n = len(coords[0])
        self.rep = None  # per voxel, its last point (set by the compiled path)
        self.label = None  # per voxel, the majority label of its points (compiled path)
        if compiled and n:
            cx, cy, cz = (np.ascontiguousarray(c, dtype=np.int32) for c in coords)
            if labels is None:
                labels, pix = np.zeros(1, np.int64), np.zeros(n, np.int64)
            ok, blocks, voxel, vlabel, counts, rep, cell_block, vlut, lo, dims = dedupe_kernel(cx, cy, cz, MAX_DENSE_BLOCK_CELLS, labels, pix)
            if ok:
                self.blocks, self.voxel, self.rep, self.label = blocks, voxel, rep, vlabel
                self.point_voxel = self.counts = None  # not made by the compiled path
                self._cell_block, self._vlut, self._lo, self._dims = cell_block, vlut, lo, dims
                self._strides = np.array([dims[1] * dims[2], dims[2], 1], np.int64)
                self._grid = True
                return
            coords = np.stack([np.asarray(c, np.int32) for c in coords])
        if n == 0:
            self.blocks = np.zeros((0, 3), np.int32)
            self.voxel = np.zeros(0, np.int64)
            self.point_voxel = np.zeros(0, np.int64)
            self.counts = np.zeros(0, np.int64)
            self._lo = np.zeros(3, np.int64)
            self._dims = np.ones(3, np.int64)
            self._cell_block = np.full(1, -1, np.int64)
            self._strides = np.array([1, 1, 1], np.int64)
            self._grid = True
            self._vlut = np.zeros(0, np.int64)
            return
        # The general path: the frame's blocks by sorting their keys.
        bx, by, bz = coords[0] >> 3, coords[1] >> 3, coords[2] >> 3
        off = (coords[0] & 7) << 6
        off |= (coords[1] & 7) << 3
        off |= coords[2] & 7
        bc = np.stack([bx, by, bz], axis=1)
        keys = _block_keys(bc)
        ukeys, first, point_block = np.unique(keys, return_index=True, return_inverse=True)
        point_block = point_block.reshape(-1).astype(np.int32)
        self.blocks = bc[first].astype(np.int32)
        self._ukeys, self._grid = ukeys, False
        nb = len(self.blocks)
        point_block <<= 9
        point_block |= off
        fv = point_block
        counts = np.bincount(fv, minlength=nb * BLOCK_VOXELS)
        self.voxel = np.flatnonzero(counts)
        vlut = np.full(nb * BLOCK_VOXELS, -1, np.int64)
        vlut[self.voxel] = np.arange(len(self.voxel))
        self._vlut = vlut
        self.point_voxel = vlut[fv]
        self.counts = counts[self.voxel]

    @classmethod
    def from_depth(cls, d) -> "FrameVoxels":
        """The frame voxels that :func:`.pixels.depth_voxels` found (status "ok"): the compiled
        path's attributes, with ``rep`` a pixel index of the flattened image."""
        fv = cls.__new__(cls)
        fv.blocks, fv.voxel, fv.rep, fv.label = d.blocks, d.voxel, d.rep, d.label
        fv.point_voxel = fv.counts = None
        fv._cell_block, fv._vlut, fv._lo, fv._dims = d.cell_block, d.vlut, d.lo, d.dims
        fv._strides = np.array([d.dims[1] * d.dims[2], d.dims[2], 1], np.int64)
        fv._grid = True
        return fv

    def __len__(self) -> int:
        return len(self.voxel)

    @property
    def voxel_block(self) -> np.ndarray:
        return self.voxel >> 9

    @property
    def voxel_offset(self) -> np.ndarray:
        return self.voxel & (BLOCK_VOXELS - 1)

    def voxel_coords(self) -> np.ndarray:
        """(V, 3) int64 voxel coordinates of the frame's voxels."""
        return self.blocks[self.voxel_block].astype(np.int64) * BLOCK + offset_coords(self.voxel_offset)

    def find(self, coords: np.ndarray) -> np.ndarray:
        """Index into the frame's voxels of each given (M, 3) voxel coordinate, -1 where absent."""
        coords = np.asarray(coords, np.int64)
        bc, off = block_offsets(coords)
        if self._grid:
            rel = bc.astype(np.int64) - self._lo
            inside = np.all((rel >= 0) & (rel < self._dims), axis=1)
            cell = np.where(inside, rel @ self._strides, 0)
            fb = np.where(inside, self._cell_block[cell], -1)
        else:
            keys = _block_keys(bc)
            pos = np.searchsorted(self._ukeys, keys)
            pos[pos >= len(self._ukeys)] = 0
            fb = np.where(self._ukeys[pos] == keys, pos, -1) if len(self._ukeys) else np.full(len(keys), -1)
        return np.where(fb >= 0, self._vlut[np.maximum(fb, 0) * BLOCK_VOXELS + off], -1)

    def block_neighbours(self) -> np.ndarray:
        """(B, 27) frame-block index of each frame block's 27 neighbouring blocks (shift
        (sx, sy, sz) in {-1, 0, 1}^3 at column (sx+1)*9 + (sy+1)*3 + (sz+1)); -1 where absent."""
        if len(self.blocks) == 0:
            return np.zeros((0, 27), np.int64)
        if self._grid:
            return block_neighbours_kernel(self.blocks, self._cell_block, self._lo, self._dims)
        shifts = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), axis=-1).reshape(-1, 3)
        b = (self.blocks[:, None, :].astype(np.int64) + shifts[None]).reshape(-1, 3)
        keys = _block_keys(b)
        pos = np.searchsorted(self._ukeys, keys)
        pos[pos >= len(self._ukeys)] = 0
        out = np.where(self._ukeys[pos] == keys, pos, -1)
        return out.reshape(len(self.blocks), 27).astype(np.int64)


# ------------------------------------------------------------------ compiled passes over a frame's voxels


def _jit(fn):
    return numba.njit(cache=True, nogil=True, fastmath=True)(fn)


def _dedupe(cx, cy, cz, max_cells, label_flat, pix):
    """The frame's distinct blocks and voxels (see :class:`FrameVoxels`), in order of
    first appearance; per voxel its last point (``rep``) and the majority label of its points
    (``label_flat[pix[i]]`` per point i; Boyer-Moore vote, so a voxel on a mask boundary takes
    the label most of its pixels carry). Per-point voxel indices and counts
    are not made (empty arrays): the engine needs only ``rep``. Returns (ok, blocks, voxel, point_voxel, counts, rep, cell_block, vlut, lo, dims);
    ok=False when the block bounding box exceeds ``max_cells``."""
    n = cx.shape[0]
    lo = np.empty(3, np.int64)
    hi = np.empty(3, np.int64)
    for a in range(3):
        lo[a] = 1 << 40
        hi[a] = -(1 << 40)
    for i in range(n):
        bx = cx[i] >> 3
        by = cy[i] >> 3
        bz = cz[i] >> 3
        lo[0] = min(lo[0], bx)
        hi[0] = max(hi[0], bx)
        lo[1] = min(lo[1], by)
        hi[1] = max(hi[1], by)
        lo[2] = min(lo[2], bz)
        hi[2] = max(hi[2], bz)
    dims = hi - lo + 1
    if n == 0:
        dims[:] = 1
        lo[:] = 0
    cells = dims[0] * dims[1] * dims[2]
    empty = np.zeros(0, np.int64)
    if cells > max_cells:
        return False, np.zeros((0, 3), np.int32), empty, empty, empty, empty, empty, np.zeros(0, np.int32), lo, dims
    s0 = dims[1] * dims[2]
    s1 = dims[2]
    cell_block = np.full(cells, -1, np.int32)
    all_blocks = np.empty((min(n, cells), 3), np.int32)
    nb = 0
    for i in range(n):
        bx = cx[i] >> 3
        by = cy[i] >> 3
        bz = cz[i] >> 3
        c = (bx - lo[0]) * s0 + (by - lo[1]) * s1 + (bz - lo[2])
        if cell_block[c] < 0:
            cell_block[c] = nb
            all_blocks[nb, 0] = bx
            all_blocks[nb, 1] = by
            all_blocks[nb, 2] = bz
            nb += 1
    blocks = all_blocks[:nb].copy()
    vlut = np.full(nb * 512, -1, np.int32)
    voxel = np.empty(min(n, nb * 512), np.int64)
    rep = np.empty(min(n, nb * 512), np.int64)
    cand = np.zeros(min(n, nb * 512), np.int64)
    votes = np.zeros(min(n, nb * 512), np.int64)
    nv = 0
    for i in range(n):
        c = ((cx[i] >> 3) - lo[0]) * s0 + ((cy[i] >> 3) - lo[1]) * s1 + ((cz[i] >> 3) - lo[2])
        cell = (np.int64(cell_block[c]) << 9) | ((cx[i] & 7) << 6) | ((cy[i] & 7) << 3) | (cz[i] & 7)
        v = vlut[cell]
        if v < 0:
            v = nv
            vlut[cell] = nv
            voxel[nv] = cell
            nv += 1
        rep[v] = i
        lab = np.int64(label_flat[pix[i]])
        if votes[v] == 0:
            cand[v] = lab
            votes[v] = 1
        elif cand[v] == lab:
            votes[v] += 1
        else:
            votes[v] -= 1
    return True, blocks, voxel[:nv].copy(), cand[:nv].copy(), empty, rep[:nv].copy(), cell_block.astype(np.int64), vlut, lo, dims


dedupe_kernel = _jit(_dedupe)


def _block_neighbours(blocks, cell_block, lo, dims):
    """(B, 27) frame-block index of each block's neighbours (column (sx+1)*9 + (sy+1)*3 + (sz+1)),
    -1 where absent, for the frame's block grid (:meth:`FrameVoxels.block_neighbours`)."""
    B = blocks.shape[0]
    out = np.empty((B, 27), np.int64)
    s0 = dims[1] * dims[2]
    s1 = dims[2]
    for b in range(B):
        for sx in range(-1, 2):
            rx = blocks[b, 0] + sx - lo[0]
            for sy in range(-1, 2):
                ry = blocks[b, 1] + sy - lo[1]
                for sz in range(-1, 2):
                    rz = blocks[b, 2] + sz - lo[2]
                    col = (sx + 1) * 9 + (sy + 1) * 3 + (sz + 1)
                    if 0 <= rx < dims[0] and 0 <= ry < dims[1] and 0 <= rz < dims[2]:
                        out[b, col] = cell_block[rx * s0 + ry * s1 + rz]
                    else:
                        out[b, col] = -1
    return out


block_neighbours_kernel = _jit(_block_neighbours)


def block_step(cell, dx, dy, dz):
    """The voxel at offset (dx, dy, dz), each in [-8, 8], from ``cell`` (block << 9 | offset
    in the block): (column of its block among the 27 around the cell's block, as
    ``block_neighbours`` numbers them, (sx+1)*9 + (sy+1)*3 + (sz+1); its offset in that block)."""
    o = cell & 511
    lx = (o >> 6) + dx
    ly = ((o >> 3) & 7) + dy
    lz = (o & 7) + dz
    return ((lx >> 3) + 1) * 9 + ((ly >> 3) + 1) * 3 + ((lz >> 3) + 1), ((lx & 7) << 6) | ((ly & 7) << 3) | (lz & 7)


block_step = numba.njit(cache=True, nogil=True, inline="always")(block_step)


def _gather_rows(colors, rows):
    """``colors[rows]`` for (N, 3) uint8 colours: the frame voxels' colours from their
    representative pixels (``rep``), without numpy's fancy-indexing temporaries."""
    V = rows.shape[0]
    out = np.empty((V, 3), np.uint8)
    for v in range(V):
        p = rows[v]
        out[v, 0] = colors[p, 0]
        out[v, 1] = colors[p, 1]
        out[v, 2] = colors[p, 2]
    return out


gather_rows_kernel = _jit(_gather_rows)


class BlockHash:
    """Persistent map from block coordinates to block numbers (0, 1, 2, ... in insertion order;
    the numbers of erased blocks are given to the next inserted ones first). ``size`` is the
    count of numbers ever issued (block-table rows), ``live`` that of blocks in the map.

    Backed by ``open3d.core.HashMap`` (a C++ hash map on the CPU, stdgpu on CUDA); only the few
    hundred blocks of a frame are looked up per frame.
    """

    def __init__(self, device: str = "cpu", capacity: int = 4096):
        import open3d.core as o3c

        self._o3c = o3c
        name = device.upper()
        self.device = o3c.Device(name if ":" in name else f"{name}:0")
        try:
            self._map = o3c.HashMap(
                capacity, key_dtype=o3c.int32, key_element_shape=(3,), value_dtype=o3c.int32, value_element_shape=(1,), device=self.device
            )
        except RuntimeError as e:
            raise ValueError(f"fusion.device {device!r} is not usable by this Open3D build: {e}") from None
        self.size = 0
        self.live = 0
        # CPU: block numbers read through a numpy view of the table; else gathered on the device
        self._host_view = self.device.get_type() == o3c.Device.DeviceType.CPU
        self._free: list[int] = []  # numbers of erased blocks, reused first

    def _tensor(self, a: np.ndarray):
        return self._o3c.Tensor.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def find(self, blocks: np.ndarray) -> np.ndarray:
        """Block numbers of the given (B, 3) int32 block coordinates, -1 where absent."""
        if len(blocks) == 0 or self.size == 0:
            return np.full(len(blocks), -1, np.int64)
        buf, found = self._map.find(self._tensor(blocks.astype(np.int32)))
        found = found.cpu().numpy().astype(bool)
        out = np.full(len(blocks), -1, np.int64)
        if found.any():
            values = self._map.value_tensor()  # (capacity, 1) block numbers, by buffer index
            if self._host_view:
                out[found] = values.numpy()[buf.numpy()[found], 0]  # a view: no copy
            else:  # gathered on the device: only the blocks asked for cross to the host
                out[found] = values[buf[self._tensor(found)].to(self._o3c.int64)].cpu().numpy()[:, 0]
        return out

    def insert(self, blocks: np.ndarray) -> np.ndarray:
        """Insert new (absent, distinct) blocks; returns their block numbers."""
        n = len(blocks)
        k = min(n, len(self._free))
        reused = self._free[len(self._free) - k :]
        del self._free[len(self._free) - k :]
        fresh = np.arange(self.size, self.size + n - k, dtype=np.int32)
        numbers = np.concatenate([np.asarray(reused, np.int32), fresh])
        if n:
            self._map.insert(self._tensor(blocks.astype(np.int32)), self._tensor(numbers[:, None]))
            self.size += n - k
            self.live += n
        return numbers.astype(np.int64)

    def erase(self, blocks: np.ndarray, numbers: np.ndarray) -> None:
        """Remove (present, distinct) blocks whose numbers are ``numbers``; the numbers are
        given to the next inserted blocks."""
        if len(blocks) == 0:
            return
        self._map.erase(self._tensor(np.asarray(blocks, np.int32)))
        self._free.extend(np.asarray(numbers, np.int64).tolist())
        self.live -= len(blocks)

    def memory_bytes(self) -> int:
        # Per slot used: key (12 B), value (4 B), bucket and heap entries (~16 B); an empty slot
        # of the table costs about 4 B (its buffers are written as they fill).
        return int(self._map.capacity()) * 4 + self.size * 32
