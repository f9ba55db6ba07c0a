"""Work queue (overflow, skipping), one batch per frame with tracks, stock-SAM crossover, latency."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stt_ros.pipeline.binding import Frame, Request
from stt_ros.pipeline.scheduler import FrameProcessor, Job, LatencyStats, Worker, WorkQueue
from stt_ros.pipeline.tracking import ENDED_BY_CALLER, ENDED_LOW_SCORE, Tracker
from stt_ros.prompts import Prompt

from .fakes import FakePredictor

IMAGE = np.zeros((40, 60, 3), dtype=np.uint8)


def frame(stamp: int) -> Frame:
    return Frame(stamp, header=None, image=IMAGE, received=time.monotonic())


def req(pid: str, u: float = 10.0, v: float = 10.0, track: bool = False) -> Request:
    return Request(pid, Prompt(points=[(u, v)], labels=[1], id=pid), track=track)


def processor(predictor=None, **kwargs) -> FrameProcessor:
    return FrameProcessor(
        predictor or FakePredictor(), Tracker(min_area=1), decode=lambda image: image, **kwargs
    )


def test_explicit_frames_are_never_skipped_overflow_drops_the_oldest():
    queue = WorkQueue(max_jobs=2)
    frames = [frame(i) for i in range(4)]
    assert queue.submit(frames[0], [req("a")]) == []
    queue.submit(frames[0], [req("b")])  # same frame: merged, no new job
    queue.submit(frames[1], [req("c")])
    dropped = queue.submit(frames[2], [req("d")])
    assert [j.frame.stamp_ns for j in dropped] == [0]
    assert queue.stats.dropped_jobs == 1 and queue.stats.dropped_requests == 2
    assert [r.prompt_id for r in queue.take(0).requests] == ["c"]
    assert [r.prompt_id for r in queue.take(0).requests] == ["d"]
    assert queue.take(0) is None


def test_tracking_frames_latest_wins_and_skips_are_counted():
    queue = WorkQueue()
    for i in range(3):
        queue.submit_tracking(frame(i))
    assert queue.stats.skipped_tracking_frames == 2 and queue.depth == 1
    job = queue.take(0)
    assert job.frame.stamp_ns == 2 and job.requests == []
    # An explicit job on a newer frame also advances tracks: the waiting tracking frame is skipped.
    queue.submit_tracking(frame(5))
    queue.submit(frame(6), [req("a")])
    assert queue.take(0).frame.stamp_ns == 6 and queue.take(0) is None
    assert queue.stats.skipped_tracking_frames == 3
    # ...but an explicit job on an older frame leaves it waiting.
    queue.submit_tracking(frame(9))
    queue.submit(frame(8), [req("b")])
    assert [queue.take(0).frame.stamp_ns for _ in range(2)] == [8, 9]


def test_one_batch_per_frame_with_explicit_and_tracked_prompts():
    predictor = FakePredictor()
    proc = processor(predictor)
    out = proc.process(Job(frame(1), [req("a", 10, 10, track=True), req("b", 30, 20)]))
    assert [(i.prompt_id, i.tracked) for i in out.items] == [("a", False), ("b", False)]
    assert len(predictor.calls) == 1 and len(proc.tracker) == 1
    out = proc.process(Job(frame(2), [req("c", 50, 30)]))
    assert [(i.prompt_id, i.tracked) for i in out.items] == [("c", False), ("a", True)]
    assert len(predictor.calls) == 2 and len(predictor.calls[1]) == 2
    assert predictor.calls[1][1].points == [(10.0, 10.0)]  # interior point of a's last mask
    assert out.latency_ms >= 0 and proc.latency.summary()["count"] == 2


def test_tracking_only_frame_without_tracks_runs_nothing():
    predictor = FakePredictor()
    out = processor(predictor).process(Job(frame(1)))
    assert out.items == [] and predictor.calls == []


def test_invalid_prompts_are_rejected_not_fatal_and_ends_are_applied():
    proc = processor()
    proc.process(Job(frame(1), [req("a", track=True)]))
    out = proc.process(Job(frame(2), [req("far", 500, 5), Request("a", None, track=False)]))
    assert out.items == [] and len(out.rejected) == 1 and out.rejected[0].startswith("far: ")
    assert "outside the 60x40 image" in out.rejected[0]
    assert out.ended == [("a", ENDED_BY_CALLER)] and len(proc.tracker) == 0


def test_low_scores_end_tracks():
    predictor = FakePredictor(score=0.9)
    proc = processor(predictor)
    proc.process(Job(frame(1), [req("a", track=True)]))
    predictor.score = 0.1
    out = proc.process(Job(frame(2)))
    assert out.ended == [("a", ENDED_LOW_SCORE)] and len(proc.tracker) == 0


def test_stock_sam_above_the_crossover():
    fov, stock = FakePredictor(), FakePredictor()
    proc = processor(fov, stock=stock, crossover=3)
    assert not proc.process(Job(frame(1), [req("a"), req("b")])).stock
    assert proc.process(Job(frame(2), [req("a"), req("b"), req("c")])).stock
    assert len(fov.calls) == 1 and len(stock.calls) == 1


def test_worker_runs_off_the_calling_thread_and_survives_errors():
    queue = WorkQueue()
    outputs, errors, threads = [], [], []
    done = threading.Event()

    def decode(image):
        threads.append(threading.current_thread().name)
        if image is None:
            raise ValueError("unsupported image encoding '32FC1'")
        return image

    proc = FrameProcessor(FakePredictor(), Tracker(), decode=decode)
    worker = Worker(
        queue,
        proc,
        on_output=lambda o: (outputs.append(o), done.set()),
        on_error=lambda job, e: errors.append(str(e)),
    )
    worker.start()
    try:
        queue.submit(Frame(1, None, None, time.monotonic()), [req("x")])
        queue.submit(frame(2), [req("a")])
        assert done.wait(5)
    finally:
        worker.stop()
    assert errors == ["unsupported image encoding '32FC1'"] and len(outputs) == 1
    assert set(threads) == {"stt_worker"}


def test_latency_percentiles():
    stats = LatencyStats()
    assert stats.summary()["count"] == 0
    for i in range(101):
        stats.add(float(i), now=i * 0.1)
    summary = stats.summary()
    assert summary["p50_ms"] == 50 and summary["p90_ms"] == 90 and summary["p99_ms"] == 99
    assert summary["rate_hz"] == pytest.approx(10.0)


def test_bad_queue_size():
    with pytest.raises(ValueError, match="at least 1"):
        WorkQueue(0)
