"""Feature distillation (DESIGN §2.6): each token's encoder output against the teacher's image embedding.

The frozen SAM says what every token's feature should be: its full-frame image embedding (the neck output,
C × G × G) averaged over the token's footprint, s × s cells for a stride-s token and exactly its own cell at
stride 1. That is a dense target for every valid token of every prompt, read from the teacher cache.
Cells outside the image (SAM's padding) take no part in the mean, and a token weighs by the share of its
footprint inside the image, so one that covers only padding, or an invalid token, weighs nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stt_ros.foveation import FoveatedTokens, FoveationPattern

FEATURE_LOSSES = ("mse", "cosine")


def image_cells(input_size: tuple[int, int], grid: int, patch: int) -> torch.Tensor:
    """(G, G) float indicator of the grid cells that hold some of the resized image."""
    inside = torch.zeros(grid, grid)
    inside[: math.ceil(input_size[0] / patch), : math.ceil(input_size[1] / patch)] = 1.0
    return inside


def feature_targets(
    embedding: torch.Tensor, inside: torch.Tensor, tokens: FoveatedTokens, pattern: FoveationPattern, patch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token targets (B, N, C) and weights (B, N) from one image's embedding (C, G, G).

    Target: the embedding's mean over the footprint's cells inside the image (`inside`, (G, G)); weight: the
    share of the footprint inside the image, zero for invalid tokens.
    """
    inside = inside.to(embedding.device, torch.float32)
    grid = torch.cat([embedding.float() * inside, inside[None]]).permute(1, 2, 0)[None]  # (1, G, G, C + 1)
    means = pattern.footprint_mean(grid, tokens, patch)
    share = means[..., -1]
    targets = means[..., :-1] / share.clamp(min=1e-12)[..., None]
    return targets, share * tokens.valid


def channel_moments(embedding: torch.Tensor, inside: torch.Tensor) -> list[float]:
    """[cells, Σx per channel..., Σx² per channel...] over the image's cells, to pool into a variance."""
    values = embedding.double().flatten(1)[:, inside.flatten() > 0]
    return [float(values.shape[1]), *values.sum(1).tolist(), *values.square().sum(1).tolist()]


def channel_variance(moments: list[float]) -> torch.Tensor:
    """Per-channel variance (C,) from summed `channel_moments`."""
    count, rest = moments[0], torch.tensor(moments[1:], dtype=torch.float64)
    total, squares = rest.chunk(2)
    return (squares / count - (total / count).square()).clamp(min=1e-12).float()


def feature_loss(
    student: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kind: str, variance: torch.Tensor
) -> torch.Tensor:
    """Weighted mean over tokens of the normalised error between student (B, N, C) and targets.

    "mse": squared error over the teacher embedding's per-channel variance (so every channel counts alike
    and 1 is the error of predicting the channel mean); "cosine": 1 − cosine similarity, blind to scale.
    """
    student = student.float()
    if kind == "mse":
        per_token = ((student - targets).square() / variance.to(student.device)).mean(-1)
    elif kind == "cosine":
        per_token = 1 - F.cosine_similarity(student, targets, dim=-1)
    else:
        raise ValueError(f"feature loss must be one of {FEATURE_LOSSES}, got {kind!r}")
    return (per_token * weights).sum() / weights.sum().clamp(min=1e-12)
