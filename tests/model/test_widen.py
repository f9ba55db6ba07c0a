"""Widening a trained SAM: the wider model computes exactly what the trained one did."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import Sam

from stt_ros.model.reference import (
    REFERENCE_CONFIG,
    REFERENCE_WEIGHTS,
    load_reference_sam,
    read_reference_weights,
    save_reference_weights,
)
from stt_ros.model.sam_config import SamConfig
from stt_ros.model.tiny import tiny_config, tiny_sam
from stt_ros.model.widen import channel_copies, widen_factor, widen_sam, widened_config
from stt_ros.train.reference import TrainConfig, train_reference


def _outputs(sam: Sam, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Image embedding, then masks and IoU for a mixed point prompt and for a box."""
    size = sam.image_encoder.img_size
    embedding = sam.image_encoder(image)
    points = (torch.tensor([[[0.3, 0.6], [0.8, 0.2], [0.5, 0.5]]]) * size, torch.tensor([[1, 0, 1]]))
    box = torch.tensor([[0.05, 0.1, 0.6, 0.8]]) * size
    outputs = []
    for prompt in ({"points": points, "boxes": None}, {"points": None, "boxes": box}):
        sparse, dense = sam.prompt_encoder(masks=None, **prompt)
        masks, iou = sam.mask_decoder(embedding, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
        outputs += [masks, iou]
    return embedding, outputs


@pytest.mark.parametrize("factor", [2, 3])
def test_a_widened_sam_computes_what_the_trained_one_did(factor: int) -> None:
    config = tiny_config()
    sam = tiny_sam(0).eval()  # random weights, positions and relative positions included
    image = torch.randn(1, 3, config.img_size, config.img_size, generator=torch.Generator().manual_seed(1))
    wider = widen_sam(sam, config, factor).eval()
    assert wider.image_encoder.patch_embed.proj.out_channels == factor * config.encoder_embed_dim
    with torch.no_grad():
        embedding, outputs = _outputs(sam, image)
        wide_embedding, wide_outputs = _outputs(wider, image)
    copies = channel_copies("dec", config.prompt_embed_dim, factor, 1)
    torch.testing.assert_close(wide_embedding, embedding[:, copies], atol=1e-5, rtol=1e-5)
    for wide, original in zip(wide_outputs, outputs, strict=True):
        torch.testing.assert_close(wide, original, atol=1e-5, rtol=1e-5)


def test_noise_parts_the_copies_reproducibly() -> None:
    sam, config = tiny_sam(0), tiny_config()
    key = "image_encoder.blocks.0.mlp.lin1.weight"
    noisy = widen_sam(sam, config, 2, noise=1e-3, seed=5).state_dict()[key]
    assert torch.equal(noisy, widen_sam(sam, config, 2, noise=1e-3, seed=5).state_dict()[key])
    exact = widen_sam(sam, config, 2).state_dict()[key]
    difference = (noisy - exact).abs().max() / exact.std()
    assert 0 < difference < 1e-2


def test_copies_keep_each_head_and_each_half_of_the_encoding_together() -> None:
    assert channel_copies("plain", 3, 2, 1).tolist() == [0, 1, 2, 0, 1, 2]
    assert channel_copies("dec", 4, 2, 1).tolist() == [0, 1, 0, 1, 2, 3, 2, 3]  # [sin | cos] halves of 2 frequencies
    assert channel_copies("heads", 4, 2, 2).tolist() == [0, 1, 0, 1, 2, 3, 2, 3]  # 2 heads of 2 channels
    assert channel_copies("qkv", 6, 2, 1).tolist() == [0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5]


def test_only_integer_factors_of_the_same_shape_widen() -> None:
    config = tiny_config()
    assert widen_factor(config, widened_config(config, 3)) == 3
    for other in (replace(widened_config(config, 2), encoder_depth=3), replace(config, encoder_embed_dim=48)):
        with pytest.raises(ValueError, match="integer factor with everything else equal"):
            widen_factor(config, other)


def test_a_run_continued_at_twice_the_width_starts_from_the_trained_masks(tmp_path: Path) -> None:
    config = tiny_config()
    save_reference_weights(tiny_sam(0), config, tmp_path / "narrow.pt")
    wide = widened_config(config, 2)
    run = TrainConfig(
        steps=1, warmup=1, crops=1, crops_per_scene=1, eval_every=0, init=str(tmp_path / "narrow.pt"), lr=0.0
    )
    train_reference(replace(run, sam=wide.to_dict()), tmp_path / "wide.pt", progress=False)
    assert read_reference_weights(tmp_path / "wide.pt")[0] == wide
    image = torch.randn(1, 3, config.img_size, config.img_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, outputs = _outputs(load_reference_sam(path=tmp_path / "narrow.pt"), image)
        _, wide_outputs = _outputs(load_reference_sam(path=tmp_path / "wide.pt"), image)
    for wide_output, original in zip(wide_outputs, outputs, strict=True):  # lr 0: only the symmetry-breaking noise
        torch.testing.assert_close(wide_output, original, atol=0.02, rtol=0.05)
    with pytest.raises(ValueError, match="integer factor"):
        train_reference(replace(run, sam=replace(wide, encoder_depth=3).to_dict()), tmp_path / "x.pt", progress=False)


def test_the_command_widens_the_shipped_model_with_width_and_init() -> None:
    from stt_ros.commands.cli import build_parser
    from stt_ros.commands.train_reference import config_from_args

    args = build_parser().parse_args(["train-reference", "--init", str(REFERENCE_WEIGHTS), "--width", "192"])
    shape = SamConfig.from_dict(config_from_args(args).sam)
    assert shape == widened_config(REFERENCE_CONFIG, 2)
    assert widen_factor(REFERENCE_CONFIG, shape) == 2
