"""The SAM frame's geometry in numpy (DESIGN §2.1): resizing, prompt coordinates in SAM's sparse layout, the
fovea. torch-free, so the ONNX Runtime backend shares it with the torch predictors.

An image is resized so its longest side is the encoder's `img_size`, exactly as segment_anything's
`ResizeLongestSide.apply_image` does it (PIL's bilinear resize); prompts scale with it. SAM's prompt encoder
embeds a prompt as a sequence of sparse points: the clicked points (labels 1 and 0), then either the box's two
corners (labels 2 and 3) or one padding point (label -1) when there is no box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from stt_ros.prompts import Prompt

PAD_LABEL = -1
BOX_LABELS = (2, 3)  # top-left and bottom-right corners


def validate_image(image: np.ndarray) -> None:
    """Raise ValueError unless `image` is a non-empty HxWx3 uint8 RGB array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 (0-255 RGB), got dtype {image.dtype}; "
            "convert with (image * 255).clip(0, 255).astype(np.uint8) if it holds floats in [0, 1]"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")


def resized_shape(height: int, width: int, img_size: int) -> tuple[int, int]:
    """(h, w) with the longest side `img_size`, rounded as segment_anything rounds it."""
    scale = img_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_image(image: np.ndarray, img_size: int) -> np.ndarray:
    """The image resized into the SAM frame (not padded): segment_anything's own resize, without torch."""
    validate_image(image)
    height, width = resized_shape(image.shape[0], image.shape[1], img_size)
    return np.array(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def padded_frame(image: np.ndarray, img_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image resized and zero-padded to the img_size-square frame (what the exported graph takes), and
    the resized size: the graph treats everything past it as SAM's padding."""
    resized = resize_image(image, img_size)
    frame = np.zeros((img_size, img_size, 3), dtype=np.uint8)
    frame[: resized.shape[0], : resized.shape[1]] = resized
    return frame, resized.shape[:2]


def frame_coords(coords: np.ndarray, original_size: tuple[int, int], img_size: int) -> np.ndarray:
    """Pixel coordinates (..., 2) as (x, y) of the original image → frame px."""
    height, width = original_size
    new_height, new_width = resized_shape(height, width, img_size)
    scaled = np.array(coords, dtype=np.float64)
    scaled[..., 0] *= new_width / width
    scaled[..., 1] *= new_height / height
    return scaled


@dataclass(frozen=True)
class SparsePrompts:
    """A batch of same-shape prompts in frame px, as SAM's prompt encoder sequences them."""

    coords: np.ndarray  # (B, K, 2) float32 frame px (x, y): points, then box corners or one padding point
    labels: np.ndarray  # (B, K) int64: 1 foreground, 0 background, 2/3 box corners, -1 padding
    fovea: np.ndarray  # (B, 2) float32 fovea centres in frame px (x, y)


def sparse_prompts(prompts: Sequence[Prompt], original_size: tuple[int, int], img_size: int) -> SparsePrompts:
    """Frame coordinates of prompts that share `Prompt.shape_key`, and their foveae.

    The fovea is the first foreground point, else the box centre, else the first point, +0.5 (the pixel
    centre, as SAM's prompt encoder shifts points).
    """
    num_points, has_box = prompts[0].shape_key
    batch = len(prompts)
    coords = np.zeros((batch, num_points + (2 if has_box else 1), 2), dtype=np.float32)
    labels = np.full((batch, coords.shape[1]), PAD_LABEL, dtype=np.int64)
    fovea = np.zeros((batch, 2), dtype=np.float32)
    for row, prompt in enumerate(prompts):
        points = frame_coords(prompt.point_array(), original_size, img_size).astype(np.float32)
        point_labels = prompt.label_array()
        coords[row, :num_points], labels[row, :num_points] = points, point_labels
        if has_box:
            corners = frame_coords(prompt.box_array().reshape(2, 2), original_size, img_size).astype(np.float32)
            coords[row, num_points:], labels[row, num_points:] = corners, BOX_LABELS
            fovea[row] = (corners[0] + corners[1]) / np.float32(2)
        elif num_points:
            fovea[row] = points[0]
        foreground = np.flatnonzero(point_labels == 1)
        if foreground.size:
            fovea[row] = points[foreground[0]]
    return SparsePrompts(coords, labels, fovea + np.float32(0.5))
