"""Adapter training (DESIGN §2.6): distillation from the same SAM on the full frame, or supervised masks.

The teacher is the frozen SAM itself on the full frame. Its image embedding is computed once per image and
kept in a `TeacherCache` across runs, so a step costs only the student. Prompts are single points, part
uniform over the image, part inside the teacher's confident masks (drawn to favour object-sized ones) and
optionally on their boundaries; each prompt's point is also where the student's tokens centre. Targets:
- "teacher": the student's output at the one the teacher chose, 20·focal + dice against the teacher's
  binarised mask, plus MSE of its 3 IoU predictions against the teacher's;
- "features": every valid token's encoder output against the teacher's embedding over its footprint
  (`features.py`), a dense signal for what the decoder reads;
- "teacher+features": both, the mask/IoU terms times `mask_weight`;
- "labels": SAM's own loss against ground-truth masks.

Every random choice derives from (seed or data_seed, step, rank), so a run is deterministic and a resumed run
continues bit-for-bit. Under `torchrun` each process trains on its shard of the images and gradients are averaged.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from segment_anything.modeling import Sam
from tqdm import tqdm

from stt_ros.errors import UserError
from stt_ros.evaluation.heldout import evaluate, predictor_segmenter
from stt_ros.evaluation.plotting import plot_loss, pyplot
from stt_ros.foveation import DEFAULT_TOKENS
from stt_ros.model.adapters import (
    DEFAULT_GEOMETRY_INPUTS,
    DEFAULT_PATCH_ADAPTER,
    ENCODER_LORA,
    GEOMETRY_HIDDEN,
    PATCH_RANK,
)
from stt_ros.model.encoder import DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL, DEFAULT_WINDOW_PADDING
from stt_ros.model.foveated_sam import DECODER_RANK, DEFAULT_DECODER, OUTSIDE_LOGIT
from stt_ros.predictor import FoveatedPredictor, resolve_device
from stt_ros.prompts import Prompt
from stt_ros.train.data import Sample, Source
from stt_ros.train.features import (
    FEATURE_LOSSES,
    channel_moments,
    channel_variance,
    feature_loss,
    feature_targets,
    image_cells,
)
from stt_ros.train.reference import PRECISIONS, learning_rate, mask_ious, mask_loss, sam_loss, save_atomic
from stt_ros.train.teacher import Teacher, TeacherCache, canvas_region, default_cache_dir, draw_prompts, weights_hash

TARGETS = ("teacher", "features", "teacher+features", "labels")
TRAIN_STREAM, VAL_STREAM, SHUFFLE_STREAM, SPLIT_STREAM = 1, 2, 3, 4  # independent random streams per purpose
VAL_UNIFORM_FRACTION = 0.5  # validation prompts: half uniform, half inside masks, whatever the run's sampler


def default_model_options() -> dict:
    """FoveatedSam's options; the adapter file records them and refuses a model built differently."""
    return {
        "pattern": "stt",
        "attention": DEFAULT_ATTENTION,
        "tokens": DEFAULT_TOKENS,
        "proportional": DEFAULT_PROPORTIONAL,
        "emulate_window_padding": DEFAULT_WINDOW_PADDING,
        "patch_adapter": DEFAULT_PATCH_ADAPTER,
        "patch_rank": PATCH_RANK,
        "geometry_inputs": DEFAULT_GEOMETRY_INPUTS,
        "geometry_hidden": GEOMETRY_HIDDEN,
        "encoder_lora": ENCODER_LORA,
        "decoder": DEFAULT_DECODER,
        "decoder_rank": DECODER_RANK,
    }


@dataclass
class DistillConfig:
    """Everything that determines a run; stored in checkpoints so a resume uses the same settings."""

    variant: str = "reference"
    data: str = "synthetic"
    target: str = "teacher"  # one of TARGETS: masks, features or both from the teacher; or ground-truth masks
    steps: int = 1000
    seed: int = 0  # the run: shuffling, training prompts, adapter initialisation
    data_seed: int = 0  # synthetic scenes, the split and validation prompts: fixed across a sweep of `seed`
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    accumulate: int = 1  # images per optimizer step (per process)
    prompts: int = 8  # prompts (foveae) per image, one student batch against one cached teacher embedding
    uniform_fraction: float = 0.5  # the rest are sampled inside the teacher's masks (or on their boundaries)
    boundary_fraction: float = 0.0  # share of prompts on the boundaries of the teacher's masks
    iou_weight: float = 1.0  # weight of the IoU-prediction MSE in either loss (DESIGN §2.6 and SAM: 1)
    focal: float = 1.0  # share of the 20·focal mask term, the rest cross-entropy (DESIGN §2.6 and SAM: 1)
    feature_loss: str = "mse"  # "mse" over the teacher's per-channel variance, or "cosine" (features.py)
    mask_weight: float = 1.0  # weight of the mask and IoU terms with target "teacher+features"
    precision: str = "auto"  # of the training forward: "bf16" autocast, "fp32", or "auto" (bf16 on CUDA only)
    init: str = ""  # adapter file the run starts from (its decoder settings may differ), or "" for untrained
    val_images: int = 4
    val_prompts: int = 8
    eval_every: int = 100
    checkpoint_every: int = 100
    model: dict = field(default_factory=default_model_options)

    def check(self, source: Source) -> None:
        if self.target not in TARGETS:
            raise UserError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.target == "labels" and not source.labelled:
            raise UserError(f"data {self.data} has no ground-truth masks; supervised training needs COCO or synthetic")
        for name in ("steps", "accumulate", "prompts", "val_prompts"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.iou_weight < 0:
            raise UserError(f"iou weight must be at least 0, got {self.iou_weight}")
        if self.mask_weight < 0:
            raise UserError(f"mask weight must be at least 0, got {self.mask_weight}")
        if not 0.0 <= self.focal <= 1.0:
            raise UserError(f"focal share must be in [0, 1], got {self.focal}")
        if not 0.0 <= self.uniform_fraction <= 1.0:
            raise UserError(f"uniform fraction must be in [0, 1], got {self.uniform_fraction}")
        if not 0.0 <= self.boundary_fraction <= 1.0 - self.uniform_fraction:
            raise UserError(
                f"boundary fraction must be in [0, 1 - uniform fraction = {1 - self.uniform_fraction:g}], "
                f"got {self.boundary_fraction}"
            )
        if self.feature_loss not in FEATURE_LOSSES:
            raise UserError(f"feature loss must be one of {FEATURE_LOSSES}, got {self.feature_loss!r}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.init and not Path(self.init).is_file():
            raise UserError(f"--init adapter file {self.init} does not exist")
        if not 0 <= self.val_images < len(source):
            raise UserError(f"{self.val_images} validation images leave none of the {len(source)} images for training")


@dataclass
class DistillResult:
    """The per-step history (loss; validation metrics where measured) and the first and last validation."""

    history: list[dict]
    before: dict
    after: dict


@dataclass(frozen=True)
class Shard:
    """This process's rank and the process count (1, 0 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (identity for one process)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def distributed(device: str | None) -> Iterator[torch.device]:
    """Join the `torchrun` process group when RANK/WORLD_SIZE are set (nccl on CUDA, gloo on CPU).

    Yields the device this process trains on: cuda:LOCAL_RANK under torchrun with CUDA.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = resolve_device(device)
    if world == 1:
        yield wanted
        return
    if wanted.type == "cuda":
        wanted = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(wanted)
    dist.init_process_group("nccl" if wanted.type == "cuda" else "gloo")
    try:
        yield wanted
    finally:
        dist.destroy_process_group()


def split(count: int, config: DistillConfig) -> tuple[list[int], list[int]]:
    """(train, validation) image indices: a seeded permutation, the first `val_images` held out."""
    order = np.random.default_rng([config.data_seed, SPLIT_STREAM]).permutation(count).tolist()
    return order[config.val_images :], order[: config.val_images]


def shard_image(shard_indices: list[int], position: int, config: DistillConfig, rank: int) -> int:
    """The image for this process's `position`-th sample: a fresh seeded shuffle of its shard each epoch."""
    epoch, offset = divmod(position, len(shard_indices))
    order = np.random.default_rng([config.seed, SHUFFLE_STREAM, rank, epoch]).permutation(len(shard_indices))
    return shard_indices[int(order[offset])]


def distillation_loss(
    student_logits: torch.Tensor,
    student_iou: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_iou: torch.Tensor,
    covered: torch.Tensor,
    iou_weight: float = 1.0,
    focal_share: float = 1.0,
) -> torch.Tensor:
    """20·focal + dice at the teacher's chosen output vs its binarised mask, + MSE of the 3 IoU predictions.

    Logits are (P, 4, rows, cols) on the image's part of the canvas; `covered` (P, rows, cols) marks the
    cells some valid token paints. Elsewhere the student is a constant it cannot change, so the target is
    set to background there, where that constant already agrees. `iou_weight` scales the MSE: the IoU
    predictions decide which mask the student returns, so agreeing with the teacher needs them ranked alike.
    `focal_share` < 1 replaces part of the focal term with cross-entropy (`mask_loss`).
    """
    index = torch.arange(student_logits.shape[0], device=student_logits.device)
    chosen = teacher_iou[:, :3].argmax(dim=1)
    student = student_logits[index, chosen].float()
    target = ((teacher_logits[index, chosen] > 0) & covered).float()
    iou_loss = F.mse_loss(student_iou[:, :3].float(), teacher_iou[:, :3], reduction="none").mean(dim=1)
    return (mask_loss(student, target, focal_share) + iou_weight * iou_loss).mean()


def label_prompts(
    rng: np.random.Generator, sample: Sample, count: int, region: tuple[int, int]
) -> tuple[list[Prompt], torch.Tensor]:
    """`count` points inside random ground-truth masks, and those masks on the canvas (soft, area-resized)."""
    masks = [mask for mask in sample.masks() if mask.any()]
    if not masks:
        raise UserError(f"image {sample.name} has no non-empty ground-truth mask")
    rows, cols = region
    prompts, targets = [], []
    for _ in range(count):
        mask = masks[int(rng.integers(len(masks)))]
        ys, xs = np.nonzero(mask)
        pick = int(rng.integers(len(ys)))
        prompts.append(Prompt(points=[(float(xs[pick]), float(ys[pick]))]))
        targets.append(cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA))
    return prompts, torch.from_numpy(np.stack(targets))


def step_loss(
    predictor: FoveatedPredictor,
    teacher: Teacher,
    sample: Sample,
    config: DistillConfig,
    rng: np.random.Generator,
    variance: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one image and its parts: the teacher read from its cache (or ground truth), then the
    student on all the image's prompts in one batch."""
    framed = predictor.frame.image(sample.image, predictor.device)
    model = predictor.model
    region = canvas_region(framed)
    if config.target == "labels":
        prompts, targets = label_prompts(rng, sample, config.prompts, region)
    else:
        view = teacher.encode(framed)
        prompts = draw_prompts(rng, view, framed, config.prompts, config.uniform_fraction, config.boundary_fraction)
    batch = predictor.frame.prompts(prompts, framed.original_size, predictor.device)
    tokens = model.tokenize(framed.resized, batch.fovea)
    features = model.encoder(tokens)
    loss, parts = features.new_zeros(()).float(), {}
    if config.target in ("features", "teacher+features"):
        inside = image_cells(framed.input_size, model.encoder.grid, model.encoder.patch)
        targets, weights = feature_targets(view.embedding, inside, tokens, model.pattern, model.encoder.patch)
        loss = feature_loss(features, targets, weights, config.feature_loss, variance)
        parts["feature_loss"] = float(loss.detach())
    if config.target == "features":
        return loss, parts
    logits, iou = model.decode(tokens, features, batch.sparse_coords, batch.sparse_labels)
    rows, cols = region
    logits = logits[:, :, :rows, :cols]
    covered = logits[:, 3] != OUTSIDE_LOGIT  # canvas cells no valid token paints hold exactly this value
    if config.target == "labels":
        targets = targets.to(logits.device) * covered
        return sam_loss(logits[:, :3], iou[:, :3], targets[:, None], config.focal, config.iou_weight)[0], parts
    teacher_logits, teacher_iou = teacher.decode(framed, prompts)
    masks = distillation_loss(
        logits, iou, teacher_logits[:, :, :rows, :cols], teacher_iou, covered, config.iou_weight, config.focal
    )
    if config.target == "teacher":
        return masks, parts
    parts["mask_loss"] = float(masks.detach())
    return loss + config.mask_weight * masks, parts


@torch.no_grad()
def validate(
    predictor: FoveatedPredictor,
    teacher: Teacher,
    samples: list[tuple[Sample, int]],
    config: DistillConfig,
    shard: Shard,
    variance: torch.Tensor,
) -> dict:
    """Agreement IoU of the student's chosen mask with the teacher's, at the original resolution, and the
    student's feature error (both normalisations, so runs that train either compare).

    Prompts are fixed per validation image and independent of the run's sampler, so runs compare; where
    labels exist, also the single-point mIoU (interior points, the held-out protocol) against ground truth
    of the student and of the teacher (the ceiling distillation aims at).
    """
    agreement, gt_student, gt_teacher, feature_mse, feature_cosine = [], [], [], [], []
    model = predictor.model
    for sample, index in samples:
        rng = np.random.default_rng([config.data_seed, VAL_STREAM, index])
        framed = predictor.frame.image(sample.image, predictor.device)
        view = teacher.encode(framed)
        prompts = draw_prompts(rng, view, framed, config.val_prompts, VAL_UNIFORM_FRACTION)
        teacher_logits, teacher_iou = teacher.decode(framed, prompts)
        student_logits, student_iou = predictor.predict_logits(sample.image, prompts)
        size = framed.original_size
        picks = torch.arange(len(prompts))
        ours = predictor.upscale(student_logits[picks, student_iou[:, :3].argmax(1)][:, None], size)[:, 0] > 0
        theirs = predictor.upscale(teacher_logits[picks, teacher_iou[:, :3].argmax(1)][:, None], size)[:, 0] > 0
        agreement += mask_ious(ours, theirs).tolist()
        batch = predictor.frame.prompts(prompts, size, predictor.device)
        tokens = model.tokenize(framed.resized, batch.fovea)
        inside = image_cells(framed.input_size, model.encoder.grid, model.encoder.patch)
        targets, weights = feature_targets(view.embedding, inside, tokens, model.pattern, model.encoder.patch)
        features = model.encoder(tokens)
        feature_mse.append(float(feature_loss(features, targets, weights, "mse", variance)))
        feature_cosine.append(float(feature_loss(features, targets, weights, "cosine", variance)))
        if sample.gt:
            gt_student += evaluate(predictor_segmenter(predictor), [sample]).chosen_ious
            gt_teacher += evaluate(predictor_segmenter(teacher), [sample]).chosen_ious
    totals = shard.sum(
        [
            float(sum(agreement)),
            len(agreement),
            sum(feature_mse),
            sum(feature_cosine),
            len(feature_mse),
            sum(gt_student),
            len(gt_student),
            sum(gt_teacher),
            len(gt_teacher),
        ]
    )
    metrics = {
        "agreement": totals[0] / max(totals[1], 1),
        "feature_mse": totals[2] / max(totals[4], 1),
        "feature_cosine": totals[3] / max(totals[4], 1),
    }
    if totals[6]:
        metrics.update(miou=totals[5] / totals[6], teacher_miou=totals[7] / totals[8])
    return metrics


def prepare_teacher(teacher: Teacher, source: Source, indices: list[int], shard: Shard, progress: bool) -> torch.Tensor:
    """Fill the teacher cache for this process's images (once per image, across runs) and return the
    per-channel variance of the embeddings over all processes' images, which the "mse" feature loss divides by."""
    encoder = teacher.sam.image_encoder
    patch = encoder.patch_embed.proj.kernel_size[0]
    moments = [0.0] * (1 + 2 * teacher.sam.prompt_encoder.embed_dim)
    for index in tqdm(indices, desc="teacher cache", disable=not (progress and shard.main), unit="image"):
        framed = teacher.frame.image(source[index].image, teacher.device)
        inside = image_cells(framed.input_size, encoder.img_size // patch, patch)
        found = channel_moments(teacher.encode(framed).embedding, inside)
        moments = [a + b for a, b in zip(moments, found, strict=True)]
    return channel_variance(shard.sum(moments))


def _average_gradients(parameters: list[torch.nn.Parameter], loss: float, shard: Shard) -> float:
    """All-reduce the gradients (one flat bucket) and the loss across processes; returns the mean loss.

    The adapters are a few small tensors, so one explicit bucket per optimizer step does what
    DistributedDataParallel would, and it waits for the whole accumulation by construction.
    """
    if shard.world == 1:
        return loss
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.flatten() for g in grads] + [torch.tensor([loss], device=grads[0].device)])
    dist.all_reduce(flat)
    flat /= shard.world
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
        offset += grad.numel()
    return float(flat[-1])


def plot_curves(history: list[dict], path: Path) -> None:
    """Training loss and its parts, validation feature error, and validation agreement / mIoU, as a PNG."""
    plt = pyplot()

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4))
    trained = [h for h in history if "loss" in h]
    if trained:
        plot_loss(left, [h["step"] for h in trained], [h["loss"] for h in trained])
        for key in ("feature_loss", "mask_loss"):
            if key in trained[-1]:
                plot_loss(left, [h["step"] for h in trained], [h[key] for h in trained], label=key.replace("_", " "))
        left.legend()
    left.set(xlabel="step", ylabel="loss", title="training loss")
    for key, label in (("feature_mse", "normalised MSE"), ("feature_cosine", "1 - cosine")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            middle.plot(*zip(*points, strict=True), "o-", label=label)
    middle.set(xlabel="step", ylabel="feature error", title="validation features (student vs teacher)")
    middle.legend(loc="upper right")
    for key, label in (("agreement", "agreement IoU with teacher"), ("miou", "mIoU vs ground truth")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            right.plot(*zip(*points, strict=True), "o-", label=label)
    teacher = [h["teacher_miou"] for h in history if "teacher_miou" in h]
    if teacher:
        right.axhline(teacher[-1], color="grey", linestyle="--", label="teacher mIoU")
    right.set(xlabel="step", ylabel="IoU", ylim=(0, 1), title="validation")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def train_adapters(
    sam: Sam,
    source: Source,
    config: DistillConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    teacher_cache: str | Path | None = None,
    half: bool = False,
) -> DistillResult:
    """Train the adapters of a foveated `sam` and write the adapter file `out`.

    Beside it: OUT.ckpt (resumable checkpoint) and OUT_curves.png. The teacher's outputs are read from
    `teacher_cache` (None: the per-weights default folder), filled first where images are missing. Under
    torchrun every process calls this (inside `distributed`); only rank 0 writes files other than cache
    shards. `stop_after` ends early at that step (the schedule still follows `config.steps`), for testing resume.
    `half` writes the adapter file's tensors in float16 (a shipped file; the checkpoint stays float32).
    """
    config.check(source)
    shard = Shard.current()
    out = Path(out)
    checkpoint, curves = out.with_suffix(".ckpt"), out.with_name(out.stem + "_curves.png")
    train_indices, val_indices = split(len(source), config)
    mine = train_indices[shard.rank :: shard.world]
    if not mine:
        raise UserError(f"{len(train_indices)} training images cannot feed {shard.world} processes")
    val_mine = val_indices[shard.rank :: shard.world]
    val_samples = [(source[i], i) for i in val_mine]
    device = sam.device
    torch.manual_seed(config.seed)  # adapter initialisation, identical on every process
    predictor = FoveatedPredictor(sam, variant=config.variant, **config.model)
    model = predictor.model
    if config.init:
        model.load_adapters(config.init, config.variant, start=True)
    cache = TeacherCache(teacher_cache or default_cache_dir(config.variant, weights_hash(sam)), sam, config.variant)
    teacher = Teacher(sam, cache)
    variance = prepare_teacher(teacher, source, (mine if config.target != "labels" else []) + val_mine, shard, progress)
    parameters = [p for module in model.adapter_modules().values() for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate(config, step) / config.lr)
    start, history = 0, []
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state["config"] != asdict(config):
            changed = [k for k, v in asdict(config).items() if state["config"].get(k) != v]
            raise UserError(f"checkpoint {checkpoint} was made with different settings ({', '.join(changed)})")
        model.load_trainable_state(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, history = state["step"], state["history"]
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    # validation measures the model as deployed: fp32 on a CPU, bf16 autocast on CUDA as before
    val_autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if start == 0:
        with val_autocast:
            history.append({"step": 0, **validate(predictor, teacher, val_samples, config, shard, variance)})
    end = min(config.steps, stop_after if stop_after is not None else config.steps)
    bar = tqdm(range(start, end), initial=start, total=end, disable=not (progress and shard.main), desc="train")
    began = time.monotonic()
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss_sum, part_sums = 0.0, {}
        for micro in range(config.accumulate):
            position = step * config.accumulate + micro
            sample = source[shard_image(mine, position, config, shard.rank)]
            rng = np.random.default_rng([config.seed, TRAIN_STREAM, shard.rank, position])
            with autocast:
                loss, parts = step_loss(predictor, teacher, sample, config, rng, variance)
            (loss / config.accumulate).backward()
            loss_sum += float(loss.detach()) / config.accumulate
            for key, value in parts.items():
                part_sums[key] = part_sums.get(key, 0.0) + value / config.accumulate
        record = {
            "step": step + 1,
            "loss": _average_gradients(parameters, loss_sum, shard),
            **dict(zip(part_sums, shard.sum([v / shard.world for v in part_sums.values()]), strict=True)),
            "lr": scheduler.get_last_lr()[0],
        }
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done == end or (config.eval_every and done % config.eval_every == 0):
            with val_autocast:
                record.update(validate(predictor, teacher, val_samples, config, shard, variance))
            tqdm.write(f"step {done}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step"))
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", s=f"{time.monotonic() - began:.0f}")
        if shard.main and (done % config.checkpoint_every == 0 or done == end):
            out.parent.mkdir(parents=True, exist_ok=True)
            save_atomic(
                {
                    "step": done,
                    "config": asdict(config),
                    "trainable": model.trainable_state(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "history": history,
                },
                checkpoint,
            )
            measured = [h for h in history if "agreement" in h]
            extra = {"steps": done, "data": config.data, "target": config.target, "validation": measured[-1]}
            model.save_adapters(out, config.variant, extra, torch.float16 if half else torch.float32)
            plot_curves(history, curves)
    measured = [h for h in history if "agreement" in h]
    return DistillResult(history, before=measured[0], after=measured[-1])
