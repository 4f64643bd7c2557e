"""The core3d perception node: keyframes in, one core3d/Observation per keyframe out.

Subscribes to the same synchronised colour / depth / camera info / pose as the mapping node,
chooses keyframes by camera motion, runs the class-agnostic segmenter (with the progressive
merge) and the CLIP encoder (with the context crops) on its device, and publishes masks as one
16-bit label image plus a record per mask (score, box, fp16 embedding, view quality, a small
JPEG of the box) on ``core3d/observations``. The mapping node fuses each observation against its
own buffered depth and pose of the same stamp.

Staleness is bounded: the worker always takes the newest synced set (a queue of one; sets it
never got to are counted as dropped), and before inferring on a keyframe it announces the stamp
on ``core3d/perception/claims`` so that the mapping node keeps that frame until the result
arrives. Nothing here touches the map, so a slow model never stalls mapping or the services,
and this node can run on another machine (a GPU box beside the robot): the link is an ordinary
topic.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter, deque
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Header

from ..config import MapperConfig
from ..core.perception import Perception
from ..core.worker import Worker
from ..progress import Progress
from .conversions.headers import make_header
from .frames import REJECTED, reason_of
from .inputs import SyncedInputs
from .rejects import RejectLog
from .conversions.observations import CLAIMS_TOPIC, OBSERVATION_QOS, OBSERVATIONS_TOPIC, observation_to_msg
from .params import declare_config
from .runner import exit_now_if_busy, run_nodes
from .sync import Rejected, SyncedSet

NODE_NAME = "core3d_perception"
# Per-keyframe inference times kept for the percentiles in /diagnostics (inference_ms_p50/_p95/
# _max over the last INFERENCE_WINDOW keyframes; inference_count: every keyframe timed since
# start). Large enough that a `core3d bench online` run (<= 400 frames by default) is all in it.
INFERENCE_WINDOW = 2048


class PerceptionNode(Node):
    """See the module docstring. ``perception_factory(cfg)`` builds the Perception (tests)."""

    def __init__(
        self,
        config: MapperConfig | None = None,
        *,
        config_file: str | None = None,
        perception_factory: Callable[[MapperConfig], Any] | None = None,
        node_name: str = NODE_NAME,
        **node_kwargs: Any,
    ):
        from core3d.msg import Observation as ObservationMsg

        super().__init__(node_name, **node_kwargs)
        self.cfg = declare_config(self, config, config_file)
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._reject = RejectLog(self.get_logger(), "frame")
        self._last_ms: dict[str, float] = {}
        self._inference_ms: deque[float] = deque(maxlen=INFERENCE_WINDOW)  # every keyframe's, masks or none
        self._inferences = 0
        limit_model_threads(self.cfg.ros.perception_threads)
        # Every back-end is built now: a bad name, checkpoint or device stops the node here.
        # Loading a model can take minutes: the phase is announced, with 'still ...' lines.
        startup = Progress("start-up", emit=self.get_logger().info)
        with startup.phase(
            f"loading the perception models (segmenter '{self.cfg.segmenter.name}', encoder '{self.cfg.embed.name}')"
        ):
            self.perception = (perception_factory or Perception)(self.cfg)

        self.observations_pub = self.create_publisher(ObservationMsg, OBSERVATIONS_TOPIC, OBSERVATION_QOS)
        self.claims_pub = self.create_publisher(Header, CLAIMS_TOPIC, OBSERVATION_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._worker: Worker[SyncedSet] = Worker(self._handle, capacity=1, name="core3d_perception", on_error=self._on_error)
        self._inputs = SyncedInputs(
            self,
            self.cfg,
            on_set=self._worker.put,
            on_reject=self._on_reject,
            on_message=lambda key: self._count(f"received_{key}"),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self._timer = self.create_timer(
            self.cfg.ros.publish_period, self.publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.get_logger().info(
            f"perception: {self._inputs.description}; segmenter '{self.cfg.segmenter.name}', "
            f"encoder '{self.cfg.embed.name}' -> '{OBSERVATIONS_TOPIC}'"
        )

    # ------------------------------------------------------------------ work

    def _handle(self, synced: SyncedSet) -> None:
        t0 = time.perf_counter()
        try:
            frame = self._inputs.frames.build(synced)
            frame.validate()
        except REJECTED as e:
            self._reject(reason_of(e), str(e))
            return
        if not self.perception.keyframes.is_keyframe(frame.pose, frame.index):
            self._count("frames")
            return
        header = synced.messages["color"].header
        self.claims_pub.publish(Header(stamp=header.stamp, frame_id=header.frame_id))
        obs = self.perception.infer(frame)
        with self._lock:
            self._last_ms = dict(self.perception.timings_ms, handle=(time.perf_counter() - t0) * 1e3)
            self._inference_ms.append(float(self.perception.timings_ms.get("total", 0.0)))
            self._inferences += 1
        if not obs.masks:  # nothing to fuse; the claimed frame leaves the mapping node's buffer in time
            self._count("keyframes_without_masks")
            self._count("frames")
            return
        msg = observation_to_msg(obs, frame_id=header.frame_id, inference_ms=self.perception.timings_ms.get("total", 0.0))
        msg.header.stamp = header.stamp  # exactly the colour stamp the mapping node buffered
        self.observations_pub.publish(msg)
        with self._lock:
            self._counts["frames"] += 1
            self._counts["keyframes"] += 1
            self._counts["masks"] += len(obs.masks)
            self._counts["observation_bytes"] += len(msg.labels_png) + sum(
                len(m.view_jpeg) + 2 * len(m.embedding_f16) for m in msg.masks
            )

    def _on_error(self, error: Exception, trace: str) -> None:
        self._reject("error", f"{type(error).__name__}: {error}\n{trace}")

    def _on_reject(self, rejected: Rejected) -> None:
        self._reject(rejected.reason, f"colour frame at {rejected.stamp:.3f} s not synchronised")

    # ------------------------------------------------------------------ counters / diagnostics

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def counters(self) -> dict[str, Any]:
        w = self._worker.stats()
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out.update({f"rejected_{k}": v for k, v in self._reject.counts().items()})
            out["keyframes_dropped"] = w.dropped  # frames never considered: newer ones replaced them while busy
        out["observation_subscribers"] = self.observations_pub.get_subscription_count()
        with self._lock:
            out["worker_errors"] = w.errors
            out.update({f"time_{k}_ms": round(v, 1) for k, v in self._last_ms.items()})  # the last keyframe's
            out.update(inference_stats(self._inference_ms, self._inferences))
        return out

    def publish_diagnostics(self) -> None:
        c = self.counters()
        status = DiagnosticStatus(name=f"{self.get_name()}: perception", hardware_id=self.get_fully_qualified_name())
        status.level = DiagnosticStatus.OK
        if not c["observation_subscribers"]:
            status.level, status.message = DiagnosticStatus.WARN, "no mapping node subscribes to the observations"
        else:
            status.message = "inferring" if c.get("keyframes") else "waiting for keyframes"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in sorted(c.items())]
        self.diagnostics_pub.publish(
            DiagnosticArray(header=make_header("", self.get_clock().now().to_msg()), status=[status])
        )

    def destroy_node(self) -> None:
        self._worker.stop()
        super().destroy_node()


def inference_stats(window: Any, count: int) -> dict[str, Any]:
    """/diagnostics' keyframe inference figures: ``inference_count`` (keyframes timed since
    start), ``inference_window`` (how many of the last ones the percentiles cover) and
    ``inference_ms_p50``/``_p95``/``_max`` over them (absent before the first keyframe)."""
    out: dict[str, Any] = {"inference_count": int(count), "inference_window": len(window)}
    if len(window):
        ms = np.asarray(window, dtype=float)
        out["inference_ms_p50"] = round(float(np.percentile(ms, 50)), 1)
        out["inference_ms_p95"] = round(float(np.percentile(ms, 95)), 1)
        out["inference_ms_max"] = round(float(ms.max()), 1)
    return out


def limit_model_threads(threads: int) -> int:
    """Cap torch's CPU threads at ``threads`` (0: all cores but one, so that the mapping side
    keeps a core on a small machine); returns the cap. Only when torch is installed."""
    n = threads or max(1, (os.cpu_count() or 1) - 1)
    try:
        import torch
    except ImportError:
        return n
    if torch.get_num_threads() > n:
        torch.set_num_threads(n)
    return n


def lower_priority(nice: int) -> None:
    """Lower the OS priority of every thread of this process by ``nice`` (threads started
    later inherit it from their creator): the models then take only the CPU that mapping and
    queries leave. On Linux a priority belongs to a thread, hence the walk over /proc/self/task."""
    if nice <= 0:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]  # not Linux: the calling thread (and whatever it starts)
    try:
        for tid in tids:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:  # not fatal: the node runs at the default priority
        print(f"core3d_perception: could not lower the priority by {nice}: {e}", file=sys.stderr)


def own_process(config_file: str | None, perception_factory: Callable[[MapperConfig], Any] | None = None) -> list[Node]:
    """The perception node of a process of its own, that process at lower priority (run_nodes'
    ``build``; ``perception_factory`` as PerceptionNode's)."""
    node = PerceptionNode(config_file=config_file, perception_factory=perception_factory)
    lower_priority(node.cfg.ros.perception_nice)
    return [node]


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``core3d-perception-node [--config FILE] [--ros-args ...]``: the
    perception node in a process of its own, at ``ros.perception_nice`` lower priority."""
    return exit_now_if_busy(run_nodes(argv, prog="core3d_perception", build=own_process))


if __name__ == "__main__":
    sys.exit(main())
