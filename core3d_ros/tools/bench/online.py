"""``core3d bench online``: the perception/mapping graph as a robot runs it, measured.

Two processes (``ros.perception: external``): the mapping node (``python -m core3d_ros.ros.node``)
and the perception node (``python -m core3d_ros.ros.perception_node``), linked only by
``core3d/observations``. This process replays frames on their input topics at ``rate`` Hz and
asks ``core3d/query`` meanwhile; both nodes' ``/diagnostics`` give what happened: frames
integrated at sensor rate, keyframes inferred and dropped (perception takes the newest frame when
it is free), observation size, staleness and keyframe inference times:

- keyframe inference: p50/p95/max over every keyframe of the run, from the perception node's
  window of per-keyframe times (``perception_node.INFERENCE_WINDOW``, 2048 keyframes, far more
  than a run of the default 400 frames infers; ``keyframe_inference_over`` says "all keyframes"
  or, for a longer run, how many of the last ones the figures cover).
- staleness: p50/p95/max over the observations of the run (the mapping node's last 256, all of
  them in a default run; ``staleness_samples`` says how many), late drops included (a late
  observation counts from its frame's arrival to its drop: late_fusion.py), with ``late_drops``
  beside them; the target at the bench's rate is 0.
- the staleness target "p95 <= 2 keyframes": staleness p95 (late drops included) against twice
  the keyframe inference **p50** over all keyframes (``staleness_within_2_keyframes``).

``random_weights``: the named architectures (SAM ``vit_b``; the CLIP ``embed.model``) are built
with random weights and saved to checkpoints that the nodes load through the real loading path,
so inference costs its true time; untrained outputs are never presented as semantic. An untrained
mask generator's masks pass no quality filter, so with random weights the perception node runs
the model on every keyframe for its true time and then fuses the geometric segmenter's masks
(StandInSegmenter; the JSON says so in ``masks_fused_from``).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from ...config import MapperConfig, from_dict, load_config
from .common import machine_info, percentile
from .frames import Looped, frames_pool
from .graph import MappingGraph, Peer, bench_workdir, pick_domain_id

NODES = ("core3d_mapping", "core3d_perception")
MODEL_SEGMENTERS = ("sam", "semantic_sam")


class StandInSegmenter:
    """For benchmarks with random weights: runs ``model`` on every keyframe for its true time,
    then hands on the masks of ``stand_in`` (the weight-free geometric segmenter). An untrained
    generator's masks pass no quality filter, so without this nothing would reach fusion and
    the stages after segmentation would go unmeasured. Never used outside ``core3d bench online``."""

    def __init__(self, model: Any, stand_in: Any):
        self.model, self.stand_in = model, stand_in
        self.name = f"{model.name}+{stand_in.name}_masks"

    def segment(self, frame: Any) -> list:
        self.model.segment(frame)  # its time is paid; its output is not fused
        return self.stand_in.segment(frame)


def _stand_in_perception(config_file: str | None) -> list:
    """The perception node of ``python -m core3d_ros.tools.bench.online``: as core3d-perception-node,
    with the configured model segmenter wrapped in StandInSegmenter."""
    import dataclasses

    from ...core.perception import Perception
    from ...core.segment.base import make_segmenter
    from ...ros.perception_node import own_process

    def build(cfg: MapperConfig) -> Perception:
        geometric = make_segmenter(dataclasses.replace(cfg.segmenter, name="geometric"))
        return Perception(cfg, segmenter=StandInSegmenter(make_segmenter(cfg.segmenter), geometric))

    return own_process(config_file, build)


class _NodeDiagnostics:
    """The latest /diagnostics values of each core3d node, by node name."""

    def __init__(self, node: Any):
        from diagnostic_msgs.msg import DiagnosticArray

        self._lock = threading.Lock()
        self.values: dict[str, dict[str, str]] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._cb, 10)

    def _cb(self, msg: Any) -> None:
        for status in msg.status:
            name = status.name.split(":")[0]
            with self._lock:
                self.values[name] = {kv.key: kv.value for kv in status.values}

    def get(self, node: str, key: str, default: float = 0.0) -> float:
        with self._lock:
            try:
                return float(self.values.get(node, {}).get(key, default))
            except ValueError:
                return default


def _random_checkpoints(cfg: MapperConfig, folder: Path) -> dict[str, Any]:
    """Random-weight checkpoints of the configured architectures; config overrides to load them."""
    import torch

    out: dict[str, Any] = {"segmenter": {}, "embed": {}}
    if cfg.segmenter.name == "sam":
        from segment_anything import sam_model_registry

        path = folder / f"sam_{cfg.segmenter.model_type}_random.pth"
        torch.save(sam_model_registry[cfg.segmenter.model_type](checkpoint=None).state_dict(), path)
        out["segmenter"] = {"checkpoint": str(path), "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    if cfg.embed.name == "open_clip":
        import open_clip

        path = folder / f"clip_{cfg.embed.model}_random.pt"
        torch.save(open_clip.create_model(cfg.embed.model, pretrained=None).state_dict(), path)
        out["embed"] = {"checkpoint": str(path), "pretrained": ""}
    return out


def bench_online(
    data: str | None = None,
    frames: int = 400,
    rate: float = 15.0,
    segmenter: str | None = None,
    encoder: str | None = None,
    random_weights: bool = False,
    points_per_side: int = 8,
    qps: float = 10.0,
    width: int = 640,
    height: int = 480,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
    settle_s: float = 120.0,
) -> dict:
    from ..player import publish_dataset
    from .open_loop import QueryClient

    base = load_config(config)  # checked first: a bad file fails before anything starts
    wd, own = bench_workdir(workdir, "online")
    tree: dict[str, Any] = {"segmenter": {}, "embed": {}, "ros": {"perception": "external"}}
    if segmenter:
        tree["segmenter"]["name"] = segmenter
    if encoder:
        tree["embed"]["name"] = encoder
    cfg_dict = yaml.safe_load(Path(config).read_text()) if config else {}
    cfg_dict = cfg_dict or {}
    for v in cfg_dict.values():  # a ROS parameters file: its first node's parameters
        if isinstance(v, dict) and "ros__parameters" in v:
            cfg_dict = v["ros__parameters"] or {}
            break
    for section, values in tree.items():
        cfg_dict.setdefault(section, {}).update(values)
    if cfg_dict["segmenter"].get("name", base.segmenter.name) in ("sam", "semantic_sam"):
        cfg_dict["segmenter"].setdefault("points_per_side", points_per_side)
    cfg = from_dict(cfg_dict)
    if random_weights:
        for section, values in _random_checkpoints(cfg, wd).items():
            cfg_dict.setdefault(section, {}).update(values)
        cfg = from_dict(cfg_dict)
    cfg_path = wd / "online.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_dict))

    frame_pool, source = frames_pool(data, min(frames, 400), 0, width, height, cfg)
    domain = domain_id if domain_id is not None else pick_domain_id()
    stand_in = random_weights and cfg.segmenter.name in MODEL_SEGMENTERS
    graph = MappingGraph(
        wd, domain, config=str(cfg_path), name="mapping",
        perception_module="core3d_ros.tools.bench.online" if stand_in else "core3d_ros.ros.perception_node",
    )
    mapping, perception = graph.mapping, graph.perception
    peer = Peer(domain)
    diag = _NodeDiagnostics(peer.node)
    client = None
    out: dict[str, Any] = {}
    try:
        if not peer.wait_for_services(120.0):
            raise RuntimeError(f"the mapping node did not come up:\n{mapping.log_text()[-3000:]}")
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and diag.get("core3d_perception", "observation_subscribers") < 1:
            if not perception.alive():
                raise RuntimeError(f"the perception node exited:\n{perception.log_text()[-3000:]}")
            time.sleep(0.2)
        client = QueryClient(domain, qps)  # a planner: a process of its own
        if not client.wait_ready():
            raise RuntimeError("the query client process did not start")
        t_start = time.monotonic()
        result = publish_dataset(
            Looped(frame_pool, frames), rate, cfg.ros, reliable=True, context=peer.ctx,
            wait_for_subscribers=60.0, progress=progress, node_name="core3d_online_player",
        )
        t_end_publish = time.monotonic()
        latencies, failures = client.stop()
        client = None
        # let the last inference finish and its observation be fused (or dropped as late)
        deadline = time.monotonic() + settle_s
        last = None
        while time.monotonic() < deadline:
            state = (
                diag.get("core3d_perception", "keyframes"),
                diag.get("core3d_mapping", "observations_fused"),
                diag.get("core3d_mapping", "frames_processed"),
            )
            if state == last and diag.get("core3d_perception", "frames") + diag.get("core3d_perception", "keyframes_dropped") >= result.frames:
                break
            last = state
            time.sleep(3.0)
        keyframes = diag.get("core3d_perception", "keyframes")
        integrated = diag.get("core3d_mapping", "frames_processed")
        during = [ms for t, ms in latencies if t_start <= t <= t_end_publish]
        nan = float("nan")
        infer_p50_s = diag.get("core3d_perception", "inference_ms_p50", nan) / 1e3
        timed = int(diag.get("core3d_perception", "inference_count"))
        window = int(diag.get("core3d_perception", "inference_window"))
        p95 = diag.get("core3d_mapping", "staleness_s_p95", nan)
        late = int(diag.get("core3d_mapping", "staleness_late_drops"))
        out.update({
            "bench": "online",
            "source": source,
            "config": cfg_dict,
            "random_weights": random_weights,
            # the model ran on every keyframe for its true time; the masks fused were geometric
            "masks_fused_from": "geometric (stand-in for the untrained model)" if stand_in else cfg.segmenter.name,
            "rate_hz": rate,
            "frames_published": result.frames,
            "frames_integrated": int(integrated),
            "integrated_fraction": integrated / max(result.frames, 1),
            "keyframes_inferred": int(keyframes),
            "keyframes_dropped": int(diag.get("core3d_perception", "keyframes_dropped")),
            "keyframes_without_masks": int(diag.get("core3d_perception", "keyframes_without_masks")),
            # every keyframe's inference (masks or none), not only the last one's
            "keyframe_inference_s_p50": infer_p50_s,
            "keyframe_inference_s_p95": diag.get("core3d_perception", "inference_ms_p95", nan) / 1e3,
            "keyframe_inference_s_max": diag.get("core3d_perception", "inference_ms_max", nan) / 1e3,
            "keyframes_timed": timed,
            "keyframe_inference_over": "all keyframes" if window >= timed else f"the last {window} keyframes",
            "observations_fused": int(diag.get("core3d_mapping", "observations_fused")),
            "observations_rejected": {
                k: v for k, v in diag.values.get("core3d_mapping", {}).items() if k.startswith("observations_rejected_")
            },
            # over fused and late-dropped observations alike (late_fusion.py)
            "staleness_s_p50": diag.get("core3d_mapping", "staleness_s_p50", nan),
            "staleness_s_p95": p95,
            "staleness_s_max": diag.get("core3d_mapping", "staleness_s_max", nan),
            "staleness_samples": int(diag.get("core3d_mapping", "staleness_samples")),
            "late_drops": late,  # in the staleness figures above; target 0 at this rate
            "late_drops_target": 0,
            # staleness p95 against twice the keyframe inference p50 over all keyframes
            "staleness_within_2_keyframes": bool(p95 <= 2 * infer_p50_s) if infer_p50_s > 0 and p95 == p95 else None,
            "observation_bytes_per_keyframe": diag.get("core3d_perception", "observation_bytes") / max(keyframes, 1),
            "queries_during_mapping": len(during),
            "query_p50_ms_during_mapping": percentile(during, 50),
            "query_p99_ms_during_mapping": percentile(during, 99),
            # the same queries timed inside the mapping node (its last 256): the executor's
            # dispatch, the transport and the client process account for the difference
            "query_ms_in_node_p50": diag.get("core3d_mapping", "query_ms_p50", float("nan")),
            "query_ms_in_node_p99": diag.get("core3d_mapping", "query_ms_p99", float("nan")),
            "queries_failed": len(failures),
            "errors": {"mapping": mapping.errors()[:5], "perception": perception.errors()[:5]},
            "machine": machine_info(),
        })
    finally:
        if client is not None:
            client.stop()
        peer.close()
        codes = (perception.stop(), mapping.stop())
    out["exit_codes"] = list(codes)
    if own:
        import shutil

        shutil.rmtree(wd, ignore_errors=True)
    return out


if __name__ == "__main__":  # the benchmark's perception node (StandInSegmenter)
    import sys

    from ...ros.runner import exit_now_if_busy, run_nodes

    sys.exit(exit_now_if_busy(run_nodes(None, prog="core3d_perception", build=_stand_in_perception)))
