"""Mask helpers shared by tracking, evaluation and training."""

from __future__ import annotations

import cv2
import numpy as np


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest pixel outside `mask` (0 outside it).

    The image border counts as boundary too: a mask cut by the view is treated as ending there.
    """
    padded = np.pad(np.asarray(mask, dtype=bool), 1).astype(np.uint8)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """The (u, v) pixel of `mask` farthest from its boundary (SAM's single-point protocol).

    Ties go to the first pixel in row-major order, so the result is deterministic. Returns None for an
    empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (HxW), got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    # The mask's box is enough: no pixel outside it is nearer than the box's edge, and row-major order (the
    # tie-break) is the same inside it. Tracking calls this for every track on every frame.
    y0, x0 = int(rows[0]), int(cols[0])
    distance = boundary_distance(mask[y0 : int(rows[-1]) + 1, x0 : int(cols[-1]) + 1])
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(col + x0), float(row + y0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree perfectly (1.0)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)
