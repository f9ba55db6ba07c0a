"""Training the reference SAM on synthetic scenes with SAM's losses and prompt mix.

Each step encodes one scene once and decodes prompts for many of its instances (single points with the
3-mask output and min-loss, multi-point and box prompts with the single output), as SAM was trained, so
the expensive encoder pass is shared. Every random choice derives from (seed, step), which makes a run
deterministic and a resumed run continue bit-for-bit.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch.func import functional_call
from tqdm import tqdm

from stt_ros.evaluation.plotting import plot_loss, pyplot
from stt_ros.evaluation.scenes import MIN_SCENE_SIDE, generate_scene
from stt_ros.masks import boundary_distance
from stt_ros.model.reference import (
    REFERENCE_CONFIG,
    average_reference_weights,
    open_reference_weights,
    save_reference_weights,
)
from stt_ros.model.sam_config import SamConfig, build_sam
from stt_ros.model.widen import widen_factor, widen_sam

TRAIN_SIZES = ((640, 480), (1280, 720), (800, 600), (960, 540), (1024, 768), (480, 640))
MAX_SEED = 100_000  # training scene seeds are seed * 10**7 + scene index, below evaluation.HELDOUT_SEED_BASE
STEPS_PER_SEED = 10**7
RELPOS = ("rel_pos_h", "rel_pos_w")
CONTENT_SCALE = 0.3  # image embedding and point labels start this much smaller (see init_for_training)
ATTENTION_GAIN = 3.0  # decoder query/key projections start this much larger (see init_for_training)
PRETEXT_RADIUS = 48.0  # px in the 1024 frame: the single output's disk in pretrain_prompt_path
# Of each widened tensor's std: lets copied channels part. They part slowly (tiny model, 100 steps at lr 1e-3: the
# relative gap between copies stayed at 1e-3 from 1e-3 noise; from 1e-2, 0.013 in the encoder, 0.024 in the decoder).
# 1e-2 costs the shipped model 0.01 held-out mIoU at the start, 3e-2 0.17 (4 scenes).
WIDEN_NOISE = 1e-2
PRECISIONS = ("auto", "bf16", "fp32")
SMALL_OBJECT_PX = 4096  # 4 x 4 tokens of the 1024 frame: objects below it count more with small_object_weighting


@dataclass
class TrainConfig:
    """Everything that determines a run; stored in checkpoints so a resume uses the same settings."""

    steps: int = 5000
    seed: int = 0
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    focal: float = 0.0  # share of SAM's 20·focal term in the mask loss; the rest is cross-entropy (sam_loss)
    max_instances: int = 12
    min_instance_px: int = 64  # instances with fewer pixels in a crop (1024 frame) get no prompt
    small_object_weighting: float = 0.0  # loss weight (SMALL_OBJECT_PX / px) ** this for smaller objects
    iou_weight: float = 1.0  # weight of the IoU-prediction MSE beside the mask loss (SAM: 1)
    every_output_share: float = 0.0  # share of the mask loss averaged over all 3 outputs, not the best's (SAM: 0)
    interior_bias: float = 0.0  # single points drawn with weight (distance to the boundary) ** this (SAM: 0, uniform)
    sizes: tuple[tuple[int, int], ...] = TRAIN_SIZES  # camera (width, height) of the scenes, in turn step by step
    crop: int = 16  # crop side in tokens (a multiple of the attention window); 0: the whole frame
    crops: int = 8  # crops per step, encoded as one batch
    crops_per_scene: int = 4  # crops cut from each scene (scenes cost about as much as the model step)
    prompt_pretext: int = 300  # steps of pretrain_prompt_path before the first scene
    instance_contrast: float = 1.0  # weight of the encoder's dense pretext term (instance_contrast_loss)
    ema: float = 0.0  # decay of the weight average that is evaluated and written (WeightAverage); 0: the raw weights
    precision: str = "auto"  # of the forward pass: "bf16" autocast, "fp32", or "auto" (bf16 on CUDA, fp32 on CPU)
    checkpoint_every: int = 100
    eval_every: int = 500
    eval_scenes: int = 8
    init: str = ""  # reference weights to continue from (skips the initialisation and the pretext)
    sam: dict = field(default_factory=REFERENCE_CONFIG.to_dict)

    def __post_init__(self) -> None:
        window = self.sam.get("window_size", 0)
        if self.crop < 0 or (window and self.crop % window):
            raise ValueError(
                f"crop must be 0 (whole frames) or a multiple of the attention window {window}, got {self.crop}"
            )
        if self.small_object_weighting < 0:
            raise ValueError(f"small_object_weighting must be at least 0, got {self.small_object_weighting}")
        if self.iou_weight < 0:
            raise ValueError(f"iou_weight must be at least 0, got {self.iou_weight}")
        if not 0 <= self.every_output_share <= 1:
            raise ValueError(f"every_output_share must be in [0, 1], got {self.every_output_share}")
        if self.interior_bias < 0:
            raise ValueError(f"interior_bias must be at least 0, got {self.interior_bias}")
        self.sizes = tuple((int(width), int(height)) for width, height in self.sizes)
        if not self.sizes or min(min(size) for size in self.sizes) < MIN_SCENE_SIDE:
            raise ValueError(
                f"sizes must name at least one scene (width, height), each side at least {MIN_SCENE_SIDE}, "
                f"got {self.sizes}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be a decay in [0, 1), got {self.ema}")
        if self.crops < 1 or self.crops_per_scene < 1:
            raise ValueError(
                f"crops and crops_per_scene must be at least 1, got {self.crops} and {self.crops_per_scene}"
            )


@dataclass
class Crop:
    """One training view: where it sits in SAM's 1024 frame and the prompt groups decoded against it."""

    top: int  # token row of its top-left corner in the 64 x 64 grid
    left: int  # token column
    groups: list[dict]  # each: points/labels or boxes (1024-frame pixels), targets (Nx1xMxM soft), weights, multimask
    token_ids: torch.Tensor  # size x size instance id under each token (0 background, -1 mixed: ignored)


@dataclass
class Batch:
    """`len(crops)` views of `size` x `size` tokens (`crops_per_scene` from each scene), encoded as one batch."""

    images: torch.Tensor  # Bx3xPxP normalised pixels, P = size * patch
    size: int  # tokens per side
    crops: list[Crop]


def _resize_longest(array: np.ndarray, target: int, interpolation: int) -> np.ndarray:
    """SAM's frame size (`ResizeLongestSide`), with an interpolation that suits instance ids too."""
    height, width = ResizeLongestSide.get_preprocess_shape(*array.shape[:2], target)
    return cv2.resize(array, (width, height), interpolation=interpolation)


def _sample_point(
    rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray | None = None
) -> list[float]:
    """A pixel centre among (ys, xs): uniform, or with probability proportional to `weights`."""
    i = int(rng.integers(len(ys))) if weights is None else int(rng.choice(len(ys), p=weights / weights.sum()))
    return [float(xs[i]) + 0.5, float(ys[i]) + 0.5]


def interior_weights(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray, bias: float) -> np.ndarray | None:
    """Weights (distance to the mask's boundary) ** bias for its pixels (ys, xs); None (uniform) for bias 0.

    People click well inside an object, and so do the prompts a robot sends (a detection's centre, a grasp
    point); SAM trains single points uniformly over the mask, so most of them sit near its edge. The edge of
    the view (frame or crop) counts as boundary, as in `masks.interior_point`.
    """
    if bias == 0:
        return None
    y0, x0 = ys.min(), xs.min()
    distance = boundary_distance(mask[y0 : ys.max() + 1, x0 : xs.max() + 1])  # the box is enough, and cheaper
    return distance[ys - y0, xs - x0].astype(np.float64) ** bias


def _crop_origin(rng: np.random.Generator, ids: np.ndarray, size: int, patch: int, align: int) -> tuple[int, int]:
    """A window-aligned crop (token units) around a random instance pixel, inside the 1024 frame.

    Aligning to the encoder's attention windows makes every windowed block see exactly the windows it
    sees on the whole frame.
    """
    grid = ids.shape[0] // patch
    ys, xs = np.nonzero(ids)
    if len(ys) == 0:
        return 0, 0
    i = int(rng.integers(len(ys)))
    origin = []
    for centre in (ys[i] // patch, xs[i] // patch):
        lowest = max(0, centre - size + 1)
        highest = min(grid - size, centre)
        start = int(rng.integers(-(-lowest // align), highest // align + 1)) * align
        origin.append(start)
    return origin[0], origin[1]


def size_weight(pixels: int, exponent: float) -> float:
    """Loss weight of an object's prompts: (SMALL_OBJECT_PX / pixels) ** exponent below SMALL_OBJECT_PX, else 1.

    Objects one or two tokens wide are a third of the scenes' objects and the reference model's weakest
    size; weighting their prompts up is oversampling them without decoding more prompts.
    """
    return max(1.0, SMALL_OBJECT_PX / pixels) ** exponent


def _prompt_groups(rng: np.random.Generator, ids: np.ndarray, offset: tuple[int, int], config: TrainConfig) -> list:
    """SAM's prompt mix for the instances visible in `ids` (a crop of the frame's instance map).

    Single points get the 3-mask output (loss at the best), 2–4 points (half the time one negative) and
    jittered boxes the single output. Coordinates are in 1024-frame pixels, so prompts keep their place in
    the frame's positional encoding. Each prompt carries its object's `size_weight`; single points lean
    inward with `config.interior_bias` (`interior_weights`).
    """
    low = ids.shape[0] // 4  # SAM's low-resolution mask grid
    counts = np.bincount(ids.ravel())
    present = [int(k) for k in np.nonzero(counts)[0] if k and counts[k] >= config.min_instance_px]
    rng.shuffle(present)
    present = present[: config.max_instances]
    dy, dx = offset
    kinds: dict[str, list] = {"point": [], "points": [], "box": []}
    n_multi = int(rng.integers(2, 5))
    for k in present:
        mask = ids == k
        ys, xs = np.nonzero(mask)
        target = cv2.resize(mask.astype(np.float32), (low, low), interpolation=cv2.INTER_AREA)
        weight = size_weight(int(counts[k]), config.small_object_weighting)
        inward = interior_weights(mask, ys, xs, config.interior_bias)
        kinds["point"].append(([_sample_point(rng, ys + dy, xs + dx, inward)], [1], target, weight))
        if rng.random() < 0.5:
            points = [_sample_point(rng, ys + dy, xs + dx) for _ in range(n_multi)]
            labels = [1] * n_multi
            outside = np.nonzero(~mask)
            if rng.random() < 0.5 and len(outside[0]):
                points[-1], labels[-1] = _sample_point(rng, outside[0] + dy, outside[1] + dx), 0
            kinds["points"].append((points, labels, target, weight))
        else:
            x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            jitter = rng.normal(0, 0.1, 4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
            box = np.clip(np.array([x0, y0, x1, y1]) + np.clip(jitter, -20, 20), 0, ids.shape[0])
            kinds["box"].append(((box + np.array([dx, dy, dx, dy])).tolist(), None, target, weight))
    groups = []
    for kind, items in kinds.items():
        if not items:
            continue
        targets = torch.from_numpy(np.stack([item[2] for item in items]))[:, None]
        if kind == "box":
            group = {"boxes": torch.tensor([item[0] for item in items]), "points": None}
        else:
            labels = torch.tensor([item[1] for item in items])
            group = {"points": (torch.tensor([item[0] for item in items]), labels), "boxes": None}
        weights = torch.tensor([item[3] for item in items], dtype=torch.float32)
        group.update(targets=targets, weights=weights, multimask=kind == "point")
        groups.append(group)
    return groups


def _token_ids(ids: np.ndarray, patch: int, purity: float = 0.75) -> torch.Tensor:
    """The instance id each token covers, or -1 where no id fills `purity` of its patch."""
    size = ids.shape[0] // patch
    cells = ids.reshape(size, patch, size, patch).transpose(0, 2, 1, 3).reshape(size, size, -1).astype(np.int64)
    centre = cells[:, :, (patch // 2) * patch + patch // 2]
    pure = (cells == centre[..., None]).mean(-1) >= purity
    return torch.from_numpy(np.where(pure, centre, -1))


def make_batch(sam: Sam, config: TrainConfig, step: int) -> Batch:
    """Scenes, crops, prompts and targets for `step`, a pure function of (config.seed, step)."""
    rng = np.random.default_rng([config.seed, step, 1])
    encoder = sam.image_encoder
    patch = encoder.patch_embed.proj.kernel_size[0]
    grid = encoder.img_size // patch
    size = config.crop if 0 < config.crop < grid else grid
    align = max(1, encoder.blocks[0].window_size)
    frame, extent = encoder.img_size, size * patch
    mean, std = sam.pixel_mean.cpu(), sam.pixel_std.cpu()
    images, crops = [], []
    for first in range(0, config.crops, config.crops_per_scene):
        index = step * -(-config.crops // config.crops_per_scene) + first // config.crops_per_scene
        width, height = config.sizes[index % len(config.sizes)]
        scene = generate_scene(config.seed * STEPS_PER_SEED + index, width, height)
        image = torch.from_numpy(_resize_longest(scene.image, frame, cv2.INTER_LINEAR)).permute(2, 0, 1).float()
        image = (image - mean) / std  # SAM's preprocess; its zero padding is the crop's zero fill below
        ids = np.zeros((frame, frame), np.uint16)
        resized = _resize_longest(scene.instances, frame, cv2.INTER_NEAREST)
        ids[: resized.shape[0], : resized.shape[1]] = resized
        for _ in range(min(config.crops_per_scene, config.crops - first)):
            top, left = _crop_origin(rng, ids, size, patch, align)
            y0, x0 = top * patch, left * patch
            pixels = torch.zeros(3, extent, extent)
            inside = image[:, y0 : y0 + extent, x0 : x0 + extent]
            pixels[:, : inside.shape[1], : inside.shape[2]] = inside
            images.append(pixels)
            window = ids[y0 : y0 + extent, x0 : x0 + extent]
            groups = _prompt_groups(rng, window, (y0, x0), config)
            crops.append(Crop(top=top, left=left, groups=groups, token_ids=_token_ids(window, patch)))
    return Batch(images=torch.stack(images), size=size, crops=crops)


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


def mask_ious(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks over their last two dims (leading dims kept); two empty masks agree (1.0)."""
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_loss(logits: torch.Tensor, targets: torch.Tensor, focal_share: float = 1.0) -> torch.Tensor:
    """SAM's mask loss per mask (leading dims kept): 20·focal + dice, the focal term partly cross-entropy.

    With `focal_share` < 1 the focal term is partly replaced by plain binary cross-entropy. Focal loss
    (positives weighted 0.25, likely pixels discounted) keeps a weak model's masks too small or empty at
    SAM's threshold of 0 — from scratch, and in a student that cannot see all the teacher sees;
    cross-entropy puts the threshold where the odds are even.
    """
    loss = dice_loss(logits, targets)
    if focal_share > 0.0:
        loss = loss + focal_share * 20.0 * focal_loss(logits, targets)
    if focal_share < 1.0:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(-2).mean(-1)
        loss = loss + (1.0 - focal_share) * bce
    return loss


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    focal_share: float = 1.0,
    iou_weight: float = 1.0,
    weights: torch.Tensor | None = None,
    every_output_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's loss for N prompts x M outputs: `mask_loss` at the best output, + MSE of predicted IoU.

    `iou_weight` scales the MSE (SAM: 1); `weights` (N) make the mean over prompts a weighted one.
    `every_output_share` moves that share of the mask loss from the best output to the mean over all M: SAM
    trains only the best, so the others may drift to other guesses, which suits real images' part / whole
    ambiguity but leaves the predicted IoU a harder pick where each point has one right mask.
    Returns (total loss, IoU of the best output per prompt) — the latter for logging.
    """
    logits = logits.float()
    targets = targets.expand_as(logits)
    per_output = mask_loss(logits, targets, focal_share)  # N x M
    best = per_output.min(dim=1).values
    with torch.no_grad():
        actual_iou = mask_ious(logits > 0, targets > 0.5)
        best_iou = actual_iou.gather(1, per_output.argmin(dim=1, keepdim=True))[:, 0]
    iou_loss = F.mse_loss(iou_pred.float(), actual_iou, reduction="none").mean(dim=1)
    masks = (1.0 - every_output_share) * best + every_output_share * per_output.mean(dim=1)
    per_prompt = masks + iou_weight * iou_loss
    if weights is None:
        return per_prompt.mean(), best_iou
    weights = weights.to(per_prompt)
    return (per_prompt * weights).sum() / weights.sum(), best_iou


def grid_window(top: int, left: int, size: int) -> tuple[slice, ...]:
    """Index of a `size` x `size` token window in a (B, C, grid, grid) map such as SAM's dense PE."""
    return (slice(None), slice(None), slice(top, top + size), slice(left, left + size))


def encode_crops(encoder: ImageEncoderViT, images: torch.Tensor, origins: list[tuple[int, int]]) -> torch.Tensor:
    """SAM's image encoder on window-aligned crops of its frame, as if it saw them in place.

    Each crop gets its own slice of `pos_embed`; global blocks attend within the crop with their
    relative-position tables sliced to the crop's offsets (SAM would otherwise stretch the table). On the
    whole frame this is exactly `encoder(images)`; on a crop, windowed blocks see exactly their in-frame
    windows, and only global attention and the neck's 3x3 border differ from the whole-frame pass.
    """
    x = encoder.patch_embed(images)
    size = x.shape[1]
    x = x + torch.stack([encoder.pos_embed[0, top : top + size, left : left + size] for top, left in origins])
    for block in encoder.blocks:
        if block.window_size == 0 and block.attn.use_rel_pos:
            centre = block.attn.rel_pos_h.shape[0] // 2  # the table's offset 0
            tables = {f"attn.{name}": getattr(block.attn, name)[centre - size + 1 : centre + size] for name in RELPOS}
            x = functional_call(block, tables, (x,))
        else:
            x = block(x)
    return encoder.neck(x.permute(0, 3, 1, 2))


def instance_contrast_loss(embeddings: torch.Tensor, token_ids: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Each token's embedding is closest (cosine) to the mean embedding of its own instance.

    SAM's encoder starts from MAE pre-training; ours starts from nothing, and the mask loss reaches it only
    through the decoder, a few prompts per image. This dense pretext term supervises every token of every
    crop directly, so the embedding separates objects early and the decoder's dot-product mask head has
    something to select.
    """
    losses = []
    for embedding, ids in zip(embeddings, token_ids.to(embeddings.device), strict=True):
        keep = ids >= 0
        labels, index = torch.unique(ids[keep], return_inverse=True)
        if len(labels) < 2:
            continue
        features = F.normalize(embedding.flatten(1).T[keep.flatten()].float(), dim=1)
        prototypes = torch.zeros(len(labels), features.shape[1], device=features.device)
        prototypes = F.normalize(prototypes.index_add(0, index, features), dim=1)
        losses.append(F.cross_entropy(features @ prototypes.T / temperature, index))
    if not losses:
        return embeddings.sum() * 0.0
    return torch.stack(losses).mean()


def forward_loss(
    sam: Sam,
    batch: Batch,
    device: torch.device,
    focal_share: float = 1.0,
    instance_contrast_weight: float = 0.0,
    iou_weight: float = 1.0,
    every_output_share: float = 0.0,
) -> tuple[torch.Tensor, float]:
    """Encode every crop in one pass, decode its prompt groups against it; prompts weighted by object size."""
    origins = [(crop.top, crop.left) for crop in batch.crops]
    embeddings = encode_crops(sam.image_encoder, batch.images.to(device), origins)
    full_pe = sam.prompt_encoder.get_dense_pe()
    size = batch.size
    losses, ious, total_weight = [], [], 0.0
    for embedding, crop in zip(embeddings, batch.crops, strict=True):
        window = grid_window(crop.top, crop.left, size)
        for group in crop.groups:
            points = group["points"]
            if points is not None:
                points = (points[0].to(device), points[1].to(device))
            boxes = group["boxes"].to(device) if group["boxes"] is not None else None
            sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
            logits, iou_pred = sam.mask_decoder(
                image_embeddings=embedding[None],
                image_pe=full_pe[window],
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense[window],
                multimask_output=group["multimask"],
            )
            weights = group["weights"]
            targets = group["targets"].to(device)
            loss, best_iou = sam_loss(logits, iou_pred, targets, focal_share, iou_weight, weights, every_output_share)
            group_weight = float(weights.sum())
            losses.append(loss * group_weight)
            total_weight += group_weight
            ious.append(best_iou)
    contrast = instance_contrast_weight * instance_contrast_loss(
        embeddings, torch.stack([crop.token_ids for crop in batch.crops])
    )
    if not losses:  # no instance in any crop: only the pretext term has something to learn
        return contrast, float("nan")
    return torch.stack(losses).sum() / total_weight + contrast, float(torch.cat(ious).mean())


def init_for_training(sam: Sam) -> Sam:
    """Starting weights meant to help a from-scratch SAM find its prompt sooner.

    SAM's decoder is normally trained on a pretrained encoder; from scratch, the model learns to ignore its
    prompt. These initial values aim at the prompt path: each decoder attention's key projection tied to
    its (3x larger) query projection, so a point token first attends to pixels with a similar positional
    encoding; random Fourier frequencies up to 16x SAM's scale (a sharper similarity); image content and
    point labels scaled down next to those encodings; a small random `pos_embed` (zero in SAM); and
    colour-layout patch-embedding channels. Only initial values and the stored PE buffer change, not the
    architecture. The model card says what each part measurably did.
    """
    with torch.no_grad():
        frequencies = sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
        scales = torch.logspace(0.0, 1.2, frequencies.shape[1])
        frequencies.copy_(torch.randn(frequencies.shape) * scales)
        for module in sam.mask_decoder.transformer.modules():
            if hasattr(module, "q_proj") and hasattr(module, "k_proj"):
                module.q_proj.weight.mul_(ATTENTION_GAIN)
                module.k_proj.weight.copy_(module.q_proj.weight)
                module.q_proj.bias.zero_()
                module.k_proj.bias.zero_()
        sam.image_encoder.pos_embed.normal_(0.0, 0.02)
        # Position first: image content and point labels start small next to the Fourier positional
        # encodings, so decoder attention starts out matching positions rather than random content.
        sam.image_encoder.neck[-1].weight.fill_(CONTENT_SCALE)
        for embedding in sam.prompt_encoder.point_embeddings:
            embedding.weight.mul_(CONTENT_SCALE)
        # Half the patch-embedding channels start as the mean colour of each 4x4-pixel sub-block, the
        # resolution of SAM's low-res masks, so colour layout inside a patch is readable from step 0.
        proj = sam.image_encoder.patch_embed.proj
        patch = proj.kernel_size[0]
        sub = patch // 4
        channel = 0
        for colour in range(3):
            for row in range(4):
                for col in range(4):
                    if channel >= proj.out_channels // 2:
                        break
                    proj.weight[channel].zero_()
                    proj.weight[channel, colour, row * sub : (row + 1) * sub, col * sub : (col + 1) * sub] = 1 / sub**2
                    proj.bias[channel] = 0.0
                    channel += 1
    return sam


def pretrain_prompt_path(sam: Sam, steps: int, seed: int, lr: float = 2e-3, batch: int = 8) -> float:
    """Teach the prompt encoder and mask decoder to put a mask where the point is, before any scene.

    SAM's decoder starts next to a pretrained encoder; from scratch, it learns to ignore its prompt and
    predict whatever looks like an object (best-of-3 covers the few objects of a crop), and the prompt
    path never forms. Here every output learns a disk of random radius around a random point on random
    image features: geometry only, no scene. Returns the last batch's mean IoU (for the log).
    """
    generator = torch.Generator().manual_seed(seed)
    encoder, decoder, prompts = sam.image_encoder, sam.mask_decoder, sam.prompt_encoder
    grid = prompts.image_embedding_size[0]
    size = grid // 4 if grid >= 32 else grid  # the training crops' extent
    channels, pixels_per_token = decoder.transformer_dim, encoder.img_size // grid
    optimizer = torch.optim.AdamW([*decoder.parameters(), *prompts.parameters()], lr=lr)
    device = next(decoder.parameters()).device
    low = (torch.arange(size * 4, device=device) + 0.5) * pixels_per_token / 4  # low-res mask pixel centres
    dense_pe = prompts.get_dense_pe()  # a fixed function of the (untrained) Fourier frequencies
    iou = 0.0
    for _ in range(steps):
        top, left = (torch.randint(0, grid - size + 1, (2,), generator=generator)).tolist()
        origin = torch.tensor([left, top], dtype=torch.float32) * pixels_per_token
        points = (torch.rand(batch, 1, 2, generator=generator) * size * pixels_per_token + origin).to(device)
        # Token 0 (the single output) learns one disk size; tokens 1-3 (best of three, as SAM trains
        # them) learn disks of any size, so they can specialise by scale.
        radius = torch.exp(torch.empty(batch).uniform_(2.5, 5.5, generator=generator)).to(device)  # 12-245 px
        dy = low[None, :, None] + origin[1].item() - points[:, 0, 1, None, None]
        dx = low[None, None, :] + origin[0].item() - points[:, 0, 0, None, None]
        distance = (dx**2 + dy**2).sqrt()
        targets = (distance < radius[:, None, None]).float()[:, None]
        single = (distance < PRETEXT_RADIUS).float()[:, None]
        features = torch.randn(1, channels, size, size, generator=generator).to(device)
        window = grid_window(top, left, size)
        sparse, dense = prompts(points=(points, torch.ones(batch, 1, device=device)), boxes=None, masks=None)
        logits, iou_pred = decoder.predict_masks(features, dense_pe[window], sparse, dense[window])
        first, first_iou = sam_loss(logits[:, :1], iou_pred[:, :1], single, 0.0)
        rest, _ = sam_loss(logits[:, 1:], iou_pred[:, 1:], targets, 0.0)
        optimizer.zero_grad(set_to_none=True)
        (first + rest).backward()
        optimizer.step()
        iou = float(first_iou.mean())
    return iou


class WeightAverage:
    """An exponential moving average of a model's weights, the model that a run evaluates and writes.

    One whole frame per step makes the last step's weights noisy, and averaging them over the last few hundred
    steps is cheaper than a larger batch. Under the cosine schedule, which ends at 5 % of the peak, it measured
    within noise of the last step (MODEL_CARD.md, stage 9); it is for schedules that end at a high rate. The
    decay ramps up as (1 + n) / (10 + n) over the first updates, so the starting weights are soon forgotten.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for average, current in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
                if average.is_floating_point():
                    average.lerp_(current, 1 - decay)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.model.load_state_dict(state["model"])


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to 5% of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def plot_history(history: list[dict], path: Path) -> None:
    """Loss (and held-out mIoU when measured) against step, so a run can be judged at a glance."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    plot_loss(ax, [h["step"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel("loss: mask (cross-entropy|focal, dice) + IoU MSE + contrast")
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


def save_atomic(state: dict, path: Path) -> None:
    """`torch.save` through a temporary file, so an interrupted save never corrupts the last good one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def continued_sam(path: str | Path, config: SamConfig, seed: int) -> tuple[Sam, dict]:
    """The weights a run continues from (widened to `config` when that is a multiple of their width) and their meta."""
    sam, stored, meta = open_reference_weights(path)
    if stored != config:
        sam = widen_sam(sam, stored, widen_factor(stored, config), noise=WIDEN_NOISE, seed=seed)
    return sam, meta


def train_reference(
    config: TrainConfig,
    out: str | Path,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
    bar_position: int = 0,
) -> list[dict]:
    """Train (or resume) and write fp16 weights to `out` plus a loss-curve PNG beside them.

    `stop_after` ends the run early at that step (for tests of resume); the schedule still follows
    `config.steps`. `bar_position` stacks the progress bars of runs side by side. Returns the per-step history.
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
    if start:
        # The checkpoint holds the weights and the lineage: `init` may since have been overwritten
        # (continuing the shipped file in place writes `out` over it).
        sam = build_sam(sam_config).to(dev).train()
        init_meta = state.get("init", {})
    elif config.init:
        sam, init_meta = continued_sam(config.init, sam_config, config.seed)
        sam = sam.to(dev).train()
    else:
        sam = init_for_training(build_sam(sam_config)).to(dev).train()
        init_meta = {}
        if config.prompt_pretext:
            iou = pretrain_prompt_path(sam, config.prompt_pretext, config.seed)
            if progress:
                tqdm.write(f"prompt-path pretext: {config.prompt_pretext} steps, disk IoU {iou:.2f}")
    if progress:
        parameters = sum(parameter.numel() for parameter in sam.parameters())
        tqdm.write(
            f"reference SAM: width {sam_config.encoder_embed_dim}, depth {sam_config.encoder_depth}, "
            f"{parameters / 1e6:.2f} M parameters"
        )
    optimizer = torch.optim.AdamW(sam.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    average = WeightAverage(sam, config.ema) if config.ema else None
    if start:
        sam.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if average:
            average.load_state_dict(state["average"])
    written = average.model if average else sam  # what is evaluated and saved to `out`
    use_amp = config.precision == "bf16" or (config.precision == "auto" and dev.type == "cuda")
    end = min(config.steps, stop_after if stop_after is not None else config.steps)
    bar = tqdm(
        range(start, end),
        initial=start,
        total=end,
        disable=not progress,
        desc=f"train-reference seed {config.seed}",
        position=bar_position,
    )
    began = time.monotonic()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        batch = make_batch(sam, config, step)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            loss, best_iou = forward_loss(
                sam, batch, dev, config.focal, config.instance_contrast, config.iou_weight, config.every_output_share
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        optimizer.step()
        if average:
            average.update(sam)
        record = {
            "step": step + 1,
            "loss": float(loss.detach()),
            "train_iou": best_iou,
            "lr": learning_rate(config, step),
        }
        done = step + 1
        if config.eval_every and (done % config.eval_every == 0 or done == config.steps):
            from stt_ros.evaluation.heldout import evaluate_sam, heldout_scenes

            written.eval()
            record["heldout_miou"] = evaluate_sam(written, heldout_scenes(config.eval_scenes)).miou
            sam.train()
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", iou=f"{best_iou:.2f}", s=f"{time.monotonic() - began:.0f}")
        if "heldout_miou" in record:
            tqdm.write(f"step {done}: held-out single-point mIoU {record['heldout_miou']:.3f}")
        if done % config.checkpoint_every == 0 or done == end:
            save_atomic(
                {
                    "step": done,
                    "config": asdict(config),
                    "model": sam.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    "init": init_meta,
                    **({"average": average.state_dict()} if average else {}),
                },
                checkpoint,
            )
            meta = {"steps": done, "seed": config.seed, "train_config": asdict(config), "init": init_meta}
            save_reference_weights(written, sam_config, out, meta)
            plot_history(history, out.with_name(out.stem + "_loss.png"))
    sam.eval()
    return history


def side_by_side_paths(out: str | Path, seeds: list[int]) -> list[Path]:
    """Where each of several runs writes its own weights: beside `out`, named by seed."""
    out = Path(out)
    return [out.with_name(f"{out.stem}_seed{seed}{out.suffix}") for seed in seeds]


def _train_in_process(config: TrainConfig, out: Path, resume: bool, device: str, threads: int, position: int) -> list:
    torch.set_num_threads(threads)
    return train_reference(config, out, resume=resume, device=device, bar_position=position)


def train_side_by_side(
    config: TrainConfig,
    out: str | Path,
    runs: int,
    resume: bool = False,
    device: str = "cpu",
    threads: int = 1,
) -> dict[Path, list[dict]]:
    """`runs` runs from `config.init` at once, seeds `config.seed`, +1, ..., then their average at `out`.

    Runs continued from one file with new scenes stay in its basin, and their average beat each of them
    (MODEL_CARD.md, stage 9); runs from scratch start apart and do not average, so `init` is required. Each run
    is a process of `threads` threads with its own weights and checkpoint (`side_by_side_paths`), so `resume`
    continues every one of them. Returns each run's weights file and its history, in seed order.
    """
    if runs < 2:
        raise ValueError(f"side-by-side training needs at least two runs, got {runs}")
    if not config.init:
        raise ValueError(
            "runs side by side are averaged, which only works for runs continued from one weights file: give --init"
        )
    configs = [replace(config, seed=config.seed + index) for index in range(runs)]
    paths = side_by_side_paths(out, [run.seed for run in configs])
    with ProcessPoolExecutor(runs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_train_in_process, run, path, resume, device, threads, index)
            for index, (run, path) in enumerate(zip(configs, paths, strict=True))
        ]
        histories = {path: future.result() for path, future in zip(paths, futures, strict=True)}
    average_reference_weights(paths, out)
    return histories
