"""Detection2DArray → prompts, for vision_msgs 4.x (Humble/Jazzy) and 3.x layouts."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from stt_ros.pipeline.detections import detection_id, detection_prompts


def detection(u, v, w, h, id_="", hypotheses=(), legacy=False):
    centre = NS(x=u, y=v, theta=0.0) if legacy else NS(position=NS(x=u, y=v), theta=0.0)
    results = [NS(hypothesis=NS(class_id=c, score=s), pose=None) for c, s in hypotheses]
    return NS(header=None, results=results, bbox=NS(center=centre, size_x=w, size_y=h), id=id_)


ARRAY = NS(
    header=None,
    detections=[
        detection(50, 40, 20, 10, id_="track7"),
        detection(10, 10, 4, 6, hypotheses=[("cup", 0.4), ("mug", 0.8)]),
        detection(5, 5, 0, 3),  # empty box: skipped
        detection(30, 30, 10, 10, legacy=True),
    ],
)


def test_point_mode():
    prompts = detection_prompts(ARRAY, "point")
    assert [p.id for p in prompts] == ["track7", "mug_1", "det3"]
    assert prompts[0].points == [(50.0, 40.0)] and prompts[0].box is None and list(prompts[0].labels) == [1]
    assert prompts[2].points == [(30.0, 30.0)]


def test_box_and_both_modes():
    (box, *_) = detection_prompts(ARRAY, "box", prefix="det/")
    assert box.id == "det/track7" and box.points == [] and box.box == (40.0, 35.0, 60.0, 45.0)
    both = detection_prompts(ARRAY, "point_and_box")[1]
    assert both.points == [(10.0, 10.0)] and both.box == (8.0, 7.0, 12.0, 13.0)


def test_bad_mode_and_ids():
    with pytest.raises(ValueError, match="point_and_box"):
        detection_prompts(ARRAY, "centre")
    assert detection_id(NS(results=[NS(hypothesis=NS(class_id="", score=1.0))]), 4) == "det4"
