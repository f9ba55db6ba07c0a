"""Synthetic scenes: deterministic by seed, with instance masks that agree with what is drawn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stt_ros.evaluation.scenes import MIN_VISIBLE_PX, generate_scene, generate_sequence


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_scene_is_deterministic_and_well_formed(size: tuple[int, int]) -> None:
    width, height = size
    a, b = generate_scene(7, width, height), generate_scene(7, width, height)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    assert a.image.shape == (height, width, 3) and a.image.dtype == np.uint8
    assert a.instances.shape == (height, width) and a.instances.dtype == np.uint16
    assert not np.array_equal(a.image, generate_scene(8, width, height).image)


def test_instances_are_consecutive_visible_and_varied() -> None:
    counts, extents = [], []
    short = 480
    for seed in range(30):
        scene = generate_scene(seed)
        ids = np.unique(scene.instances)
        k = scene.num_instances
        # Ids are 1..K with no gaps (0 is background), one per pixel, so occlusion is already resolved.
        assert list(ids[ids > 0]) == list(range(1, k + 1))
        masks = scene.masks()
        assert len(masks) == k
        for mask in masks:
            assert mask.sum() >= MIN_VISIBLE_PX  # nearly hidden instances were dropped
            ys, xs = np.nonzero(mask)
            extents.append(max(np.ptp(ys), np.ptp(xs)) + 1)
        counts.append(k)
    assert min(counts) >= 1 and max(counts) <= 12 and len(set(counts)) >= 4
    assert min(extents) <= 40  # small objects ...
    assert max(extents) >= short / 2  # ... and objects spanning more than half the image


def test_sequence_moves_objects_smoothly() -> None:
    frames = generate_sequence(3, 4, 640, 480)
    first = generate_scene(3, 640, 480)
    assert len(frames) == 4
    assert np.array_equal(frames[0].image, first.image) and np.array_equal(frames[0].instances, first.instances)
    for previous, current in itertools.pairwise(frames):
        assert not np.array_equal(previous.instances, current.instances)
        changed = np.mean((previous.instances > 0) != (current.instances > 0))
        assert changed < 0.1  # a few pixels per frame, not a new scene
    again = generate_sequence(3, 4, 640, 480)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again, strict=True))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 64x64"):
        generate_scene(0, 32, 32)
    with pytest.raises(ValueError, match="n_frames"):
        generate_sequence(0, 0)
