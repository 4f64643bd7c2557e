"""``core3d bench load``: the same replay twice in one run, without and with ``qps`` queries per
second (open loop: open_loop.py); query latency percentiles and the node's drop counters side
by side."""
from __future__ import annotations

import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from ...config import MapperConfig, load_config
from .common import machine_info
from .frames import Looped, frames_pool
from .graph import MappingGraph, Peer, bench_workdir, errors_seen, pick_domain_id
from .open_loop import MAX_IN_FLIGHT, QUERY_TIMEOUT_S, TIMING_RULE, QueryClient, QueryRecord, open_loop_stats

SHARED_7SCENES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "7scenes-redkitchen"
AUTO = "auto"  # bench_load's data: the shared 7-Scenes frames when present, else the synthetic room


def _wait_for_log(process, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log_text():
            return True
        if not process.alive():
            return False
        time.sleep(0.2)
    return False


class StreamTap:
    """A raw subscription to core3d/map_updates in the bench process: the serialized size and
    arrival time of every update, so the stream's bytes per second are measured, not estimated
    (it costs the mapping node nothing: DDS delivers the same bytes to the query node)."""

    def __init__(self, node):
        from core3d.msg import MapUpdate

        from ...ros.map_stream import STREAM_QOS

        self._lock = threading.Lock()
        self.arrivals: list[tuple[float, int]] = []
        self.sub = node.create_subscription(MapUpdate, "core3d/map_updates", self._cb, STREAM_QOS, raw=True)

    def _cb(self, data: bytes) -> None:
        with self._lock:
            self.arrivals.append((time.monotonic(), len(data)))

    def bytes_per_s(self, start: float, end: float) -> dict:
        with self._lock:
            inside = [n for t, n in self.arrivals if start <= t <= end]
        span = max(end - start, 1e-9)
        return {
            "updates": len(inside),
            "bytes": int(sum(inside)),
            "bytes_per_s": sum(inside) / span,
            "update_bytes_p50": float(np.percentile(inside, 50)) if inside else 0.0,
            "update_bytes_max": int(max(inside)) if inside else 0,
        }


def _staleness(diag: dict | None) -> dict | None:
    """The query node's staleness figures (its /diagnostics at the end of a phase)."""
    if not diag or "staleness_s_p95" not in diag:
        return None
    return {
        "p50": float(diag["staleness_s_p50"]),
        "p95": float(diag["staleness_s_p95"]),
        "max": float(diag["staleness_s_max"]),
        "updates": int(diag["staleness_updates"]),
    }


def _load_threads(cfg: MapperConfig, perception: str, client_max_in_flight: int) -> dict:
    """Cores and threads of the run, as configured (0 in the config: the default rule)."""
    from ...core.fusion.threads import default_threads

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


def resolve_data(data: str | None) -> tuple[str | None, str]:
    """``data`` as a bench replays it: AUTO is the shared 7-Scenes frames when present, else
    None (the synthetic room) with a note for the result's ``source``."""
    if data != AUTO:
        return data, ""
    if SHARED_7SCENES.is_dir():
        return str(SHARED_7SCENES), ""
    return None, f"; {SHARED_7SCENES} absent, the synthetic room instead"


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
    query_node: bool = True,
) -> dict:
    """The same replay twice, each into a fresh graph (``perception``: see MappingGraph):
    without queries, then with ``qps`` queries per second on a fixed schedule (open loop; and
    ``idle_s`` seconds more of queries once the node has mapped everything).

    ``data``: a dataset folder; None: the synthetic room at ``width`` x ``height``; ``AUTO``
    (what ``core3d bench load`` passes): the shared 7-Scenes frames (SHARED_7SCENES, 640x480)
    when that folder exists, else the synthetic room, which ``source`` then says. ``voxel``
    overrides fusion.voxel_size in the nodes. Latencies are timed from each query's scheduled
    send to its response, timeouts counted at ``query_timeout`` (see open_loop_stats).
    ``query_node``: the queries go to a query node in a process of its own (core3d/query, from
    the map stream), as the launch file starts it by default."""
    from ..player import publish_dataset

    cfg = load_config(config)
    data, fallback = resolve_data(data)
    frame_pool, source = frames_pool(data, pool, seed, width, height, cfg)
    source += fallback
    image_h, image_w = frame_pool[0].depth.shape[:2]
    overrides = {"fusion.voxel_size": repr(float(voxel))} if voxel is not None else {}
    wd, own = bench_workdir(workdir, "load")
    domain = domain_id if domain_id is not None else pick_domain_id()
    phases: dict[str, dict] = {}
    records: list[QueryRecord] = []
    failures: list[str] = []
    for phase, with_queries in (("without_queries", False), ("with_queries", True)):
        node = MappingGraph(
            wd, domain, overrides, config=config, name=f"node_{phase}", perception=perception, query_node=query_node
        )
        peer = Peer(domain)
        tap = StreamTap(peer.node)
        client = None
        try:
            if not peer.wait_for_services(90.0):
                raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
            if query_node and not _wait_for_log(node.query, "map state applied", 60.0):
                raise RuntimeError(f"the query node got no map state:\n{node.log_text()[-3000:]}")
            first_frame: list[float] = []
            if with_queries:
                client = QueryClient(domain, qps, query_timeout, max_in_flight)
                if not client.wait_ready():
                    raise RuntimeError("the query client process did not start")
            result = publish_dataset(
                Looped(frame_pool, frames, lambda i, first=first_frame: first.append(time.monotonic()) if i == 0 else None),
                rate, cfg.ros, reliable=True, context=peer.ctx,
                wait_for_subscribers=30.0, progress=progress, node_name="core3d_stress_player",
            )
            settled = peer.wait_settled(result.frames, 60.0 + frames * 0.1)
            phase_mapping_s = time.monotonic() - first_frame[0]
            stream_measured = tap.bytes_per_s(first_frame[0], time.monotonic())
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
                "mapping_s": phase_mapping_s,
                **counters,
                "exceptions": errors_seen(node, peer),
                "node_alive_at_end": node.alive(),
                "query_node": peer.query_diag.all() if query_node else None,  # its /diagnostics at the end
                "stream_measured": stream_measured,  # serialized bytes of core3d/map_updates while mapping
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
        "query_node": bool(query_node),
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
        # the map stream while mapping (the run without queries): estimated bytes per second
        "stream_bytes_per_s": base["stream"].get("bytes_sent", 0) / base["mapping_s"] if base.get("stream") else None,
        # ... and measured: serialized updates as received in this process while mapping
        "stream_bytes_per_s_measured": base["stream_measured"]["bytes_per_s"],
        "stream_bytes_per_s_measured_with_queries": loaded["stream_measured"]["bytes_per_s"],
        # mirror staleness: from the update's snapshot in the mapping node to its application in
        # the query node (queries see it from then on), over the node's last 2,048 updates
        "mirror_staleness_s": _staleness(loaded.get("query_node")),
        "mirror_staleness_s_without_queries": _staleness(base.get("query_node")),
        "mirror_staleness_ok": bool((_staleness(loaded.get("query_node")) or {}).get("p95", math.inf) <= 0.5),
        "phases": phases,
        "frames_lost_without_queries": lost_base,
        "frames_lost_with_queries": lost_loaded,
        "drops_ok": bool(lost_loaded <= lost_base),
        "threads": _load_threads(cfg, perception, max_in_flight),
        "workdir": str(wd) if not own else None,
        "machine": machine_info(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out
