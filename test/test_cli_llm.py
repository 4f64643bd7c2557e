"""`core3d query --llm-url ... --json` and `core3d bench query --llm-delay-ms`, against the loopback
chat server; the printed JSON must be strict (no NaN / Infinity)."""
import json

import pytest
import yaml

from core3d_ros.cli import main
from core3d_ros.tools.chat_server import Behaviour, ChatServer, candidate_ids


def strict_json(text: str):
    def no_constants(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


@pytest.fixture(scope="module")
def server():
    with ChatServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, server):
    out = tmp_path_factory.mktemp("map")
    cfg = out / "cfg.yaml"  # model steps on while mapping: best views are kept without an encoder
    cfg.write_text(yaml.safe_dump({"retrieval": {"llm": {"enabled": True, "base_url": server.url, "model": "m"}}}))
    assert main(["map", "synthetic", "--frames", "12", "--segmenter", "oracle", "--config", str(cfg), "--out", str(out)]) == 0
    return out / "map.npz"


def test_query_json_is_strict_without_a_model(mapped, capsys):
    assert main(["query", str(mapped), "the largest red object", "--json"]) == 0
    answer = strict_json(capsys.readouterr().out)
    assert answer["results"] and answer["stages"] == [] and answer["reason"] == ""
    assert all(r["similarity"] is None for r in answer["results"])  # no encoder: null, not NaN


def test_query_with_llm_reports_stages_and_follows_the_model(mapped, server, capsys):
    server.clear()

    def responder(step: str, body: dict) -> Behaviour:
        if step == "decide":
            return Behaviour(content={"id": candidate_ids(body)[-1], "reason": "the model's pick"})
        return Behaviour()

    server.script(responder=responder)
    try:
        assert main(["query", str(mapped), "the largest object", "--llm-url", server.url, "--llm-model", "robot-llm", "--json"]) == 0
    finally:
        server.script()
    answer = strict_json(capsys.readouterr().out)
    assert [s["name"] for s in answer["stages"]] == ["parse", "verify", "orientation", "decide"]
    assert [s["status"] for s in answer["stages"]] == ["ok", "ok", "skipped", "ok"], answer["stages"]
    decide = next(r for r in server.requests if r["step"] == "decide")
    assert answer["results"][0]["id"] == candidate_ids(decide["body"])[-1]
    assert answer["reason"] == "the model's pick"
    assert {r["body"]["model"] for r in server.requests} == {"robot-llm"}


def test_query_with_failing_llm_still_answers(mapped, server, capsys):
    server.script({s: Behaviour("http", status=500) for s in ("parse", "verify", "orientation", "decide")})
    try:
        assert main(["query", str(mapped), "the largest object", "--llm-url", server.url, "--llm-model", "m", "--json"]) == 0
    finally:
        server.script()
    answer = strict_json(capsys.readouterr().out)
    assert answer["results"]
    assert all(s["status"] in ("failed", "skipped") for s in answer["stages"])
    assert "rule-based" in answer["message"]
    assert main(["query", str(mapped), "the largest object", "--llm-url", "ftp://nowhere", "--llm-model", "m"]) == 2
    assert "retrieval.llm.base_url" in capsys.readouterr().err


def test_bench_query_llm_json(tmp_path, capsys):
    out = tmp_path / "q.json"
    args = ["bench", "query", "--objects", "300", "--repeats", "6", "--llm-delay-ms", "20", "--json", str(out)]
    assert main(args) == 0
    r = strict_json(out.read_text())
    assert r["delay_ms"] == 20.0 and r["target_p99_overhead_ms"] == 25.0
    row = r["objects"]["300"]
    assert row["failed_steps"] == {} and row["model_calls_per_query"] >= 3
    assert 0 < row["overhead_p50_ms"] <= row["overhead_p99_ms"]
    assert row["wall_p50_ms"] > 3 * 20  # at least three delayed replies per query
