"""Adapter training (DESIGN §2.6): distillation from the same SAM on the full frame, or supervised masks.

The teacher is the frozen SAM itself on the full frame: its image embedding is computed once per image
and every prompt of that image is decoded against it. Prompts are single points, part uniform over the
image and part inside the teacher's confident masks, drawn to favour object-sized ones, so training sees
objects above all but background too. The student (the foveated model, same SAM) is trained at the output
the teacher chose: 20·focal + dice against the teacher's binarised mask, plus MSE of its 3 IoU
predictions against the teacher's.
With ground-truth masks (`target="labels"`) the same loop uses SAM's own loss against them instead.

Every random choice derives from (seed or data_seed, step, rank), so a run is deterministic and a resumed run
continues bit-for-bit. Under `torchrun` each process trains on its shard of the images and gradients are averaged.
"""

from __future__ import annotations

import contextlib
import math
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
from stt_ros.frame import FramedImage
from stt_ros.model.adapters import GEOMETRY_HIDDEN, PATCH_RANK
from stt_ros.model.encoder import DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL, DEFAULT_WINDOW_PADDING
from stt_ros.model.foveated_sam import DECODER_RANK, DEFAULT_DECODER, OUTSIDE_LOGIT
from stt_ros.predictor import FoveatedPredictor, ReferencePredictor, resolve_device
from stt_ros.prompts import Prompt
from stt_ros.train.data import Sample, Source
from stt_ros.train.reference import learning_rate, mask_ious, mask_loss, sam_loss, save_atomic

TARGETS = ("teacher", "labels")
TRAIN_STREAM, VAL_STREAM, SHUFFLE_STREAM, SPLIT_STREAM = 1, 2, 3, 4  # independent random streams per purpose
CANVAS_CELL = 4  # frame px per cell of SAM's low-res logit canvas
PROBES = 16  # uniform points per image whose teacher masks are the candidates for prompts inside masks
CONFIDENT_IOU = 0.5  # teacher masks it predicts below this IoU are not prompted inside


def default_model_options() -> dict:
    """FoveatedSam's options; the adapter file records them and refuses a model built differently."""
    return {
        "pattern": "stt",
        "attention": DEFAULT_ATTENTION,
        "tokens": DEFAULT_TOKENS,
        "proportional": DEFAULT_PROPORTIONAL,
        "emulate_window_padding": DEFAULT_WINDOW_PADDING,
        "patch_rank": PATCH_RANK,
        "geometry_hidden": GEOMETRY_HIDDEN,
        "decoder": DEFAULT_DECODER,
        "decoder_rank": DECODER_RANK,
    }


@dataclass
class DistillConfig:
    """Everything that determines a run; stored in checkpoints so a resume uses the same settings."""

    variant: str = "reference"
    data: str = "synthetic"
    target: str = "teacher"  # "teacher": distillation; "labels": supervised on ground-truth masks
    steps: int = 1000
    seed: int = 0  # the run: shuffling, training prompts, adapter initialisation
    data_seed: int = 0  # synthetic scenes, the split and validation prompts: fixed across a sweep of `seed`
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    accumulate: int = 1  # images per optimizer step (per process)
    prompts: int = 8  # prompts per image, all decoded against one teacher embedding
    uniform_fraction: float = 0.5  # the rest are sampled inside the teacher's masks
    iou_weight: float = 1.0  # weight of the IoU-prediction MSE in either loss (DESIGN §2.6 and SAM: 1)
    focal: float = 1.0  # share of the 20·focal mask term, the rest cross-entropy (DESIGN §2.6 and SAM: 1)
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
        if not 0.0 <= self.focal <= 1.0:
            raise UserError(f"focal share must be in [0, 1], got {self.focal}")
        if not 0.0 <= self.uniform_fraction <= 1.0:
            raise UserError(f"uniform fraction must be in [0, 1], got {self.uniform_fraction}")
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


def canvas_region(framed: FramedImage) -> tuple[int, int]:
    """Rows and columns of the low-res canvas that hold the image (the rest is SAM's padding)."""
    height, width = framed.input_size
    return math.ceil(height / CANVAS_CELL), math.ceil(width / CANVAS_CELL)


class Teacher:
    """Stock SAM on the full frame: `encode` once per image, then `decode` any number of prompt batches."""

    def __init__(self, sam: Sam) -> None:
        self.predictor = ReferencePredictor(sam)

    @torch.no_grad()
    def encode(self, framed: FramedImage) -> None:
        self.predictor._prepare(framed)

    @torch.no_grad()
    def decode(self, framed: FramedImage, prompts: list[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (P, 4, 4G, 4G) and IoU predictions (P, 4) as floats, in STT output order."""
        batch = self.predictor.frame.prompts(prompts, framed.original_size, self.predictor.device)
        logits, iou = self.predictor._logits(framed, batch)
        return logits.float(), iou.float()


def _uniform_points(rng: np.random.Generator, count: int, size: tuple[int, int]) -> list[Prompt]:
    height, width = size
    return [Prompt(points=[(rng.uniform(0, width - 1), rng.uniform(0, height - 1))]) for _ in range(count)]


def inside_points(
    rng: np.random.Generator, masks: torch.Tensor, scores: torch.Tensor, count: int, framed: FramedImage
) -> list[Prompt]:
    """`count` points inside the teacher's confident masks (M, rows, cols on the canvas); none if it has none.

    A mask is drawn with probability ∝ 1/√area, then a point uniformly inside it. Uniform points mostly land
    on background, whose masks are large regions where the teacher's choice is arbitrary; weighting by
    inverse square-root area puts most prompts on object-sized masks, which is what a robot prompts, while
    large objects still get some.
    """
    area = masks.flatten(1).sum(1).double().cpu()
    weight = torch.where((area > 0) & (scores.cpu() >= CONFIDENT_IOU), area.clamp(min=1).rsqrt(), 0.0)
    if float(weight.sum()) == 0:
        return []
    probabilities = (weight / weight.sum()).numpy()
    height, width = framed.original_size
    scale = CANVAS_CELL * max(height, width) / max(framed.input_size)  # original px per canvas cell
    points = []
    for _ in range(count):
        cells = torch.nonzero(masks[int(rng.choice(len(probabilities), p=probabilities))]).cpu().numpy()
        row, col = cells[int(rng.integers(len(cells)))]
        u = min((col + rng.uniform()) * scale, width - 1)
        v = min((row + rng.uniform()) * scale, height - 1)
        points.append(Prompt(points=[(float(u), float(v))]))
    return points


def teacher_prompts(
    rng: np.random.Generator, teacher: Teacher, framed: FramedImage, count: int, uniform_fraction: float
) -> tuple[list[Prompt], torch.Tensor, torch.Tensor]:
    """`count` single-point prompts (uniform, then inside the teacher's masks) and the teacher's outputs.

    The masks come from all three outputs the teacher gives for `PROBES` more uniform points (`inside_points`
    says which are drawn); with none it is confident in, the rest are uniform too.
    """
    teacher.encode(framed)
    size = framed.original_size
    n_uniform = max(1, min(count, round(count * uniform_fraction)))
    prompts = _uniform_points(rng, n_uniform, size)
    logits, iou = teacher.decode(framed, prompts)
    n_inside = count - n_uniform
    if n_inside == 0:
        return prompts, logits, iou
    rows, cols = canvas_region(framed)
    probe_logits, probe_iou = teacher.decode(framed, _uniform_points(rng, PROBES, size))
    masks = probe_logits[:, :3, :rows, :cols].flatten(0, 1) > 0
    inside = inside_points(rng, masks, probe_iou[:, :3].flatten(), n_inside, framed)
    inside = inside or _uniform_points(rng, n_inside, size)
    more_logits, more_iou = teacher.decode(framed, inside)
    return prompts + inside, torch.cat([logits, more_logits]), torch.cat([iou, more_iou])


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
    predictor: FoveatedPredictor, teacher: Teacher, sample: Sample, config: DistillConfig, rng: np.random.Generator
) -> torch.Tensor:
    """The loss of one image: the teacher (or ground truth) once, then the student on all its prompts."""
    framed = predictor.frame.image(sample.image, predictor.device)
    region = canvas_region(framed)
    if config.target == "labels":
        prompts, targets = label_prompts(rng, sample, config.prompts, region)
    else:
        prompts, teacher_logits, teacher_iou = teacher_prompts(
            rng, teacher, framed, config.prompts, config.uniform_fraction
        )
    batch = predictor.frame.prompts(prompts, framed.original_size, predictor.device)
    logits, iou = predictor.model(framed.resized, batch)
    rows, cols = region
    logits = logits[:, :, :rows, :cols]
    covered = logits[:, 3] != OUTSIDE_LOGIT  # canvas cells no valid token paints hold exactly this value
    if config.target == "labels":
        targets = targets.to(logits.device) * covered
        loss, _ = sam_loss(logits[:, :3], iou[:, :3], targets[:, None], config.focal, config.iou_weight)
        return loss
    teacher_logits = teacher_logits[:, :, :rows, :cols]
    return distillation_loss(logits, iou, teacher_logits, teacher_iou, covered, config.iou_weight, config.focal)


@torch.no_grad()
def validate(
    predictor: FoveatedPredictor,
    teacher: Teacher,
    samples: list[tuple[Sample, int]],
    config: DistillConfig,
    shard: Shard,
) -> dict:
    """Agreement IoU of the student's chosen mask with the teacher's, at the original resolution.

    Prompts are fixed per validation image, so runs compare; where labels exist, also the single-point
    mIoU against ground truth of the student and of the teacher (the ceiling distillation aims at).
    """
    agreement, gt_student, gt_teacher = [], [], []
    for sample, index in samples:
        rng = np.random.default_rng([config.data_seed, VAL_STREAM, index])
        framed = predictor.frame.image(sample.image, predictor.device)
        prompts, teacher_logits, teacher_iou = teacher_prompts(
            rng, teacher, framed, config.val_prompts, config.uniform_fraction
        )
        student_logits, student_iou = predictor.predict_logits(sample.image, prompts)
        size = framed.original_size
        picks = torch.arange(len(prompts))
        ours = predictor.upscale(student_logits[picks, student_iou[:, :3].argmax(1)][:, None], size)[:, 0] > 0
        theirs = predictor.upscale(teacher_logits[picks, teacher_iou[:, :3].argmax(1)][:, None], size)[:, 0] > 0
        agreement += mask_ious(ours, theirs).tolist()
        if sample.gt:
            gt_student += evaluate(predictor_segmenter(predictor), [sample]).chosen_ious
            gt_teacher += evaluate(predictor_segmenter(teacher.predictor), [sample]).chosen_ious
    totals = shard.sum(
        [float(sum(agreement)), len(agreement), sum(gt_student), len(gt_student), sum(gt_teacher), len(gt_teacher)]
    )
    metrics = {"agreement": totals[0] / max(totals[1], 1)}
    if totals[3]:
        metrics.update(miou=totals[2] / totals[3], teacher_miou=totals[4] / totals[5])
    return metrics


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
    """Training loss and validation agreement / mIoU against step, as a PNG."""
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    trained = [h for h in history if "loss" in h]
    if trained:
        plot_loss(left, [h["step"] for h in trained], [h["loss"] for h in trained])
        left.legend()
    left.set(xlabel="step", ylabel="loss", title="training loss")
    for key, label in (("agreement", "agreement IoU with teacher"), ("miou", "mIoU vs ground truth")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            right.plot(*zip(*points, strict=True), "o-", label=label)
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
) -> DistillResult:
    """Train the adapters of a foveated `sam` and write the adapter file `out`.

    Beside it: OUT.ckpt (resumable checkpoint) and OUT_curves.png. Under torchrun every process calls
    this (inside `distributed`); only rank 0 writes. `stop_after` ends early at that step (the schedule
    still follows `config.steps`), for testing resume.
    """
    config.check(source)
    shard = Shard.current()
    out = Path(out)
    checkpoint, curves = out.with_suffix(".ckpt"), out.with_name(out.stem + "_curves.png")
    train_indices, val_indices = split(len(source), config)
    mine = train_indices[shard.rank :: shard.world]
    if not mine:
        raise UserError(f"{len(train_indices)} training images cannot feed {shard.world} processes")
    val_samples = [(source[i], i) for i in val_indices[shard.rank :: shard.world]]
    device = sam.device
    torch.manual_seed(config.seed)  # adapter initialisation, identical on every process
    predictor = FoveatedPredictor(sam, variant=config.variant, **config.model)
    model = predictor.model
    teacher = Teacher(sam)
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
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if start == 0:
        with autocast:
            history.append({"step": 0, **validate(predictor, teacher, val_samples, config, shard)})
    end = min(config.steps, stop_after if stop_after is not None else config.steps)
    bar = tqdm(range(start, end), initial=start, total=end, disable=not (progress and shard.main), desc="train")
    began = time.monotonic()
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(config.accumulate):
            position = step * config.accumulate + micro
            sample = source[shard_image(mine, position, config, shard.rank)]
            rng = np.random.default_rng([config.seed, TRAIN_STREAM, shard.rank, position])
            with autocast:
                loss = step_loss(predictor, teacher, sample, config, rng) / config.accumulate
            loss.backward()
            loss_sum += float(loss.detach())
        record = {
            "step": step + 1,
            "loss": _average_gradients(parameters, loss_sum, shard),
            "lr": scheduler.get_last_lr()[0],
        }
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done == end or (config.eval_every and done % config.eval_every == 0):
            with autocast:
                record.update(validate(predictor, teacher, val_samples, config, shard))
            tqdm.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k != "step"))
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
            model.save_adapters(out, config.variant, extra)
            plot_curves(history, curves)
    measured = [h for h in history if "agreement" in h]
    return DistillResult(history, before=measured[0], after=measured[-1])
