"""The scene graph through the real ROS 2 tools: `ros2 launch` the mapping node with a map file
that holds a hierarchy (format version 2), then `ros2 service call .../get_scene_graph` and
`ros2 topic echo --once` on core3d/scene_graph (latched) and core3d/room_markers. Skips as
test_ros_tools.py does when the ros2 CLI is not installed."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from test_ros_tools import DISCOVERY, Launch, _tools_missing, ros2

pytestmark = pytest.mark.skipif(_tools_missing() is not None, reason=str(_tools_missing()))


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    import os

    from core3d_ros.config import MapperConfig, with_overrides
    from core3d_ros.core.mapper import Mapper
    from test_mapio_hierarchy import two_room_graph

    folder = tmp_path_factory.mktemp("scene_graph_cli")
    mapper = Mapper(with_overrides(MapperConfig(), embed={"name": "none"}, geometry={"enabled": False}), segment=False)
    mapper.hierarchy = two_room_graph()
    map_file = mapper.save(str(folder / "rooms.npz"))
    config = folder / "mapping.yaml"
    text = (Path(__file__).resolve().parents[1] / "config" / "mapping.yaml").read_text(encoding="utf-8")
    text, n1 = re.subn(r"(\n\s+allow_any_map_path:) false\b", r"\1 true", text, count=1)
    text, n2 = re.subn(r'(\n\s+map_path:) ""', rf'\1 "{map_file}"', text, count=1)
    assert n1 == n2 == 1
    config.write_text(text, encoding="utf-8")
    ns = f"core3d_rooms_{os.getpid()}"
    launch = Launch(folder / "launch.log", f"namespace:={ns}", f"config:={config}", "perception:=false", "query_node:=false")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "mapping: colour" not in launch.output():
        if launch.proc.poll() is not None:
            pytest.fail(f"ros2 launch exited with {launch.proc.returncode}:\n{launch.output()}")
        time.sleep(0.5)
    if "mapping: colour" not in launch.output():
        launch.kill()
        pytest.fail(f"the node did not start within 120 s:\n{launch.output()}")
    yield launch, f"/{ns}/core3d"
    launch.kill()


def test_get_scene_graph_service_shows_floors_rooms_and_objects(launched) -> None:
    launch, ns = launched
    r = ros2("service", "call", f"{ns}/get_scene_graph", "core3d/srv/GetSceneGraph", "{}", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "success=True" in out and "2 floor(s), 2 room(s)" in out, out
    assert "up_source='estimated'" in out, out
    assert re.search(r"label='kitchen'.*label_score=0\.31", out, re.S), out
    assert re.search(r"label='room 5'", out), out
    assert re.search(r"label='floor 1'.*label='floor 2'", out, re.S), out
    # room keyframes (views, images) live in the running node, not in map files: a loaded graph has none yet
    assert "object_ids=[1, 2], keyframe_ids=[]" in out, out


def test_scene_graph_topic_is_latched(launched) -> None:
    launch, ns = launched
    qos = ["--qos-durability", "transient_local", "--qos-reliability", "reliable"]
    r = ros2("topic", "echo", "--once", *DISCOVERY, *qos, f"{ns}/scene_graph", "core3d/msg/SceneGraph", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "label: kitchen" in r.stdout and "summary: a small kitchen" in r.stdout, r.stdout
    assert re.search(r"object_ids:\s*\n\s*- 1\s*\n\s*- 2", r.stdout), r.stdout
    r = ros2("topic", "echo", "--once", *DISCOVERY, *qos, f"{ns}/room_markers", "visualization_msgs/msg/MarkerArray", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "text: kitchen (0.31)" in r.stdout and "text: room 5" in r.stdout, r.stdout[-3000:]


def test_ctrl_c_ends_the_node_cleanly(launched) -> None:
    launch, _ = launched
    assert launch.ctrl_c() == 0, launch.output()[-3000:]
