"""Which way is up: the parameter, the dataset's own convention, or an estimate.

    up, source = resolve_up(cfg.retrieval.up_axis, dataset)   # source: parameter|dataset|estimated|default

``retrieval.up_axis`` = [0, 0, 0] means auto. Then a reader whose format defines the world's up
says so in its ``up`` attribute (synthetic scenes and ScanNet: +z; 7-Scenes: -y, the
KinectFusion world whose image-down axis is about +y). Otherwise up is estimated:

1. the cameras' mean image-down direction (OpenCV optical axes: the pose's second column),
   negated. A hand-held or robot camera is held roughly level, so over a trajectory the
   horizontal parts of its image-down axis cancel while the vertical part adds up;
2. refined by the dominant horizontal planes: surface normals of a few depth frames within 25,
   then 10 degrees of that guess (floors, table tops, ceilings) pull up towards them, normals
   within as many degrees of horizontal (walls) push it to be perpendicular to them; a view
   without horizontal planes keeps the camera estimate.

Neither input needs the map, so up is known before the first frame is fused.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ...config import is_auto_up, up_vector

MIN_DOWN_AGREEMENT = 0.3  # |mean image-down| below this: the cameras roll too much to say
REFINE_ANGLES_DEG = (25.0, 10.0)
MIN_PLANE_NORMALS = 200


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def camera_up(poses: Iterable[np.ndarray]) -> tuple[np.ndarray, float] | None:
    """Up from camera-to-world poses (OpenCV axes): -mean image-down, and how consistent the
    image-down axes were (|mean| in [0, 1]). None without poses."""
    downs = np.array([np.asarray(T, float)[:3, 1] for T in poses]).reshape(-1, 3)
    if len(downs) == 0:
        return None
    m = downs.mean(axis=0)
    n = float(np.linalg.norm(m))
    if n < 1e-9:
        return None
    return -m / n, n


def depth_normals(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float, step: int = 4) -> np.ndarray:
    """Unit normals (camera frame) of a depth image, from the cross product of neighbouring
    back-projected points on a ``step`` grid; pixels with invalid depth or a depth jump are skipped."""
    z = np.asarray(depth, np.float32)[::step, ::step]
    h, w = z.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32) * step
    pts = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=-1)
    dx = pts[:-1, 1:] - pts[:-1, :-1]
    dy = pts[1:, :-1] - pts[:-1, :-1]
    ok = (z[:-1, :-1] > 0) & (z[:-1, 1:] > 0) & (z[1:, :-1] > 0)
    zc = z[:-1, :-1]
    ok &= (np.abs(dx[..., 2]) < 0.05 * zc + 0.02) & (np.abs(dy[..., 2]) < 0.05 * zc + 0.02)
    n = np.cross(dx, dy)[ok]
    norm = np.linalg.norm(n, axis=1)
    good = norm > 1e-12
    return (n[good] / norm[good, None]).astype(np.float64)


def refine_with_planes(up: np.ndarray, normals_world: np.ndarray) -> tuple[np.ndarray, int]:
    """Up refined by the planes: the direction that normals within REFINE_ANGLES_DEG of up
    (floors, table tops, ceilings) align with and normals as far from horizontal (walls,
    cupboard fronts) are perpendicular to: the top eigenvector of S_horizontal - S_vertical
    (mean scatter matrices, sign-free). Returns (up, horizontal-plane normals used); unchanged
    when too few normals belong to horizontal planes."""
    up = _unit(np.asarray(up, float))
    n = np.asarray(normals_world, float).reshape(-1, 3)
    used = 0
    for deg in REFINE_ANGLES_DEG:
        c = np.abs(n @ up)
        hor, ver = n[c >= np.cos(np.radians(deg))], n[c <= np.sin(np.radians(deg))]
        if len(hor) < MIN_PLANE_NORMALS:
            break
        m = hor.T @ hor / len(hor)
        if len(ver):
            m = m - ver.T @ ver / len(ver)
        axis = np.linalg.eigh(m)[1][:, -1]
        up = _unit(axis if axis @ up >= 0 else -axis)
        used = len(hor)
    return up, used


def estimate_up(poses: Sequence[np.ndarray], frames: Iterable = ()) -> tuple[np.ndarray, str] | None:
    """Up from the cameras, refined by the horizontal planes of ``frames`` (objects with
    ``depth``, ``pose`` and ``intrinsics``). Returns (up, detail) or None when the cameras
    cannot say (no poses, or image-down axes that cancel out)."""
    cam = camera_up(poses)
    if cam is None or cam[1] < MIN_DOWN_AGREEMENT:
        return None
    up, agreement = cam
    normals = []
    for f in frames:
        k = f.intrinsics
        nc = depth_normals(f.depth, k.fx, k.fy, k.cx, k.cy)
        normals.append(nc @ np.asarray(f.pose, float)[:3, :3].T)
    if normals:
        up, used = refine_with_planes(up, np.concatenate(normals))
    else:
        used = 0
    detail = f"cameras' mean image-down (agreement {agreement:.2f})" + (
        f", refined by {used} horizontal-plane normals" if used else ", no horizontal planes to refine it"
    )
    return up, detail


def dataset_up(dataset) -> np.ndarray | None:
    """The up direction the dataset's format defines (its ``up`` attribute), or None."""
    up = getattr(dataset, "up", None)
    if up is None:
        return None
    return _unit(np.asarray(up, float))


def resolve_up(up_axis: Sequence[float], dataset=None, sample_frames: int = 8) -> tuple[np.ndarray, str, str]:
    """(unit up, source, detail): the parameter unless auto; else the dataset's up; else the
    estimate from its poses and ``sample_frames`` evenly spaced depth frames; else z (default)."""
    if not is_auto_up(list(up_axis)):
        return np.asarray(up_vector(list(up_axis))), "parameter", "retrieval.up_axis"
    if dataset is None:
        return np.array([0.0, 0.0, 1.0]), "default", "no dataset: z (REP 103)"
    up = dataset_up(dataset)
    if up is not None:
        return up, "dataset", f"defined by the {getattr(dataset, 'kind', '') or type(dataset).__name__} format"
    n = len(dataset)
    poses = []
    for i in range(n):
        try:
            poses.append(dataset.pose(i) if hasattr(dataset, "pose") else dataset[i].pose)
        except (ValueError, OSError):  # a frame whose pose is unreadable is skipped
            continue
    frames = []
    for i in np.unique(np.linspace(0, n - 1, min(sample_frames, n)).astype(int)) if n else []:
        try:
            frames.append(dataset[int(i)])
        except (ValueError, OSError):
            continue
    est = estimate_up(poses, frames)
    if est is None:
        return np.array([0.0, 0.0, 1.0]), "default", "the cameras do not say (too few, or rolling): z"
    return est[0], "estimated", est[1]
