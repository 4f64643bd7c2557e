"""``core3d bench soak``: many valid frames (a pre-rendered synthetic room or real frames, looped)
through the graph; the mapping node's RSS at each tenth, growth of the last tenth over the
second, errors."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ...config import MapperConfig, load_config
from .common import machine_info
from .frames import Looped, frames_pool
from .graph import MappingGraph, NodeProcess, Peer, bench_workdir, errors_seen, pick_domain_id


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
