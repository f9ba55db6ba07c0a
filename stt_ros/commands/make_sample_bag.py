"""`stt make-sample-bag`: a small synthetic bag to try `stt eval-bag` and the replay launch file on."""

from __future__ import annotations

import argparse

from stt_ros.bag.sample import GT_TOPIC, IMAGE_TOPICS, PROMPT_TOPIC, write_sample_bag


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-sample-bag",
        help="write a small synthetic ROS 2 bag (images, ground truth, prompts)",
        description=(
            "Write a ROS 2 bag of moving textured shapes: the camera in several encodings "
            f"({', '.join(f'{t} [{e}]' for t, e in IMAGE_TOPICS.items())}), ground-truth instances on "
            f"{GT_TOPIC} (mono16) and one stt_ros/PointPrompt per object on {PROMPT_TOPIC}."
        ),
        epilog="Then: stt eval-bag OUT --image-topic /camera/image_raw --prompt-topic /stt/prompts "
        "--gt-topic /camera/instances",
    )
    parser.add_argument("out", help="bag directory to create (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="default: %(default)s")
    parser.add_argument("--frames", type=int, default=20, help="frames at 10 Hz (default: %(default)s)")
    parser.add_argument("--width", type=int, default=320, help="image width in pixels (default: %(default)s)")
    parser.add_argument("--height", type=int, default=240, help="image height in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed; same seed, same bag (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = write_sample_bag(args.out, args.storage, args.frames, args.width, args.height, args.seed)
    print(f"wrote {path} ({args.storage}, {args.frames} frames of {args.width}x{args.height})")
    return 0
