"""3DMatch RGB-D scene folders (and 7-Scenes scene folders): sequences in ``seq-NN/`` folders.

Layout::

    camera-intrinsics.txt        3x3 K for every sequence of the scene (3DMatch); absent in a
                                 7-Scenes scene folder, which then uses the 7-Scenes default K
    seq-01/frame-000000.color.png, frame-000000.depth.png, frame-000000.pose.txt, ...
    seq-02/...

Each sequence is read as a 7-Scenes sequence (uint16 millimetre depth, 4x4 camera-to-world
poses, frames stamped ``number / fps``). One ``ThreeDMatch`` dataset is one sequence: choose it
with ``sequence``; a scene with a single sequence needs no choice. ``list_sequences`` gives the
names, so a caller can map each sequence in turn (``core3d map DIR`` does).
"""
from __future__ import annotations

from pathlib import Path

from ...config import DepthConfig
from ..camera import CameraIntrinsics
from .base import DatasetError, read_matrix, register_dataset
from .sevenscenes import SevenScenes


def list_sequences(path: str | Path) -> list[str]:
    """Names of the ``seq-*`` sub-folders holding 7-Scenes-style frames, sorted."""
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(d.name for d in p.glob("seq-*") if d.is_dir() and any(d.glob("frame-*.depth.png")))


def is_threedmatch(path: Path) -> bool:
    return bool(list_sequences(path))


@register_dataset("3dmatch", detect=is_threedmatch, order=5, layout="3DMatch (camera-intrinsics.txt + seq-NN/frame-NNNNNN.*)", sequences=True)
class ThreeDMatch(SevenScenes):
    kind = "3dmatch"

    def __init__(
        self,
        root: str | Path,
        depth: DepthConfig | None = None,
        max_frames: int | None = None,
        stride: int = 1,
        fps: float = 30.0,
        sequence: str | None = None,
    ):
        scene = Path(root)
        names = list_sequences(scene)
        if not names:
            raise DatasetError(f"no seq-NN folders with frame-NNNNNN.depth.png files in {scene}", scene)
        listed = ", ".join(names)
        if sequence is None:
            if len(names) > 1:
                raise DatasetError(
                    f"{scene} holds {len(names)} sequences ({listed}); choose one (core3d map --sequence NAME) "
                    "or map each in turn (core3d map without --sequence)",
                    scene,
                )
            sequence = names[0]
        if sequence not in names:
            raise DatasetError(f"no sequence {sequence!r} in {scene}; it holds {listed}", scene)
        super().__init__(scene / sequence, depth=depth, max_frames=max_frames, stride=stride, fps=fps)
        self.scene_root = scene
        self.sequence = sequence
        self.name = f"{scene.name}/{sequence}"
        k_path = scene / "camera-intrinsics.txt"
        if k_path.exists() and not (scene / sequence / "camera-intrinsics.txt").exists():
            K = read_matrix(k_path, (3, 3))
            self.intrinsics = CameraIntrinsics.from_matrix(K, self.intrinsics.width, self.intrinsics.height)
            try:
                self.intrinsics.validate()
            except ValueError as e:
                raise DatasetError(f"{k_path}: {e}", k_path) from None
