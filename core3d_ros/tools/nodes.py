"""core3d's nodes seen from outside, for the demo and the benches that drive them: the command
line that starts the node process, the mapping node's ``/diagnostics`` as key/values, and the
questions a client asks."""
from __future__ import annotations

import sys
import threading

QUERIES = [
    "the largest object",
    "the red object",
    "the yellow thing on the biggest object",
    "the smallest blue object",
    "the object closest to me",
]
NODE_NAMES = ("core3d_mapping", "core3d_perception", "core3d_query")  # INFO lines kept for these nodes


def node_command(cfg_path: str | None, overrides: dict[str, str]) -> list[str]:
    """``python -m core3d_ros.ros.node`` with a config file and ``-p NAME:=VALUE`` overrides."""
    cmd = [sys.executable, "-m", "core3d_ros.ros.node"]
    if cfg_path:
        cmd += ["--config", cfg_path]
    # warnings only, except the nodes' own INFO lines: their start-up phases and summaries
    cmd += ["--ros-args", "--log-level", "warn"]
    cmd += [arg for name in NODE_NAMES for arg in ("--log-level", f"{name}:=info")]
    for k, v in overrides.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


class Diagnostics:
    """Latest key/values of the node's /diagnostics."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray

        self.values: dict[str, str] = {}
        self._lock = threading.Lock()
        node.create_subscription(DiagnosticArray, "/diagnostics", self._cb, 10)

    def _cb(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("core3d_mapping"):
                with self._lock:
                    self.values = {kv.key: kv.value for kv in status.values}

    def get(self, key: str, default: int = 0) -> int:
        with self._lock:
            try:
                return int(float(self.values.get(key, default)))
            except ValueError:
                return default
