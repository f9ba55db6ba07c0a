"""`stt demo`: segment a few things on a built-in (or your) image and show how the model sees them."""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from stt_ros.commands.model_options import (
    ADAPTER_HELP,
    CHECKPOINT_HELP,
    add_backend_options,
    add_device_option,
    onnx_predictor,
)
from stt_ros.errors import UserError
from stt_ros.evaluation.scenes import generate_scene
from stt_ros.evaluation.visualize import foveation_view
from stt_ros.masks import interior_point, mask_iou
from stt_ros.model.checkpoints import VARIANTS
from stt_ros.model.reference import REFERENCE_STATUS
from stt_ros.pipeline.conversions import overlay_image
from stt_ros.predictor import FoveatedPredictor, ReferencePredictor
from stt_ros.prompts import Prompt, SegmentationResult

BUILTIN_SEED = 2026
REFERENCE_NOTICE = (
    "Model: stt_ros's reference SAM, a small SAM-architecture model trained only on synthetic scenes "
    "(shapes and textures), meant for scenes like the built-in one; for real camera images use an "
    "official SAM checkpoint: --variant vit_b --checkpoint sam_vit_b_01ec64.pth"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="segment points on a built-in or given image; write masks, overlays and foveation views",
        description=(
            "Segment the things under a few points with the foveated model and with stock SAM, print each "
            "prompt's latency for both and their ratio, and write PNGs: the masks, overlays, and what the "
            "foveated model sees around each point (fine tokens at the point, coarser further out)."
        ),
        epilog=(
            "examples:\n"
            "  stt demo                                   # built-in synthetic scene, reference model\n"
            "  stt demo --image shelf.jpg --point 410,220 --variant vit_b --checkpoint sam_vit_b_01ec64.pth\n"
            "  stt demo --variant vit_b --checkpoint random  # timing only: masks are noise"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", type=Path, help="an RGB/BGR image file (default: a built-in synthetic scene)")
    parser.add_argument(
        "--point",
        action="append",
        metavar="U,V",
        help="a foreground point in pixels (column,row); repeat for several prompts "
        "(default: the interior point of the three largest objects of the built-in scene, or the image centre)",
    )
    parser.add_argument("--variant", default="reference", choices=VARIANTS, help="SAM variant (default: %(default)s)")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--adapter", help=ADAPTER_HELP)
    add_device_option(parser)
    add_backend_options(parser)
    parser.add_argument("--multimask", default="auto", help="auto, best, largest, single, 0, 1 or 2")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: %(default)s)")
    parser.set_defaults(handler=run)


def parse_point(text: str) -> tuple[float, float]:
    try:
        u, v = (float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--point {text!r} is not U,V (two numbers: column,row in pixels)") from None
    return u, v


def load_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"image {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path} is not an image OpenCV can read (PNG, JPEG, ...)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def timed(predict, image: np.ndarray, prompt: Prompt, multimask) -> tuple[SegmentationResult, float]:
    start = time.perf_counter()
    result = predict(image, [prompt], multimask=multimask)[0]
    return result, (time.perf_counter() - start) * 1e3


def run(args: argparse.Namespace) -> int:
    truth: list[np.ndarray] = []
    if args.image is not None:
        image = load_image(args.image)
    else:
        scene = generate_scene(BUILTIN_SEED, 640, 480)
        image = scene.image
        truth = sorted(scene.masks(), key=lambda m: -int(m.sum()))[:3]
    if args.point:
        points = [parse_point(text) for text in args.point]
    elif truth:
        points = [interior_point(mask) for mask in truth]
    else:
        points = [(image.shape[1] / 2, image.shape[0] / 2)]
    prompts = [Prompt(points=[point]) for point in points]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = FoveatedPredictor.build(args.variant, args.checkpoint, args.adapter, args.device)
    foveated = onnx_predictor(args) if args.backend == "onnxruntime" else model
    stock = ReferencePredictor(model.sam, variant=args.variant)
    if args.variant == "reference" and args.checkpoint is None:
        print(REFERENCE_NOTICE)
        print(f"Status: {REFERENCE_STATUS}.")
    elif args.checkpoint == "random":
        print("Model: RANDOM weights (--checkpoint random): the masks are noise; the timings are real.")
    print(f"Image {image.shape[1]}x{image.shape[0]}, device {foveated.device}, {len(prompts)} prompt(s)")

    foveated.predict(image, prompts[:1])  # warm-up: first-call allocations are not the model's speed
    stock.predict(image, prompts[:1])
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "input.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    header = f"{'prompt':>14}  {'foveated ms':>11}  {'stock ms':>9}  {'ratio':>6}  {'score':>5}  {'IoU vs stock':>12}"
    print(header + ("  IoU vs truth: foveated / stock" if truth else ""))
    ours, theirs, ratios = [], [], []
    for index, prompt in enumerate(prompts):
        result, fov_ms = timed(foveated.predict, image, prompt, args.multimask)
        reference, stock_ms = timed(stock.predict, image, prompt, args.multimask)
        ours.append(result)
        theirs.append(reference)
        ratios.append(stock_ms / fov_ms)
        u, v = prompt.points[0]
        line = (
            f"{f'({u:.0f}, {v:.0f})':>14}  {fov_ms:11.1f}  {stock_ms:9.1f}  {ratios[-1]:5.1f}x  "
            f"{result.score:5.2f}  {mask_iou(result.mask, reference.mask):12.3f}"
        )
        if truth:
            line += f"  {mask_iou(result.mask, truth[index]):24.3f} / {mask_iou(reference.mask, truth[index]):.3f}"
        print(line)
        cv2.imwrite(str(args.out / f"mask_{index}.png"), result.mask.astype(np.uint8) * 255)
        view = foveation_view(model, image, prompt)
        cv2.imwrite(str(args.out / f"foveation_{index}.png"), cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
    point_lists = [p.points for p in prompts]
    cv2.imwrite(str(args.out / "overlay.png"), overlay_image(image, [r.mask for r in ours], point_lists))
    cv2.imwrite(str(args.out / "overlay_stock.png"), overlay_image(image, [r.mask for r in theirs], point_lists))
    print(f"Foveated model is {np.median(ratios):.1f}x faster than stock SAM per prompt (median).")
    print(f"Wrote {args.out}/: input.png, overlay.png, overlay_stock.png, mask_N.png, foveation_N.png")
    return 0
