"""The node's parameters are validated before any model loads, each bad value named."""

from __future__ import annotations

import pytest

from stt_ros.pipeline.parameters import NodeConfig


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="checkpoint is empty"):
        NodeConfig.from_values({})
    with pytest.raises(ValueError, match="no file at"):
        NodeConfig.from_values({"checkpoint": str(tmp_path / "missing.pth")})
    config = NodeConfig.from_values({"checkpoint": "random", "multimask": "2", "prompt_tolerance": 0.05})
    assert config.multimask == 2 and config.tolerance_ns == 50_000_000 and config.max_tracks == 8
    assert NodeConfig.from_values({"variant": "reference"}).checkpoint == ""
    with pytest.raises(ValueError, match="no file at"):  # the reference model from your own training run
        NodeConfig.from_values({"variant": "reference", "checkpoint": str(tmp_path / "mine.pt")})
    for bad, match in [
        ({"image_transport": "theora"}, "image_transport"),
        ({"camera_model": "fisheye"}, "camera_model"),
        ({"max_tracks": 0}, "max_tracks"),
        ({"prompt_tolerance": -1.0}, "prompt_tolerance"),
        ({"multimask": "most"}, "multimask"),
        ({"frame_buffer": 3}, "unknown parameters"),
        ({"diagnostics_period": 1.0}, "unknown parameters"),
    ]:
        with pytest.raises(ValueError, match=match):
            NodeConfig.from_values({"checkpoint": "random", **bad})


def test_device_auto_is_the_default():
    assert NodeConfig.from_values({"checkpoint": "random"}).device == "auto"


def test_adapter_is_a_file_empty_or_none(tmp_path):
    assert NodeConfig.from_values({"variant": "reference", "adapter": "none"}).adapter == "none"
    assert NodeConfig.from_values({"variant": "reference"}).adapter == ""
    with pytest.raises(ValueError, match=r"parameter adapter: no file at .*'none' for untrained adapters"):
        NodeConfig.from_values({"variant": "reference", "adapter": str(tmp_path / "a.pt")})
