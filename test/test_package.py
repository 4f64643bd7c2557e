"""ROS package conventions: package.xml declares what the node and launch file use, and the
shipped RViz view names only topics (and types) the node publishes, with compatible QoS."""
from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Python module -> the ROS package that provides it, where the two names differ.
MODULE_PACKAGE = {"tf2_ros": "tf2_ros_py", "core3d": "core3d"}


def _declared(kinds: tuple[str, ...]) -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for kind in kinds for e in root.iter(kind)}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _ros_packages() -> set[str]:
    """Package names registered in the ament index of this environment."""
    out: set[str] = set()
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        index = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages"
        if index.is_dir():
            out |= {p.name for p in index.iterdir()}
    return out


def test_package_xml_declares_every_ros_dependency_of_the_node_and_launch_file():
    ros = _ros_packages()
    if "rclpy" not in ros:
        pytest.skip("no ament index in this environment (run through scripts/in-env)")
    run = _declared(("depend", "exec_depend"))
    used: set[str] = set()
    for path in [*(ROOT / "core3d_ros" / "ros").glob("*.py"), *(ROOT / "launch").glob("*.py")]:
        for module in _imports(path):
            package = MODULE_PACKAGE.get(module, module)
            if package in ros or module in MODULE_PACKAGE:
                used.add(package)
    launch_text = (ROOT / "launch" / "mapping.launch.py").read_text(encoding="utf-8")
    used |= set(re.findall(r'package="([a-z0-9_]+)"', launch_text))  # nodes the launch file starts
    used.discard("core3d")
    assert {"rclpy", "tf2_ros_py", "launch_ros", "rviz2", "sensor_msgs"} <= used  # the scan works
    missing = sorted(used - run)
    assert not missing, f"package.xml lacks <exec_depend> for {missing}"


def test_tests_declare_the_tools_they_drive():
    test = _declared(("test_depend",))
    assert {"message_filters", "ros2cli", "ros2service", "ros2topic", "ros2param", "ament_cmake_pytest"} <= test


def test_colcon_test_runs_the_suite():
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    block = re.search(r"if\(BUILD_TESTING\)(.*?)endif\(\)", cmake, re.S)
    assert block and "ament_add_pytest_test" in block.group(1) and " test" in block.group(1)


# --------------------------------------------------------------------------- RViz view

RVIZ_TYPES = {  # display class -> message type it subscribes to
    "rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Marker": "visualization_msgs/msg/Marker",
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
}


def _rviz_displays() -> list[dict]:
    data = yaml.safe_load((ROOT / "config" / "core3d.rviz").read_text(encoding="utf-8"))
    manager = data["Visualization Manager"]
    return [d for d in manager["Displays"] if isinstance(d.get("Topic"), dict)], manager["Global Options"]


def test_rviz_view_names_only_what_the_node_publishes():
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh)")
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from core3d_ros.config import MapperConfig
    from core3d_ros.ros.node import MappingNode

    class NoMapper:
        def __init__(self, cfg):
            self.encoder = None

    displays, options = _rviz_displays()
    assert displays, "config/core3d.rviz has no displays with a topic"
    assert options["Fixed Frame"] == MapperConfig().ros.map_frame
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=232)  # nothing is sent: no discovery needed
    try:
        node = MappingNode(mapper_factory=NoMapper, context=ctx)
        try:
            published = {p.topic_name: p for p in node.publishers}
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    for d in displays:
        topic = d["Topic"]["Value"]
        assert topic in published, f"RViz display {d['Name']!r} names {topic}, which the node does not publish"
        pub = published[topic]
        msg_type = f"{pub.msg_type.__module__.split('.')[0]}/msg/{pub.msg_type.__name__}"
        assert RVIZ_TYPES[d["Class"]] == msg_type, (d["Name"], msg_type)
        # QoS: a reliable / transient-local subscriber needs a publisher that offers it
        qos = pub.qos_profile
        if d["Topic"].get("Reliability Policy") == "Reliable":
            assert qos.reliability == ReliabilityPolicy.RELIABLE, d["Name"]
        if d["Topic"].get("Durability Policy") == "Transient Local":
            assert qos.durability == DurabilityPolicy.TRANSIENT_LOCAL, d["Name"]
