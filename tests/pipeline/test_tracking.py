"""Tracks: re-prompted from the interior point, capped, ended by score, vanishing mask or the caller."""

from __future__ import annotations

import numpy as np
import pytest

from stt_ros.pipeline import tracking
from stt_ros.pipeline.tracking import Tracker

from .fakes import FakeResult


def result(mask, score=0.9):
    return FakeResult(np.asarray(mask, bool), score, (score, 0, 0), 0)


def square(u, v, r=3, shape=(40, 40)):
    mask = np.zeros(shape, bool)
    mask[v - r : v + r + 1, u - r : u + r + 1] = True
    return mask


def test_reprompted_from_the_interior_point_of_the_last_mask():
    tracker = Tracker(max_tracks=4, min_score=0.5, min_area=4)
    assert tracker.start("cup", result(square(10, 12)), stamp_ns=1) == []
    (prompt,) = tracker.prompts(stamp_ns=2)
    assert prompt.id == "cup" and prompt.points == [(10.0, 12.0)] and list(prompt.labels) == [1]
    assert tracker.update("cup", result(square(20, 22)), stamp_ns=2) is None
    assert tracker.prompts(stamp_ns=2) == []  # already done on this frame
    assert tracker.prompts(stamp_ns=3)[0].points == [(20.0, 22.0)]
    assert tracker.prompts(stamp_ns=3, exclude={"cup"}) == []
    assert tracker.tracks["cup"].updates == 1


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (result(square(5, 5), score=0.2), tracking.ENDED_LOW_SCORE),
        (result(np.zeros((40, 40))), tracking.ENDED_VANISHED),
    ],
)
def test_ended_by_score_or_vanishing(update, reason):
    tracker = Tracker(min_score=0.5, min_area=4)
    tracker.start("a", result(square(10, 10)), 1)
    assert tracker.update("a", update, 2) == reason
    assert len(tracker) == 0 and tracker.stats.ended == {reason: 1}
    assert tracker.update("a", update, 3) is None  # gone: nothing to update


def test_ended_by_the_caller():
    tracker = Tracker()
    tracker.start("a", result(square(10, 10)), 1)
    assert tracker.end("a") and not tracker.end("a")
    assert tracker.stats.ended == {tracking.ENDED_BY_CALLER: 1}


def test_cap_evicts_the_oldest():
    tracker = Tracker(max_tracks=2, min_area=1)
    tracker.start("a", result(square(5, 5)), 1)
    tracker.start("b", result(square(15, 15)), 1)
    assert tracker.start("c", result(square(25, 25)), 1) == [("a", tracking.ENDED_EVICTED)]
    assert list(tracker.tracks) == ["b", "c"]
    assert tracker.start("b", result(square(30, 30)), 2) == []  # restarting keeps the count
    assert list(tracker.tracks) == ["c", "b"]


def test_a_bad_first_result_does_not_start_a_track():
    tracker = Tracker(min_score=0.5)
    assert tracker.start("a", result(square(5, 5), score=0.1), 1) == [("a", tracking.ENDED_LOW_SCORE)]
    assert len(tracker) == 0 and tracker.stats.started == 0
    with pytest.raises(ValueError, match="max_tracks"):
        Tracker(max_tracks=0)
