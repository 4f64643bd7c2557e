"""Launch one core3d query node over several robots' maps (in a shared map frame), served as one.

    ros2 launch core3d query.launch.py robots:=robot1,robot2
    ros2 launch core3d query.launch.py robots:=robot1,robot2 config:=/path/to/my.yaml fetch_timeout:=1.0

Each robot runs its own graph in its namespace (``ros2 launch core3d mapping.launch.py
namespace:=robot1``: its mapping node streams robot1/core3d/map_updates and answers
robot1/core3d/mapping/get_object). This query node mirrors every robot's stream, merges the
objects two robots both mapped, and answers core3d/query and core3d/get_object (in
``namespace``) for all of them; each result says which robot's map it came from. It is
restarted if it dies (it resyncs from each robot's core3d/get_map_state); a configuration error
ends the launch.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def _query_node(context, *args, **kwargs):
    robots = [r.strip() for r in LaunchConfiguration("robots").perform(context).split(",") if r.strip()]
    if not robots:
        raise ValueError("launch argument robots must name the robots' namespaces, e.g. robots:=robot1,robot2")
    params = {
        "config_file": ParameterValue(LaunchConfiguration("config"), value_type=str),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
        "query.namespaces": robots,
    }
    timeout = LaunchConfiguration("fetch_timeout").perform(context).strip()
    if timeout:
        try:
            params["query.fetch_timeout"] = float(timeout)
        except ValueError:
            raise ValueError(f"launch argument fetch_timeout must be seconds, got {timeout!r}") from None
    query = Node(
        package="core3d",
        executable="query_node",
        name="core3d_query",
        namespace=LaunchConfiguration("namespace"),
        parameters=[params],
        respawn=True,
        respawn_delay=2.0,
        output="screen",
        emulate_tty=True,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return [query, RegisterEventHandler(OnProcessExit(target_action=query, on_exit=_stop_on_configuration_error))]


def _stop_on_configuration_error(event, context):
    if event.returncode == 2:
        return [EmitEvent(event=Shutdown(reason="core3d_query: configuration error (see its line above)"))]
    return None


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("core3d")
    return LaunchDescription(
        [
            DeclareLaunchArgument("robots", description="the robots' namespaces, comma-separated: robot1,robot2"),
            DeclareLaunchArgument(
                "config",
                default_value=PathJoinSubstitution([share, "config", "mapping.yaml"]),
                description="ROS 2 parameters file (query.*, retrieval.*, embed.*, fusion.gamma / delta for merging)",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the query node and its services"),
            DeclareLaunchArgument(
                "fetch_timeout", default_value="",
                description="seconds to wait for an object's points from its mapping node (query.fetch_timeout); empty: as configured",
            ),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="Take time from /clock (bag replay)"),
            DeclareLaunchArgument("log_level", default_value="info", description="debug | info | warn | error"),
            OpaqueFunction(function=_query_node),
        ]
    )
