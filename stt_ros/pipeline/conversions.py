"""Image and result message conversions, shared by the rclpy node and the offline (rosbags) tools.

Functions read and build messages by field name only, so the same code serves rclpy messages and
`rosbags` dataclasses. Masks travel as mono8 0/255 crops of their bounding box: lossless, and small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# Raw encodings: name → (channels, bytes per channel).
_RAW_LAYOUTS = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
    "bayer_rggb8": (1, 1),
    "bayer_bggr8": (1, 1),
    "bayer_gbrg8": (1, 1),
    "bayer_grbg8": (1, 1),
}
# OpenCV names a Bayer pattern by the 2x2 block starting at the second row and column, so ROS's
# `rggb` (red at the origin) is OpenCV's `BG`.
_BAYER_TO_RGB = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
SUPPORTED_ENCODINGS = tuple(_RAW_LAYOUTS)
MAX_LABELS = 255  # a mono8 label image holds 0 (background) + 255 segmentations


def _bytes(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's `data` (bytes, array.array, numpy array or list of ints)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).astype(np.uint8, copy=False)
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "buffer_info"):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def _scale16(values: np.ndarray) -> np.ndarray:
    """16-bit grey → 8-bit by the frame's own min/max: 10-16-bit cameras rarely fill the 16-bit range."""
    low, high = int(values.min()), int(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float32) - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def image_to_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image → HxWx3 RGB uint8 (a new, contiguous array).

    Honours `step` (row padding) and `is_bigendian`. Raises ValueError naming the problem for an
    unsupported encoding or a buffer that does not match height/width/step.
    """
    encoding = str(msg.encoding).lower()
    if encoding not in _RAW_LAYOUTS:
        raise ValueError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)} "
            "(or publish sensor_msgs/CompressedImage as JPEG/PNG)"
        )
    channels, depth = _RAW_LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * depth
    if height <= 0 or width <= 0:
        raise ValueError(f"empty {encoding} image ({width}x{height})")
    if step < row_bytes:
        raise ValueError(
            f"{encoding} image step {step} is shorter than a row ({width} px = {row_bytes} bytes)"
        )
    data = _bytes(msg.data)
    if data.size < step * height:
        raise ValueError(
            f"{encoding} image data has {data.size} bytes; {width}x{height} with step {step} "
            f"needs {step * height}"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        return _grey_to_rgb(_scale16(np.ascontiguousarray(rows).view(dtype).reshape(height, width)))
    pixels = rows.reshape(height, width, channels)
    if encoding in _BAYER_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), _BAYER_TO_RGB[encoding])
    if encoding == "mono8":
        return _grey_to_rgb(pixels[:, :, 0])
    if encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG or PNG, as image_transport's `compressed` plugin sends) → RGB."""
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ValueError(
            f"compressed image format {fmt!r} is a depth image; subscribe to a colour or mono image instead"
        )
    data = _bytes(msg.data)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise ValueError(
            f"could not decode compressed image (format {fmt!r}, {data.size} bytes); send JPEG or PNG"
        )
    if decoded.dtype == np.uint16:
        decoded = _scale16(decoded) if decoded.ndim == 2 else (decoded >> 8).astype(np.uint8)
    if decoded.ndim == 2:
        return _grey_to_rgb(decoded)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg: Any) -> np.ndarray:
    """Image or CompressedImage → HxWx3 RGB uint8 (a CompressedImage is the one with `format`)."""
    return compressed_image_to_rgb(msg) if hasattr(msg, "format") else image_to_rgb(msg)


@dataclass(frozen=True)
class MessageKit:
    """The message classes results are built from, and how a uint8[] field wants its bytes.

    rclpy wants `array.array('B')` (anything else is checked element by element), rosbags a numpy array.
    """

    image: Callable[..., Any]
    region_of_interest: Callable[..., Any]
    point: Callable[..., Any]
    segmentation: Callable[..., Any]
    segmentation_array: Callable[..., Any]
    pack_uint8: Callable[[np.ndarray], Any]

    @classmethod
    def rosbags(cls, distro: str = "humble") -> MessageKit:
        """The kit for rosbags dataclasses from `stt_ros.bag.messages.typestore(distro)`."""
        from stt_ros.bag.messages import typestore

        types = typestore(distro).types
        return cls(
            image=types["sensor_msgs/msg/Image"],
            region_of_interest=types["sensor_msgs/msg/RegionOfInterest"],
            point=types["geometry_msgs/msg/Point"],
            segmentation=types["stt_ros/msg/Segmentation"],
            segmentation_array=types["stt_ros/msg/SegmentationArray"],
            pack_uint8=lambda array: np.ascontiguousarray(array, dtype=np.uint8).reshape(-1),
        )


def image_message(kit: MessageKit, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """A sensor_msgs/Image from an HxW (mono8) or HxWx3 (bgr8/rgb8) uint8 array, unpadded."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return kit.image(
        header=header,
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=0,
        step=int(width * channels),
        data=kit.pack_uint8(pixels),
    )


def mask_crop(mask: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """(x_offset, y_offset, width, height) of the mask's bounding box and the mono8 0/255 crop."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0), np.zeros((0, 0), dtype=np.uint8)
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return (x0, y0, x1 - x0, y1 - y0), mask[y0:y1, x0:x1].astype(np.uint8) * 255


def segmentation_message(
    kit: MessageKit,
    header: Any,
    prompt_id: str,
    result: Any,
    points: Sequence[tuple[float, float]],
    labels: Sequence[int],
    tracked: bool,
    latency_ms: float,
) -> Any:
    """One stt_ros/Segmentation from a predictor result (`.mask`, `.score`, `.scores`, `.index`)."""
    (x, y, width, height), crop = mask_crop(result.mask)
    return kit.segmentation(
        prompt_id=str(prompt_id),
        roi=kit.region_of_interest(x_offset=x, y_offset=y, height=height, width=width, do_rectify=False),
        mask=image_message(kit, header, crop, "mono8"),
        score=float(result.score),
        scores=np.asarray(result.scores, dtype=np.float32).reshape(3),
        index=int(result.index),
        points=[kit.point(x=float(u), y=float(v), z=0.0) for u, v in points],
        labels=kit.pack_uint8(np.asarray(labels, dtype=np.uint8)),
        area=int(np.count_nonzero(crop)),
        tracked=bool(tracked),
        latency_ms=float(latency_ms),
    )


def segmentation_array_message(kit: MessageKit, header: Any, segmentations: Sequence[Any]) -> Any:
    """The stt_ros/SegmentationArray for one image, carrying the image's header."""
    return kit.segmentation_array(header=header, segmentations=list(segmentations))


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


def label_image(masks: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """mono8 labels: 0 background, i+1 where the i-th mask is set (later masks win overlaps)."""
    if len(masks) > MAX_LABELS:
        raise ValueError(f"{len(masks)} masks do not fit a mono8 label image (at most {MAX_LABELS})")
    labels = np.zeros((height, width), dtype=np.uint8)
    for i, mask in enumerate(masks):
        labels[np.asarray(mask, dtype=bool)] = i + 1
    return labels


def _colour(i: int) -> np.ndarray:
    """A distinct, stable BGR colour per label (golden-ratio hue steps)."""
    hue = int((i * 0.618033988749895 % 1.0) * 180)
    return cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def overlay_image(
    rgb: np.ndarray, masks: Sequence[np.ndarray], points: Sequence[Sequence[tuple[float, float]]] = ()
) -> np.ndarray:
    """A bgr8 picture for people: each mask tinted in its own colour, outlined, its prompt points dotted."""
    bgr = cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    canvas = bgr.astype(np.float32)
    for i, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        canvas[mask] = 0.5 * canvas[mask] + 0.5 * _colour(i)
    out = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    for i, mask in enumerate(masks):
        colour = tuple(int(c) for c in _colour(i))
        outline = np.asarray(mask, dtype=np.uint8)
        contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, 2)
        for u, v in points[i] if i < len(points) else ():
            cv2.circle(out, (round(u), round(v)), 4, (255, 255, 255), -1)
            cv2.circle(out, (round(u), round(v)), 4, colour, 1)
    return out
