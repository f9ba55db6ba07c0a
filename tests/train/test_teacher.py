"""The teacher cache: computed once per image, reused, and refused when made with other SAM weights."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from stt_ros.errors import UserError
from stt_ros.frame import SamFrame
from stt_ros.predictor import ReferencePredictor
from stt_ros.train.teacher import (
    MANIFEST,
    Teacher,
    TeacherCache,
    TeacherView,
    boundaries,
    canvas_region,
    draw_prompts,
    weights_hash,
)


@pytest.fixture()
def framed(image):
    return SamFrame(256).image(image, torch.device("cpu"))


def test_the_cache_encodes_each_image_once_and_reuses_it(tiny, framed, tmp_path, monkeypatch):
    first = Teacher(tiny, TeacherCache(tmp_path, tiny, "tiny")).encode(framed)
    stock = ReferencePredictor(tiny)
    stock._prepare(framed)
    assert torch.equal(first.embedding, stock._features[0].half())
    assert first.masks.shape[1:] == canvas_region(framed) and len(first.masks) == len(first.scores)
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def no_encoding(self, framed):
        raise AssertionError("the cached image was encoded again")

    monkeypatch.setattr(ReferencePredictor, "_prepare", no_encoding)
    again = Teacher(tiny, TeacherCache(tmp_path, tiny, "tiny"))
    view = again.encode(framed)
    assert torch.equal(view.embedding, first.embedding) and torch.equal(view.masks, first.masks)
    assert torch.equal(again._features, first.embedding[None].float())  # prompts decode against the cached one


def test_a_cache_made_with_other_weights_is_refused(tiny, tiny_padded, tmp_path):
    TeacherCache(tmp_path, tiny, "tiny")
    assert json.loads((tmp_path / MANIFEST).read_text())["weights"] == weights_hash(tiny)
    with pytest.raises(UserError, match=r"holds embeddings of other SAM weights .* pass another --teacher-cache"):
        TeacherCache(tmp_path, tiny_padded, "tiny")
    TeacherCache(tmp_path, copy.deepcopy(tiny), "tiny")  # the same weights in another object: accepted


def test_boundaries_are_the_mask_cells_next_to_the_outside():
    masks = torch.zeros(1, 6, 7, dtype=torch.bool)
    masks[0, 1:5, 2:7] = True  # touches the right edge of the view
    edge = boundaries(masks)[0]
    expected = masks[0].clone()
    expected[2:4, 3:7] = False  # interior: every neighbour inside the mask or beyond the view's edge
    assert torch.equal(edge, expected)


def test_prompts_are_drawn_uniform_then_inside_then_on_boundaries(framed):
    rows, cols = canvas_region(framed)
    masks = torch.zeros(1, rows, cols, dtype=torch.bool)
    masks[0, 10:20, 12:30] = True
    view = TeacherView(torch.zeros(1), masks, torch.ones(1))
    prompts = draw_prompts(np.random.default_rng(0), view, framed, 8, 0.25, 0.25)
    frame = SamFrame(256)
    cells = frame.prompts(prompts, framed.original_size, torch.device("cpu")).points[:, 0] // 4
    inside = [bool(masks[0, int(r), int(c)]) for c, r in cells.tolist()]
    edge = [bool(boundaries(masks)[0, int(r), int(c)]) for c, r in cells.tolist()]
    assert all(inside[2:]) and all(edge[6:])
    empty = TeacherView(torch.zeros(1), masks[:0], torch.ones(0))
    assert len(draw_prompts(np.random.default_rng(0), empty, framed, 5, 0.2, 0.4)) == 5  # uniform instead
