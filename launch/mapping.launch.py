"""Launch core3d: the mapping node, with the perception node (the models) in the same process.

    ros2 launch core3d mapping.launch.py
    ros2 launch core3d mapping.launch.py config:=/path/to/my.yaml use_sim_time:=true rviz:=true
    ros2 launch core3d mapping.launch.py config:=$(ros2 pkg prefix core3d)/share/core3d/config/core3d_gpu.yaml device:=cuda
    ros2 launch core3d mapping.launch.py perception:=false   # perception runs elsewhere:
        # on the GPU machine: ros2 run core3d perception_node --config my.yaml

Parameters come from share/core3d/config/mapping.yaml unless `config` names another file; the
node's topics are relative, so a `namespace` (or remappings) places it next to a camera driver.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def _core3d_nodes(context, *args, **kwargs):
    """The mapping node (and, with perception:=true, the perception node in its process)."""
    perception = LaunchConfiguration("perception").perform(context).strip().lower()
    if perception not in ("true", "false"):
        raise ValueError(f"launch argument perception must be true or false, got {perception!r}")
    # The config file goes in as the node's `config_file` (read whatever its node key), not as a
    # ROS params file: rcl applies a params file keyed `core3d_mapping` only to /core3d_mapping,
    # so with a namespace its values would be silently ignored.
    overrides = {
        "config_file": ParameterValue(LaunchConfiguration("config"), value_type=str),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
        "ros.perception": "in_process" if perception == "true" else "external",
    }
    device = LaunchConfiguration("device").perform(context).strip()
    if device:
        overrides["segmenter.device"] = device
        overrides["embed.device"] = device
    return [
        Node(
            package="core3d",
            executable="mapping_node",
            name="core3d_mapping",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[overrides],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("core3d")
    use_sim_time = LaunchConfiguration("use_sim_time")
    rviz = LaunchConfiguration("rviz")

    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value=PathJoinSubstitution([share, "config", "mapping.yaml"]),
                description="ROS 2 parameters file of the mapping node (core3d_mapping)",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="Take time from /clock (bag replay)",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="Namespace of the node and its topics"
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="debug | info | warn | error"
            ),
            DeclareLaunchArgument(
                "perception",
                default_value="true",
                description="true: run the perception node (segmenter + CLIP) in the mapping node's process; "
                "false: take core3d/observations from a perception node elsewhere",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="auto | cpu | cuda for the models (segmenter.device, embed.device); empty: as configured",
            ),
            DeclareLaunchArgument(
                "rviz",
                default_value="false",
                description="Also start rviz2 with share/core3d/config/core3d.rviz",
            ),
            OpaqueFunction(function=_core3d_nodes),
            Node(
                package="rviz2",
                executable="rviz2",
                name="core3d_rviz",
                arguments=["-d", PathJoinSubstitution([share, "config", "core3d.rviz"])],
                parameters=[{"use_sim_time": ParameterValue(use_sim_time, value_type=bool)}],
                condition=IfCondition(rviz),
                output="log",
            ),
        ]
    )
