"""The query service with the model steps on: the node's default engine, a real chat server on the
loopback, real rclpy service calls. Checks the response's new fields (stages, stage_status,
stage_detail, reason, top_view) with good replies and with a failing endpoint."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from core3d.srv import Query  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from core3d_ros.config import ConfigError, MapperConfig  # noqa: E402
from core3d_ros.tools.bench.query import FakeTextEncoder, random_snapshot  # noqa: E402
from core3d_ros.tools.chat_server import Behaviour, ChatServer, candidate_ids  # noqa: E402
from core3d_ros.ros.node import MappingNode  # noqa: E402

DOMAIN_ID = 200 + os.getpid() % 30  # own range (test_node.py uses 100-199): no cross-talk
STEPS = ["parse", "verify", "orientation", "decide"]


class StaticMapper:
    """A fixed map with best views; the encoder is the benchmarks' deterministic fake (tests only)."""

    def __init__(self, cfg: MapperConfig):
        self.cfg = cfg
        self.encoder = FakeTextEncoder(64)
        self.last_pose = None
        self._snap = random_snapshot(200, dim=64, seed=3, encoder=self.encoder, views=True)

    def snapshot(self, wait: bool = True):
        return self._snap

    def process(self, frame: Any) -> Any:  # no frames are sent
        raise AssertionError("unexpected frame")



def call(node_ctx: Any, peer: Any, request: Any, timeout: float = 20.0) -> Any:
    client = peer.create_client(Query, "core3d/query")
    assert client.wait_for_service(timeout_sec=10), "query service not available"
    fut = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not fut.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fut.done(), "query service did not answer"
    return fut.result()


def test_query_service_reports_model_steps(ros_context) -> None:
    with ChatServer() as srv:
        cfg = MapperConfig()
        cfg.ros.publish_period = 0.5
        llm = cfg.retrieval.llm
        llm.enabled, llm.base_url, llm.model, llm.call_timeout = True, srv.url, "robot-vlm", 3.0
        node = MappingNode(cfg, mapper_factory=StaticMapper, context=ros_context)  # default engine
        peer = rclpy.create_node("core3d_llm_test_peer", context=ros_context)
        ex = MultiThreadedExecutor(num_threads=4, context=ros_context)
        ex.add_node(node)
        ex.add_node(peer)
        th = threading.Thread(target=ex.spin, daemon=True)
        th.start()
        try:
            picked: list[int] = []

            def responder(step: str, body: dict) -> Behaviour:
                if step == "decide":
                    picked.append(candidate_ids(body)[1])
                    return Behaviour(content={"id": picked[-1], "reason": "second candidate is on the table"})
                return Behaviour()

            srv.script(responder=responder)
            resp = call(ros_context, peer, Query.Request(text="the mug on the table", top_k=3))
            assert resp.success, resp.message
            assert list(resp.stages) == STEPS
            assert list(resp.stage_status) == ["ok", "ok", "skipped", "ok"]
            assert len(resp.stage_detail) == 4 and "chose" in resp.stage_detail[3]
            assert resp.reason == "second candidate is on the table"
            assert resp.results[0].object.id == picked[0] and len(resp.results) == 3
            top = node.mapper.snapshot().by_id()[picked[0]]
            v = resp.top_view
            assert (v.encoding, v.height, v.width) == ("rgb8", top.best_view.shape[0], top.best_view.shape[1])
            assert bytes(v.data) == top.best_view.tobytes()
            assert all(r["body"]["model"] == "robot-vlm" for r in srv.requests)

            # the endpoint fails: still answered (rule-based), and the response says why
            srv.script({s: Behaviour("http", status=500) for s in STEPS})
            resp = call(ros_context, peer, Query.Request(text="the mug on the table", top_k=3))
            assert resp.success and list(resp.stages) == STEPS
            assert list(resp.stage_status) == ["failed", "failed", "skipped", "failed"]
            assert all("500" in d for d, s in zip(resp.stage_detail, resp.stage_status) if s == "failed")
            assert resp.reason == "" and "rule-based" in resp.message and len(resp.results) == 3
            assert resp.top_view.encoding == "rgb8"
        finally:
            ex.shutdown(timeout_sec=5)
            th.join(5)
            node.destroy_node()
            peer.destroy_node()


def test_bad_llm_parameters_fail_at_start_up(ros_context) -> None:
    with pytest.raises(ConfigError, match=r"retrieval\.llm\.base_url"):
        MappingNode(
            MapperConfig(),
            mapper_factory=StaticMapper,
            context=ros_context,
            parameter_overrides=[Parameter("retrieval.llm.enabled", value=True), Parameter("retrieval.llm.model", value="m")],
        )
