"""``core3d bench soak``: many valid frames (a pre-rendered synthetic room or real frames, looped)
through the graph; the mapping node's RSS at each tenth, growth of the last tenth over the
second, errors. ``--change`` (:func:`bench_soak_change`): in this process, the synthetic room
looped lap after lap while objects leave, come back and move; RSS against the live map per lap."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ...config import MapperConfig, load_config
from .common import machine_info
from .frames import Looped, frames_pool
from .graph import MappingGraph, NodeProcess, Peer, bench_workdir, errors_seen, pick_domain_id, rss_mb


def _soak_sample(tenth: int, published: int, node: NodeProcess, peer: Peer) -> dict:
    return {
        "tenth": tenth,
        "frames_published": published,
        "rss_mb": node.rss_mb(),
        "mapped": peer.diag.get("frames_processed"),
        "dropped": peer.diag.get("frames_dropped"),
        "objects": peer.diag.get("objects"),
    }


def _map_voxels(path: Path, cfg: MapperConfig) -> int | None:
    from ...core.mapio import load_map

    try:
        return load_map(path, cfg.fusion).num_voxels
    except Exception:  # the figure is informative only; a bad file shows as null
        return None


def bench_soak(
    frames: int = 10000,
    rate: float = 20.0,
    data: str | None = None,
    pool: int = 60,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
    perception: str = "process",
) -> dict:
    """``frames`` valid frames at ``rate`` Hz through the graph (``perception``: see
    MappingGraph); the mapping node's RSS at each tenth."""
    from ..player import publish_dataset

    if frames < 10:
        raise ValueError(f"soak needs at least 10 frames (one per tenth), got {frames}")
    cfg = load_config(config)
    frame_pool, source = frames_pool(data, pool, seed, width, height, cfg)
    wd, own = bench_workdir(workdir, "soak")
    domain = domain_id if domain_id is not None else pick_domain_id()
    marks = {int(round(k * frames / 10)): k for k in range(1, 10)}
    samples: list[dict] = []
    node = MappingGraph(wd, domain, config=config, perception=perception)
    peer = Peer(domain)
    try:
        if not peer.wait_for_services(90.0):
            raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
        rss_start = node.rss_mb()

        def sample(i: int) -> None:
            k = marks.get(i)
            if k is not None:
                samples.append(_soak_sample(k, i, node, peer))

        t0 = time.monotonic()
        result = publish_dataset(
            Looped(frame_pool, frames, sample), rate, cfg.ros, reliable=True, context=peer.ctx,
            wait_for_subscribers=30.0, progress=progress, node_name="core3d_stress_player",
        )
        samples.append(_soak_sample(10, result.frames, node, peer))
        settled = peer.wait_settled(result.frames, 60.0 + result.frames * 0.05)
        wall = time.monotonic() - t0
        rss_settled = node.rss_mb()
        counters = peer.counters()
        # what the map holds at the end: growth of the map is not a leak
        saved, _ = peer.call("save_map", peer.request("save_map", path="soak_final.npz"), timeout=120.0)
        map_voxels = _map_voxels(wd / saved.path, cfg) if saved.success else None
        alive = node.alive()
        exc = errors_seen(node, peer)
    finally:
        peer.close()
        code = node.stop()
    second, last = samples[1]["rss_mb"], samples[-1]["rss_mb"]
    growth = (last - second) / second
    out = {
        "bench": "soak",
        "perception": perception,
        "source": source,
        "frames_requested": frames,
        "frames_published": result.frames,
        "rate_hz": rate,
        "wall_s": wall,
        "settled": settled,
        "rss_start_mb": rss_start,
        "rss_mb": samples,
        "rss_settled_mb": rss_settled,
        "rss_growth_last_over_second": growth,
        "objects_growth_last_over_second": (samples[-1]["objects"] - samples[1]["objects"]) / max(samples[1]["objects"], 1),
        "map_voxels_at_end": map_voxels,
        "rss_ok": bool(growth <= 0.10),
        "lost_in_transport": max(result.frames - counters["received"], 0),
        # more colour frames than sent: another publisher on this ROS_DOMAIN_ID
        "foreign_frames": max(counters["received"] - result.frames, 0),
        "dropped_fraction": counters["dropped"] / max(counters["received"], 1),
        "node": counters,
        "exceptions": exc,
        "exceptions_ok": exc["log_error_lines"] == 0 and exc["rejected_error"] == 0 and alive and code == 0,
        "node_alive_at_end": alive,
        "node_exit_code": code,
        "workdir": str(wd) if not own else None,
        "machine": machine_info(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out


# ------------------------------------------------------------------ a room that changes every lap

CHANGE_REMOVE = "sofa"  # taken away on odd laps, put back on even ones
CHANGE_MOVE = "chair"  # at another place every lap (CHANGE_PLACES places along x, then round again)
CHANGE_PLACES = 6
CHANGE_STEP_M = 0.5
RSS_SLOPE_TOLERANCE_MB = 1.0  # per lap, beyond the live map's own slope
ROWS_GROWTH_TOLERANCE = 0.01  # of the rows in use after warm-up (voxels at places not seen before)


def change_lap(k: int) -> tuple[list[str], dict[str, tuple[float, float, float]]]:
    """(remove, move) of lap ``k`` (lap 0: the room as generated): the sofa is away on odd laps;
    the chair stands ``CHANGE_STEP_M`` further along x each lap (lap 1 at -1.5 m from its place,
    then -1, -0.5, 0, 0.5 and 1 m, and round again)."""
    if k == 0:
        return [], {}
    dx = ((k - 1) % CHANGE_PLACES) * CHANGE_STEP_M - CHANGE_STEP_M * CHANGE_PLACES / 2
    return ([CHANGE_REMOVE] if k % 2 else []), {CHANGE_MOVE: (float(dx), 0.0, 0.0)}


def _slope(y: list[float]) -> float:
    return float(np.polyfit(np.arange(len(y), dtype=np.float64), np.asarray(y, np.float64), 1)[0]) if len(y) >= 2 else 0.0


CHANGE_OVERRIDES = {"fusion": {"free_interval": 1}}  # a short lap gives free space few looks: look in every frame


def bench_soak_change(
    laps: int = 12,
    frames: int = 30,
    warmup: int = 3,
    seed: int = 0,
    width: int = 160,
    height: int = 120,
    config: str | None = None,
    overrides: dict | None = None,
    progress: Callable | None = None,
) -> dict:
    """``core3d bench soak --change``: in this process, the synthetic room's looped trajectory
    (``frames`` per lap, oracle masks, every frame fused through the Mapper) flown ``laps``
    times while the room changes each lap (:func:`change_lap`: an object taken away and put
    back, another moved to another place; ``overrides``: config sections, CHANGE_OVERRIDES by
    default). After each lap: this process's RSS, the map's live
    voxels, rows in use, objects, and the bytes it holds against those its live part needs.

    "RSS follows the live map" (``rss_follows_live_map``) holds when, over the laps after
    ``warmup``: (1) the RSS slope (least squares, MiB per lap) exceeds the live map's own slope
    by at most RSS_SLOPE_TOLERANCE_MB, and (2) the rows in use grow by at most
    ROWS_GROWTH_TOLERANCE of those in use at the end of the warm-up. Rows in use are the peak
    of the live voxels (a new row is handed out only when none is free); a map that keeps the
    rows of every place an object stood grows by the moved object's voxels at each new place
    (about 1.5 % per lap here) and fails (2)."""
    from ...config import with_overrides
    from ...core.datasets import make_scene
    from ...core.mapper import Mapper
    from ..dynamic import _Pass
    from ..runs import map_frames

    if laps < warmup + 2:
        raise ValueError(f"soak --change needs at least warm-up + 2 laps ({warmup + 2}), got {laps}")
    overrides = CHANGE_OVERRIDES if overrides is None else overrides
    cfg = with_overrides(load_config(config), segmenter={"name": "oracle"}, keyframes={"enabled": False}, **overrides)
    mapper = Mapper(cfg)
    samples: list[dict] = []
    rss_start = rss_mb(os.getpid())
    t0 = time.monotonic()
    for k in progress(range(laps)) if progress else range(laps):
        remove, move = change_lap(k)
        scene = make_scene(seed=seed, num_frames=frames, width=width, height=height, remove=remove, move=move)
        run = map_frames(mapper, _Pass(scene, k))
        with mapper._lock:
            report = mapper.map.memory_report()
        samples.append({"lap": k, "removed": remove, "moved": {n: list(v) for n, v in move.items()}, "rss_mb": rss_mb(os.getpid()),
                        "frames_fused": run.processed, **report})
    after = samples[warmup:]
    mb = 1.0 / 2**20
    rss_slope = _slope([s["rss_mb"] for s in after])
    live_slope = _slope([s["live_bytes"] * mb for s in after])
    rows_growth = after[-1]["rows_used"] - after[0]["rows_used"]
    live_growth = after[-1]["live_voxels"] - after[0]["live_voxels"]
    rss_ok = rss_slope <= max(live_slope, 0.0) + RSS_SLOPE_TOLERANCE_MB
    rows_ok = rows_growth <= ROWS_GROWTH_TOLERANCE * after[0]["rows_used"]
    return {
        "bench": "soak_change",
        "laps": laps,
        "frames_per_lap": frames,
        "warmup_laps": warmup,
        "image_size": [width, height],
        "voxel_size": cfg.fusion.voxel_size,
        "overrides": overrides,
        "change": {"removed_on_odd_laps": CHANGE_REMOVE, "moved_each_lap": CHANGE_MOVE, "places": CHANGE_PLACES, "step_m": CHANGE_STEP_M},
        "wall_s": time.monotonic() - t0,
        "rss_start_mb": rss_start,
        "per_lap": samples,
        "rss_slope_mb_per_lap": rss_slope,
        "live_map_slope_mb_per_lap": live_slope,
        "rows_used_growth_after_warmup": int(rows_growth),
        "live_voxels_growth_after_warmup": int(live_growth),
        "rss_minus_start_mb_at_end": samples[-1]["rss_mb"] - rss_start,
        "map_held_mb_at_end": samples[-1]["held_bytes"] * mb,
        "map_live_mb_at_end": samples[-1]["live_bytes"] * mb,
        "rss_follows_live_map": bool(rss_ok and rows_ok),
        "rss_follows_live_map_definition": (
            f"after {warmup} warm-up laps: RSS slope <= max(live-map slope, 0) + {RSS_SLOPE_TOLERANCE_MB} MiB per lap, "
            f"and rows in use (the peak of live voxels) grow by at most {ROWS_GROWTH_TOLERANCE:.0%} of those in use after warm-up"
        ),
        "machine": machine_info(),
    }
