"""The core3d command: offline map, query, eval and the benchmarks' JSON."""
import json

import cv2
import numpy as np
import pytest

from core3d_ros.cli import main
from core3d_ros.config import MapperConfig


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


def test_eval_reports_each_seed_and_their_mean(tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--segmenters", "oracle", "--frames", "16", "--seeds", "0", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    r = report["segmenters"]["oracle"]
    assert report["seeds"] == [0, 1] and set(r["per_seed"]) == {"0", "1"}
    for part in ("all_instances", "objects_only"):
        per_seed = [r["per_seed"][s][part] for s in ("0", "1")]
        assert all(m["num_gt"] > 5 for m in per_seed)
        # perfect masks on 16 frames: every seed maps its instances well
        assert all(m["mean_iou_gt"] > 0.8 for m in per_seed), [m["mean_iou_gt"] for m in per_seed]
        for key in ("mean_iou_gt", "ap", "precision", "num_pred"):
            assert r["mean"][part][key] == pytest.approx(np.mean([m[key] for m in per_seed]))
    assert report["segmenters"]["oracle"]["per_seed"]["0"] != report["segmenters"]["oracle"]["per_seed"]["1"]


def test_eroded_voxels_near_the_map_are_counted_by_distance():
    from core3d_ros.config import FusionConfig
    from core3d_ros.core.fusion.object_map import ObjectMap
    from core3d_ros.core.fusion.records import ObjectState
    from core3d_ros.core.fusion.voxels import pack
    from core3d_ros.tools.bench.fusion import _near_map

    cfg = FusionConfig(voxel_size=0.1)
    k = cfg.slots_per_voxel
    ids = np.full((2, k), -1, np.int32)
    ids[:, 0] = 1
    hits = np.where(ids >= 0, 1, 0).astype(np.int32)
    held = pack(np.array([[0, 0, 0], [1, 0, 0]]))  # object 1: two voxels
    omap = ObjectMap.from_arrays(cfg, held, ids, hits, np.zeros((2, 3), np.float32), np.ones(2, np.int32), [ObjectState(id=1, num_voxels=2)], 2, 1)
    gone = pack(np.array([[3, 0, 0], [4, 0, 0], [0, -2, 2], [0, 0, -3], [3, 0, 0]]))  # 2, 3, 2, 3 voxels away; one twice
    assert _near_map(omap, gone, 2) == {"distinct": 4, "near_map": 2}


def test_bench_fusion_json_has_the_agreed_fields(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "fusion", "--data", "synthetic", "--frames", "6", "--runs", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("ours_ms_per_frame", "open3d_ms_per_frame", "ratio", "frames", "ms_first_quarter",
                "ms_last_quarter", "peak_rss_mb", "objects", "ratio_worst_run", "threads", "what_each_side_computes"):
        assert key in r
    assert r["frames"] == 6 and r["ours_ms_per_frame"] > 0 and r["open3d_ms_per_frame"] > 0
    assert np.isclose(r["ratio"], r["ours_ms_per_frame"] / r["open3d_ms_per_frame"])
    # three whole runs, alternating which side goes first; the figure is their median
    assert [p["first"] for p in r["per_run"]] == ["ours", "open3d", "ours"]
    assert r["ours_ms_per_frame"] == pytest.approx(np.median([p["ours"]["ms_per_frame"] for p in r["per_run"]]))
    assert r["ratio_worst_run"] == pytest.approx(max(r["ratios"])) and len(r["ratios"]) == 3
    # the peer is set up as the node's geometry layer, not with Open3D's defaults
    g = MapperConfig().geometry
    assert r["open3d_settings"]["trunc_voxels"] == g.trunc_voxels == r["node_geometry_settings"]["trunc_voxels"]
    assert r["open3d_settings"]["block_count_initial"] == g.block_count
    assert r["open3d_settings"]["depth_max"] == MapperConfig().depth.max_depth
    # the free-space pass is a part of ours; what it removed from the (static) sequence is reported
    fs = r["free_space"]
    assert 0 < fs["ms_per_frame"] < r["ours_ms_per_frame"] and fs["eroded_voxels"] >= 0 and fs["eroded_objects"] >= 0
    assert 0 <= fs["eroded_near_map"]["near_map"] <= fs["eroded_near_map"]["distinct"] <= fs["eroded_voxels"]
    # the geometry layer with TSDF clearing integrates the surface blocks and some more
    g = r["geometry_clearing"]
    assert g["clear_blocks_per_frame"] >= g["plain_blocks_per_frame"] > 0 and g["clear_ms_per_frame"] > 0
    assert g["carve"] is MapperConfig().geometry.carve is True and g["carved_voxels_per_frame"] >= 0


def test_fusion_peer_fills_the_blocks_of_the_nodes_truncation_band():
    """Open3D's default band (8 voxels) touches more blocks than the node's (4): the peer must
    use the node's, or it does more work than the node's geometry layer does."""
    from core3d_ros.config import with_overrides
    from core3d_ros.core.datasets import make_scene
    from core3d_ros.tools.bench.fusion import Open3DTSDF

    frame = make_scene(seed=0, num_frames=2)[0]
    blocks = {}
    for trunc in (4.0, 8.0):
        peer = Open3DTSDF.like_node(with_overrides(MapperConfig(), geometry={"trunc_voxels": trunc}, fusion={"voxel_size": 0.01}))
        peer.integrate(peer.prepare(frame))
        blocks[trunc] = peer.num_blocks
    assert 0 < blocks[4.0] < blocks[8.0]


def test_bench_query_json(tmp_path):
    out = tmp_path / "q.json"
    assert main(["bench", "query", "--objects", "200", "--repeats", "20", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["objects"]["200"]
    assert r["cached_p50_ms"] > 0 and r["cached_p99_ms"] >= r["cached_p50_ms"]


def test_unknown_dataset_is_a_clear_error(tmp_path, capsys):
    assert main(["map", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip()


def test_map_with_no_objects_writes_an_empty_but_valid_ply(tmp_path, capsys):
    """Issue 10, fault 4: `core3d map` ended in OSError from Open3D when the map had no objects."""
    import open3d as o3d

    cfg = tmp_path / "c.yaml"
    cfg.write_text("fusion:\n  min_object_observations: 1000\n")  # nothing qualifies as an object
    out = tmp_path / "out"
    assert main(["map", "synthetic", "--frames", "2", "--segmenter", "oracle", "--config", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 objects" in printed and "empty" in printed
    header = (out / "map.ply").read_bytes()[:400].decode("ascii", "replace")
    assert header.startswith("ply") and "element vertex 0" in header and "instance" in header
    cloud = o3d.t.io.read_point_cloud(str(out / "map.ply"))
    assert cloud.is_empty() and "instance" in cloud.point and "colors" in cloud.point  # Open3D reads it
    img = cv2.imread(str(out / "map.png"))
    assert img is not None and img.shape[0] == 900 and img.shape[1] >= 900  # map area (+ legend panel)
    assert (out / "map.npz").stat().st_size > 0


def test_write_ply_of_an_empty_snapshot(tmp_path):
    from core3d_ros.core.objects import MapSnapshot
    from core3d_ros.tools.viz import write_ply

    path = write_ply(MapSnapshot(), tmp_path / "e.ply")
    data = open(path, "rb").read()
    assert data.startswith(b"ply\n") and data.endswith(b"end_header\n") and b"element vertex 0\n" in data


def test_map_refuses_an_out_of_range_config_in_one_line(tmp_path, capsys):
    """The command checks a --config file as the node checks its parameters (config.validate)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("fusion:\n  voxel_size: 0\n")
    out = tmp_path / "out"
    assert main(["map", "synthetic", "--frames", "2", "--config", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == ["core3d: fusion.voxel_size must be in [0.0001, 10.0], got 0.0"]
    assert not out.exists()  # refused before anything was mapped


def test_query_uses_the_map_files_scene_graph(mapped, tmp_path, capsys):
    from core3d_ros.config import MapperConfig
    from core3d_ros.core.hierarchy.graph import Floor, Room, SceneGraph
    from core3d_ros.core.mapper import Mapper

    mapper = Mapper(MapperConfig(), segment=False)
    mapper.load(str(mapped / "map.npz"))
    ids = sorted(o.id for o in mapper.snapshot().objects)
    square = np.array([[0, 0, 0], [5, 0, 0], [5, 5, 0], [0, 5, 0]], float)
    kitchen = Room(id=1, floor_id=1, outline=square, area=25.0, centroid=np.array([2.5, 2.5, 0.0]), label="kitchen", object_ids=ids[:1])
    mapper.hierarchy = SceneGraph(floors=[Floor(id=1, height=0.0, ceiling=3.0, room_ids=[1])], rooms=[kitchen])
    path = mapper.save(str(tmp_path / "rooms.npz"))
    assert main(["query", path, "the largest object in the kitchen", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in answer["results"]] == ids[:1]  # only the kitchen's object
    assert main(["query", path, "the largest object in the bathroom", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["results"] == [] and "bathroom" in answer["message"]
