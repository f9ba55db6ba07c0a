"""`stt average-reference`: average reference weights files into one (a model soup)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "average-reference",
        help="average reference SAM weights files of runs continued from the same weights",
        description=(
            "Write the uniform average of two or more reference SAM weights files (`stt train-reference` outputs "
            "of the same shape). Runs continued from the same weights with different seeds stay close enough "
            "that their average is a better model than each (stt_ros/weights/MODEL_CARD.md); runs trained from "
            "scratch separately do not average. --eval-scenes N measures every input and the average on the "
            "first N held-out scenes (16: the quality-guard set) so you can see whether it helped."
        ),
    )
    parser.add_argument("weights", nargs="+", type=Path, help="weights files to average (at least two)")
    parser.add_argument("--out", type=Path, required=True, help="fp16 weights file to write")
    parser.add_argument(
        "--eval-scenes", type=int, default=0, help="held-out scenes to measure on (default: %(default)s, none)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from stt_ros.evaluation.heldout import evaluate_sam, heldout_scenes
    from stt_ros.model.reference import average_reference_weights, load_reference_sam

    torch.set_num_threads(args.threads)
    average_reference_weights(args.weights, args.out)
    print(f"wrote {args.out}: the average of {len(args.weights)} weights files")
    if args.eval_scenes:
        scenes = heldout_scenes(args.eval_scenes)
        for path in [*args.weights, args.out]:
            result = evaluate_sam(load_reference_sam("cpu", path), scenes)
            print(f"{path}: held-out mIoU {result.miou:.3f} (oracle-of-3 {result.oracle_miou:.3f})")
    return 0
