"""Image and result message conversions, shared by the rclpy node and the offline (rosbags) tools.

Functions read and build messages by field name only, so the same code serves rclpy messages and
`rosbags` dataclasses. Masks travel as mono8 0/255 crops of their bounding box: lossless, and small.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

# Encodings a camera frame may have → bytes per pixel: what cv_bridge (in the node) and rosbags-image
# (offline) both turn into rgb8, and agree on exactly (tests/ros checks the pair). Depth and other
# non-colour encodings (16UC1, 32FC1) are refused by both.
_PIXEL_BYTES = {
    "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8,
    "mono8": 1, "mono16": 2, "yuv422": 2, "yuv422_yuy2": 2,
    **{f"bayer_{pattern}{bits}": bits // 8 for bits in (8, 16) for pattern in ("rggb", "bggr", "gbrg", "grbg")},
}  # fmt: skip
SUPPORTED_ENCODINGS = tuple(_PIXEL_BYTES)
# A decoded CompressedImage (OpenCV's layout) → the encoding it is, by (channels, dtype).
_DECODED = {(1, "uint8"): "mono8", (1, "uint16"): "mono16", (3, "uint8"): "bgr8", (3, "uint16"): "bgr16",
            (4, "uint8"): "bgra8", (4, "uint16"): "bgra16"}  # fmt: skip


def _bytes(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's `data` (bytes, array.array, numpy array or list of ints)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).astype(np.uint8, copy=False)
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "buffer_info"):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_problem(msg: Any) -> str | None:
    """Why `msg` (Image or CompressedImage) cannot be a camera frame, read from its fields alone; None if it can.

    Cheap enough for every frame: the node checks each one as it arrives, so a camera that publishes an
    unusable stream is reported at once, not at the first click.
    """
    data_size = len(msg.data)
    if hasattr(msg, "format"):
        fmt = str(msg.format)
        if "compresseddepth" in fmt.lower():
            return f"compressed image format {fmt!r} is a depth image; subscribe to a colour or mono image instead"
        return None if data_size else f"empty compressed image (format {fmt!r}); send JPEG or PNG"
    encoding = str(msg.encoding)
    if encoding not in SUPPORTED_ENCODINGS:
        return (
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            "(or publish sensor_msgs/CompressedImage as JPEG/PNG)"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        return f"empty {encoding} image ({width}x{height})"
    if encoding.startswith("yuv422") and width % 2:
        return f"{encoding} image width {width} is odd; in yuv422 two pixels share their colour, so it must be even"
    row_bytes = width * _PIXEL_BYTES[encoding]
    if step < row_bytes:
        return f"{encoding} image step {step} is shorter than a row ({width} px = {row_bytes} bytes)"
    if data_size < step * height:
        return f"{encoding} image data has {data_size} bytes; {width}x{height} with step {step} needs {step * height}"
    return None


def decoded_encoding(pixels: np.ndarray) -> str:
    """The ROS encoding of an array OpenCV decoded from a CompressedImage (channel order BGR)."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    try:
        return _DECODED[(channels, str(pixels.dtype))]
    except KeyError:
        raise ValueError(f"a compressed image decoded to {channels} channels of {pixels.dtype}") from None


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """Pixels in `encoding` (unpadded, native byte order) → HxWx3 rgb8, as cv_bridge converts them.

    The offline twin of the node's cv_bridge: rosbags-image does the colour conversion; 16-bit images are
    scaled by 255/65535 and rounded, as cv_bridge's `convertTo` does (rosbags-image truncates).
    """
    from rosbags.image import image_to_cvimage

    pixels = np.ascontiguousarray(pixels)
    native = SimpleNamespace(
        encoding=encoding,
        height=pixels.shape[0],
        width=pixels.shape[1],
        is_bigendian=int(sys.byteorder == "big"),
        data=pixels,
    )
    if pixels.dtype.itemsize == 2:
        return np.rint(image_to_cvimage(native, "rgb16") * (255.0 / 65535.0)).astype(np.uint8)
    return np.ascontiguousarray(image_to_cvimage(native, "rgb8"))


def pixel_rows(msg: Any) -> np.ndarray:
    """An Image's pixel bytes without row padding, height × (width · bytes per pixel) uint8.

    cv_bridge's Python side reads a row as `step` divided by the pixel size and so shears any image whose
    padding is not a whole number of pixels; the node hands it these rows instead.
    """
    height, step = int(msg.height), int(msg.step)
    return _bytes(msg.data)[: step * height].reshape(height, step)[:, : int(msg.width) * _PIXEL_BYTES[msg.encoding]]


def image_to_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image → HxWx3 RGB uint8 (a new array), without ROS.

    Honours `step` (row padding) and `is_bigendian`. Raises ValueError naming the problem for an
    unsupported encoding or a buffer that does not match height/width/step.
    """
    problem = image_problem(msg)
    if problem:
        raise ValueError(problem)
    encoding, height, width = str(msg.encoding), int(msg.height), int(msg.width)
    depth = 2 if encoding.endswith("16") else 1
    channels = _PIXEL_BYTES[encoding] // depth
    rows = pixel_rows(msg)
    if depth == 2:
        rows = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2").astype(np.uint16)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return to_rgb8(np.ascontiguousarray(rows).reshape(shape), encoding)


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG or PNG, as image_transport's `compressed` plugin sends) → RGB.

    Decoded by OpenCV as it is (cv_bridge's `passthrough`), then converted as the raw encoding it decoded to,
    so grey and 16-bit PNGs work too.
    """
    problem = image_problem(msg)
    if problem:
        raise ValueError(problem)
    data = _bytes(msg.data)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError(
            f"could not decode compressed image (format {msg.format!r}, {data.size} bytes); send JPEG or PNG"
        )
    return to_rgb8(decoded, decoded_encoding(decoded))


def message_to_rgb(msg: Any) -> np.ndarray:
    """Image or CompressedImage → HxWx3 RGB uint8 (a CompressedImage is the one with `format`)."""
    return compressed_image_to_rgb(msg) if hasattr(msg, "format") else image_to_rgb(msg)


@dataclass(frozen=True)
class MessageKit:
    """Where message classes come from, and how a uint8[] field wants its bytes.

    The same builders serve the node (rclpy's generated classes; `array.array('B')` bytes, since rclpy checks
    anything else element by element) and the offline tools (a rosbags typestore's dataclasses; numpy bytes).
    rosbags dataclasses have no defaults, so builders give every field.
    """

    lookup: Callable[[str], Callable[..., Any]]  # full ROS type name, e.g. "sensor_msgs/msg/Image" → class
    pack_uint8: Callable[[np.ndarray], Any]

    def new(self, typename: str, **fields: Any) -> Any:
        return self.lookup(typename)(**fields)

    @classmethod
    def rosbags(cls, distro: str = "humble") -> MessageKit:
        """The kit for rosbags dataclasses from `stt_ros.bag.messages.typestore(distro)`."""
        from stt_ros.bag.messages import typestore

        types = typestore(distro).types
        return cls(types.__getitem__, lambda array: np.ascontiguousarray(array, dtype=np.uint8).reshape(-1))


def header_message(kit: MessageKit, stamp_ns: int, frame_id: str) -> Any:
    """A std_msgs/Header stamped `stamp_ns` nanoseconds since the epoch."""
    stamp = kit.new("builtin_interfaces/msg/Time", sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return kit.new("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)


def image_message(kit: MessageKit, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """A sensor_msgs/Image from an HxW or HxWxC array of any dtype (mono8, bgr8, mono16, 32FC1, ...), unpadded
    and little-endian."""
    pixels = np.ascontiguousarray(pixels, dtype=np.asarray(pixels).dtype.newbyteorder("<"))
    height, width = pixels.shape[:2]
    return kit.new(
        "sensor_msgs/msg/Image",
        header=header,
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=0,
        step=int(pixels.nbytes // max(height, 1)),
        data=kit.pack_uint8(pixels.view(np.uint8)),
    )


Crop = tuple[tuple[int, int, int, int], np.ndarray]


def mask_crop(mask: np.ndarray) -> Crop:
    """(x_offset, y_offset, width, height) of the mask's bounding box and the mask inside it (a view).

    Found once per result: the Segmentation's mask and the label image both work on the box, not the frame.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0), np.zeros((0, 0), dtype=bool)
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(axis=0))  # only the rows the mask spans
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    return (x0, y0, x1 - x0, y1 - y0), mask[y0:y1, x0:x1]


def segmentation_message(
    kit: MessageKit,
    header: Any,
    prompt_id: str,
    result: Any,
    points: Sequence[tuple[float, float]],
    labels: Sequence[int],
    tracked: bool,
    latency_ms: float,
    crop: Crop | None = None,
) -> Any:
    """One stt_ros/Segmentation from a predictor result (`.mask`, `.score`, `.scores`, `.index`)."""
    (x, y, width, height), crop = crop or mask_crop(result.mask)
    return kit.new(
        "stt_ros/msg/Segmentation",
        prompt_id=str(prompt_id),
        roi=kit.new(
            "sensor_msgs/msg/RegionOfInterest", x_offset=x, y_offset=y, height=height, width=width, do_rectify=False
        ),
        mask=image_message(kit, header, crop.astype(np.uint8) * 255, "mono8"),
        score=float(result.score),
        scores=np.asarray(result.scores, dtype=np.float32).reshape(3),
        index=int(result.index),
        points=[kit.new("geometry_msgs/msg/Point", x=float(u), y=float(v), z=0.0) for u, v in points],
        labels=kit.pack_uint8(np.asarray(labels, dtype=np.uint8)),
        area=int(np.count_nonzero(crop)),
        tracked=bool(tracked),
        latency_ms=float(latency_ms),
    )


def segmentation_array_message(kit: MessageKit, header: Any, segmentations: Sequence[Any]) -> Any:
    """The stt_ros/SegmentationArray for one image, carrying the image's header."""
    return kit.new("stt_ros/msg/SegmentationArray", header=header, segmentations=list(segmentations))


def frame_messages(
    kit: MessageKit,
    header: Any,
    shape: tuple[int, int],
    prompts: Sequence[Any],
    results: Sequence[Any],
    tracked: Collection[str] = (),
    latency_ms: float = 0.0,
    crops: Sequence[Crop] | None = None,
) -> tuple[Any, Any]:
    """One frame's outputs, as the node publishes them and the results bag stores them: the
    SegmentationArray and the mono8 label image (`shape` is the image's (height, width)).

    Prompts whose id is in `tracked` came from the tracker, not from a new prompt; `crops`: the results'
    `mask_crop`s, when already known.
    """
    crops = crops if crops is not None else [mask_crop(result.mask) for result in results]
    segmentations = [
        segmentation_message(
            kit, header, prompt.id, result, prompt.points, prompt.label_array(), prompt.id in tracked, latency_ms, crop
        )
        for prompt, result, crop in zip(prompts, results, crops, strict=True)
    ]
    labels = label_image([result.mask for result in results], *shape, crops)
    return segmentation_array_message(kit, header, segmentations), image_message(kit, header, labels, "mono8")


# The objects' cloud: x, y, z (PointField FLOAT32 = 7) and the object's id, its index + 1 (UINT16 = 4).
CLOUD_FIELDS = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("id", 12, 4))
CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "id"], "formats": ["<f4", "<f4", "<f4", "<u2"],
                        "offsets": [0, 4, 8, 12], "itemsize": 14})  # fmt: skip


def cloud_points(objects: Sequence[Any]) -> np.ndarray:
    """Every object's points in one structured array (CLOUD_DTYPE), `id` = the object's index + 1."""
    cloud = np.zeros(sum(len(obj.points) for obj in objects), dtype=CLOUD_DTYPE)
    start = 0
    for index, obj in enumerate(objects):
        end = start + len(obj.points)
        for axis, name in enumerate("xyz"):
            cloud[name][start:end] = obj.points[:, axis]
        cloud["id"][start:end] = index + 1
        start = end
    return cloud


def point_cloud_message(kit: MessageKit, header: Any, cloud: np.ndarray) -> Any:
    """A sensor_msgs/PointCloud2 of `cloud_points`, laid out as sensor_msgs_py's create_cloud lays it out
    (the node uses that; rosbags has no such helper, and tests/ros checks the two agree byte for byte)."""
    fields = [kit.new("sensor_msgs/msg/PointField", name=n, offset=o, datatype=d, count=1) for n, o, d in CLOUD_FIELDS]
    return kit.new(
        "sensor_msgs/msg/PointCloud2",
        header=header,
        height=1,
        width=len(cloud),
        fields=fields,
        is_bigendian=False,
        point_step=CLOUD_DTYPE.itemsize,
        row_step=CLOUD_DTYPE.itemsize * len(cloud),
        data=kit.pack_uint8(cloud.view(np.uint8)),
        is_dense=True,
    )


def _hypotheses(kit: MessageKit, score: float, position: Sequence[float], orientation: Sequence[float]) -> list:
    pose = kit.new(
        "geometry_msgs/msg/PoseWithCovariance", pose=_pose(kit, position, orientation), covariance=np.zeros(36)
    )
    hypothesis = kit.new("vision_msgs/msg/ObjectHypothesis", class_id="", score=float(score))
    return [kit.new("vision_msgs/msg/ObjectHypothesisWithPose", hypothesis=hypothesis, pose=pose)]


def _pose(kit: MessageKit, position: Sequence[float], orientation: Sequence[float]) -> Any:
    x, y, z = (float(c) for c in position)
    qx, qy, qz, qw = (float(c) for c in orientation)
    return kit.new(
        "geometry_msgs/msg/Pose",
        position=kit.new("geometry_msgs/msg/Point", x=x, y=y, z=z),
        orientation=kit.new("geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw),
    )


def detection2d_array_message(
    kit: MessageKit, header: Any, ids: Sequence[str], scores: Sequence[float], crops: Sequence[Crop]
) -> Any:
    """vision_msgs/Detection2DArray: each non-empty mask's box, its predicted IoU as the score, the prompt id as
    the detection id, so box consumers plug in."""
    detections = []
    for prompt_id, score, ((x, y, w, h), _) in zip(ids, scores, crops, strict=True):
        if not w:
            continue
        centre = kit.new(
            "vision_msgs/msg/Pose2D", position=kit.new("vision_msgs/msg/Point2D", x=x + w / 2, y=y + h / 2), theta=0.0
        )
        bbox = kit.new("vision_msgs/msg/BoundingBox2D", center=centre, size_x=float(w), size_y=float(h))
        results = _hypotheses(kit, score, (x + w / 2, y + h / 2, 0.0), (0.0, 0.0, 0.0, 1.0))
        detections.append(
            kit.new("vision_msgs/msg/Detection2D", header=header, results=results, bbox=bbox, id=str(prompt_id))
        )
    return kit.new("vision_msgs/msg/Detection2DArray", header=header, detections=detections)


def detection3d_array_message(
    kit: MessageKit, header: Any, ids: Sequence[str], scores: Sequence[float], objects: Sequence[Any]
) -> Any:
    """vision_msgs/Detection3DArray: each lifted object's oriented box (centre, orientation, size) and, as its
    hypothesis' pose, the robust centroid; predicted IoU as the score, the prompt id as the detection id."""
    detections = []
    for prompt_id, score, obj in zip(ids, scores, objects, strict=True):
        sx, sy, sz = (float(c) for c in obj.size)
        bbox = kit.new(
            "vision_msgs/msg/BoundingBox3D",
            center=_pose(kit, obj.center, obj.orientation),
            size=kit.new("geometry_msgs/msg/Vector3", x=sx, y=sy, z=sz),
        )
        results = _hypotheses(kit, score, obj.centroid, obj.orientation)
        detections.append(
            kit.new("vision_msgs/msg/Detection3D", header=header, results=results, bbox=bbox, id=str(prompt_id))
        )
    return kit.new("vision_msgs/msg/Detection3DArray", header=header, detections=detections)


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A Segmentation's mask back at full image size (HxW bool): the inverse of `segmentation_message`."""
    roi = segmentation.roi
    mask = np.zeros((height, width), dtype=bool)
    if int(roi.width) == 0 or int(roi.height) == 0:
        return mask
    crop = image_to_rgb(segmentation.mask)[:, :, 0] > 127
    x, y = int(roi.x_offset), int(roi.y_offset)
    rows, cols = crop.shape
    if (rows, cols) != (int(roi.height), int(roi.width)) or y + rows > height or x + cols > width:
        raise ValueError(
            f"segmentation {segmentation.prompt_id!r}: mask {cols}x{rows} at ({x}, {y}) does not fit "
            f"its roi {roi.width}x{roi.height} inside a {width}x{height} image"
        )
    mask[y : y + rows, x : x + cols] = crop
    return mask


def label_image(
    masks: Sequence[np.ndarray],
    height: int,
    width: int,
    crops: Sequence[Crop] | None = None,
    dtype: type = np.uint8,
) -> np.ndarray:
    """Labels: 0 background, i+1 where the i-th mask is set (later masks win overlaps); mono8 (`~/mask`,
    255 masks at most) or np.uint16 for mono16 instance ids (`~/instances`).

    `crops`: the masks' `mask_crop`s, when already known.
    """
    if len(masks) > np.iinfo(dtype).max:
        kind = "a mono8 label image" if dtype == np.uint8 else f"{np.dtype(dtype).name} labels"
        raise ValueError(f"{len(masks)} masks do not fit {kind} (at most {np.iinfo(dtype).max})")
    labels = np.zeros((height, width), dtype=dtype)
    for i, ((x, y, w, h), crop) in enumerate(crops if crops is not None else map(mask_crop, masks)):
        labels[y : y + h, x : x + w][crop] = i + 1
    return labels


def _colour(i: int) -> np.ndarray:
    """A distinct, stable BGR colour per label (golden-ratio hue steps)."""
    hue = int((i * 0.618033988749895 % 1.0) * 180)
    return cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]


def overlay_image(
    rgb: np.ndarray, masks: Sequence[np.ndarray], points: Sequence[Sequence[tuple[float, float]]] = ()
) -> np.ndarray:
    """A bgr8 picture for people: each mask tinted in its own colour, outlined, its prompt points dotted.

    Works on each mask's box, not the whole frame: the cost follows the objects' size.
    """
    out = cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    crops = [mask_crop(mask) for mask in masks]
    for i, ((x, y, w, h), crop) in enumerate(crops):
        region = out[y : y + h, x : x + w]
        tinted = cv2.addWeighted(region, 0.5, np.broadcast_to(_colour(i), region.shape).astype(np.uint8), 0.5, 0)
        region[crop] = tinted[crop]
    for i, ((x, y, _, _), crop) in enumerate(crops):
        colour = tuple(int(c) for c in _colour(i))
        outline, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
        cv2.drawContours(out, outline, -1, colour, 2)
        for u, v in points[i] if i < len(points) else ():
            cv2.circle(out, (round(u), round(v)), 4, (255, 255, 255), -1)
            cv2.circle(out, (round(u), round(v)), 4, colour, 1)
    return out
