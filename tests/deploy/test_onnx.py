"""The exported graph on ONNX Runtime is the torch model: logits, masks, the stock-SAM invariant; bad graphs,
missing providers and unwritable caches are refused or skipped, saying why; the runtime needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from stt_ros import Prompt, ReferencePredictor
from stt_ros.deploy.runtime import OnnxPredictor, check_metadata, execution_providers

PROMPTS = [
    Prompt(points=[(120.0, 90.0)]),
    Prompt(points=[(239.0, 179.0)]),
    Prompt(points=[(100.0, 50.0), (30.0, 30.0), (200.0, 160.0)], labels=[1, 0, 1]),
    Prompt(points=[(10.0, 10.0), (60.0, 80.0)], labels=[0, 1]),
    Prompt(box=(10.0, 12.0, 150.0, 120.0)),
    Prompt(points=[(50.0, 60.0)], box=(20.0, 20.0, 90.0, 100.0)),
]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


@pytest.mark.parametrize("name", ["tiny", "reference"])
def test_the_graph_reproduces_the_torch_model(graphs, image, name):
    torch_predictor, path = graphs[name]
    graph = OnnxPredictor(path, providers=["cpu"])
    logits, scores = torch_predictor.predict_logits(image, PROMPTS)
    onnx_logits, onnx_scores = graph.predict_logits(image, PROMPTS)
    assert np.abs(onnx_logits - logits.numpy()).max() <= 1e-3
    assert np.abs(onnx_scores - scores.numpy()).max() <= 1e-3
    for ours, theirs in zip(graph.predict(image, PROMPTS), torch_predictor.predict(image, PROMPTS), strict=True):
        assert ours.index == theirs.index and iou(ours.mask, theirs.mask) >= 0.999
        assert ours.score == pytest.approx(theirs.score, abs=1e-3)
    upscaled = graph.upscale(onnx_logits[:, :3], image.shape[:2])
    expected = torch_predictor.upscale(logits[:, :3], image.shape[:2]).numpy()
    assert upscaled.shape == expected.shape and np.abs(upscaled - expected).max() <= 1e-3


def test_the_stock_sam_invariant_holds_through_the_graph(graphs, image, tiny):
    _, path = graphs["tiny-uniform"]
    stock_logits, stock_scores = ReferencePredictor(tiny).predict_logits(image, PROMPTS)
    logits, scores = OnnxPredictor(path, providers=["cpu"]).predict_logits(image, PROMPTS)
    assert np.abs(logits - stock_logits.numpy()).max() < 1e-3
    assert np.abs(scores - stock_scores.numpy()).max() < 1e-3


def test_the_graph_records_what_it_was_made_from(graphs):
    predictor, path = graphs["reference"]
    metadata = OnnxPredictor(path, providers=["cpu"]).metadata
    assert metadata["variant"] == "reference" and metadata["pattern"] == predictor.pattern.spec
    assert metadata["adapter"] == Path(predictor.adapter).name  # the shipped adapter, or "none"
    assert OnnxPredictor(path, providers=["cpu"]).adapter == metadata["adapter"]
    assert (metadata["tokens"], metadata["attention"], metadata["proportional"]) == ("pooled", "global", "true")
    assert len(metadata["weights_sha256"]) == 64 and metadata["img_size"] == "1024"
    inputs = {i.name: i for i in onnx.load_model(str(path), load_external_data=False).graph.input}
    assert list(inputs) == ["image", "image_size", "fovea", "coords", "labels"]
    opset = {o.domain: o.version for o in onnx.load_model(str(path), load_external_data=False).opset_import}
    assert opset[""] >= 17


@pytest.mark.parametrize(
    ("asked", "named"),
    [
        ({"variant": "vit_b"}, "variant: graph 'reference', asked 'vit_b'"),
        ({"pattern": "uniform:64"}, "pattern"),
        ({"tokens": "pixel"}, "tokens"),
        ({"proportional": False}, "proportional: graph True, asked False"),
    ],
)
def test_a_graph_for_other_settings_is_refused(graphs, asked, named):
    _, path = graphs["reference"]
    with pytest.raises(ValueError, match=named):
        OnnxPredictor(path, providers=["cpu"], expect=asked)
    metadata = OnnxPredictor(path, providers=["cpu"]).metadata
    check_metadata(metadata, {"variant": "reference", "pattern": "stt", "attention": None}, path)


def test_bad_files_are_refused_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="stt export"):
        OnnxPredictor(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx protobuf at all" * 10)
    with pytest.raises(ValueError, match=r"corrupt\.onnx is not an ONNX graph ONNX Runtime can load"):
        OnnxPredictor(corrupt)
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    result = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    onnx.save_model(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [value], [result])), foreign)
    with pytest.raises(ValueError, match="not one `stt export` wrote"):
        OnnxPredictor(foreign)


def test_missing_providers_are_skipped_with_a_note(tmp_path):
    available = ["CPUExecutionProvider"]
    chosen, notes = execution_providers(["tensorrt", "cuda", "cpu"], available, tmp_path)
    assert chosen == ["CPUExecutionProvider"]
    assert [note.split()[0] for note in notes] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    trt = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    chosen, notes = execution_providers(["tensorrt", "cpu"], trt, tmp_path / "engines")
    assert chosen[0][0] == "TensorrtExecutionProvider" and not notes
    assert chosen[0][1]["trt_fp16_enable"] and chosen[0][1]["trt_engine_cache_path"] == str(tmp_path / "engines")
    with pytest.raises(ValueError, match="none of the execution providers"):
        execution_providers(["cuda"], available)
    with pytest.raises(ValueError, match="must be among tensorrt, cuda, cpu"):
        execution_providers(["gpu"], available)


def test_an_unwritable_engine_cache_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"engine cache directory .* is not writable"):
        execution_providers(["tensorrt"], ["TensorrtExecutionProvider"], blocker / "engines")


def test_the_runtime_needs_neither_torch_nor_segment_anything(graphs, image, tmp_path):
    _, path = graphs["tiny"]
    np.save(tmp_path / "image.npy", image)
    script = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'segment_anything'): sys.modules[name] = None\n"
        "import numpy as np\n"
        "from stt_ros.deploy.runtime import OnnxPredictor\n"
        "from stt_ros.prompts import Prompt\n"
        f"graph = OnnxPredictor({str(path)!r}, providers=['cpu'], expect={{'pattern': 'stt', 'tokens': 'pooled'}})\n"
        f"result = graph.predict(np.load({str(tmp_path / 'image.npy')!r}), [Prompt(points=[(50.0, 60.0)])])\n"
        "print(result[0].mask.shape, graph.provider)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["(180,", "240)", "CPUExecutionProvider"]


def test_the_node_pipeline_runs_the_graph(graphs, tmp_path):
    """backend onnxruntime through the node's ROS-free parameters and scheduler."""
    from stt_ros.pipeline.binding import Frame, Request
    from stt_ros.pipeline.parameters import NodeConfig, load_predictors
    from stt_ros.pipeline.scheduler import FrameProcessor, Job
    from stt_ros.pipeline.tracking import Tracker

    _, path = graphs["reference"]
    config = NodeConfig.from_values({"variant": "reference", "backend": "onnxruntime", "model": str(path)})
    predictor, stock = load_predictors(config)
    assert stock is None and isinstance(predictor, OnnxPredictor) and predictor.device == "CPUExecutionProvider"
    rgb = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    processor = FrameProcessor(predictor, Tracker(), decode=lambda message: message)
    prompt = Prompt(points=[(80.0, 60.0)], id="a")
    output = processor.process(Job(Frame(1, None, rgb, 0.0), [Request("a", prompt)]))
    assert [item.prompt_id for item in output.items] == ["a"] and output.items[0].result.mask.shape == (120, 160)
    with pytest.raises(ValueError, match="exported for another model"):
        load_predictors(NodeConfig.from_values({"variant": "reference", "backend": "onnxruntime",
                                                "model": str(path), "tokens": "pixel"}))  # fmt: skip


@pytest.mark.slow
def test_vit_b_random_weights_through_the_graph(tmp_path, image):
    """The real vit_b shape (random weights): export, then ONNX Runtime against torch (minutes on a CPU)."""
    from stt_ros.deploy.export import export_graph
    from stt_ros.predictor import FoveatedPredictor

    torch.manual_seed(0)
    predictor = FoveatedPredictor.build("vit_b", checkpoint="random", device="cpu")
    graph = OnnxPredictor(export_graph(predictor, tmp_path / "vit_b.onnx"), providers=["cpu"])
    logits, scores = predictor.predict_logits(image, PROMPTS)
    onnx_logits, onnx_scores = graph.predict_logits(image, PROMPTS)
    assert np.abs(onnx_logits - logits.numpy()).max() <= 1e-3 and np.abs(onnx_scores - scores.numpy()).max() <= 1e-3
    for ours, theirs in zip(graph.predict(image, PROMPTS), predictor.predict(image, PROMPTS), strict=True):
        assert iou(ours.mask, theirs.mask) >= 0.999


def test_bench_times_the_backends_side_by_side(graphs, capsys):
    from stt_ros.commands.cli import main

    _, path = graphs["reference"]
    args = ["bench", "--variant", "reference", "--checkpoint", "random", "--device", "cpu", "--prompts", "2"]
    args += ["--repeats", "1", "--backend", "torch,onnxruntime", "--model", str(path), "--providers", "cpu", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["backend"] for row in report["backends"]] == ["torch fp32", "onnxruntime"]
    for row in report["backends"]:
        assert row["first_call_s"] > 0 and row["b1"]["median_ms"] > 0 and row["prompts_per_s"] > 0


def test_eval_bag_runs_the_graph(graphs, tmp_path, capsys):
    from stt_ros.bag.sample import GT_TOPIC, PROMPT_TOPIC, write_sample_bag
    from stt_ros.commands.cli import main

    _, path = graphs["reference"]
    bag = write_sample_bag(tmp_path / "bag", frames=2, width=160, height=120)
    args = ["eval-bag", str(bag), "--image-topic", "/camera/image_raw", "--prompt-topic", PROMPT_TOPIC]
    args += ["--gt-topic", GT_TOPIC, "--backend", "onnxruntime", "--model", str(path), "--providers", "cpu"]
    assert main([*args, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["frames"] == 2 and metrics["iou"]["count"] > 0
    assert metrics["run"]["device"] == "CPUExecutionProvider" and metrics["run"]["backend"].startswith("onnxruntime")


def test_an_int8_graph_says_so_and_stays_close(graphs, image, tmp_path):
    from stt_ros.deploy.export import export_graph

    predictor, path = graphs["reference"]
    quantized = OnnxPredictor(export_graph(predictor, tmp_path / "int8.onnx", quantize="int8"), providers=["cpu"])
    assert quantized.settings["quantization"] == "int8"
    assert OnnxPredictor(path, providers=["cpu"]).settings["quantization"] == "none"
    ours, fp32 = quantized.predict(image, PROMPTS), OnnxPredictor(path, providers=["cpu"]).predict(image, PROMPTS)
    # a trained decoder quantises less well than vit_b's random weights (0.98-0.99); a broken graph reads near 0
    assert np.mean([iou(a.mask, b.mask) for a, b in zip(ours, fp32, strict=True)]) >= 0.8
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        export_graph(predictor, tmp_path / "x.onnx", quantize="int4")
