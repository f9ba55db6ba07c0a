"""Masks lifted to 3-D with synthetic depth of known geometry: the answers are known exactly."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_ros.bag.messages import typestore
from stt_ros.pipeline import lifting
from stt_ros.pipeline.camera import matrix_quaternion, quaternion_matrix
from stt_ros.pipeline.conversions import (
    CLOUD_DTYPE,
    MessageKit,
    cloud_points,
    detection2d_array_message,
    detection3d_array_message,
    image_message,
    label_image,
    mask_crop,
    point_cloud_message,
)

STORE = typestore()
KIT = MessageKit.rosbags()
CAMERA = lifting.Intrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
BACKGROUND_M = 2.0


def fronto_parallel_box(width_m: float, height_m: float, distance_m: float, centre=(320, 240)):
    """A W x H m face at `distance_m` facing the camera, on a wall 2 m away; its mask and depth (metres).

    The face's edge pixels are "flying": half object, half wall, as a real sensor reports them.
    """
    u0, v0 = centre
    half_w = width_m / 2 * CAMERA.fx / distance_m
    half_h = height_m / 2 * CAMERA.fy / distance_m
    cols, rows = np.meshgrid(np.arange(640), np.arange(480))
    mask = (np.abs(cols - u0) <= half_w) & (np.abs(rows - v0) <= half_h)
    depth = np.where(mask, distance_m, BACKGROUND_M).astype(np.float32)
    edge = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    depth[edge] = (distance_m + BACKGROUND_M) / 2
    return mask, depth


def as_message(metres: np.ndarray, encoding: str, padding: int = 0, bigendian: bool = False):
    pixels = np.rint(metres * 1000).astype(np.uint16) if encoding == "16UC1" else metres.astype(np.float32)
    pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = pixels.view(np.uint8).reshape(pixels.shape[0], -1)
    data = np.zeros((rows.shape[0], rows.shape[1] + padding), np.uint8)
    data[:, : rows.shape[1]] = rows
    return SimpleNamespace(
        encoding=encoding,
        height=pixels.shape[0],
        width=pixels.shape[1],
        step=data.shape[1],
        is_bigendian=int(bigendian),
        data=data.tobytes(),
    )


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("erosion", [1, 2, 4])
def test_a_box_of_known_size_at_a_known_distance(encoding, erosion):
    width_m, height_m, distance = 0.30, 0.20, 1.2
    mask, metres = fronto_parallel_box(width_m, height_m, distance)
    depth = lifting.depth_from_message(as_message(metres, encoding, padding=6))
    assert depth.encoding == encoding
    obj = lifting.lift_mask(mask, depth.metres, CAMERA, erosion_px=erosion)
    assert abs(obj.centroid[2] - distance) <= 0.01 * distance
    assert np.allclose(obj.centroid[:2], [(320 - CAMERA.cx) * distance / 500, (240 - CAMERA.cy) * distance / 500])
    # The erosion takes `erosion` px off each side, n pixels span n - 1 pixel centres, and the pixel grid up
    # to one more: the extent may fall short by this much, never exceed the box.
    margin = (2 * erosion + 2) * distance / CAMERA.fx
    assert width_m - margin <= obj.size[0] <= width_m
    assert height_m - margin <= obj.size[1] <= height_m
    assert obj.size[2] < 1e-6  # a flat face: no extent along its normal
    assert abs(abs(obj.axes[2, 2]) - 1) < 1e-6  # ... which is the camera's z axis
    assert obj.points[:, 2].max() == pytest.approx(distance, abs=1e-3)  # no flying pixel got in
    assert obj.valid_pixels == obj.mask_pixels == len(obj.points) and obj.coverage == 1.0


def test_invalid_depth_is_dropped_and_counted():
    mask, metres = fronto_parallel_box(0.3, 0.3, 1.0)
    inside = np.argwhere(cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool))
    for (row, col), bad in zip(inside[:30], [0.0, np.nan, np.inf] * 10, strict=True):
        metres[row, col] = bad
    metres[tuple(inside[30:40].T)] = 25.0  # beyond depth_range
    obj = lifting.lift_mask(mask, lifting.depth_metres(metres, "32FC1"), CAMERA, erosion_px=2)
    assert obj.mask_pixels - obj.valid_pixels == 40
    assert obj.coverage == pytest.approx(1 - 40 / obj.mask_pixels)
    assert np.isfinite(obj.points).all() and obj.points[:, 2].max() <= 10.0


def test_no_valid_depth_gives_an_empty_object():
    mask, _ = fronto_parallel_box(0.3, 0.3, 1.0)
    obj = lifting.lift_mask(mask, np.full(mask.shape, np.nan, np.float32), CAMERA)
    assert len(obj.points) == 0 and obj.valid_pixels == 0 and obj.mask_pixels > 0 and obj.coverage == 0.0


def test_a_transform_moves_the_object_exactly():
    mask, metres = fronto_parallel_box(0.3, 0.2, 1.5, centre=(200, 300))
    obj = lifting.lift_mask(mask, metres, CAMERA)
    translation, rotation = (0.5, -1.0, 0.25), (0.0, 0.0, np.sin(0.3), np.cos(0.3))
    moved = obj.transformed(translation, rotation)
    r = quaternion_matrix(*rotation)
    np.testing.assert_allclose(moved.centroid, r @ obj.centroid + translation, atol=1e-9)
    np.testing.assert_allclose(moved.center, r @ obj.center + translation, atol=1e-9)
    np.testing.assert_allclose(moved.points, obj.points @ r.T + translation, atol=1e-5)
    np.testing.assert_allclose(moved.size, obj.size)
    np.testing.assert_allclose(quaternion_matrix(*moved.orientation), r @ obj.axes, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), erosion=st.integers(0, 3))
def test_lifting_on_each_box_equals_lifting_on_the_frame(seed, erosion):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.05, 12.0, (48, 64)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = np.nan
    masks = [np.zeros((48, 64), bool) for _ in range(3)]
    for mask in masks[:2]:
        y, x = rng.integers(0, 40), rng.integers(0, 56)
        mask[y : y + rng.integers(1, 20), x : x + rng.integers(1, 20)] = True
    camera = lifting.Intrinsics(50.0, 55.0, 31.5, 23.5, 64, 48)
    whole_frame = [lifting.lift_mask(m, depth, camera, erosion) for m in masks]
    boxes = lifting.lift_masks([mask_crop(m) for m in masks], depth, camera, erosion)
    for one, whole in zip(boxes, whole_frame, strict=True):
        np.testing.assert_allclose(np.sort(one.points, axis=0), np.sort(whole.points, axis=0), rtol=1e-6)
        assert (one.mask_pixels, one.valid_pixels) == (whole.mask_pixels, whole.valid_pixels)


@settings(max_examples=100, deadline=None)
@given(q=st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: np.linalg.norm(q) > 0.1))
def test_quaternions_round_trip(q):
    r = quaternion_matrix(*q)
    back = matrix_quaternion(r)
    np.testing.assert_allclose(quaternion_matrix(*back), r, atol=1e-9)
    assert back[3] >= 0


@pytest.mark.parametrize("bigendian", [False, True])
def test_depth_messages_decode_in_either_byte_order(bigendian):
    metres = np.array([[0.0, 1.234], [2.5, np.nan]], np.float32)
    for encoding in ("16UC1", "32FC1"):
        sent = np.nan_to_num(metres) if encoding == "16UC1" else metres  # 16UC1 has no NaN: 0 is "none"
        depth = lifting.depth_from_message(as_message(sent, encoding, 2, bigendian))
        np.testing.assert_allclose(depth.metres, [[np.nan, 1.234], [2.5, np.nan]], atol=1e-6)


def compressed_depth(pixels: np.ndarray, encoding: str, quant=(0.0, 0.0)):
    ok, png = cv2.imencode(".png", pixels)
    assert ok
    header = struct.pack("<iff", 0, *quant)  # image_transport's ConfigHeader: format, depth quantisation A, B
    return SimpleNamespace(format=f"{encoding}; compressedDepth png", data=header + png.tobytes())


def test_compressed_depth_of_both_kinds():
    mm = np.array([[0, 1500], [800, 65535]], np.uint16)
    depth = lifting.depth_from_message(compressed_depth(mm, "16UC1"))
    np.testing.assert_allclose(depth.metres, [[np.nan, 1.5], [0.8, 65.535]])
    quant_a, quant_b = 100.0, 10.0  # image_transport's default depth quantisation
    metres = np.array([[1.0, 2.0], [0.0, 4.0]])
    inverse = np.where(metres > 0, quant_a / np.where(metres > 0, metres, 1) + quant_b, 0).round().astype(np.uint16)
    depth = lifting.depth_from_message(compressed_depth(inverse, "32FC1", (quant_a, quant_b)))
    np.testing.assert_allclose(depth.metres, [[1.0, 2.0], [np.nan, 4.0]], rtol=0.01)


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (SimpleNamespace(encoding="rgb8", height=2, width=2, step=6, is_bigendian=0, data=bytes(12)), "16UC1"),
        (SimpleNamespace(encoding="16UC1", height=2, width=2, step=4, is_bigendian=0, data=bytes(6)), "does not fit"),
        (SimpleNamespace(format="jpeg", data=b"xxxxxxxxxxxxxxxx"), "compressedDepth"),
        (SimpleNamespace(format="16UC1; compressedDepth png", data=bytes(40)), "16-bit PNG"),
    ],
)
def test_bad_depth_is_refused_naming_the_problem(msg, message):
    with pytest.raises(ValueError, match=message):
        lifting.depth_from_message(msg)


def test_registering_depth_into_a_larger_colour_camera():
    depth_camera = lifting.Intrinsics(250.0, 250.0, 159.5, 119.5, 320, 240)
    wall = np.full((240, 320), 1.5, np.float32)
    registered = lifting.register_depth(wall, depth_camera, CAMERA)
    seen = np.isfinite(registered)
    assert seen.mean() > 0.2 and np.allclose(registered[seen], 1.5)
    same = lifting.register_depth(wall, depth_camera, depth_camera)
    np.testing.assert_allclose(same, wall)
    moved = lifting.register_depth(wall, depth_camera, depth_camera, translation=(0.0, 0.0, 0.5))
    assert np.allclose(moved[np.isfinite(moved)], 2.0)


def test_aligned_depth_says_what_to_remap():
    small = lifting.DepthImage.of(np.full((240, 320), 1000, np.uint16), "16UC1")
    with pytest.raises(ValueError, match="aligned_depth_to_color"):
        lifting.aligned_depth(small, (480, 640), CAMERA, None)
    with pytest.raises(ValueError, match="no camera_info"):
        lifting.aligned_depth(lifting.DepthImage.of(np.ones((480, 640), np.uint16), "16UC1"), (480, 640), None, None)
    depth_camera = lifting.Intrinsics(250, 250, 159.5, 119.5, 320, 240)
    metres, camera = lifting.aligned_depth(small, (480, 640), CAMERA, depth_camera)
    assert metres.shape == (480, 640) and camera == CAMERA


def test_the_cloud_round_trips_and_its_ids_select_each_object():
    objects = []
    for k, distance in enumerate((0.8, 1.1, 1.4)):
        mask, metres = fronto_parallel_box(0.1, 0.1, distance, centre=(150 + 150 * k, 240))
        objects.append(lifting.lift_mask(mask, metres, CAMERA))
    msg = point_cloud_message(KIT, stamped_header(), cloud_points(objects))
    back = STORE.deserialize_cdr(STORE.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)
    cloud = np.frombuffer(bytes(back.data), dtype=CLOUD_DTYPE)
    assert back.width == len(cloud) == sum(len(o.points) for o in objects) and back.point_step == 14
    fields = [(f.name, f.offset, f.datatype) for f in back.fields]
    assert fields == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("id", 12, 4)]
    for index, obj in enumerate(objects):
        mine = cloud[cloud["id"] == index + 1]
        np.testing.assert_array_equal(np.stack([mine["x"], mine["y"], mine["z"]], axis=1), obj.points)


def stamped_header():
    types = STORE.types
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="cam")


def test_detection_arrays_carry_boxes_scores_and_ids():
    mask, metres = fronto_parallel_box(0.3, 0.2, 1.2)
    empty = np.zeros_like(mask)
    crops = [mask_crop(mask), mask_crop(empty)]
    two_d = detection2d_array_message(KIT, stamped_header(), ["mug", "nothing"], [0.9, 0.1], crops)
    back = STORE.deserialize_cdr(STORE.serialize_cdr(two_d, two_d.__msgtype__), two_d.__msgtype__)
    (x, _, w, h), _ = crops[0]
    [detection] = back.detections  # the empty mask has no box
    assert detection.id == "mug" and detection.results[0].hypothesis.score == pytest.approx(0.9)
    assert (detection.bbox.center.position.x, detection.bbox.size_x, detection.bbox.size_y) == (x + w / 2, w, h)
    obj = lifting.lift_mask(mask, metres, CAMERA)
    three_d = detection3d_array_message(KIT, stamped_header(), ["mug"], [0.9], [obj])
    back = STORE.deserialize_cdr(STORE.serialize_cdr(three_d, three_d.__msgtype__), three_d.__msgtype__)
    box = back.detections[0].bbox
    assert (box.size.x, box.size.y) == pytest.approx(tuple(obj.size[:2]))
    assert box.center.position.z == pytest.approx(obj.center[2])
    assert back.detections[0].results[0].pose.pose.position.z == pytest.approx(obj.centroid[2])


def test_mono16_instance_ids_follow_the_segmentation_order_past_255():
    masks = [np.zeros((20, 20), bool) for _ in range(300)]
    for i, mask in enumerate(masks):
        mask.flat[i] = True
    ids = label_image(masks, 20, 20, dtype=np.uint16)
    assert ids.dtype == np.uint16 and [int(ids.flat[i]) for i in range(300)] == list(range(1, 301))
    msg = image_message(KIT, stamped_header(), ids, "mono16")
    assert (msg.encoding, msg.step) == ("mono16", 40)
    with pytest.raises(ValueError, match="at most 255"):
        label_image(masks, 20, 20)


def test_depth_frames_pair_the_nearest_within_the_tolerance():
    frames = lifting.DepthFrames(capacity=3, tolerance_ns=10)
    assert frames.nearest(100) is None
    for stamp in (100, 120, 140, 160):  # the first falls out of the buffer
        frames.add(stamp, f"depth{stamp}")
    assert frames.nearest(123) == "depth120" and frames.nearest(161) == "depth160"
    assert frames.nearest(100) is None and frames.nearest(175) is None
    frames.clear()
    assert frames.nearest(160) is None


def test_a_frame_keeps_the_objects_with_enough_points():
    big, metres = fronto_parallel_box(0.3, 0.3, 1.0)
    tiny = np.zeros_like(big)
    tiny[10:13, 10:13] = True  # 9 pixels: nothing left after erosion
    crops = [mask_crop(big), mask_crop(np.zeros_like(big)), mask_crop(tiny)]
    depth = lifting.DepthImage.of(np.rint(metres * 1000).astype(np.uint16), "16UC1")
    frame = lifting.lift_frame(depth, (480, 640), crops, CAMERA, None, lifting.LiftSettings(min_points=20))
    assert frame.aligned and frame.kept == [0] and frame.too_few == [2] and frame.lifted[1] is None
    assert frame.objects[0].centroid[2] == pytest.approx(1.0)
