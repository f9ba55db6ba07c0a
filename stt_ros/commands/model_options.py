"""The foveated model's options, shared by every command that builds one, with one help text each."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stt_ros.foveation import TOKEN_MODES
from stt_ros.model.encoder import ATTENTION_MODES
from stt_ros.predictor import FOVEATION_SETTINGS
from stt_ros.train.distill import default_model_options

CHECKPOINT_HELP = (
    "official SAM .pth for vit_b/l/h; for the reference variant, a `stt train-reference` weights file "
    "(default: the shipped one); 'random' for random weights (timing and smoke tests only: masks are noise)"
)
ADAPTER_HELP = (
    "trained adapter file (stt train); its settings become the model's. Unset: the shipped adapter with the shipped "
    "reference weights, else none; 'none': untrained adapters (the zero-shot model)"
)


def add_device_option(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """--device, the same words everywhere: auto picks the GPU when torch sees one."""
    parser.add_argument(
        "--device",
        default=default,
        help="torch device: auto (cuda when torch sees a GPU, else cpu), cpu, cuda or cuda:N (default: %(default)s)",
    )


def add_model_options(parser: argparse.ArgumentParser, adapter_decides: bool = False) -> None:
    """--pattern, --attention, --tokens and --[no-]proportional, defaulting to the library's chosen model.

    With `adapter_decides` they default to unset, so an --adapter file's own settings apply (and a given option
    must agree with them); without an adapter, unset means the library's default (`chosen_model_options`).
    """
    defaults = default_model_options()

    def default(name: str) -> object:
        return None if adapter_decides else defaults[name]

    def shown(value: object) -> str:
        text = ("on" if value else "off") if isinstance(value, bool) else value
        return f"(default: the adapter's, else {text})" if adapter_decides else f"(default: {text})"

    parser.add_argument(
        "--pattern",
        default=default("pattern"),
        help="foveation pattern: stt (172 tokens), uniform:G, or STRIDES/GRIDS such as 1,2,4,6,8/4,4,6,8,10 "
        + shown(defaults["pattern"]),
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default=default("attention"),
        help="SAM's windowed blocks over the tokens: global (every token sees all) or window (SAM's windows) "
        + shown(defaults["attention"])
        + ", chosen by the README's variants table",
    )
    parser.add_argument(
        "--tokens",
        choices=TOKEN_MODES,
        default=default("tokens"),
        help="coarse tokens: pooled (mean of the patch embeddings they cover) or pixel (box-averaged pixels, "
        "as STT) " + shown(defaults["tokens"]),
    )
    parser.add_argument(
        "--proportional",
        action=argparse.BooleanOptionalAction,
        default=default("proportional"),
        help="proportional attention: a stride-s token's key weighs like the s² patches it replaces "
        + shown(defaults["proportional"]),
    )


def chosen_model_options(args: argparse.Namespace) -> dict:
    """The model options given on the command line (unset ones left to the adapter or the library)."""
    return {name: getattr(args, name) for name in FOVEATION_SETTINGS if getattr(args, name, None) is not None}


BACKENDS = ("torch", "onnxruntime")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--backend, --model, --providers and --trt-cache: run the foveated model with torch or an exported graph."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch (the model itself) or onnxruntime (an `stt export` graph, --model; no torch needed to run it) "
        "(default: %(default)s)",
    )
    add_graph_options(parser)


def add_graph_options(parser: argparse.ArgumentParser) -> None:
    """--model, --providers and --trt-cache: the exported graph the onnxruntime backend runs, and how."""
    parser.add_argument("--model", type=Path, help="the .onnx graph for the onnxruntime backend (from `stt export`)")
    parser.add_argument(
        "--providers",
        default="tensorrt,cuda,cpu",
        help="ONNX Runtime execution providers, most preferred first; missing ones are skipped with a note "
        "(default: %(default)s)",
    )
    parser.add_argument("--trt-cache", type=Path, help="TensorRT engine cache directory (default: a temp folder)")


def onnx_predictor(args: argparse.Namespace, path: Path | None = None, threads: int | None = None) -> Any:
    """The `OnnxPredictor` the backend options ask for, refusing a graph made for other settings."""
    from stt_ros.deploy.runtime import OnnxPredictor

    path = path or args.model
    if path is None:
        raise ValueError("--backend onnxruntime needs --model GRAPH.onnx (make one with `stt export`)")
    expect = {"variant": args.variant, **chosen_model_options(args)}
    predictor = OnnxPredictor(path, parse_providers(args.providers), args.trt_cache, expect, threads)
    for note in predictor.notes:
        print(f"onnxruntime: {note}")
    return predictor


def parse_providers(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
