"""Training the reference SAM on synthetic scenes with SAM's losses and prompt mix.

Each step encodes one scene once and decodes prompts for many of its instances (single points with the
3-mask output and min-loss, multi-point and box prompts with the single output), as SAM was trained, so
the expensive encoder pass is shared. Every random choice derives from (seed, step), which makes a run
deterministic and a resumed run continue bit-for-bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm import tqdm

from stt_ros.model.reference import REFERENCE_CONFIG, save_reference_weights
from stt_ros.model.sam_config import SamConfig, build_sam
from stt_ros.plotting import pyplot
from stt_ros.scenes import generate_scene

TRAIN_SIZES = ((640, 480), (1280, 720), (800, 600), (960, 540), (1024, 768), (480, 640))
MAX_SEED = 100_000  # training scene seeds are seed * 10**7 + step, below evaluation.HELDOUT_SEED_BASE
STEPS_PER_SEED = 10**7


@dataclass
class TrainConfig:
    """Everything that determines a run; stored in checkpoints so a resume uses the same settings."""

    steps: int = 1500
    seed: int = 0
    lr: float = 8e-4
    weight_decay: float = 0.05
    warmup: int = 100
    focal_warmup: int = 300  # steps over which the focal weight ramps from 0 to SAM's 20
    pool_steps: int = 0  # for this many first steps, scenes cycle through a small pool ...
    pool_size: int = 4  # ... of this many scenes (fresh prompts each time)
    max_instances: int = 8
    checkpoint_every: int = 50
    eval_every: int = 250
    eval_scenes: int = 8
    sam: dict = field(default_factory=REFERENCE_CONFIG.to_dict)


@dataclass
class Batch:
    """One scene prepared for SAM: the padded 1024 input and per-prompt-kind tensors."""

    image: torch.Tensor  # 1x3xSxS normalised, padded
    groups: list[dict]  # each: points/labels or boxes, targets (Nx1xMxM soft), multimask flag


def _resize_longest(array: np.ndarray, target: int, interpolation: int) -> np.ndarray:
    """SAM's frame size (`ResizeLongestSide`), with an interpolation that suits instance ids too."""
    height, width = ResizeLongestSide.get_preprocess_shape(*array.shape[:2], target)
    return cv2.resize(array, (width, height), interpolation=interpolation)


def _sample_point(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> list[float]:
    i = int(rng.integers(len(ys)))
    return [float(xs[i]) + 0.5, float(ys[i]) + 0.5]


def make_batch(sam: Sam, config: TrainConfig, step: int) -> Batch:
    """Scene, prompts and targets for `step`, a pure function of (config.seed, step)."""
    rng = np.random.default_rng([config.seed, step, 1])
    # A small pool of scenes first: the model learns to follow its prompt on a few scenes it sees
    # again and again (as when overfitting one scene) before the stream of new scenes.
    scene_index = step % config.pool_size if step < config.pool_steps else step
    width, height = TRAIN_SIZES[scene_index % len(TRAIN_SIZES)]
    scene = generate_scene(config.seed * STEPS_PER_SEED + scene_index, width, height)
    size = sam.image_encoder.img_size
    image = _resize_longest(scene.image, size, cv2.INTER_LINEAR)
    ids = _resize_longest(scene.instances, size, cv2.INTER_NEAREST)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    padded_ids = np.zeros((size, size), np.uint16)
    padded_ids[: ids.shape[0], : ids.shape[1]] = ids
    present = [k for k in range(1, scene.num_instances + 1) if (ids == k).any()]
    rng.shuffle(present)
    present = present[: config.max_instances]
    low = size // 4  # SAM's low-resolution mask grid
    kinds: dict[str, list] = {"point": [], "points": [], "box": []}
    n_multi = int(rng.integers(2, 5))
    for k in present:
        mask = padded_ids == k
        ys, xs = np.nonzero(mask)
        target = cv2.resize(mask.astype(np.float32), (low, low), interpolation=cv2.INTER_AREA)
        kind = ("point", "points", "box")[int(rng.choice(3, p=(0.5, 0.25, 0.25)))]
        if kind == "point":
            kinds[kind].append(([_sample_point(rng, ys, xs)], [1], target))
        elif kind == "points":
            points = [_sample_point(rng, ys, xs) for _ in range(n_multi)]
            labels = [1] * n_multi
            outside = np.nonzero(~mask[: ids.shape[0], : ids.shape[1]])
            if rng.random() < 0.5 and len(outside[0]):
                points[-1], labels[-1] = _sample_point(rng, *outside), 0
            kinds[kind].append((points, labels, target))
        else:
            x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            jitter = rng.normal(0, 0.1, 4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
            box = np.clip(np.array([x0, y0, x1, y1]) + np.clip(jitter, -20, 20), 0, size)
            kinds[kind].append((box.tolist(), None, target))
    groups = []
    for kind, items in kinds.items():
        if not items:
            continue
        targets = torch.from_numpy(np.stack([item[2] for item in items]))[:, None]
        if kind == "box":
            group = {"boxes": torch.tensor([item[0] for item in items]), "points": None}
        else:
            group = {
                "points": (
                    torch.tensor([item[0] for item in items]),
                    torch.tensor([item[1] for item in items]),
                ),
                "boxes": None,
            }
        group.update(targets=targets, multimask=kind == "point")
        groups.append(group)
    return Batch(image=sam.preprocess(tensor), groups=groups)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """SAM's sigmoid focal loss, averaged over pixels; one value per mask (leading dims kept)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft dice loss per mask (leading dims kept)."""
    prob = logits.sigmoid().flatten(-2)
    targets = targets.flatten(-2)
    return 1 - (2 * (prob * targets).sum(-1) + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


def sam_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor, focal_weight: float = 20.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's loss for N prompts x M outputs: 20·focal + dice at the best output, + MSE of predicted IoU.

    Returns (total loss, IoU of the best output per prompt) — the latter for logging.
    """
    logits = logits.float()
    targets = targets.expand_as(logits)
    mask_loss = focal_weight * focal_loss(logits, targets) + dice_loss(logits, targets)  # N x M
    best = mask_loss.min(dim=1).values
    with torch.no_grad():
        pred = logits > 0
        gt = targets > 0.5
        inter = (pred & gt).flatten(-2).sum(-1).float()
        union = (pred | gt).flatten(-2).sum(-1).float()
        actual_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        best_iou = actual_iou.gather(1, mask_loss.argmin(dim=1, keepdim=True))[:, 0]
    iou_loss = F.mse_loss(iou_pred.float(), actual_iou, reduction="none").mean(dim=1)
    return (best + iou_loss).mean(), best_iou


def forward_loss(
    sam: Sam, batch: Batch, device: torch.device, focal_weight: float = 20.0
) -> tuple[torch.Tensor, float]:
    """Encode once, decode every prompt group against the shared embedding; mean loss over groups."""
    embedding = sam.image_encoder(batch.image.to(device))
    image_pe = sam.prompt_encoder.get_dense_pe()
    losses, ious = [], []
    for group in batch.groups:
        points = group["points"]
        if points is not None:
            points = (points[0].to(device), points[1].to(device))
        boxes = group["boxes"].to(device) if group["boxes"] is not None else None
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        logits, iou_pred = sam.mask_decoder(
            image_embeddings=embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=group["multimask"],
        )
        loss, best_iou = sam_loss(logits, iou_pred, group["targets"].to(device), focal_weight)
        losses.append(loss * len(best_iou))
        ious.append(best_iou)
    n = sum(len(i) for i in ious)
    return torch.stack(losses).sum() / n, float(torch.cat(ious).mean())


def init_for_training(sam: Sam) -> Sam:
    """Starting weights meant to help a from-scratch SAM find its prompt sooner.

    SAM's decoder is normally trained on a pretrained encoder; from scratch, the model predicts
    background everywhere and ignores its prompt for hundreds of steps. These initial values aim at the
    prompt path: each decoder attention's key projection tied to its query projection (a point token
    first attends to pixels with a similar positional encoding), random Fourier frequencies up to 16x
    SAM's scale (a sharper similarity), and a small random `pos_embed` (zero in SAM). Only initial values
    and the stored PE buffer change, not the architecture. On a one-image overfit they shorten the
    plateau slightly; see the model card for what they did in a full run.
    """
    with torch.no_grad():
        frequencies = sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
        scales = torch.logspace(0.0, 1.2, frequencies.shape[1])
        frequencies.copy_(torch.randn(frequencies.shape) * scales)
        for module in sam.mask_decoder.transformer.modules():
            if hasattr(module, "q_proj") and hasattr(module, "k_proj"):
                module.k_proj.weight.copy_(module.q_proj.weight)
                module.q_proj.bias.zero_()
                module.k_proj.bias.zero_()
        sam.image_encoder.pos_embed.normal_(0.0, 0.02)
    return sam


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to 5% of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def focal_weight(config: TrainConfig, step: int) -> float:
    """SAM's focal weight (20), ramped up from 0 over `focal_warmup` steps.

    From scratch, the pixel-averaged focal term first drives every logit negative; starting on dice alone
    keeps the masks from collapsing to background while the prompt path forms.
    """
    if step >= config.focal_warmup:
        return 20.0
    return 20.0 * step / config.focal_warmup


def plot_history(history: list[dict], path: Path) -> None:
    """Loss (and held-out mIoU when measured) against step, so a run can be judged at a glance."""
    plt = pyplot()

    steps = [h["step"] for h in history]
    loss = np.array([h["loss"] for h in history])
    window = min(25, len(loss))
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, alpha=0.3, label="loss")
    ax.plot(steps[window - 1 :], smooth, label=f"loss ({window}-step mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("20·focal + dice + IoU MSE")
    evals = [(h["step"], h["heldout_miou"]) for h in history if "heldout_miou" in h]
    if evals:
        twin = ax.twinx()
        twin.plot(*zip(*evals, strict=True), "o-", color="tab:green", label="held-out mIoU")
        twin.set_ylabel("held-out single-point mIoU")
        twin.set_ylim(0, 1)
        twin.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _save_checkpoint(
    path: Path, sam: Sam, optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, history: list
) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "step": step,
            "config": asdict(config),
            "model": sam.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last good checkpoint


def train_reference(
    config: TrainConfig,
    out: str | Path,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> list[dict]:
    """Train (or resume) and write fp16 weights to `out` plus a loss-curve PNG beside them.

    `stop_after` ends the run early at that step (for tests of resume); the schedule still follows
    `config.steps`. Returns the per-step history.
    """
    if not 0 <= config.seed < MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}), got {config.seed}")
    out = Path(out)
    checkpoint = Path(checkpoint) if checkpoint else out.with_suffix(".ckpt")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    start, history = 0, []
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        stored = TrainConfig(**state["config"])
        if asdict(stored) != asdict(config):
            raise ValueError(f"checkpoint {checkpoint} was made with different settings: {stored}")
        start, history = state["step"], state["history"]
    sam_config = SamConfig.from_dict(config.sam)
    torch.manual_seed(config.seed)
    sam = init_for_training(build_sam(sam_config)).to(dev).train()
    optimizer = torch.optim.AdamW(sam.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if start:
        sam.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    use_amp = dev.type == "cuda"
    end = min(config.steps, stop_after if stop_after is not None else config.steps)
    bar = tqdm(range(start, end), initial=start, total=end, disable=not progress, desc="train-reference")
    began = time.monotonic()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        batch = make_batch(sam, config, step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, best_iou = forward_loss(sam, batch, dev, focal_weight(config, step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        optimizer.step()
        record = {
            "step": step + 1,
            "loss": float(loss.detach()),
            "train_iou": best_iou,
            "lr": learning_rate(config, step),
        }
        done = step + 1
        if config.eval_every and (done % config.eval_every == 0 or done == config.steps):
            from stt_ros.evaluation import evaluate_sam, heldout_scenes

            sam.eval()
            record["heldout_miou"] = evaluate_sam(sam, heldout_scenes(config.eval_scenes)).miou
            sam.train()
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", iou=f"{best_iou:.2f}", s=f"{time.monotonic() - began:.0f}")
        if "heldout_miou" in record:
            tqdm.write(f"step {done}: held-out single-point mIoU {record['heldout_miou']:.3f}")
        if done % config.checkpoint_every == 0 or done == end:
            _save_checkpoint(checkpoint, sam, optimizer, config, done, history)
            meta = {"steps": done, "seed": config.seed, "train_config": asdict(config)}
            save_reference_weights(sam, sam_config, out, meta)
            plot_history(history, out.with_name(out.stem + "_loss.png"))
    sam.eval()
    return history
