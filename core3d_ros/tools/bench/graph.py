"""The harness of the benches that drive the nodes: the nodes each in its own process, and this
process's side of the graph.

Every such bench runs the node as a robot would, in its own process (``python -m
core3d_ros.ros.node``, the command ``core3d demo`` uses), and talks to it only over real ROS 2
topics and services from this process. What the node did is read from its ``/diagnostics``
(received, mapped, dropped, rejected per reason), its resident memory from ``/proc/PID/status``
and its errors from its log (``[ERROR]`` lines and tracebacks).

- ``NodeProcess``: one node in its own process; ``MappingGraph``: the nodes as the launch file
  starts them.
- ``Peer``: one rclpy node here, spun in the background: the node's diagnostics
  (``DiagnosticsListener``) and a client for each of its services.
- ``check_services``, ``errors_seen``: what every bench reports; ``bench_workdir``,
  ``pick_domain_id``: where a run keeps its files, which ROS_DOMAIN_ID it uses.
"""
from __future__ import annotations

import math
import os
import random
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..nodes import Diagnostics, node_command

SERVICES = ("query", "get_object", "save_map", "load_map", "clear_map")
_ERROR_LINE = re.compile(r"\[ERROR\]|Traceback \(most recent call last\)")
BENCH_OVERRIDES = {"ros.qos_reliability": "reliable", "ros.publish_period": "0.5"}


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (VmRSS of /proc/PID/status); NaN if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def pick_domain_id() -> int:
    """ROS_DOMAIN_ID from the environment, else a random one of 200-232 (tests use 1-199)."""
    env = os.environ.get("ROS_DOMAIN_ID")
    return int(env) if env else random.randint(200, 232)


class NodeProcess:
    """A core3d node (``module``: the mapping node by default) in its own process; log in
    ``workdir/NAME.log``, cwd ``workdir``.

    ``HOME`` and ``ROS_HOME`` point into ``workdir`` too, so that relative map names and any
    default folder under the user's home stay inside it.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        domain_id: int,
        overrides: dict[str, str] | None = None,
        config: str | None = None,
        name: str = "node",
        module: str = "core3d_ros.ros.node",
        namespace: str = "",
    ):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        env = dict(
            os.environ,
            ROS_DOMAIN_ID=str(domain_id),
            ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
            PYTHONUNBUFFERED="1",
            HOME=str(self.workdir),
            ROS_HOME=str(self.workdir / ".ros"),
        )
        cmd = node_command(str(Path(config).resolve()) if config else None, {**BENCH_OVERRIDES, **(overrides or {})})
        cmd[cmd.index("core3d_ros.ros.node")] = module  # the perception node: core3d_ros.ros.perception_node
        if namespace:  # one robot of several (core3d bench multirobot): its topics and services under /NAMESPACE
            cmd += ["-r", f"__ns:=/{namespace.strip('/')}"]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def errors(self) -> list[str]:
        """Lines of the log that report an error or start a traceback."""
        return [line for line in self.log_text().splitlines() if _ERROR_LINE.search(line)]

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (the node's clean shutdown), SIGKILL after ``timeout``; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait()
        self._log.close()
        return int(code)

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.alive():
            self.stop()


GRAPHS = ("process", "in_process")


class MappingGraph:
    """The nodes as ``ros2 launch core3d mapping.launch.py`` starts them: the mapping node and,
    with ``perception="process"`` (the launch default), the perception node in a process of its
    own; ``"in_process"``: both nodes in one process; with ``query_node`` a query node in a
    process of its own serves core3d/query from the map stream. Stands in for one NodeProcess: ``alive``,
    ``errors`` and ``log_text`` cover both processes, ``stop`` returns the mapping node's code."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        domain_id: int,
        overrides: dict[str, str] | None = None,
        config: str | None = None,
        name: str = "node",
        perception: str = "process",
        perception_module: str = "core3d_ros.ros.perception_node",
        query_node: bool = False,
    ):
        if perception not in GRAPHS:
            raise ValueError(f"perception must be one of {', '.join(GRAPHS)}, got {perception!r}")
        own = perception == "process"
        overrides = dict(overrides or {})
        mapping = {**overrides, "ros.perception": "external"} if own else dict(overrides)
        if query_node:  # as the launch file's query_node:=true: the query node takes core3d/query
            mapping["ros.query_namespace"] = "core3d/mapping"
        self.mapping = NodeProcess(workdir, domain_id, mapping, config, name)
        self.perception = (
            NodeProcess(workdir, domain_id, overrides, config, f"{name}_perception", module=perception_module)
            if own
            else None
        )
        self.query = (
            NodeProcess(workdir, domain_id, overrides, config, f"{name}_query", module="core3d_ros.ros.query_node")
            if query_node
            else None
        )
        self.pid = self.mapping.pid
        self._all = [p for p in (self.mapping, self.perception, self.query) if p is not None]

    def alive(self) -> bool:
        return all(p.alive() for p in self._all)

    def rss_mb(self) -> float:
        return self.mapping.rss_mb()

    def log_text(self) -> str:
        return "\n".join(p.log_text() for p in self._all)

    def errors(self) -> list[str]:
        return [line for p in self._all for line in p.errors()]

    def stop(self, timeout: float = 15.0) -> int:
        codes = [p.stop(timeout) for p in self._all]
        return codes[0]


class DiagnosticsListener(Diagnostics):
    """The node's latest /diagnostics values, with a count of messages seen (to wait for fresh)."""

    def __init__(self, node: Any):
        self.seq = 0
        super().__init__(node)

    def _cb(self, msg: Any) -> None:
        super()._cb(msg)
        with self._lock:
            self.seq += 1

    def all(self) -> dict[str, str]:
        with self._lock:
            return dict(self.values)

    def prefixed(self, prefix: str) -> dict[str, int]:
        """Integer values whose key starts with ``prefix`` (prefix removed), e.g. rejected_*."""
        out = {}
        for k, v in self.all().items():
            if k.startswith(prefix):
                try:
                    out[k[len(prefix):]] = int(float(v))
                except ValueError:
                    pass
        return out

    def fresh(self, timeout: float = 5.0) -> bool:
        """Wait for one more message than seen now."""
        with self._lock:
            seen = self.seq
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.seq > seen:
                    return True
            time.sleep(0.02)
        return False


class QueryDiagnostics:
    """The query node's latest /diagnostics values (core3d_query: query_ms_p50/p99 inside the
    node, the mirror's counters)."""

    def __init__(self, node: Any):
        from diagnostic_msgs.msg import DiagnosticArray

        self._lock = threading.Lock()
        self.values: dict[str, str] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._cb, 10)

    def _cb(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("core3d_query"):
                with self._lock:
                    self.values = {kv.key: kv.value for kv in status.values}

    def all(self) -> dict[str, str]:
        with self._lock:
            return dict(self.values)


class Peer:
    """This process's side of the graph: one rclpy context and node, spun by a background
    executor; the node's diagnostics and a client for each of its services (``client_depth``:
    the depth of their request/response queues, ROS's default 10 when None)."""

    def __init__(self, domain_id: int, name: str = "core3d_stress", client_depth: int | None = None):
        import rclpy
        from core3d.srv import GetObject, LoadMap, Query, SaveMap
        from rclpy.executors import MultiThreadedExecutor
        from std_srvs.srv import Trigger

        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = rclpy.create_node(f"{name}_{os.getpid()}", context=self.ctx)
        self.diag = DiagnosticsListener(self.node)
        self.query_diag = QueryDiagnostics(self.node)
        types = {"query": Query, "get_object": GetObject, "save_map": SaveMap, "load_map": LoadMap, "clear_map": Trigger}
        self.types = types
        # clients made before spinning: destroying or creating them while the executor spins races
        qos = {}
        if client_depth is not None:  # several queries in flight: their responses must not overwrite each other
            from rclpy.qos import QoSProfile
            from rclpy.qos import qos_profile_services_default as srv

            qos["qos_profile"] = QoSProfile(
                history=srv.history, depth=int(client_depth), reliability=srv.reliability, durability=srv.durability
            )
        self.clients = {k: self.node.create_client(t, f"core3d/{k}", **qos) for k, t in types.items()}
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.ctx)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, name="core3d_stress_peer", daemon=True)
        self._thread.start()

    def request(self, service: str, **fields: Any) -> Any:
        return self.types[service].Request(**fields)

    def wait_for_services(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        for client in self.clients.values():
            if not client.wait_for_service(timeout_sec=max(deadline - time.monotonic(), 0.1)):
                return False
        return True

    def call(self, service: str, request: Any = None, timeout: float = 30.0) -> tuple[Any, float]:
        """(response, seconds) of one call; raises TimeoutError when no answer comes."""
        done = threading.Event()
        t0 = time.perf_counter()
        future = self.clients[service].call_async(request if request is not None else self.request(service))
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            self.clients[service].remove_pending_request(future)
            raise TimeoutError(f"core3d/{service} did not answer within {timeout:g} s")
        return future.result(), time.perf_counter() - t0

    def call_async(self, service: str, request: Any) -> Any:
        return self.clients[service].call_async(request)

    def wait_settled(self, colour_frames: int, timeout: float, quiet: float = 3.0) -> bool:
        """Until every colour frame the node received is decided (mapped, rejected or dropped)
        and its work queue is empty, and either all ``colour_frames`` arrived or none arrived
        for ``quiet`` seconds (the rest was lost on the way); read from fresh diagnostics."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            self.diag.fresh(min(2.0, max(deadline - time.monotonic(), 0.05)))
            d = self.diag
            decided = d.get("frames_processed") + d.get("frames_rejected") + d.get("frames_dropped")
            received = d.get("frames_received")
            now = time.monotonic()
            if received != last:
                last, since = received, now
            if decided >= received and d.get("work_queue_length") == 0 and (
                received >= colour_frames or now - since >= quiet
            ):
                return True
        return False

    def counters(self) -> dict[str, Any]:
        d = self.diag
        return {
            "received": d.get("frames_received"),
            "synced": d.get("frames_synced"),
            "mapped": d.get("frames_processed"),
            "keyframes": d.get("keyframes"),
            "dropped": d.get("frames_dropped"),
            "rejected": d.get("frames_rejected"),
            "rejected_by_reason": d.prefixed("rejected_"),
            "received_by_input": d.prefixed("received_"),
            "sync_out_of_order": d.prefixed("sync_out_of_order_"),
            "sync_dropped": d.prefixed("sync_dropped_"),
            "objects": d.get("objects"),
            "queries": d.get("queries"),
            # the map stream (core3d/map_updates): versions sent, objects in them, bytes (estimated)
            "stream": d.prefixed("stream_"),
        }

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(5.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.ctx)


def check_services(peer: Peer, map_name: str, timeout: float = 20.0) -> dict[str, dict]:
    """Call every service once; per service whether it answered, its success flag and message.

    Order: query, get_object (an id the query returned, else 1), save_map, load_map (what was
    just saved), clear_map.
    """
    out: dict[str, dict] = {}

    def one(service: str, request: Any) -> Any:
        try:
            resp, dt = peer.call(service, request, timeout)
        except TimeoutError as e:
            out[service] = {"answered": False, "success": False, "message": str(e)}
            return None
        out[service] = {"answered": True, "success": bool(resp.success), "message": str(resp.message)[:200], "ms": dt * 1e3}
        return resp

    r = one("query", peer.request("query", text="the largest object", top_k=3))
    oid = int(r.results[0].object.id) if r is not None and len(r.results) else 1
    one("get_object", peer.request("get_object", id=oid))
    s = one("save_map", peer.request("save_map", path=map_name))
    one("load_map", peer.request("load_map", path=(s.path if s is not None and s.success else map_name)))
    one("clear_map", peer.request("clear_map"))
    return out


def bench_workdir(workdir: str | None, prefix: str) -> tuple[Path, bool]:
    """(folder for the run's logs and maps, whether the bench made it and removes it at the end)."""
    if workdir:
        p = Path(workdir).resolve()
        p.mkdir(parents=True, exist_ok=True)
        return p, False
    return Path(tempfile.mkdtemp(prefix=f"core3d_{prefix}_")), True


def errors_seen(node: NodeProcess | MappingGraph, peer: Peer) -> dict:
    """The node's error lines in its log and its ``rejected_error`` count."""
    lines = node.errors()
    return {"log_error_lines": len(lines), "rejected_error": peer.diag.get("rejected_error"), "first_lines": lines[:5]}
