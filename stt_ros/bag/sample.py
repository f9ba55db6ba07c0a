"""A small synthetic bag (moving textured shapes, ground truth, prompts) for the demo, tests and new users.

It is laid out like a real recording: one camera in several encodings (raw and compressed), its CameraInfo,
a depth image aligned to it (16UC1 millimetres, as an RGB-D camera's "aligned depth to color" topic), an
instance image with the camera's header, and a detector's PointPrompts arriving a few milliseconds after
each frame. The depth is known geometry: a table 1.5 m below the camera, each object a box or a cylinder on
it whose top is `object_distance(k)` away, with flying pixels at the objects' edges and a sensor shadow
(no depth) beside each, as real depth sensors give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stt_ros.bag.messages import msg_type_name, typestore
from stt_ros.bag.writer import BagWriter
from stt_ros.evaluation.scenes import generate_sequence
from stt_ros.masks import interior_point
from stt_ros.pipeline.conversions import MessageKit, header_message, image_message

# Topic → raw encoding, or "jpeg" for sensor_msgs/CompressedImage as image_transport publishes it.
IMAGE_TOPICS = {
    "/camera/image_raw": "rgb8",
    "/camera/image_bgr8": "bgr8",
    "/camera/image_mono8": "mono8",
    "/camera/image_raw/compressed": "jpeg",
}
GT_TOPIC = "/camera/instances"
CAMERA_INFO_TOPIC = "/camera/camera_info"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
DEPTH_INFO_TOPIC = "/camera/aligned_depth_to_color/camera_info"
TABLE_M = 1.5  # the table's distance from the camera
SHADOW_PX = 2  # columns without depth right of each object, as a stereo or structured-light sensor leaves
PROMPT_TOPIC = "/stt/prompts"
FRAME_ID = "camera"
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000  # 10 Hz
TRANSPORT_NS = 2_000_000  # image receive delay after exposure (the header stamp)
DETECTOR_NS = 15_000_000  # prompts arrive after their frame, as from a detector


def stamped_header(stamp_ns: int) -> Any:
    return header_message(MessageKit.rosbags(), stamp_ns, FRAME_ID)


def _camera_message(kit: MessageKit, header: Any, rgb: np.ndarray, encoding: str) -> Any:
    if encoding == "jpeg":
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok, "OpenCV could not encode JPEG"
        return typestore().types["sensor_msgs/msg/CompressedImage"](
            header=header, format="rgb8; jpeg compressed bgr8", data=data.reshape(-1)
        )
    if encoding == "bgr8":
        return image_message(kit, header, rgb[:, :, ::-1], "bgr8")
    if encoding == "mono8":
        return image_message(kit, header, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), "mono8")
    return image_message(kit, header, rgb, encoding)


def object_distance(k: int) -> float:
    """Metres from the camera to the top of object k: objects 0.1 to 0.3 m tall on the table."""
    return TABLE_M - (0.10 + 0.05 * (k % 5))


def camera_info_message(header: Any, width: int, height: int) -> Any:
    """The sample camera: a pinhole of about 64 degrees horizontal field of view, no distortion."""
    types = typestore().types
    focal = 0.8 * width
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return types["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1),
        p=np.array([focal, 0, cx, 0, 0, focal, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def scene_depth(instances: np.ndarray) -> np.ndarray:
    """16UC1 millimetres aligned with `instances`: the table, each object's top (odd k: a flat box; even k: a
    cylinder lying across the image, nearest along its middle column), flying pixels, shadows."""
    metres = np.full(instances.shape, TABLE_M, dtype=np.float64)
    cols = np.arange(instances.shape[1])
    for k in range(1, int(instances.max(initial=0)) + 1):
        mask = instances == k
        if not mask.any():
            continue
        top = object_distance(k)
        if k % 2:
            metres[mask] = top
        else:
            left, right = np.flatnonzero(mask.any(axis=0))[[0, -1]]
            half = max((right - left) / 2, 1.0)
            across = np.clip((cols - (left + right) / 2) / half, -1, 1)
            radius = half * top / (0.8 * instances.shape[1])  # the cylinder's radius in metres
            metres[mask] = (top + radius * (1 - np.sqrt(1 - across**2)))[np.nonzero(mask)[1]]
        edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        metres[edge] = (metres[edge] + TABLE_M) / 2  # flying pixels: half object, half table
        shadow = cv2.dilate(mask.astype(np.uint8), np.ones((1, SHADOW_PX + 1), np.uint8), anchor=(SHADOW_PX, 0))
        metres[shadow.astype(bool) & ~mask] = 0.0
    return np.rint(metres * 1000).astype(np.uint16)


def _prompt_message(header: Any, prompt_id: str, u: float, v: float) -> Any:
    types = typestore().types
    return types[msg_type_name("PointPrompt")](
        header=header,
        id=prompt_id,
        points=[types["geometry_msgs/msg/Point"](x=u, y=v, z=0.0)],
        labels=np.ones(1, dtype=np.uint8),
        has_box=False,
        box=np.zeros(4, dtype=np.float32),
        track=False,
    )


def write_sample_bag(
    out: str | Path,
    storage: str = "mcap",
    frames: int = 20,
    width: int = 320,
    height: int = 240,
    seed: int = 0,
) -> Path:
    """Write the sample bag to `out` (a new directory) and return its path; a pure function of the args."""
    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    kit = MessageKit.rosbags()
    with BagWriter(out, storage) as bag:
        for index, scene in enumerate(generate_sequence(seed, frames, width, height)):
            stamp = START_NS + index * PERIOD_NS
            header = stamped_header(stamp)
            received = stamp + TRANSPORT_NS
            for offset, (topic, encoding) in enumerate(IMAGE_TOPICS.items()):
                bag.write(topic, _camera_message(kit, header, scene.image, encoding), received + offset)
            instances = image_message(kit, header, scene.instances.astype(np.uint16), "mono16")
            bag.write(GT_TOPIC, instances, received + len(IMAGE_TOPICS))
            info = camera_info_message(header, width, height)
            bag.write(CAMERA_INFO_TOPIC, info, received)
            bag.write(DEPTH_INFO_TOPIC, info, received + 1)
            bag.write(DEPTH_TOPIC, image_message(kit, header, scene_depth(scene.instances), "16UC1"), received + 1)
            for k in range(1, int(scene.instances.max(initial=0)) + 1):
                point = interior_point(scene.instances == k)
                if point is not None:
                    bag.write(PROMPT_TOPIC, _prompt_message(header, f"obj{k}", *point), stamp + DETECTOR_NS + k)
    return Path(out)
