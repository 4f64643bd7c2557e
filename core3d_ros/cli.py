"""The ``core3d`` command: demo, map, query, eval, bench, play."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import ConfigError, MapperConfig, load_config


def _progress(desc: str):
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True)


def _strict(x):
    """JSON-ready copy: non-finite floats become null (NaN / Infinity are not JSON)."""
    import math

    if isinstance(x, dict):
        return {str(k): _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return _strict(x.tolist())
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f if math.isfinite(f) else None


def _report(args, text: str, report: dict) -> int:
    """An evaluation's summary on stdout and, with ``--json``, its report in that file."""
    print(text)
    if args.json:
        _write_json(args.json, report)
    return 0


def _write_json(path: str | None, data: dict) -> None:
    text = json.dumps(_strict(data), indent=2, allow_nan=False)
    if path:
        from .core.fileio import atomic_write_bytes

        atomic_write_bytes(path, (text + "\n").encode())
        print(f"wrote {path}")
    else:
        print(text)


def _config(args) -> MapperConfig:
    cfg = load_config(getattr(args, "config", None))
    if getattr(args, "segmenter", None):
        from .config import with_overrides

        cfg = with_overrides(cfg, segmenter={"name": args.segmenter})
    return cfg


# ---------------------------------------------------------------------------------- commands
def cmd_demo(args) -> int:
    from .tools.demo import run_demo

    return run_demo(out=args.out, frames=args.frames, seed=args.seed, config=args.config)


def cmd_map(args) -> int:
    from .core.datasets import detect_format, list_sequences
    from .config import with_overrides

    cfg = _config(args)
    if args.all_frames:
        cfg = with_overrides(cfg, keyframes={"enabled": False})
    kind = detect_format(args.data) if args.kind == "auto" else args.kind
    sequences = list_sequences(args.data) if kind == "3dmatch" else []
    if args.sequence is None and len(sequences) > 1:
        # a folder of sequences and none chosen: each in turn, one map per sequence
        print(f"{args.data}: {len(sequences)} sequences ({', '.join(sequences)}); mapping each in turn into {args.out}/SEQ")
        for seq in sequences:
            print(f"--- {seq}")
            code = _map_one(args, cfg, kind, seq, Path(args.out) / seq)
            if code:
                return code
        return 0
    return _map_one(args, cfg, kind, args.sequence, Path(args.out))


def _map_one(args, cfg: MapperConfig, kind: str, sequence: str | None, out: Path) -> int:
    from .core.datasets import open_dataset
    from .core.mapper import Mapper
    from .tools.runs import map_frames, write_outputs

    from .config import with_overrides
    from .core.hierarchy.up import resolve_up
    from .tools.runs import build_hierarchy

    extra = {"sequence": sequence} if sequence is not None else {}
    dataset = open_dataset(args.data, kind, depth=cfg.depth, max_frames=args.frames, stride=args.stride, **extra)
    up, up_source, up_detail = resolve_up(cfg.retrieval.up_axis, dataset)
    print(f"up: ({up[0]:.3f}, {up[1]:.3f}, {up[2]:.3f}) ({up_source}: {up_detail})")
    cfg = with_overrides(cfg, retrieval={"up_axis": [float(v) for v in up]})
    mapper = Mapper(cfg)
    summary = map_frames(mapper, dataset, _progress("mapping"))
    graph = build_hierarchy(mapper, dataset, up, up_source)
    paths = write_outputs(mapper, out, rooms=graph.rooms if graph is not None else ())
    print(
        f"{summary.processed}/{summary.frames} frames fused ({summary.keyframes} keyframes) in {summary.seconds:.1f} s; "
        f"{summary.objects} objects"
    )
    if summary.rejected:
        print("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected.items())))
    print("per keyframe (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in summary.stage_ms.items()))
    if graph is not None:
        print(
            f"hierarchy: {len(graph.floors)} floor(s) at "
            + ", ".join(f"{f.height:.2f} m" for f in graph.floors)
            + f"; {len(graph.rooms)} room(s)" + (f" ({graph.note})" if graph.note else "")
        )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if not summary.objects:
        print("the map is empty (no object passed fusion.min_object_observations / min_segment_voxels); "
              "map.ply has no points and map.png says 'empty map'")
    return 0


def cmd_query(args) -> int:
    from .core.mapper import Mapper
    from .core.retrieval.answerers import make_answerer
    from .core.retrieval.parser import QueryError

    cfg = load_config(args.config)
    if args.llm_url or args.llm_model:
        llm = dataclasses.replace(
            cfg.retrieval.llm, enabled=True,
            base_url=args.llm_url or cfg.retrieval.llm.base_url, model=args.llm_model or cfg.retrieval.llm.model,
        )
        try:
            llm.check()
        except ConfigError as e:
            print(f"bad --llm-url / --llm-model: {e}", file=sys.stderr)
            return 2
        cfg.retrieval.llm = llm
    mapper = Mapper(cfg, segment=False)
    mapper.load(args.map)
    engine = make_answerer(cfg.retrieval, mapper.encoder)
    try:
        answer = engine.answer(mapper.snapshot(), args.text, top_k=args.top_k, graph=mapper.hierarchy)  # the file's scene graph
    except QueryError as e:
        print(f"query rejected: {e}", file=sys.stderr)
        return 2
    by_id = mapper.snapshot().by_id()
    if args.json:
        _write_json(None, _answer_dict(answer, by_id))
        return 0
    p = answer.parsed
    print(f"understood: target={p.target!r} attributes={p.attributes} relations={p.relations}")
    if answer.message:
        print(answer.message)
    for st in answer.stages:
        print(f"step {st.name}: {st.status}" + (f" ({st.detail})" if st.detail else ""))
    if answer.reason:
        print(f"model's reason: {answer.reason}")
    for rank, hit in enumerate(answer.results, 1):
        o = by_id[hit.object_id]
        c = o.box.center
        print(
            f"{rank}. object {hit.object_id} score {hit.score:.3f} label {hit.label or '-'} "
            f"centre ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) size {tuple(round(float(x), 2) for x in o.box.extent)}"
        )
    return 0


def _answer_dict(answer, by_id) -> dict:
    p = answer.parsed
    return {
        "parsed": {"text": p.text, "target": p.target, "attributes": list(p.attributes), "relations": [list(r) for r in p.relations]},
        "semantic": answer.semantic,
        "message": answer.message,
        "stages": [
            {"name": st.name, "status": st.status, "detail": st.detail, "elapsed_ms": round(st.elapsed_ms, 3)}
            for st in getattr(answer, "stages", [])
        ],
        "reason": getattr(answer, "reason", ""),
        "results": [
            {
                "id": h.object_id,
                "score": h.score,
                "similarity": h.similarity if h.similarity is not None and h.similarity == h.similarity else None,
                "relation_score": h.relation_score,
                "label": h.label,
                "center": by_id[h.object_id].box.center.tolist(),
                "extent": by_id[h.object_id].box.extent.tolist(),
            }
            for h in answer.results
        ],
    }


def cmd_eval(args) -> int:
    from .core.datasets import make_scene
    from .tools.runs import evaluate_seeds

    base = load_config(args.config)
    if args.queries:
        from .tools.query_eval import evaluate_queries, summary_table

        seeds = [args.seed] if args.seed is not None else args.seeds
        report = evaluate_queries(base, seeds, args.frames, rooms=args.query_rooms, context_objects=args.context_objects,
                                  progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                                  scenes=args.query_scenes, frames_per_room=args.frames_per_room)
        return _report(args, summary_table(report), report)
    if args.ablation:
        scene = make_scene(seed=args.seed or 0, num_frames=args.frames)
        from .tools.ablation import markdown_table, run_ablation

        segmenters = args.segmenters or ["geometric"]
        results = {name: run_ablation(scene, base, name, _progress) for name in segmenters}
        return _report(args, markdown_table(results), {"scene": {"seed": args.seed or 0, "frames": len(scene)}, "ablation": results})
    seeds = [args.seed] if args.seed is not None else args.seeds
    if args.rooms:
        from .tools.rooms_eval import evaluate_rooms, summary_lines as room_lines

        report = evaluate_rooms(base, seeds, args.frames_per_room, progress=_progress)
        return _report(args, "\n".join(room_lines(report)), report)
    if args.dynamic:
        from .tools.dynamic import DEFAULT_MOVE, evaluate_dynamic, summary_lines

        move = dict(DEFAULT_MOVE)
        if args.move:
            move = {}
            for item in args.move:
                cls, _, off = item.partition("=")
                try:
                    move[cls] = tuple(float(x) for x in off.split(","))
                except ValueError:
                    raise SystemExit(f"core3d eval --move: expected CLASS=x,y,z, got {item!r}") from None
                if len(move[cls]) != 3:
                    raise SystemExit(f"core3d eval --move: expected CLASS=x,y,z, got {item!r}")
        if args.passes < 2:
            raise SystemExit("core3d eval --dynamic: --passes must be >= 2")
        try:
            report = evaluate_dynamic(base, args.segmenters or ["oracle", "geometric"], seeds, args.frames,
                                      remove=args.remove, move=move, passes=args.passes, progress=_progress)
        except ValueError as e:
            raise SystemExit(f"core3d eval --dynamic: {e}") from None
        return _report(args, "\n".join(summary_lines(report)), report)
    if args.drift:
        from .tools.drift import evaluate_drift, summary_lines

        try:
            report = evaluate_drift(base, args.segmenters or ["oracle"], seeds, args.frames, rate=args.drift_rate, yaw_rate=args.drift_yaw,
                                    correct_every=args.correct_every, timing_voxel=args.timing_voxel or None, progress=_progress,
                                    timing_only=args.timing_only)
        except ValueError as e:
            raise SystemExit(f"core3d eval --drift: {e}") from None
        return _report(args, "\n".join(summary_lines(report)), report)
    report = evaluate_seeds(base, args.segmenters or ["oracle", "geometric"], seeds, args.frames, _progress)
    for name, r in report["segmenters"].items():
        rows = [(str(s), r["per_seed"][s]) for s in seeds] + ([(f"mean {seeds[0]}-{seeds[-1]}", r["mean"])] if len(seeds) > 1 else [])
        for label, m in rows:
            for part in ("all_instances", "objects_only"):
                p = m[part]
                print(
                    f"{name:10s} seed {label:9s} {part:14s} pred {p['num_pred']:5.1f}  mean IoU (all GT) {p['mean_iou_gt']:.3f}  "
                    f"matched {p['mean_iou_matched']:.3f}  AP@0.5 {p['ap']:.3f}  precision {p['precision']:.3f}  "
                    f"over-seg {p['over_segmented']:.1f}  under-seg {p['under_segmented']:.1f}"
                )
    if args.json:
        _write_json(args.json, report)
    return 0


def cmd_bench(args) -> int:
    if args.what == "fusion":
        from .tools.bench.fusion import bench_fusion

        if not args.data:
            raise SystemExit("core3d bench fusion needs --data DIR (a dataset folder)")
        cfg = _config(args)
        if args.stride is not None:
            if args.stride < 0:
                raise SystemExit("core3d bench fusion: --stride must be >= 0 (0 = automatic)")
            cfg = dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, pixel_stride=args.stride))
        runs = args.runs if args.runs is not None else 5
        if runs < 1:
            raise SystemExit("core3d bench fusion: --runs must be >= 1")
        result = bench_fusion(args.data, frames=args.frames, voxel=args.voxel, cfg=cfg, runs=runs, progress=_progress("segment"))
        print(
            f"median of {result['runs']} runs: ours {result['ours_ms_per_frame']:.2f} ms/frame, Open3D "
            f"{result['open3d_ms_per_frame']:.2f} ms/frame, ratio {result['ratio']:.2f} (runs {result['ratio_best_run']:.2f}-"
            f"{result['ratio_worst_run']:.2f}; CPU time {result['cpu_ratio']:.2f}); worst frame ours {result['ours_worst_frame_ms']:.1f} ms, "
            f"Open3D {result['open3d_worst_frame_ms']:.1f} ms; {result['objects']} objects; peak RSS {result['peak_rss_mb']:.0f} MB"
        )
    elif args.what == "scale":
        from .tools.bench.scale import bench_scale

        voxel = args.voxel if args.voxel is not None else 0.01
        if args.voxels < 1 or voxel <= 0:
            raise SystemExit("core3d bench scale: --voxels and --voxel must be positive")
        result = bench_scale(args.voxels, voxel_size=voxel, cfg=_config(args), progress=_progress("scale"), hierarchy=args.hierarchy)
        t, w = result["tenths"], result["tenths_worst"]
        print(
            f"{result['voxels']} voxels, {result['bytes_per_voxel']:.0f} bytes/voxel; first -> last tenth, mean (worst): "
            + ", ".join(f"{k} {t[k][0]:.1f} ({w[k][0]:.0f}) -> {t[k][-1]:.1f} ({w[k][-1]:.0f}) ms" for k in t)
            + "; worst call anywhere: " + ", ".join(f"{k} {v:.0f} ms" for k, v in result["worst_ms"].items())
        )
    elif args.what == "snapshot":
        from .tools.bench.snapshot import bench_snapshot

        if not args.data:
            raise SystemExit("core3d bench snapshot: --data DIR is required")
        voxel = args.voxel if args.voxel is not None else 0.01
        result = bench_snapshot(args.data, frames=args.frames, voxel=voxel, every=args.every, cfg=_config(args), progress=_progress("segment"))
        f = result["fifths"]
        print(
            f"{result['snapshots']} snapshots, map {f['voxels'][0]:.0f} -> {f['voxels'][-1]:.0f} voxels (mean per fifth); "
            f"full rebuild {f['full_ms'][0]:.1f} -> {f['full_ms'][-1]:.1f} ms, incremental "
            f"{f['incremental_ms'][0]:.1f} -> {f['incremental_ms'][-1]:.1f} ms per snapshot"
        )
    elif args.what == "versions":
        from .tools.bench.versions import bench_versions

        result = bench_versions(objects=args.objects, versions=args.repeats or 20)
        for n, r in result["per_objects"].items():
            c, b = r["carried"], r["rebuilt"]
            print(
                f"{n} objects: queries on a new version {c['first_ms_p50']:.1f} ms (rebuilt afresh, as before: "
                f"{b['first_ms_p50']:.1f} ms); steady {c['steady_ms_p50']:.1f} ms"
            )
    elif args.what == "semantics":
        from .tools.bench.semantics import bench_semantics

        result = bench_semantics(cfg=_config(args), data=args.data, repeats=args.repeats or 200)
    elif args.llm_delay_ms is not None:
        from .tools.bench.query import bench_query_llm

        result = bench_query_llm(args.objects, delay_ms=args.llm_delay_ms, repeats=args.repeats or 40, cfg=_config(args).retrieval)
        for n, r in result["objects"].items():
            print(
                f"{n} objects: overhead p50 {r['overhead_p50_ms']:.1f} ms, p99 {r['overhead_p99_ms']:.1f} ms "
                f"(CPU p50 {r['overhead_cpu_p50_ms']:.1f}, p99 {r['overhead_cpu_p99_ms']:.1f}) "
                f"(rule-based alone p50 {r['rule_p50_ms']:.1f}, p99 {r['rule_p99_ms']:.1f}); "
                f"{r['model_calls_per_query']:.1f} calls/query; failed steps {r['failed_steps'] or 'none'}",
                file=sys.stderr,
            )
    elif args.what in STRESS_BENCHES:
        result = _stress_bench(args)
    elif args.what == "multirobot":
        from .tools.bench import multirobot

        if args.robots < 1 or not 0.0 <= args.overlap < 1.0 or (args.stride is not None and args.stride < 1):
            raise SystemExit("core3d bench multirobot: --robots and --stride must be >= 1 and --overlap in [0, 1)")
        perception = "in_process" if args.perception == "process" else args.perception
        result = multirobot.bench_multirobot(
            robots=args.robots, frames=args.frames or 60, overlap=args.overlap, stride=args.stride or 3,
            rate=args.rate or 15.0, qps=args.qps or 20.0, data=args.data or multirobot.AUTO, voxel=args.voxel,
            perception=perception, config=args.config, workdir=args.workdir,
        )
        print(multirobot.summary(result), file=sys.stderr)
    elif args.what == "online":
        from .tools.bench.online import bench_online

        result = bench_online(
            data=args.data, frames=args.frames or 400, rate=args.rate or 15.0, segmenter=args.segmenter,
            encoder=args.encoder, random_weights=args.random_weights, qps=args.qps or 10.0,
            config=args.config, workdir=args.workdir,
        )
        print(
            f"online: {result['frames_integrated']}/{result['frames_published']} frames integrated, "
            f"{result['keyframes_inferred']} keyframes inferred (inference p50 {result['keyframe_inference_s_p50']:.1f} s, "
            f"p95 {result['keyframe_inference_s_p95']:.1f} s over {result['keyframe_inference_over']}), "
            f"{result['keyframes_dropped']} dropped; staleness p50 {result['staleness_s_p50']:.2f} s, "
            f"p95 {result['staleness_s_p95']:.2f} s with {result['late_drops']} late drops (target 0) included; "
            f"{result['observation_bytes_per_keyframe']:.0f} bytes/keyframe; query p99 {result['query_p99_ms_during_mapping']:.1f} ms",
            file=sys.stderr,
        )
    else:
        from .tools.bench.query import bench_query

        result = bench_query(args.objects, repeats=args.repeats or 200)
    _write_json(args.json, result)
    return 0


STRESS_BENCHES = ("soak", "fuzz", "load", "kill")


def _stress_bench(args) -> dict:
    """soak / fuzz / load / kill: the mapping node in its own process (core3d_ros.tools.bench)."""
    from .tools.bench import fuzz, kill, load, soak

    common = {"config": args.config, "workdir": args.workdir}
    graph = {"perception": args.perception}
    if args.what == "soak" and args.change:
        r = soak.bench_soak_change(laps=args.laps or 12, frames=args.frames or 30, config=args.config, progress=_progress("lap"))
        print(
            f"soak --change: {r['laps']} laps; after {r['warmup_laps']} warm-up laps RSS {r['rss_slope_mb_per_lap']:+.2f} MB/lap, "
            f"live map {r['live_map_slope_mb_per_lap']:+.2f} MB/lap, rows in use {r['rows_used_growth_after_warmup']:+d} "
            f"(live voxels {r['live_voxels_growth_after_warmup']:+d}); RSS follows the live map: {r['rss_follows_live_map']}"
        )
    elif args.what == "soak":
        r = soak.bench_soak(frames=args.frames or 10000, rate=args.rate or 20.0, data=args.data, **graph, **common)
        growth = r["rss_growth_last_over_second"]
        print(
            f"soak: {r['frames_published']} frames, {r['node']['mapped']} mapped, {r['node']['dropped']} dropped; "
            f"RSS {r['rss_mb'][1]['rss_mb']:.0f} MB at 2/10, {r['rss_mb'][-1]['rss_mb']:.0f} MB at 10/10 "
            f"({growth * 100:+.1f} %); {r['exceptions']['log_error_lines']} error lines"
        )
    elif args.what == "fuzz":
        r = fuzz.bench_fuzz(sets=args.sets, rate=args.rate or 100.0, classes=args.classes, **graph, **common)
        print(
            f"fuzz: {r['sets_sent']} malformed sets, {r['mapped_malformed']} mapped; rejected "
            + ", ".join(f"{k} {v}" for k, v in r["rejected_by_reason"].items())
            + f"; all services answered: {r['all_services_answered']}"
        )
    elif args.what == "load":
        r = load.bench_load(
            qps=args.qps or 50.0, frames=args.frames or 300, rate=args.rate or 15.0, data=args.data or load.AUTO,
            width=640, height=480, voxel=args.voxel, query_node=args.query_node, **graph, **common,
        )
        q, w = r["query_ms"], r["while_mapping"]
        print(
            f"load ({args.perception}{', query node' if args.query_node else ''}; {r['source']}; {r['image_size'][0]}x{r['image_size'][1]} at {r['rate_hz']:g} Hz): "
            f"while mapping {w['scheduled']} queries due at {r['qps_target']:g}/s, {w['answered']} answered "
            f"({w['qps_achieved']:.1f}/s achieved), {w['timed_out']} timed out; from scheduled send (open loop, "
            f"timeouts at {r['query_timeout_s']:g} s): p50 {q['p50']:.1f} ms, p99 {q['p99']:.1f} ms, max {q['max']:.1f} ms "
            f"(from actual send: p99 {r['query_ms_from_send']['p99']:.1f} ms); frames lost "
            f"{r['frames_lost_without_queries']} without queries, {r['frames_lost_with_queries']} with"
            + (
                f"; mirror staleness p50 {r['mirror_staleness_s']['p50']:.3f} s, p95 {r['mirror_staleness_s']['p95']:.3f} s"
                if r["mirror_staleness_s"] else ""
            )
            + f"; stream {r['stream_bytes_per_s_measured'] / 1e3:.1f} kB/s"
        )
    else:
        r = kill.bench_kill(trials=args.trials, frames=args.frames or 60, data=args.data, **common)
        print(
            f"kill: {len(r['trials'])} trials, {r['killed_mid_write']} killed mid-write; all load: {r['all_load']}; "
            f"previous intact: {r['previous_intact_when_killed_mid_write']}; temporary files left: {r['temp_files_left']}"
        )
    return r


def cmd_play(args) -> int:
    from .tools.player import main as player_main

    return player_main(args.player_args)


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="core3d", description="Online open-vocabulary 3-D mapping (ROS 2)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="map a synthetic room over real ROS 2 topics, save it, draw it, query it")
    d.add_argument("--out", default="out/demo", help="folder for map.npz, map.png, map.ply")
    d.add_argument("--frames", type=int, default=48)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--config", help="YAML config (nested or ROS parameters file)")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("map", help="map a dataset folder offline")
    m.add_argument("data", help="dataset folder (7-Scenes, 3DMatch, TUM, Replica, ScanNet) or 'synthetic[:SEED]'")
    m.add_argument("--kind", default="auto")
    m.add_argument(
        "--sequence",
        help="one seq-NN folder of a 3DMatch / 7-Scenes scene folder; without it, each sequence is "
        "mapped in turn into OUT/SEQ",
    )
    m.add_argument("--frames", type=int, default=None, help="use at most this many frames")
    m.add_argument("--stride", type=int, default=1, help="use every n-th frame")
    m.add_argument("--all-frames", action="store_true", help="fuse every frame, not only keyframes")
    m.add_argument("--segmenter", help="override segmenter.name")
    m.add_argument("--config")
    m.add_argument("--out", default="out/map")
    m.set_defaults(func=cmd_map)

    q = sub.add_parser("query", help="ask a saved map a natural-language question")
    q.add_argument("map", help="map file (.npz)")
    q.add_argument("text")
    q.add_argument("--top-k", type=int, default=None)
    q.add_argument("--config")
    q.add_argument("--json", action="store_true", help="print the answer as JSON")
    q.add_argument("--llm-url", help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1): run the model steps")
    q.add_argument("--llm-model", help="model name on that endpoint (retrieval.llm.model)")
    q.set_defaults(func=cmd_query)

    e = sub.add_parser("eval", help="3-D instance metrics on the synthetic room")
    e.add_argument("--segmenters", nargs="+", default=None, help="default: oracle geometric (with --ablation: geometric)")
    e.add_argument("--ablation", action="store_true", help="switch each component off in turn and tabulate the metrics")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="scenes evaluated; the mean over them is reported (targets are judged on it)")
    e.add_argument("--seed", type=int, default=None, help="one seed only (the ablation's scene; default 0 there)")
    e.add_argument("--frames", type=int, default=60)
    e.add_argument("--dynamic", action="store_true", help="map the room, remove one object and move another, fly the trajectory again: ghost voxels per pass and static IoU against a run without the change")
    e.add_argument("--remove", nargs="+", default=["sofa"], help="--dynamic: classes taken out of the room after the first pass")
    e.add_argument("--move", nargs="+", default=None, help="--dynamic: CLASS=x,y,z offsets in metres (default mug=-0.6,0,0)")
    e.add_argument("--passes", type=int, default=2, help="--dynamic: flights of the trajectory (the first through the room as generated)")
    e.add_argument("--queries", action="store_true", help="room-object / floor-room-object Recall@1/5 with and without the scene graph, Sr3D-style relation accuracy, LLM context size (oracle segmenter and encoder, a building of synthetic rooms)")
    e.add_argument("--query-rooms", type=int, default=4, help="--queries: rooms of the building of synthetic rooms (2 per floor)")
    e.add_argument("--query-scenes", nargs="+", default=["rooms", "building"], choices=["rooms", "building"], help="--queries: rooms (mapped synthetic rooms placed as a building, --frames each) and/or building (the synthetic two-storey building, --frames-per-room)")
    e.add_argument("--context-objects", type=int, nargs="*", default=[100, 10000], help="--queries: map sizes at which the LLM context per query is measured")
    e.add_argument("--rooms", action="store_true", help="floors and rooms built online on the synthetic two-storey building (oracle segmenter): room IoU, objects in the right room, floors found, after half and all of the walk; update cost")
    e.add_argument("--frames-per-room", type=int, default=24, help="--rooms: frames of the camera's loop in each room")
    e.add_argument("--drift", action="store_true", help="map with injected pose drift, then publish the true keyframe poses as corrections: mean IoU drift-free / drifted / corrected, and the time of a correction")
    e.add_argument("--drift-rate", type=float, default=0.01, help="--drift: translation drift, metres per metre travelled")
    e.add_argument("--drift-yaw", type=float, default=0.5, help="--drift: yaw drift, degrees per metre travelled")
    e.add_argument("--correct-every", type=int, default=15, help="--drift: frames between corrections in the 'partway' run (0: only at the end)")
    e.add_argument("--timing-voxel", type=float, default=0.01, help="--drift: voxel size of the timed correction run (0: none)")
    e.add_argument("--timing-only", action="store_true", help="--drift: only the timed correction run")
    e.add_argument("--config")
    e.add_argument("--json", help="write the report here")
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="benchmarks writing JSON")
    b.add_argument("what", choices=["fusion", "scale", "snapshot", "versions", "semantics", "query", "online", *STRESS_BENCHES, "multirobot"])
    b.add_argument("--voxels", type=int, default=2_000_000, help="scale: grow the map to at least this many voxels")
    b.add_argument("--hierarchy", action="store_true", help="scale: also time the scene-graph work on the same trajectory (TSDF, surface feed per frame, builder update per room)")
    b.add_argument("--data", help="dataset folder (fusion: required; semantics: optional real frame)")
    b.add_argument("--frames", type=int, default=None)
    b.add_argument("--voxel", type=float, default=None)
    b.add_argument("--stride", type=int, default=None, help="fusion: pixel stride (overrides fusion.pixel_stride; 1 = every pixel); multirobot: every n-th frame of the sequence (default 3)")
    b.add_argument("--robots", type=int, default=2, help="multirobot: robots, each mapping its own part of the sequence into its own mapping node")
    b.add_argument("--overlap", type=float, default=0.5, help="multirobot: share of frames consecutive robots have in common")
    b.add_argument("--every", type=int, default=1, help="snapshot: frames between snapshots")
    b.add_argument("--runs", type=int, default=None, help="fusion: whole runs, alternating which side goes first (default 5); the median is reported")
    b.add_argument("--objects", type=int, nargs="+", default=[1000, 10000])
    b.add_argument("--repeats", type=int, default=None, help="default 200; 40 with --llm-delay-ms")
    b.add_argument("--llm-delay-ms", type=float, default=None, help="query: time the model steps against the test chat server replying after this delay")
    b.add_argument("--segmenter", help="override segmenter.name")
    b.add_argument("--encoder", help="online: override embed.name")
    b.add_argument("--random-weights", action="store_true", help="online: the named architectures with random weights, loaded from checkpoints")
    b.add_argument("--rate", type=float, default=None, help="soak/load: frames per second (load default 15); fuzz: sets per second")
    b.add_argument("--change", action="store_true", help="soak: in this process, the synthetic room looped while objects leave, come back and move; RSS against the live map per lap")
    b.add_argument("--laps", type=int, default=None, help="soak --change: laps of the trajectory (default 12; --frames: frames per lap, default 30)")
    b.add_argument("--sets", type=int, default=10000, help="fuzz: malformed message sets")
    b.add_argument("--classes", nargs="+", default=None, help="fuzz: only these malformation classes")
    b.add_argument("--qps", type=float, default=None, help="load: queries per second while mapping, sent on a fixed schedule (open loop; default 50); online: default 10")
    b.add_argument(
        "--perception", choices=("process", "in_process"), default="process",
        help="soak/fuzz/load: the perception node in a process of its own (as the launch file starts it) or in the mapping node's (multirobot: always in the mapping node's)",
    )
    b.add_argument(
        "--query-node", action=argparse.BooleanOptionalAction, default=True,
        help="load: queries go to core3d-query-node in a process of its own (from the map stream), as the launch file "
        "starts it (the default); --no-query-node: to the mapping node itself",
    )
    b.add_argument("--trials", type=int, default=7, help="kill: save_map calls killed")
    b.add_argument("--workdir", help="soak/fuzz/load/kill: keep node logs and maps here (default: a removed temp dir)")
    b.add_argument("--config")
    b.add_argument("--json", help="write results here (default: print)")
    b.set_defaults(func=cmd_bench)

    pl = sub.add_parser("play", help="publish a dataset as ROS 2 topics (optionally into a rosbag2)")
    pl.add_argument("player_args", nargs=argparse.REMAINDER, help="DATASET [--rate HZ] [--bag PATH] ... (see --help)")
    pl.set_defaults(func=cmd_play)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"core3d: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # dataset, map-file and model errors carry a clear message
        print(f"core3d {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
