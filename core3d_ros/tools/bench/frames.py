"""What the node-driving benches replay: a pool of frames looped, and the fuzz bench's valid
message set (a box before a wall)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ...config import MapperConfig

FW, FH = 64, 48  # the fuzz sets' image size: small, the malformation is what matters


def valid_set(stamp: float, frame_id: str = "cam") -> dict[str, Any]:
    """The messages of one valid set stamped ``stamp``: colour, depth, camera info and pose."""
    from geometry_msgs.msg import PoseStamped

    from ...core.camera import CameraIntrinsics
    from ...ros import conversions as conv

    # a red box 1.5 m in front of a grey wall at 2.5 m: valid sets give the map an object
    rgb = np.full((FH, FW, 3), 128, np.uint8)
    depth = np.full((FH, FW), 2.5, np.float32)
    depth[12:36, 18:46], rgb[12:36, 18:46] = 1.5, (200, 30, 30)
    intr = CameraIntrinsics(FW, FH, 60.0, 60.0, (FW - 1) / 2, (FH - 1) / 2)
    pose = PoseStamped(header=conv.make_header("map", stamp))
    pose.pose.orientation.w = 1.0
    pose.pose.position.x = 0.02 * (int(stamp) % 5)
    return {
        "color": conv.rgb_to_image(rgb, "bgr8", stamp=stamp, frame_id=frame_id),
        "depth": conv.depth_to_image(depth, "16UC1", stamp=stamp, frame_id=frame_id),
        "camera_info": conv.intrinsics_to_camera_info(intr, stamp=stamp, frame_id=frame_id),
        "pose": pose,
    }


def frames_pool(data: str | None, count: int, seed: int, width: int, height: int, cfg: MapperConfig) -> tuple[list, str]:
    """Pre-loaded frames to loop: real frames of ``data``, a rendered synthetic room, or with
    ``data='box'`` the fuzz bench's valid frame (a box before a wall, 64x48) from five poses,
    whose map stops growing after a few frames: memory growth there is not the map's."""
    if data == "box":
        from ...core.frame import Frame
        from ...ros import conversions as conv

        frames = []
        for k in range(5):
            m = valid_set(float(k))
            frames.append(Frame(
                rgb=conv.image_to_rgb(m["color"]),
                depth=conv.image_to_depth_raw(m["depth"]).astype(np.float32) / 1000.0,
                intrinsics=conv.camera_info_to_intrinsics(m["camera_info"]),
                pose=conv.pose_message_to_matrix(m["pose"]),
                stamp=float(k),
                index=k,
            ))
        return frames, f"box before a wall, {FW}x{FH}, 5 poses, looped"
    if data:
        from ...core.datasets import open_dataset

        ds = open_dataset(data, "auto", depth=cfg.depth, max_frames=count)
        return [ds[i] for i in range(len(ds))], f"{data} ({len(ds)} frames, looped)"
    from ...core.datasets import make_scene

    scene = make_scene(seed=seed, num_frames=count, width=width, height=height)
    return [scene[i] for i in range(len(scene))], f"synthetic room seed {seed}, {len(scene)} frames {width}x{height}, looped"


class Looped:
    """``n`` frames cycling through ``pool``; calls ``on_index(i)`` before frame ``i`` is built."""

    def __init__(self, pool: list, n: int, on_index: Callable[[int], None] | None = None):
        self.pool, self.n, self.on_index = pool, int(n), on_index

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self.on_index is not None:
            self.on_index(i)
        return self.pool[i % len(self.pool)]
