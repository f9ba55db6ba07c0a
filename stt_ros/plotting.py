"""matplotlib without a display: CI machines and robots have none, and plots are only ever saved as PNG."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """`matplotlib.pyplot` on the Agg backend, imported on first use so importing stt_ros stays cheap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
