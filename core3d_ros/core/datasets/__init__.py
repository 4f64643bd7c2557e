"""RGB-D sequence readers (7-Scenes, 3DMatch, TUM RGB-D, Replica, ScanNet), the synthetic room
and the synthetic two-storey building.

Importing the package registers every reader with ``open_dataset`` (base.py).
"""
from .base import Dataset, DatasetError, FolderDataset, detect_format, iter_frames, open_dataset, register_dataset
from .building import BuildingScene, TrueRoom, make_building
from .replica import Replica
from .scannet import ScanNet
from .sevenscenes import SevenScenes
from .synthetic import SceneObject, SyntheticScene, make_scene
from .threedmatch import ThreeDMatch, list_sequences
from .tum import TUMRGBD

__all__ = [
    "BuildingScene",
    "TrueRoom",
    "make_building",
    "Dataset",
    "DatasetError",
    "FolderDataset",
    "Replica",
    "ScanNet",
    "SceneObject",
    "SevenScenes",
    "SyntheticScene",
    "TUMRGBD",
    "ThreeDMatch",
    "detect_format",
    "iter_frames",
    "list_sequences",
    "make_scene",
    "open_dataset",
    "register_dataset",
]
