"""`stt_node`: the rclpy lifecycle shell around stt_ros' ROS-free node logic.

Every decision (stamp binding, tracks, queueing, conversions, projection) lives in ROS-free modules
tested without ROS; this file only wires topics, parameters, tf2 and the lifecycle to them.
"""

from __future__ import annotations

import gc
import re
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import DiagnosticStatusWrapper, Updater
from geometry_msgs.msg import Point, PointStamped
from lifecycle_msgs.msg import Transition
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from sensor_msgs_py import point_cloud2
from tf2_ros import Buffer, TransformException, TransformListener
from vision_msgs.msg import Detection2DArray, Detection3DArray

from stt_ros.msg import PointPrompt, SegmentationArray
from stt_ros.pipeline.binding import Frame, FrameBuffer, Request, RequestIds, request_from_message, stamp_to_ns
from stt_ros.pipeline.camera import apply_transform, project_point, transform_fields
from stt_ros.pipeline.conversions import (
    CLOUD_DTYPE,
    CLOUD_FIELDS,
    cloud_points,
    detection2d_array_message,
    detection3d_array_message,
    frame_messages,
    image_message,
    image_problem,
    label_image,
    mask_crop,
    overlay_image,
)
from stt_ros.pipeline.detections import detection_prompts
from stt_ros.pipeline.lifting import (
    DepthFrames,
    Intrinsics,
    LiftSettings,
    depth_from_message,
    depth_problem,
    lift_frame,
)
from stt_ros.pipeline.parameters import PARAMETERS, NodeConfig, load_predictors
from stt_ros.pipeline.scheduler import FrameOutput, FrameProcessor, Job, Worker, WorkQueue
from stt_ros.pipeline.tracking import Tracker
from stt_ros.prompts import Prompt
from stt_ros.ros.conversions import RCLPY_KIT, frame_to_rgb

THROTTLE_S = 5.0
MAX_WARNING_KINDS = 1000
TRANSITION_NAMES = {
    getattr(Transition, name): name.removeprefix("TRANSITION_").lower()
    for name in dir(Transition)
    if name.startswith("TRANSITION_")
}
EXPIRE_PERIOD_S = 0.02


class SttNode(LifecycleNode):
    """Prompts in (clicks, detections, 3-D points, PointPrompt), masks and IoU scores out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("stt_node", **kwargs)
        for parameter in PARAMETERS:
            self.declare_parameter(parameter.name, parameter.default)
        self.counts: dict[str, int] = defaultdict(int)
        self.config: NodeConfig | None = None
        self.predictor = self.stock = None
        self.worker: Worker | None = None
        self.camera_info: CameraInfo | None = None
        self.depth_info: CameraInfo | None = None
        self._outputs: list[Any] = []
        self._inputs: list[Any] = []
        self._ticks: list[Any] = []
        self.tf_buffer = self.tf_listener = None
        self.configure_error = ""
        self._warned: dict[str, float] = {}
        self._guard_transitions()
        # diagnostic_updater publishes in every state (its own `diagnostic_updater.period` parameter), so
        # /diagnostics also says when the node is unconfigured and why.
        self.diagnostics = Updater(self)
        self.diagnostics.setHardwareID("none")
        self.diagnostics.add("segmentation", self.on_diagnostics)

    def _guard_transitions(self) -> None:
        """Answer a transition the current state does not offer with "failed" instead of dying.

        rclpy without the fix of ros2/rclpy#1209 (Humble, early Jazzy) raises inside the executor for such a
        request (`activate` while active), which ends `spin()` and the process. Checking the request against
        the state machine's available transitions first works on every rclpy.
        """
        service = self._service_change_state
        handle = service.callback

        def change_state(request: Any, response: Any) -> Any:
            available = self._state_machine.available_transitions  # (id, label, start id, start label, ...)
            wanted = request.transition.label or request.transition.id
            if not any(wanted in (transition[0], transition[1]) for transition in available):
                state = self._state_machine.current_state[1]
                offered = ", ".join(f"{transition[1]} [{transition[0]}]" for transition in available)
                asked = TRANSITION_NAMES.get(wanted, wanted)
                self.get_logger().warning(
                    f"transition {asked!r} asked for in state {state!r} ignored; available: {offered}"
                )
                response.success = False
                return response
            return handle(request, response)

        service.callback = change_state

    # --- lifecycle -------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            values = {p.name: self.get_parameter(p.name).value for p in PARAMETERS}
            self.config = NodeConfig.from_values(values)
            self.get_logger().info(
                f"loading {self.config.variant} ({self.config.dtype}, device {self.config.device}); please wait"
            )
            self.predictor, self.stock = load_predictors(self.config)
        except Exception as error:  # a configure failure must say why, not crash the process
            self.configure_error = f"configure failed: {error}"
            self.get_logger().error(self.configure_error)
            self._release_models()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        config = self.config
        self.ids = RequestIds("p")
        self.click_ids = RequestIds("click")
        self.buffer = FrameBuffer(config.frame_buffer_size, config.tolerance_ns, config.max_pending_prompts)
        self.tracker = Tracker(config.max_tracks, config.track_min_score, config.track_min_area)
        self.queue = WorkQueue(config.max_queued_frames)
        self.processor = FrameProcessor(
            self.predictor, self.tracker, config.multimask, self.stock, config.stock_sam_crossover, frame_to_rgb
        )
        self.pub_segmentations = self.create_lifecycle_publisher(SegmentationArray, "~/segmentations", 10)
        self.pub_mask = self.create_lifecycle_publisher(Image, "~/mask", 10)
        self.pub_overlay = self.create_lifecycle_publisher(Image, "~/overlay", 10)
        self.pub_detections = self.create_lifecycle_publisher(Detection2DArray, "~/detections", 10)
        self.pub_instances = self.create_lifecycle_publisher(Image, "~/instances", 10)
        self.pub_objects = self.create_lifecycle_publisher(Detection3DArray, "~/objects", 10)
        self.pub_points = self.create_lifecycle_publisher(PointCloud2, "~/points", 10)
        self.pub_masked_depth = self.create_lifecycle_publisher(Image, "~/masked_depth", 10)
        self._outputs = [
            self.pub_segmentations, self.pub_mask, self.pub_overlay, self.pub_detections, self.pub_instances,
            self.pub_objects, self.pub_points, self.pub_masked_depth,
        ]  # fmt: skip
        self.depth_frames = DepthFrames(config.frame_buffer_size, round(float(config.depth_tolerance) * 1e9))
        self.lift_settings = LiftSettings(
            int(config.depth_erosion), (float(config.depth_min), float(config.depth_max)), int(config.min_object_points)
        )
        self.diagnostics.setHardwareID(str(self.predictor.device))
        self.tf_buffer = Buffer()
        # The listener's subscriptions sit in their own reentrant group: with the multi-threaded executor
        # of `main`, tf keeps arriving while `on_clicked_point` waits for a transform.
        self.tf_listener = TransformListener(self.tf_buffer, self)
        for note in getattr(self.predictor, "notes", ()):  # execution providers ONNX Runtime skipped
            self.get_logger().warning(f"onnxruntime: {note}")
        where = f"{config.backend}, adapter {Path(self.predictor.adapter).name}"
        self.get_logger().info(f"configured: {config.variant} ({where}) on {self.predictor.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        config = self.config
        if config.image_qos == "sensor_data":
            image_qos = qos_profile_sensor_data
        else:
            image_qos = QoSProfile(
                depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
            )
        image_type = CompressedImage if config.image_transport == "compressed" else Image
        image_topic = "image/compressed" if config.image_transport == "compressed" else "image"
        self._inputs = [
            self.create_subscription(image_type, image_topic, self.on_image, image_qos),
            self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, image_qos),
            self.create_subscription(PointPrompt, "prompts", self.on_prompt, 10),
            self.create_subscription(Point, "image_mouse_left", self.on_mouse, 10),
            self.create_subscription(PointStamped, "clicked_point", self.on_clicked_point, 10),
            self.create_subscription(Detection2DArray, "detections", self.on_detections, 10),
        ]
        if config.depth_mode == "on":
            compressed = config.depth_transport == "compressed"
            depth = self.create_subscription(
                CompressedImage if compressed else Image,
                "depth/compressed" if compressed else "depth",
                self.on_depth,
                image_qos,
            )
            self._depth_topic = depth.topic_name
            self._inputs += [
                depth,
                self.create_subscription(CameraInfo, "depth_camera_info", self.on_depth_info, image_qos),
            ]
        self._ticks = [self.create_timer(EXPIRE_PERIOD_S, self.on_expire)]
        self.worker = Worker(self.queue, self.processor, self.on_output, self.on_error)
        self.worker.start()
        self.get_logger().info(f"active: listening on {self._inputs[0].topic_name}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        for publisher in self._outputs:
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = []
        self.tf_listener = self.tf_buffer = None
        self._release_models()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._release_models()
        return TransitionCallbackReturn.SUCCESS

    def _stop(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        for timer in self._ticks:
            self.destroy_timer(timer)
        self._inputs, self._ticks = [], []
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
            self.queue = WorkQueue(self.config.max_queued_frames)  # a closed queue takes nothing
            self.buffer.clear()
            self.tracker.clear()
            self.depth_frames.clear()

    def _release_models(self) -> None:
        """Drop the model and hand its GPU memory back (cleanup / shutdown / failed configure)."""
        self.predictor = self.stock = self.processor = None
        gc.collect()
        torch = sys.modules.get("torch")  # an onnxruntime backend never imports it
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- inputs (executor thread) ----------------------------------------------------------------

    def _warn(self, counter: str, message: str) -> None:
        """Count a problem and log it, unless one like it (the same words, other numbers) was logged in the
        last THROTTLE_S: a bad stream floods no log, and a second kind of problem is not hidden by the first."""
        self.counts[counter] += 1
        kind, now = re.sub(r"\d+", "#", message), time.monotonic()
        if now - self._warned.get(kind, -THROTTLE_S) >= THROTTLE_S:
            if len(self._warned) > MAX_WARNING_KINDS:
                self._warned.clear()
            self._warned[kind] = now
            self.get_logger().warning(message)

    def on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def on_depth_info(self, msg: CameraInfo) -> None:
        self.depth_info = msg

    def on_depth(self, msg: Any) -> None:
        problem = depth_problem(msg)  # every depth frame, as for colour frames
        if problem:
            self._warn("bad_depth", f"depth image on {self._depth_topic} ignored: {problem}")
            return
        self.counts["depth_frames"] += 1
        self.depth_frames.add(stamp_to_ns(msg.header.stamp), msg)

    def on_image(self, msg: Any) -> None:
        problem = image_problem(msg)  # every frame, so a bad stream is reported before anyone clicks
        if problem:
            self._warn("bad_images", f"image on {self._inputs[0].topic_name} ignored: {problem}")
            return
        frame = Frame(stamp_to_ns(msg.header.stamp), msg.header, msg, time.monotonic())
        self.counts["frames"] += 1
        self._dispatch(self.buffer.add_frame(frame))
        if len(self.tracker):
            self.queue.submit_tracking(frame)

    def on_expire(self) -> None:
        self._dispatch(self.buffer.expire(self.get_clock().now().nanoseconds))

    def _dispatch(self, bound: list[tuple[Frame, Request]]) -> None:
        by_frame: dict[int, tuple[Frame, list[Request]]] = {}
        for frame, request in bound:
            by_frame.setdefault(id(frame), (frame, []))[1].append(request)
        for frame, requests in by_frame.values():
            for job in self.queue.submit(frame, requests):
                self._warn(
                    "dropped_prompts",
                    f"model is behind: dropped {len(job.requests)} prompt(s) of the frame at "
                    f"{job.frame.stamp_ns / 1e9:.3f} s (raise max_queued_frames or send fewer prompts)",
                )

    def _bind(self, request: Request) -> None:
        stats = self.buffer.stats
        before = stats.too_old + stats.no_frame_near + stats.pending_overflow
        frame = self.buffer.bind(request)
        if frame is not None:
            self._dispatch([(frame, request)])
        elif stats.too_old + stats.no_frame_near + stats.pending_overflow > before:
            self._warn(
                "unbound_prompts",
                f"prompt {request.prompt_id!r} at {request.stamp_ns / 1e9:.3f} s has no buffered frame "
                f"within {self.config.prompt_tolerance} s (raise frame_buffer_size or prompt_tolerance, "
                "or check that the prompt and image clocks agree)",
            )

    def on_prompt(self, msg: PointPrompt) -> None:
        try:
            request = request_from_message(msg, self.ids, time.monotonic())
        except ValueError as error:
            self._warn("bad_prompts", f"ignored PointPrompt: {error}")
            return
        self._bind(request)

    def _click(self, u: float, v: float, stamp_ns: int) -> None:
        prompt_id = self.click_ids()
        prompt = Prompt(points=[(u, v)], labels=[1], id=prompt_id)
        self._bind(Request(prompt_id, prompt, self.config.track_clicks, stamp_ns, "click", time.monotonic()))

    def on_mouse(self, msg: Point) -> None:
        self._click(float(msg.x), float(msg.y), 0)

    def on_clicked_point(self, msg: PointStamped) -> None:
        info = self.camera_info
        if info is None:
            self._warn("bad_points", "clicked_point ignored: no camera_info received yet")
            return
        camera_frame = info.header.frame_id
        point = (msg.point.x, msg.point.y, msg.point.z)
        try:
            if msg.header.frame_id and msg.header.frame_id != camera_frame:
                point = apply_transform(point, *transform_fields(self._lookup(camera_frame, msg.header)))
            u, v = project_point(point, info, self.config.camera_model)
        except (TransformException, ValueError) as error:
            self._warn("bad_points", f"clicked_point in {msg.header.frame_id!r} ignored: {error}")
            return
        self._click(u, v, stamp_to_ns(msg.header.stamp))

    def _lookup(self, target: str, header: Any) -> Any:
        timeout = Duration(seconds=float(self.config.tf_timeout))
        try:
            return self.tf_buffer.lookup_transform(
                target, header.frame_id, Time.from_msg(header.stamp), timeout
            )
        except TransformException:
            # rviz2 stamps clicks with "now", often just past the newest transform: use the latest.
            return self.tf_buffer.lookup_transform(target, header.frame_id, Time(), timeout)

    def on_detections(self, msg: Detection2DArray) -> None:
        try:
            prompts = detection_prompts(msg, self.config.detection_prompt_mode)
        except (ValueError, AttributeError) as error:
            self._warn("bad_detections", f"ignored Detection2DArray: {error}")
            return
        stamp = stamp_to_ns(msg.header.stamp)
        for prompt in prompts:
            track = bool(self.config.track_detections)
            self._bind(Request(prompt.id, prompt, track, stamp, "detections", time.monotonic()))

    # --- outputs (worker thread) -----------------------------------------------------------------

    def on_error(self, job: Job, error: Exception) -> None:
        self._warn("failed_frames", f"frame at {job.frame.stamp_ns / 1e9:.3f} s skipped: {error}")

    def on_output(self, output: FrameOutput) -> None:
        for rejected in output.rejected:
            self._warn("bad_prompts", f"prompt rejected: {rejected}")
        for track_id, reason in output.ended:
            self.get_logger().info(f"track {track_id!r} ended: {reason}")
        if not (output.items or output.ended or output.rejected):
            return
        header = output.frame.header
        prompts = [item.prompt for item in output.items]
        results = [item.result for item in output.items]
        tracked = {item.prompt_id for item in output.items if item.tracked}
        crops = [mask_crop(result.mask) for result in results]
        shape = output.rgb.shape[:2]
        segmentations, labels = frame_messages(
            RCLPY_KIT, header, shape, prompts, results, tracked, output.latency_ms, crops
        )
        self.pub_segmentations.publish(segmentations)
        self.pub_mask.publish(labels)
        masks, ids = [result.mask for result in results], [prompt.id for prompt in prompts]
        scores = [float(result.score) for result in results]
        if _subscribed(self.pub_overlay):
            points = [prompt.points for prompt in prompts]
            self.pub_overlay.publish(
                image_message(RCLPY_KIT, header, overlay_image(output.rgb, masks, points), "bgr8")
            )
            self.counts["overlays"] += 1
        if _subscribed(self.pub_detections):
            self.pub_detections.publish(detection2d_array_message(RCLPY_KIT, header, ids, scores, crops))
        if _subscribed(self.pub_instances):
            instances = label_image(masks, *shape, crops, dtype=np.uint16)
            self.pub_instances.publish(image_message(RCLPY_KIT, header, instances, "mono16"))
        if self.config.depth_mode == "on" and any(
            map(_subscribed, (self.pub_objects, self.pub_points, self.pub_masked_depth))
        ):
            self._publish_3d(header, output.frame.stamp_ns, shape, masks, crops, ids, scores)
        self.counts["results"] += len(output.items)
        self.counts["stock_sam_frames"] += int(output.stock)

    def _publish_3d(
        self, header: Any, stamp_ns: int, shape: tuple[int, int], masks: list, crops: list, ids: list, scores: list
    ) -> None:
        """~/objects, ~/points and ~/masked_depth of one frame; a problem skips them (warned, counted), never
        the 2-D outputs."""
        depth_msg = self.depth_frames.nearest(stamp_ns)
        if depth_msg is None:
            self._warn(
                "frames_without_depth",
                f"no depth image within depth_tolerance ({self.config.depth_tolerance} s) of the frame at "
                f"{stamp_ns / 1e9:.3f} s: is `depth` published and stamped like the colour image?",
            )
            return
        try:
            colour = Intrinsics.from_camera_info(self.camera_info) if self.camera_info else None
            depth_camera = Intrinsics.from_camera_info(self.depth_info) if self.depth_info else None
            depth = depth_from_message(depth_msg)
            lifted = lift_frame(depth, shape, crops, colour, depth_camera, self.lift_settings, self._depth_to_colour())
        except (ValueError, TransformException) as error:
            self._warn("bad_depth", f"depth at {stamp_ns / 1e9:.3f} s not lifted: {error}")
            return
        if lifted.too_few:
            self._warn(
                "objects_without_depth",
                f"{', '.join(repr(ids[i]) for i in lifted.too_few)}: fewer than min_object_points "
                f"({self.config.min_object_points}) valid depth points; left out of ~/objects and ~/points",
            )
        if lifted.aligned and _subscribed(self.pub_masked_depth):
            keep = label_image(masks, *shape, crops) > 0
            self.pub_masked_depth.publish(
                image_message(RCLPY_KIT, depth_msg.header, np.where(keep, depth.pixels, 0), depth.encoding)
            )
        # Aligned depth is in its own optical frame; reprojected depth is in the colour camera's.
        frame_id = depth_msg.header.frame_id if lifted.aligned else self.camera_info.header.frame_id
        objects, target = lifted.objects, str(self.config.target_frame) or frame_id
        if target != frame_id:
            try:
                transform = self.tf_buffer.lookup_transform(
                    target, frame_id, Time.from_msg(header.stamp), Duration(seconds=float(self.config.tf_timeout))
                )
            except TransformException as error:
                self._warn("tf_failures", f"no transform {frame_id!r} -> target_frame {target!r}: {error}")
                return
            objects = [obj.transformed(*transform_fields(transform)) for obj in objects]
        out_header = type(header)(stamp=header.stamp, frame_id=target)
        kept_ids, kept_scores = [ids[i] for i in lifted.kept], [scores[i] for i in lifted.kept]
        self.pub_objects.publish(detection3d_array_message(RCLPY_KIT, out_header, kept_ids, kept_scores, objects))
        if _subscribed(self.pub_points):
            fields = [PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in CLOUD_FIELDS]
            cloud = cloud_points(objects)
            points = point_cloud2.create_cloud(out_header, fields, cloud, CLOUD_DTYPE.itemsize)
            points.is_dense = True  # lifting keeps only finite points
            self.pub_points.publish(points)

    def _depth_to_colour(self) -> tuple | None:
        """The transform from the depth camera's optical frame to the colour one's, when they differ."""
        if self.depth_info is None or self.camera_info is None:
            return None
        source, target = self.depth_info.header.frame_id, self.camera_info.header.frame_id
        if not source or not target or source == target:
            return None
        return transform_fields(self.tf_buffer.lookup_transform(target, source, Time()))

    def on_diagnostics(self, status: DiagnosticStatusWrapper) -> DiagnosticStatusWrapper:
        """Latency percentiles, rates, drops and every counter; or why the node is not segmenting."""
        if self.worker is None:
            state = self._state_machine.current_state[1]
            if self.configure_error:
                status.summary(DiagnosticStatus.ERROR, self.configure_error)
            else:
                status.summary(DiagnosticStatus.OK, f"{state}: not segmenting")
            return status
        latency = self.processor.latency.summary()
        queue, binding = self.queue.stats, self.buffer.stats
        values = {
            **{key: f"{value:.2f}" if isinstance(value, float) else value for key, value in latency.items()},
            "queue_depth": self.queue.depth,
            "dropped_jobs": queue.dropped_jobs,
            "dropped_prompts": queue.dropped_requests,
            "skipped_tracking_frames": queue.skipped_tracking_frames,
            "prompts_too_old": binding.too_old,
            "prompts_without_frame": binding.no_frame_near,
            "prompts_pending_overflow": binding.pending_overflow,
            "prompts_waiting": len(self.buffer.pending),
            "tracks": len(self.tracker),
            **dict(sorted(self.counts.items())),
        }
        for key, value in values.items():
            status.add(key, str(value))
        problems = (
            "bad_images", "bad_prompts", "bad_points", "bad_detections", "failed_frames", "unbound_prompts",
            "bad_depth", "frames_without_depth", "objects_without_depth", "tf_failures",
        )  # fmt: skip
        dropped = queue.dropped_jobs + binding.too_old + binding.no_frame_near + self.counts["failed_frames"]
        rejected = sum(self.counts[name] for name in problems)
        message = f"p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, {latency['rate_hz']:.1f} Hz"
        message += f", {dropped} dropped" if dropped else ""
        message += f", {rejected} inputs rejected" if rejected else ""
        status.summary(DiagnosticStatus.WARN if dropped or rejected else DiagnosticStatus.OK, message)
        return status


def _subscribed(publisher: Any) -> bool:
    return publisher.get_subscription_count() > 0


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run stt_ros stt_node`; the node starts unconfigured (launch autostarts it)."""
    rclpy.init(args=args)
    node = None
    try:
        node = SttNode()
        # Node callbacks share the default mutually exclusive group, so they still run one at a time.
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C in a launch terminal reaches the node twice (the terminal and launch both send SIGINT): the
        # second must not cut the cleanup short with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node._stop()
            node._release_models()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
