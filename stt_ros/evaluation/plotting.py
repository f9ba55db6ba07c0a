"""matplotlib without a display: CI machines and robots have none, and plots are only ever saved as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np


def pyplot() -> ModuleType:
    """`matplotlib.pyplot` on the Agg backend, imported on first use so importing stt_ros stays cheap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(axis, steps: Sequence[int], loss: Sequence[float], window: int = 25, label: str = "loss") -> None:
    """A noisy per-step loss, faint, under its running mean, which is what a run is judged by."""
    window = min(window, len(loss))
    axis.plot(steps, loss, alpha=0.3, label=label)
    axis.plot(
        steps[window - 1 :],
        np.convolve(loss, np.ones(window) / window, mode="valid"),
        label=f"{label} ({window}-step mean)",
    )
