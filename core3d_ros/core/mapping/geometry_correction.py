"""The geometry layer (the TSDF of core/tsdf.py) after a pose correction, and the one call that
applies a batch of corrections to a Mapper.

    stats = apply_corrections(mapper, [(stamp, T_cam), ...], issued=t)

Approximation (stated): the TSDF keeps no per-frame record, so it is not re-integrated from kept
keyframes. It follows the object map *by block*: every 8^3-voxel TSDF block that held voxels of
a moved object moves rigidly with that object's delta (the delta of the moved object with most
voxels in the block; the TSDF and the object map share the voxel size and the 8^3 blocks). A
moved block's observed voxels (weight > 0) are resampled at the nearest TSDF voxel of their
transformed sample point (the signed distance is invariant under a rigid motion); where that
voxel already holds data, the one observed more often (larger weight) is kept. The source
blocks are erased. So surface near a moved object moves with it, including a bit of whatever
shared its blocks (a table top under a moved mug): at most one block (8 voxels) around it.
Blocks of no moved object stay. Cost: the moved blocks.
"""
from __future__ import annotations

import numpy as np

from ..fusion.corrections import CorrectionStats
from ..fusion.voxels import pack, unpack


def apply_corrections(mapper, corrections, issued: float | None = None) -> CorrectionStats:
    """Apply a batch of (stamp, corrected camera pose) to ``mapper``'s object map under its fusion
    lock, then move its TSDF blocks (under the TSDF's own lock)."""
    with mapper._lock:
        stats = mapper.map.apply_corrections(corrections, issued)
        geometry = mapper.geometry
    if geometry is not None and len(stats.blocks):
        move_blocks(geometry, stats.blocks, stats.block_deltas)
    return stats


def move_blocks(layer, blocks: np.ndarray, deltas: np.ndarray) -> int:
    """Move the TSDF ``blocks`` (B, 3) of ``layer`` (a GeometryLayer) each by its 4x4 ``deltas[i]``
    (see the module doc). Returns the voxels written. Values are read and written a block at a
    time (Open3D's layout: voxel (x, y, z) of a block at [z, y, x])."""
    o3c = layer.o3c
    vs, res = layer.voxel_size, layer.block_resolution
    per_block = res**3
    blocks = np.ascontiguousarray(blocks, np.int32).reshape(-1, 3)
    dev = layer.device
    with layer._lock:
        hm = layer.vbg.hashmap()
        buf, found = hm.find(o3c.Tensor(blocks).to(dev))
        found = found.cpu().numpy().astype(bool)
        if not found.any():
            return 0
        src_blocks, deltas = blocks[found], np.asarray(deltas)[found]
        sbuf = o3c.Tensor(buf.cpu().numpy()[found].astype(np.int64)).to(dev)
        t, w, c = (a.reshape(len(src_blocks), per_block, -1) for a in _read(layer, sbuf))
        lz, ly, lx = np.unravel_index(np.arange(per_block), (res, res, res))
        local = np.stack([lx, ly, lz]) * vs  # (3, 512): the sample points' offsets in a block
        keep = w[..., 0] > 0
        which, cell = np.nonzero(keep)
        t, w, c = t[which, cell, 0], w[which, cell, 0], c[which, cell]
        # per block: its rotated offsets and its moved origin (the TSDF's sample points p = origin + offset)
        R, tr = deltas[:, :3, :3], deltas[:, :3, 3]
        turned = np.matmul(R, local)  # (B, 3, 512)
        origin = np.einsum("bij,bj->bi", R, src_blocks.astype(np.float64) * (res * vs)) + tr
        moved = turned[which, :, cell] + origin[which]
        idx = np.rint(moved / vs).astype(np.int64)
        # two voxels landing on one: the larger weight
        key = pack(idx)
        order = np.lexsort((-w, key))
        first = order[np.r_[True, key[order][1:] != key[order][:-1]]] if len(order) else order
        idx, t, w, c = idx[first], t[first], w[first], c[first]
        hm.erase(o3c.Tensor(src_blocks).to(dev))
        dst_blocks = np.floor_divide(idx, res)
        ubk, inv = np.unique(pack(dst_blocks), return_inverse=True)
        ub32 = o3c.Tensor(unpack(ubk).astype(np.int32)).to(dev)
        _, new_mask = hm.activate(ub32)
        dbuf, _ = hm.find(ub32)
        dbuf = o3c.Tensor(dbuf.cpu().numpy().astype(np.int64)).to(dev)
        n = len(ubk)
        DT, DW, DC = (a.reshape(n, per_block, -1).copy() for a in _read(layer, dbuf))
        fresh = new_mask.cpu().numpy().astype(bool)  # new blocks start unobserved
        DT[fresh], DW[fresh], DC[fresh] = 1.0, 0.0, 0.0
        local_idx = idx - dst_blocks * res
        cell = (local_idx[:, 2] * res + local_idx[:, 1]) * res + local_idx[:, 0]
        b = inv.reshape(-1)
        win = w >= DW[b, cell, 0]
        DT[b[win], cell[win], 0], DW[b[win], cell[win], 0], DC[b[win], cell[win]] = t[win], w[win], c[win]
        shape = (n, res, res, res)
        for name, vals in (("tsdf", DT), ("weight", DW), ("color", DC)):
            vals = np.ascontiguousarray(vals.reshape(shape + (vals.shape[-1],)), np.float32)
            attr = layer.vbg.attribute(name)
            if dev.get_type() == o3c.Device.DeviceType.CPU:
                attr.numpy()[dbuf.numpy()] = vals  # a view of the grid's memory: numpy's indexing is ~100x Open3D's
            else:
                attr[dbuf] = o3c.Tensor(vals).to(dev)
        for blk in map(tuple, np.concatenate([src_blocks, unpack(ubk).astype(np.int32)]).tolist()):
            layer._dirty[blk] = None
        return int(win.sum())


def _read(layer, bufs):
    """(tsdf, weight, colour) of the blocks at ``bufs``, as numpy arrays (B, res, res, res, ch)."""
    v, o3c = layer.vbg, layer.o3c
    if layer.device.get_type() == o3c.Device.DeviceType.CPU:
        b = bufs.numpy()
        return tuple(v.attribute(name).numpy()[b] for name in ("tsdf", "weight", "color"))
    return tuple(v.attribute(name)[bufs].cpu().numpy() for name in ("tsdf", "weight", "color"))
