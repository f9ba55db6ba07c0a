"""The foveated model's options, shared by every command that builds one, with one help text each."""

from __future__ import annotations

import argparse

from stt_ros.foveation import TOKEN_MODES
from stt_ros.model.encoder import ATTENTION_MODES
from stt_ros.train.distill import default_model_options

CHECKPOINT_HELP = (
    "official SAM .pth for vit_b/l/h; for the reference variant, a `stt train-reference` weights file "
    "(default: the shipped one); 'random' for random weights (timing and smoke tests only: masks are noise)"
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--pattern, --attention, --tokens and --[no-]proportional, defaulting to the library's chosen model."""
    defaults = default_model_options()
    parser.add_argument(
        "--pattern",
        default=defaults["pattern"],
        help="foveation pattern: stt (172 tokens), uniform:G, or STRIDES/GRIDS such as 1,2,4,6,8/4,4,6,8,10 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default=defaults["attention"],
        help="SAM's windowed blocks over the tokens: global (every token sees all) or window (SAM's windows) "
        "(default: %(default)s, chosen by the README's variants table)",
    )
    parser.add_argument(
        "--tokens",
        choices=TOKEN_MODES,
        default=defaults["tokens"],
        help="coarse tokens: pooled (mean of the patch embeddings they cover) or pixel (box-averaged pixels, "
        "as STT) (default: %(default)s)",
    )
    parser.add_argument(
        "--proportional",
        action=argparse.BooleanOptionalAction,
        default=defaults["proportional"],
        help="proportional attention: a stride-s token's key weighs like the s² patches it replaces "
        f"(default: {'on' if defaults['proportional'] else 'off'})",
    )
