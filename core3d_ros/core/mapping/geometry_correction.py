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
    (see the module doc). Returns the voxels written."""
    o3c = layer.o3c
    vs, res = layer.voxel_size, layer.block_resolution
    per_block = res**3
    blocks = np.ascontiguousarray(blocks, np.int32).reshape(-1, 3)
    with layer._lock:
        hm = layer.vbg.hashmap()
        buf, found = hm.find(o3c.Tensor(blocks).to(layer.device))
        found = found.cpu().numpy().astype(bool)
        if not found.any():
            return 0
        src_blocks, deltas = blocks[found], np.asarray(deltas)[found]
        buf = buf[o3c.Tensor(np.flatnonzero(found).astype(np.int64)).to(layer.device)]
        coords, flat = layer.vbg.voxel_coordinates_and_flattened_indices(buf)
        coords, flat = coords.cpu().numpy().astype(np.float64), flat.cpu().numpy()
        tsdf, weight, color = _attributes(layer)
        w = weight[flat].cpu().numpy()
        keep = w > 0
        t = tsdf[flat].cpu().numpy()[keep]
        c = color.reshape((-1, 3))[flat].cpu().numpy()[keep]
        w = w[keep]
        which = (np.arange(len(flat)) // per_block)[keep]
        p = coords[keep]
        moved = np.einsum("nij,nj->ni", deltas[which, :3, :3], p) + deltas[which, :3, 3]
        idx = np.rint(moved / vs).astype(np.int64)
        # two voxels landing on one: the larger weight
        order = np.lexsort((-w, idx[:, 2], idx[:, 1], idx[:, 0]))
        si = idx[order]
        first = order[np.r_[True, np.any(si[1:] != si[:-1], axis=1)]] if len(si) else order
        idx, t, w, c = idx[first], t[first], w[first], c[first]
        hm.erase(o3c.Tensor(src_blocks).to(layer.device))
        dst_blocks = np.floor_divide(idx, res)
        ub, inv = np.unique(dst_blocks, axis=0, return_inverse=True)
        ub32 = o3c.Tensor(ub.astype(np.int32)).to(layer.device)
        new_buf, new_mask = hm.activate(ub32)
        tsdf, weight, color = _attributes(layer)  # the buffers may have grown
        fresh = new_buf.cpu().numpy()[new_mask.cpu().numpy().astype(bool)].astype(np.int64)
        if len(fresh):  # new blocks start unobserved
            cells = (fresh[:, None] * per_block + np.arange(per_block)[None]).reshape(-1)
            ci = o3c.Tensor(cells).to(layer.device)
            tsdf[ci] = o3c.Tensor(np.ones(len(cells), np.float32)).to(layer.device)
            weight[ci] = o3c.Tensor(np.zeros(len(cells), np.float32)).to(layer.device)
            color.reshape((-1, 3))[ci] = o3c.Tensor(np.zeros((len(cells), 3), np.float32)).to(layer.device)
        dbuf, _ = hm.find(ub32)
        dbuf = dbuf.cpu().numpy().astype(np.int64)
        local = idx - dst_blocks * res
        cell = dbuf[inv.reshape(-1)] * per_block + local[:, 2] * res * res + local[:, 1] * res + local[:, 0]
        ct = o3c.Tensor(cell).to(layer.device)
        have = weight[ct].cpu().numpy()
        win = w >= have
        ct = o3c.Tensor(cell[win]).to(layer.device)
        tsdf[ct] = o3c.Tensor(t[win].astype(np.float32)).to(layer.device)
        weight[ct] = o3c.Tensor(w[win].astype(np.float32)).to(layer.device)
        color.reshape((-1, 3))[ct] = o3c.Tensor(c[win].astype(np.float32)).to(layer.device)
        for b in map(tuple, np.concatenate([src_blocks, ub.astype(np.int32)]).tolist()):
            layer._dirty[b] = None
        return int(win.sum())


def _attributes(layer):
    """Flat views of the TSDF's attributes (writes go to the grid)."""
    v = layer.vbg
    return v.attribute("tsdf").reshape((-1,)), v.attribute("weight").reshape((-1,)), v.attribute("color")
