"""Perception and mapping in two processes, linked only by core3d/observations.

The perception process runs the oracle segmenter on the synthetic room and embeds every mask as
the one-hot code of its true class (a deterministic test encoder); the mapping process buffers
frames and fuses the observations late. A query by embedding then finds, for every piece of
furniture, an object at that furniture's place, and every object carrying a class code lies
inside an instance of that class: both hold only if each observation landed on the voxels of
its own frame.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import wait_for

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d.msg is not built: run scripts/setup.sh and use scripts/in-env")

from core3d_ros.config import MapperConfig, RosConfig  # noqa: E402

DOMAIN_ID = 40 + (os.getpid() * 11) % 59  # apart from the other ROS tests' ranges
NUM_FRAMES = 24
STRUCTURE = {"floor", "wall", "ceiling"}

PERCEPTION_SCRIPT = textwrap.dedent(
    """
    import sys

    import numpy as np

    from core3d_ros.core.datasets.synthetic import make_scene
    from core3d_ros.core.perception import Perception
    from core3d_ros.ros.runner import run_nodes
    from core3d_ros.ros.perception_node import PerceptionNode

    classes = make_scene(seed=0, num_frames=2).instance_classes
    names = sorted(set(classes.values()))
    codes = {c: np.eye(len(names), dtype=np.float16)[i] for i, c in enumerate(names)}


    class ClassCodes(Perception):
        # The oracle's masks, each embedded as the one-hot code of its true class.
        def masks(self, frame):
            self.last = super().masks(frame)
            return self.last

        def infer(self, frame):
            obs = super().infer(frame)
            for r in obs.masks:
                r.embedding = codes[classes[self.last[r.label - 1].source_id]]
            return obs


    sys.exit(
        run_nodes(
            sys.argv[1:],
            prog="test_perception",
            build=lambda cf: [PerceptionNode(config_file=cf, perception_factory=ClassCodes)],
        )
    )
    """
)



def _start(cmd: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parents[1])


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode



def test_observations_fused_late_land_on_their_own_voxels(ros_context: Any, tmp_path: Path) -> None:
    from core3d.srv import SaveMap
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from core3d_ros.core.datasets.synthetic import make_scene
    from core3d_ros.core.mapper import Mapper
    from core3d_ros.tools.player import publish_dataset

    ros = RosConfig()
    ros.qos_reliability, ros.qos_depth, ros.work_queue, ros.publish_period = "reliable", 50, 64, 0.5
    common = {"ros.qos_reliability": "reliable", "ros.qos_depth": "50", "ros.publish_period": "0.5"}
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")

    def ros_args(params: dict[str, str]) -> list[str]:
        out = ["--ros-args"]
        for k, v in params.items():
            out += ["-p", f"{k}:={v}"]
        return out

    script = tmp_path / "perception.py"
    script.write_text(PERCEPTION_SCRIPT)
    perception = _start(
        [sys.executable, str(script), *ros_args({**common, "segmenter.name": "oracle", "ros.instance_topic": "camera/instances", "keyframes.enabled": "false"})],
        tmp_path / "perception.log",
        env,
    )
    mapping = _start(
        [sys.executable, "-m", "core3d_ros.ros.node", *ros_args({**common, "ros.perception": "external", "ros.work_queue": "64", "ros.maps_dir": str(tmp_path)})],
        tmp_path / "mapping.log",
        env,
    )
    ros.instance_topic = "camera/instances"

    def logs() -> str:
        return "\n".join(f"--- {n}\n{(tmp_path / n).read_text()[-3000:]}" for n in ("perception.log", "mapping.log"))

    peer = rclpy.create_node("core3d_link_peer", context=ros_context)
    diags: dict[str, dict[str, str]] = {}

    def on_diag(msg: Any) -> None:
        for st in msg.status:
            diags[st.name] = {kv.key: kv.value for kv in st.values}

    peer.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def node_diag(node: str, key: str) -> int:
        d = next((v for k, v in diags.items() if k.startswith(node)), {})
        return int(d.get(key, 0))

    def mapping_diag(key: str) -> int:
        return node_diag("core3d_mapping", key)

    try:
        scene = make_scene(seed=0, num_frames=NUM_FRAMES)
        # both nodes up, and the mapping node subscribed to the observations, before the first frame
        assert wait_for(lambda: node_diag("core3d_perception", "observation_subscribers") >= 1 and mapping_diag("frames_received") == 0 and any(k.startswith("core3d_mapping") for k in diags), 60), logs()
        result = publish_dataset(scene, 4.0, ros, context=ros_context, wait_for_subscribers=30.0)
        assert result.frames == NUM_FRAMES
        assert wait_for(lambda: mapping_diag("frames_processed") == NUM_FRAMES, 60), (diags, logs())
        # perception takes the newest frame when it is free (a busy machine drops some: bounded
        # staleness); every observation it published is fused
        assert wait_for(lambda: node_diag("core3d_perception", "frames") + node_diag("core3d_perception", "keyframes_dropped") == NUM_FRAMES, 60), (diags, logs())
        published = node_diag("core3d_perception", "keyframes")
        assert published >= NUM_FRAMES // 3, diags
        def link() -> str:
            keys = ("observations", "frames_buffered", "staleness", "rejected")
            return str({n: {k: v for k, v in d.items() if k.startswith(keys) or "observation" in k} for n, d in diags.items()})

        assert wait_for(lambda: mapping_diag("observations_fused") == published, 60), link() + logs()[-1500:]
        rejected = {k: v for k, v in diags[next(k for k in diags if k.startswith("core3d_mapping"))].items() if "observations_rejected" in k}
        assert not rejected, rejected  # nothing late, nothing malformed

        client = peer.create_client(SaveMap, "core3d/save_map")
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(SaveMap.Request(path=str(tmp_path / "map.npz")))
        assert wait_for(future.done, 30) and future.result().success, logs()
    finally:
        executor.shutdown(timeout_sec=5)
        spinner.join(5)
        peer.destroy_node()
        codes = (_stop(perception), _stop(mapping))
    assert codes == (0, 0), logs()

    mapper = Mapper(MapperConfig(), segment=False)
    mapper.load(str(tmp_path / "map.npz"))
    objects = [o for o in mapper.snapshot().objects if o.embedding is not None and o.num_voxels >= 30]
    names = sorted(set(scene.instance_classes.values()))
    E = np.stack([o.embedding for o in objects])
    cents = np.stack([o.centroid for o in objects])
    margin = 0.05

    def inside(p: np.ndarray, inst: Any) -> bool:
        return bool(np.all(np.abs(p - inst.center) <= inst.size / 2 + margin))

    # every object carrying a class code sits inside an instance of that class
    for o, c in zip(objects, cents):
        k = int(np.argmax(o.embedding))
        assert o.embedding[k] > 0.9, o.embedding
        assert any(inside(c, inst) for inst in scene.objects_of_class(names[k])), (names[k], c)
    # a query by embedding finds every piece of furniture that was seen at its place
    seen: dict[int, int] = {}
    for i in range(len(scene)):
        ids, counts = np.unique(scene[i].instance_ids, return_counts=True)
        for g, n in zip(ids.tolist(), counts.tolist()):
            seen[g] = seen.get(g, 0) + n
    for inst in scene.objects:
        if inst.class_name in STRUCTURE or seen.get(inst.id, 0) < 2000:
            continue
        code = np.eye(len(names))[names.index(inst.class_name)]
        hits = np.flatnonzero(E @ code > 0.9)
        assert any(inside(cents[h], inst) for h in hits), f"no object with the code of {inst.class_name} {inst.id} at its place"
