"""Rosbag replay: `ros2 launch stt_ros replay.launch.py bag:=/path/to/bag [record:=/path/to/out]`.

Runs the node on sim time (stt.launch.py with use_sim_time:=true), plays the bag with `--clock` once
the node is active (the model may take a while to load), and optionally records the node's outputs.
A model slower than the bag's frame rate queues prompted frames (`max_queued_frames`) and drops the
oldest beyond that: lower `rate`, raise `max_queued_frames`, or evaluate with `stt eval-bag`, which
never drops (docs/ROS.md).
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.event_handlers import OnStateTransition
from launch_ros.substitutions import FindPackageShare

PASSED_ON = (
    "params_file", "namespace", "node_name", "image", "camera_info", "prompts", "detections", "image_mouse_left",
    "clicked_point", "depth", "depth_camera_info",
)  # fmt: skip


def _record(context, *args, **kwargs):
    """`ros2 bag record` of the node's outputs, named after its namespace and name."""
    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    node_name = LaunchConfiguration("node_name").perform(context)
    base = "/" + "/".join(part for part in (namespace, node_name) if part)
    outputs = ("segmentations", "mask", "detections", "objects", "points")  # objects, points: with depth_mode on
    topics = [*(f"{base}/{name}" for name in outputs), "/diagnostics"]
    output = LaunchConfiguration("record").perform(context)
    return [ExecuteProcess(cmd=["ros2", "bag", "record", "-o", output, *topics], output="screen")]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("bag", description="the bag (directory or file) to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument(
            "record", default_value="", description="record outputs to this path (empty: no)"
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("stt_ros"), "config", "stt.yaml"]),
            description="parameters YAML",
        ),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("node_name", default_value="stt_node"),
        DeclareLaunchArgument("image", default_value="image"),
        DeclareLaunchArgument("camera_info", default_value="camera_info"),
        DeclareLaunchArgument("prompts", default_value="prompts"),
        DeclareLaunchArgument("detections", default_value="detections"),
        DeclareLaunchArgument("image_mouse_left", default_value="image_mouse_left"),
        DeclareLaunchArgument("clicked_point", default_value="clicked_point"),
        DeclareLaunchArgument("depth", default_value="depth"),
        DeclareLaunchArgument("depth_camera_info", default_value="depth_camera_info"),
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("stt_ros"), "launch", "stt.launch.py"])
        ),
        launch_arguments={
            **{name: LaunchConfiguration(name) for name in PASSED_ON},
            "use_sim_time": "true",
            "autostart": "true",
        }.items(),
    )
    play = ExecuteProcess(
        cmd=[
            "ros2",
            "bag",
            "play",
            LaunchConfiguration("bag"),
            "--clock",
            "--rate",
            LaunchConfiguration("rate"),
        ],
        output="screen",
    )
    recording = IfCondition(PythonExpression(["'", LaunchConfiguration("record"), "' != ''"]))
    # The recorder starts with the launch (it names its topics, so it subscribes as the node creates them);
    # the bag plays once the node is active, so no frame is lost to a model still loading.
    start_when_active = RegisterEventHandler(
        OnStateTransition(start_state="activating", goal_state="active", handle_once=True, entities=[play])
    )
    finished = RegisterEventHandler(
        OnProcessExit(
            target_action=play,
            on_exit=[
                LogInfo(
                    msg=[
                        "replay: the bag has been played; the node keeps its last frames for clicks. Outputs: ",
                        PythonExpression(["'", LaunchConfiguration("record"), "' or 'not recorded'"]),
                        " (Ctrl-C ends the recording)",
                    ]
                )
            ],
        )
    )
    record = OpaqueFunction(function=_record, condition=recording)
    return LaunchDescription([*arguments, record, start_when_active, finished, node])
