"""The foveated model's options, shared by every command that builds one, with one help text each."""

from __future__ import annotations

import argparse

from stt_ros.foveation import TOKEN_MODES
from stt_ros.model.encoder import ATTENTION_MODES


def add_model_options(
    parser: argparse.ArgumentParser, pattern: str, attention: str, tokens: str, proportional: bool
) -> None:
    """--pattern, --attention, --tokens and --[no-]proportional with the given defaults."""
    parser.add_argument(
        "--pattern",
        default=pattern,
        help=f"foveation pattern: stt (172 tokens), uniform:G, or STRIDES/GRIDS such as 1,2,4,6,8/4,4,6,8,10 "
        f"(default: {pattern})",
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default=attention,
        help=f"SAM's windowed blocks over the tokens: global (every token sees all) or window (SAM's windows) "
        f"(default: {attention}, which leads on the README's variants table)",
    )
    parser.add_argument(
        "--tokens",
        choices=TOKEN_MODES,
        default=tokens,
        help=f"coarse tokens: pooled (mean of the patch embeddings they cover) or pixel (box-averaged pixels, "
        f"as STT) (default: {tokens})",
    )
    parser.add_argument(
        "--proportional",
        action=argparse.BooleanOptionalAction,
        default=proportional,
        help="proportional attention: a stride-s token's key weighs like the s² patches it replaces "
        f"(default: {'on' if proportional else 'off'})",
    )
