"""Checkpoint loading: official files by path, explicit random weights, and every way a file can be wrong."""

from __future__ import annotations

import pytest
import torch

from stt_ros import FoveatedPredictor, ReferencePredictor
from stt_ros.model.checkpoints import CheckpointError, load_sam, read_state_dict
from stt_ros.model.sam_config import OFFICIAL_CONFIGS
from stt_ros.model.tiny import tiny_config, tiny_sam


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save(tiny_sam(3).state_dict(), path)
    return path


def test_state_dict_round_trip(tiny_checkpoint):
    state = read_state_dict(tiny_checkpoint, "tiny", tiny_config())
    assert torch.equal(state["image_encoder.pos_embed"], tiny_sam(3).image_encoder.pos_embed)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sam("vit_b", tmp_path / "sam_vit_b.pth")


def test_the_reference_variant_loads_your_own_trained_weights(tmp_path, tiny_checkpoint):
    from stt_ros.model.reference import REFERENCE_CONFIG, reference_config, save_reference_weights
    from stt_ros.model.sam_config import build_sam

    torch.manual_seed(0)
    mine = build_sam(REFERENCE_CONFIG)
    save_reference_weights(mine, REFERENCE_CONFIG, tmp_path / "mine.pt")
    loaded = load_sam("reference", tmp_path / "mine.pt")
    assert all(torch.equal(loaded.state_dict()[key], value.half().float()) for key, value in mine.state_dict().items())
    with pytest.raises(CheckpointError, match="stt train-reference --out"):
        load_sam("reference", tmp_path / "missing.pt")
    wide = reference_config(128)
    save_reference_weights(build_sam(wide), wide, tmp_path / "wide.pt")  # stt train-reference --width 128
    assert load_sam("reference", tmp_path / "wide.pt").image_encoder.patch_embed.proj.out_channels == 128
    with pytest.raises(CheckpointError, match="not a reference SAM weights file"):
        load_sam("reference", tiny_checkpoint)  # an official-style state dict


def test_truncated_file(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        read_state_dict(truncated, "tiny", tiny_config())


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        read_state_dict(text, "tiny", tiny_config())
    other = tmp_path / "list.pth"
    torch.save([1, 2, 3], other)
    with pytest.raises(CheckpointError, match="does not hold a SAM state dict"):
        read_state_dict(other, "tiny", tiny_config())


def test_wrong_variant_is_named(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="does not fit SAM vit_b"):
        load_sam("vit_b", tiny_checkpoint)


def test_official_variant_mismatch_guesses_the_right_one(tmp_path):
    """A vit_b-shaped file offered as vit_l says it looks like vit_b (shapes only, no real weights)."""
    config = OFFICIAL_CONFIGS["vit_b"]
    state = {"image_encoder.pos_embed": torch.zeros(1, 64, 64, config.encoder_embed_dim)}
    for block in range(config.encoder_depth):
        state[f"image_encoder.blocks.{block}.norm1.weight"] = torch.zeros(config.encoder_embed_dim)
    path = tmp_path / "partial_vit_b.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="looks like a vit_b checkpoint"):
        read_state_dict(path, "vit_l", OFFICIAL_CONFIGS["vit_l"])


def test_official_variants_need_a_checkpoint():
    for variant in ("vit_b", "vit_l", "vit_h"):
        with pytest.raises(CheckpointError, match="needs a checkpoint"):
            FoveatedPredictor.build(variant, device="cpu")


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown SAM variant"):
        load_sam("vit_xl", "random")


def test_random_weights_warn_loudly():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        predictor = ReferencePredictor.build("vit_b", checkpoint="random", device="cpu")
    assert predictor.sam.image_encoder.pos_embed.abs().sum() > 0


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        FoveatedPredictor.build("vit_b", checkpoint="random", device="cuda")
