"""The ROS demo: `ros2 launch stt_ros demo.launch.py` after `colcon build`, nothing else to download.

Writes the built-in sample bag on first use (moving shapes with one PointPrompt per object and frame, and
aligned depth; the same bag as `stt make-sample-bag`), replays it into stt_node with the shipped reference
model on `device: auto` and depth on, records the node's outputs (masks, boxes, 3-D objects and their points),
and says where to look.
"""

import os
import time
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, LogInfo, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def _home() -> Path:
    return Path(os.environ.get("ROS_HOME", Path.home() / ".ros")) / "stt_ros"


def _replay(context, *args, **kwargs):
    """Make the sample bag if needed, then the replay with its topics, recording to a fresh folder."""
    bag = LaunchConfiguration("bag").perform(context)
    if not bag:
        bag = str(_home() / "sample_bag")
        if not (Path(bag) / "metadata.yaml").is_file():
            from stt_ros.bag.sample import write_sample_bag  # needs rosbags: see docs/ROS.md

            write_sample_bag(bag, "mcap", frames=40, width=640, height=480)
    record = LaunchConfiguration("record").perform(context) or str(_home() / time.strftime("demo_%Y%m%d-%H%M%S"))
    replay = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("stt_ros"), "launch", "replay.launch.py"])
        ),
        launch_arguments={
            "bag": bag,
            "record": record,
            "rate": LaunchConfiguration("rate"),
            "params_file": LaunchConfiguration("params_file"),
            "image": "/camera/image_raw",
            "camera_info": "/camera/camera_info",
            "depth": "/camera/aligned_depth_to_color/image_raw",
            "depth_camera_info": "/camera/aligned_depth_to_color/camera_info",
            "prompts": "/stt/prompts",
            "image_mouse_left": "/stt_node/overlay_mouse_left",  # rqt_image_view's clicks on the overlay
        }.items(),
    )
    where = (
        f"stt demo: replaying {bag}, recording to {record}. Watch the masks: "
        "ros2 run rqt_image_view rqt_image_view /stt_node/overlay (tick 'mouse click' to segment what you "
        f"click); read the results: ros2 bag info {record}"
    )
    return [LogInfo(msg=where), replay]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", default_value="", description="bag to play (empty: the built-in sample)"),
            DeclareLaunchArgument("record", default_value="", description="output bag (empty: ~/.ros/stt_ros/demo_*)"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([FindPackageShare("stt_ros"), "config", "demo.yaml"]),
                description="node parameters (default: the reference model on device auto)",
            ),
            OpaqueFunction(function=_replay),
        ]
    )
