"""The SAM frame (DESIGN §2.1): resize longest side to img_size, pad bottom/right, map coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from stt_ros.prompts import Prompt


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


@dataclass
class FramedImage:
    """An image resized into the SAM frame, on the model's device, plus the sizes needed to undo it."""

    resized: torch.Tensor  # (h, w, 3) uint8, longest side = img_size, not yet padded
    original_size: tuple[int, int]  # (H, W)

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.resized.shape[0]), int(self.resized.shape[1])


@dataclass
class FramedPrompts:
    """A batch of same-shape prompts in frame coordinates, ready for SAM's prompt encoder."""

    points: torch.Tensor | None  # (B, P, 2) frame px, or None when the prompts have no points
    labels: torch.Tensor | None  # (B, P)
    boxes: torch.Tensor | None  # (B, 4) frame px, or None
    fovea: torch.Tensor  # (B, 2) fovea centres in frame px (x, y)


class SamFrame:
    """Maps images and prompts into the frame of a SAM with image_encoder.img_size = `img_size`."""

    def __init__(self, img_size: int) -> None:
        self.img_size = img_size
        self.transform = ResizeLongestSide(img_size)

    def image(self, image: np.ndarray, device: torch.device) -> FramedImage:
        validate_image(image)
        resized = self.transform.apply_image(image)
        return FramedImage(torch.as_tensor(resized, device=device), (image.shape[0], image.shape[1]))

    def prompts(self, prompts: list[Prompt], original_size: tuple[int, int], device: torch.device) -> FramedPrompts:
        """Frame coordinates of a batch of prompts that share `Prompt.shape_key`."""
        num_points, has_box = prompts[0].shape_key
        points = labels = boxes = None
        if num_points:
            raw = np.stack([p.point_array() for p in prompts])
            points_np = self.transform.apply_coords(raw, original_size)
            points = torch.as_tensor(points_np, dtype=torch.float32, device=device)
            labels = torch.as_tensor(np.stack([p.label_array() for p in prompts]), device=device)
        if has_box:
            boxes_np = self.transform.apply_boxes(np.stack([p.box_array() for p in prompts]), original_size)
            boxes = torch.as_tensor(boxes_np, dtype=torch.float32, device=device)
        return FramedPrompts(points, labels, boxes, self._fovea(points, labels, boxes))

    @staticmethod
    def _fovea(points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None) -> torch.Tensor:
        """First foreground point, else the box centre, else the first point; +0.5 to the pixel centre."""
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2 if boxes is not None else points[:, 0]
        if points is not None:
            foreground = labels == 1
            has_foreground = foreground.any(dim=1)
            first = foreground.float().argmax(dim=1)
            first_point = points[torch.arange(points.shape[0], device=points.device), first]
            centre = torch.where(has_foreground[:, None], first_point, centre)
        return centre + 0.5
