"""The distillation teacher: the frozen SAM on the full frame, its outputs per image cached on disk.

Encoding the full frame is what makes a distillation step expensive (the reference model: 2.6 s on one CPU
thread, against about 1 s for the student's whole step), and it never changes for an image. So the teacher
encodes each image once: a shard `<image hash>.pt` holds its image embedding (the neck output, C × G × G,
float16) and its confident masks for fixed probe points (SAM's low-res canvas, bit-packed), from which
prompts and fovea positions are drawn fresh every step. The directory's manifest records a hash of the
SAM weights, and a cache made with other weights is refused rather than silently reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from stt_ros.errors import UserError
from stt_ros.frame import FramedImage
from stt_ros.predictor import ReferencePredictor
from stt_ros.prompts import Prompt

CACHE_FORMAT = "stt_ros.teacher_cache"
CACHE_VERSION = 1
MANIFEST = "cache.json"
CANVAS_CELL = 4  # frame px per cell of SAM's low-res logit canvas
PROBES = 32  # uniform points per image (fixed by its hash) whose teacher masks are the candidates for prompts
CONFIDENT_IOU = 0.5  # teacher masks it predicts below this IoU are not prompted inside


def weights_hash(sam: Sam) -> str:
    """SHA-256 of every tensor of `sam` (names, dtypes, shapes, values): which weights a cache belongs to."""
    digest = hashlib.sha256()
    for name, tensor in sorted(sam.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def image_hash(framed: FramedImage) -> str:
    """SHA-256 of the image as the teacher sees it (resized into the SAM frame), which is what it encodes."""
    resized = framed.resized.cpu().numpy()
    return hashlib.sha256(str(resized.shape).encode() + resized.tobytes()).hexdigest()


def default_cache_dir(variant: str, weights: str) -> Path:
    """$XDG_CACHE_HOME/stt_ros/teacher/VARIANT-HASH: one directory per set of weights, shared by all runs."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stt_ros" / "teacher" / f"{variant}-{weights[:16]}"


def canvas_region(framed: FramedImage) -> tuple[int, int]:
    """Rows and columns of the low-res canvas that hold the image (the rest is SAM's padding)."""
    height, width = framed.input_size
    return math.ceil(height / CANVAS_CELL), math.ceil(width / CANVAS_CELL)


@dataclass(frozen=True)
class TeacherView:
    """One image's cached teacher outputs: embedding (C, G, G) float16; confident masks (M, rows, cols) and
    their predicted IoUs on the image's part of the canvas."""

    embedding: torch.Tensor
    masks: torch.Tensor
    scores: torch.Tensor


class TeacherCache:
    """A directory of per-image `TeacherView` shards made with one set of SAM weights."""

    def __init__(self, root: str | Path, sam: Sam, variant: str) -> None:
        self.root = Path(root)
        self.weights = weights_hash(sam)
        manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "variant": variant, "weights": self.weights}
        path = self.root / MANIFEST
        if path.is_file():
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise UserError(f"teacher cache {self.root}: cannot read {MANIFEST} ({error}); delete it") from None
            if found.get("format") != CACHE_FORMAT or found.get("version") != CACHE_VERSION:
                raise UserError(f"{self.root} is not a teacher cache of this version; pick another --teacher-cache")
            if found.get("weights") != self.weights:
                raise UserError(
                    f"teacher cache {self.root} holds embeddings of other SAM weights ({found.get('variant')}, "
                    f"{str(found.get('weights'))[:16]}), not of this run's {variant} ({self.weights[:16]}): "
                    "pass another --teacher-cache folder, or delete this one to rebuild it"
                )
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, device: torch.device) -> TeacherView | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise UserError(f"teacher cache shard {path} is unreadable ({error}); delete it to recompute it") from None
        rows, cols = blob["canvas"]
        bits = np.unpackbits(blob["masks"].numpy(), axis=1, count=rows * cols)
        masks = torch.from_numpy(bits.astype(bool)).reshape(-1, rows, cols)
        return TeacherView(blob["embedding"].to(device), masks.to(device), blob["scores"].to(device))

    def store(self, key: str, view: TeacherView) -> None:
        rows, cols = view.masks.shape[1:]
        packed = np.packbits(view.masks.flatten(1).cpu().numpy(), axis=1)
        blob = {
            "embedding": view.embedding.to("cpu", torch.float16),
            "masks": torch.from_numpy(packed),
            "scores": view.scores.float().cpu(),
            "canvas": (rows, cols),
        }
        temporary = self.path(key).with_suffix(f".tmp{os.getpid()}")
        torch.save(blob, temporary)
        temporary.replace(self.path(key))  # atomic: processes sharing the cache never read half a shard


class Teacher(ReferencePredictor):
    """Stock SAM on the full frame whose per-image work (`_prepare`) goes through a `TeacherCache`.

    After `encode`, `view` holds the image's cached outputs and `decode` answers prompts against the cached
    embedding, so a training step runs only the teacher's small mask decoder.
    """

    def __init__(self, sam: Sam, cache: TeacherCache) -> None:
        super().__init__(sam)
        self.cache = cache
        self.view: TeacherView | None = None

    @torch.no_grad()
    def encode(self, framed: FramedImage) -> TeacherView:
        self._prepare(framed)
        return self.view

    def _prepare(self, framed: FramedImage) -> None:
        key = image_hash(framed)
        view = self.cache.load(key, self.device)
        if view is None:
            super()._prepare(framed)
            # the cache keeps float16: compute the probe masks from what later steps will read back
            self._features = self._features.to(torch.float16).float()
            self.cache.store(key, self._probe(framed, key))
            view = self.cache.load(key, self.device)
        self.view = view
        self._features = view.embedding[None].float()

    def _probe(self, framed: FramedImage, key: str) -> TeacherView:
        """The confident non-empty masks of all three outputs for `PROBES` uniform points (seeded by the image)."""
        rng = np.random.default_rng(int(key[:16], 16))
        logits, iou = self.decode(framed, uniform_points(rng, PROBES, framed.original_size))
        rows, cols = canvas_region(framed)
        masks = logits[:, :3, :rows, :cols].flatten(0, 1) > 0
        scores = iou[:, :3].flatten()
        keep = (scores >= CONFIDENT_IOU) & masks.flatten(1).any(1)
        return TeacherView(self._features[0], masks[keep], scores[keep])

    @torch.no_grad()
    def decode(self, framed: FramedImage, prompts: list[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (P, 4, 4G, 4G) and IoU predictions (P, 4) as floats, in STT output order."""
        batch = self.frame.prompts(prompts, framed.original_size, self.device)
        logits, iou = self._logits(framed, batch)
        return logits.float(), iou.float()


def uniform_points(rng: np.random.Generator, count: int, size: tuple[int, int]) -> list[Prompt]:
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
    if count == 0 or float(weight.sum()) == 0:
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


def boundaries(masks: torch.Tensor) -> torch.Tensor:
    """The cells of each mask (M, rows, cols) with a 4- or 8-neighbour outside it; the view's edge is not one."""
    outside = F.max_pool2d((~masks).float()[:, None], 3, stride=1, padding=1)[:, 0] > 0
    return masks & outside


def draw_prompts(
    rng: np.random.Generator,
    view: TeacherView,
    framed: FramedImage,
    count: int,
    uniform_fraction: float,
    boundary_fraction: float = 0.0,
) -> list[Prompt]:
    """`count` single points: uniform over the image, inside the teacher's masks, and on their boundaries.

    Shares by `uniform_fraction` and `boundary_fraction`, the rest inside; where the teacher has no
    confident mask, uniform instead. Each point's fovea is where the student's tokens centre.
    """
    n_uniform = round(count * uniform_fraction)
    n_boundary = min(count - n_uniform, round(count * boundary_fraction))
    inside = inside_points(rng, view.masks, view.scores, count - n_uniform - n_boundary, framed)
    edges = inside_points(rng, boundaries(view.masks), view.scores, n_boundary, framed)
    prompts = uniform_points(rng, n_uniform, framed.original_size) + inside + edges
    return prompts + uniform_points(rng, count - len(prompts), framed.original_size)
