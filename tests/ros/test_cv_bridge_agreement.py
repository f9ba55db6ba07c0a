"""The node decodes frames with cv_bridge, the offline tools with rosbags-image: both give the same pixels.

Needs ROS 2's cv_bridge and rosbags-image in one Python (the ROS tests' `/usr/bin/python3`); skipped elsewhere.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("cv_bridge")
pytest.importorskip("rosbags.image")
sensor_msgs = pytest.importorskip("sensor_msgs.msg")

from stt_ros.pipeline import conversions  # noqa: E402
from stt_ros.ros.conversions import frame_to_rgb  # noqa: E402

RNG = np.random.default_rng(11)


def raw(encoding: str, height: int, width: int, padding: int, bigendian: bool) -> sensor_msgs.Image:
    """A random frame in `encoding`, each row padded by `padding` bytes of garbage."""
    row = width * conversions._PIXEL_BYTES[encoding]
    data = RNG.integers(0, 256, (height, row + padding), dtype=np.uint8)
    msg = sensor_msgs.Image(
        height=height, width=width, encoding=encoding, is_bigendian=int(bigendian), step=row + padding
    )
    msg.data = data.tobytes()
    return msg


@pytest.mark.parametrize("encoding", conversions.SUPPORTED_ENCODINGS)
@pytest.mark.parametrize(("padding", "bigendian"), [(0, False), (6, False), (4, True)])
def test_raw_encodings_agree(encoding, padding, bigendian):
    msg = raw(encoding, 6, 8, padding, bigendian)
    np.testing.assert_array_equal(frame_to_rgb(msg), conversions.message_to_rgb(msg))


@pytest.mark.parametrize(
    ("shape", "dtype", "ext"),
    [((6, 8, 3), np.uint8, ".jpg"), ((6, 8, 3), np.uint8, ".png"), ((6, 8), np.uint8, ".jpg"),
     ((6, 8), np.uint16, ".png"), ((6, 8, 4), np.uint8, ".png"), ((6, 8, 3), np.uint16, ".png")],
)  # fmt: skip
def test_compressed_images_agree(shape, dtype, ext):
    pixels = RNG.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    ok, encoded = cv2.imencode(ext, pixels)
    assert ok
    msg = sensor_msgs.CompressedImage(format=f"{ext[1:]} compressed")
    msg.data = encoded.tobytes()
    np.testing.assert_array_equal(frame_to_rgb(msg), conversions.message_to_rgb(msg))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "nv21", "weird8"])
def test_both_refuse_what_is_not_a_colour_frame(encoding):
    msg = raw("mono8", 4, 4, 0, False)
    msg.encoding = encoding
    for decode in (frame_to_rgb, conversions.message_to_rgb):
        with pytest.raises(ValueError, match="unsupported image encoding"):
            decode(msg)


def test_the_offline_cloud_is_what_sensor_msgs_py_builds():
    """The node builds ~/points with sensor_msgs_py; the results bag with its own builder: the same message."""
    from sensor_msgs_py import point_cloud2
    from std_msgs.msg import Header

    from stt_ros.pipeline.conversions import CLOUD_DTYPE, CLOUD_FIELDS, point_cloud_message
    from stt_ros.ros.conversions import RCLPY_KIT

    cloud = np.zeros(5, dtype=CLOUD_DTYPE)
    cloud["x"], cloud["y"], cloud["z"], cloud["id"] = RNG.random(5), RNG.random(5), RNG.random(5) + 1, [1, 1, 2, 2, 3]
    fields = [sensor_msgs.PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in CLOUD_FIELDS]
    header = Header(frame_id="camera")
    theirs = point_cloud2.create_cloud(header, fields, cloud, CLOUD_DTYPE.itemsize)
    theirs.is_dense = True  # as the node sets it: lifted points are all finite
    ours = point_cloud_message(RCLPY_KIT, header, cloud)
    assert ours == theirs
    back = point_cloud2.read_points(ours, field_names=("x", "id"))
    np.testing.assert_array_equal(back["id"], [1, 1, 2, 2, 3])
