"""DESIGN §2.5: with the uniform pattern and untrained adapters, the foveated model *is* stock SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stt_ros import FoveatedPredictor, Prompt, ReferencePredictor
from stt_ros.model.tiny import stock_equivalent_options

PROMPTS = [
    Prompt(points=[(120.0, 90.0)]),
    Prompt(points=[(0.0, 0.0)]),
    Prompt(points=[(239.9, 179.0)]),
    Prompt(points=[(33.3, 150.7)]),
    Prompt(points=[(100.0, 50.0), (30.0, 30.0), (200.0, 160.0)], labels=[1, 0, 1]),
    Prompt(points=[(10.0, 10.0), (60.0, 80.0)], labels=[0, 1]),
    Prompt(points=[(10.0, 10.0), (60.0, 80.0)], labels=[0, 0]),
    Prompt(box=(10.0, 12.0, 150.0, 120.0)),
    Prompt(box=(200.0, 100.0, 239.0, 179.0)),
    Prompt(points=[(50.0, 60.0)], box=(20.0, 20.0, 90.0, 100.0)),
]


def uniform_predictor(sam, **options) -> FoveatedPredictor:
    return FoveatedPredictor(sam, **{**stock_equivalent_options(sam), **options})


def assert_matches_stock(sam, image, prompts):
    stock_logits, stock_iou = ReferencePredictor(sam).predict_logits(image, prompts)
    logits, iou = uniform_predictor(sam).predict_logits(image, prompts)
    assert (logits - stock_logits).abs().max() < 1e-4
    assert (iou - stock_iou).abs().max() < 1e-4
    # masks at the original size agree wherever the logit is not on the fence
    stock_up = ReferencePredictor(sam).upscale(stock_logits, image.shape[:2])
    ours_up = ReferencePredictor(sam).upscale(logits, image.shape[:2])
    decided = stock_up.abs() > 1e-3
    assert torch.equal((stock_up > 0)[decided], (ours_up > 0)[decided])


def test_positions_are_randomised(tiny):
    """Zero pos_embed / rel_pos would make the invariant pass with wrong geometry."""
    encoder = tiny.image_encoder
    assert encoder.pos_embed.abs().min() > 0
    assert all(block.attn.rel_pos_h.abs().sum() > 0 for block in encoder.blocks)
    assert {block.window_size for block in encoder.blocks} == {0, 4}


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_uniform_pattern_equals_stock_sam(tiny, image, index):
    assert_matches_stock(tiny, image, [PROMPTS[index]])


def test_uniform_pattern_equals_stock_sam_with_window_padding(tiny_padded, image):
    """G = 16 with window 5: stock SAM's zero-padded edge windows are emulated exactly."""
    assert tiny_padded.image_encoder.img_size // 16 % 5 != 0
    assert_matches_stock(tiny_padded, image, PROMPTS)


def test_window_padding_emulation_is_what_makes_it_exact(tiny_padded, image):
    prompt = [Prompt(points=[(235.0, 175.0)])]  # in an edge window
    stock, _ = ReferencePredictor(tiny_padded).predict_logits(image, prompt)
    without, _ = uniform_predictor(tiny_padded, emulate_window_padding=False).predict_logits(image, prompt)
    assert (without - stock).abs().max() > 1e-3


def test_square_and_tall_images(tiny):
    rng = np.random.default_rng(1)
    for shape in [(256, 256, 3), (300, 97, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        assert_matches_stock(tiny, image, [Prompt(points=[(shape[1] - 1.0, 5.0)]), Prompt(box=(1, 1, 50, 60))])


def test_zero_initialised_adapters_change_nothing(tiny, image):
    prompts = PROMPTS[:4]
    predictor = FoveatedPredictor(tiny)
    before, before_iou = predictor.predict_logits(image, prompts)
    encoder = predictor.model.encoder
    with torch.no_grad():
        encoder.patch_adapter.down.normal_()
        encoder.geometry_adapter.net[0].weight.normal_()
    after, after_iou = predictor.predict_logits(image, prompts)
    assert torch.equal(before, after) and torch.equal(before_iou, after_iou)
    with torch.no_grad():
        encoder.patch_adapter.up.normal_(std=0.1)
    changed, _ = predictor.predict_logits(image, prompts)
    assert (changed - before).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("attention", "tokens", "proportional"),
    [
        ("window", "pixel", False),
        ("global", "pooled", True),
    ],
)
def test_batched_equals_one_by_one(tiny, image, attention, tokens, proportional):
    predictor = FoveatedPredictor(tiny, attention=attention, tokens=tokens, proportional=proportional)
    batched, batched_iou = predictor.predict_logits(image, PROMPTS)
    for index, prompt in enumerate(PROMPTS):
        single, single_iou = predictor.predict_logits(image, [prompt])
        torch.testing.assert_close(single[0], batched[index], atol=1e-5, rtol=0)
        torch.testing.assert_close(single_iou[0], batched_iou[index], atol=1e-5, rtol=0)


def test_stock_batched_equals_one_by_one(tiny, image):
    predictor = ReferencePredictor(tiny)
    batched, _ = predictor.predict_logits(image, PROMPTS)
    for index, prompt in enumerate(PROMPTS):
        single, _ = predictor.predict_logits(image, [prompt])
        torch.testing.assert_close(single[0], batched[index], atol=1e-5, rtol=0)
