"""A stand-in predictor with the FoveatedPredictor interface, for ROS-free logic tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FakeResult:
    mask: np.ndarray
    score: float
    scores: tuple[float, float, float]
    index: int


class FakePredictor:
    """Masks a square of `radius` px around each prompt's first point (or its box); records calls."""

    def __init__(self, radius: int = 3, score: float = 0.9) -> None:
        self.radius = radius
        self.score = score
        self.calls: list[list] = []

    def predict(self, image, prompts, multimask="auto"):
        self.calls.append(list(prompts))
        height, width = image.shape[:2]
        results = []
        for prompt in prompts:
            mask = np.zeros((height, width), dtype=bool)
            if prompt.points:
                u, v = prompt.points[0]
                r = self.radius
                mask[max(0, round(v) - r) : round(v) + r + 1, max(0, round(u) - r) : round(u) + r + 1] = True
            elif prompt.box is not None:
                x0, y0, x1, y1 = (round(c) for c in prompt.box)
                mask[y0:y1, x0:x1] = True
            results.append(FakeResult(mask, self.score, (self.score, 0.1, 0.2), 0))
        return results
