"""Adapter files hold the trainable weights plus the full config, and refuse a model they do not fit."""

from __future__ import annotations

import pytest
import torch

from stt_ros import FoveatedPredictor, Prompt
from stt_ros.model.tiny import non_default_options
from stt_ros.train.distill import default_model_options


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


RICHER = {"patch_adapter": "mlp", "patch_rank": 6, "geometry_inputs": "fovea", "encoder_lora": 2}


def _randomise(predictor: FoveatedPredictor) -> None:
    with torch.no_grad():
        for module in predictor.model.adapter_modules().values():
            for parameter in module.parameters():
                if parameter.requires_grad:
                    parameter.normal_(std=0.05)


def test_every_adapter_option_starts_as_an_exact_no_op(tiny, image):
    prompts = [Prompt(points=[(60.0, 50.0)]), Prompt(points=[(200.0, 150.0)])]
    plain = FoveatedPredictor(tiny).predict_logits(image, prompts)
    for name, value in RICHER.items():
        richer = FoveatedPredictor(tiny, **{name: value}).predict_logits(image, prompts)
        assert all(torch.equal(a, b) for a, b in zip(plain, richer, strict=True)), name


def test_the_richer_adapters_round_trip_through_the_file(tiny, image, tmp_path):
    source = FoveatedPredictor(tiny, **RICHER)
    _randomise(source)
    assert set(source.model.trainable_state()) == {"patch_adapter", "geometry_adapter", "encoder_lora"}
    path = tmp_path / "adapter.pt"
    source.model.save_adapters(path, "tiny")
    loaded = FoveatedPredictor.with_adapter(tiny, path, "tiny")
    assert loaded.model.config() == source.model.config() and loaded.adapter == str(path)
    prompts = [Prompt(points=[(60.0, 50.0)])]
    assert torch.equal(source.predict_logits(image, prompts)[0], loaded.predict_logits(image, prompts)[0])
    plain = FoveatedPredictor(tiny).predict_logits(image, prompts)[0]
    assert not torch.equal(plain, loaded.predict_logits(image, prompts)[0]), "the richer adapters did nothing"
    for name in RICHER:
        with pytest.raises(ValueError, match=f"{name}: model {FoveatedPredictor(tiny).model.config()[name]!r}"):
            FoveatedPredictor(tiny, **{**RICHER, name: default_model_options()[name]}).model.load_adapters(path, "tiny")


def test_bad_adapter_options_are_refused(tiny):
    for options, message in [
        ({"patch_adapter": "conv"}, "patch adapter must be one of"),
        ({"geometry_inputs": "depth"}, "geometry inputs must be one of"),
        ({"encoder_lora": -1}, "encoder LoRA rank must be at least 0"),
        ({"patch_rank": 0}, "patch adapter rank must be at least 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            FoveatedPredictor(tiny, **options)


def test_a_half_precision_file_loads_into_float32(tiny, tmp_path):
    source = FoveatedPredictor(tiny)
    _randomise(source)
    path = tmp_path / "adapter.pt"
    source.model.save_adapters(path, "tiny", dtype=torch.float16)
    loaded = FoveatedPredictor.with_adapter(tiny, path, "tiny").model.encoder.patch_adapter.up
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded, source.model.encoder.patch_adapter.up.half().float())


def test_a_version_1_file_without_the_richer_settings_still_loads(tiny, tmp_path):
    path = tmp_path / "adapter.pt"
    FoveatedPredictor(tiny).model.save_adapters(path, "tiny")
    payload = torch.load(path, weights_only=True)
    for key in ("patch_adapter", "geometry_inputs", "encoder_lora"):
        del payload["config"][key]
    payload["version"] = 1
    torch.save(payload, path)
    assert FoveatedPredictor.with_adapter(tiny, path, "tiny").model.config() == FoveatedPredictor(tiny).model.config()


@pytest.fixture()
def shipped_adapter(tmp_path, monkeypatch):
    """A stand-in for the shipped reference adapter (the tests must not depend on which one ships)."""
    import stt_ros.model.checkpoints as checkpoints

    predictor = FoveatedPredictor.build("reference", adapter="none", device="cpu")
    _randomise(predictor)
    path = tmp_path / "reference_adapter.pt"
    predictor.model.save_adapters(path, "reference")
    monkeypatch.setattr(checkpoints, "REFERENCE_ADAPTER", path)
    return path, predictor


def test_the_reference_model_uses_the_shipped_adapter_unless_told_otherwise(shipped_adapter):
    path, trained = shipped_adapter
    default = FoveatedPredictor.build("reference", device="cpu")
    assert default.adapter == str(path)
    assert torch.equal(default.model.encoder.patch_adapter.up, trained.model.encoder.patch_adapter.up)
    zero_shot = FoveatedPredictor.build("reference", adapter="none", device="cpu")
    assert zero_shot.adapter == "none" and not zero_shot.model.encoder.patch_adapter.up.any()
    with pytest.warns(UserWarning, match="RANDOM"):  # other weights: the shipped adapter was not trained for them
        assert FoveatedPredictor.build("reference", checkpoint="random", device="cpu").adapter == "none"
    assert FoveatedPredictor.build("reference", device="cpu", pattern="stt", tokens="pooled").adapter == str(path)


def test_settings_the_shipped_adapter_was_not_trained_for_run_zero_shot_with_a_warning(shipped_adapter, caplog):
    with caplog.at_level("WARNING", logger="stt_ros.predictor"):
        asked = FoveatedPredictor.build("reference", device="cpu", attention="window", pattern="uniform:8")
    assert asked.adapter == "none" and not asked.model.encoder.patch_adapter.up.any()
    assert asked.model.encoder.attention == "window" and asked.pattern.spec == "uniform:8"
    assert "trained for other settings (attention: window, pattern: uniform:8)" in caplog.text
    with pytest.raises(ValueError, match="attention: model 'window' vs adapter 'global'"):  # a file you name must fit
        FoveatedPredictor.build("reference", adapter=shipped_adapter[0], device="cpu", attention="window")
