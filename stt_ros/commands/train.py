"""`stt train`: train the foveated adapters of a frozen SAM by distillation or on labelled masks (DESIGN §2.6)."""

from __future__ import annotations

import argparse
import os
import time

from stt_ros.commands.model_options import CHECKPOINT_HELP, add_device_option, add_model_options
from stt_ros.model.adapters import GEOMETRY_INPUTS, PATCH_ADAPTERS
from stt_ros.model.foveated_sam import DECODER_MODES
from stt_ros.train.distill import TARGETS, DistillConfig, default_model_options
from stt_ros.train.features import FEATURE_LOSSES
from stt_ros.train.reference import PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train foveated adapters (distillation from full SAM, or supervised)",
        description=(
            "Train the patch and position adapters (optionally the mask decoder) of a frozen SAM so the "
            "foveated model agrees with SAM on the full frame. DATA is an image folder or a ROS 2 bag "
            "(distillation, no labels), a COCO-style .json (supervised), or 'synthetic'. The teacher (SAM on the "
            "full frame) encodes each image once into a cache reused by later runs. Writes OUT (the "
            "adapter file for FoveatedPredictor.build(adapter=OUT) and the node), OUT.ckpt and "
            "OUT_curves.png. Multi-GPU: torchrun --nproc_per_node N -m stt_ros.commands.cli train ..."
        ),
        epilog=(
            "targets:\n"
            "  teacher           the student's mask at the teacher's chosen output vs the teacher's mask, + IoU MSE\n"
            "  features          every valid token's encoder output vs the teacher's image embedding averaged over\n"
            "                    the token's footprint (s x s cells at stride s; its own cell at stride 1): a dense\n"
            "                    target for all 172 tokens of every prompt (--feature-loss mse|cosine)\n"
            "  teacher+features  both; the mask and IoU terms times --mask-weight\n"
            "  labels            SAM's loss against ground-truth masks (COCO, synthetic)\n"
            "Train the decoder with the masks (--decoder full): on the reference model the mask term gains +0.01\n"
            "mIoU and features alone lose 0.02; docs/TRAINING.md has the table and why.\n"
            "\n"
            "example (the shipped reference adapter, 50 min on one CPU thread; docs/TRAINING.md):\n"
            "  stt train --variant reference --data synthetic --synthetic-images 300 --val-images 16 --prompts 8 \\\n"
            "      --precision bf16 --threads 1 --target teacher+features --decoder full --iou-weight 10 --focal 0 \\\n"
            "      --lr 3e-4 --warmup 50 --steps 1500 --eval-every 250 --seed 1 --half --out reference_adapter.pt"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_defaults, model = DistillConfig(), default_model_options()
    parser.add_argument("--variant", default="reference", help="vit_b, vit_l, vit_h or reference")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--data", required=True, help="image folder, COCO .json, ROS 2 bag, or 'synthetic'")
    parser.add_argument("--image-topic", help="image topic when --data is a bag, e.g. /camera/image_raw")
    parser.add_argument("--image-root", help="folder of the COCO images (default: the .json's folder)")
    parser.add_argument("--max-images", type=int, default=500, help="frames kept from a bag (evenly spaced)")
    parser.add_argument("--synthetic-images", type=int, default=200, help="scenes when --data synthetic")
    parser.add_argument("--out", required=True, help="adapter file to write")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt if it exists")
    parser.add_argument(
        "--target",
        choices=("auto", *TARGETS),
        default="auto",
        help="what the student learns (see below; auto: labels for COCO, teacher otherwise)",
    )
    parser.add_argument(
        "--feature-loss",
        choices=FEATURE_LOSSES,
        default=run_defaults.feature_loss,
        help="feature error: squared error over the teacher embedding's per-channel variance, or 1 - cosine "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--mask-weight",
        type=float,
        default=run_defaults.mask_weight,
        help="weight of the mask and IoU terms with --target teacher+features (default: %(default)s)",
    )
    parser.add_argument(
        "--teacher-cache",
        help="folder of the teacher's cached image embeddings, made for one set of SAM weights "
        "(default: $XDG_CACHE_HOME/stt_ros/teacher/VARIANT-HASH, ~/.cache if unset); about 1.6 MB per image "
        "for the reference model, 2.1 MB for vit_b/l/h",
    )
    parser.add_argument(
        "--init",
        default=run_defaults.init,
        help="start from this adapter file (e.g. a feature-distilled one, before training the decoder on masks); "
        "its settings must match, except the decoder's",
    )
    parser.add_argument("--steps", type=int, default=run_defaults.steps, help="optimizer steps")
    parser.add_argument(
        "--seed",
        type=int,
        default=run_defaults.seed,
        help="run seed: shuffling, training prompts, adapter initialisation. The data and validation stay fixed, "
        "so runs that differ only in --seed compare",
    )
    parser.add_argument(
        "--data-seed",
        type=int,
        default=run_defaults.data_seed,
        help="data seed: the synthetic scenes, the train/validation split and the validation prompts",
    )
    parser.add_argument("--lr", type=float, default=run_defaults.lr, help="peak AdamW learning rate")
    parser.add_argument(
        "--warmup", type=int, default=run_defaults.warmup, help="linear warmup steps (then cosine decay)"
    )
    parser.add_argument(
        "--accumulate", type=int, default=run_defaults.accumulate, help="images per optimizer step and process"
    )
    parser.add_argument(
        "--prompts", type=int, default=run_defaults.prompts, help="prompts per image (one teacher encode each)"
    )
    parser.add_argument(
        "--uniform-fraction",
        type=float,
        default=run_defaults.uniform_fraction,
        help="share of uniform (vs in-mask) points",
    )
    parser.add_argument(
        "--boundary-fraction",
        type=float,
        default=run_defaults.boundary_fraction,
        help="share of points on the boundaries of the teacher's masks (the rest inside them)",
    )
    parser.add_argument(
        "--iou-weight",
        type=float,
        default=run_defaults.iou_weight,
        help="weight of the IoU-prediction term in the loss (distillation or labels); the IoU predictions "
        "choose the returned mask, so a larger weight (10) teaches the student to choose as the teacher does",
    )
    parser.add_argument(
        "--focal",
        type=float,
        default=run_defaults.focal,
        help="share of the 20x focal term in the mask loss, the rest cross-entropy (1: DESIGN's and SAM's loss). "
        "Focal loss shrinks the masks of a student that cannot see all the teacher sees; 0 keeps their size",
    )
    parser.add_argument(
        "--val-images", type=int, default=run_defaults.val_images, help="images held out for validation"
    )
    parser.add_argument(
        "--val-prompts", type=int, default=run_defaults.val_prompts, help="prompts per validation image"
    )
    parser.add_argument(
        "--eval-every", type=int, default=run_defaults.eval_every, help="steps between validations (0: only at end)"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=run_defaults.checkpoint_every, help="steps between checkpoints"
    )
    add_model_options(parser)
    parser.add_argument(
        "--patch-adapter",
        choices=PATCH_ADAPTERS,
        default=model["patch_adapter"],
        help="patch projection adapter per level: a low-rank linear map, or an MLP (default: %(default)s)",
    )
    parser.add_argument(
        "--patch-rank",
        type=int,
        default=model["patch_rank"],
        help="rank of the patch projection adapter (the MLP's hidden width) (default: %(default)s)",
    )
    parser.add_argument(
        "--geometry-inputs",
        choices=GEOMETRY_INPUTS,
        default=model["geometry_inputs"],
        help="what the geometric encoding MLP sees: position (centre, log2 stride), or fovea (also the token's "
        "offset from the fovea and its level) (default: %(default)s)",
    )
    parser.add_argument(
        "--geometry-hidden", type=int, default=model["geometry_hidden"], help="width of the geometric encoding MLP"
    )
    parser.add_argument(
        "--encoder-lora",
        type=int,
        default=model["encoder_lora"],
        help="rank of a trainable low-rank update of every encoder block's qkv projection; SAM's weights stay "
        "frozen (default: %(default)s, none)",
    )
    parser.add_argument(
        "--decoder",
        choices=DECODER_MODES,
        default=model["decoder"],
        help="mask decoder: frozen, fully trained, or a low-rank update of its linear layers",
    )
    parser.add_argument("--decoder-rank", type=int, default=model["decoder_rank"], help="rank with --decoder lowrank")
    add_device_option(parser)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=run_defaults.precision,
        help="training forward pass: bf16 autocast, fp32, or auto (bf16 on CUDA, fp32 on CPU); bf16 is about "
        "1.4x faster on CPUs with AVX512-BF16 (validation always runs as deployed)",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: shared cores)")
    parser.add_argument(
        "--half", action="store_true", help="store the adapter file's tensors in fp16 (half the size, to ship it)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from stt_ros.model.checkpoints import load_sam
    from stt_ros.train.data import CocoSource, open_source
    from stt_ros.train.distill import distributed, train_adapters

    torch.set_num_threads(args.threads)
    source = open_source(
        args.data, args.image_topic, args.image_root, args.max_images, args.synthetic_images, args.data_seed
    )
    target = args.target if args.target != "auto" else ("labels" if isinstance(source, CocoSource) else "teacher")
    config = DistillConfig(
        variant=args.variant,
        data=args.data,
        target=target,
        steps=args.steps,
        seed=args.seed,
        data_seed=args.data_seed,
        lr=args.lr,
        warmup=args.warmup,
        accumulate=args.accumulate,
        prompts=args.prompts,
        uniform_fraction=args.uniform_fraction,
        boundary_fraction=args.boundary_fraction,
        iou_weight=args.iou_weight,
        focal=args.focal,
        feature_loss=args.feature_loss,
        mask_weight=args.mask_weight,
        precision=args.precision,
        init=args.init,
        val_images=args.val_images,
        val_prompts=args.val_prompts,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        model={
            **default_model_options(),
            "pattern": args.pattern,
            "attention": args.attention,
            "tokens": args.tokens,
            "proportional": args.proportional,
            "patch_adapter": args.patch_adapter,
            "patch_rank": args.patch_rank,
            "geometry_inputs": args.geometry_inputs,
            "geometry_hidden": args.geometry_hidden,
            "encoder_lora": args.encoder_lora,
            "decoder": args.decoder,
            "decoder_rank": args.decoder_rank,
        },
    )
    began = time.monotonic()
    with distributed(args.device) as device:
        sam = load_sam(args.variant, args.checkpoint, device)
        result = train_adapters(
            sam, source, config, args.out, resume=args.resume, teacher_cache=args.teacher_cache, half=args.half
        )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {args.out} after {result.history[-1]['step']} steps in {time.monotonic() - began:.0f} s")
        for name, metrics in (("before", result.before), ("after", result.after)):
            print(f"{name}: " + ", ".join(f"{key} {value:.3f}" for key, value in metrics.items() if key != "step"))
    return 0
