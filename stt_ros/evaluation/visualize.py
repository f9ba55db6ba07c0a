"""Pictures for people: what the foveated model sees around a prompt."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from stt_ros.predictor import FoveatedPredictor
from stt_ros.prompts import Prompt


@torch.inference_mode()
def foveation_view(predictor: FoveatedPredictor, image: np.ndarray, prompt: Prompt) -> np.ndarray:
    """The image as the model's tokens show it (RGB, original size), with every valid token outlined."""
    frame = predictor.frame
    framed = frame.image(image, predictor.device)
    fovea = frame.prompts([prompt], framed.original_size, predictor.device).fovea
    model = predictor.model
    tokens = model.tokenize(framed.resized, fovea)
    seen = model.pattern.reconstruct(
        tokens, model.img_size, model.sam.pixel_mean.flatten(), model.sam.pixel_std.flatten()
    )
    h, w = framed.input_size
    height, width = framed.original_size
    view = cv2.resize(seen[0, :h, :w].cpu().numpy(), (width, height), interpolation=cv2.INTER_NEAREST)
    scale = max(height, width) / model.img_size
    valid = tokens.valid[0].cpu().numpy()
    corners = tokens.corners[0].cpu().numpy()
    sizes = tokens.strides.cpu().numpy() * model.pattern.token_size
    for (x, y), size in zip(corners[valid], sizes[valid], strict=True):
        top_left = (round(x * scale), round(y * scale))
        bottom_right = (round((x + size) * scale) - 1, round((y + size) * scale) - 1)
        cv2.rectangle(view, top_left, bottom_right, (255, 255, 255), 1)
    u, v = prompt.points[0] if prompt.points else fovea[0].cpu().numpy() * scale
    cv2.drawMarker(view, (round(u), round(v)), (255, 0, 0), cv2.MARKER_CROSS, 14, 2)
    return view
