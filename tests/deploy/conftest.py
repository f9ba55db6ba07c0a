"""Graphs exported once per session: a tiny random SAM (default and stock-equivalent foveation), the reference."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def graphs(tmp_path_factory, tiny):
    """{name: (torch predictor, .onnx path)}."""
    from stt_ros.commands.cli import main
    from stt_ros.deploy.export import export_graph
    from stt_ros.model.tiny import stock_equivalent_options
    from stt_ros.predictor import FoveatedPredictor

    root = tmp_path_factory.mktemp("graphs")
    predictors = {
        "tiny": FoveatedPredictor(tiny, variant="custom"),
        "tiny-uniform": FoveatedPredictor(tiny, variant="custom", **stock_equivalent_options(tiny)),
    }
    graphs = {name: (p, export_graph(p, root / f"{name}.onnx")) for name, p in predictors.items()}
    assert main(["export", "--variant", "reference", "--out", str(root / "reference.onnx")]) == 0  # the command
    graphs["reference"] = (FoveatedPredictor.build("reference", device="cpu"), root / "reference.onnx")
    return graphs
