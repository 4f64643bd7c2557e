"""The TSDF surface as RViz markers, one marker per changed 8^3-voxel block.

RViz keeps markers by (namespace, id), so publishing only the blocks that changed since the last
publication updates the view without resending the map: the cost of a publication follows what
changed, not the map's size. A block whose surface vanished gets a DELETE. With TSDF clearing
(core/tsdf.py) every block in view is dirty each frame, most of them empty space that never had
a marker: :class:`ShownBlocks` remembers which blocks have a marker, so only those get a DELETE.
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from .headers import make_header
from .markers import delete_all_marker

NAMESPACE = "core3d_surface"


def block_marker_id(block: np.ndarray) -> int:
    """A stable int32 id for a block coordinate (x, y, z)."""
    x, y, z = (int(v) & 0x3FF for v in block)  # 10 bits per axis: +-512 blocks around the origin
    return (x << 20) | (y << 10) | z


class ShownBlocks:
    """The blocks that have a surface marker in the subscribers' view."""

    def __init__(self) -> None:
        self._shown: set[tuple[int, int, int]] = set()

    def clear(self) -> None:
        """After a DELETEALL: nothing is shown."""
        self._shown.clear()

    def __len__(self) -> int:
        return len(self._shown)

    def to_send(self, blocks: np.ndarray, block_of: np.ndarray) -> np.ndarray:
        """Rows of ``blocks`` to publish: those with surface points (ADD) and those without that
        have a marker (DELETE); the shown set follows."""
        blocks = np.asarray(blocks).reshape(-1, 3)
        has = np.zeros(len(blocks), bool)
        has[np.asarray(block_of, np.int64)] = True
        keep = np.zeros(len(blocks), bool)
        for i, (b, h) in enumerate(zip(map(tuple, blocks.tolist()), has.tolist())):
            if h:
                self._shown.add(b)
                keep[i] = True
            elif b in self._shown:
                self._shown.discard(b)
                keep[i] = True
        return np.flatnonzero(keep)


def select_blocks(rows: np.ndarray, blocks: np.ndarray, points: np.ndarray, colors: np.ndarray, block_of: np.ndarray):
    """The surface of ``blocks[rows]`` only: (blocks, points, colors, block_of) re-indexed."""
    remap = np.full(len(blocks), -1, np.int64)
    remap[rows] = np.arange(len(rows))
    new_of = remap[np.asarray(block_of, np.int64)]
    keep = new_of >= 0
    return np.asarray(blocks)[rows], points[keep], colors[keep], new_of[keep]


def surface_markers(
    blocks: np.ndarray,
    points: np.ndarray,
    colors: np.ndarray,
    block_of: np.ndarray,
    *,
    voxel_size: float,
    frame_id: str,
    stamp: Time | float = 0.0,
    clear_first: bool = False,
) -> MarkerArray:
    """One POINTS marker per block in ``blocks`` (rows of ``block_of`` index it); DELETE for a
    block without surface points. ``clear_first`` starts with a DELETEALL (after a map reset)."""
    header = make_header(frame_id, stamp)
    markers = [delete_all_marker(header)] if clear_first else []
    order = np.argsort(block_of, kind="stable")
    block_of, points, colors = block_of[order], points[order], colors[order]
    starts = np.searchsorted(block_of, np.arange(len(blocks)), side="left")
    ends = np.searchsorted(block_of, np.arange(len(blocks)), side="right")
    for b, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        m = Marker(header=header, ns=NAMESPACE, id=block_marker_id(blocks[b]))
        if e == s:
            m.action = Marker.DELETE
        else:
            m.type, m.action = Marker.POINTS, Marker.ADD
            m.pose.orientation.w = 1.0
            m.scale.x = m.scale.y = float(voxel_size)
            m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points[s:e]]
            m.colors = [ColorRGBA(r=float(c[0]) / 255, g=float(c[1]) / 255, b=float(c[2]) / 255, a=1.0) for c in colors[s:e]]
        markers.append(m)
    return MarkerArray(markers=markers)
