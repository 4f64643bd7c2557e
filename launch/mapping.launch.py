"""Launch the core3d mapping node.

    ros2 launch core3d mapping.launch.py
    ros2 launch core3d mapping.launch.py config:=/path/to/my.yaml use_sim_time:=true rviz:=true

Parameters come from share/core3d/config/mapping.yaml unless `config` names another file; the
node's topics are relative, so a `namespace` (or remappings) places it next to a camera driver.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("core3d")
    config = LaunchConfiguration("config")
    use_sim_time = LaunchConfiguration("use_sim_time")
    namespace = LaunchConfiguration("namespace")
    log_level = LaunchConfiguration("log_level")
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
                "rviz",
                default_value="false",
                description="Also start rviz2 with share/core3d/config/core3d.rviz",
            ),
            Node(
                package="core3d",
                executable="mapping_node",
                name="core3d_mapping",
                namespace=namespace,
                output="screen",
                emulate_tty=True,
                # The file goes in as the node's `config_file` (read whatever its node key), not
                # as a ROS params file: rcl applies a params file keyed `core3d_mapping` only to
                # /core3d_mapping, so with a namespace its values would be silently ignored.
                parameters=[
                    {
                        "config_file": ParameterValue(config, value_type=str),
                        "use_sim_time": ParameterValue(use_sim_time, value_type=bool),
                    },
                ],
                arguments=["--ros-args", "--log-level", log_level],
            ),
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
