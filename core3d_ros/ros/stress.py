"""Stress benches for the mapping node: soak, fuzz, load, and kill -9 during save_map.

Every bench runs the node as a robot would, in its own process (``python -m
core3d_ros.ros.node``, the command ``core3d demo`` uses), and talks to it only over real ROS 2
topics and services from this process. What the node did is read from its ``/diagnostics``
(received, mapped, dropped, rejected per reason), its resident memory from ``/proc/PID/status``
and its errors from its log (``[ERROR]`` lines and tracebacks).

- ``bench_soak``: many valid frames (a pre-rendered synthetic room or real frames, looped);
  RSS at each tenth; growth of the last tenth over the second; errors.
- ``bench_fuzz``: malformed message sets of every class the tests know, shuffled, then valid
  sets; counts per rejection reason, how many malformed sets were mapped, whether every service
  still answers.
- ``bench_load``: the same replay twice in one run, without and with ``qps`` queries per
  second; query latency percentiles and the node's drop counters side by side.
- ``bench_kill``: SIGKILL while the node writes a map over a previous one; the file at that
  path must still load, and no temporary file may be taken for a map.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import MapperConfig, load_config
from .demo import QUERIES, _Diagnostics, _node_command

SERVICES = ("query", "get_object", "save_map", "load_map", "clear_map")
_ERROR_LINE = re.compile(r"\[ERROR\]|Traceback \(most recent call last\)")
BENCH_OVERRIDES = {"ros.qos_reliability": "reliable", "ros.publish_period": "0.5"}


# =========================================================================== helpers


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


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else math.nan


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
        cmd = _node_command(str(Path(config).resolve()) if config else None, {**BENCH_OVERRIDES, **(overrides or {})})
        cmd[cmd.index("core3d_ros.ros.node")] = module  # the perception node: core3d_ros.ros.perception_node
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
    own; ``"in_process"``: both nodes in one process. Stands in for one NodeProcess: ``alive``,
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
    ):
        if perception not in GRAPHS:
            raise ValueError(f"perception must be one of {', '.join(GRAPHS)}, got {perception!r}")
        own = perception == "process"
        overrides = dict(overrides or {})
        self.mapping = NodeProcess(workdir, domain_id, {**overrides, "ros.perception": "external"} if own else overrides, config, name)
        self.perception = (
            NodeProcess(workdir, domain_id, overrides, config, f"{name}_perception", module=perception_module)
            if own
            else None
        )
        self.pid = self.mapping.pid
        self._all = [p for p in (self.mapping, self.perception) if p is not None]

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


class DiagnosticsListener(_Diagnostics):
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


def _frames_pool(data: str | None, count: int, seed: int, width: int, height: int, cfg: MapperConfig) -> tuple[list, str]:
    """Pre-loaded frames to loop: real frames of ``data``, a rendered synthetic room, or with
    ``data='box'`` the fuzz bench's valid frame (a box before a wall, 64x48) from five poses,
    whose map stops growing after a few frames: memory growth there is not the map's."""
    if data == "box":
        from ..core.frame import Frame
        from . import conversions as conv

        frames = []
        for k in range(5):
            m = _valid_set(float(k))
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
        from ..core.datasets import open_dataset

        ds = open_dataset(data, "auto", depth=cfg.depth, max_frames=count)
        return [ds[i] for i in range(len(ds))], f"{data} ({len(ds)} frames, looped)"
    from ..core.datasets import make_scene

    scene = make_scene(seed=seed, num_frames=count, width=width, height=height)
    return [scene[i] for i in range(len(scene))], f"synthetic room seed {seed}, {len(scene)} frames {width}x{height}, looped"


class _Looped:
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


def _workdir(workdir: str | None, prefix: str) -> tuple[Path, bool]:
    if workdir:
        p = Path(workdir).resolve()
        p.mkdir(parents=True, exist_ok=True)
        return p, False
    return Path(tempfile.mkdtemp(prefix=f"core3d_{prefix}_")), True


def _exceptions(node: NodeProcess, peer: Peer) -> dict:
    lines = node.errors()
    return {"log_error_lines": len(lines), "rejected_error": peer.diag.get("rejected_error"), "first_lines": lines[:5]}


def _machine() -> dict:
    from ..tools.bench import machine_info

    return machine_info()


# =========================================================================== soak


def _soak_sample(tenth: int, published: int, node: NodeProcess, peer: Peer) -> dict:
    return {
        "tenth": tenth,
        "frames_published": published,
        "rss_mb": node.rss_mb(),
        "mapped": peer.diag.get("frames_processed"),
        "dropped": peer.diag.get("frames_dropped"),
        "objects": peer.diag.get("objects"),
    }


def _map_voxels(path: Path, cfg: MapperConfig) -> int | None:
    from ..core.mapio import load_map

    try:
        return load_map(path, cfg.fusion).num_voxels
    except Exception:  # the figure is informative only; a bad file shows as null
        return None


def bench_soak(
    frames: int = 10000,
    rate: float = 20.0,
    data: str | None = None,
    pool: int = 60,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
    perception: str = "process",
) -> dict:
    """``frames`` valid frames at ``rate`` Hz through the graph (``perception``: see
    MappingGraph); the mapping node's RSS at each tenth."""
    from .player import publish_dataset

    if frames < 10:
        raise ValueError(f"soak needs at least 10 frames (one per tenth), got {frames}")
    cfg = load_config(config)
    frame_pool, source = _frames_pool(data, pool, seed, width, height, cfg)
    wd, own = _workdir(workdir, "soak")
    domain = domain_id if domain_id is not None else pick_domain_id()
    marks = {int(round(k * frames / 10)): k for k in range(1, 10)}
    samples: list[dict] = []
    node = MappingGraph(wd, domain, config=config, perception=perception)
    peer = Peer(domain)
    try:
        if not peer.wait_for_services(90.0):
            raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
        rss_start = node.rss_mb()

        def sample(i: int) -> None:
            k = marks.get(i)
            if k is not None:
                samples.append(_soak_sample(k, i, node, peer))

        t0 = time.monotonic()
        result = publish_dataset(
            _Looped(frame_pool, frames, sample), rate, cfg.ros, reliable=True, context=peer.ctx,
            wait_for_subscribers=30.0, progress=progress, node_name="core3d_stress_player",
        )
        samples.append(_soak_sample(10, result.frames, node, peer))
        settled = peer.wait_settled(result.frames, 60.0 + result.frames * 0.05)
        wall = time.monotonic() - t0
        rss_settled = node.rss_mb()
        counters = peer.counters()
        # what the map holds at the end: growth of the map is not a leak
        saved, _ = peer.call("save_map", peer.request("save_map", path="soak_final.npz"), timeout=120.0)
        map_voxels = _map_voxels(wd / saved.path, cfg) if saved.success else None
        alive = node.alive()
        exc = _exceptions(node, peer)
    finally:
        peer.close()
        code = node.stop()
    second, last = samples[1]["rss_mb"], samples[-1]["rss_mb"]
    growth = (last - second) / second
    out = {
        "bench": "soak",
        "perception": perception,
        "source": source,
        "frames_requested": frames,
        "frames_published": result.frames,
        "rate_hz": rate,
        "wall_s": wall,
        "settled": settled,
        "rss_start_mb": rss_start,
        "rss_mb": samples,
        "rss_settled_mb": rss_settled,
        "rss_growth_last_over_second": growth,
        "objects_growth_last_over_second": (samples[-1]["objects"] - samples[1]["objects"]) / max(samples[1]["objects"], 1),
        "map_voxels_at_end": map_voxels,
        "rss_ok": bool(growth <= 0.10),
        "lost_in_transport": max(result.frames - counters["received"], 0),
        # more colour frames than sent: another publisher on this ROS_DOMAIN_ID
        "foreign_frames": max(counters["received"] - result.frames, 0),
        "dropped_fraction": counters["dropped"] / max(counters["received"], 1),
        "node": counters,
        "exceptions": exc,
        "exceptions_ok": exc["log_error_lines"] == 0 and exc["rejected_error"] == 0 and alive and code == 0,
        "node_alive_at_end": alive,
        "node_exit_code": code,
        "workdir": str(wd) if not own else None,
        "machine": _machine(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out


# =========================================================================== fuzz

FW, FH = 64, 48  # fuzz image size: small, the malformation is what matters
SET_SPACING = 1.0  # seconds between the stamps of consecutive sets (> slop and > max_pose_age)


def _valid_set(stamp: float, frame_id: str = "cam") -> dict[str, Any]:
    from geometry_msgs.msg import PoseStamped

    from ..core.camera import CameraIntrinsics
    from . import conversions as conv

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


def _set_image(msg: Any, **fields: Any) -> Any:
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


def _depth_filled(stamp: float, value: float, encoding: str = "32FC1") -> Any:
    from . import conversions as conv

    return conv.depth_to_image(np.full((FH, FW), value, np.float32), encoding, stamp=stamp, frame_id="cam")


def _pose_with(m: dict, **fields: Any) -> dict:
    p = m["pose"].pose
    for k, v in fields.items():
        obj, attr = k.split("_", 1)
        setattr(getattr(p, {"o": "orientation", "p": "position"}[obj]), attr, v)
    return m


def _info_k(m: dict, k: list[float]) -> dict:
    m["camera_info"].k = [float(x) for x in k]
    return m


# class name -> (acceptable rejection reasons, mutation of a valid set at ``stamp``). A mutation
# returns the messages to publish (a key set to None is not published).
MALFORMED: dict[str, tuple[tuple[str, ...], Callable[[dict, float], dict]]] = {
    "color_short_data": (("bad_image",), lambda m, t: (_set_image(m["color"], data=bytes(m["color"].data)[:-7]), m)[1]),
    "color_long_data": (("bad_image",), lambda m, t: (_set_image(m["color"], data=bytes(m["color"].data) + b"\0" * 11), m)[1]),
    "color_step_short": (("bad_image",), lambda m, t: (_set_image(m["color"], step=FW * 3 - 1), m)[1]),
    "color_step_huge": (("bad_image",), lambda m, t: (_set_image(m["color"], step=2**31), m)[1]),
    "color_dims_huge": (("bad_image",), lambda m, t: (_set_image(m["color"], height=2**30, width=2**30), m)[1]),
    "color_empty": (("bad_image",), lambda m, t: (_set_image(m["color"], height=0, width=0, step=0, data=b""), m)[1]),
    "color_encoding_yuv422": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="yuv422"), m)[1]),
    "color_encoding_8UC3": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="8UC3"), m)[1]),
    "color_encoding_empty": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding=""), m)[1]),
    "color_encoding_bayer": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="bayer_rggb8"), m)[1]),
    "color_encoding_depth": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="16UC1", step=FW * 2, data=bytes(FW * FH * 2)), m)[1]),
    "depth_encoding_rgb8": (("bad_image",), lambda m, t: (_set_image(m["depth"], encoding="rgb8"), m)[1]),
    "depth_encoding_unknown": (("bad_image",), lambda m, t: (_set_image(m["depth"], encoding="64FC1"), m)[1]),
    "depth_short_data": (("bad_image",), lambda m, t: (_set_image(m["depth"], data=bytes(m["depth"].data)[:-3]), m)[1]),
    "depth_step_short": (("bad_image",), lambda m, t: (_set_image(m["depth"], step=FW * 2 - 2), m)[1]),
    "depth_size_mismatch": (("size_mismatch",), lambda m, t: {**m, "depth": _depth_of_size(t, FW // 2, FH // 2)}),
    "depth_all_nan": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, math.nan)}),
    "depth_all_inf": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, math.inf)}),
    "depth_all_neg_inf": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, -math.inf)}),
    "depth_all_negative": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, -1.0)}),
    "depth_all_zero": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, 0.0, "16UC1")}),
    "depth_all_too_far": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, 1000.0)}),
    "info_zero_k": (("bad_camera_info",), lambda m, t: _info_k(m, [0.0] * 9)),
    "info_nan_focal": (("bad_camera_info",), lambda m, t: _info_k(m, [math.nan, 0, 31.5, 0, 60, 23.5, 0, 0, 1])),
    "info_inf_centre": (("bad_camera_info",), lambda m, t: _info_k(m, [60, 0, math.inf, 0, 60, 23.5, 0, 0, 1])),
    "info_negative_focal": (("bad_camera_info",), lambda m, t: _info_k(m, [-60, 0, 31.5, 0, 60, 23.5, 0, 0, 1])),
    "info_size_zero": (("bad_camera_info", "size_mismatch"), lambda m, t: (_set_image(m["camera_info"], width=0, height=0), m)[1]),
    "info_size_mismatch": (("size_mismatch", "bad_camera_info"), lambda m, t: (_set_image(m["camera_info"], width=640, height=480), m)[1]),
    "pose_nan_quaternion": (("bad_pose",), lambda m, t: _pose_with(m, o_x=math.nan)),
    "pose_inf_quaternion": (("bad_pose",), lambda m, t: _pose_with(m, o_y=math.inf)),
    "pose_zero_quaternion": (("bad_pose",), lambda m, t: _pose_with(m, o_w=0.0)),
    "pose_nan_position": (("bad_pose",), lambda m, t: _pose_with(m, p_x=math.nan)),
    "pose_inf_position": (("bad_pose",), lambda m, t: _pose_with(m, p_z=-math.inf)),
    "pose_stale": (("stale_pose",), lambda m, t: (_set_stamp(m["pose"], t - 0.5), m)[1]),
    "pose_missing": (("stale_pose", "no_pose"), lambda m, t: {**m, "pose": None}),
    "depth_missing": (("unsynced_depth", "no_depth"), lambda m, t: {**m, "depth": None}),
    "info_missing": (("unsynced_camera_info", "no_camera_info"), lambda m, t: {**m, "camera_info": None}),
    "partners_unsynced": (("unsynced_depth", "unsynced_camera_info", "stale_pose"), lambda m, t: _shift_partners(m, t + 0.3)),
    "set_out_of_order": (("out_of_order",), lambda m, t: _valid_set(t - 1000.0 * SET_SPACING)),
    # a pose in another frame than ros.map_frame: refused (wrong_frame), not mapped as given
    "pose_wrong_frame": (("wrong_frame", "bad_pose"), lambda m, t: (_set_image(m["pose"].header, frame_id="odom"), m)[1]),
}
KNOWN_OPEN: dict[str, str] = {}  # classes a known, still open fault maps (none now)


def _depth_of_size(stamp: float, w: int, h: int) -> Any:
    from . import conversions as conv

    return conv.depth_to_image(np.ones((h, w), np.float32), stamp=stamp, frame_id="cam")


def _set_stamp(msg: Any, stamp: float) -> None:
    from . import conversions as conv

    msg.header.stamp = conv.to_time(stamp)


def _shift_partners(m: dict, stamp: float) -> dict:
    for k in ("depth", "camera_info", "pose"):
        _set_stamp(m[k], stamp)
    return m


def _reasons_consistent(sent: Counter, rejected: dict[str, int]) -> bool:
    """Whether the rejections can be the sets' own: every set rejected once, each for one of the
    reasons its class allows (a class with several, e.g. a missing partner, may go either way)."""
    fixed: Counter = Counter()
    flexible: Counter = Counter()
    for name, n in sent.items():
        reasons = MALFORMED[name][0]
        if len(reasons) == 1:
            fixed[reasons[0]] += n
        for r in reasons:
            flexible[r] += n if len(reasons) > 1 else 0
    actual = {k: v for k, v in rejected.items() if v}
    return (
        sum(actual.values()) == sum(sent.values())
        and all(fixed[r] <= actual.get(r, 0) <= fixed[r] + flexible[r] for r in set(fixed) | set(actual))
    )


def bench_fuzz(
    sets: int = 10000,
    rate: float = 100.0,
    classes: Sequence[str] | None = None,
    valid_after: int = 5,
    seed: int = 0,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
    perception: str = "process",
) -> dict:
    """``sets`` malformed sets (classes drawn at random) at ``rate`` sets/s, then valid ones,
    into the graph (``perception``: see MappingGraph)."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tqdm import tqdm

    names = list(classes) if classes else list(MALFORMED)
    unknown = [c for c in names if c not in MALFORMED]
    if unknown:
        raise ValueError(f"unknown fuzz classes {unknown}; known: {sorted(MALFORMED)}")
    cfg = load_config(config)
    ros = cfg.ros
    wd, own = _workdir(workdir, "fuzz")
    domain = domain_id if domain_id is not None else pick_domain_id()
    overrides = {"ros.qos_depth": "1000", "ros.sync_queue": "30", "ros.work_queue": "1000",
                 "ros.sync_slop": "0.05", "ros.max_pose_age": "0.2", "keyframes.enabled": "false"}
    rng = random.Random(seed)
    node = MappingGraph(wd, domain, overrides, config=config, perception=perception)
    peer = Peer(domain)
    sent: Counter = Counter()
    try:
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1000,
                         durability=DurabilityPolicy.VOLATILE)
        pubs = {
            "color": peer.node.create_publisher(Image, ros.color_topic, qos),
            "depth": peer.node.create_publisher(Image, ros.depth_topic, qos),
            "camera_info": peer.node.create_publisher(CameraInfo, ros.info_topic, qos),
            "pose": peer.node.create_publisher(PoseStamped, ros.pose_topic, qos),
        }
        if not peer.wait_for_services(90.0):
            raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
            time.sleep(0.05)
        time.sleep(0.5)  # let the subscriptions match the publishers too

        def publish(msgs: dict) -> None:
            keys = [k for k, v in msgs.items() if v is not None]
            rng.shuffle(keys)  # any arrival order
            for k in keys:
                pubs[k].publish(msgs[k])

        t = 1.0e6  # stamps: far from 0, so that "1000 sets earlier" is still a valid time
        colour_sent = 0
        # Valid sets first, until their masks (from perception, a keyframe at a time) made an
        # object: "out of order" needs a decided frame before it, and get_object an object.
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            publish(_valid_set(t))
            t += SET_SPACING
            colour_sent += 1
            if not peer.wait_settled(colour_sent, 30.0):
                raise RuntimeError(f"warm-up sets not decided: {peer.counters()}\n{node.log_text()[-2000:]}")
            if peer.diag.get("objects"):
                break
        base = peer.counters()

        t0 = time.monotonic()
        bar = tqdm(total=sets, unit="set", desc="fuzz", file=sys.stderr, disable=not progress, dynamic_ncols=True)
        for i in range(sets):
            name = rng.choice(names)
            msgs = MALFORMED[name][1](_valid_set(t), t)
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publish(msgs)
            sent[name] += 1
            colour_sent += msgs.get("color") is not None
            t += SET_SPACING
            bar.update(1)
        bar.close()
        publish_s = time.monotonic() - t0
        # partners without colour decide a last malformed colour frame that waits for a partner
        publish({**_valid_set(t), "color": None})
        t += SET_SPACING
        settled = peer.wait_settled(colour_sent, 60.0 + sets * 0.02)
        after_malformed = peer.counters()
        mapped_malformed = after_malformed["mapped"] - base["mapped"]

        services = check_services(peer, f"stress_fuzz_{os.getpid()}.npz")
        for _ in range(valid_after):
            publish(_valid_set(t))
            t += SET_SPACING
            colour_sent += 1
        valid_settled = peer.wait_settled(colour_sent, 30.0)
        final = peer.counters()
        alive = node.alive()
        exc = _exceptions(node, peer)
    finally:
        peer.close()
        code = node.stop()

    expected: Counter = Counter()
    for name, n in sent.items():
        expected[MALFORMED[name][0][0]] += n
    rejected = {k: after_malformed["rejected_by_reason"].get(k, 0) - base["rejected_by_reason"].get(k, 0)
                for k in after_malformed["rejected_by_reason"]}
    out = {
        "bench": "fuzz",
        "perception": perception,
        "reasons_consistent": _reasons_consistent(sent, rejected),
        "sets_sent": sum(sent.values()),
        "sets_by_class": dict(sorted(sent.items())),
        "rate_sets_per_s": rate,
        "publish_s": publish_s,
        "settled": settled,
        "colour_received": after_malformed["received"] - base["received"],
        "rejected_by_reason": {k: v for k, v in sorted(rejected.items()) if v},
        "expected_by_reason": dict(sorted(expected.items())),
        "dropped": after_malformed["dropped"] - base["dropped"],
        "mapped_malformed": mapped_malformed,
        "known_open_faults": {k: v for k, v in KNOWN_OPEN.items() if sent.get(k)},
        "sync_out_of_order": after_malformed["sync_out_of_order"],
        "sync_dropped": after_malformed["sync_dropped"],
        "services": services,
        "all_services_answered": all(s["answered"] for s in services.values()) and len(services) == len(SERVICES),
        "valid_after": valid_after,
        "valid_after_mapped": final["mapped"] - after_malformed["mapped"],
        "valid_after_settled": valid_settled,
        "exceptions": exc,
        "node_alive_at_end": alive,
        "node_exit_code": code,
        "workdir": str(wd) if not own else None,
        "machine": _machine(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out


# =========================================================================== load

QUERY_TIMEOUT_S = 10.0  # a query not answered this long after its scheduled time is a timeout
# Queries sent and not yet answered, at most; one more waits for a slot, timed from its
# schedule. Below the node's request queue (ros.service_queue, 100): with ROS's default service
# QoS (KEEP_LAST 10) a burst beyond 10 lost the oldest requests without a word, which the
# node now avoids; the client's own response queue is as deep as this (Peer client_depth).
MAX_IN_FLIGHT = 64
TIMING_RULE = "from scheduled send, open loop; timeouts counted at the timeout"
SHARED_7SCENES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "7scenes-redkitchen"
AUTO = "auto"  # bench_load's data: the shared 7-Scenes frames when present, else the synthetic room


def _latency_stats(ms: list[float]) -> dict:
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else math.nan,
    }


class QueryRecord:
    """One query of an open-loop run: ``scheduled`` (when it was due: t0 + k / qps), ``sent``
    (when it was actually sent; None: never sent, it timed out waiting for a free slot),
    ``answered`` (when its response came; None: none within the timeout), whether the response
    said success, and its message when not. Times in seconds of CLOCK_MONOTONIC."""

    __slots__ = ("scheduled", "sent", "answered", "success", "message")

    def __init__(self, scheduled: float, sent: float | None = None, answered: float | None = None,
                 success: bool = False, message: str = ""):
        self.scheduled, self.sent, self.answered, self.success, self.message = scheduled, sent, answered, success, message

    def astuple(self) -> tuple:
        return (self.scheduled, self.sent, self.answered, self.success, self.message)

    def __repr__(self) -> str:
        return f"QueryRecord{self.astuple()!r}"


def run_open_loop(
    send: Callable[[int], Any],
    qps: float,
    stop: Any,
    timeout: float = QUERY_TIMEOUT_S,
    max_in_flight: int = MAX_IN_FLIGHT,
    cancel: Callable[[Any], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[QueryRecord]:
    """Queries on a fixed schedule until ``stop`` (an Event) is set: query k is due at
    t0 + k / ``qps`` whether or not the earlier ones were answered (open loop), so queueing in
    the server shows in the latencies instead of slowing the client down.

    ``send(k)`` sends query k and returns a future (``add_done_callback``, ``result``: an
    rclpy or a concurrent.futures one); its result's ``success`` (when it has one) decides
    success. At most ``max_in_flight`` queries are outstanding: a query due while all slots
    are taken is sent as soon as one frees, and still timed from when it was due. A query not
    answered ``timeout`` seconds after it was due is given up (``cancel(future)``, e.g. the
    client's remove_pending_request) and stays unanswered; one that was due that long and
    never got a slot is not sent at all. Once ``stop`` is seen, the queries due by then (late
    ones, held back by the bound) still go out, no later one does, and those in flight get
    their answer or their timeout. Returns one record per query due before ``stop`` was seen,
    in schedule order.
    """
    if qps <= 0 or timeout <= 0 or max_in_flight < 1:
        raise ValueError(f"qps and timeout must be positive and max_in_flight >= 1, got {qps}, {timeout}, {max_in_flight}")
    cond = threading.Condition()
    records: list[QueryRecord] = []
    pending: dict[int, tuple[QueryRecord, Any]] = {}

    def done(k: int, future: Any) -> None:
        now = clock()
        try:
            resp = future.result()
            ok = bool(getattr(resp, "success", True))
            msg = "" if ok else str(getattr(resp, "message", ""))[:200]
        except BaseException as e:  # a failed call: answered, not successful
            ok, msg = False, f"{type(e).__name__}: {e}"[:200]
        with cond:
            if k in pending:  # not given up already
                rec = pending.pop(k)[0]
                rec.answered, rec.success, rec.message = now, ok, msg
                cond.notify_all()

    def expire(now: float) -> None:
        with cond:
            gone = [k for k, (rec, _) in pending.items() if now - rec.scheduled >= timeout]
            futures = [pending.pop(k)[1] for k in gone]
        if cancel is not None:
            for f in futures:
                cancel(f)

    t0 = clock()
    k = 0
    stop_at: float | None = None  # when ``stop`` was seen: queries due by then are still sent
    while True:
        due = t0 + k / qps
        while stop_at is None:
            now = clock()
            expire(now)
            if stop.is_set():
                stop_at = now
            elif now >= due:
                break
            else:
                stop.wait(min(due - now, 0.05))
        if stop_at is not None and due > stop_at:
            break
        rec = QueryRecord(due)
        records.append(rec)
        with cond:  # a free slot, or the query's whole timeout spent waiting for one
            while len(pending) >= max_in_flight and clock() - due < timeout:
                cond.wait(0.01)
                cond.release()
                try:
                    expire(clock())
                finally:
                    cond.acquire()
            full = len(pending) >= max_in_flight
        if not full:
            rec.sent = clock()
            future = send(k)
            with cond:
                pending[k] = (rec, future)
            future.add_done_callback(lambda f, k=k: done(k, f))
        k += 1
    while True:  # the last ones: answered or timed out
        expire(clock())
        with cond:
            if not pending:
                break
            cond.wait(0.02)
    return records


def open_loop_stats(records: Sequence[QueryRecord], timeout: float, start: float, end: float) -> dict:
    """Figures of the queries due in [``start``, ``end``] (monotonic seconds).

    ``ms``: latency from the scheduled send to the response, every query due in the window,
    a timed-out one counted at the timeout (``timeout``). ``ms_from_send``: from the actual
    send, answered queries only: the figure a closed-loop client reports, for comparison (it
    hides the time a query waited to be sent and leaves timeouts out). ``qps_achieved``:
    responses that arrived inside the window, per second of the window. ``send_lag_ms``: how
    late the client sent, past the schedule (its own delay, or the in-flight bound)."""
    window = [r for r in records if start <= r.scheduled <= end]
    ms: list[float] = []
    ms_send: list[float] = []
    lag: list[float] = []
    answered = timed_out = never_sent = failed = 0
    messages: list[str] = []
    for r in window:
        if r.sent is not None:
            lag.append((r.sent - r.scheduled) * 1e3)
        if r.answered is not None and r.answered - r.scheduled < timeout:
            answered += 1
            ms.append((r.answered - r.scheduled) * 1e3)
            ms_send.append((r.answered - (r.sent if r.sent is not None else r.scheduled)) * 1e3)
            if not r.success:
                failed += 1
                messages.append(r.message)
        else:
            timed_out += 1
            never_sent += r.sent is None
            ms.append(timeout * 1e3)
    span = max(end - start, 1e-9)
    arrived = sum(1 for r in records if r.answered is not None and start <= r.answered <= end
                  and r.answered - r.scheduled < timeout)
    return {
        "window_s": span,
        "scheduled": len(window),
        "sent": sum(1 for r in window if r.sent is not None),
        "answered": answered,
        "timed_out": timed_out,
        "timed_out_never_sent": never_sent,
        # when the first timed-out queries were due, seconds into the window: a stall or a burst
        "timed_out_due_at_s": [round(r.scheduled - start, 3) for r in window
                               if not (r.answered is not None and r.answered - r.scheduled < timeout)][:20],
        "failed": failed,  # answered, success false
        "failures": messages[:5],
        "qps_achieved": arrived / span,
        "ms": _latency_stats(ms),
        "ms_from_send": _latency_stats(ms_send),
        "send_lag_ms": _latency_stats(lag),
    }


def _query_client_main(domain_id: int, qps: float, timeout: float, max_in_flight: int,
                       ready: Any, stop: Any, results: Any) -> None:
    """The body of QueryClient's process: its own rclpy context, open-loop queries until ``stop``."""
    peer = Peer(domain_id, name="core3d_query_client", client_depth=max(10, max_in_flight))
    records: list[QueryRecord] = []
    failures: list[str] = []
    try:
        if peer.wait_for_services(120.0):
            ready.set()
            client = peer.clients["query"]

            def send(k: int) -> Any:
                return client.call_async(peer.request("query", text=QUERIES[k % len(QUERIES)], top_k=5))

            records = run_open_loop(send, qps, stop, timeout, max_in_flight, cancel=client.remove_pending_request)
        else:
            failures.append("core3d/query did not come up")
            ready.set()
    except BaseException as e:  # reported, not lost with the process
        failures.append(f"the query client failed: {type(e).__name__}: {e}")
    finally:
        results.put(([r.astuple() for r in records], failures))
        peer.close()


class QueryClient:
    """Queries at ``qps`` on a fixed schedule (open loop: see run_open_loop) from a process of
    its own, as a planner on the robot asks them: the figures then hold the node and the
    transport, not this process replaying the frames.

    ``stop()`` returns (latencies as (monotonic time answered, ms from the scheduled send),
    failures: a message per query not answered within ``timeout`` or answered without
    success, and the client's own errors); ``records`` then holds every query (QueryRecord)
    for open_loop_stats and ``errors`` the client's own errors (it did not start, it failed).
    CLOCK_MONOTONIC is the same clock in every process of the machine."""

    def __init__(self, domain_id: int, qps: float, timeout: float = QUERY_TIMEOUT_S, max_in_flight: int = MAX_IN_FLIGHT):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter: rclpy must not be forked
        self.timeout, self.max_in_flight = float(timeout), int(max_in_flight)
        self.records: list[QueryRecord] = []
        self.errors: list[str] = []
        self._ready, self._stop, self._results = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(
            target=_query_client_main,
            args=(domain_id, qps, self.timeout, self.max_in_flight, self._ready, self._stop, self._results),
            daemon=True,
        )
        self.proc.start()

    def wait_ready(self, timeout: float = 120.0) -> bool:
        return self._ready.wait(timeout)

    def stop(self, timeout: float | None = None) -> tuple[list, list[str]]:
        import queue

        self._stop.set()
        try:  # the queries in flight get their timeout first
            rows, errors = self._results.get(timeout=timeout if timeout is not None else self.timeout + 30.0)
        except queue.Empty:
            rows, errors = [], ["the query client process gave no results"]
        self.proc.join(10.0)
        if self.proc.is_alive():
            self.proc.kill()
        self.records = [QueryRecord(*row) for row in rows]
        self.errors = list(errors)
        failures = list(errors)
        latencies = []
        for r in self.records:
            if r.answered is not None and r.answered - r.scheduled < self.timeout:
                latencies.append((r.answered, (r.answered - r.scheduled) * 1e3))
                if not r.success:
                    failures.append(r.message)
            else:
                failures.append(f"core3d/query did not answer within {self.timeout:g} s of its scheduled send")
        return latencies, failures


def _load_threads(cfg: MapperConfig, perception: str, client_max_in_flight: int) -> dict:
    """Cores and threads of the run, as configured (0 in the config: the default rule)."""
    from ..core.fusion.threads import default_threads

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return {
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "mapping_node_executor_threads": 4,  # runner.run_nodes: 4 + 2 per further node in the process
        "perception_node_executor_threads": 4 if perception == "process" else None,
        "in_process_executor_threads": 6 if perception == "in_process" else None,
        "fusion_threads": cfg.fusion.threads or default_threads(),
        "perception_torch_threads": cfg.ros.perception_threads or max(1, (os.cpu_count() or 1) - 1),
        "query_client": f"a process of its own, 2 executor threads, up to {client_max_in_flight} queries in flight",
        "bench_process": "the frame player and diagnostics (one rclpy executor of 2 threads)",
    }


def bench_load(
    qps: float = 50.0,
    frames: int = 300,
    rate: float = 15.0,
    data: str | None = None,
    pool: int = 60,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
    idle_s: float = 5.0,
    perception: str = "process",
    voxel: float | None = None,
    query_timeout: float = QUERY_TIMEOUT_S,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> dict:
    """The same replay twice, each into a fresh graph (``perception``: see MappingGraph):
    without queries, then with ``qps`` queries per second on a fixed schedule (open loop; and
    ``idle_s`` seconds more of queries once the node has mapped everything).

    ``data``: a dataset folder; None: the synthetic room at ``width`` x ``height``; ``AUTO``
    (what ``core3d bench load`` passes): the shared 7-Scenes frames (SHARED_7SCENES, 640x480)
    when that folder exists, else the synthetic room, which ``source`` then says. ``voxel``
    overrides fusion.voxel_size in the nodes. Latencies are timed from each query's scheduled
    send to its response, timeouts counted at ``query_timeout`` (see open_loop_stats)."""
    from .player import publish_dataset

    cfg = load_config(config)
    fallback = ""
    if data == AUTO:
        if SHARED_7SCENES.is_dir():
            data = str(SHARED_7SCENES)
        else:
            data, fallback = None, f"; {SHARED_7SCENES} absent, the synthetic room instead"
    frame_pool, source = _frames_pool(data, pool, seed, width, height, cfg)
    source += fallback
    image_h, image_w = frame_pool[0].depth.shape[:2]
    overrides = {"fusion.voxel_size": repr(float(voxel))} if voxel is not None else {}
    wd, own = _workdir(workdir, "load")
    domain = domain_id if domain_id is not None else pick_domain_id()
    phases: dict[str, dict] = {}
    records: list[QueryRecord] = []
    failures: list[str] = []
    for phase, with_queries in (("without_queries", False), ("with_queries", True)):
        node = MappingGraph(wd, domain, overrides, config=config, name=f"node_{phase}", perception=perception)
        peer = Peer(domain)
        client = None
        try:
            if not peer.wait_for_services(90.0):
                raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
            first_frame: list[float] = []
            if with_queries:
                client = QueryClient(domain, qps, query_timeout, max_in_flight)
                if not client.wait_ready():
                    raise RuntimeError("the query client process did not start")
            result = publish_dataset(
                _Looped(frame_pool, frames, lambda i: first_frame.append(time.monotonic()) if i == 0 else None),
                rate, cfg.ros, reliable=True, context=peer.ctx,
                wait_for_subscribers=30.0, progress=progress, node_name="core3d_stress_player",
            )
            settled = peer.wait_settled(result.frames, 60.0 + frames * 0.1)
            if with_queries:  # "while mapping": from the first frame sent until all are mapped
                mapping_start, mapping_end = first_frame[0], time.monotonic()
            if client is not None:
                time.sleep(idle_s)  # the peer figure: the same queries on the finished map
                idle_end = time.monotonic()
                client.stop()
                records, failures = client.records, client.errors
                client = None
                peer.diag.fresh()  # counters published after the last query
                peer.diag.fresh()
            counters = peer.counters()
            phases[phase] = {
                "frames_published": result.frames,
                # more colour frames than sent: another publisher on this ROS_DOMAIN_ID
                "foreign_frames": max(counters["received"] - result.frames, 0),
                "settled": settled,
                **counters,
                "exceptions": _exceptions(node, peer),
                "node_alive_at_end": node.alive(),
            }
        finally:
            if client is not None:
                client.stop()
            peer.close()
            phases.setdefault(phase, {})["node_exit_code"] = node.stop()
    base, loaded = phases["without_queries"], phases["with_queries"]
    lost_base = base["dropped"] + base["rejected"]
    lost_loaded = loaded["dropped"] + loaded["rejected"]
    during = open_loop_stats(records, query_timeout, mapping_start, mapping_end)
    idle = open_loop_stats(records, query_timeout, mapping_end + 1e-9, idle_end)
    everything = open_loop_stats(records, query_timeout, -math.inf, math.inf)
    client_errors = len(failures)
    failures = [*failures, *during["failures"], *idle["failures"]]
    out = {
        "bench": "load",
        "source": source,
        "image_size": [int(image_w), int(image_h)],
        "frames": frames,
        "rate_hz": rate,
        "voxel_size": float(voxel) if voxel is not None else cfg.fusion.voxel_size,
        "perception": perception,
        "timing": TIMING_RULE,
        "query_timeout_s": query_timeout,
        "max_in_flight": max_in_flight,
        "qps_target": qps,
        "qps_achieved_while_mapping": during["qps_achieved"],
        "queries": everything["scheduled"],  # every query due, sent or not
        "queries_sent": everything["sent"],
        "queries_answered": everything["answered"],
        "queries_timed_out": everything["timed_out"],
        "queries_failed": everything["timed_out"] + everything["failed"] + client_errors,
        "failures": failures[:5],
        "queries_while_mapping": during["scheduled"],
        "mapping_s": mapping_end - mapping_start,
        # while mapping: the figure of the target; from the scheduled send, timeouts included
        "query_ms": during["ms"],
        "query_ms_idle": idle["ms"],  # the same queries on the finished map
        # for comparison only: from the actual send, answered queries only (what a closed-loop
        # client reports; hides the wait before the send and the timeouts)
        "query_ms_from_send": during["ms_from_send"],
        "query_ms_idle_from_send": idle["ms_from_send"],
        "while_mapping": {k: v for k, v in during.items() if k not in ("ms", "ms_from_send")},
        "idle": {k: v for k, v in idle.items() if k not in ("ms", "ms_from_send")},
        "query_p99_ok": bool(during["ms"]["p99"] <= 50.0),
        "phases": phases,
        "frames_lost_without_queries": lost_base,
        "frames_lost_with_queries": lost_loaded,
        "drops_ok": bool(lost_loaded <= lost_base),
        "threads": _load_threads(cfg, perception, max_in_flight),
        "workdir": str(wd) if not own else None,
        "machine": _machine(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out


# =========================================================================== kill -9 during save_map


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _temp_files(target: Path) -> list[str]:
    """Files beside ``target`` other than it that a writer of ``target`` may have left."""
    if not target.parent.is_dir():
        return []
    stem = target.name
    return sorted(p.name for p in target.parent.iterdir() if p.name != stem and stem in p.name)


def bench_kill(
    trials: int = 7,
    frames: int = 60,
    rate: float = 10.0,
    data: str | None = None,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
) -> dict:
    """SIGKILL the node while save_map overwrites a previous map; the file must still load.

    A first node maps ``frames`` frames and saves them (the source map). Each trial starts a
    node, saves its empty map to the target (the previous file), loads the source, calls
    save_map to the same target again and SIGKILLs the node: trial 0 as soon as the writer's
    temporary file appears (surely mid-write), the others after a delay spread over the
    measured save time of the source map.
    """
    from ..core.mapio import load_map
    from .player import publish_dataset

    cfg = load_config(config)
    frame_pool, source_desc = _frames_pool(data, frames, seed, width, height, cfg)
    wd, own = _workdir(workdir, "kill")
    domain = domain_id if domain_id is not None else pick_domain_id()
    tag = f"stress_kill_{os.getpid()}"
    results: list[dict] = []
    # 1. map a scene and save it
    node = NodeProcess(wd, domain, {"keyframes.enabled": "false"}, config=config, name="node_mapper")
    peer = Peer(domain)
    try:
        if not peer.wait_for_services(90.0):
            raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
        result = publish_dataset(frame_pool, rate, cfg.ros, reliable=True, context=peer.ctx,
                                 wait_for_subscribers=30.0, progress=progress, node_name="core3d_stress_player")
        peer.wait_settled(result.frames, 60.0 + frames * 0.5)
        mapped = peer.counters()
        resp, dt = peer.call("save_map", peer.request("save_map", path=f"{tag}_source.npz"), timeout=120.0)
        if not resp.success:
            raise RuntimeError(f"save_map failed: {resp.message}")
        source_rel = resp.path
    finally:
        peer.close()
        node.stop()
    source = wd / source_rel
    size_mb = source.stat().st_size / 2**20
    save_s = dt
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9, 1.5, 0.05, 0.2, 0.4, 0.6, 0.8]  # 1.5: after the save
    for k in range(trials):
        node = NodeProcess(wd, domain, config=config, name=f"node_trial{k}")
        peer = Peer(domain)
        trial: dict[str, Any] = {"trial": k}
        try:
            if not peer.wait_for_services(90.0):
                raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
            # the previous file: the node's map before it loads the scene (empty), so that the
            # previous and the new file always differ
            r, _ = peer.call("save_map", peer.request("save_map", path=f"{tag}_target.npz"), timeout=120.0)
            if not r.success:
                raise RuntimeError(f"save_map failed: {r.message}")
            target = wd / r.path
            previous = _sha256(target)
            # what the last trial's kill left beside the target, after this save: nothing
            trial["temp_files_after_next_save"] = _temp_files(target)
            lr, _ = peer.call("load_map", peer.request("load_map", path=source_rel), timeout=120.0)
            if not lr.success:
                raise RuntimeError(f"load_map failed: {lr.message}")
            mode = "on_temp_file" if k == 0 else "delay"
            delay = 0.0 if k == 0 else fractions[(k - 1) % len(fractions)] * save_s
            future = peer.call_async("save_map", peer.request("save_map", path=r.path))
            t0 = time.perf_counter()
            temp_seen = False
            if mode == "on_temp_file":
                for attempt in range(5):
                    deadline = t0 + max(10.0, 5 * save_s)
                    while time.perf_counter() < deadline and not future.done():
                        if _temp_files(target):
                            temp_seen = True
                            break
                        time.sleep(0.0005)
                    if temp_seen or not future.done():
                        break
                    # The write fell between two polls (this process was not scheduled for the
                    # few ms it takes): its file is now the previous one; save again.
                    previous = _sha256(target)
                    future = peer.call_async("save_map", peer.request("save_map", path=r.path))
                    t0 = time.perf_counter()
                trial["saves_until_temp_file_seen"] = attempt + 1
            else:
                while time.perf_counter() - t0 < delay:
                    time.sleep(0.0005)
                temp_seen = bool(_temp_files(target))
            killed_after = time.perf_counter() - t0
            answered_before_kill = future.done()
            node.kill()
            left = _temp_files(target)
            now = _sha256(target)
            try:
                omap = load_map(target, cfg.fusion)
                loads, load_error, voxels = True, "", omap.num_voxels
            except Exception as e:  # MapFileError and anything else: the figure to report
                loads, load_error, voxels = False, f"{type(e).__name__}: {e}", 0
            trial.update({
                "mode": mode,
                "planned_delay_ms": delay * 1e3,
                "killed_after_ms": killed_after * 1e3,
                "temp_file_at_kill": temp_seen,
                "save_answered_before_kill": answered_before_kill,
                "file": "previous" if now == previous else ("new" if now is not None else "missing"),
                "loads": loads,
                "load_error": load_error,
                "voxels": voxels,
                "temp_files_left": left,
                "temp_file_picked_by_load": any(n.endswith(".npz") for n in left),
            })
        finally:
            peer.close()
            if node.alive():
                node.kill()
        # a killed writer's temporary file stays: clear it, the next trial starts clean
        for name in trial.get("temp_files_left", []):
            (wd / name).unlink(missing_ok=True)
        results.append(trial)
        if progress:
            print(f"kill trial {k}: {trial.get('mode')} after {trial.get('killed_after_ms', 0):.1f} ms, "
                  f"file {trial.get('file')}, loads {trial.get('loads')}, temp left {len(trial.get('temp_files_left', []))}",
                  file=sys.stderr)
    out = {
        "bench": "kill",
        "source": source_desc,
        "frames_mapped": mapped["mapped"],
        "map_mb": size_mb,
        "map_voxels": load_map(source, cfg.fusion).num_voxels,
        "save_ms": save_s * 1e3,
        "trials": results,
        "killed_mid_write": sum(1 for r in results if r["temp_file_at_kill"] and not r["save_answered_before_kill"]),
        "all_load": all(r["loads"] for r in results),
        "previous_intact_when_killed_mid_write": all(
            r["file"] == "previous" for r in results if r["temp_file_at_kill"] and not r["save_answered_before_kill"]
        ),
        "temp_files_left": sum(len(r["temp_files_left"]) for r in results),
        # a killed writer's temporary file is removed by the next save of the same map
        "temp_files_left_after_next_save": sum(len(r.get("temp_files_after_next_save", [])) for r in results),
        "temp_file_picked_by_load": any(r["temp_file_picked_by_load"] for r in results),
        "workdir": str(wd) if not own else None,
        "machine": _machine(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out
