"""The `stt` command: one subcommand per module in `stt_ros.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from stt_ros.errors import UserError

# Each module defines `register(subparsers)`, adding one subcommand whose handler is set with
# `parser.set_defaults(handler=...)`; the handler takes the parsed args and returns an exit code.
COMMAND_MODULES = (
    "stt_ros.commands.demo",
    "stt_ros.commands.bench",
    "stt_ros.commands.eval_bag",
    "stt_ros.commands.make_sample_bag",
    "stt_ros.commands.train_reference",
    "stt_ros.commands.average_reference",
    "stt_ros.commands.variants",
    "stt_ros.commands.train",
    "stt_ros.commands.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stt",
        description=(
            "Foveated Segment Anything: a point prompt in, a mask and its IoU score out, "
            "from a frozen SAM encoder that sees 172 tokens instead of 4096."
        ),
        epilog="Run `stt COMMAND --help` for each command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as error:
        print(f"stt {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
