"""Predictor API (DESIGN §3): results, multimask policies, every bad-input path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from stt_ros import FoveatedPredictor, FoveationPattern, Prompt, ReferencePredictor, SegmentationResult


@pytest.fixture(scope="module")
def predictor(tiny):
    return FoveatedPredictor(tiny)


def test_results_have_the_documented_fields(predictor, image):
    results = predictor.predict(image, [Prompt(points=[(120, 90)]), Prompt(box=(10, 10, 100, 100))])
    assert len(results) == 2
    for result in results:
        assert isinstance(result, SegmentationResult)
        assert result.mask.shape == image.shape[:2] and result.mask.dtype == bool
        assert len(result.scores) == 3
        assert result.index in (0, 1, 2, 3)
    assert results[0].index in (0, 1, 2)  # auto: one point -> best of the three
    assert results[0].score == max(results[0].scores)
    assert results[1].index == 3  # auto: a box -> the single-mask output


def test_mask_is_the_thresholded_upscaled_logit(predictor, image):
    prompt = [Prompt(points=[(50, 50), (60, 70)])]
    logits, iou = predictor.predict_logits(image, prompt)
    result = predictor.predict(image, prompt, multimask="single")[0]
    expected = predictor.upscale(logits[:, 3:], image.shape[:2])[0, 0] > 0
    assert np.array_equal(result.mask, expected.numpy())
    assert result.score == pytest.approx(float(iou[0, 3]))


@pytest.mark.parametrize("policy", ["best", "largest", "single", 0, 1, 2, "2"])
def test_multimask_policies(predictor, image, policy):
    prompt = [Prompt(points=[(120, 90)])]
    logits, iou = predictor.predict_logits(image, prompt)
    result = predictor.predict(image, prompt, multimask=policy)[0]
    expected = {
        "best": int(iou[0, :3].argmax()),
        "largest": int((logits[0, :3] > 0).flatten(1).sum(1).argmax()),
        "single": 3,
    }.get(policy, int(policy) if not isinstance(policy, str) or policy.isdigit() else None)
    assert result.index == expected


def test_unknown_multimask_policy(predictor, image):
    with pytest.raises(ValueError, match="multimask must be one of"):
        predictor.predict(image, [Prompt(points=[(1, 1)])], multimask="biggest")


def test_empty_prompt_list_returns_empty_list(predictor, image):
    assert predictor.predict(image, []) == []


def test_prompts_of_different_shapes_keep_their_order(predictor, image):
    prompts = [Prompt(points=[(5, 5)]), Prompt(box=(1, 1, 60, 60)), Prompt(points=[(100, 100)])]
    together = predictor.predict(image, prompts)
    for prompt, result in zip(prompts, together, strict=True):
        alone = predictor.predict(image, [prompt])[0]
        assert alone.index == result.index
        assert (alone.mask != result.mask).mean() < 1e-3


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 10), dtype=np.uint8), "HxWx3"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "HxWx3"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images(predictor, image, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(image, [Prompt(points=[(0, 0)])])


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (Prompt(points=[(float("nan"), 3)]), "finite"),
        (Prompt(points=[(3, float("inf"))]), "finite"),
        (Prompt(points=[(240, 3)]), "outside the 240x180 image"),
        (Prompt(points=[(-0.5, 3)]), "outside"),
        (Prompt(points=[(3, 3)], labels=[1, 0]), "1 points but 2 labels"),
        (Prompt(points=[(3, 3)], labels=[2]), "labels must be 1"),
        (Prompt(box=(10, 10, 5, 20)), "x_min < x_max"),
        (Prompt(box=(10, 10, 20)), "x_min, y_min, x_max, y_max"),
        (Prompt(box=(0, 0, float("nan"), 5)), "finite"),
        (Prompt(box=(300, 300, 400, 400)), "does not overlap"),
        (Prompt(), "neither points nor a box"),
    ],
)
def test_bad_prompts_name_the_problem(predictor, image, prompt, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(image, [Prompt(points=[(1, 1)]), prompt])


def test_non_prompt_objects_are_rejected(predictor, image):
    with pytest.raises(ValueError, match=r"expected stt_ros\.Prompt"):
        predictor.predict(image, [(1, 1)])


@pytest.mark.parametrize("tokens", ["pixel", "pooled"])
@pytest.mark.parametrize("attention", ["window", "global"])
def test_every_model_option_predicts(tiny, image, tokens, attention):
    predictor = FoveatedPredictor(tiny, tokens=tokens, attention=attention, proportional=True, pattern="stt")
    result = predictor.predict(image, [Prompt(points=[(0, 179)])])[0]
    assert result.mask.shape == image.shape[:2]
    assert np.isfinite(result.score)


def test_bad_model_options(tiny):
    with pytest.raises(ValueError, match="attention mode"):
        FoveatedPredictor(tiny, attention="local")
    with pytest.raises(ValueError, match="token mode"):
        FoveatedPredictor(tiny, tokens="mean")
    with pytest.raises(ValueError, match="dtype"):
        FoveatedPredictor(tiny, dtype="int8")
    with pytest.raises(ValueError, match="token size"):
        FoveatedPredictor(tiny, pattern=FoveationPattern(8, (1,), (4,)))


def test_bf16_autocast_runs_on_cpu(tiny, image):
    result = FoveatedPredictor(tiny, dtype="bf16").predict(image, [Prompt(points=[(100, 100)])])[0]
    assert result.mask.shape == image.shape[:2]


def test_reference_predictor_shares_the_interface(tiny, image):
    results = ReferencePredictor(tiny).predict(image, [Prompt(points=[(120, 90)]), Prompt(box=(10, 10, 100, 100))])
    assert [r.index == 3 for r in results] == [False, True]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_matches_cpu(tiny, image):
    prompts = [Prompt(points=[(120, 90)]), Prompt(points=[(3, 170)])]
    cpu, _ = FoveatedPredictor(tiny).predict_logits(image, prompts)
    gpu_sam = copy.deepcopy(tiny).to("cuda")
    gpu, _ = FoveatedPredictor(gpu_sam).predict_logits(image, prompts)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
