"""A small synthetic bag (moving textured shapes, ground truth, prompts) for the demo, tests and new users.

It is laid out like a real recording: one camera in several encodings (raw and compressed), an instance
image with the camera's header, and a detector's PointPrompts arriving a few milliseconds after each frame.
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
from stt_ros.pipeline.conversions import MessageKit, image_message

# Topic → raw encoding, or "jpeg" for sensor_msgs/CompressedImage as image_transport publishes it.
IMAGE_TOPICS = {
    "/camera/image_raw": "rgb8",
    "/camera/image_bgr8": "bgr8",
    "/camera/image_mono8": "mono8",
    "/camera/image_raw/compressed": "jpeg",
}
GT_TOPIC = "/camera/instances"
PROMPT_TOPIC = "/stt/prompts"
FRAME_ID = "camera"
START_NS = 1_700_000_000 * 10**9
PERIOD_NS = 100_000_000  # 10 Hz
TRANSPORT_NS = 2_000_000  # image receive delay after exposure (the header stamp)
DETECTOR_NS = 15_000_000  # prompts arrive after their frame, as from a detector


def stamped_header(stamp_ns: int) -> Any:
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=FRAME_ID)


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


def instance_message(kit: MessageKit, header: Any, instances: np.ndarray) -> Any:
    """A mono16 little-endian instance image (0 background, k the k-th object)."""
    height, width = instances.shape
    data = np.ascontiguousarray(instances, dtype="<u2").view(np.uint8)
    return kit.image(
        header=header,
        height=height,
        width=width,
        encoding="mono16",
        is_bigendian=0,
        step=2 * width,
        data=kit.pack_uint8(data),
    )


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
            bag.write(GT_TOPIC, instance_message(kit, header, scene.instances), received + len(IMAGE_TOPICS))
            for k in range(1, int(scene.instances.max(initial=0)) + 1):
                point = interior_point(scene.instances == k)
                if point is not None:
                    bag.write(PROMPT_TOPIC, _prompt_message(header, f"obj{k}", *point), stamp + DETECTOR_NS + k)
    return Path(out)
