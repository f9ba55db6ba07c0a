"""Adapter files hold the trainable weights plus the full config, and refuse a model they do not fit."""

from __future__ import annotations

import pytest
import torch

from stt_ros import FoveatedPredictor
from stt_ros.model.tiny import non_default_options


def test_round_trip_restores_the_adapters(tiny, tmp_path):
    source = FoveatedPredictor(tiny)
    with torch.no_grad():
        source.model.encoder.patch_adapter.up.normal_()
    path = tmp_path / "adapter.pt"
    source.model.save_adapters(path, "tiny", extra={"steps": 5})
    target = FoveatedPredictor(tiny)
    assert target.model.load_adapters(path, "tiny") == {"steps": 5}
    assert torch.equal(target.model.encoder.patch_adapter.up, source.model.encoder.patch_adapter.up)


@pytest.mark.parametrize(
    ("options", "field"),
    [*(({name: value}, name) for name, value in non_default_options().items()), ({"pattern": "uniform:8"}, "pattern")],
)
def test_mismatched_config_is_refused(tiny, tmp_path, options, field):
    path = tmp_path / "adapter.pt"
    FoveatedPredictor(tiny).model.save_adapters(path, "tiny")
    with pytest.raises(ValueError, match=f"{field}: model"):
        FoveatedPredictor(tiny, **options).model.load_adapters(path, "tiny")


def test_mismatched_variant_is_refused(tiny, tmp_path):
    path = tmp_path / "adapter.pt"
    FoveatedPredictor(tiny).model.save_adapters(path, "vit_b")
    with pytest.raises(ValueError, match="trained for variant 'vit_b', not 'vit_h'"):
        FoveatedPredictor(tiny).model.load_adapters(path, "vit_h")


def test_not_an_adapter_file(tiny, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not an stt_ros adapter file"):
        FoveatedPredictor(tiny).model.load_adapters(path, "tiny")
    with pytest.raises(FileNotFoundError):
        FoveatedPredictor(tiny).model.load_adapters(tmp_path / "missing.pt", "tiny")


def test_build_takes_the_adapter_files_settings(tmp_path):
    """`build(..., adapter=PATH)` rebuilds the configuration the adapter was trained with."""
    with pytest.warns(UserWarning, match="RANDOM"):
        trained = FoveatedPredictor.build(
            "reference", checkpoint="random", device="cpu", tokens="pixel", proportional=True, patch_rank=4
        )
    with torch.no_grad():
        trained.model.encoder.patch_adapter.up.normal_()
    path = tmp_path / "adapter.pt"
    trained.model.save_adapters(path, "reference")
    with pytest.warns(UserWarning, match="RANDOM"):
        loaded = FoveatedPredictor.build("reference", checkpoint="random", device="cpu", adapter=path)
    assert loaded.model.config() == trained.model.config()
    assert torch.equal(loaded.model.encoder.patch_adapter.up, trained.model.encoder.patch_adapter.up)
    with pytest.warns(UserWarning, match="RANDOM"), pytest.raises(ValueError, match="tokens: model 'pooled'"):
        FoveatedPredictor.build("reference", checkpoint="random", device="cpu", adapter=path, tokens="pooled")
