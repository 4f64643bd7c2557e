"""Two mapping nodes (namespaces robot1, robot2) into one query node, each in its own process
over real ROS 2 topics and services: ``core3d bench multirobot`` small, and a query node started
by ``ros2 launch`` (launch/query.launch.py), asked with ``ros2 service call`` while one robot's
mapping node and then the query node itself are killed."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

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
LAUNCH = Path(__file__).resolve().parents[1] / "launch" / "query.launch.py"


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
    # every mapped object is served: as a result, or merged into another robot's result
    assert probe["served_by_robot"] == {n: r["per_robot"][n]["objects"] for n in ROBOTS}, probe
    assert sum(probe["results_by_robot"].values()) == probe["results"] == r["objects_served"], probe
    assert probe["results_with_merged"] == r["merged_groups"]
    assert all(x["points"] == x["voxels"] for x in probe["with_points"]["results"]), probe  # fetched: all voxels
    assert r["query_ms"]["n"] > 0 and r["while_mapping"]["failed"] == 0 and r["while_mapping"]["timed_out"] == 0
    assert r["exceptions"]["log_error_lines"] == 0, r["exceptions"]
    assert r["nodes_alive_at_end"] and r["node_exit_codes"] == [0, 0, 0]


def test_robot_parts_and_bad_arguments() -> None:
    from core3d_ros.cli import main

    assert multirobot.robot_parts(2, 60, 0.5) == [range(0, 60), range(30, 90)]
    assert multirobot.robot_parts(3, 10, 0.0) == [range(0, 10), range(10, 20), range(20, 30)]
    for bad in (["--overlap", "1.0"], ["--robots", "0"], ["--stride", "-1"]):
        with pytest.raises(SystemExit, match=r"--robots and --stride must be >= 1 and --overlap in \[0, 1\)"):
            main(["bench", "multirobot", *bad])


def _ros2_missing() -> str | None:
    if shutil.which("ros2") is None:
        return "the ros2 command is not installed (robot: apt; here: scripts/setup.sh with ../shared/ros2-src)"
    try:
        import launch_ros  # noqa: F401
        import ros2launch  # noqa: F401
        import ros2service  # noqa: F401
    except ImportError as e:
        return f"ros2 launch / service verbs not installed ({e}); scripts/setup.sh builds them from ../shared/ros2-src"
    return None


def _env() -> dict[str, str]:
    return dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")


def ros2_call(service: str, srv_type: str, request: str) -> str:
    """One answer from the real CLI. Discovery on a busy machine may overrun one call's wait, and
    a call made just after a server was killed and respawned can go to the dead server's stale
    endpoint and never be answered: each try is bounded and tried again with a new client."""
    said = ""
    for _ in range(4):
        try:
            r = subprocess.run(["ros2", "service", "call", service, srv_type, request], env=_env(), capture_output=True,
                               text=True, timeout=40)
        except subprocess.TimeoutExpired as e:
            said = f"no answer within 40 s: {e.stdout!r}"
            continue
        if r.returncode == 0 and "response:" in r.stdout:
            return r.stdout
        said = r.stdout + r.stderr
    raise AssertionError(said)


def results_of(out: str) -> list[tuple[int, str]]:
    """(id, robot) of each result in a printed core3d/srv/Query response."""
    return [(int(i), r) for i, r in re.findall(r"Object\(id=(\d+),.*?robot='(robot\d)'", out, re.S)]


@pytest.mark.skipif(_ros2_missing() is not None, reason=str(_ros2_missing()))
def test_two_mapping_nodes_into_one_launched_query_node(tmp_path) -> None:
    cfg = MapperConfig()
    scene = make_scene(seed=1, num_frames=16, width=160, height=120)
    parts = {"robot1": [scene[i] for i in range(0, 10)], "robot2": [scene[i] for i in range(6, 16)]}
    overrides = {"ros.qos_reliability": "reliable", "ros.publish_period": "0.3"}
    graph = multirobot.RobotsGraph(tmp_path, DOMAIN_ID, ROBOTS, overrides, None, "inline", query=False)
    log_path = tmp_path / "launch.log"
    log = open(log_path, "w")
    launch = subprocess.Popen(
        ["ros2", "launch", str(LAUNCH), "robots:=robot1,robot2", "fetch_timeout:=1.0"],
        env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    peer = Peer(DOMAIN_ID, name="core3d_multirobot_test")
    diag = multirobot.NodeDiagnostics(peer.node)
    try:
        assert peer.clients["query"].wait_for_service(timeout_sec=90.0), log_path.read_text()[-3000:]

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
        results = results_of(out)
        assert {r for _, r in results} == set(ROBOTS), out[-2000:]
        assert len(results) == int(diag.number("/core3d_query", "objects")), out[-2000:]
        oid = next(i for i, r in results if r == "robot2")
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
        assert {r for _, r in results_of(ros2_call("/core3d/query", "core3d/srv/Query", "{text: 'the largest object', top_k: 100}"))} == set(ROBOTS)

        # the query node dies too: the launch starts it again; it mirrors robot1 anew and says
        # robot2 has no map (its mapping node is gone)
        started = r"\[query_node-\d+\]: process started with pid \[(\d+)\]"
        os.kill(int(re.search(started, log_path.read_text()).group(1)), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(re.findall(started, log_path.read_text())) < 2:
            time.sleep(0.3)
        assert len(re.findall(started, log_path.read_text())) == 2, log_path.read_text()[-3000:]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = ros2_call("/core3d/query", "core3d/srv/Query", "{text: 'the largest object', top_k: 100}")
            if "robot2: no map yet" in out and results_of(out):
                break
            time.sleep(0.5)
        assert "success=True" in out and "robot2: no map yet" in out, out[-2000:]
        assert {r for _, r in results_of(out)} == {"robot1"} and len(results_of(out)) == before["robot1"] > 0
        assert graph.mapping["robot1"].alive() and launch.poll() is None
    finally:
        peer.close()
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGINT)
            try:
                launch.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(launch.pid, signal.SIGKILL)
                launch.wait(10)
        log.close()
        graph.stop()
    assert launch.returncode == 0, log_path.read_text()[-3000:]
    # the query node's own errors (the launch reports the killed process as an error of its own)
    assert not re.search(r"\[ERROR\] \[[\d.]+\] \[core3d_query\]|Traceback", log_path.read_text()), log_path.read_text()[-3000:]
