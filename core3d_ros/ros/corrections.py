"""The mapping node's pose corrections: corrected keyframe poses from SLAM, as ``nav_msgs/Path``
on ``ros.corrections_topic`` (``core3d/keyframe_poses``).

Each PoseStamped of the path is one keyframe: its header stamp the keyframe's (the stamp of the
image it was made from) and its pose the corrected pose, in ``ros.map_frame``, of the body whose
pose the mapping node receives (the pose/odometry input's frame; with ``ros.pose_type`` tf, the
camera optical frame). The camera's extrinsic is composed as for frames (``ros.camera_extrinsic``,
or TF ``ros.base_frame <- camera`` when ``ros.base_frame`` is set), so the map sees corrected
*camera* poses. The path's header stamp orders batches: a path stamped before the last applied
one is refused (``stale``); a zero stamp is not ordered.

A path is converted in a worker thread (never in the callback) and applied through
:func:`~..core.mapping.geometry_correction.apply_corrections`, under the mapper's fusion lock
(queries read snapshots and never wait for it). When paths come faster than they are applied,
the older waiting one is dropped (a later path supersedes it). Refusals (a pose that is NaN or
not rigid, a path in the wrong frame, out-of-order stamps, stamps never fused, a stale path) are
counted by reason (``correction_<reason>`` under rejected in /diagnostics) and logged once per
reason; the map is then unchanged. A keyframe never fused is counted once (``unknown_stamp``),
not again in each republished path; a path none of whose stamps was fused counts once.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..core.frame import FrameError
from ..core.worker import Worker
from .conversions.errors import PoseError
from .conversions.headers import to_seconds
from .conversions.poses import pose_to_matrix
from .rejects import RejectLog

if TYPE_CHECKING:
    from rclpy.node import Node

    from ..config import MapperConfig


class CorrectionError(ValueError):
    """A path that cannot be used as a whole; ``reason`` is what /diagnostics counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def path_to_corrections(msg: Any, map_frame: str, extrinsic: np.ndarray | None = None) -> tuple[list[tuple[float, np.ndarray]], float | None]:
    """nav_msgs/Path -> ([(keyframe stamp, corrected camera pose 4x4)], the path's stamp or None
    when zero). CorrectionError ``wrong_frame`` / ``bad_pose`` when the path cannot be used."""
    frame = msg.header.frame_id
    if frame != map_frame:
        raise CorrectionError("wrong_frame", f"path frame_id '{frame}' is not ros.map_frame '{map_frame}'")
    out = []
    for i, ps in enumerate(msg.poses):
        if ps.header.frame_id not in ("", map_frame):
            raise CorrectionError("wrong_frame", f"pose {i} of the path is in '{ps.header.frame_id}', not '{map_frame}'")
        try:
            T = pose_to_matrix(ps.pose)
        except PoseError as e:
            raise CorrectionError("bad_pose", f"pose {i} of the path: {e}") from None
        out.append((to_seconds(ps.header.stamp), T if extrinsic is None else T @ extrinsic))
    issued = to_seconds(msg.header.stamp)
    return out, (issued if issued > 0 else None)


class CorrectionsLink:
    """Subscribes on ``node`` and applies corrected keyframe paths to ``mapper`` (a Mapper).
    ``extrinsic()`` gives the camera in the path poses' body (None: identity); it may raise
    FrameError (counted ``correction_<reason>``)."""

    def __init__(self, node: Node, cfg: MapperConfig, mapper: Any, extrinsic: Callable[[], np.ndarray | None] = lambda: None):
        from nav_msgs.msg import Path
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.mapper, self.map_frame, self.extrinsic = mapper, cfg.ros.map_frame, extrinsic
        self._log = RejectLog(node.get_logger(), "correction")
        self._info = node.get_logger().info
        self._lock = threading.Lock()
        self._counts = {"paths_applied": 0, "objects_moved": 0, "voxels_moved": 0}
        self._last_ms = 0.0
        self._worker: Worker[Any] = Worker(self._apply, capacity=1, name="core3d_corrections", on_error=self._on_error)
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=2, durability=DurabilityPolicy.VOLATILE)
        self._sub = node.create_subscription(Path, cfg.ros.corrections_topic, self._worker.put, qos, callback_group=MutuallyExclusiveCallbackGroup())

    def _apply(self, msg: Any) -> None:
        from ..core.mapping.geometry_correction import apply_corrections

        try:
            corrections, issued = path_to_corrections(msg, self.map_frame, self.extrinsic())
        except CorrectionError as e:
            self._log(e.reason, str(e))
            return
        except FrameError as e:
            self._log(e.reason, str(e))
            return
        stats = apply_corrections(self.mapper, corrections, issued)
        for reason, n in stats.refused.items():
            for _ in range(int(n)):
                self._log(reason, f"{len(corrections)} poses in the path" + ("; the map is unchanged" if stats.rejected else ""))
        if stats.rejected:
            return
        with self._lock:
            self._counts["paths_applied"] += 1
            self._counts["objects_moved"] += len(stats.objects)
            self._counts["voxels_moved"] += stats.voxels
            self._last_ms = stats.seconds * 1e3
        self._info(
            f"pose corrections: {stats.frames} frames moved, {len(stats.objects)} objects / {stats.voxels} voxels re-keyed, "
            f"{len(stats.blocks)} TSDF blocks moved in {stats.seconds * 1e3:.0f} ms"
        )

    def _on_error(self, error: Exception, trace: str) -> None:
        self._log("error", f"{type(error).__name__}: {error}\n{trace}")

    def rejected(self) -> dict[str, int]:
        """Refusals by reason, named ``correction_<reason>`` (for the node's rejected counters)."""
        return {f"correction_{k}": v for k, v in self._log.counts().items()}

    def counters(self) -> dict[str, float]:
        with self._lock:
            return {**self._counts, "last_ms": self._last_ms}

    def stop(self, timeout: float = 5.0) -> None:
        self._worker.stop(timeout)


def frames_extrinsic(frames: Any, ros: Any) -> Callable[[], np.ndarray | None]:
    """The camera in the pose input's body, as the node's FrameAssembler composes it: TF
    ``base_frame <- camera`` when ``ros.base_frame`` is set (FrameError until it is known), else
    ``ros.camera_extrinsic`` (None: identity). With ``ros.pose_type`` tf the path poses are the
    camera's (None)."""
    if ros.pose_type == "tf":
        return lambda: None
    tf = getattr(frames, "extrinsic_tf", None)
    if tf is None:
        fixed = frames.builder.fixed_extrinsic
        return lambda: fixed

    def lookup() -> np.ndarray:
        if ros.camera_frame:
            return tf.lookup(ros.camera_frame)
        with tf._lock:
            known = list(tf._cache.values())
        if len(known) != 1:
            raise FrameError("no_extrinsic", "the camera's frame is not known yet (no frame fused); set ros.camera_frame")
        return known[0]

    return lookup
