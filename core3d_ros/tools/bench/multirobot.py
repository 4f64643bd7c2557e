"""``core3d bench multirobot``: several robots mapping different, overlapping parts of one
sequence in a shared map frame, each into a mapping node of its own (namespaces robot1, robot2,
...), and one query node (``query.namespaces``) serving their maps as one.

Robot ``i`` replays frames ``i * step`` .. ``i * step + frames - 1`` of the sequence (every
``stride``-th frame; ``step = frames * (1 - overlap)``), all robots at once at ``rate`` Hz: the
shared 7-Scenes frames when present, else the synthetic room (``source`` says which). Each node
runs in its own process (graph.NodeProcess), as on robots; a query client in a process of its
own sends ``qps`` queries a second on a fixed schedule (open_loop.py) from the first frame
until ``idle_s`` seconds after every robot's map is mapped and mirrored.

Reported: per robot, frames mapped, objects and map-stream bytes; the union: objects each robot
mapped, objects served, duplicates merged (objects served as part of another robot's object)
and merge tests run; query latency p50/p99 while mapping and on the finished maps (open loop,
from the scheduled send); the results of a final query by robot, with points fetched from the
owning mapping node.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from ...config import MapperConfig, load_config
from .common import machine_info
from .graph import NodeProcess, Peer, bench_workdir, pick_domain_id
from .load import AUTO, resolve_data
from .open_loop import MAX_IN_FLIGHT, QUERY_TIMEOUT_S, TIMING_RULE, QueryClient, open_loop_stats
# what a robot's mapping node needs beside a query node: its own get_object moves aside
ROBOT_OVERRIDES = {"ros.query_namespace": "core3d/mapping", "ros.publish_map_updates": "true"}


class NodeDiagnostics:
    """Latest /diagnostics values of every node, by its fully qualified name (hardware_id): the
    robots' mapping nodes share one node name, so their statuses are told apart by namespace."""

    def __init__(self, node: Any):
        from diagnostic_msgs.msg import DiagnosticArray

        self._lock = threading.Lock()
        self.values: dict[str, dict[str, str]] = {}
        self.messages: dict[str, str] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._cb, 50)

    def _cb(self, msg: Any) -> None:
        with self._lock:
            for st in msg.status:
                self.values[st.hardware_id] = {kv.key: kv.value for kv in st.values}
                self.messages[st.hardware_id] = st.message

    def message(self, fqn: str) -> str:
        with self._lock:
            return self.messages.get(fqn, "")

    def of(self, fqn: str) -> dict[str, str]:
        with self._lock:
            return dict(self.values.get(fqn, {}))

    def number(self, fqn: str, key: str, default: float = 0) -> float:
        try:
            return float(self.of(fqn).get(key, default))
        except ValueError:
            return default


class RobotsGraph:
    """One mapping node per robot in namespace ``robot`` (``perception``: ``in_process`` or
    ``inline``) and one query node over them all (unless ``query`` is false: started by other
    means, e.g. ``ros2 launch core3d query.launch.py``), each in a process of its own."""

    def __init__(self, workdir: Path, domain_id: int, robots: list[str], overrides: dict[str, str], config: str | None,
                 perception: str = "in_process", query_overrides: dict[str, str] | None = None, query: bool = True):
        self.robots = list(robots)
        mapping = {**overrides, **ROBOT_OVERRIDES, "ros.perception": perception}
        self.mapping = {r: NodeProcess(workdir, domain_id, mapping, config, name=r, namespace=r) for r in self.robots}
        params = {**overrides, "query.namespaces": "[" + ",".join(self.robots) + "]", **(query_overrides or {})}
        self.query = (
            NodeProcess(workdir, domain_id, params, config, name="query", module="core3d_ros.ros.query_node") if query else None
        )
        self._all = [*self.mapping.values(), *([self.query] if self.query is not None else [])]

    def alive(self) -> bool:
        return all(p.alive() for p in self._all)

    def errors(self) -> list[str]:
        return [line for p in self._all for line in p.errors()]

    def log_text(self) -> str:
        return "\n".join(p.log_text() for p in self._all)

    def stop(self, timeout: float = 15.0) -> list[int]:
        return [p.stop(timeout) for p in self._all]


def robot_parts(robots: int, frames: int, overlap: float) -> list[range]:
    """The frame ranges of the robots: ``frames`` each, consecutive ones sharing ``overlap`` of them."""
    if robots < 1 or frames < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError("robots and frames must be >= 1 and overlap in [0, 1)")
    step = max(1, round(frames * (1.0 - overlap)))
    return [range(i * step, i * step + frames) for i in range(robots)]


def _load_parts(data: str | None, parts: list[range], stride: int, width: int, height: int, seed: int,
                cfg: MapperConfig) -> tuple[list[list[Any]], str]:
    need = parts[-1].stop
    if data:
        from ...core.datasets import open_dataset

        ds = open_dataset(data, "auto", depth=cfg.depth, max_frames=need, stride=stride)
        if len(ds) < need:
            raise ValueError(f"{data} has {len(ds)} frames at stride {stride}; the robots' parts need {need}")
        name = f"{data}"
    else:
        from ...core.datasets import make_scene

        ds = make_scene(seed=seed, num_frames=need * stride, width=width, height=height)
        name = f"synthetic room seed {seed}, {width}x{height}"
    frames = [[ds[i * (1 if data else stride)] for i in part] for part in parts]
    spans = ", ".join(f"robot{k + 1}: {p.start * stride}-{(p.stop - 1) * stride}" for k, p in enumerate(parts))
    return frames, f"{name}; frames {spans} (stride {stride})"


def _settled(diag: NodeDiagnostics, fqn: str, published: int, quiet_since: dict[str, tuple[float, float]]) -> bool:
    """Every frame the node received is decided and its queue is empty, and all arrived or none
    for 3 s."""
    n = diag.number
    received = n(fqn, "frames_received")
    decided = n(fqn, "frames_processed") + n(fqn, "frames_rejected") + n(fqn, "frames_dropped")
    now = time.monotonic()
    last, since = quiet_since.get(fqn, (-1.0, now))
    if received != last:
        quiet_since[fqn] = (received, now)
        since = now
    return bool(diag.of(fqn)) and decided >= received and n(fqn, "work_queue_length") == 0 and (
        received >= published or now - since >= 3.0
    )


def bench_multirobot(
    robots: int = 2,
    frames: int = 60,
    overlap: float = 0.5,
    stride: int = 3,
    rate: float = 15.0,
    qps: float = 20.0,
    data: str | None = AUTO,
    width: int = 640,
    height: int = 480,
    seed: int = 0,
    voxel: float | None = None,
    perception: str = "in_process",
    idle_s: float = 5.0,
    config: str | None = None,
    workdir: str | None = None,
    domain_id: int | None = None,
    query_timeout: float = QUERY_TIMEOUT_S,
    max_in_flight: int = MAX_IN_FLIGHT,
    settle_timeout: float | None = None,
) -> dict:
    """See the module docstring. ``data``: a dataset folder, None (the synthetic room) or AUTO
    (the shared 7-Scenes frames when present, else the synthetic room)."""
    from ..player import publish_dataset

    cfg = load_config(config)
    data, fallback = resolve_data(data)
    names = [f"robot{i + 1}" for i in range(robots)]
    parts = robot_parts(robots, frames, overlap)
    replays, source = _load_parts(data, parts, stride, width, height, seed, cfg)
    source += fallback
    overrides = {"ros.qos_reliability": "reliable", "ros.publish_period": "0.5"}
    if voxel is not None:
        overrides["fusion.voxel_size"] = repr(float(voxel))
    wd, own = bench_workdir(workdir, "multirobot")
    domain = domain_id if domain_id is not None else pick_domain_id()
    graph = RobotsGraph(wd, domain, names, overrides, config, perception)
    peer = Peer(domain, name="core3d_multirobot")
    diag = NodeDiagnostics(peer.node)
    client = None
    out: dict[str, Any] = {}
    try:
        if not peer.clients["query"].wait_for_service(timeout_sec=90.0):
            raise RuntimeError(f"the query node did not come up:\n{graph.log_text()[-3000:]}")
        query_fqn = "/core3d_query"
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and not all(diag.of(query_fqn).get(f"{r}.seq", "") != "" for r in names):
            time.sleep(0.2)  # each robot's first (empty) state mirrored
        client = QueryClient(domain, qps, query_timeout, max_in_flight)
        if not client.wait_ready():
            raise RuntimeError("the query client process did not start")
        played: dict[str, Any] = {}

        def play(robot: str, frames_: list[Any]) -> None:
            ros = dataclasses.replace(
                cfg.ros, **{k: f"/{robot}/{getattr(cfg.ros, k)}" for k in ("color_topic", "depth_topic", "info_topic", "pose_topic")}
            )
            played[robot] = publish_dataset(
                frames_, rate, ros, reliable=True, context=peer.ctx, wait_for_subscribers=30.0,
                node_name=f"core3d_player_{robot}",
            )

        start = time.monotonic()
        players = [threading.Thread(target=play, args=(r, f), daemon=True) for r, f in zip(names, replays)]
        for t in players:
            t.start()
        for t in players:
            t.join()
        quiet: dict[str, tuple[float, float]] = {}
        deadline = time.monotonic() + (settle_timeout if settle_timeout is not None else 60.0 + frames * robots * 0.5)
        settled = False
        while time.monotonic() < deadline:
            settled = all(_settled(diag, f"/{r}/core3d_mapping", played[r].frames if r in played else 0, quiet) for r in names)
            if settled:
                break
            time.sleep(0.2)

        def in_step() -> bool:  # the query node serves the last version each robot published
            q = diag.of(query_fqn)
            return all(q.get(f"{r}.seq") == diag.of(f"/{r}/core3d_mapping").get("stream_seq") for r in names)

        # keyframes still in perception fuse after the last frame: done when no robot's map
        # changed for 3 s and the query node serves what each published
        last, since = None, time.monotonic()
        while time.monotonic() < deadline + 30.0:
            seqs = [diag.of(f"/{r}/core3d_mapping").get("stream_seq") for r in names]
            if seqs != last:
                last, since = seqs, time.monotonic()
            elif time.monotonic() - since >= 3.0 and in_step():
                break
            time.sleep(0.2)
        mirrored = in_step()
        mapping_end = time.monotonic()
        time.sleep(idle_s)
        idle_end = time.monotonic()
        client.stop()
        records, client_errors = client.records, client.errors
        client = None
        probe = _probe(peer, names)
        time.sleep(2.5 * float(overrides["ros.publish_period"]))  # fresh diagnostics after the probe
        q = diag.of(query_fqn)
        per_robot = {}
        for r in names:
            m = diag.of(f"/{r}/core3d_mapping")
            per_robot[r] = {
                "frames_published": played[r].frames if r in played else 0,
                "frames_mapped": int(float(m.get("frames_processed", 0))),
                "frames_dropped": int(float(m.get("frames_dropped", 0))),
                "frames_rejected": int(float(m.get("frames_rejected", 0))),
                "objects": int(float(m.get("objects", 0))),
                "objects_mirrored": int(float(q.get(f"{r}.objects", 0))),
                "stream_updates": int(float(m.get("stream_updates", 0))),
                "stream_bytes": int(float(m.get("stream_bytes_sent", 0))),
                "mapping_node": m,  # its /diagnostics at the end
                "perception_node": diag.of(f"/{r}/core3d_perception"),
            }
        during = open_loop_stats(records, query_timeout, start, mapping_end)
        idle = open_loop_stats(records, query_timeout, mapping_end + 1e-9, idle_end)
        mapped_total = sum(p["objects_mirrored"] for p in per_robot.values())
        served = int(float(q.get("objects", 0)))
        out = {
            "bench": "multirobot",
            "source": source,
            "robots": names,
            "frames_per_robot": frames,
            "overlap": overlap,
            "stride": stride,
            "rate_hz": rate,
            "voxel_size": float(voxel) if voxel is not None else cfg.fusion.voxel_size,
            "perception": perception,
            "merge_test": f"balanced IoV on the streamed voxel samples (fusion.gamma {cfg.fusion.gamma}, fusion.delta {cfg.fusion.delta})",
            "settled": settled,
            "mirrored": mirrored,
            "per_robot": per_robot,
            "objects_mapped": mapped_total,  # every robot's objects, as the query node mirrors them
            "objects_served": served,  # the union
            "duplicates_merged": int(float(q.get("merged", 0))),
            "merged_groups": int(float(q.get("merged_groups", 0))),
            "merge_tests": int(float(q.get("merge_tests", 0))),
            "timing": TIMING_RULE,
            "qps_target": qps,
            "query_ms": during["ms"],
            "query_ms_idle": idle["ms"],
            "while_mapping": {k: v for k, v in during.items() if k not in ("ms", "ms_from_send")},
            "idle": {k: v for k, v in idle.items() if k not in ("ms", "ms_from_send")},
            "client_errors": client_errors[:5],
            "probe": probe,
            "query_node": q,
            "exceptions": {"log_error_lines": len(graph.errors()), "first_lines": graph.errors()[:5]},
            "nodes_alive_at_end": graph.alive(),
            "workdir": str(wd) if not own else None,
            "machine": machine_info(),
        }
    finally:
        if client is not None:
            client.stop()
        peer.close()
        codes = graph.stop()
        out["node_exit_codes"] = codes
        if own:
            shutil.rmtree(wd, ignore_errors=True)
    return out


def _probe(peer: Peer, names: list[str]) -> dict:
    """One query over the whole union (results by robot) and one with points (fetched from the
    owning mapping nodes); what the planner sees."""
    out: dict[str, Any] = {}
    try:
        resp, dt = peer.call("query", peer.request("query", text="the largest object", top_k=100), 30.0)
        out["results"] = len(resp.results)
        out["results_by_robot"] = {r: sum(1 for x in resp.results if x.robot == r) for r in names}
        out["results_with_merged"] = sum(1 for x in resp.results if len(x.merged_ids))
        # Which robot's copy represents a merged group depends on what each robot saw, so a robot
        # may own no result; its objects are still served, as merged ids.
        out["served_by_robot"] = {
            r: sum((x.robot == r) + sum(1 for m in x.merged_robots if m == r) for x in resp.results) for r in names
        }
        resp, dt = peer.call("query", peer.request("query", text="the largest object", top_k=3, include_points=True), 30.0)
        out["with_points"] = {
            "ms": dt * 1e3, "message": str(resp.message)[:300],
            "results": [{"robot": x.robot, "id": int(x.object.id), "voxels": int(x.object.num_voxels), "points": int(x.points.width)}
                        for x in resp.results],
        }
    except TimeoutError as e:
        out["error"] = str(e)
    return out


def summary(r: dict) -> str:
    q = r["query_ms"]
    robots = ", ".join(f"{k} {v['frames_mapped']}/{v['frames_published']} frames, {v['objects']} objects" for k, v in r["per_robot"].items())
    return (
        f"multirobot ({r['source']}): {robots}; union {r['objects_mapped']} objects mapped, {r['objects_served']} served, "
        f"{r['duplicates_merged']} duplicates merged; queries while mapping p50 {q['p50']:.1f} ms, p99 {q['p99']:.1f} ms "
        f"(open loop at {r['qps_target']:g}/s, {r['while_mapping']['timed_out']} timed out)"
        + ("" if math.isfinite(q["p99"]) else " (no queries while mapping)")
    )
