"""demo.launch.py runs out of the box: it writes the sample bag on first use, replays it into the node with
the reference model on `device: auto`, and records the node's segmentations."""

from __future__ import annotations

import os
import sys
import tempfile
import unittest
from pathlib import Path

import launch_testing
import launch_testing.asserts
import pytest
import rclpy
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.substitutions import FindPackageShare
from stt_ros.msg import SegmentationArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live

HOME = Path(tempfile.mkdtemp(prefix="stt_demo_home_"))


@pytest.mark.launch_test
def generate_test_description():
    os.environ["ROS_HOME"] = str(HOME)  # the demo keeps its sample bag and recordings there
    demo = IncludeLaunchDescription(
        PythonLaunchDescriptionSource([FindPackageShare("stt_ros"), "/launch/demo.launch.py"]),
        launch_arguments={"record": str(HOME / "recorded")}.items(),
    )
    return LaunchDescription([demo, launch_testing.actions.ReadyToTest()])


class TestDemo(unittest.TestCase):
    def test_the_sample_bag_is_made_and_segmented(self):
        self.assertTrue((HOME / "stt_ros" / "sample_bag" / "metadata.yaml").is_file())
        rclpy.init()
        harness = live.Harness("stt_demo_test")
        try:
            arrays = harness.record(SegmentationArray, "/stt_node/segmentations")
            self.assertTrue(harness.wait_for(lambda: len(arrays) >= 3, 120.0), "the demo produced no segmentations")
            self.assertTrue(all(array.segmentations for array in harness.messages("/stt_node/segmentations")))
        finally:
            harness.close()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestDemoRecorded(unittest.TestCase):
    def test_processes_exit_cleanly_and_the_outputs_are_recorded(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
        recorded = HOME / "recorded"
        self.assertTrue((recorded / "metadata.yaml").is_file(), f"no recording in {recorded}")
