"""Mask helpers: the interior point works on the mask's box and agrees with the whole-frame definition."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stt_ros.masks import boundary_distance, interior_point


@settings(max_examples=200, deadline=None)
@given(
    size=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    seed=st.integers(0, 2**32 - 1),
    density=st.sampled_from([0.05, 0.3, 0.7, 1.0]),
)
def test_interior_point_is_the_whole_frame_argmax(size, seed, density):
    mask = np.random.default_rng(seed).random(size) < density
    expected = None
    if mask.any():  # farthest from the boundary (the frame edge included), first in row-major order on ties
        row, col = np.unravel_index(int(np.argmax(boundary_distance(mask))), mask.shape)
        expected = (float(col), float(row))
    assert interior_point(mask) == expected


def test_a_square_at_the_frame_edge_is_cut_by_it():
    mask = np.zeros((20, 30), dtype=bool)
    mask[0:9, 10:19] = True  # 9x9 square touching the top edge: the edge counts as boundary
    assert interior_point(mask) == (14.0, 4.0)
