"""The node's side of `stt_ros.pipeline.conversions`: cv_bridge decoding and rclpy's message classes.

Camera frames go through cv_bridge, so users' encodings convert exactly as in every other ROS node; the
offline tools convert with rosbags-image, which agrees pixel for pixel (tests/ros/test_cv_bridge_agreement.py).
"""

from __future__ import annotations

import array
import importlib
from functools import cache
from typing import Any

import numpy as np
from cv_bridge import CvBridge, CvBridgeError
from cv_bridge.boost.cv_bridge_boost import cvtColor2
from rclpy.serialization import serialize_message as serialize_message  # CDR bytes as a publish writes them
from sensor_msgs.msg import Image

from stt_ros.pipeline.conversions import MessageKit, decoded_encoding, image_problem, pixel_rows

_BRIDGE = CvBridge()


def _pack_uint8(values: np.ndarray) -> array.array:
    # rclpy checks every element of anything but array.array('B'): slow for images.
    return array.array("B", np.ascontiguousarray(values, dtype=np.uint8).tobytes())


@cache
def _rclpy_class(typename: str) -> type:
    """"sensor_msgs/msg/Image" → sensor_msgs.msg.Image, from the generated Python packages."""
    package, _, name = typename.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


RCLPY_KIT = MessageKit(_rclpy_class, _pack_uint8)


def frame_to_rgb(msg: Any) -> np.ndarray:
    """An Image or CompressedImage → HxWx3 rgb8; ValueError naming the problem when it cannot be one."""
    problem = image_problem(msg)
    if problem:
        raise ValueError(problem)
    try:
        if hasattr(msg, "format"):
            # Decoded as it is, then converted as what it decoded to: grey and 16-bit PNGs work as well.
            pixels = _BRIDGE.compressed_imgmsg_to_cv2(msg, "passthrough")
            if pixels is None:
                raise ValueError(f"could not decode compressed image (format {msg.format!r}); send JPEG or PNG")
            return cvtColor2(pixels, decoded_encoding(pixels), "rgb8")
        rows = pixel_rows(msg)
        if rows.shape[1] != msg.step:
            unpadded = Image(height=msg.height, width=msg.width, encoding=msg.encoding, is_bigendian=msg.is_bigendian)
            unpadded.step, unpadded.data = rows.shape[1], rows.tobytes()
            msg = unpadded
        return _BRIDGE.imgmsg_to_cv2(msg, "rgb8")
    except (CvBridgeError, RuntimeError) as error:
        kind = getattr(msg, "encoding", "compressed")
        raise ValueError(f"cv_bridge could not convert the {kind} image: {error}") from error
