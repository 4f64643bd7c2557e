"""The map stream between real processes started by the real tools (`ros2 launch core3d
mapping.launch.py`, `ros2 run core3d query_node`, `core3d play`):

- a query node outlives its mapping node: it keeps answering from its last state and says how
  old that is, then takes the table of the next mapping node (a new generation) in its stead;
- an update the query node never received (its process stopped while the mapping node's
  stream went on past the stream's history) leads to a gap, a counted resync and the same table
  as the mapping node's.

The checks read /diagnostics and call core3d/query from this process (rclpy). Without the ROS 2
tools every test here skips with that reason (see test_ros_tools.py).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

import helpers
import pytest
from test_ros_tools import _tools_missing

from core3d_ros.ros.map_stream import STREAM_DEPTH

DOMAIN_ID = 100 + (os.getpid() * 13) % 100
NS = f"core3d_stream_{os.getpid()}"
STATUS = {"core3d_mapping": "core3d_mapping: mapping", "core3d_query": "core3d_query: query"}
CONFIG = Path(__file__).resolve().parents[1] / "config" / "mapping.yaml"

pytestmark = pytest.mark.skipif(_tools_missing() is not None, reason=str(_tools_missing()))


def _env() -> dict[str, str]:
    return dict(
        os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
    )


def wait_for(cond: Callable[[], Any], timeout: float, step: float = 0.3) -> bool:
    return helpers.wait_for(cond, timeout, poll=step)  # polling the launched processes' output 3 times a second


class Proc:
    """A command in its own process group (as from a terminal), its output in a log file."""

    def __init__(self, log: Path, *cmd: str):
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(list(cmd), env=_env(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def pid_of(self, executable: str) -> int:
        """The pid ros2 launch reports for one of its nodes (``mapping_node``, ``query_node``)."""
        found = re.findall(rf"\[{executable}-\d+\]: process started with pid \[(\d+)\]", self.output())
        assert found, self.output()[-3000:]
        return int(found[-1])

    def ctrl_c(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)
        finally:
            self._log.close()


class Observer:
    """This process's view of the graph: the latest /diagnostics status of each node of the
    namespace (by fully qualified name) and a core3d/query client."""

    def __init__(self):
        import rclpy
        from core3d.srv import Query
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import MultiThreadedExecutor

        self.rclpy, self.Query = rclpy, Query
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node(f"stream_observer_{os.getpid()}", namespace=NS, context=self.ctx)
        self._lock = threading.Lock()
        self.status: dict[str, Any] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 50)
        self.query_client = self.node.create_client(Query, "core3d/query")
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.ctx)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _diag(self, msg: Any) -> None:
        with self._lock:
            for st in msg.status:  # "core3d_mapping: mapping", "core3d_query: query", ...
                if st.hardware_id.startswith(f"/{NS}/"):
                    self.status[st.name] = st

    def values(self, node: str) -> dict[str, str]:
        with self._lock:
            st = self.status.get(STATUS[node])
        return {kv.key: kv.value for kv in st.values} if st is not None else {}

    def message(self, node: str) -> str:
        with self._lock:
            st = self.status.get(STATUS[node])
        return st.message if st is not None else ""

    def forget(self) -> None:
        with self._lock:
            self.status.clear()

    def query(self, text: str, timeout: float = 20.0) -> Any:
        assert self.query_client.wait_for_service(timeout_sec=timeout), "core3d/query is not served"
        fut = self.query_client.call_async(self.Query.Request(text=text))
        assert wait_for(fut.done, timeout, 0.05), "core3d/query did not answer"
        return fut.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.ctx)


@pytest.fixture
def observer():
    o = Observer()
    yield o
    o.close()


def _config(folder: Path, **ros: str) -> Path:
    """The shipped profile with some ros.* values changed (reliable inputs: on a loaded machine
    best-effort images of this size lose fragments, as the benches' graphs say too)."""
    text = CONFIG.read_text(encoding="utf-8")
    for key, value in ros.items():
        text, n = re.subn(rf"(\n\s+{key}:) \S+", rf"\1 {value}", text, count=1)
        assert n == 1, key
    path = folder / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _play(folder: Path, name: str, frames: int, rate: float = 5.0) -> Proc:
    """``core3d play`` of the synthetic room into the namespace: ``frames`` frames, 0: in a loop."""
    count = ["--max-frames", str(frames)] if frames else ["--loop"]
    return Proc(
        folder / f"{name}.log", "core3d", "play", "synthetic", *count, "--rate", str(rate),
        "--wait", "30", "--ros-args", "-r", f"__ns:=/{NS}",
    )


def _mapping_launch(folder: Path, name: str, config: Path, *args: str) -> Proc:
    """The launch file with perception in the mapping node's process; returns once that
    process has started up (the in-process perception is its last step)."""
    launch = Proc(
        folder / f"{name}.log", "ros2", "launch", "core3d", "mapping.launch.py", f"namespace:={NS}",
        "perception:=in_process", f"config:={config}", *args,
    )
    assert wait_for(lambda: "perception: colour" in launch.output() or launch.proc.poll() is not None, 180), launch.output()[-3000:]
    assert launch.proc.poll() is None, launch.output()[-3000:]
    return launch


def test_the_query_node_outlives_its_mapping_node_then_follows_the_new_one(tmp_path: Path, observer: Observer) -> None:
    # The mapping node in a launch without a query node (its own query services moved aside),
    # the query node on its own (ros2 run): killing the one leaves the other running.
    config = _config(tmp_path, query_namespace="core3d/mapping", publish_period="0.5", qos_reliability="reliable")
    query = Proc(tmp_path / "query.log", "ros2", "run", "core3d", "query_node", "--config", str(config), "--ros-args", "-r", f"__ns:=/{NS}")
    first = second = None
    try:
        resp = observer.query("a chair", timeout=60)
        assert not resp.success and resp.message.startswith("no map yet"), resp.message

        first = _mapping_launch(tmp_path, "mapping1", config, "query_node:=false")
        play = _play(tmp_path, "play1", frames=12, rate=3.0)
        assert play.proc.wait(180) == 0, play.output()[-2000:]
        assert wait_for(lambda: "map state applied" in query.output(), 60), query.output()[-3000:]
        # the query node has the mapping node's table: same generation, same sequence, objects
        mapping = lambda: observer.values("core3d_mapping")  # noqa: E731
        assert wait_for(lambda: int(mapping().get("frames_processed", "0")) > 0 and mapping().get("work_queue_length") == "0", 120), mapping()
        assert wait_for(
            lambda: observer.values("core3d_query").get("seq") == str(observer.values("core3d_mapping").get("stream_seq"))
            and int(observer.values("core3d_query").get("objects", "0")) > 0, 60,
        ), (observer.values("core3d_query"), observer.values("core3d_mapping"))
        before = observer.values("core3d_query")
        generation = before["generation"]
        assert generation == observer.values("core3d_mapping")["stream_generation"]

        # The mapping node dies (SIGKILL): its launch ends; the query node keeps answering.
        os.kill(first.pid_of("mapping_node"), signal.SIGKILL)
        first.proc.wait(60)
        observer.forget()
        assert wait_for(lambda: "no mapping node" in observer.message("core3d_query"), 60), observer.message("core3d_query")
        age = float(observer.values("core3d_query")["mirror_age_s"])
        msg = observer.message("core3d_query")
        assert f"serving {before['objects']} objects as of" in msg, msg
        resp = observer.query("a chair")
        assert resp.success, resp.message
        assert wait_for(lambda: float(observer.values("core3d_query")["mirror_age_s"]) >= age + 1.0, 20)  # and it ages
        assert observer.values("core3d_query")["generation"] == generation

        # A new mapping node: a new generation, announced by its first publication even before
        # any frame; the query node drops the old table for the new one (counted as a resync).
        second = _mapping_launch(tmp_path, "mapping2", config, "query_node:=false")
        assert wait_for(lambda: observer.values("core3d_query").get("generation") not in (None, generation), 120), (
            observer.values("core3d_query"), second.output()[-2000:]
        )
        new = observer.values("core3d_query")
        assert new["generation"] == observer.values("core3d_mapping").get("stream_generation", new["generation"])
        assert int(new["resyncs_new_generation"]) == 1 and int(new["states_applied"]) >= 2, new
        assert new["objects"] == "0"  # the restarted node's map is empty: so is the table
        play = _play(tmp_path, "play2", frames=6, rate=3.0)
        assert play.proc.wait(180) == 0, play.output()[-2000:]
        assert wait_for(lambda: int(observer.values("core3d_query").get("objects", "0")) > 0, 60), observer.values("core3d_query")
        assert observer.query("a chair").success
        assert "Traceback" not in query.output(), query.output()[-3000:]
    finally:
        for p in (second, first):
            if p is not None:
                p.ctrl_c()
        assert query.ctrl_c() == 0, query.output()[-3000:]


def test_an_update_the_query_node_missed_is_a_counted_resync(tmp_path: Path, observer: Observer) -> None:
    # The whole launch graph, publishing the map every 0.1 s while frames keep coming.
    config = _config(tmp_path, publish_period="0.1", qos_reliability="reliable")
    launch = _mapping_launch(tmp_path, "launch", config)
    play = None
    try:
        assert wait_for(lambda: "map state applied" in launch.output(), 120), launch.output()[-3000:]
        play = _play(tmp_path, "play", frames=0, rate=8.0)
        assert wait_for(lambda: int(observer.values("core3d_query").get("updates_applied", "0")) >= 3, 120), (
            observer.values("core3d_query"), launch.output()[-3000:]
        )
        query_pid = launch.pid_of("query_node")
        assert observer.values("core3d_query").get("resyncs_gap") is None
        # Stop the query node's process while the stream goes on past its history (keep-last
        # STREAM_DEPTH): the updates it would have read next are gone when it resumes.
        seq0 = int(observer.values("core3d_mapping")["stream_seq"])
        os.kill(query_pid, signal.SIGSTOP)
        try:
            assert wait_for(lambda: int(observer.values("core3d_mapping")["stream_seq"]) > seq0 + STREAM_DEPTH + 10, 180), (
                observer.values("core3d_mapping")
            )
        finally:
            os.kill(query_pid, signal.SIGCONT)
        assert wait_for(lambda: int(observer.values("core3d_query").get("resyncs_gap", "0")) >= 1, 60), observer.values("core3d_query")
        play.ctrl_c()
        play = None
        # once the frames stop, the mirror reaches the mapping node's last version
        assert wait_for(
            lambda: observer.values("core3d_query").get("seq") == observer.values("core3d_mapping").get("stream_seq"), 60,
        ), (observer.values("core3d_query"), observer.values("core3d_mapping"))
        values = observer.values("core3d_query")
        assert int(values["states_applied"]) >= 2 and int(values["objects"]) > 0, values
        assert launch.pid_of("query_node") == query_pid  # the same process: it resynced, it was not restarted
        assert observer.query("a chair").success
    finally:
        if play is not None:
            play.ctrl_c()
        assert launch.ctrl_c() == 0, launch.output()[-3000:]
