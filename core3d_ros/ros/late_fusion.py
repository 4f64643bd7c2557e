"""The mapping node's side of the perception link: subscriptions and a worker around the
library's LateFusion (core/mapping/late_fusion.py), which buffers frames by stamp, matches each
observation with its own frame, fuses it and measures staleness.

Each ``core3d/Observation`` is decoded and validated in the worker (never in the callback);
claims on ``core3d/perception/claims`` keep their frames buffered. Rejections are counted by
reason in /diagnostics and logged once per reason.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.frame import Frame
from ..core.mapping.late_fusion import FUSED, WAITING, LateFusion
from ..core.observation import ObservationError
from ..core.worker import Worker
from .conversions.headers import to_seconds
from .conversions.observations import CLAIMS_TOPIC, OBSERVATION_QOS, OBSERVATIONS_TOPIC, msg_to_observation
from .rejects import RejectLog

if TYPE_CHECKING:
    from rclpy.node import Node

    from ..config import RosConfig
    from .protocols import FrameMapper


class LateFusionLink:
    """Subscribes on ``node`` and fuses into ``mapper`` through a LateFusion."""

    def __init__(self, node: Node, ros: RosConfig, mapper: FrameMapper):
        from core3d.msg import Observation as ObservationMsg
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from std_msgs.msg import Header

        clock = lambda: node.get_clock().now().nanoseconds * 1e-9  # noqa: E731 (the stamps' time)
        self.late = LateFusion(mapper, ros.frame_buffer, ros.max_pinned_frames, clock=clock, max_bytes=ros.frame_buffer_mb * 2**20)
        self._log = RejectLog(node.get_logger(), "observation")
        self._worker: Worker[Any] = Worker(self._fuse, capacity=16, name="core3d_late_fusion", on_error=self._on_error)
        group = MutuallyExclusiveCallbackGroup()
        self._subs = [
            node.create_subscription(ObservationMsg, OBSERVATIONS_TOPIC, self._on_observation, OBSERVATION_QOS, callback_group=group),
            node.create_subscription(Header, CLAIMS_TOPIC, self._on_claim, OBSERVATION_QOS, callback_group=group),
        ]

    def add_frame(self, frame: Frame) -> None:
        """TSDF + frame buffer (FrameError rejects the frame); observations that waited for it are
        offered again."""
        for item in self.late.add_frame(frame):
            self._worker.put(item)

    def _on_claim(self, header: Any) -> None:
        self.late.claim(to_seconds(header.stamp))

    def _on_observation(self, msg: Any) -> None:
        self.late.received()
        if not self._worker.put(msg):
            self._reject("queue_full", "the observation queue is full")

    def _fuse(self, item: Any) -> None:
        if isinstance(item, tuple):  # (stamp, Observation) that waited for its frame
            stamp, obs = item
        else:
            stamp = to_seconds(item.header.stamp)
            try:
                obs = msg_to_observation(item, dim=self.late.dim)
            except ObservationError as e:
                self._reject(e.reason, str(e))
                return
        outcome, detail = self.late.offer(stamp, obs)
        if outcome not in (FUSED, WAITING):  # rejected and counted by the library
            self._log(outcome, detail)

    def _reject(self, reason: str, detail: str) -> None:
        self.late.reject(reason)
        self._log(reason, detail)

    def _on_error(self, error: Exception, trace: str) -> None:
        self._reject("error", f"{type(error).__name__}: {error}\n{trace}")

    def counters(self) -> dict[str, Any]:
        return self.late.counters()

    def idle(self) -> bool:
        return self._worker.idle()

    def stop(self) -> None:
        self._worker.stop()

