"""replay.launch.py plays a bag from `stt make-sample-bag` with the real `ros2 bag play` (sqlite3 and mcap),
records the node's outputs with `ros2 bag record`, and `stt eval-bag` on the same bag gives the same masks and
the same 3-D objects (the bag has aligned depth; demo.yaml turns depth on).

`stt eval-bag` runs in the offline tools' Python: $STT_OFFLINE_PYTHON (run.sh sets the project venv), else
this one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from collections import defaultdict
from pathlib import Path

import launch_testing
import launch_testing.asserts
import pytest
import rclpy
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.substitutions import FindPackageShare
from rosbags.highlevel import AnyReader
from stt_ros.msg import SegmentationArray

from stt_ros.bag.messages import typestore
from stt_ros.bag.sample import CAMERA_INFO_TOPIC, DEPTH_INFO_TOPIC, DEPTH_TOPIC, PROMPT_TOPIC, write_sample_bag
from stt_ros.pipeline.binding import stamp_to_ns
from stt_ros.pipeline.conversions import segmentation_to_mask

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live

FRAMES, WIDTH, HEIGHT = 20, 320, 240


def read(bag: Path, topic: str) -> list:
    with AnyReader([bag], default_typestore=typestore()) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections=connections)]


def masks_by_prompt(arrays: list) -> dict[tuple[int, str], object]:
    return {
        (stamp_to_ns(array.header.stamp), s.prompt_id): segmentation_to_mask(s, HEIGHT, WIDTH)
        for array in arrays
        for s in array.segmentations
    }


def centroids(bag: Path, topic: str) -> dict[tuple[int, str], tuple[float, float, float]]:
    """Each Detection3D's centroid (its hypothesis pose), by (stamp, prompt id)."""
    found = {}
    for array in read(bag, topic):
        for detection in array.detections:
            p = detection.results[0].pose.pose.position
            found[(stamp_to_ns(array.header.stamp), detection.id)] = (p.x, p.y, p.z)
    return found


@pytest.mark.launch_test
@launch_testing.parametrize("storage", ["sqlite3", "mcap"])
def generate_test_description(storage: str):
    work = Path(tempfile.mkdtemp(prefix=f"stt_replay_{storage}_"))
    bag = write_sample_bag(work / "sample", storage, frames=FRAMES, width=WIDTH, height=HEIGHT)
    replay = IncludeLaunchDescription(
        PythonLaunchDescriptionSource([FindPackageShare("stt_ros"), "/launch/replay.launch.py"]),
        launch_arguments={
            "bag": str(bag),
            "record": str(work / "recorded"),
            "params_file": [FindPackageShare("stt_ros"), "/config/demo.yaml"],
            "image": "/camera/image_raw",
            "prompts": PROMPT_TOPIC,
            "camera_info": CAMERA_INFO_TOPIC,
            "depth": DEPTH_TOPIC,
            "depth_camera_info": DEPTH_INFO_TOPIC,
        }.items(),
    )
    description = LaunchDescription([replay, launch_testing.actions.ReadyToTest()])
    return description, {"bag": bag, "work": work}


class TestReplay(unittest.TestCase):
    def test_every_prompt_of_the_bag_is_answered(self, bag, storage):
        rclpy.init()
        harness = live.Harness("stt_replay_test")
        try:
            arrays = harness.record(SegmentationArray, "/stt_node/segmentations")
            prompts = len(read(bag, PROMPT_TOPIC))
            answered = harness.wait_for(lambda: sum(len(a.segmentations) for a in arrays) >= prompts, 120.0)
            got = sum(len(a.segmentations) for a in harness.messages("/stt_node/segmentations"))
            print(f"\nreplay ({storage}): {prompts} prompts in, {len(arrays)} SegmentationArrays with {got} masks out")
            self.assertTrue(answered, f"{got} of {prompts} prompts answered")
        finally:
            harness.close()
            rclpy.shutdown()


@launch_testing.post_shutdown_test()
class TestRecorded(unittest.TestCase):
    def test_processes_exit_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_the_recording_matches_the_prompts_and_eval_bag(self, bag, work, storage):
        recorded = [path for path in (work / "recorded").iterdir() if path.suffix in (".mcap", ".db3")]
        self.assertTrue(recorded, f"no bag recorded in {work / 'recorded'}")
        live_masks = masks_by_prompt(read(work / "recorded", "/stt_node/segmentations"))
        asked = defaultdict(set)
        for prompt in read(bag, PROMPT_TOPIC):
            asked[stamp_to_ns(prompt.header.stamp)].add(prompt.id)
        answered = defaultdict(set)
        for stamp, prompt_id in live_masks:
            answered[stamp].add(prompt_id)
        self.assertEqual(answered, asked)

        python = os.environ.get("STT_OFFLINE_PYTHON", sys.executable)
        out = work / "eval"
        command = [python, "-m", "stt_ros.commands.cli", "eval-bag", str(bag), "--image-topic", "/camera/image_raw"]
        command += ["--prompt-topic", PROMPT_TOPIC, "--variant", "reference", "--device", "cpu", "--out", str(out)]
        command += ["--depth-topic", DEPTH_TOPIC, "--camera-info-topic", CAMERA_INFO_TOPIC]
        subprocess.run([*command, "--no-progress"], check=True)
        offline = masks_by_prompt(read(out / "results", "/stt/segmentations"))
        self.assertEqual(offline.keys(), live_masks.keys())
        ious = [live.iou(live_masks[key], offline[key]) for key in offline]
        equal = sum(bool((live_masks[key] == offline[key]).all()) for key in offline)
        print(f"\nreplay ({storage}) vs stt eval-bag: {equal} of {len(ious)} masks identical, min IoU {min(ious):.4f}")
        self.assertGreaterEqual(min(ious), 0.99)
        live_objects = centroids(work / "recorded", "/stt_node/objects")
        offline_objects = centroids(out / "results", "/stt/objects")
        self.assertTrue(live_objects)
        self.assertEqual(live_objects.keys(), offline_objects.keys())
        for key, position in live_objects.items():
            self.assertTrue(all(abs(a - b) < 1e-3 for a, b in zip(position, offline_objects[key], strict=True)), key)
