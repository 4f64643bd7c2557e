"""``core3d demo``: the whole system on a synthetic room, over real ROS 2 topics and services.

1. Starts the mapping node in its own process, as a robot would (``python -m core3d_ros.ros.node``).
2. Replays the synthetic room (colour, depth, camera info, pose) on the node's input topics.
3. Waits until the node has mapped every frame (read from its /diagnostics).
4. Saves the map through ``core3d/save_map``; draws a top-down PNG and writes a PLY.
5. Asks ``core3d/query`` a few questions and prints the ranked answers, then a bad one.
6. Compares the map with the scene's ground truth and prints a short summary.

Without pretrained CLIP weights (``embed.pretrained`` or ``embed.checkpoint``) the node has no
semantic encoder: the demo says so and asks what geometry and colour can answer.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..config import MapperConfig, load_config

QUERIES = [
    "the largest object",
    "the red object",
    "the yellow thing on the biggest object",
    "the smallest blue object",
    "the object closest to me",
]
BAD_QUERIES = ["", "the " * 200, "!!!???"]


def _node_command(cfg_path: str | None, overrides: dict[str, str]) -> list[str]:
    cmd = [sys.executable, "-m", "core3d_ros.ros.node"]
    if cfg_path:
        cmd += ["--config", cfg_path]
    cmd += ["--ros-args", "--log-level", "warn"]
    for k, v in overrides.items():
        cmd += ["-p", f"{k}:={v}"]
    return cmd


class _Diagnostics:
    """Latest key/values of the node's /diagnostics."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray

        self.values: dict[str, str] = {}
        self._lock = threading.Lock()
        node.create_subscription(DiagnosticArray, "/diagnostics", self._cb, 10)

    def _cb(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("core3d_mapping"):
                with self._lock:
                    self.values = {kv.key: kv.value for kv in status.values}

    def get(self, key: str, default: int = 0) -> int:
        with self._lock:
            try:
                return int(float(self.values.get(key, default)))
            except ValueError:
                return default


def _call(node, client, request, timeout: float = 30.0):
    import rclpy

    if not client.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"service {client.srv_name} did not appear within {timeout:.0f} s")
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        raise RuntimeError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
    return future.result()


def _ground_truth_names(scene, snapshot) -> dict[int, str]:
    """For each map object, the class of the true object its box centre falls in (for display)."""
    names = {}
    for o in snapshot.objects:
        inside = [s for s in scene.instances if np.all(np.abs(o.box.center - s.center) <= s.size / 2 + 0.05)]
        names[o.id] = min(inside, key=lambda s: float(np.prod(s.size))).class_name if inside else "?"
    return names


def run_demo(out: str = "out/demo", frames: int = 48, seed: int = 0, config: str | None = None, rate: float = 4.0) -> int:
    import rclpy

    from ..core.datasets import make_scene
    from ..core.mapio import load_map
    from ..tools.runs import evaluate_mapper
    from ..tools.viz import write_ply, write_topdown_png
    from .player import publish_dataset

    cfg: MapperConfig = load_config(config)
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(seed=seed, num_frames=frames)
    print(f"core3d demo: synthetic room (seed {seed}), {len(scene)} frames, {len(scene.objects)} objects of furniture")

    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))  # keep the demo to itself
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    overrides = {
        "ros.qos_reliability": "reliable",
        "ros.publish_period": "0.5",
        "keyframes.enabled": "false",
        "ros.maps_dir": str(out_dir),  # save_map writes only inside the maps directory
    }
    node_proc = subprocess.Popen(_node_command(config, overrides), env=env)
    print(f"started the mapping node (pid {node_proc.pid}); segmenter '{cfg.segmenter.name}', encoder '{cfg.embed.name}'")

    rclpy.init()
    node = rclpy.create_node("core3d_demo")
    try:
        from core3d.srv import Query, SaveMap

        diag = _Diagnostics(node)
        save = node.create_client(SaveMap, "core3d/save_map")
        query = node.create_client(Query, "core3d/query")
        if not query.wait_for_service(timeout_sec=60.0):
            raise RuntimeError("the mapping node did not come up (no core3d/query service after 60 s)")

        print(f"replaying {len(scene)} frames at {rate:g} Hz on the node's topics ...")
        result = publish_dataset(scene, rate, cfg.ros, reliable=True, wait_for_subscribers=30.0, progress=True)
        deadline = time.monotonic() + 60.0 + 2.0 * len(scene)
        done = 0
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.25)
            done = diag.get("frames_processed") + diag.get("frames_rejected") + diag.get("frames_dropped")
            if done >= result.frames and diag.get("work_queue_length") == 0:
                break
        print(
            f"node: {diag.get('frames_received')} frames received, {diag.get('frames_processed')} mapped, "
            f"{diag.get('frames_dropped')} dropped, {diag.get('frames_rejected')} rejected; {diag.get('objects')} objects"
        )

        reply = _call(node, save, SaveMap.Request(path=str(out_dir / "map.npz")))
        if not reply.success:
            raise RuntimeError(f"save_map failed: {reply.message}")
        omap = load_map(reply.path, cfg.fusion)
        snap = omap.snapshot(up=cfg.retrieval.up_axis)
        png = write_topdown_png(snap, out_dir / "map.png", up=cfg.retrieval.up_axis)
        ply = write_ply(snap, out_dir / "map.ply")
        truth = _ground_truth_names(scene, snap)

        print("\nqueries through core3d/query:")
        semantic = None
        for text in QUERIES:
            r = _call(node, query, Query.Request(text=text, top_k=3))
            semantic = r.semantic if semantic is None else semantic
            if not r.success:
                print(f"  {text!r}: error: {r.message}")
                continue
            hits = ", ".join(
                f"#{h.object.id} ({truth.get(h.object.id, '?')}) {h.score:.2f}" for h in r.results
            ) or "no match"
            print(f"  {text!r} -> {hits}")
        if semantic is False:
            print(
                "  (no pretrained CLIP weights are loaded, so nouns are not matched: answers come from size, "
                "colour and geometry only. Set embed.name: open_clip with embed.pretrained or embed.checkpoint.)"
            )
        for text in BAD_QUERIES:
            r = _call(node, query, Query.Request(text=text, top_k=3))
            shown = text if len(text) < 20 else text[:17] + "..."
            print(f"  {shown!r} -> {'error: ' + r.message if not r.success else 'accepted'}")

        from ..core.pipeline import Mapper

        mapper = Mapper(cfg, segment=False)
        mapper.map = omap
        metrics = evaluate_mapper(mapper, [scene[i] for i in range(len(scene))])
        m = metrics["objects_only"]
        classes = Counter(truth.values())
        print(
            f"\nmap: {len(snap.objects)} objects, {omap.num_voxels} voxels; against ground truth (furniture): "
            f"mean IoU {m['mean_iou_gt']:.2f}, AP@0.5 {m['ap']:.2f}, recall {m['recall']:.2f}"
        )
        print(f"objects by true class: {dict(sorted(classes.items()))}")
        print(f"wrote {reply.path}\nwrote {png}\nwrote {ply}")
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        node_proc.send_signal(signal.SIGINT)  # the node's clean shutdown path
        try:
            node_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_proc.kill()
