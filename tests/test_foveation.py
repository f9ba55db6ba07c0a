"""Foveation geometry and extraction: token counts, exact box averages, validity, reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_ros.foveation import FoveationPattern

MEAN = torch.tensor([123.675, 116.28, 103.53])
STD = torch.tensor([58.395, 57.12, 57.375])


def test_stt_preset_geometry():
    pattern = FoveationPattern.stt()
    assert pattern.num_tokens == 172
    assert pattern.level_counts == (16, 12, 32, 48, 64)
    assert pattern.block_sizes == (64, 128, 384, 768, 1280)
    assert pattern.extent == 1280
    layout = pattern.layout()
    assert len(layout.corners) == 172
    assert np.bincount(layout.levels).tolist() == [16, 12, 32, 48, 64]


def test_levels_tile_the_extent_exactly():
    pattern = FoveationPattern.stt()
    layout = pattern.layout()
    cover = np.zeros((pattern.extent, pattern.extent), dtype=np.int32)
    for (x, y), stride in zip(layout.corners, layout.strides, strict=True):
        cover[y : y + 16 * stride, x : x + 16 * stride] += 1
    assert (cover == 1).all()


def test_uniform_pattern():
    pattern = FoveationPattern.uniform(8)
    assert pattern.num_tokens == 64
    assert pattern.extent == 128


@pytest.mark.parametrize(
    ("strides", "grids", "problem"),
    [
        ((1, 2), (4,), "one entry per level"),
        ((1, 1), (4, 4), "strides must increase"),
        ((1, 2), (4, 2), "blocks must grow"),
        ((1, 3), (4, 4), "nest evenly"),
        ((1, 2), (4, 5), "nest evenly"),
        ((0, 2), (4, 4), "positive"),
        ((1, 2), (4, -4), "positive"),
        ((), (), "at least one level"),
    ],
)
def test_invalid_patterns_are_rejected_with_the_reason(strides, grids, problem):
    with pytest.raises(ValueError, match=problem):
        FoveationPattern(16, strides, grids)


def test_parse():
    assert FoveationPattern.parse("stt") == FoveationPattern.stt()
    assert FoveationPattern.parse("1,2,4,6,8/4,4,6,8,10") == FoveationPattern.stt()
    assert FoveationPattern.parse("uniform:32") == FoveationPattern.uniform(32)
    assert [FoveationPattern.parse(text).spec for text in ("1,2,4,6,8/4,4,6,8,10", "uniform:32", "1,2/4,4")] == [
        "stt",
        "uniform:32",
        "1,2/4,4",
    ]
    assert FoveationPattern(8, (1, 2), (4, 4)).spec == "1,2/4,4 (token size 8)"
    with pytest.raises(ValueError, match="comma-separated integers"):
        FoveationPattern.parse("1,x/4,4")
    with pytest.raises(ValueError, match="is not"):
        FoveationPattern.parse("banana")


@settings(max_examples=60, deadline=None)
@given(
    first_grid=st.integers(1, 6),
    steps=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=0, max_size=3),
)
def test_constructed_nested_patterns_are_accepted_and_tile(first_grid, steps):
    """Build patterns that nest by construction; they validate and their counts add up to the area."""
    strides, grids = [1], [first_grid]
    for factor, ring in steps:
        stride = strides[-1] * (factor + 1)
        inner = strides[-1] * grids[-1]
        if inner % stride:
            continue
        strides.append(stride)
        grids.append(inner // stride + 2 * ring)
    pattern = FoveationPattern(16, strides, grids)
    area = sum(count * (16 * s) ** 2 for count, s in zip(pattern.level_counts, strides, strict=True))
    assert area == pattern.extent**2
    assert FoveationPattern.parse(pattern.spec) == pattern


def naive_token(image: np.ndarray, x0: int, y0: int, stride: int, mode: str) -> np.ndarray:
    """The 16x16 patch of one token by brute force: out-of-image pixels are the pixel mean."""
    h, w = image.shape[:2]
    out = np.zeros((16, 16, 3))
    for a in range(16):
        for b in range(16):
            if mode == "pixel":
                ys = [y0 + stride * a + i for i in range(stride)]
                xs = [x0 + stride * b + j for j in range(stride)]
            else:
                ys = [y0 + 16 * i + a for i in range(stride)]
                xs = [x0 + 16 * j + b for j in range(stride)]
            values = [
                image[y, x].astype(np.float64) if 0 <= y < h and 0 <= x < w else MEAN.double().numpy()
                for y in ys
                for x in xs
            ]
            out[a, b] = np.mean(values, axis=0)
    return (out - MEAN.numpy()) / STD.numpy()


@pytest.mark.parametrize("mode", ["pixel", "pooled"])
def test_every_token_is_the_naive_average_of_its_region(mode):
    pattern = FoveationPattern(16, (1, 2, 4), (4, 4, 4))  # 16 + 12 + 12 tokens, 256 px
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    centres = torch.tensor([[100.0, 75.0], [3.0, 140.0], [199.0, 0.5]])
    tokens = pattern.extract(torch.from_numpy(image), centres, 256, MEAN, STD, mode)
    for b in range(3):
        for n in range(pattern.num_tokens):
            x0, y0 = tokens.corners[b, n].tolist()
            expected = naive_token(image, x0, y0, int(tokens.strides[n]), mode)
            got = tokens.patches[b, n].permute(1, 2, 0).numpy()
            if tokens.valid[b, n]:
                np.testing.assert_allclose(got, expected, atol=1e-5)
            else:
                assert not got.any()


def test_centres_origin_and_validity_follow_the_frame():
    pattern = FoveationPattern.stt()
    image = torch.zeros((768, 1024, 3), dtype=torch.uint8)
    centres = torch.tensor([[512.0, 512.0], [0.5, 0.5], [1023.5, 767.5], [-300.0, 2000.0]])
    tokens = pattern.extract(image, centres, 1024, MEAN, STD)
    # origin = 16 * round((c - extent / 2) / 16), so stride-1 tokens are SAM patches
    assert tokens.origins.tolist() == [[-128, -128], [-640, -640], [384, 128], [-944, 1360]]
    assert (tokens.corners[:, :16] % 16 == 0).all()
    expected_centres = tokens.corners.float() + 8 * tokens.strides[None, :, None].float()
    assert torch.equal(tokens.centres, expected_centres)
    inside = ((tokens.centres >= 0) & (tokens.centres < 1024)).all(-1)
    assert torch.equal(tokens.valid, inside)
    # centred: everything but the outer ring's 128 px tokens hanging over the frame's edges
    assert tokens.valid[0, :108].all()
    assert tokens.valid[0].sum() == 16 + 12 + 32 + 48 + 28
    assert 0 < tokens.valid[1].sum() < 172  # corner: part of the pattern is off the frame
    assert tokens.valid[1, :16].sum() == 4  # only the fine tokens right of and below the corner
    assert not tokens.valid[3].any()  # far outside: nothing valid


def test_batched_extraction_equals_one_by_one():
    pattern = FoveationPattern.stt()
    image = torch.randint(0, 256, (300, 1024, 3), dtype=torch.uint8)
    centres = torch.tensor([[10.0, 10.0], [700.0, 250.0], [1000.0, 5.0]])
    batched = pattern.extract(image, centres, 1024, MEAN, STD)
    for b in range(3):
        single = pattern.extract(image, centres[b : b + 1], 1024, MEAN, STD)
        assert torch.equal(single.patches[0], batched.patches[b])
        assert torch.equal(single.valid[0], batched.valid[b])


def test_reconstruction_is_sharp_at_the_fovea_and_coarse_outside():
    pattern = FoveationPattern.stt()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    tokens = pattern.extract(torch.from_numpy(image), torch.tensor([[512.0, 512.0]]), 1024, MEAN, STD)
    seen = pattern.reconstruct(tokens, 1024, MEAN, STD)[0].numpy()
    # fovea (stride 1): pixel exact up to rounding
    assert np.abs(seen[480:544, 480:544].astype(int) - image[480:544, 480:544]).max() <= 1
    # periphery (stride 8): constant over each 8x8 block, equal to the block mean
    block = image[0:8, 0:8].reshape(-1, 3).mean(0)
    assert np.abs(seen[0:8, 0:8].reshape(-1, 3) - block).max() <= 1


def test_reconstruction_paints_pixel_mean_where_no_token_is_valid():
    pattern = FoveationPattern.stt()
    image = torch.zeros((64, 64, 3), dtype=torch.uint8)
    tokens = pattern.extract(image, torch.tensor([[0.5, 0.5]]), 64, MEAN, STD)
    seen = pattern.reconstruct(tokens, 64, MEAN, STD)[0]
    assert seen.shape == (64, 64, 3)
    # inside the frame, the 64x64 image is black; SAM's pad is the mean colour
    assert seen[:8, :8].max() == 0


def test_bad_extraction_input():
    pattern = FoveationPattern.stt()
    with pytest.raises(ValueError, match="token mode"):
        pattern.extract(torch.zeros((8, 8, 3), dtype=torch.uint8), torch.zeros((1, 2)), 16, MEAN, STD, "median")
    with pytest.raises(ValueError, match="uint8"):
        pattern.extract(torch.zeros((8, 8, 3)), torch.zeros((1, 2)), 16, MEAN, STD)
