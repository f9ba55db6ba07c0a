"""`stt demo` and `stt bench` end to end on the shipped reference model (small enough for CI)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from stt_ros.commands.cli import main


def test_demo_writes_masks_overlays_and_foveation_views(tmp_path, capsys):
    assert main(["demo", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "synthetic scenes" in out  # says plainly what the reference model is
    assert "faster than stock SAM" in out
    rows = [line.split() for line in out.splitlines() if line.lstrip().startswith("(")]
    assert len(rows) == 3 and all(row[-2] == "/" for row in rows)  # both models scored against the truth
    assert all(0.0 <= float(row[-3]) <= 1.0 and 0.0 <= float(row[-1]) <= 1.0 for row in rows)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"input.png", "overlay.png", "overlay_stock.png", "mask_0.png", "foveation_0.png"} <= names
    mask = cv2.imread(str(tmp_path / "mask_0.png"), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (480, 640) and set(np.unique(mask)) <= {0, 255}


def test_demo_on_a_given_image_and_point(tmp_path, capsys):
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    image[30:90, 40:120] = (0, 200, 0)
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), image)
    assert (
        main(["demo", "--image", str(path), "--point", "80,60", "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    )
    assert "(80, 60)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "missing.png"], "does not exist"),
        (["--point", "12"], "is not U,V"),
        (["--point", "5000,5"], "outside"),
        (["--variant", "vit_b"], "needs a checkpoint"),
    ],
)
def test_demo_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["demo", "--device", "cpu", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_reports_json(capsys):
    args = ["bench", "--variant", "reference", "--checkpoint", "random", "--device", "cpu", "--prompts", "2"]
    assert main([*args, "--repeats", "2", "--stock-repeats", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompts"] == 2 and report["threads"] >= 1
    for key in ("foveated_b1", "stock_b1", "foveated_batch", "stock_batch"):
        assert report[key]["median_ms"] > 0 and report[key]["runs"] >= 1
    assert report["speedup_b1"] == pytest.approx(report["stock_b1"]["median_ms"] / report["foveated_b1"]["median_ms"])


@pytest.mark.parametrize("command", [["bench"], ["train", "--data", "synthetic", "--out", "a.pt"]])
def test_model_options_default_to_the_chosen_configuration(command):
    """Every command that builds a foveated model starts from the same defaults as the library and the node."""
    from stt_ros.commands.cli import build_parser
    from stt_ros.foveation import DEFAULT_TOKENS
    from stt_ros.model.encoder import DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL
    from stt_ros.pipeline.parameters import DEFAULTS

    args = build_parser().parse_args(command)
    chosen = (args.pattern, args.attention, args.tokens, args.proportional)
    assert chosen == ("stt", DEFAULT_ATTENTION, DEFAULT_TOKENS, DEFAULT_PROPORTIONAL)
    assert chosen == tuple(DEFAULTS[name] for name in ("pattern", "attention", "tokens", "proportional"))
    windowed = build_parser().parse_args([*command, "--attention", "window", "--tokens", "pixel", "--no-proportional"])
    assert (windowed.attention, windowed.tokens, windowed.proportional) == ("window", "pixel", False)
