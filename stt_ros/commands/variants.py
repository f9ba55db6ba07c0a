"""`stt variants`: the table that chooses the default foveated configuration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stt_ros.commands.model_options import CHECKPOINT_HELP, add_device_option
from stt_ros.evaluation.heldout import heldout_scenes
from stt_ros.evaluation.plotting import pyplot
from stt_ros.evaluation.variants import VariantRow, compare_variants, markdown_table, size_table
from stt_ros.model.checkpoints import VARIANTS, load_sam
from stt_ros.predictor import resolve_device


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "variants",
        help="compare foveated configurations (attention, token mode, proportional attention) with stock SAM",
        description=(
            "Evaluate stock SAM and every foveated configuration zero-shot on held-out synthetic scenes with "
            "SAM's single-point protocol: mIoU (chosen mask and oracle-of-3), agreement with stock SAM's mask, "
            "B=1 latency, and mIoU by object size. Writes variants.md, variants.json and variants.png."
        ),
    )
    parser.add_argument("--variant", default="reference", choices=VARIANTS, help="SAM variant (default: %(default)s)")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        help="a trained adapter file (stt train): adds a row for the configuration it was trained for, with its "
        "weights, beside that configuration zero-shot; repeat it for several",
    )
    parser.add_argument("--scenes", type=int, default=24, help="held-out scenes (default: %(default)s)")
    add_device_option(parser)
    parser.add_argument("--out", type=Path, default=Path("variants_out"), help="output folder")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sam = load_sam(args.variant, args.checkpoint, resolve_device(args.device))
    rows = compare_variants(sam, heldout_scenes(args.scenes), adapters=args.adapter, sam_variant=args.variant)
    table = markdown_table(rows) + "\n\nmIoU by object size (objects per bin):\n\n" + size_table(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variants.md").write_text(table + "\n")
    (args.out / "variants.json").write_text(json.dumps([r.to_dict() for r in rows], indent=2))
    plot(rows, args.out / "variants.png", f"{args.variant}: single-point protocol, {rows[0].instances} instances")
    print(f"Wrote {args.out}/variants.md, variants.json, variants.png")
    return 0


def plot(rows: list[VariantRow], path: Path, title: str) -> None:
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(8, 4))
    names = [r.name for r in rows]
    axis.barh(names, [r.miou for r in rows], label="mIoU vs ground truth")
    axis.barh(names, [r.agreement for r in rows], height=0.35, label="agreement with stock SAM")
    axis.set_xlim(0, 1)
    axis.invert_yaxis()
    axis.legend(loc="lower right")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
