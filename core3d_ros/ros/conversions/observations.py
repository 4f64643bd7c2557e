"""core3d/Observation messages <-> core Observation (the perception -> mapping link).

``msg_to_observation`` never trusts the message: anything malformed raises ObservationError with
the reason it is counted under (``bad_labels``, ``size_mismatch``, ``bad_embedding``, ...).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ...core.observation import MaskRecord, Observation, ObservationError, decode_labels, encode_labels
from .headers import make_header, to_seconds
from .poses import matrix_to_pose, pose_to_matrix

MAX_SIDE = 16384  # pixels; larger label images are refused before decoding

OBSERVATIONS_TOPIC = "core3d/observations"
CLAIMS_TOPIC = "core3d/perception/claims"

# The link's topics (relative names, so a namespace moves both nodes together) and QoS:
# observations must arrive (mapping fuses every one); claims are small and frequent.
OBSERVATION_QOS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=8, durability=DurabilityPolicy.VOLATILE
)


def observation_to_msg(obs: Observation, *, frame_id: str, inference_ms: float = 0.0) -> Any:
    from core3d.msg import MaskObservation
    from core3d.msg import Observation as ObservationMsg
    from sensor_msgs.msg import RegionOfInterest

    msg = ObservationMsg()
    msg.header = make_header(frame_id, obs.stamp)
    msg.pose = matrix_to_pose(obs.pose)
    msg.frame_index = int(obs.frame_index) & 0xFFFFFFFF
    msg.height, msg.width = (int(v) for v in obs.labels.shape)
    msg.labels_png = encode_labels(obs.labels)
    msg.inference_ms = float(inference_ms)
    for r in obs.masks:
        m = MaskObservation()
        m.label = int(r.label)
        m.score = float(r.score)
        m.level = int(min(max(r.level, 0), 255))
        x0, y0, x1, y1 = r.box
        m.box = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0)
        if r.embedding is not None:
            m.embedding_f16 = np.asarray(r.embedding, np.float16).view(np.uint16)
        m.view_quality = float(r.view_quality)
        m.view_jpeg = bytes(r.view_jpeg)
        msg.masks.append(m)
    return msg


def msg_to_observation(msg: Any, frame_shape: tuple[int, int] | None = None, dim: int | None = None) -> Observation:
    """Decode and validate (ObservationError on anything the mapper must not fuse)."""
    h, w = int(msg.height), int(msg.width)
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise ObservationError("bad_labels", f"label image size {w}x{h} is not plausible")
    if frame_shape is not None and (h, w) != tuple(frame_shape):
        raise ObservationError("size_mismatch", f"observation is {w}x{h}, the frame {frame_shape[1]}x{frame_shape[0]}")
    labels = decode_labels(bytes(msg.labels_png), (h, w))
    try:
        pose = pose_to_matrix(msg.pose)
    except Exception as e:  # non-finite or non-unit quaternion
        raise ObservationError("bad_pose", f"observation pose: {e}") from None
    records = []
    for m in msg.masks:
        emb = None
        if len(m.embedding_f16):
            emb = np.asarray(m.embedding_f16, np.uint16).view(np.float16)
        b = m.box
        records.append(
            MaskRecord(
                label=int(m.label),
                score=float(m.score),
                box=(int(b.x_offset), int(b.y_offset), int(b.x_offset) + int(b.width), int(b.y_offset) + int(b.height)),
                level=int(m.level),
                embedding=emb,
                view_quality=float(m.view_quality),
                view_jpeg=bytes(m.view_jpeg),
            )
        )
    obs = Observation(
        stamp=to_seconds(msg.header.stamp),
        frame_index=int(msg.frame_index),
        pose=pose,
        labels=labels,
        masks=records,
    )
    obs.validate(frame_shape=frame_shape, dim=dim)
    return obs
