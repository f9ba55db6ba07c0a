"""Masks lifted to 3-D objects with a depth image aligned to the colour image: what grasp and pose pipelines take.

Depth follows REP 118: 16UC1 in millimetres or 32FC1 in metres; 0, NaN, ±inf and values outside the usable
range are no measurement. Each mask is eroded first: its edge pixels mix the object's depth with what is
behind it ("flying pixels"). The points of the eroded mask, projected through the pinhole K of the depth
camera, give a robust centroid (their median) and, from the inliers around it, an oriented box (the principal
axes of the inlier points and their extent along each). The point count and the share of mask pixels that
had valid depth tell a consumer when to distrust an object.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from stt_ros.pipeline.camera import apply_transform, matrix_quaternion, quaternion_matrix

# Encoding → metres per unit. mono16 is what some drivers call their 16UC1 millimetre depth.
DEPTH_SCALES = {"16UC1": 0.001, "mono16": 0.001, "32FC1": 1.0}
MAD_TO_SIGMA = 1.4826  # a normal distribution's standard deviation per median absolute deviation
INLIER_SIGMAS = 3.0
MIN_INLIER_BAND_M = 0.01  # a flat object's depths barely spread: never cut inliers closer than this


@dataclass(frozen=True)
class Intrinsics:
    """The pinhole part of a sensor_msgs/CameraInfo K, and the image size it belongs to."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, info: Any) -> Intrinsics:
        """Raises ValueError for an uncalibrated (all-zero K) camera_info."""
        k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise ValueError(f"camera_info of frame {info.header.frame_id!r} has no focal length in K (uncalibrated)")
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(info.width), int(info.height))


def depth_metres(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image in `encoding` → float32 metres (NaN where there is no measurement)."""
    if encoding not in DEPTH_SCALES:
        raise ValueError(
            f"depth encoding {encoding!r} is not supported; publish 16UC1 (millimetres) or 32FC1 (metres)"
        )
    metres = np.asarray(pixels, dtype=np.float32) * np.float32(DEPTH_SCALES[encoding])
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


@dataclass(frozen=True)
class DepthImage:
    """A decoded depth frame: its pixels as sent (native byte order), their encoding, and metres."""

    pixels: np.ndarray
    encoding: str
    metres: np.ndarray

    @classmethod
    def of(cls, pixels: np.ndarray, encoding: str) -> DepthImage:
        return cls(pixels, encoding, depth_metres(pixels, encoding))


def depth_problem(msg: Any) -> str | None:
    """Why `msg` cannot be a depth frame, read from its fields alone (cheap enough for every frame); None if it
    may be one (decoding can still find more)."""
    if hasattr(msg, "format"):
        fmt = str(msg.format)
        if "compresseddepth" not in fmt.lower():
            return f"compressed format {fmt!r} is not compressedDepth: subscribe to image_transport's depth stream"
        return None if len(msg.data) > 12 else f"compressed depth ({fmt!r}) has no image data"
    encoding = str(msg.encoding)
    if encoding not in DEPTH_SCALES:
        return f"depth encoding {encoding!r} is not supported; publish 16UC1 (millimetres) or 32FC1 (metres)"
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row = width * (4 if encoding == "32FC1" else 2)
    if height <= 0 or width <= 0 or step < row or len(msg.data) < step * height:
        return f"{encoding} depth image {width}x{height} with step {step} does not fit its {len(msg.data)} bytes"
    return None


def depth_from_message(msg: Any) -> DepthImage:
    """A depth Image (16UC1 / 32FC1, any step and byte order) or a compressedDepth CompressedImage, decoded.
    Raises ValueError naming the problem."""
    problem = depth_problem(msg)
    if problem:
        raise ValueError(problem)
    if hasattr(msg, "format"):
        return _compressed_depth(msg)
    encoding, height, width, step = str(msg.encoding), int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype("<f4" if encoding == "32FC1" else "<u2").newbyteorder(">" if msg.is_bigendian else "<")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = np.ascontiguousarray(data[: step * height].reshape(height, step)[:, : width * dtype.itemsize])
    return DepthImage.of(rows.view(dtype).reshape(height, width).astype(dtype.newbyteorder("=")), encoding)


def _compressed_depth(msg: Any) -> DepthImage:
    """image_transport's compressedDepth: a 12-byte header (int32 format, float32 quantisation A, B) and a PNG.

    16UC1 stores the millimetres; 32FC1 stores quantised inverse depth: metres = A / (value - B), 0 = none.
    """
    fmt = str(msg.format)
    encoding = fmt.split(";")[0].strip()
    data = bytes(msg.data)
    if encoding not in ("16UC1", "32FC1"):
        raise ValueError(f"compressed depth format {fmt!r} is not image_transport's compressedDepth of 16UC1 or 32FC1")
    _, quant_a, quant_b = struct.unpack("<iff", data[:12])
    png = cv2.imdecode(np.frombuffer(data[12:], np.uint8), cv2.IMREAD_UNCHANGED)
    if png is None or png.dtype != np.uint16 or png.ndim != 2:
        raise ValueError(f"compressed depth ({fmt!r}, {len(data)} bytes) does not hold a 16-bit PNG")
    if encoding == "16UC1":
        return DepthImage.of(png, encoding)
    with np.errstate(divide="ignore"):
        metres = np.where(png > 0, quant_a / (png.astype(np.float32) - quant_b), np.nan).astype(np.float32)
    return DepthImage.of(metres, encoding)


@dataclass
class LiftedObject:
    """One mask in 3-D, in the frame of `frame_id` (the depth camera's optical frame until transformed)."""

    points: np.ndarray  # N x 3 float32, metres: every valid point of the eroded mask
    centroid: np.ndarray  # 3: the median point
    center: np.ndarray  # 3: the box centre
    axes: np.ndarray  # 3 x 3: the box axes as columns, longest extent first, right-handed
    size: np.ndarray  # 3: the box's extent along each axis, metres
    mask_pixels: int  # pixels of the eroded mask
    valid_pixels: int  # of those, how many had depth within range

    @property
    def coverage(self) -> float:
        """The share of the (eroded) mask that had valid depth: 0 when there was nothing to measure."""
        return self.valid_pixels / self.mask_pixels if self.mask_pixels else 0.0

    @property
    def orientation(self) -> tuple[float, float, float, float]:
        """The box's rotation as a quaternion (x, y, z, w), as geometry_msgs/Pose has it."""
        return matrix_quaternion(self.axes)

    def transformed(self, translation: Sequence[float], rotation: Sequence[float]) -> LiftedObject:
        """The same object seen from another frame: `rotation` (x, y, z, w) and `translation` map this
        object's frame into the other, as a tf2 transform from the target to this frame's parent does."""
        r = quaternion_matrix(*rotation)
        return LiftedObject(
            points=(self.points @ r.T + np.asarray(translation, np.float32)).astype(np.float32),
            centroid=apply_transform(self.centroid, translation, rotation),
            center=apply_transform(self.center, translation, rotation),
            axes=r @ self.axes,
            size=self.size,
            mask_pixels=self.mask_pixels,
            valid_pixels=self.valid_pixels,
        )


def lift_mask(
    mask: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics,
    erosion_px: int = 2,
    depth_range: tuple[float, float] = (0.1, 10.0),
) -> LiftedObject:
    """The object under `mask` (HxW bool) in `depth` (HxW metres, NaN = none, aligned with the mask)."""
    if mask.shape != depth.shape:
        raise ValueError(f"mask {mask.shape} and depth {depth.shape} differ in size: the depth is not aligned")
    inside = np.asarray(mask, dtype=np.uint8)
    if erosion_px > 0 and inside.any():  # beyond the image is background too: `lift_masks` works on boxes
        kernel = np.ones((2 * erosion_px + 1, 2 * erosion_px + 1), np.uint8)
        inside = cv2.erode(inside, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    index = np.flatnonzero(inside)
    z = depth.ravel()[index]
    valid = (z >= depth_range[0]) & (z <= depth_range[1])  # NaN and ±inf compare false: dropped too
    index, z = index[valid], z[valid].astype(np.float32)
    rows, cols = np.divmod(index, depth.shape[1])
    x = (cols.astype(np.float32) - np.float32(intrinsics.cx)) * (z / np.float32(intrinsics.fx))
    y = (rows.astype(np.float32) - np.float32(intrinsics.cy)) * (z / np.float32(intrinsics.fy))
    xyz = np.stack([x, y, z])  # 3 x N; the object's points are its transpose
    if len(z) == 0:
        nothing = np.zeros(3)
        return LiftedObject(xyz.T, nothing, nothing, np.eye(3), nothing, len(valid), 0)
    centroid = np.median(xyz, axis=1).astype(np.float64)
    deviation = np.abs(z - np.float32(centroid[2]))
    keep = deviation <= max(INLIER_SIGMAS * MAD_TO_SIGMA * float(np.median(deviation)), MIN_INLIER_BAND_M)
    inliers = xyz if keep.all() else np.stack([x[keep], y[keep], z[keep]])  # rows select faster than columns
    mean = inliers.sum(axis=1) / np.float32(inliers.shape[1])  # float32 pairwise sums: ample for metres
    centred = inliers - mean[:, None]
    _, vectors = np.linalg.eigh((centred @ centred.T).astype(np.float64))
    axes = vectors[:, ::-1]  # largest spread first
    if np.linalg.det(axes) < 0:
        axes[:, 2] = -axes[:, 2]
    along = axes.T.astype(np.float32) @ centred
    low, high = along.min(axis=1).astype(np.float64), along.max(axis=1).astype(np.float64)
    centre = mean.astype(np.float64) + axes @ ((low + high) / 2)
    return LiftedObject(xyz.T, centroid, centre, axes, high - low, len(valid), len(z))


def register_depth(
    depth: np.ndarray,
    source: Intrinsics,
    target: Intrinsics,
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    rotation: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
) -> np.ndarray:
    """Depth (metres) as the `target` camera sees it: each valid pixel back-projected through `source`, moved
    by the transform from the source's optical frame to the target's, projected through `target`; the nearest
    point wins a pixel, and pixels nothing lands on are NaN (what depth_image_proc's register does)."""
    rows, cols = np.nonzero(np.isfinite(depth))
    z = depth[rows, cols].astype(np.float64)
    points = np.stack([(cols - source.cx) * z / source.fx, (rows - source.cy) * z / source.fy, z], axis=1)
    points = points @ quaternion_matrix(*rotation).T + np.asarray(translation, dtype=np.float64)
    points = points[points[:, 2] > 0]
    u = np.rint(target.fx * points[:, 0] / points[:, 2] + target.cx).astype(np.int64)
    v = np.rint(target.fy * points[:, 1] / points[:, 2] + target.cy).astype(np.int64)
    seen = (u >= 0) & (u < target.width) & (v >= 0) & (v < target.height)
    nearest = np.full(target.height * target.width, np.inf)
    np.minimum.at(nearest, v[seen] * target.width + u[seen], points[seen, 2])
    nearest[np.isinf(nearest)] = np.nan
    return nearest.reshape(target.height, target.width).astype(np.float32)


def aligned_depth(
    depth: DepthImage,
    colour_shape: tuple[int, int],
    colour: Intrinsics | None,
    depth_camera: Intrinsics | None,
    depth_to_colour: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[np.ndarray, Intrinsics]:
    """Depth in metres pixel-aligned with the colour image, and the intrinsics to lift it with.

    A depth image of the colour image's size is taken as registered to it (as a camera's "aligned depth"
    topic is); one of another size is reprojected into the colour camera when both CameraInfos are known
    (`depth_to_colour`: translation and rotation from the depth to the colour optical frame, identity if
    None). Raises ValueError saying what is missing and what to remap.
    """
    if depth.metres.shape == tuple(colour_shape):
        intrinsics = depth_camera or colour
        if intrinsics is None:
            raise ValueError("no camera_info or depth_camera_info received yet: the depth cannot be lifted to 3-D")
        return depth.metres, intrinsics
    (height, width), (depth_height, depth_width) = colour_shape, depth.metres.shape
    if colour is None or depth_camera is None:
        raise ValueError(
            f"the depth image is {depth_width}x{depth_height} but the colour image {width}x{height}, and without "
            "both camera_info and depth_camera_info it cannot be reprojected: remap `depth` to the depth registered "
            "to the colour camera (e.g. /camera/aligned_depth_to_color/image_raw on a RealSense)"
        )
    return register_depth(depth.metres, depth_camera, colour, *(depth_to_colour or ((0, 0, 0), (0, 0, 0, 1)))), colour


def lift_masks(
    crops: Sequence[tuple[tuple[int, int, int, int], np.ndarray]],
    metres: np.ndarray,
    intrinsics: Intrinsics,
    erosion_px: int = 2,
    depth_range: tuple[float, float] = (0.1, 10.0),
) -> list[LiftedObject]:
    """`lift_mask` for each mask of one frame, given as its `conversions.mask_crop` (box, mask inside it): the
    work follows the objects' size, not the frame's."""
    pad = max(erosion_px, 0)  # boxes padded with background as wide as the erosion give the frame's points
    objects = []
    for (x, y, w, h), crop in crops:
        box = np.zeros((h + 2 * pad, w + 2 * pad), dtype=bool)
        box_depth = np.full(box.shape, np.nan, dtype=np.float32)
        box[pad : pad + h, pad : pad + w] = crop
        box_depth[pad : pad + h, pad : pad + w] = metres[y : y + h, x : x + w]
        shifted = Intrinsics(
            intrinsics.fx, intrinsics.fy, intrinsics.cx - x + pad, intrinsics.cy - y + pad, box.shape[1], box.shape[0]
        )
        objects.append(lift_mask(box, box_depth, shifted, erosion_px, depth_range))
    return objects


class DepthFrames:
    """The last depth images by stamp, for the worker to pair with colour frames; thread-safe (the executor adds,
    the worker looks up)."""

    def __init__(self, capacity: int = 30, tolerance_ns: int = 50_000_000) -> None:
        self.tolerance_ns = tolerance_ns
        self._frames: deque[tuple[int, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, msg: Any) -> None:
        with self._lock:
            self._frames.append((stamp_ns, msg))

    def nearest(self, stamp_ns: int) -> Any | None:
        """The depth message nearest `stamp_ns`, if one is within the tolerance."""
        with self._lock:
            frames = list(self._frames)
        if not frames:
            return None
        stamp, msg = min(frames, key=lambda frame: abs(frame[0] - stamp_ns))
        return msg if abs(stamp - stamp_ns) <= self.tolerance_ns else None

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()


@dataclass(frozen=True)
class LiftSettings:
    erosion_px: int = 2
    depth_range: tuple[float, float] = (0.1, 10.0)
    min_points: int = 20


@dataclass
class LiftedFrame:
    """One frame's masks in 3-D, in the order of its results (None for an empty mask)."""

    depth: DepthImage
    aligned: bool  # the depth image had the colour image's size (else it was reprojected)
    lifted: list[LiftedObject | None]
    min_points: int

    @property
    def kept(self) -> list[int]:
        """Indices of the objects with enough valid depth points to publish."""
        return [i for i, obj in enumerate(self.lifted) if obj is not None and obj.valid_pixels >= self.min_points]

    @property
    def objects(self) -> list[LiftedObject]:
        return [self.lifted[i] for i in self.kept]

    @property
    def too_few(self) -> list[int]:
        """Indices of non-empty masks with too few valid depth points."""
        return [i for i, obj in enumerate(self.lifted) if obj is not None and obj.valid_pixels < self.min_points]


def lift_frame(
    depth: DepthImage,
    colour_shape: tuple[int, int],
    crops: Sequence[tuple[tuple[int, int, int, int], np.ndarray]],
    colour: Intrinsics | None,
    depth_camera: Intrinsics | None,
    settings: LiftSettings = LiftSettings(),
    depth_to_colour: tuple[Sequence[float], Sequence[float]] | None = None,
) -> LiftedFrame:
    """Every non-empty mask of a frame lifted (masks given as `conversions.mask_crop`s); ValueError when the
    depth cannot be used, saying why (`aligned_depth`)."""
    metres, intrinsics = aligned_depth(depth, colour_shape, colour, depth_camera, depth_to_colour)
    present = [i for i, ((_, _, w, _), _) in enumerate(crops) if w]
    lifted: list[LiftedObject | None] = [None] * len(crops)
    for i, obj in zip(
        present,
        lift_masks([crops[i] for i in present], metres, intrinsics, settings.erosion_px, settings.depth_range),
        strict=True,
    ):
        lifted[i] = obj
    return LiftedFrame(depth, metres is depth.metres, lifted, settings.min_points)
