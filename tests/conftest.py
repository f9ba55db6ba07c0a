"""Shared fixtures: small random-weight SAMs with randomised positions (SAM zero-initialises them)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny():
    """A SAM with G = 16 divisible by its window (4): windowed and global blocks."""
    from stt_ros.model.tiny import tiny_config, tiny_sam

    return tiny_sam(0, tiny_config(window_size=4))


@pytest.fixture(scope="session")
def tiny_padded():
    """A SAM whose G = 16 is not divisible by its window (5), so stock SAM pads edge windows."""
    from stt_ros.model.tiny import tiny_config, tiny_sam

    return tiny_sam(1, tiny_config(window_size=5))


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    """A textured 180x240 RGB image (not square, not a multiple of 16)."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
    base[40:120, 60:160] = (200, 30, 30)
    return base
