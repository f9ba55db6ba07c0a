"""Segmentation quality with SAM's single-point protocol, for any predictor, on held-out synthetic scenes.

One positive point per ground-truth instance, at the interior point farthest from the instance boundary
(`masks.interior_point`). Two numbers, as in the SAM paper: the mIoU of the mask the model itself
chooses (highest predicted IoU of its 3 outputs) and the oracle-of-3 mIoU (best of the 3 by true IoU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from stt_ros.evaluation.scenes import Scene, generate_scene
from stt_ros.masks import interior_point, mask_iou

# Held-out scene seeds start here; training uses seeds below it (see train.reference.MAX_SEED).
HELDOUT_SEED_BASE = 10**12
HELDOUT_SIZES = ((640, 480), (1280, 720))

# (image, [(u, v), ...]) -> per point: (chosen HxW bool mask, 3xHxW bool multimask outputs)
Segmenter = Callable[[np.ndarray, list[tuple[float, float]]], list[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class EvalResult:
    """Per-instance IoUs (chosen and oracle-of-3) and their means."""

    chosen_ious: tuple[float, ...]
    oracle_ious: tuple[float, ...]

    @property
    def miou(self) -> float:
        return float(np.mean(self.chosen_ious)) if self.chosen_ious else float("nan")

    @property
    def oracle_miou(self) -> float:
        return float(np.mean(self.oracle_ious)) if self.oracle_ious else float("nan")

    @property
    def num_instances(self) -> int:
        return len(self.chosen_ious)


def heldout_scenes(count: int, start: int = 0, sizes: Sequence[tuple[int, int]] = HELDOUT_SIZES) -> list[Scene]:
    """`count` scenes no training run sees, cycling through camera sizes (640×480 and 1280×720)."""
    return [generate_scene(HELDOUT_SEED_BASE + i, *sizes[i % len(sizes)]) for i in range(start, start + count)]


def evaluate(segment: Segmenter, scenes: Sequence[Scene]) -> EvalResult:
    """Single-point protocol over every instance of every scene."""
    chosen, oracle = [], []
    for scene in scenes:
        masks = scene.masks()
        points = [interior_point(mask) for mask in masks]
        outputs = segment(scene.image, points)
        if len(outputs) != len(masks):
            raise ValueError(f"segmenter returned {len(outputs)} results for {len(masks)} prompts")
        for gt, (mask, multimask) in zip(masks, outputs, strict=True):
            chosen.append(mask_iou(mask, gt))
            oracle.append(max(mask_iou(m, gt) for m in multimask))
    return EvalResult(chosen_ious=tuple(chosen), oracle_ious=tuple(oracle))


def sam_segmenter(sam: Sam) -> Segmenter:
    """A raw `Sam` through `segment_anything.SamPredictor`, all of a scene's points in one decoder batch."""
    predictor = SamPredictor(sam)

    def segment(image: np.ndarray, points: list[tuple[float, float]]) -> list[tuple[np.ndarray, np.ndarray]]:
        predictor.set_image(image)
        coords = predictor.transform.apply_coords(np.asarray(points, np.float64), image.shape[:2])
        coords = torch.as_tensor(coords, dtype=torch.float32, device=predictor.device)[:, None, :]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=predictor.device)
        masks, scores, _ = predictor.predict_torch(coords, labels, multimask_output=True)
        masks, scores = masks.cpu().numpy(), scores.float().cpu().numpy()
        return [(m[int(np.argmax(s))], m) for m, s in zip(masks, scores, strict=True)]

    return segment


def predictor_segmenter(predictor) -> Segmenter:
    """A project predictor (`ReferencePredictor`, `FoveatedPredictor`) through its `predict_logits`.

    One call yields all outputs, so a foveated predictor encodes each prompt once. For a single point,
    `multimask="auto"` chooses the multimask output with the highest predicted IoU; that is the chosen mask.
    """
    from stt_ros.prompts import Prompt

    def segment(image: np.ndarray, points: list[tuple[float, float]]) -> list[tuple[np.ndarray, np.ndarray]]:
        prompts = [Prompt(points=[point], labels=[1]) for point in points]
        logits, iou = predictor.predict_logits(image, prompts)
        masks = predictor.upscale(logits[:, :3], image.shape[:2]) > predictor.sam.mask_threshold
        masks, best = masks.cpu().numpy(), iou[:, :3].argmax(dim=1).tolist()
        return [(m[b], m) for m, b in zip(masks, best, strict=True)]

    return segment


@torch.no_grad()
def evaluate_sam(sam: Sam, scenes: Sequence[Scene]) -> EvalResult:
    """Single-point protocol for a raw `Sam` (used during training, before any predictor wraps it)."""
    return evaluate(sam_segmenter(sam), scenes)
