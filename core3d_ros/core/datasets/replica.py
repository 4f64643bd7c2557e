"""Replica sequences as rendered by NICE-SLAM (also used by many open-vocabulary mapping papers).

Layout::

    <scene>/results/frameNNNNNN.jpg   colour
    <scene>/results/depthNNNNNN.png   uint16 depth, ``scale`` units per metre (6553.5)
    <scene>/traj.txt                  one 4x4 camera-to-world matrix per line (16 numbers),
                                      OpenCV camera axes, line k = frame k
    cam_params.json                   {"camera": {"w", "h", "fx", "fy", "cx", "cy", "scale"}},
                                      in <scene>/ or its parent (the NICE-SLAM download puts it
                                      in the parent of all scenes)

Without a cam_params.json the NICE-SLAM defaults (1200x680, f = 600, c = (599.5, 339.5),
scale 6553.5) are used. The renders carry no time stamps; frames are stamped
``frame number / fps``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ...config import DepthConfig
from ..camera import CameraIntrinsics
from .base import DatasetError, FolderDataset, FrameRecord, read_numbers, register_dataset

DEFAULT_CAMERA = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}
_DEPTH_RE = re.compile(r"^depth(\d+)\.png$")


def _scene_root(path: Path) -> Path:
    """Accept the scene folder or its results/ folder."""
    if path.name == "results" and (path.parent / "traj.txt").is_file():
        return path.parent
    return path


def is_replica(path: Path) -> bool:
    root = _scene_root(path)
    results = root / "results"
    return results.is_dir() and (root / "traj.txt").is_file() and any(results.glob("depth*.png"))


def read_cam_params(root: Path) -> tuple[dict, Path | None]:
    """The camera block of cam_params.json from the scene folder or its parent."""
    for folder in (root, root.parent):
        path = folder / "cam_params.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                cam = data["camera"]
                out = {k: float(cam[k]) for k in ("w", "h", "fx", "fy", "cx", "cy")}
                out["scale"] = float(cam.get("scale", DEFAULT_CAMERA["scale"]))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise DatasetError(f"bad camera parameters in {path}: {e!r}", path) from None
            return out, path
    return dict(DEFAULT_CAMERA), None


@register_dataset("replica", detect=is_replica, order=2, layout="Replica as rendered by NICE-SLAM (results/, traj.txt)")
class Replica(FolderDataset):
    kind = "replica"

    def __init__(
        self,
        root: str | Path,
        depth: DepthConfig | None = None,
        max_frames: int | None = None,
        stride: int = 1,
        fps: float = 30.0,
    ):
        root = _scene_root(Path(root))
        super().__init__(root, depth=depth, max_frames=max_frames, stride=stride)
        results = self.root / "results"
        if not results.is_dir():
            raise DatasetError(f"missing folder: {results}", results)
        cam, cam_path = read_cam_params(self.root)
        self.camera_file = cam_path
        self.depth_scale = cam["scale"]
        if not np.isfinite(self.depth_scale) or self.depth_scale <= 0:
            raise DatasetError(f"depth scale must be positive: {cam_path}", cam_path)
        self.pose_source = self.root / "traj.txt"
        values = read_numbers(self.pose_source)
        if values.size == 0 or values.size % 16:
            raise DatasetError(
                f"{self.pose_source} must hold 16 numbers per frame, found {values.size}", self.pose_source
            )
        poses = values.reshape(-1, 4, 4)

        numbers: list[tuple[int, str]] = []
        for p in results.iterdir():
            m = _DEPTH_RE.match(p.name)
            if m:
                numbers.append((int(m.group(1)), m.group(1)))
        numbers.sort()
        if not numbers:
            raise DatasetError(f"no depthNNNNNN.png files in {results}", results)
        names = {p.name for p in results.iterdir()}
        records = []
        for n, digits in numbers:
            only_png = f"frame{digits}.png" in names and f"frame{digits}.jpg" not in names
            # A frame beyond the end of traj.txt keeps a NaN pose, reported when it is read.
            pose = poses[n] if n < len(poses) else np.full((4, 4), np.nan)
            records.append(
                FrameRecord(
                    number=n,
                    color=results / (f"frame{digits}.png" if only_png else f"frame{digits}.jpg"),
                    depth=results / f"depth{digits}.png",
                    pose=pose,
                    stamp=n / float(fps),
                )
            )
        if cam_path is None:
            width, height = self._size_from_first_depth(records)
            if (width, height) != (DEFAULT_CAMERA["w"], DEFAULT_CAMERA["h"]):
                raise DatasetError(
                    f"no cam_params.json in {self.root} or its parent, and the images ({width}x{height}) "
                    f"are not the default {DEFAULT_CAMERA['w']}x{DEFAULT_CAMERA['h']} Replica renders",
                    self.root,
                )
        self.intrinsics = CameraIntrinsics(int(cam["w"]), int(cam["h"]), cam["fx"], cam["fy"], cam["cx"], cam["cy"])
        try:
            self.intrinsics.validate()
        except ValueError as e:
            raise DatasetError(f"bad camera parameters ({cam_path or 'defaults'}): {e}", cam_path) from None
        self.records = self._select(records)
