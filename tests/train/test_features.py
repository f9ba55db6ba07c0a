"""Feature distillation: the pooled targets, the normalised losses, and that training lowers them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stt_ros.foveation import FoveationPattern
from stt_ros.train.features import (
    channel_moments,
    channel_variance,
    feature_loss,
    feature_targets,
    image_cells,
)

PATTERN = FoveationPattern(16, (1, 2, 4), (4, 4, 6))  # 16 + 12 + 32 tokens over 384 px
GRID, PATCH = 24, 16  # a 384 px frame


def tokens_at(centre: tuple[float, float]):
    image = torch.zeros(GRID * PATCH, GRID * PATCH, 3, dtype=torch.uint8)
    return PATTERN.extract(image, torch.tensor([centre]), GRID * PATCH, torch.zeros(3), torch.ones(3))


def test_targets_are_the_teachers_cell_at_stride_one_and_the_exact_mean_of_a_coarse_footprint():
    embedding = torch.arange(2 * GRID * GRID, dtype=torch.float32).reshape(2, GRID, GRID) ** 1.5  # not linear
    tokens = tokens_at((192.0, 192.0))  # the pattern covers the whole frame
    inside = torch.ones(GRID, GRID)
    targets, weights = feature_targets(embedding.half(), inside, tokens, PATTERN, PATCH)
    half = embedding.half().float()
    for index, ((x, y), stride) in enumerate(zip(tokens.corners[0].tolist(), tokens.strides.tolist(), strict=True)):
        col, row = x // PATCH, y // PATCH
        expected = half[:, row : row + stride, col : col + stride].mean((1, 2))
        if stride == 1:
            assert torch.equal(targets[0, index], expected), index
        else:
            assert torch.allclose(targets[0, index], expected, rtol=1e-6), index
    assert torch.equal(weights, torch.ones(1, PATTERN.num_tokens))


def test_cells_outside_the_image_take_no_part_and_tokens_weigh_by_their_share_inside():
    embedding = torch.randn(3, GRID, GRID, generator=torch.Generator().manual_seed(0))
    inside = image_cells((100, 384), GRID, PATCH)  # a 384 x 100 image: rows 0-6 hold it (the 7th partly)
    assert inside.sum() == 7 * GRID
    tokens = tokens_at((300.0, 100.0))  # origin (112, -96): part of the pattern lies outside the frame
    targets, weights = feature_targets(embedding, inside, tokens, PATTERN, PATCH)
    for index, ((x, y), stride) in enumerate(zip(tokens.corners[0].tolist(), tokens.strides.tolist(), strict=True)):
        frame_rows = [r for r in range(y // PATCH, y // PATCH + stride) if 0 <= r < GRID]
        cols = [c for c in range(x // PATCH, x // PATCH + stride) if 0 <= c < GRID]
        rows = [r for r in frame_rows if r < 7]
        if not tokens.valid[0, index] or not rows or not cols:
            assert weights[0, index] == 0, index
            continue
        assert weights[0, index] == pytest.approx(len(rows) / len(frame_rows)), index
        expected = embedding[:, rows][:, :, cols].mean((1, 2))
        assert torch.allclose(targets[0, index], expected, atol=1e-5), index
    assert (weights == 0).any() and (weights == 1).any() and ((weights > 0) & (weights < 1)).any()


def test_the_normalised_losses():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randn(2, 5, 4, generator=generator)
    variance = torch.tensor([1.0, 4.0, 0.25, 1.0])
    weights = torch.tensor([[1.0, 1.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    student = targets + torch.tensor([1.0, 2.0, 0.5, 0.0])  # one standard deviation off in 3 of 4 channels
    assert feature_loss(student, targets, weights, "mse", variance) == pytest.approx(0.75)
    assert feature_loss(3 * targets, targets, weights, "cosine", variance) == pytest.approx(0.0, abs=1e-6)
    assert feature_loss(-targets, targets, weights, "cosine", variance) == pytest.approx(2.0)
    unweighted = student.clone()
    unweighted[weights == 0] = 1e6  # tokens of weight zero take no part
    assert feature_loss(unweighted, targets, weights, "mse", variance) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="feature loss must be one of"):
        feature_loss(student, targets, weights, "l1", variance)


def test_the_channel_variance_pools_images_over_their_cells_inside():
    generator = torch.Generator().manual_seed(1)
    first, second = torch.randn(2, 3, GRID, GRID, generator=generator).unbind(0)
    inside_first, inside_second = image_cells((256, 256), GRID, PATCH), image_cells((128, 256), GRID, PATCH)
    moments = np.add(channel_moments(first, inside_first), channel_moments(second, inside_second)).tolist()
    pooled = torch.cat([first[:, :16, :16].flatten(1), second[:, :8, :16].flatten(1)], dim=1)
    assert moments[0] == 16 * 16 + 8 * 16
    assert torch.allclose(channel_variance(moments), pooled.double().var(1, unbiased=False).float(), rtol=1e-5)
