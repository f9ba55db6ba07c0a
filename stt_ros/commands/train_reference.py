"""`stt train-reference`: train the small reference SAM on synthetic scenes (DESIGN §2.7)."""

from __future__ import annotations

import argparse
import time

from stt_ros.commands.model_options import add_device_option
from stt_ros.errors import UserError
from stt_ros.model.reference import (
    REFERENCE_CONFIG,
    REFERENCE_DEPTH,
    REFERENCE_WEIGHTS,
    REFERENCE_WIDTH,
    read_reference_weights,
    reference_config,
)
from stt_ros.model.sam_config import SamConfig
from stt_ros.train.reference import PRECISIONS, TrainConfig


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'640x480,1280x720' -> ((640, 480), (1280, 720)); argparse reports the ArgumentTypeError's message."""
    sizes = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise argparse.ArgumentTypeError(f"{item!r} is not WIDTHxHEIGHT (e.g. 1280x720)")
        sizes.append((int(width), int(height)))
    return tuple(sizes)


def format_sizes(sizes: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{width}x{height}" for width, height in sizes)


# TrainConfig fields set from the command line; their defaults are the shipped recipe.
OPTIONS = (
    "seed",
    "steps",
    "lr",
    "warmup",
    "focal",
    "crop",
    "crops",
    "crops_per_scene",
    "prompt_pretext",
    "instance_contrast",
    "small_object_weighting",
    "iou_weight",
    "every_output_share",
    "interior_bias",
    "sizes",
    "ema",
    "precision",
    "checkpoint_every",
    "eval_every",
    "init",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-reference",
        help="train the small synthetic-scene reference SAM",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            "Train the reference SAM (SAM's architecture; 1.4 M parameters at the default width, 96) from scratch on "
            "synthetic scenes with SAM's losses and point / multi-point / box prompts. The defaults are the first "
            "stage of the shipped weights (stt_ros/weights/MODEL_CARD.md has every stage's command; later stages "
            "widen it to 192): about 45 minutes on 2 CPU cores. "
            "Checkpoints as it goes; --resume continues a run bit-for-bit. --device cuda (or --precision bf16) trains "
            "in bf16 mixed precision. --width and --depth train a bigger model of the same kind (128: 2.3 M "
            "parameters, 192: 4.8 M); every command that takes --variant reference --checkpoint FILE loads it, "
            "whatever its shape."
        ),
    )
    parser.add_argument(
        "--out",
        default=REFERENCE_WEIGHTS.name,
        help=f"fp16 weights file to write; only naming it ({REFERENCE_WEIGHTS}) replaces the shipped model",
    )
    parser.add_argument(
        "--checkpoint", help="training checkpoint (default: OUT with suffix .ckpt; with --runs, beside each run's file)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    parser.add_argument(
        "--init",
        help="reference weights to continue training from, with a fresh schedule (skips the initialisation and "
        "the pretext); give a new --seed so the run sees new scenes. The output records the run it continued",
    )
    parser.add_argument(
        "--width",
        type=int,
        help=f"encoder and decoder width, a multiple of 16 (default: the --init file's, else {REFERENCE_WIDTH}). "
        "With --init, a multiple of the file's width widens the trained model: every channel copied, so the "
        "run starts from its masks instead of from scratch (192 from the shipped 96)",
    )
    parser.add_argument(
        "--depth", type=int, help=f"encoder blocks (default: the --init file's, else {REFERENCE_DEPTH})"
    )
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--seed", type=int, help="run seed; scenes, crops and prompts derive from it")
    parser.add_argument("--lr", type=float, help="peak AdamW learning rate (linear warmup, cosine decay)")
    parser.add_argument("--warmup", type=int, help="linear warmup steps")
    parser.add_argument(
        "--focal",
        type=float,
        help="share of SAM's 20x focal term in the mask loss, the rest cross-entropy (1: SAM's loss exactly)",
    )
    parser.add_argument(
        "--crop",
        type=int,
        help="crop side in 16-px tokens, a multiple of the attention window (8); 0: whole 1024 frames. A crop "
        "keeps its place in the frame (positions, windows, prompt coordinates), so it trains the same model "
        "several times cheaper",
    )
    parser.add_argument("--crops", type=int, help="crops per step, encoded as one batch")
    parser.add_argument("--crops-per-scene", type=int, help="crops cut from each generated scene")
    parser.add_argument(
        "--prompt-pretext", type=int, help="steps teaching the decoder to mask around its point before any scene"
    )
    parser.add_argument(
        "--instance-contrast", type=float, help="weight of the encoder's dense instance-embedding term (0: off)"
    )
    parser.add_argument(
        "--small-object-weighting",
        type=float,
        help="x in the loss weight (4096 / px) ** x of prompts on objects under 4,096 px (4 x 4 tokens) of the 1024 "
        "frame: 0.5 counts a one-token object 4 times. Oversamples small objects at no extra cost (0: off)",
    )
    parser.add_argument(
        "--iou-weight",
        type=float,
        help="weight of the IoU-prediction MSE beside the mask loss (SAM: 1). The predicted IoU picks the mask "
        "a single point returns; a heavier term trains that pick harder",
    )
    parser.add_argument(
        "--every-output-share",
        type=float,
        help="share of a single point's mask loss averaged over all three outputs instead of taken at the best "
        "one (SAM: 0). Pulls the outputs toward one mask, so the predicted IoU has less to choose between; "
        "for data with one right mask per point, as the synthetic scenes have (0 to 1)",
    )
    parser.add_argument(
        "--interior-bias",
        type=float,
        help="x in the weight (distance to the object's boundary) ** x with which single-point prompts are drawn "
        "(SAM: 0, uniform over the object). People and robots click well inside an object; 1 draws points in "
        "proportion to their depth, so fewer land on the edge",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="camera sizes of the training scenes, WIDTHxHEIGHT separated by commas, used in turn. SAM resizes "
        "every frame to 1024 on its long side, so a 1280x720 frame shrinks its objects: more large frames "
        "train the small objects of HD cameras",
    )
    parser.add_argument(
        "--ema",
        type=float,
        help="decay of an exponential moving average of the weights (e.g. 0.998: about the last 500 steps); the "
        "average is what is evaluated and written to OUT, the raw weights stay in the checkpoint (0: off)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="forward pass in bf16 autocast (weights, optimizer and evaluation stay fp32) or fp32; auto: bf16 on CUDA, "
        "fp32 on CPU. On a CPU with AVX-512 BF16 (AMD Zen 4, Intel Sapphire Rapids) bf16 makes a whole-frame step "
        "about twice as fast",
    )
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--eval-every", type=int, help="steps between held-out evaluations (0: off)")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="with --init: train this many runs at once (seeds SEED, SEED+1, ...), each writing OUT_seedS.pt, and "
        "write their average to OUT; the average of runs continued from one file beats each of them. On 2 CPU "
        "cores: --runs 2 --threads 1",
    )
    add_device_option(parser, "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (per run with --runs)")
    recipe = TrainConfig()
    defaults = {name: getattr(recipe, name) for name in OPTIONS}
    defaults["sizes"] = format_sizes(recipe.sizes)  # argparse runs a str default through parse_sizes
    parser.set_defaults(handler=run, **defaults)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{name: getattr(args, name) for name in OPTIONS}, sam=model_shape(args).to_dict())


def model_shape(args: argparse.Namespace) -> SamConfig:
    """--width/--depth over the --init file's shape over the from-scratch one: continuing a run needs no flags."""
    base = read_reference_weights(args.init)[0] if args.init else REFERENCE_CONFIG
    if args.width is None and args.depth is None:
        return base
    return reference_config(
        args.width if args.width is not None else base.encoder_embed_dim,
        args.depth if args.depth is not None else base.encoder_depth,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from stt_ros.predictor import resolve_device
    from stt_ros.train.reference import train_reference

    torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    config = config_from_args(args)
    if args.runs != 1:
        return run_side_by_side(args, config)
    began = time.monotonic()
    history = train_reference(config, args.out, args.checkpoint, resume=args.resume, device=args.device)
    last = history[-1] if history else {}
    print(f"wrote {args.out} after {last.get('step', 0)} steps in {time.monotonic() - began:.0f} s")
    if "heldout_miou" in last:
        print(f"held-out single-point mIoU {last['heldout_miou']:.3f}")
    return 0


def run_side_by_side(args: argparse.Namespace, config: TrainConfig) -> int:
    from stt_ros.evaluation.heldout import evaluate_sam, heldout_scenes
    from stt_ros.model.reference import load_reference_sam
    from stt_ros.train.reference import train_side_by_side

    if args.checkpoint:
        raise UserError("--checkpoint names one run's checkpoint; with --runs each run checkpoints beside its file")
    began = time.monotonic()
    histories = train_side_by_side(config, args.out, args.runs, args.resume, args.device, args.threads)
    print(f"wrote {args.out}, the average of {args.runs} runs, in {time.monotonic() - began:.0f} s")
    for path, history in histories.items():
        if history and "heldout_miou" in history[-1]:
            print(f"{path}: held-out single-point mIoU {history[-1]['heldout_miou']:.3f}")
    if config.eval_every:
        result = evaluate_sam(load_reference_sam(args.device, args.out), heldout_scenes(config.eval_scenes))
        print(f"{args.out}: held-out single-point mIoU {result.miou:.3f} (oracle-of-3 {result.oracle_miou:.3f})")
    return 0
