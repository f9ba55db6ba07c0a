"""The SAM frame (DESIGN §2.1) on the model's device: `stt_ros.geometry`'s arrays as torch tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stt_ros.geometry import resize_image, sparse_prompts
from stt_ros.prompts import Prompt


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
    """A batch of same-shape prompts in frame coordinates, as stock SAM's prompt encoder takes them and in its
    sparse layout (`geometry.SparsePrompts`) as the foveated model takes them."""

    points: torch.Tensor | None  # (B, P, 2) frame px, or None when the prompts have no points
    labels: torch.Tensor | None  # (B, P)
    boxes: torch.Tensor | None  # (B, 4) frame px, or None
    fovea: torch.Tensor  # (B, 2) fovea centres in frame px (x, y)
    sparse_coords: torch.Tensor  # (B, K, 2) frame px: points, then box corners or a padding point
    sparse_labels: torch.Tensor  # (B, K): 1, 0, box corners 2 and 3, padding -1


class SamFrame:
    """Maps images and prompts into the frame of a SAM with image_encoder.img_size = `img_size`."""

    def __init__(self, img_size: int) -> None:
        self.img_size = img_size

    def image(self, image: np.ndarray, device: torch.device) -> FramedImage:
        resized = resize_image(image, self.img_size)
        return FramedImage(torch.as_tensor(resized, device=device), (image.shape[0], image.shape[1]))

    def prompts(self, prompts: list[Prompt], original_size: tuple[int, int], device: torch.device) -> FramedPrompts:
        """Frame coordinates of a batch of prompts that share `Prompt.shape_key`."""
        sparse = sparse_prompts(prompts, original_size, self.img_size)
        num_points, has_box = prompts[0].shape_key
        points = labels = boxes = None
        if num_points:
            points = torch.as_tensor(sparse.coords[:, :num_points], device=device)
            labels = torch.as_tensor(sparse.labels[:, :num_points], device=device)
        if has_box:
            boxes = torch.as_tensor(sparse.coords[:, num_points:].reshape(-1, 4), device=device)
        return FramedPrompts(
            points,
            labels,
            boxes,
            torch.as_tensor(sparse.fovea, device=device),
            torch.as_tensor(sparse.coords, device=device),
            torch.as_tensor(sparse.labels, device=device),
        )
