"""What the launch tests share: a test-side rclpy node that publishes camera frames and prompts, records
the node's outputs and drives its lifecycle, and the scene it shows the node.

The launch tests run with `launch_test` (tests/ros_live/run.sh) against the colcon-installed package.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from launch.actions import GroupAction, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from stt_ros.bag.sample import scene_depth
from stt_ros.evaluation.scenes import generate_scene
from stt_ros.pipeline.conversions import segmentation_to_mask

# A scene the shipped reference model segments: objects 2 and 3 of seed 1 (640x480), with the points the
# single-point protocol clicks (their interior points) and their boxes.
SCENE = generate_scene(1, 640, 480)
DEPTH_MM = scene_depth(SCENE.instances)  # the sample bag's geometry: object 3 a flat box top 1.3 m away
OBJECTS = {2: (534.0, 346.0), 3: (141.0, 307.0)}
CAMERA_FRAME = "camera_optical"
FX = FY = 500.0
CX, CY = 320.0, 240.0


def object_mask(k: int) -> np.ndarray:
    return SCENE.instances == k


def object_box(k: int) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(object_mask(k))
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def mask_of(segmentation: Any) -> np.ndarray:
    return segmentation_to_mask(segmentation, SCENE.image.shape[0], SCENE.image.shape[1])


def params_file(**values: Any) -> str:
    """A parameters YAML for one node (`/**` would reach every node of the launch)."""
    lines = ["/**:", "  ros__parameters:"]
    lines += [f"    {key}: {value!r}".replace("'", '"') for key, value in values.items()]
    path = Path(tempfile.mkdtemp(prefix="stt_live_")) / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def include_stt(node_name: str, params: str, **remaps: str) -> GroupAction:
    """The package's own stt.launch.py, as users start it; scoped, so one node's remaps do not reach the next."""
    launch_file = [FindPackageShare("stt_ros"), "/launch/stt.launch.py"]
    arguments = {"node_name": node_name, "params_file": params, **remaps}
    include = IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file), launch_arguments=arguments.items())
    return GroupAction([include], scoped=True)


def image_message(stamp: Any, encoding: str = "bgr8") -> Image:
    pixels = SCENE.image[:, :, ::-1] if encoding == "bgr8" else SCENE.image
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, step=pixels.shape[1] * 3)
    msg.header.stamp, msg.header.frame_id = stamp, CAMERA_FRAME
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def jpeg_message(stamp: Any) -> CompressedImage:
    ok, data = cv2.imencode(".jpg", SCENE.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
    msg.header.stamp, msg.header.frame_id = stamp, CAMERA_FRAME
    msg.data = data.tobytes()
    return msg


def depth_message(stamp: Any, millimetres: np.ndarray = DEPTH_MM, encoding: str = "16UC1") -> Image:
    msg = Image(height=millimetres.shape[0], width=millimetres.shape[1], encoding=encoding)
    msg.step = millimetres.shape[1] * millimetres.itemsize
    msg.header.stamp, msg.header.frame_id = stamp, CAMERA_FRAME
    msg.data = np.ascontiguousarray(millimetres, dtype="<u2").tobytes()
    return msg


def camera_info(stamp: Any) -> CameraInfo:
    msg = CameraInfo(height=SCENE.image.shape[0], width=SCENE.image.shape[1], distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = stamp, CAMERA_FRAME
    msg.k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    msg.p = [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.d = [0.0] * 5
    return msg


class Harness:
    """A test-side node spinning in its own thread: publishers, recorders and lifecycle calls."""

    def __init__(self, name: str) -> None:
        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Any] = {}
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._streams: list[threading.Thread] = []
        self._streaming = threading.Event()

    def close(self) -> None:
        self._streaming.clear()
        for stream in self._streams:
            stream.join()
        self.executor.shutdown()
        self.node.destroy_node()

    def now(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def publisher(self, kind: type, topic: str, qos: Any = 10) -> Any:
        return self.node.create_publisher(kind, topic, qos)

    def record(self, kind: type, topic: str, qos: Any = 10) -> list[Any]:
        """Start keeping every message on `topic`; returns the (growing) list."""
        if topic not in self._subscriptions:

            def keep(msg: Any, topic: str = topic) -> None:
                with self._lock:
                    self.received[topic].append(msg)

            self._subscriptions[topic] = self.node.create_subscription(kind, topic, keep, qos)
        return self.received[topic]

    def stop_recording(self, topic: str) -> None:
        self.node.destroy_subscription(self._subscriptions.pop(topic))

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.received[topic])

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll `condition` until it returns something truthy (returned) or `timeout` passes (None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        return None

    def stream(self, publish: Callable[[Any], None], rate_hz: float = 10.0) -> None:
        """Call `publish(stamp)` at `rate_hz` in a thread until `close`, like a camera driver."""
        self._streaming.set()

        def run() -> None:
            while self._streaming.is_set():
                publish(self.now())
                time.sleep(1.0 / rate_hz)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._streams.append(thread)

    def _call(self, kind: type, service: str, request: Any, timeout: float = 20.0) -> Any:
        client = self.node.create_client(kind, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {service} did not appear within {timeout} s")
            future = client.call_async(request)
            if not self.wait_for(future.done, timeout):
                raise AssertionError(f"service {service} did not answer within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def state(self, node: str) -> str:
        return self._call(GetState, f"{node}/get_state", GetState.Request()).current_state.label

    def wait_for_state(self, node: str, label: str, timeout: float = 60.0) -> bool:
        return bool(self.wait_for(lambda: self.state(node) == label, timeout))

    def change_state(self, node: str, transition: int | str) -> bool:
        request = ChangeState.Request()
        if isinstance(transition, str):
            request.transition.label = transition
        else:
            request.transition = Transition(id=transition)
        return bool(self._call(ChangeState, f"{node}/change_state", request).success)

    def diagnostics(self, node_name: str) -> tuple[int, str, dict[str, str]] | None:
        """The newest /diagnostics status of `node_name`: (level, message, values)."""
        for array in reversed(self.messages("/diagnostics")):
            for status in array.status:
                if status.name.startswith(f"{node_name}: "):
                    level = status.level if isinstance(status.level, int) else ord(status.level)
                    return level, status.message, {kv.key: kv.value for kv in status.values}
        return None

    def logs(self, node_name: str) -> list[str]:
        return [log.msg for log in self.messages("/rosout") if log.name.endswith(node_name)]


SENSOR_QOS = qos_profile_sensor_data
