"""The frames that :func:`.object_map.warm_up` fuses to compile the engine's kernels: a corner of
a room (a floor and two walls) with boxes on the floor, seen by a small camera from a few poses
and ray-cast here, so that warming up needs no dataset.

The views are made to reach every kernel with the argument types of real frames (float32 depth,
uint8 colour, uint16 label image): the first fills the map; the next see the same surfaces again
(association against known voxels, votes, the merge pass) and a box that was not there before,
standing on the floor (a segment of new space next to mapped voxels: the hidden-side join). At
``VOXEL_SIZE`` a whole view holds more than 4096 labelled voxels, so the votes take their
threaded path; the last view has depth only in its middle (as a camera facing open space), so
they also take their one-range path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..camera import CameraIntrinsics

VOXEL_SIZE = 0.02  # metres: about one voxel per pixel at the views' distances
WIDTH, HEIGHT = 128, 96

# Axis-aligned boxes (lo, hi) in metres, z up; the label of each is its index + 1.
_ROOM = [
    ((-0.1, -0.1, -0.1), (3.0, 3.0, 0.0)),  # floor
    ((-0.1, -0.1, 0.0), (0.0, 3.0, 2.0)),  # wall x = 0
    ((0.0, -0.1, 0.0), (3.0, 0.0, 2.0)),  # wall y = 0
    ((0.4, 0.4, 0.0), (0.9, 0.9, 0.5)),  # a box
    ((1.3, 0.3, 0.0), (1.7, 0.6, 0.3)),  # a low box
]
_NEW_BOX = ((0.5, 1.3, 0.0), (0.9, 1.6, 0.4))  # stands on the floor from the second view on
_EYES = [(2.4, 2.2, 1.4), (2.3, 2.3, 1.3), (2.5, 2.0, 1.5), (2.4, 2.1, 1.4)]
_TARGET = (0.8, 0.8, 0.3)


@dataclass
class WarmUpFrame:
    depth: np.ndarray  # (H, W) float32 metres, 0 = no surface
    intrinsics: CameraIntrinsics
    pose: np.ndarray  # 4x4 camera-to-world (x right, y down, z forward)
    rgb: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint16: 0 = no mask, i = the i-th box


def _look_at(eye, target) -> np.ndarray:
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, (0.0, 0.0, 1.0))
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = eye
    return pose


def _ray_cast(pose: np.ndarray, intr: CameraIntrinsics, boxes) -> tuple[np.ndarray, np.ndarray]:
    """Depth (along the optical axis) and label of the nearest box each pixel's ray meets."""
    v, u = np.mgrid[0 : intr.height, 0 : intr.width]
    rays = np.stack([(u + 0.5 - intr.cx) / intr.fx, (v + 0.5 - intr.cy) / intr.fy, np.ones(u.shape)], axis=-1).reshape(-1, 3)
    d = rays @ pose[:3, :3].T  # world directions, z component 1 along the optical axis
    o = pose[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
    best = np.full(len(d), np.inf)
    label = np.zeros(len(d), np.uint16)
    for i, (lo, hi) in enumerate(boxes):
        t0, t1 = (np.asarray(lo) - o) * inv, (np.asarray(hi) - o) * inv  # slabs
        near = np.minimum(t0, t1).max(axis=1)
        far = np.maximum(t0, t1).min(axis=1)
        hit = (near <= far) & (near > 0) & (near < best)
        best[hit] = near[hit]
        label[hit] = i + 1
    depth = np.where(np.isfinite(best), best, 0.0).astype(np.float32)
    return depth.reshape(intr.height, intr.width), label.reshape(intr.height, intr.width)


def warm_up_frames() -> list[WarmUpFrame]:
    """The warm-up views, in order."""
    intr = CameraIntrinsics(WIDTH, HEIGHT, 90.0, 90.0, WIDTH / 2, HEIGHT / 2)
    palette = np.array([[0, 0, 0], [180, 170, 150], [200, 200, 210], [190, 200, 200], [200, 60, 40], [40, 90, 200], [60, 160, 60]], np.uint8)
    frames = []
    for k, eye in enumerate(_EYES):
        pose = _look_at(eye, _TARGET)
        depth, labels = _ray_cast(pose, intr, _ROOM + ([_NEW_BOX] if k > 0 else []))
        if k == len(_EYES) - 1:  # depth in the middle third of the columns only
            depth[:, : WIDTH // 3] = 0.0
            depth[:, 2 * WIDTH // 3 :] = 0.0
        frames.append(WarmUpFrame(depth, intr, pose, palette[labels], labels))
    return frames
