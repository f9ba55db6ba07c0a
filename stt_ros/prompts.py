"""What a predictor takes and gives, without torch: prompts as users give them (pixels of the original image),
validated before any model work; results; and the choice among SAM's outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Prompt:
    """Points as (u, v) = (column, row) pixel indices, labels 1 = foreground / 0 = background, optional box.

    Empty `labels` means every point is foreground. The box is (x_min, y_min, x_max, y_max) in pixels.
    """

    points: Sequence[Point] = ()
    labels: Sequence[int] | None = None
    box: Box | None = None
    id: str = field(default="", compare=False)

    @property
    def shape_key(self) -> tuple[int, bool]:
        """Prompts with equal keys can share a batch: SAM's padding token depends on this shape."""
        return len(self.points), self.box is not None

    def point_array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64).reshape(-1, 2)

    def label_array(self) -> np.ndarray:
        if not self.labels:
            return np.ones(len(self.points), dtype=np.int64)
        return np.asarray(self.labels, dtype=np.int64)

    def box_array(self) -> np.ndarray | None:
        return None if self.box is None else np.asarray(self.box, dtype=np.float64).reshape(4)

    def validate(self, height: int, width: int) -> None:
        """Raise ValueError naming the problem if this prompt cannot be applied to an HxW image."""
        if not self.points and self.box is None:
            raise ValueError("prompt has neither points nor a box: give at least one point or a box")
        points = np.asarray(self.points, dtype=np.float64) if self.points else np.zeros((0, 2))
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"prompt points must be (u, v) pairs, got an array of shape {points.shape}")
        if not np.isfinite(points).all():
            raise ValueError(f"prompt points must be finite numbers, got {points.tolist()}")
        for u, v in points:
            if not (0 <= u < width and 0 <= v < height):
                raise ValueError(
                    f"prompt point (u={u:g}, v={v:g}) is outside the {width}x{height} image "
                    f"(u must be in [0, {width}), v in [0, {height}))"
                )
        if self.labels:
            if len(self.labels) != len(points):
                raise ValueError(f"prompt has {len(points)} points but {len(self.labels)} labels")
            bad = [label for label in self.labels if label not in (0, 1)]
            if bad:
                raise ValueError(f"prompt labels must be 1 (foreground) or 0 (background), got {bad}")
        if self.box is not None:
            _validate_box(self.box, height, width)


def _validate_box(box: Box, height: int, width: int) -> None:
    values = tuple(box)
    if len(values) != 4:
        raise ValueError(f"box must be (x_min, y_min, x_max, y_max), got {len(values)} values")
    if not all(math.isfinite(float(value)) for value in values):
        raise ValueError(f"box must hold finite numbers, got {values}")
    x0, y0, x1, y1 = (float(value) for value in values)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"box must have x_min < x_max and y_min < y_max, got {values}")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {values} does not overlap the {width}x{height} image")


def validate_prompts(prompts: Sequence[Prompt], height: int, width: int) -> None:
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, Prompt):
            raise ValueError(f"prompt {index} is a {type(prompt).__name__}, expected stt_ros.Prompt")
        try:
            prompt.validate(height, width)
        except ValueError as error:
            raise ValueError(f"prompt {index}: {error}") from None


MULTIMASK_POLICIES = ("auto", "best", "largest", "single", 0, 1, 2)
SINGLE_MASK_INDEX = 3


@dataclass(frozen=True)
class SegmentationResult:
    """One prompt's answer; `index` 0-2 is a multimask output, 3 the single-mask output."""

    mask: np.ndarray  # (H, W) bool at the original image size
    score: float  # predicted IoU of the chosen output
    scores: tuple[float, float, float]  # predicted IoU of the 3 multimask outputs
    index: int


def parse_multimask(policy: str | int) -> str | int:
    """Accept the policy names, 0-2, or their string forms (from a CLI or ROS parameter)."""
    if isinstance(policy, str) and policy.strip().isdigit():
        policy = int(policy)
    if policy not in MULTIMASK_POLICIES or isinstance(policy, bool):
        raise ValueError(f"multimask must be one of {', '.join(map(str, MULTIMASK_POLICIES))}, got {policy!r}")
    return policy


def choose_outputs(
    policy: str | int, prompts: Sequence[Prompt], iou: np.ndarray, areas: np.ndarray | None = None
) -> np.ndarray:
    """Which of the four outputs (0-2 multimask, 3 single-mask) each prompt returns.

    `iou`: (B, 4) predicted IoUs; `areas`: (B, 3) multimask areas, needed by "largest". "auto" is SAM's
    advice: the best of three for a single point, the single-mask output for anything more.
    """
    best = np.asarray(iou)[:, :3].argmax(axis=1)
    if policy == "auto":
        single_point = np.array([p.shape_key == (1, False) for p in prompts])
        return np.where(single_point, best, SINGLE_MASK_INDEX)
    if policy == "best":
        return best
    if policy == "largest":
        return np.asarray(areas).argmax(axis=1)
    return np.full(len(best), SINGLE_MASK_INDEX if policy == "single" else int(policy))
