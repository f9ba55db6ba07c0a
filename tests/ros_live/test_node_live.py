"""stt.launch.py on a real ROS 2 with the shipped reference model on the CPU: every input, every output,
bad input and the whole lifecycle, as a user's launch runs it.

Three nodes from the package's own launch file: `stt_node` (raw bgr8 images), `stt_jpeg` (CompressedImage)
and `stt_bad` (a checkpoint that does not exist: configure must fail cleanly).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.asserts
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped, TransformStamped
from launch import LaunchDescription
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Log
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from sensor_msgs_py import point_cloud2
from stt_ros.msg import PointPrompt, SegmentationArray
from tf2_ros import StaticTransformBroadcaster
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live

NODE, JPEG, BAD, ONNX = "stt_node", "stt_jpeg", "stt_bad", "stt_onnx"
# The camera sits 1 m above a "world" origin, looking straight down its own optical z axis.
CAMERA_IN_WORLD = (0.3, -0.2, 1.0)


def export_reference_graph() -> Path:
    """The reference model as an ONNX graph, exported by the offline tools' Python (it has torch and onnx)."""
    out = Path(tempfile.mkdtemp(prefix="stt_onnx_")) / "reference.onnx"
    python = os.environ.get("STT_OFFLINE_PYTHON", sys.executable)
    command = [python, "-m", "stt_ros.commands.cli", "export", "--variant", "reference", "--out", str(out)]
    subprocess.run(command, check=True)
    return out


@pytest.mark.launch_test
def generate_test_description() -> LaunchDescription:
    common = {
        "variant": "reference", "device": "auto", "frame_buffer_size": 60, "prompt_tolerance": 0.2, "depth_mode": "on",
    }  # fmt: skip
    return LaunchDescription(
        [
            live.include_stt(NODE, live.params_file(**common, target_frame="world"), depth_camera_info="/camera_info"),
            live.include_stt(
                JPEG,
                live.params_file(**common, image_transport="compressed", target_frame="nowhere"),
                image="/camera_jpeg/image",
                image_mouse_left="/camera_jpeg/click",
                prompts="/camera_jpeg/prompts",
                detections="/camera_jpeg/detections",
                clicked_point="/camera_jpeg/clicked_point",
            ),
            live.include_stt(
                ONNX,
                live.params_file(
                    variant="reference",
                    backend="onnxruntime",
                    model=str(export_reference_graph()),
                    onnx_providers="cuda,cpu",
                ),
                image_mouse_left="/onnx/click",
                prompts="/onnx/prompts",
                detections="/onnx/detections",
                clicked_point="/onnx/clicked_point",
            ),
            live.include_stt(
                BAD,
                live.params_file(variant="vit_b", checkpoint="/nonexistent/sam_vit_b_01ec64.pth"),
                image="/bad/image",
            ),
            launch_testing.actions.ReadyToTest(),
        ]
    )


class TestNodeLive(unittest.TestCase):
    """Ordered by name: the lifecycle tests come last and end with shutdown."""

    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.h = h = live.Harness("stt_live_test")
        cls.results = h.record(SegmentationArray, f"/{NODE}/segmentations")
        cls.masks = h.record(Image, f"/{NODE}/mask")
        h.record(SegmentationArray, f"/{JPEG}/segmentations")
        h.record(DiagnosticArray, "/diagnostics")
        h.record(Log, "/rosout", 100)
        cls.images = h.publisher(Image, "/image", live.SENSOR_QOS)
        infos = h.publisher(CameraInfo, "/camera_info", live.SENSOR_QOS)
        jpegs = h.publisher(CompressedImage, "/camera_jpeg/image/compressed", live.SENSOR_QOS)
        cls.depths = h.publisher(Image, "/depth", live.SENSOR_QOS)
        cls.depth_mm = live.DEPTH_MM  # what the depth camera sees; a test swaps it for a while
        cls.clicks = h.publisher(Point, "/image_mouse_left")
        cls.prompts = h.publisher(PointPrompt, "/prompts")
        cls.detections = h.publisher(Detection2DArray, "/detections")
        cls.points = h.publisher(PointStamped, "/clicked_point")
        cls.jpeg_clicks = h.publisher(Point, "/camera_jpeg/click")
        cls.onnx_clicks = h.publisher(Point, "/onnx/click")
        h.record(SegmentationArray, f"/{ONNX}/segmentations")
        cls.stamps = []

        def camera(stamp) -> None:
            cls.stamps.append(stamp)
            cls.images.publish(live.image_message(stamp))
            infos.publish(live.camera_info(stamp))
            jpegs.publish(live.jpeg_message(stamp))
            cls.depths.publish(live.depth_message(stamp, cls.depth_mm))

        h.stream(camera)
        transform = TransformStamped()
        transform.header.frame_id, transform.child_frame_id = "world", live.CAMERA_FRAME
        transform.transform.translation.x, transform.transform.translation.y, transform.transform.translation.z = (
            CAMERA_IN_WORLD
        )
        transform.transform.rotation.w = 1.0
        cls.tf = StaticTransformBroadcaster(h.node)
        cls.tf.sendTransform(transform)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.h.close()
        rclpy.shutdown()

    # -- helpers ----------------------------------------------------------------------------------

    def segmentation(self, prompt_id: str, topic: str = f"/{NODE}/segmentations", timeout: float = 30.0, **match):
        """The first segmentation with this prompt id (and fields equal to `match`) and its array."""

        def found():
            for array in self.h.messages(topic):
                for segmentation in array.segmentations:
                    if segmentation.prompt_id == prompt_id and all(
                        getattr(segmentation, key) == value for key, value in match.items()
                    ):
                        return array, segmentation
            return None

        hit = self.h.wait_for(found, timeout)
        self.assertIsNotNone(hit, f"no segmentation for prompt {prompt_id!r} on {topic} within {timeout} s")
        return hit

    def counter(self, name: str, node: str = NODE) -> int:
        diagnostics = self.h.diagnostics(node)
        return int(diagnostics[2].get(name, 0)) if diagnostics else 0

    def click_answers(self, u: float, v: float) -> None:
        """A click on the object at (u, v) still gets a mask of it."""
        before = len(self.h.messages(f"/{NODE}/segmentations"))
        self.clicks.publish(Point(x=u, y=v))

        def answered():
            return any(
                not s.tracked and abs(s.points[0].x - u) < 1e-3
                for a in self.h.messages(f"/{NODE}/segmentations")[before:]
                for s in a.segmentations
            )

        self.assertTrue(self.h.wait_for(answered, 30.0), f"no answer to a click at ({u}, {v})")

    # -- start ------------------------------------------------------------------------------------

    def test_01_autostart_brings_both_nodes_to_active(self):
        self.assertTrue(self.h.wait_for_state(f"/{NODE}", "active"))
        self.assertTrue(self.h.wait_for_state(f"/{JPEG}", "active"))

    def test_01b_the_onnxruntime_backend_segments_without_torch_and_names_its_provider(self):
        self.assertTrue(self.h.wait_for_state(f"/{ONNX}", "active"))
        u, v = live.OBJECTS[2]
        self.onnx_clicks.publish(Point(x=u, y=v))
        _, segmentation = self.segmentation("click1", topic=f"/{ONNX}/segmentations", tracked=False)
        self.assertGreaterEqual(live.iou(live.mask_of(segmentation), live.object_mask(2)), 0.5)
        statuses = self.h.wait_for(
            lambda: [s for a in self.h.messages("/diagnostics") for s in a.status if s.name.startswith(f"{ONNX}: ")]
        )
        self.assertEqual(statuses[-1].hardware_id, "CPUExecutionProvider")
        self.assertTrue(any("CUDAExecutionProvider is not in this onnxruntime" in log for log in self.h.logs(ONNX)))

    def test_02_a_missing_checkpoint_fails_configure_and_says_why(self):
        errored = self.h.wait_for(lambda: (self.h.diagnostics(BAD) or (0,))[0] == 2, 10.0)  # 2: ERROR
        self.assertTrue(errored, f"/diagnostics of {BAD}: {self.h.diagnostics(BAD)}")
        self.assertEqual(self.h.state(f"/{BAD}"), "unconfigured")
        _, message, _ = self.h.diagnostics(BAD)
        self.assertIn("no file at '/nonexistent/sam_vit_b_01ec64.pth'", message)
        self.assertTrue(any("configure failed" in log and "no file at" in log for log in self.h.logs(BAD)))

    # -- inputs and outputs -----------------------------------------------------------------------

    def test_03_click_on_a_bgr8_stream_segments_the_object_and_labels_the_mask(self):
        u, v = live.OBJECTS[2]
        self.clicks.publish(Point(x=u, y=v))
        array, segmentation = self.segmentation("click1", tracked=False)
        mask = live.mask_of(segmentation)
        self.assertGreaterEqual(live.iou(mask, live.object_mask(2)), 0.5)
        self.assertEqual(segmentation.area, int(mask.sum()))
        self.assertGreater(segmentation.score, 0.0)
        self.assertEqual(array.header.frame_id, live.CAMERA_FRAME)
        # ~/mask: the label image of the same frame, i + 1 where the i-th segmentation is.
        labels = self.h.wait_for(
            lambda: next((m for m in self.h.messages(f"/{NODE}/mask") if m.header.stamp == array.header.stamp), None)
        )
        self.assertIsNotNone(labels)
        self.assertEqual((labels.encoding, labels.height, labels.width), ("mono8", 480, 640))
        index = [s.prompt_id for s in array.segmentations].index("click1")
        label_image = np.frombuffer(bytes(labels.data), np.uint8).reshape(480, 640)
        np.testing.assert_array_equal(label_image == index + 1, mask)

    def test_04_a_click_keeps_being_tracked_until_the_track_is_ended(self):
        self.segmentation("click1", tracked=True)  # test_03's click started a track (track_clicks: true)
        self.prompts.publish(PointPrompt(id="click1", track=False))
        time.sleep(1.0)  # let the end reach the worker
        after = len(self.h.messages(f"/{NODE}/segmentations"))
        time.sleep(1.5)
        later = [s for a in self.h.messages(f"/{NODE}/segmentations")[after:] for s in a.segmentations]
        self.assertFalse([s for s in later if s.prompt_id == "click1"], "the ended track still produced results")

    def test_05_compressed_jpeg_stream(self):
        u, v = live.OBJECTS[3]
        self.jpeg_clicks.publish(Point(x=u, y=v))
        _, segmentation = self.segmentation("click1", topic=f"/{JPEG}/segmentations", tracked=False)
        self.assertGreaterEqual(live.iou(live.mask_of(segmentation), live.object_mask(3)), 0.5)

    def test_06_a_stamped_prompt_binds_to_its_frame_with_positive_and_negative_points(self):
        time.sleep(0.5)
        stamp = self.stamps[-3]  # a frame a few hundred ms old, still buffered
        (u, v), (bu, bv) = live.OBJECTS[3], live.OBJECTS[2]
        prompt = PointPrompt(id="stamped", points=[Point(x=u, y=v), Point(x=bu, y=bv)], labels=[1, 0])
        prompt.header.stamp = stamp
        self.prompts.publish(prompt)
        array, segmentation = self.segmentation("stamped")
        self.assertEqual((array.header.stamp.sec, array.header.stamp.nanosec), (stamp.sec, stamp.nanosec))
        self.assertEqual([(p.x, p.y) for p in segmentation.points], [(u, v), (bu, bv)])
        self.assertEqual(list(segmentation.labels), [1, 0])
        self.assertEqual(segmentation.index, 3)  # several points: SAM's single-mask output
        mask = live.mask_of(segmentation)
        self.assertGreaterEqual(live.iou(mask, live.object_mask(3)), 0.5)
        self.assertFalse(mask[int(bv), int(bu)], "the negative point's object is in the mask")

    def test_07_a_detection_array_with_two_boxes_gives_two_masks(self):
        stamp = self.stamps[-2]
        msg = Detection2DArray()
        msg.header.stamp, msg.header.frame_id = stamp, live.CAMERA_FRAME
        for k in (2, 3):
            x0, y0, x1, y1 = live.object_box(k)
            detection = Detection2D(id=f"box{k}")
            detection.bbox.center.position.x, detection.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
            detection.bbox.size_x, detection.bbox.size_y = x1 - x0, y1 - y0
            msg.detections.append(detection)
        self.detections.publish(msg)
        for k in (2, 3):
            array, segmentation = self.segmentation(f"box{k}")
            self.assertEqual((array.header.stamp.sec, array.header.stamp.nanosec), (stamp.sec, stamp.nanosec))
            self.assertGreaterEqual(live.iou(live.mask_of(segmentation), live.object_mask(k)), 0.5)

    def test_08_a_3d_point_in_another_frame_is_projected_through_camera_info(self):
        u, v = live.OBJECTS[2]
        depth = 2.0  # the point 2 m in front of the camera, on the ray through (u, v)
        x, y = (u - live.CX) / live.FX * depth, (v - live.CY) / live.FY * depth
        point = PointStamped()
        point.header.frame_id, point.header.stamp = "world", self.h.now()
        ox, oy, oz = CAMERA_IN_WORLD
        point.point.x, point.point.y, point.point.z = x + ox, y + oy, depth + oz
        self.points.publish(point)
        _, segmentation = self.segmentation("click2", tracked=False)
        self.assertAlmostEqual(segmentation.points[0].x, u, places=3)
        self.assertAlmostEqual(segmentation.points[0].y, v, places=3)
        self.assertGreaterEqual(live.iou(live.mask_of(segmentation), live.object_mask(2)), 0.5)
        self.prompts.publish(PointPrompt(id="click2", track=False))

    def test_09_overlay_is_drawn_only_while_someone_subscribes(self):
        self.assertEqual(self.counter("overlays"), 0)
        overlays = self.h.record(Image, f"/{NODE}/overlay")
        time.sleep(1.0)  # discovery
        self.click_answers(*live.OBJECTS[3])
        self.assertTrue(self.h.wait_for(lambda: overlays, 10.0))
        self.assertEqual((overlays[0].encoding, overlays[0].height, overlays[0].width), ("bgr8", 480, 640))
        self.h.stop_recording(f"/{NODE}/overlay")
        time.sleep(2.0)  # discovery, and the next diagnostics
        drawn = self.counter("overlays")
        self.click_answers(*live.OBJECTS[2])
        time.sleep(2.0)
        self.assertEqual(self.counter("overlays"), drawn)

    def test_10_diagnostics_report_latency(self):
        _, message, values = self.h.wait_for(lambda: self.h.diagnostics(NODE))
        self.assertGreater(int(values["count"]), 0)
        self.assertGreater(float(values["p50_ms"]), 0.0)
        self.assertIn("p50", message)
        print(f"\nstt_node /diagnostics: {message}; p90 {values['p90_ms']} ms, results {values['results']}")

    def test_10a_grasp_outputs_lift_the_mask_to_3d_in_the_target_frame(self):
        detections = self.h.record(Detection2DArray, f"/{NODE}/detections")
        instances = self.h.record(Image, f"/{NODE}/instances")
        objects = self.h.record(Detection3DArray, f"/{NODE}/objects")
        clouds = self.h.record(PointCloud2, f"/{NODE}/points")
        masked = self.h.record(Image, f"/{NODE}/masked_depth")
        time.sleep(1.0)  # discovery: the node computes these only for subscribers
        u, v = live.OBJECTS[3]
        prompt = PointPrompt(id="grasp", points=[Point(x=u, y=v)])
        prompt.header.stamp = self.stamps[-1]
        self.prompts.publish(prompt)
        array, segmentation = self.segmentation("grasp")
        stamp = array.header.stamp
        index = [s.prompt_id for s in array.segmentations].index("grasp")
        # A frame can have two outputs (its tracks ran before the prompt arrived): every topic gets one per output.
        nth = [a for a in self.h.messages(f"/{NODE}/segmentations") if a.header.stamp == stamp].index(array)

        def of_this_frame(messages):
            def found():
                same = [m for m in list(messages) if m.header.stamp == stamp]
                return same[nth] if len(same) > nth else None

            return self.h.wait_for(found, 20.0)

        boxes = of_this_frame(detections)
        box = next(d for d in boxes.detections if d.id == "grasp")
        roi = segmentation.roi
        self.assertEqual((box.bbox.size_x, box.bbox.size_y), (roi.width, roi.height))
        self.assertAlmostEqual(box.results[0].hypothesis.score, segmentation.score, places=5)
        ids = of_this_frame(instances)
        self.assertEqual(ids.encoding, "mono16")
        id_image = np.frombuffer(bytes(ids.data), "<u2").reshape(480, 640)
        mask = live.mask_of(segmentation)  # later segmentations (tracks) win where masks overlap
        self.assertFalse(((id_image == index + 1) & ~mask).any())
        self.assertTrue((id_image[mask] > 0).all())

        world = of_this_frame(objects)
        self.assertEqual(world.header.frame_id, "world")
        obj = next(d for d in world.detections if d.id == "grasp")
        top = live.DEPTH_MM[live.object_mask(3)].astype(float)
        top_m = float(np.median(top[top > 0])) / 1000  # the flat box's top: 1.3 m from the camera
        centroid = obj.results[0].pose.pose.position
        self.assertAlmostEqual(centroid.z, top_m + CAMERA_IN_WORLD[2], delta=0.01 * top_m)  # camera -> world
        self.assertLess(obj.bbox.size.z, 0.02)  # a flat top
        cloud = of_this_frame(clouds)
        self.assertEqual(cloud.header.frame_id, "world")
        points = point_cloud2.read_points(cloud, field_names=("z", "id"))  # a structured array, as consumers read it
        mine = points[points["id"] == [d.id for d in world.detections].index("grasp") + 1]
        self.assertGreater(len(mine), 100)
        self.assertAlmostEqual(float(np.median(mine["z"])), centroid.z, places=3)
        depth = of_this_frame(masked)
        kept = np.frombuffer(bytes(depth.data), "<u2").reshape(480, 640)
        self.assertEqual(depth.encoding, "16UC1")
        self.assertTrue((kept[id_image == 0] == 0).all())
        np.testing.assert_array_equal(kept[id_image > 0], live.DEPTH_MM[id_image > 0])
        for topic in ("detections", "instances", "objects", "points", "masked_depth"):
            self.h.stop_recording(f"/{NODE}/{topic}")

    def test_10b_unusable_depth_is_warned_counted_and_the_2d_outputs_stay(self):
        objects = self.h.record(Detection3DArray, f"/{NODE}/objects")
        self.h.record(Detection3DArray, f"/{JPEG}/objects")
        time.sleep(1.0)
        bad, without = self.counter("bad_depth"), self.counter("objects_without_depth")
        weird = live.depth_message(self.h.now())
        weird.encoding = "rgb8"
        self.depths.publish(weird)
        self.assertTrue(self.h.wait_for(lambda: self.counter("bad_depth") > bad, 10.0))
        type(self).depth_mm = np.zeros_like(live.DEPTH_MM)  # the sensor sees nothing for a while
        time.sleep(0.5)
        self.click_answers(*live.OBJECTS[2])  # the 2-D outputs are still published
        self.assertTrue(self.h.wait_for(lambda: self.counter("objects_without_depth") > without, 10.0))
        type(self).depth_mm = live.DEPTH_MM
        # The JPEG node's target_frame has no transform: its 2-D results still come, its 3-D ones do not.
        self.jpeg_clicks.publish(Point(x=live.OBJECTS[3][0], y=live.OBJECTS[3][1]))
        self.assertTrue(self.h.wait_for(lambda: self.counter("tf_failures", JPEG) > 0, 20.0))
        self.assertFalse(self.h.messages(f"/{JPEG}/objects"))
        logs = " | ".join(self.h.logs(NODE) + self.h.logs(JPEG))
        for expected in ("depth encoding 'rgb8' is not supported", "fewer than min_object_points", "'nowhere'"):
            self.assertIn(expected, logs)
        self.assertTrue(objects)  # the main node's objects went on before and after

    # -- bad input --------------------------------------------------------------------------------

    def test_11_bad_input_is_warned_counted_and_survived(self):
        time.sleep(1.5)
        images, prompts = self.counter("bad_images"), self.counter("bad_prompts")
        weird = live.image_message(self.h.now())
        weird.encoding = "weird8"
        short = live.image_message(self.h.now())
        short.data = bytes(short.data)[:1000]
        self.images.publish(weird)
        self.images.publish(short)
        outside = PointPrompt(id="outside", points=[Point(x=5000.0, y=10.0)])
        not_a_number = PointPrompt(id="nan", points=[Point(x=math.nan, y=10.0)])
        self.prompts.publish(outside)
        self.prompts.publish(not_a_number)
        self.assertTrue(self.h.wait_for(lambda: self.counter("bad_images") >= images + 2, 10.0))
        self.assertTrue(self.h.wait_for(lambda: self.counter("bad_prompts") >= prompts + 2, 10.0))
        logs = " | ".join(self.h.logs(NODE))
        self.assertIn("unsupported image encoding 'weird8'", logs)
        self.assertIn("needs 921600", logs)
        self.assertIn("outside the 640x480 image", logs)
        self.assertIn("must be finite", logs)
        level, message, _ = self.h.diagnostics(NODE)
        self.assertEqual(level, 1)  # WARN: inputs rejected
        self.assertIn("inputs rejected", message)
        self.assertEqual(self.h.state(f"/{NODE}"), "active")
        self.click_answers(*live.OBJECTS[2])

    # -- lifecycle --------------------------------------------------------------------------------

    def test_12_a_transition_the_state_does_not_offer_fails_and_the_node_lives_on(self):
        self.assertFalse(self.h.change_state(f"/{NODE}", Transition.TRANSITION_ACTIVATE))
        self.assertFalse(self.h.change_state(f"/{NODE}", "configure"))
        self.assertEqual(self.h.state(f"/{NODE}"), "active")
        self.assertTrue(any("ignored; available" in log and "activate" in log for log in self.h.logs(NODE)))
        self.click_answers(*live.OBJECTS[3])

    def test_13_deactivated_is_silent_and_activate_answers_again(self):
        self.assertTrue(self.h.change_state(f"/{NODE}", Transition.TRANSITION_DEACTIVATE))
        time.sleep(0.5)
        before = len(self.h.messages(f"/{NODE}/segmentations"))
        self.clicks.publish(Point(x=live.OBJECTS[2][0], y=live.OBJECTS[2][1]))
        time.sleep(2.0)
        self.assertEqual(len(self.h.messages(f"/{NODE}/segmentations")), before)
        self.assertTrue(self.h.change_state(f"/{NODE}", Transition.TRANSITION_ACTIVATE))
        self.click_answers(*live.OBJECTS[2])

    def test_14_cleanup_configure_activate_answers_again(self):
        for transition in ("deactivate", "cleanup", "configure"):
            self.assertTrue(self.h.change_state(f"/{NODE}", transition), transition)
        time.sleep(1.0)  # the launch file's autostart acts once: nothing activates the node behind our back
        self.assertEqual(self.h.state(f"/{NODE}"), "inactive")
        self.assertTrue(self.h.change_state(f"/{NODE}", "activate"))
        self.click_answers(*live.OBJECTS[3])

    def test_15_shutdown_finalizes(self):
        self.assertTrue(self.h.change_state(f"/{NODE}", "shutdown"))
        self.assertEqual(self.h.state(f"/{NODE}"), "finalized")


@launch_testing.post_shutdown_test()
class TestExit(unittest.TestCase):
    def test_every_node_exits_cleanly_on_ctrl_c(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
