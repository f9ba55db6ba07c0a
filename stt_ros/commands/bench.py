"""`stt bench`: end-to-end latency, throughput, memory and crossover, foveated vs stock SAM."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stt_ros.commands.demo import BUILTIN_SEED, load_image
from stt_ros.commands.model_options import (
    BACKENDS,
    add_device_option,
    add_graph_options,
    add_model_options,
    onnx_predictor,
)
from stt_ros.evaluation.bench import run_bench
from stt_ros.evaluation.scenes import generate_scene
from stt_ros.model.checkpoints import VARIANTS
from stt_ros.predictor import FoveatedPredictor, ReferencePredictor


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the foveated model against stock SAM, end to end",
        description=(
            "Time both models in one process on the same device, threads, image and prompts, from the uint8 "
            "image to original-size masks: B=1 latency (median, p90), batched throughput, peak memory, the "
            "speed-up, and the prompts-per-image count above which encoding the whole image once wins."
        ),
        epilog=(
            "examples:\n"
            "  stt bench --variant vit_b --checkpoint random --device cpu --prompts 8\n"
            "  stt bench --variant vit_h --checkpoint sam_vit_h_4b8939.pth --device cuda --dtype bf16 --json\n"
            "  stt bench --node                      # what the ROS node adds per frame, the model left out\n"
            "  ros2 run stt_ros stt bench --node     # the same through cv_bridge and rclpy (colcon workspace)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--variant", default="vit_b", choices=VARIANTS, help="SAM variant (default: %(default)s)")
    parser.add_argument(
        "--checkpoint",
        default="random",
        help="official SAM .pth, or 'random' (default; speed does not depend on the weights)",
    )
    add_device_option(parser)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast dtype")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per image for throughput (default: 8)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of the foveated model at B=1")
    parser.add_argument("--stock-repeats", type=int, default=5, help="timed runs of stock SAM at B=1")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--image", type=Path, help="image file (default: the built-in 640x480 scene)")
    add_model_options(parser)
    parser.add_argument(
        "--backend",
        type=parse_backends,
        default=[("torch", None)],
        help="how to run the foveated model: torch (with --dtype), torch:bf16 (any dtype), onnxruntime (an `stt "
        "export` graph: --model, else one exported from these settings first), onnxruntime:int8 (exported with "
        "--quantize int8); one backend is timed against stock SAM, several side by side (default: torch)",
    )
    add_graph_options(parser)
    parser.add_argument(
        "--node",
        action="store_true",
        help="time the ROS node's own work per frame instead of the model: header check and binding, decoding, "
        "prompts, result messages and the overlay (--prompts prompts on a --size image; --repeats frames)",
    )
    parser.add_argument(
        "--size", type=parse_size, default=(1280, 720), help="WIDTHxHEIGHT for --node (default: 1280x720)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT in pixels; raises ArgumentTypeError naming the problem."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 1280x720") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"size {text!r}: both sides must be at least 16 px")
    return width, height


def parse_backends(text: str) -> list[tuple[str, str | None]]:
    """"torch,torch:bf16,onnxruntime,onnxruntime:int8" → [(backend, dtype or quantisation or None)]."""
    options = {"torch": ("fp32", "bf16", "fp16"), "onnxruntime": ("int8",)}
    backends = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, option = item.partition(":")
        if name not in BACKENDS or (option and option not in options[name]):
            raise argparse.ArgumentTypeError(
                f"backend {item!r}: use torch, torch:fp32, torch:bf16, torch:fp16, onnxruntime or onnxruntime:int8"
            )
        backends.append((name, option or None))
    if not backends:
        raise argparse.ArgumentTypeError("--backend needs at least one backend")
    return backends


def run(args: argparse.Namespace) -> int:
    if args.prompts < 1:
        raise ValueError("--prompts must be at least 1")
    if args.node:
        return run_node(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = load_image(args.image) if args.image else generate_scene(BUILTIN_SEED, 640, 480).image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        foveated = FoveatedPredictor.build(
            args.variant,
            args.checkpoint,
            device=args.device,
            dtype=args.dtype,
            pattern=args.pattern,
            attention=args.attention,
            tokens=args.tokens,
            proportional=args.proportional,
        )
    makers = backend_makers(args, foveated)
    if len(makers) > 1:
        return run_side_by_side(args, makers, image)
    stock = ReferencePredictor(foveated.sam, dtype=args.dtype, variant=args.variant)
    result = run_bench(
        next(iter(makers.values()))(),
        stock,
        image,
        args.prompts,
        repeats=args.repeats,
        stock_repeats=args.stock_repeats,
        dtype=args.dtype,
    )
    if args.json:
        print(json.dumps({**result.to_dict(), "checkpoint": args.checkpoint}, indent=2))
        return 0
    weights = "random weights" if args.checkpoint == "random" else args.checkpoint
    print(
        f"{args.variant} ({weights}), {result.device}, {args.dtype}, {result.threads} threads, "
        f"image {result.image_size[1]}x{result.image_size[0]}, pattern {foveated.pattern.num_tokens} tokens "
        f"({foveated.pattern.num_pixels} px moved vs {foveated.sam.image_encoder.img_size**2} for stock SAM)"
    )
    print(result.table())
    return 0


def run_node(args: argparse.Namespace) -> int:
    from stt_ros.evaluation.node_bench import measure_node_overhead

    result = measure_node_overhead(*args.size, prompts=args.prompts, repeats=args.repeats)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0


def backend_makers(args: argparse.Namespace, foveated: FoveatedPredictor) -> dict[str, Callable[[], Any]]:
    """How to build each asked-for backend; the onnxruntime graph is exported from `foveated` unless given."""
    makers: dict[str, Callable[[], Any]] = {}
    for name, option in args.backend:
        if name == "torch":
            dtype = option or args.dtype
            makers[f"torch {dtype}"] = lambda dtype=dtype: FoveatedPredictor(
                foveated.sam, args.pattern, args.attention, args.tokens, args.proportional, dtype=dtype,
                variant=args.variant,
            )  # fmt: skip
        else:
            quantize = option or "none"
            graph = args.model if args.model and quantize == "none" else _export(foveated, quantize)
            label = "onnxruntime" + (" int8" if quantize == "int8" else "")
            makers[label] = lambda graph=graph: onnx_predictor(args, graph, args.threads)
    return makers


def _export(foveated: FoveatedPredictor, quantize: str) -> Path:
    from stt_ros.deploy.export import export_graph

    path = Path(tempfile.mkdtemp(prefix="stt_bench_")) / f"model_{quantize}.onnx"
    began = time.monotonic()
    export_graph(foveated, path, quantize=quantize)
    print(f"exported {path} in {time.monotonic() - began:.0f} s (not part of the first call below)")
    return path


def run_side_by_side(args: argparse.Namespace, makers: dict[str, Callable[[], Any]], image: np.ndarray) -> int:
    from stt_ros.evaluation.bench import BackendComparison, compare_backends

    timings = compare_backends(makers, image, args.prompts, args.repeats)
    result = BackendComparison(args.variant, torch.get_num_threads(), image.shape[:2], timings)
    if args.json:
        print(json.dumps({**result.to_dict(), "checkpoint": args.checkpoint}, indent=2))
        return 0
    print(f"{args.variant}, {torch.get_num_threads()} threads, image {image.shape[1]}x{image.shape[0]}")
    print(result.table())
    return 0
