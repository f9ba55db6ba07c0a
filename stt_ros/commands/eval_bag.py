"""`stt eval-bag`: evaluate the foveated predictor on a recorded ROS 2 bag, without a ROS install."""

from __future__ import annotations

import argparse
from pathlib import Path

from stt_ros.bag.evaluate import EvalOptions, check_inputs, run_evaluation
from stt_ros.bag.reader import Bag
from stt_ros.commands.model_options import (
    ADAPTER_HELP,
    CHECKPOINT_HELP,
    add_backend_options,
    add_device_option,
    add_model_options,
    chosen_model_options,
    onnx_predictor,
)
from stt_ros.model.checkpoints import VARIANTS
from stt_ros.pipeline.binding import FrameBuffer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-bag",
        help="run the predictor over a ROS 2 bag: results bag, metrics, report and plots",
        description=(
            "Read a ROS 2 bag (sqlite3 or mcap), bind prompts to frames by stamp exactly as the node does, "
            "segment every prompted frame, and write OUT/results (an mcap bag with the node's "
            "/stt/segmentations and /stt/mask), OUT/metrics.json, OUT/report.md, OUT/prompts.jsonl "
            "and PNG plots."
        ),
        epilog="Try it: stt make-sample-bag sample && stt eval-bag sample --image-topic /camera/image_raw "
        "--prompt-topic /stt/prompts --gt-topic /camera/instances --compare-sam --depth-topic "
        "/camera/aligned_depth_to_color/image_raw --camera-info-topic /camera/camera_info",
    )
    parser.add_argument("bag", type=Path, help="bag directory, its metadata.yaml, or a .db3/.mcap file")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument(
        "--prompt-topic",
        help="stt_ros/PointPrompt, geometry_msgs/PointStamped (pixels) or vision_msgs/Detection2DArray topic",
    )
    parser.add_argument(
        "--gt-topic",
        help="mono8/mono16 instance images (0 = background) stamped like the images: IoU against ground "
        "truth, and one prompt per instance when no --prompt-topic is given",
    )
    parser.add_argument(
        "--depth-topic",
        help="depth aligned to the images (16UC1 mm or 32FC1 m, or compressedDepth): every mask is lifted to 3-D "
        "as the node does; the results bag gets /stt/objects and /stt/points, the report each object's depth "
        "coverage. Needs --camera-info-topic",
    )
    parser.add_argument("--camera-info-topic", help="the images' sensor_msgs/CameraInfo (its K lifts the depth)")
    parser.add_argument(
        "--depth-tolerance-ms", type=float, default=50.0, help="depth-to-frame stamp tolerance (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=Path("eval_out"), help="output directory (default: %(default)s)")
    parser.add_argument("--variant", choices=VARIANTS, default="reference", help="default: %(default)s")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--adapter", help=ADAPTER_HELP)
    add_model_options(parser, adapter_decides=True)
    add_device_option(parser)
    add_backend_options(parser)
    parser.add_argument(
        "--compare-sam",
        action="store_true",
        help="also run stock SAM (same weights, same prompts): agreement IoU",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N frames")
    parser.add_argument(
        "--tolerance-ms",
        type=float,
        default=FrameBuffer.tolerance_ns / 1e6,
        help="prompt-to-frame stamp tolerance, as the node's parameter (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stt_ros.predictor import FoveatedPredictor, ReferencePredictor

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    options = EvalOptions(
        bag=args.bag,
        image_topic=args.image_topic,
        out=args.out,
        prompt_topic=args.prompt_topic,
        gt_topic=args.gt_topic,
        depth_topic=args.depth_topic,
        camera_info_topic=args.camera_info_topic,
        depth_tolerance_ns=round(args.depth_tolerance_ms * 1e6),
        limit=args.limit,
        progress=not args.no_progress,
        buffer=FrameBuffer(tolerance_ns=round(args.tolerance_ms * 1e6)),
        model={
            "variant": args.variant,
            "checkpoint": args.checkpoint or "shipped",
        },
    )
    with Bag(options.bag) as bag:
        check_inputs(options, bag)
        if args.backend == "onnxruntime":
            predictor = onnx_predictor(args)
            options.model["backend"] = f"onnxruntime ({args.model})"
            stock = ReferencePredictor.build(args.variant, args.checkpoint, args.device) if args.compare_sam else None
        else:
            predictor = FoveatedPredictor.build(
                args.variant, args.checkpoint, args.adapter, args.device, **chosen_model_options(args)
            )
            stock = ReferencePredictor(predictor.sam, variant=args.variant) if args.compare_sam else None
        options.model.update(
            adapter=predictor.adapter,
            device=predictor.device,
            **{key: str(value) for key, value in predictor.settings.items()},
        )
        metrics = run_evaluation(options, predictor, stock, bag)
    iou, agreement, latency = metrics["iou"], metrics["sam_agreement"], metrics["timing"]["frame_latency"]
    summary = [f"{metrics['frames']} frames, {metrics['prompts']} prompts"]
    if iou.get("count"):
        summary.append(f"mIoU {iou['mean']:.3f} (oracle {metrics['oracle_iou']['mean']:.3f})")
    if agreement.get("count"):
        summary.append(f"agreement with SAM {agreement['mean']:.3f}")
    if latency.get("count"):
        summary.append(f"p50 {latency['p50_ms']:.1f} ms/frame")
    print("; ".join(summary))
    print(f"report: {args.out / 'report.md'}; results bag: {args.out / 'results'}")
    return 0
