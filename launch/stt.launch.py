"""Live segmentation: `ros2 launch stt_ros stt.launch.py image:=/camera/image_raw checkpoint:=...`.

Starts `stt_node` as a lifecycle node with a params file, namespace and topic remaps, and (unless
`autostart:=false`) drives it through configure → activate, which works on Humble and Jazzy alike.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

# Launch argument → the node-relative topic it remaps (empty default: keep the node's name).
TOPICS = {
    "image": "image",
    "camera_info": "camera_info",
    "prompts": "prompts",
    "image_mouse_left": "image_mouse_left",
    "clicked_point": "clicked_point",
    "detections": "detections",
    "depth": "depth",
    "depth_camera_info": "depth_camera_info",
}


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("stt_ros"), "config", "stt.yaml"]),
            description="parameters YAML (see config/stt.yaml)",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("node_name", default_value="stt_node", description="name of the node"),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="configure and activate at start"
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value=topic, description=f"topic for the node's {topic} input")
        for name, topic in TOPICS.items()
    ]
    remappings = [(topic, LaunchConfiguration(name)) for name, topic in TOPICS.items()]
    # With image_transport:=compressed (depth_transport:=compressed) the node subscribes to `image/compressed`
    # (`depth/compressed`): they follow the `image` (`depth`) remap.
    remappings.append(("image/compressed", [LaunchConfiguration("image"), "/compressed"]))
    remappings.append(("depth/compressed", [LaunchConfiguration("depth"), "/compressed"]))

    node = LifecycleNode(
        package="stt_ros",
        executable="stt_node",
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)},
        ],
        remappings=remappings,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    autostart = IfCondition(LaunchConfiguration("autostart"))
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE
        ),
        condition=autostart,
    )
    # Once per launch: a later cleanup → configure by hand must not be followed by an unasked-for activate.
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            start_state="configuring",
            goal_state="inactive",
            handle_once=True,
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(node),
                        transition_id=Transition.TRANSITION_ACTIVATE,
                    )
                )
            ],
        ),
        condition=autostart,
    )
    return LaunchDescription([*arguments, node, activate_when_configured, configure])
