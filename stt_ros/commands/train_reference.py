"""`stt train-reference`: train the small reference SAM on synthetic scenes (DESIGN §2.7)."""

from __future__ import annotations

import argparse
import time

from stt_ros.model.reference import REFERENCE_WEIGHTS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-reference",
        help="train the small synthetic-scene reference SAM",
        description=(
            "Train the reference SAM (SAM's architecture, a few million parameters) on synthetic scenes "
            "with SAM's losses and point / multi-point / box prompts. Checkpoints as it goes; --resume "
            "continues a run exactly. Uses the GPU with mixed precision when --device cuda."
        ),
    )
    parser.add_argument("--out", default=str(REFERENCE_WEIGHTS), help="fp16 weights file (default: %(default)s)")
    parser.add_argument("--checkpoint", help="training checkpoint (default: OUT with suffix .ckpt)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    parser.add_argument("--steps", type=int, default=1500, help="training steps, one scene each")
    parser.add_argument("--seed", type=int, default=0, help="run seed; scenes and prompts derive from it")
    parser.add_argument("--lr", type=float, default=8e-4, help="peak AdamW learning rate")
    parser.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    parser.add_argument(
        "--focal-warmup", type=int, default=300, help="steps over which the focal weight ramps from 0 to 20"
    )
    parser.add_argument("--pool-steps", type=int, default=0, help="first steps that cycle through a scene pool")
    parser.add_argument("--pool-size", type=int, default=4, help="scenes in that pool")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    parser.add_argument("--eval-every", type=int, default=250, help="steps between held-out evaluations (0: off)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: shared cores)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from stt_ros.train.reference import TrainConfig, train_reference

    torch.set_num_threads(args.threads)
    config = TrainConfig(
        steps=args.steps,
        seed=args.seed,
        lr=args.lr,
        warmup=args.warmup,
        focal_warmup=args.focal_warmup,
        pool_steps=args.pool_steps,
        pool_size=args.pool_size,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
    )
    began = time.monotonic()
    history = train_reference(config, args.out, args.checkpoint, resume=args.resume, device=args.device)
    last = history[-1] if history else {}
    print(f"wrote {args.out} after {last.get('step', 0)} steps in {time.monotonic() - began:.0f} s")
    if "heldout_miou" in last:
        print(f"held-out single-point mIoU {last['heldout_miou']:.3f}")
    return 0
