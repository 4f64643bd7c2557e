"""The core3d command: offline map, query, eval and the benchmarks' JSON."""
import json

import cv2
import numpy as np
import pytest

from core3d_ros.cli import main


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    out = tmp_path_factory.mktemp("map")
    assert main(["map", "synthetic", "--frames", "12", "--segmenter", "oracle", "--out", str(out)]) == 0
    return out


def test_map_writes_map_png_and_ply(mapped):
    assert (mapped / "map.npz").stat().st_size > 0
    img = cv2.imread(str(mapped / "map.png"))
    assert img is not None and img.shape[2] == 3 and (img < 250).any()  # something was drawn
    header = (mapped / "map.ply").read_bytes()[:400].decode("ascii", "replace")
    assert header.startswith("ply") and "instance" in header


def test_query_answers_and_rejects(mapped, capsys):
    assert main(["query", str(mapped / "map.npz"), "the largest red object", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["semantic"] is False and answer["results"]
    assert answer["parsed"]["attributes"] == ["largest", "red"]
    assert main(["query", str(mapped / "map.npz"), "   "]) == 2
    assert "query" in capsys.readouterr().err


def test_query_on_damaged_map_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert main(["query", str(bad), "the chair"]) == 2
    assert "map file" in capsys.readouterr().err


def test_eval_reports_metrics(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--segmenters", "oracle", "--frames", "16", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    m = report["segmenters"]["oracle"]["all_instances"]
    assert 0.0 <= m["mean_iou_gt"] <= 1.0 and m["num_gt"] > 5


def test_bench_fusion_json_has_the_agreed_fields(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "fusion", "--data", "synthetic", "--frames", "6", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("ours_ms_per_frame", "open3d_ms_per_frame", "ratio", "frames", "ms_first_quarter",
                "ms_last_quarter", "peak_rss_mb", "objects"):
        assert key in r
    assert r["frames"] == 6 and r["ours_ms_per_frame"] > 0 and r["open3d_ms_per_frame"] > 0
    assert np.isclose(r["ratio"], r["ours_ms_per_frame"] / r["open3d_ms_per_frame"])


def test_bench_query_json(tmp_path):
    out = tmp_path / "q.json"
    assert main(["bench", "query", "--objects", "200", "--repeats", "20", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["objects"]["200"]
    assert r["cached_p50_ms"] > 0 and r["cached_p99_ms"] >= r["cached_p50_ms"]


def test_unknown_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["map", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip()
