"""The foveated model as one ONNX graph: a frame-sized image and prompts in, SAM's low-res logits and IoU out.

The token count is fixed by the pattern, so everything from tokenization (integral images and gathers) through
the frozen encoder and SAM's decoder to the painted logit canvas is one static-shaped graph; only the number of
prompts (the batch) and of sparse prompt points vary. Resizing the image and SAM's post-processing stay
outside, in numpy (`stt_ros.deploy.runtime`), so running the graph needs neither torch nor segment-anything.
The graph records its pattern, options, variant and a hash of its weights; the runtime refuses a graph that
does not match what it is asked to run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stt_ros.deploy.runtime import FORMAT
from stt_ros.geometry import padded_frame, sparse_prompts
from stt_ros.model.foveated_sam import FoveatedSam
from stt_ros.predictor import FoveatedPredictor
from stt_ros.prompts import Prompt

FORMAT_VERSION = 1
OPSET = 18
INPUTS = ("image", "image_size", "fovea", "coords", "labels")
OUTPUTS = ("logits", "iou")
MAX_PROMPTS = 1024  # bounds of the dynamic axes (prompts per call, sparse points per prompt)
MAX_POINTS = 64


class FoveatedGraph(nn.Module):
    """`FoveatedSam.segment` with the image padded to the frame, the shape the graph has."""

    def __init__(self, model: FoveatedSam) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image: torch.Tensor,
        image_size: torch.Tensor,
        fovea: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.segment(image, fovea, coords, labels, image_size)


def weights_hash(model: nn.Module) -> str:
    """sha256 of every tensor of the model (SAM's weights and the adapters), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def graph_metadata(predictor: FoveatedPredictor) -> dict[str, str]:
    """What the graph records: enough to refuse it for another model and to run it without torch."""
    model = predictor.model
    config = model.config()
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "variant": predictor.variant,
        "adapter": Path(predictor.adapter).name,  # "none" for untrained adapters
        "pattern": predictor.pattern.spec,
        "tokens": config["tokens"],
        "attention": config["attention"],
        "proportional": json.dumps(config["proportional"]),
        "emulate_window_padding": json.dumps(config["emulate_window_padding"]),
        "decoder": config["decoder"],
        "img_size": str(model.img_size),
        "mask_threshold": repr(float(model.sam.mask_threshold)),
        "weights_sha256": weights_hash(model),
        "config": json.dumps(config, sort_keys=True),
    }


def example_inputs(model: FoveatedSam) -> tuple[torch.Tensor, ...]:
    """Two single-point prompts on a 4:3 image: shapes and dtypes the graph is traced with."""
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frame, size = padded_frame(image, model.img_size)
    prompts = [Prompt(points=[(100.0, 200.0)]), Prompt(points=[(300.0, 100.0)])]
    sparse = sparse_prompts(prompts, image.shape[:2], model.img_size)
    device = model.sam.device
    return (
        torch.from_numpy(frame).to(device),
        torch.tensor(size, device=device),
        torch.from_numpy(sparse.fovea).to(device),
        torch.from_numpy(sparse.coords).to(device),
        torch.from_numpy(sparse.labels).to(device),
    )


QUANTIZATIONS = ("none", "int8")


def export_graph(predictor: FoveatedPredictor, out: str | Path, opset: int = OPSET, quantize: str = "none") -> Path:
    """Write `predictor`'s foveated model (on the CPU) to `out` as one ONNX graph with its metadata.

    `quantize="int8"` stores the matrix products' weights as int8 (ONNX Runtime's dynamic quantisation): about
    twice as fast on a CPU, at a measured cost in agreement with the fp32 graph (README); never the default.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: the graph needs ONNX opset 17 or newer")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    model = predictor.model.eval()
    graph = FoveatedGraph(model).eval()
    batch = torch.export.Dim("prompts", min=1, max=MAX_PROMPTS)
    points = torch.export.Dim("points", min=1, max=MAX_POINTS)
    dynamic = {"image": None, "image_size": None, "fovea": {0: batch}, "coords": {0: batch, 1: points}}
    dynamic["labels"] = {0: batch, 1: points}
    out = Path(out)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and decompositions
        program = torch.onnx.export(
            graph,
            example_inputs(model),
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes=dynamic,
            verbose=False,
        )
    program.model.metadata_props.update({**graph_metadata(predictor), "quantization": quantize})
    if quantize == "none":
        program.save(out)  # weights in a side file only past protobuf's 2 GB (vit_h)
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as work:
        program.save(Path(work) / "fp32.onnx")
        logging.disable(logging.WARNING)  # the quantiser's advice to pre-process goes to the root logger
        try:
            fp32 = Path(work) / "fp32.onnx"
            quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        finally:
            logging.disable(logging.NOTSET)
    return out
