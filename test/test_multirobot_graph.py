"""Two mapping nodes (namespaces robot1, robot2) into one query node, each in its own process
over real ROS 2 topics and services: ``core3d bench multirobot`` small, and the query node
asked with the ``ros2`` command while one robot's mapping node is killed."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.srv", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from core3d_ros.config import MapperConfig  # noqa: E402
from core3d_ros.core.datasets import make_scene  # noqa: E402
from core3d_ros.tools.bench import multirobot  # noqa: E402
from core3d_ros.tools.bench.graph import Peer  # noqa: E402
from core3d_ros.tools.player import publish_dataset  # noqa: E402

DOMAIN_ID = 100 + (os.getpid() + 83) % 100
ROBOTS = ["robot1", "robot2"]


def test_bench_multirobot_small(tmp_path) -> None:
    r = multirobot.bench_multirobot(
        robots=2, frames=8, stride=2, overlap=0.5, rate=8.0, qps=10.0, data=None, width=160, height=120,
        idle_s=1.0, workdir=str(tmp_path), domain_id=DOMAIN_ID,
    )
    assert r["source"].startswith("synthetic room seed 0, 160x120; frames robot1: 0-14, robot2: 8-22"), r["source"]
    assert r["robots"] == ROBOTS and r["settled"] and r["mirrored"]
    for name, p in r["per_robot"].items():
        assert p["frames_published"] == 8 and p["frames_mapped"] > 0, (name, p)
        assert p["objects"] > 0 and p["objects_mirrored"] == p["objects"], (name, p)
    assert r["objects_mapped"] == sum(p["objects"] for p in r["per_robot"].values())
    assert r["objects_served"] == r["objects_mapped"] - r["duplicates_merged"] > 0
    probe = r["probe"]
    assert all(probe["results_by_robot"][n] > 0 for n in ROBOTS), probe
    assert probe["results_with_merged"] == r["merged_groups"]
    assert all(x["points"] == x["voxels"] for x in probe["with_points"]["results"]), probe  # fetched: all voxels
    assert r["query_ms"]["n"] > 0 and r["while_mapping"]["failed"] == 0 and r["while_mapping"]["timed_out"] == 0
    assert r["exceptions"]["log_error_lines"] == 0, r["exceptions"]
    assert r["nodes_alive_at_end"] and r["node_exit_codes"] == [0, 0, 0]


def _ros2_missing() -> str | None:
    if shutil.which("ros2") is None:
        return "the ros2 command is not installed (robot: apt; here: scripts/setup.sh with ../shared/ros2-src)"
    try:
        import ros2service  # noqa: F401
    except ImportError as e:
        return f"ros2 service verb not installed ({e})"
    return None


def ros2_call(service: str, srv_type: str, request: str) -> str:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    for _ in range(3):  # discovery on a busy machine may overrun one call's wait
        r = subprocess.run(["ros2", "service", "call", service, srv_type, request], env=env, capture_output=True,
                           text=True, timeout=60)
        if r.returncode == 0 and "response:" in r.stdout:
            return r.stdout
    raise AssertionError(r.stdout + r.stderr)


@pytest.mark.skipif(_ros2_missing() is not None, reason=str(_ros2_missing()))
def test_two_mapping_nodes_into_one_query_node_with_the_ros2_command(tmp_path) -> None:
    cfg = MapperConfig()
    scene = make_scene(seed=1, num_frames=16, width=160, height=120)
    parts = {"robot1": [scene[i] for i in range(0, 10)], "robot2": [scene[i] for i in range(6, 16)]}
    overrides = {"ros.qos_reliability": "reliable", "ros.publish_period": "0.3"}
    graph = multirobot.RobotsGraph(tmp_path, DOMAIN_ID, ROBOTS, overrides, None, "inline",
                                   query_overrides={"query.fetch_timeout": "1.0"})
    peer = Peer(DOMAIN_ID, name="core3d_multirobot_test")
    diag = multirobot.NodeDiagnostics(peer.node)
    try:
        assert peer.clients["query"].wait_for_service(timeout_sec=90.0), graph.log_text()[-3000:]

        def play(robot: str) -> None:
            ros = dataclasses.replace(cfg.ros, **{k: f"/{robot}/{getattr(cfg.ros, k)}"
                                                  for k in ("color_topic", "depth_topic", "info_topic", "pose_topic")})
            publish_dataset(parts[robot], 8.0, ros, reliable=True, context=peer.ctx, wait_for_subscribers=30.0,
                            node_name=f"core3d_player_{robot}")

        players = [threading.Thread(target=play, args=(r,)) for r in ROBOTS]
        for t in players:
            t.start()
        for t in players:
            t.join()

        def served() -> dict[str, int]:
            q = diag.of("/core3d_query")
            return {r: int(q.get(f"{r}.objects", 0)) for r in ROBOTS}

        def in_step() -> bool:
            q = diag.of("/core3d_query")
            return all(
                q.get(f"{r}.seq") == diag.of(f"/{r}/core3d_mapping").get("stream_seq")
                and int(diag.number(f"/{r}/core3d_mapping", "objects")) > 0
                and diag.number(f"/{r}/core3d_mapping", "frames_processed") + diag.number(f"/{r}/core3d_mapping", "frames_dropped") >= 10
                for r in ROBOTS
            )

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not in_step():
            time.sleep(0.3)
        assert in_step(), (diag.of("/core3d_query"), served())
        out = ros2_call("/core3d/query", "core3d/srv/Query", "{text: 'the largest object', top_k: 100}")
        assert "success=True" in out, out
        results = re.findall(r"Object\(id=(\d+),.*?robot='(robot\d)'", out, re.S)  # (id, robot) per result
        assert {r for _, r in results} == set(ROBOTS), out[-2000:]
        assert len(results) == int(diag.number("/core3d_query", "objects")), out[-2000:]
        oid = next(int(i) for i, r in results if r == "robot2")
        out = ros2_call("/core3d/get_object", "core3d/srv/GetObject", f"{{id: {oid}, robot: 'robot2', include_points: true}}")
        assert "success=True" in out and "robot='robot2'" in out, out[-2000:]

        # robot2's mapping node dies: robot1's map keeps being served, robot2's from its last state
        before = served()
        graph.mapping["robot2"].kill()
        deadline = time.monotonic() + 30
        gone = "no mapping node on /robot2/core3d/map_updates"
        while time.monotonic() < deadline and gone not in diag.message("/core3d_query"):
            time.sleep(0.3)
        assert gone in diag.message("/core3d_query"), diag.message("/core3d_query")
        assert served() == before
        out = ros2_call("/core3d/get_object", "core3d/srv/GetObject", f"{{id: {oid}, robot: 'robot2', include_points: true}}")
        assert "success=True" in out and "robot2/core3d/mapping/get_object is not available" in out, out[-2000:]
        out = ros2_call("/core3d/query", "core3d/srv/Query", "{text: 'the largest object', top_k: 100}")
        assert set(re.findall(r"robot='(robot\d)'", out)) == set(ROBOTS), out[-2000:]
        assert graph.query.alive() and graph.mapping["robot1"].alive()
        assert not [line for line in graph.query.errors()], graph.query.log_text()[-3000:]
    finally:
        peer.close()
        graph.stop()
