"""`stt export`: the foveated model as one ONNX graph, for ONNX Runtime (CPU, CUDA, TensorRT) without torch."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stt_ros.commands.model_options import ADAPTER_HELP, CHECKPOINT_HELP, add_model_options, chosen_model_options
from stt_ros.model.checkpoints import VARIANTS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export the foveated model as one ONNX graph (opset 18) for ONNX Runtime and TensorRT",
        description=(
            "Write the foveated model, from the frame-sized image and prompts through tokenization, the frozen "
            "encoder and SAM's decoder to SAM's low-res logits and IoU predictions, as one ONNX graph: the "
            "token count is fixed by the pattern, only the number of prompts varies. The graph records its "
            "variant, pattern, options and a hash of its weights; `--backend onnxruntime` (commands) and "
            "`backend: onnxruntime` (the node) run it without torch or segment-anything."
        ),
        epilog=(
            "examples:\n"
            "  stt export --variant reference --out reference.onnx\n"
            "  stt export --variant vit_b --checkpoint sam_vit_b_01ec64.pth --adapter vit_b_adapter.pt "
            "--out vit_b.onnx\n"
            "then: stt bench --backend torch,onnxruntime --model vit_b.onnx ..., or the node's `model` parameter"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", choices=VARIANTS, default="reference", help="SAM variant (default: %(default)s)")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--adapter", help=ADAPTER_HELP)
    add_model_options(parser, adapter_decides=True)
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or newer (default: %(default)s)")
    parser.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: the matrix products' weights in int8 (ONNX Runtime dynamic quantisation), about twice as fast "
        "on a CPU, at the agreement cost README measures (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stt_ros.deploy.export import export_graph
    from stt_ros.predictor import FoveatedPredictor

    if args.out.suffix != ".onnx":
        raise ValueError(f"--out {args.out} should end in .onnx")
    predictor = FoveatedPredictor.build(
        args.variant, args.checkpoint, args.adapter, device="cpu", **chosen_model_options(args)
    )
    began = time.monotonic()
    path = export_graph(predictor, args.out, args.opset, args.quantize)
    size_mb = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
    print(
        f"wrote {path} ({size_mb:.1f} MB, {predictor.pattern.num_tokens} tokens, {predictor.settings}) in "
        f"{time.monotonic() - began:.0f} s"
    )
    return 0
