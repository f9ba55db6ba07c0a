"""Image and result conversions against rosbags' real ROS 2 message types, through CDR."""

from __future__ import annotations

import array
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stt_ros.bag.messages import typestore
from stt_ros.pipeline import conversions as conv

STORE = typestore()
TYPES = STORE.types
KIT = conv.MessageKit.rosbags()
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The ROS 2 Bayer patterns: which RGB channel sits at (row % 2, col % 2).
BAYER = {"rggb": "RGGB", "bggr": "BGGR", "gbrg": "GBRG", "grbg": "GRBG"}


def header(sec: int = 1, nanosec: int = 2):
    return TYPES["std_msgs/msg/Header"](
        stamp=TYPES["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id="camera_optical"
    )


def raw_image(pixels: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False):
    """A rosbags sensor_msgs/Image holding `pixels` (HxWxC or HxW), each row padded by `padding` bytes."""
    height, width = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if bigendian else "<u2")
    rows = pixels.reshape(height, -1).view(np.uint8)
    step = rows.shape[1] + padding
    data = np.zeros((height, step), dtype=np.uint8)
    data[:, : rows.shape[1]] = rows
    image = TYPES["sensor_msgs/msg/Image"](
        header=header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=data.reshape(-1),
    )
    return through_cdr(image, "sensor_msgs/msg/Image")


def through_cdr(msg, typename):
    return STORE.deserialize_cdr(STORE.serialize_cdr(msg, typename), typename)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    raw = np.zeros(rgb.shape[:2], dtype=np.uint8)
    for dy in range(2):
        for dx in range(2):
            raw[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(pattern[2 * dy + dx])]
    return raw


sizes = st.tuples(st.integers(1, 9), st.integers(1, 9))


@st.composite
def rgb_images(draw, min_size=1):
    h, w = draw(st.tuples(st.integers(min_size, 9), st.integers(min_size, 9)))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@SETTINGS
@given(rgb=rgb_images(), padding=st.integers(0, 7))
def test_colour_encodings_are_exact(rgb, padding):
    alpha = np.full((*rgb.shape[:2], 1), 77, dtype=np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        out = conv.image_to_rgb(raw_image(np.ascontiguousarray(pixels), encoding, padding))
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)


@SETTINGS
@given(rgb=rgb_images(), padding=st.integers(0, 5))
def test_mono8_is_grey_in_all_channels(rgb, padding):
    grey = rgb[:, :, 0]
    out = conv.image_to_rgb(raw_image(np.ascontiguousarray(grey), "mono8", padding))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def cv_bridge_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit → 8-bit as cv_bridge's convertTo scales it: × 255/65535, rounded."""
    return np.rint(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


@SETTINGS
@given(
    size=sizes,
    seed=st.integers(0, 2**32 - 1),
    padding=st.sampled_from([0, 2, 6]),
    bigendian=st.booleans(),
    bits=st.sampled_from([10, 12, 16]),
)
def test_mono16_either_endianness_scales_as_cv_bridge(size, seed, padding, bigendian, bits):
    values = np.random.default_rng(seed).integers(0, 2**bits, size, dtype=np.uint16)
    out = conv.image_to_rgb(raw_image(values, "mono16", padding, bigendian))
    np.testing.assert_array_equal(out, np.repeat(cv_bridge_8bit(values)[:, :, None], 3, axis=2))


@SETTINGS
@given(size=sizes, seed=st.integers(0, 2**32 - 1), padding=st.sampled_from([0, 2]), bigendian=st.booleans())
def test_16_bit_colour_encodings_scale_as_cv_bridge(size, seed, padding, bigendian):
    rgb16 = np.random.default_rng(seed).integers(0, 2**16, (*size, 3), dtype=np.uint16)
    alpha = np.full((*size, 1), 1000, dtype=np.uint16)
    cases = {
        "rgb16": rgb16,
        "bgr16": rgb16[:, :, ::-1],
        "rgba16": np.concatenate([rgb16, alpha], axis=2),
        "bgra16": np.concatenate([rgb16[:, :, ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        out = conv.image_to_rgb(raw_image(np.ascontiguousarray(pixels), encoding, padding, bigendian))
        np.testing.assert_array_equal(out, cv_bridge_8bit(rgb16), err_msg=encoding)


def test_yuv422_of_a_flat_grey_is_that_grey():
    # UYVY (yuv422) and YUYV (yuv422_yuy2) with neutral chroma: every pixel is the luma in BT.601 video range.
    height, width, luma = 4, 6, 140
    uyvy = np.tile(np.array([128, luma], dtype=np.uint8), (height, width))
    yuyv = np.tile(np.array([luma, 128], dtype=np.uint8), (height, width))
    for encoding, pixels in (("yuv422", uyvy), ("yuv422_yuy2", yuyv)):
        out = conv.image_to_rgb(raw_image(pixels.reshape(height, width, 2), encoding))
        assert out.shape == (height, width, 3)
        assert (out == round(255 / 219 * (luma - 16))).all(), encoding


@pytest.mark.parametrize("pattern", sorted(BAYER))
@SETTINGS
@given(
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    size=st.tuples(st.integers(3, 9), st.integers(3, 9)),
    padding=st.integers(0, 3),
)
def test_bayer_of_a_flat_colour_gives_that_colour(pattern, colour, size, padding):
    rgb = np.zeros((*size, 3), dtype=np.uint8)
    rgb[:] = colour
    raw = mosaic(rgb, BAYER[pattern])
    out = conv.image_to_rgb(raw_image(raw, f"bayer_{pattern}8", padding))
    assert out.shape == rgb.shape
    # Demosaicking guesses at the border; inside, a flat colour must come back exactly.
    np.testing.assert_array_equal(out[1:-1, 1:-1], rgb[1:-1, 1:-1])


def test_bayer_patterns_are_distinguished():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[:] = (250, 120, 5)
    out = conv.image_to_rgb(raw_image(mosaic(rgb, "RGGB"), "bayer_bggr8"))
    assert not (out == rgb).all()


def compressed(rgb: np.ndarray, ext: str):
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = TYPES["sensor_msgs/msg/CompressedImage"](
        header=header(), format=f"rgb8; {ext[1:]} compressed bgr8", data=encoded.reshape(-1)
    )
    return through_cdr(msg, "sensor_msgs/msg/CompressedImage")


@SETTINGS
@given(rgb=rgb_images())
def test_png_compressed_is_exact(rgb):
    np.testing.assert_array_equal(conv.message_to_rgb(compressed(rgb, ".png")), rgb)


@SETTINGS
@given(colour=st.tuples(*[st.integers(0, 255)] * 3))
def test_jpeg_compressed_keeps_the_colour(colour):
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[:] = colour
    out = conv.message_to_rgb(compressed(rgb, ".jpg"))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).max() <= 6


def test_compressed_mono_and_16_bit_png():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _, encoded = cv2.imencode(".png", grey)
    out = conv.compressed_image_to_rgb(
        SimpleNamespace(format="mono8; png compressed mono8", data=encoded.tobytes())
    )
    np.testing.assert_array_equal(out[:, :, 1], grey)
    grey16 = grey.astype(np.uint16) * 300
    _, encoded = cv2.imencode(".png", grey16)
    out = conv.compressed_image_to_rgb(SimpleNamespace(format="mono16; png compressed mono16", data=encoded))
    np.testing.assert_array_equal(out[:, :, 2], cv_bridge_8bit(grey16))


def test_rclpy_style_array_data_is_read():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = SimpleNamespace(
        encoding="rgb8", height=2, width=3, step=9, is_bigendian=0, data=array.array("B", rgb.tobytes())
    )
    np.testing.assert_array_equal(conv.message_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoding": "32FC1"}, "unsupported image encoding '32FC1'"),
        ({"encoding": "nv21"}, "supported: rgb8"),
        ({"encoding": "RGB8"}, "unsupported image encoding 'RGB8'"),
        ({"encoding": "yuv422", "step": 6, "data": bytes(12)}, "width 3 is odd"),
        ({"step": 5}, "shorter than a row"),
        ({"data": bytes(10)}, "needs 18"),
        ({"height": 0}, "empty"),
    ],
)
def test_bad_images_raise_value_errors_naming_the_problem(fields, message):
    msg = SimpleNamespace(
        **{
            "encoding": "rgb8",
            "height": 2,
            "width": 3,
            "step": 9,
            "is_bigendian": 0,
            "data": bytes(18),
            **fields,
        }
    )
    with pytest.raises(ValueError, match=message):
        conv.image_to_rgb(msg)


@settings(max_examples=300, deadline=None)
@given(
    encoding=st.sampled_from(conv.SUPPORTED_ENCODINGS),
    height=st.integers(-1, 5),
    width=st.integers(-1, 5),
    step_delta=st.integers(-3, 3),
    size_delta=st.integers(-3, 3),
)
def test_image_problem_accepts_exactly_the_frames_that_decode(encoding, height, width, step_delta, size_delta):
    """The per-frame header check says yes iff decoding succeeds: no frame passes it and then fails."""
    pixel = {
        **dict.fromkeys(("rgb8", "bgr8"), 3), **dict.fromkeys(("rgba8", "bgra8"), 4),
        **dict.fromkeys(("rgb16", "bgr16"), 6), **dict.fromkeys(("rgba16", "bgra16"), 8),
        **dict.fromkeys(("yuv422", "yuv422_yuy2", "mono16"), 2), "mono8": 1,
    }.get(encoding, 2 if encoding.endswith("16") else 1)  # fmt: skip
    step = max(width, 0) * pixel + step_delta
    size = max(step * max(height, 0) + size_delta, 0)
    msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step, is_bigendian=0, data=bytes(size))
    problem = conv.image_problem(msg)
    if problem is None:
        assert conv.image_to_rgb(msg).shape == (height, width, 3)
    else:
        with pytest.raises(ValueError, match=re.escape(problem)):
            conv.image_to_rgb(msg)
        odd_yuv = encoding.startswith("yuv422") and width % 2
        assert height <= 0 or width <= 0 or step_delta < 0 or size_delta < 0 or odd_yuv


def test_bad_compressed_images_raise_value_errors():
    with pytest.raises(ValueError, match="could not decode"):
        conv.compressed_image_to_rgb(SimpleNamespace(format="jpeg", data=b"not a jpeg"))
    with pytest.raises(ValueError, match="empty compressed image"):
        conv.compressed_image_to_rgb(SimpleNamespace(format="jpeg", data=b""))
    with pytest.raises(ValueError, match="depth"):
        conv.compressed_image_to_rgb(SimpleNamespace(format="16UC1; compressedDepth png", data=b"\0" * 20))


def result(mask, score=0.9, scores=(0.1, 0.9, 0.5), index=1):
    return SimpleNamespace(mask=mask, score=score, scores=scores, index=index)


@SETTINGS
@given(
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    seed=st.integers(0, 2**32 - 1),
    density=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
)
def test_segmentation_round_trip_is_lossless(size, seed, density):
    mask = np.random.default_rng(seed).random(size) < density
    seg = conv.segmentation_message(KIT, header(), "cup", result(mask), [(1.5, 2.0)], [1], True, 12.5)
    array_msg = conv.segmentation_array_message(KIT, header(), [seg])
    back = through_cdr(array_msg, "stt_ros/msg/SegmentationArray")
    seg = back.segmentations[0]
    np.testing.assert_array_equal(conv.segmentation_to_mask(seg, *size), mask)
    assert seg.area == mask.sum() and seg.prompt_id == "cup" and seg.tracked
    assert seg.index == 1 and seg.scores.tolist() == pytest.approx([0.1, 0.9, 0.5])
    assert (seg.points[0].x, seg.points[0].y) == (1.5, 2.0) and seg.labels.tolist() == [1]
    assert seg.latency_ms == pytest.approx(12.5)
    if mask.any():
        rows, cols = np.nonzero(mask)
        assert (seg.roi.x_offset, seg.roi.y_offset) == (cols.min(), rows.min())
        assert (seg.roi.width, seg.roi.height) == (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
        assert seg.mask.encoding == "mono8" and set(np.unique(seg.mask.data)) <= {0, 255}
    else:
        assert seg.roi.width == seg.roi.height == 0 and seg.mask.data.size == 0


def test_segmentation_that_does_not_fit_is_rejected():
    seg = conv.segmentation_message(KIT, header(), "a", result(np.ones((4, 4), bool)), [], [], False, 0.0)
    with pytest.raises(ValueError, match="does not fit"):
        conv.segmentation_to_mask(seg, 3, 3)


def test_label_image_and_overlay():
    a = np.zeros((6, 8), bool)
    a[1:4, 1:4] = True
    b = np.zeros((6, 8), bool)
    b[3:6, 3:8] = True
    labels = conv.label_image([a, b], 6, 8)
    assert labels[0, 0] == 0 and labels[1, 1] == 1 and labels[3, 3] == 2 and labels[5, 7] == 2
    msg = through_cdr(conv.image_message(KIT, header(), labels, "mono8"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(conv.image_to_rgb(msg)[:, :, 0], labels)
    rgb = np.full((6, 8, 3), 100, dtype=np.uint8)
    bgr = conv.overlay_image(rgb, [a, b], [[(2.0, 2.0)], [(5.0, 4.0)]])
    assert bgr.shape == (6, 8, 3) and bgr.dtype == np.uint8
    msg = through_cdr(conv.image_message(KIT, header(), bgr, "bgr8"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(conv.image_to_rgb(msg), bgr[:, :, ::-1])
    with pytest.raises(ValueError, match="at most 255"):
        conv.label_image([a] * 256, 6, 8)


def test_overlay_tints_inside_outlines_and_leaves_the_rest():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    a = np.zeros((40, 60), bool)
    a[5:25, 5:30] = True
    b = np.zeros((40, 60), bool)
    b[20:38, 35:58] = True
    out = conv.overlay_image(rgb, [a, b], [[(10.0, 10.0)], [(40.0, 30.0)]])
    bgr = rgb[:, :, ::-1].astype(int)
    grown = cv2.dilate((a | b).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    np.testing.assert_array_equal(out[~grown], bgr[~grown])  # far from every mask: the image itself
    inner = cv2.erode(a.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    inner[5:16, 5:16] = False  # the prompt's dot
    colour = conv._colour(0).astype(int)
    assert np.abs(out[inner].astype(int) - (bgr[inner] + colour) / 2).max() <= 0.5  # half image, half colour
    edge = a & ~cv2.erode(a.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert (out[edge] == conv._colour(0)).all(axis=1).mean() > 0.9  # outlined in the mask's colour
