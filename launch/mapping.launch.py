"""Launch core3d: the mapping node and the perception node (the models), each in its own process.

    ros2 launch core3d mapping.launch.py
    ros2 launch core3d mapping.launch.py config:=/path/to/my.yaml use_sim_time:=true rviz:=true
    ros2 launch core3d mapping.launch.py config:=$(ros2 pkg prefix core3d)/share/core3d/config/core3d_gpu.yaml device:=cuda
    ros2 launch core3d mapping.launch.py perception:=in_process   # one process for both nodes
    ros2 launch core3d mapping.launch.py perception:=false   # perception runs elsewhere:
        # on the GPU machine: ros2 run core3d perception_node --config my.yaml
    ros2 launch core3d mapping.launch.py query_node:=false   # the mapping node answers core3d/query itself
    ros2 launch core3d mapping.launch.py hierarchy:=false   # no floors / rooms (core3d/scene_graph)

By default a query node (core3d-query-node) in a process of its own answers core3d/query and
core3d/get_object from a mirror of the mapping node's map stream, so that no query waits on the
mapping process's interpreter lock; the mapping node's own query services then move to
core3d/mapping/query and core3d/mapping/get_object (kept for comparison and as a fallback), and
it keeps save_map, load_map, clear_map and get_map_state.

Parameters come from share/core3d/config/mapping.yaml unless `config` names another file; the
node's topics are relative, so a `namespace` (or remappings) places it next to a camera driver.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def _core3d_nodes(context, *args, **kwargs):
    """The mapping node and, by perception:=true, the perception node in a process of its own."""
    perception = LaunchConfiguration("perception").perform(context).strip().lower()
    modes = {"true": "external", "in_process": "in_process", "false": "external"}
    if perception not in modes:
        raise ValueError(f"launch argument perception must be true, in_process or false, got {perception!r}")
    common = {
        "config_file": ParameterValue(LaunchConfiguration("config"), value_type=str),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    device = LaunchConfiguration("device").perform(context).strip()
    if device:
        common["segmenter.device"] = device
        common["embed.device"] = device
    node = dict(
        package="core3d",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    query_node = LaunchConfiguration("query_node").perform(context).strip().lower()
    if query_node not in ("true", "false"):
        raise ValueError(f"launch argument query_node must be true or false, got {query_node!r}")
    mapping = {**common, "ros.perception": modes[perception]}
    hierarchy = LaunchConfiguration("hierarchy").perform(context).strip().lower()
    if hierarchy not in ("", "true", "false"):
        raise ValueError(f"launch argument hierarchy must be true, false or empty, got {hierarchy!r}")
    if hierarchy:  # the mapping node's scene graph (core3d/scene_graph, core3d/get_scene_graph)
        mapping["hierarchy.enabled"] = hierarchy == "true"
    if query_node == "true":  # the query node takes core3d/query; the mapping node's moves aside
        mapping.update({"ros.query_namespace": "core3d/mapping", "ros.publish_map_updates": True})
    nodes = [
        Node(
            executable="mapping_node",
            name="core3d_mapping",
            parameters=[mapping],
            **node,
        )
    ]
    # The mapping node is the map: when it ends, the launch ends.
    nodes.append(RegisterEventHandler(OnProcessExit(target_action=nodes[0], on_exit=[EmitEvent(event=Shutdown(reason="core3d_mapping ended"))])))
    if perception == "true":
        # Its own process: the models' Python never holds the mapping process's interpreter
        # lock, and the OS schedules it below mapping and queries (ros.perception_nice). A
        # crashed perception node is started again (mapping and the services never stop),
        # but a configuration error (exit code 2, one line naming the parameter) ends the
        # launch: starting it again could only fail again.
        perception_node = Node(
            executable="perception_node",
            name="core3d_perception",
            parameters=[common],
            respawn=True,
            respawn_delay=2.0,
            **node,
        )
        nodes.append(perception_node)
        nodes.append(RegisterEventHandler(OnProcessExit(target_action=perception_node, on_exit=_stop_on_configuration_error)))
    if query_node == "true":
        # Its own process, restarted if it dies (it resyncs from core3d/get_map_state); a
        # configuration error ends the launch, as for the perception node.
        query = Node(
            executable="query_node",
            name="core3d_query",
            parameters=[common],
            respawn=True,
            respawn_delay=2.0,
            **node,
        )
        nodes.append(query)
        nodes.append(RegisterEventHandler(OnProcessExit(target_action=query, on_exit=_stop_on_configuration_error)))
    return nodes


def _stop_on_configuration_error(event, context):
    if event.returncode == 2:
        name = event.action.name if hasattr(event.action, "name") else "a core3d node"
        return [EmitEvent(event=Shutdown(reason=f"{name}: configuration error (see its line above)"))]
    return None


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
                description="true: start the perception node (segmenter + CLIP) in a process of its own, restarted if it dies; "
                "in_process: run it in the mapping node's process; false: take core3d/observations from a perception node elsewhere",
            ),
            DeclareLaunchArgument(
                "query_node",
                default_value="true",
                description="true: a query node in a process of its own answers core3d/query and core3d/get_object from the "
                "map stream (the mapping node's move to core3d/mapping/); false: the mapping node answers them itself",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="auto | cpu | cuda for the models (segmenter.device, embed.device); empty: as configured",
            ),
            DeclareLaunchArgument(
                "hierarchy",
                default_value="",
                description="true | false: keep the floors/rooms scene graph (core3d/scene_graph, core3d/get_scene_graph, "
                "core3d/room_markers) while mapping (hierarchy.enabled); empty: as configured",
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
