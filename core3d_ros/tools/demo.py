"""``core3d demo``: the whole system on a synthetic room, over real ROS 2 topics and services.

1. Starts the mapping node in its own process, as a robot would (``python -m core3d_ros.ros.node``).
2. Replays the synthetic room (colour, depth, camera info, pose) on the node's input topics.
3. Waits until the node has mapped every frame (read from its /diagnostics).
4. Saves the map through ``core3d/save_map``; draws a top-down PNG and writes a PLY.
5. Asks ``core3d/query`` a few questions and prints the ranked answers, then a bad one.
6. Compares the map with the scene's ground truth and prints a short summary.

Without pretrained CLIP weights (``embed.pretrained`` or ``embed.checkpoint``) the node has no
semantic encoder: the demo says so and asks what geometry and colour can answer.

Each step that can take a while is announced on stderr (``[demo  12.3 s] waiting for ...``), with
a ``still ...`` line every few seconds while it lasts (core3d_ros/progress.py); the results go to
stdout. The node's own start-up steps (fusion kernels, models) appear as its INFO log lines.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import MapperConfig, load_config, up_vector
from ..progress import Phase, Progress
from .nodes import QUERIES, Diagnostics, node_command

BAD_QUERIES = ["", "the " * 200, "!!!???"]
NODE_START_TIMEOUT = 180.0  # s; a first run compiles the fusion kernels on a busy 2-core machine


def _call(node, client, request, timeout: float = 30.0):
    import rclpy

    if not client.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"service {client.srv_name} did not appear within {timeout:.0f} s")
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        raise RuntimeError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
    return future.result()


def _wait_for_node(node_proc: subprocess.Popen, client, progress: Progress, timeout: float = NODE_START_TIMEOUT) -> None:
    """Wait until the node serves ``client``'s service; fail at once if the node process ends."""
    with progress.phase(f"waiting for the mapping node's {client.srv_name} service: its start-up, then DDS discovery"):
        deadline = time.monotonic() + timeout
        while not client.wait_for_service(timeout_sec=0.5):
            if node_proc.poll() is not None:
                raise RuntimeError(f"the mapping node exited with code {node_proc.returncode} before it came up (its log is above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the mapping node did not come up (no {client.srv_name} service after {timeout:.0f} s)")


def _wait_for_subscribers(
    node, node_proc: subprocess.Popen, wanted: dict[str, int], progress: Progress, timeout: float = NODE_START_TIMEOUT
) -> None:
    """Wait until each input topic has ``wanted[topic]`` subscribers: the mapping node's, and the
    perception node's where it runs in the node process (it starts after the mapping node's
    services are up, and loading its models can take minutes)."""
    what = "the nodes" if max(wanted.values()) > 1 else "the node"
    with progress.phase(f"waiting for {what} to subscribe to the input topics: models, DDS discovery") as p:
        deadline, missing = time.monotonic() + timeout, list(wanted)
        while time.monotonic() < deadline:
            missing = [t for t, n in wanted.items() if node.count_subscribers(t) < n]
            if not missing:
                return
            if node_proc.poll() is not None:
                raise RuntimeError(f"the mapping node exited with code {node_proc.returncode} (its log is above)")
            p.detail = f"waiting on {', '.join(missing)}"
            time.sleep(0.1)
        progress.say(f"{', '.join(missing)}: still not all subscribers after {timeout:.0f} s; publishing anyway")


def _wait_until_mapped(
    spin: Callable[[], None], diag: Diagnostics, published: int, phase: Phase, timeout: float, quiet: float = 3.0
) -> None:
    """Spin until the node has accounted for every published frame (mapped, dropped or rejected)
    and its work queue is empty. Frames that never reached the node (published before its
    subscriptions matched the player) would hold that up until ``timeout``: once the node has
    accounted for every frame it did receive and its counters have not moved for ``quiet``
    seconds, the wait ends too. ``spin()`` handles the demo node's callbacks for a moment."""
    deadline = time.monotonic() + timeout
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        spin()
        received, queued = diag.get("frames_received"), diag.get("work_queue_length")
        done = diag.get("frames_processed") + diag.get("frames_rejected") + diag.get("frames_dropped")
        phase.detail = f"{done}/{published} frames done, {queued} queued"
        if done >= published and queued == 0:
            return
        now, state = time.monotonic(), (received, done, diag.get("objects"))
        if state != last:
            last, still_since = state, now
        elif received and done >= received and queued == 0 and now - still_since >= quiet:
            return


def _ground_truth_names(scene, snapshot) -> dict[int, str]:
    """For each map object, the class of the true object its box centre falls in (for display)."""
    names = {}
    for o in snapshot.objects:
        inside = [s for s in scene.instances if np.all(np.abs(o.box.center - s.center) <= s.size / 2 + 0.05)]
        names[o.id] = min(inside, key=lambda s: float(np.prod(s.size))).class_name if inside else "?"
    return names


def run_demo(out: str = "out/demo", frames: int = 48, seed: int = 0, config: str | None = None, rate: float = 4.0) -> int:
    progress = Progress("demo")
    with progress.phase("loading ROS 2 and the mapping code"):
        import rclpy

        from ..core.datasets import make_scene
        from ..core.mapio import load_map
        from .runs import evaluate_mapper
        from .viz import write_ply, write_topdown_png
        from .player import FrameMessages, publish_dataset

    cfg: MapperConfig = load_config(config)
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with progress.phase(f"making the synthetic room ({frames} frames)"):
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
    progress.say("starting the mapping node")
    node_proc = subprocess.Popen(node_command(config, overrides), env=env)
    print(f"started the mapping node (pid {node_proc.pid}); segmenter '{cfg.segmenter.name}', encoder '{cfg.embed.name}'")

    rclpy.init()
    node = rclpy.create_node("core3d_demo")
    try:
        from core3d.srv import Query, SaveMap

        diag = Diagnostics(node)
        save = node.create_client(SaveMap, "core3d/save_map")
        query = node.create_client(Query, "core3d/query")
        _wait_for_node(node_proc, query, progress)
        wanted = {topic: 1 for topic, _ in FrameMessages(cfg.ros).topics()}
        if cfg.ros.perception == "in_process":
            wanted[cfg.ros.color_topic] = 2  # the perception node in the node process too
        _wait_for_subscribers(node, node_proc, wanted, progress)

        # no 'still ...' lines here: the player's progress bar counts the frames. start_delay: once
        # the player sees the node's subscriptions, give the node time to match the player too
        # (the default 0.5 s lost the first 3 frames once on a busy 2-core machine)
        with progress.phase(f"publishing {len(scene)} frames at {rate:g} Hz (about {len(scene) / rate:.0f} s)", every=0):
            result = publish_dataset(
                scene, rate, cfg.ros, reliable=True, wait_for_subscribers=30.0, start_delay=2.0, progress=True
            )
        with progress.phase("waiting for the node to map every frame") as p:
            _wait_until_mapped(
                lambda: rclpy.spin_once(node, timeout_sec=0.25), diag, result.frames, p, timeout=60.0 + 2.0 * len(scene)
            )
        lost = result.frames - diag.get("frames_received")
        print(
            f"node: {diag.get('frames_received')} frames received, {diag.get('frames_processed')} mapped, "
            f"{diag.get('frames_dropped')} dropped, {diag.get('frames_rejected')} rejected; {diag.get('objects')} objects"
            + (f" ({lost} of {result.frames} frames never arrived: published before the node matched the player)" if lost > 0 else "")
        )

        with progress.phase("saving the map through core3d/save_map"):
            reply = _call(node, save, SaveMap.Request(path=str(out_dir / "map.npz")))
        if not reply.success:
            raise RuntimeError(f"save_map failed: {reply.message}")
        with progress.phase("drawing the map (top-down PNG, PLY)"):
            omap = load_map(reply.path, cfg.fusion)
            snap = omap.snapshot(up=up_vector(cfg.retrieval.up_axis))
            png = write_topdown_png(snap, out_dir / "map.png", up=up_vector(cfg.retrieval.up_axis))
            ply = write_ply(snap, out_dir / "map.ply")
            truth = _ground_truth_names(scene, snap)

        progress.say("asking core3d/query")
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

        from ..core.fusion.object_map import warm_up
        from ..core.mapper import Mapper

        with progress.phase("loading the fusion kernels in this process (numba; compiled on a first run)"):
            warm_up(cfg.fusion)
        with progress.phase("comparing the map with the ground truth"):
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
        with progress.phase("stopping the mapping node"):
            node_proc.send_signal(signal.SIGINT)  # the node's clean shutdown path
            try:
                node_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node_proc.kill()
