"""``core3d bench kill``: SIGKILL while the node writes a map over a previous one; the file at that
path must still load, and no temporary file may be taken for a map."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ...config import load_config
from .common import machine_info
from .frames import frames_pool
from .graph import NodeProcess, Peer, bench_workdir, pick_domain_id


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _temp_files(target: Path) -> list[str]:
    """Files beside ``target`` other than it that a writer of ``target`` may have left."""
    if not target.parent.is_dir():
        return []
    stem = target.name
    return sorted(p.name for p in target.parent.iterdir() if p.name != stem and stem in p.name)


def bench_kill(
    trials: int = 7,
    frames: int = 60,
    rate: float = 10.0,
    data: str | None = None,
    seed: int = 0,
    width: int = 320,
    height: int = 240,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
) -> dict:
    """SIGKILL the node while save_map overwrites a previous map; the file must still load.

    A first node maps ``frames`` frames and saves them (the source map). Each trial starts a
    node, saves its empty map to the target (the previous file), loads the source, calls
    save_map to the same target again and SIGKILLs the node: trial 0 as soon as the writer's
    temporary file appears (surely mid-write), the others after a delay spread over the
    measured save time of the source map.
    """
    from ...core.mapio import load_map
    from ..player import publish_dataset

    cfg = load_config(config)
    frame_pool, source_desc = frames_pool(data, frames, seed, width, height, cfg)
    wd, own = bench_workdir(workdir, "kill")
    domain = domain_id if domain_id is not None else pick_domain_id()
    tag = f"stress_kill_{os.getpid()}"
    results: list[dict] = []
    # 1. map a scene and save it
    # inline: the frames' masks are fused before the node reports them processed, so the map
    # saved next holds them (with a perception node they could still be on their way)
    node = NodeProcess(wd, domain, {"keyframes.enabled": "false", "ros.perception": "inline"}, config=config, name="node_mapper")
    peer = Peer(domain)
    try:
        if not peer.wait_for_services(90.0):
            raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
        result = publish_dataset(frame_pool, rate, cfg.ros, reliable=True, context=peer.ctx,
                                 wait_for_subscribers=30.0, progress=progress, node_name="core3d_stress_player")
        peer.wait_settled(result.frames, 60.0 + frames * 0.5)
        mapped = peer.counters()
        resp, dt = peer.call("save_map", peer.request("save_map", path=f"{tag}_source.npz"), timeout=120.0)
        if not resp.success:
            raise RuntimeError(f"save_map failed: {resp.message}")
        source_rel = resp.path
    finally:
        peer.close()
        node.stop()
    source = wd / source_rel
    size_mb = source.stat().st_size / 2**20
    save_s = dt
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9, 1.5, 0.05, 0.2, 0.4, 0.6, 0.8]  # 1.5: after the save
    for k in range(trials):
        node = NodeProcess(wd, domain, config=config, name=f"node_trial{k}")
        peer = Peer(domain)
        trial: dict[str, Any] = {"trial": k}
        try:
            if not peer.wait_for_services(90.0):
                raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
            # the previous file: the node's map before it loads the scene (empty), so that the
            # previous and the new file always differ
            r, _ = peer.call("save_map", peer.request("save_map", path=f"{tag}_target.npz"), timeout=120.0)
            if not r.success:
                raise RuntimeError(f"save_map failed: {r.message}")
            target = wd / r.path
            previous = _sha256(target)
            # what the last trial's kill left beside the target, after this save: nothing
            trial["temp_files_after_next_save"] = _temp_files(target)
            lr, _ = peer.call("load_map", peer.request("load_map", path=source_rel), timeout=120.0)
            if not lr.success:
                raise RuntimeError(f"load_map failed: {lr.message}")
            mode = "on_temp_file" if k == 0 else "delay"
            delay = 0.0 if k == 0 else fractions[(k - 1) % len(fractions)] * save_s
            future = peer.call_async("save_map", peer.request("save_map", path=r.path))
            t0 = time.perf_counter()
            temp_seen = False
            if mode == "on_temp_file":
                for attempt in range(5):  # noqa: B007 (the count is read after the loop)
                    deadline = t0 + max(10.0, 5 * save_s)
                    while time.perf_counter() < deadline and not future.done():
                        if _temp_files(target):
                            temp_seen = True
                            break
                        time.sleep(0.0005)
                    if temp_seen or not future.done():
                        break
                    # The write fell between two polls (this process was not scheduled for the
                    # few ms it takes): its file is now the previous one; save again.
                    previous = _sha256(target)
                    future = peer.call_async("save_map", peer.request("save_map", path=r.path))
                    t0 = time.perf_counter()
                trial["saves_until_temp_file_seen"] = attempt + 1
            else:
                while time.perf_counter() - t0 < delay:
                    time.sleep(0.0005)
                temp_seen = bool(_temp_files(target))
            killed_after = time.perf_counter() - t0
            answered_before_kill = future.done()
            node.kill()
            left = _temp_files(target)
            now = _sha256(target)
            try:
                omap = load_map(target, cfg.fusion)
                loads, load_error, voxels = True, "", omap.num_voxels
            except Exception as e:  # MapFileError and anything else: the figure to report
                loads, load_error, voxels = False, f"{type(e).__name__}: {e}", 0
            trial.update({
                "mode": mode,
                "planned_delay_ms": delay * 1e3,
                "killed_after_ms": killed_after * 1e3,
                "temp_file_at_kill": temp_seen,
                "save_answered_before_kill": answered_before_kill,
                "file": "previous" if now == previous else ("new" if now is not None else "missing"),
                "loads": loads,
                "load_error": load_error,
                "voxels": voxels,
                "temp_files_left": left,
                "temp_file_picked_by_load": any(n.endswith(".npz") for n in left),
            })
        finally:
            peer.close()
            if node.alive():
                node.kill()
        # a killed writer's temporary file stays: clear it, the next trial starts clean
        for name in trial.get("temp_files_left", []):
            (wd / name).unlink(missing_ok=True)
        results.append(trial)
        if progress:
            print(f"kill trial {k}: {trial.get('mode')} after {trial.get('killed_after_ms', 0):.1f} ms, "
                  f"file {trial.get('file')}, loads {trial.get('loads')}, temp left {len(trial.get('temp_files_left', []))}",
                  file=sys.stderr)
    out = {
        "bench": "kill",
        "source": source_desc,
        "frames_mapped": mapped["mapped"],
        "map_mb": size_mb,
        "map_voxels": load_map(source, cfg.fusion).num_voxels,
        "save_ms": save_s * 1e3,
        "trials": results,
        "killed_mid_write": sum(1 for r in results if r["temp_file_at_kill"] and not r["save_answered_before_kill"]),
        "all_load": all(r["loads"] for r in results),
        "previous_intact_when_killed_mid_write": all(
            r["file"] == "previous" for r in results if r["temp_file_at_kill"] and not r["save_answered_before_kill"]
        ),
        "temp_files_left": sum(len(r["temp_files_left"]) for r in results),
        # a killed writer's temporary file is removed by the next save of the same map
        "temp_files_left_after_next_save": sum(len(r.get("temp_files_after_next_save", [])) for r in results),
        "temp_file_picked_by_load": any(r["temp_file_picked_by_load"] for r in results),
        "workdir": str(wd) if not own else None,
        "machine": machine_info(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out
