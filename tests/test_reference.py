"""The reference SAM: training loop, exact resume, shipped weights and their quality guard."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stt_ros.evaluation import evaluate, evaluate_sam, heldout_scenes
from stt_ros.model.reference import (
    REFERENCE_CONFIG,
    REFERENCE_WEIGHTS,
    load_reference_sam,
    save_reference_weights,
)
from stt_ros.model.sam_config import build_sam
from stt_ros.scenes import generate_scene
from stt_ros.testing import tiny_config
from stt_ros.train.reference import TrainConfig, forward_loss, make_batch, train_reference

QUALITY_SCENES = 16  # the guard's fixed held-out set: heldout_scenes(16)


def _tiny_train_config(**overrides) -> TrainConfig:
    config = TrainConfig(steps=4, warmup=2, checkpoint_every=2, eval_every=0, sam=tiny_config().to_dict())
    return replace(config, **overrides)


def test_training_step_reduces_the_loss() -> None:
    torch.manual_seed(0)
    sam = build_sam(tiny_config()).train()
    batch = make_batch(sam, _tiny_train_config(), step=0)
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss, _ = forward_loss(sam, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_batches_are_deterministic_and_mix_prompt_kinds() -> None:
    sam = build_sam(tiny_config())
    config = _tiny_train_config()
    a, b = make_batch(sam, config, 3), make_batch(sam, config, 3)
    assert torch.equal(a.image, b.image)
    kinds = set()
    for step in range(6):
        for group in make_batch(sam, config, step).groups:
            kind = "box" if group["boxes"] is not None else f"{group['points'][0].shape[1]}-point"
            assert group["multimask"] == (kind == "1-point")  # SAM: 3 outputs only for one point
            kinds.add(kind)
    assert {"box", "1-point"} <= kinds and len(kinds) >= 3
    pooled = replace(config, pool_steps=8, pool_size=4)
    assert torch.equal(make_batch(sam, pooled, 1).image, make_batch(sam, pooled, 5).image)
    assert not torch.equal(make_batch(sam, pooled, 1).image, make_batch(sam, pooled, 9).image)


def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    config = _tiny_train_config()
    straight = train_reference(config, tmp_path / "a.pt", progress=False)
    train_reference(config, tmp_path / "b.pt", progress=False, stop_after=2)
    resumed = train_reference(config, tmp_path / "b.pt", resume=True, progress=False)
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight]
    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert (tmp_path / "a_loss.png").is_file()
    with pytest.raises(ValueError, match="different settings"):
        train_reference(replace(config, lr=1.0), tmp_path / "b.pt", resume=True, progress=False)


def test_weights_round_trip_and_clear_errors(tmp_path: Path) -> None:
    config = tiny_config()
    torch.manual_seed(0)
    sam = build_sam(config)
    save_reference_weights(sam, config, tmp_path / "w.pt")
    loaded = load_reference_sam(path=tmp_path / "w.pt", config=config)
    for key, value in sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.half().float())
    with pytest.raises(FileNotFoundError, match="train-reference"):
        load_reference_sam(path=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="different SAM shape"):
        load_reference_sam(path=tmp_path / "w.pt")


def test_evaluation_scores_a_perfect_segmenter_at_one() -> None:
    scenes = [generate_scene(1), generate_scene(2)]
    truth = {id(scene.image): scene for scene in scenes}

    def oracle(image: np.ndarray, points: list[tuple[float, float]]) -> list[tuple[np.ndarray, np.ndarray]]:
        masks = truth[id(image)].masks()
        return [(m, np.stack([~m, m, m])) for m in masks]

    result = evaluate(oracle, scenes)
    assert result.num_instances == sum(s.num_instances for s in scenes)
    assert result.miou == 1.0 and result.oracle_miou == 1.0


def test_shipped_weights_load() -> None:
    sam = load_reference_sam()
    assert sum(p.numel() for p in sam.parameters()) < 5_000_000
    assert REFERENCE_WEIGHTS.stat().st_size < 10 * 2**20
    assert sam.image_encoder.img_size == REFERENCE_CONFIG.img_size == 1024


@pytest.mark.xfail(
    strict=True,
    reason="the shipped reference weights are under-trained (see stt_ros/weights/MODEL_CARD.md); "
    "remove this marker when retrained weights reach the target",
)
def test_stock_reference_quality_guard() -> None:
    """Single-point protocol on a fixed held-out set: the stock reference model stays at mIoU >= 0.80."""
    result = evaluate_sam(load_reference_sam(), heldout_scenes(QUALITY_SCENES))
    assert result.num_instances >= 50
    assert result.miou >= 0.80, f"stock reference mIoU {result.miou:.3f} < 0.80"
    assert result.oracle_miou >= result.miou


def test_predictor_and_raw_sam_evaluations_agree() -> None:
    """The project predictor path and SAM's own predictor give the same single-point numbers."""
    from stt_ros import ReferencePredictor
    from stt_ros.evaluation import predictor_segmenter, sam_segmenter
    from stt_ros.testing import tiny_sam

    sam = tiny_sam(0)
    scenes = heldout_scenes(2)
    raw = evaluate(sam_segmenter(sam), scenes)
    wrapped = evaluate(predictor_segmenter(ReferencePredictor(sam)), scenes)
    assert raw.chosen_ious == pytest.approx(wrapped.chosen_ious, abs=1e-6)
    assert raw.oracle_ious == pytest.approx(wrapped.oracle_ious, abs=1e-6)
