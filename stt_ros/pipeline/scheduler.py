"""Model work off the ROS executor thread: one batch per frame, and what to drop when behind.

Frames that carry explicit prompts (a click, a detection, a grasp planner's request) are never skipped:
they wait in a bounded FIFO whose overflow drops the oldest job, counted. Frames that only advance tracks
are skipped when the model is behind (only the latest waits), counted. Every prompt bound to a frame,
tracks included, goes to the predictor in one `predict` call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stt_ros.pipeline.binding import Frame, Request
from stt_ros.pipeline.conversions import message_to_rgb
from stt_ros.pipeline.tracking import ENDED_BY_CALLER, Tracker
from stt_ros.prompts import Prompt


class LatencyStats:
    """Frame-received → results-ready latencies over a sliding window, for /diagnostics."""

    def __init__(self, window: int = 1000) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, latency_ms: float, now: float | None = None) -> None:
        with self._lock:
            self._samples.append((time.monotonic() if now is None else now, float(latency_ms)))

    def summary(self) -> dict[str, float]:
        """count, p50/p90/p99 (ms) and the result rate (Hz) over the window; zeros when empty."""
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return {"count": 0, "p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "rate_hz": 0.0}
        latencies = np.array([ms for _, ms in samples])
        p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
        span = samples[-1][0] - samples[0][0]
        rate = (len(samples) - 1) / span if span > 0 else 0.0
        return {"count": len(samples), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "rate_hz": rate}


@dataclass
class Job:
    """The work for one frame: its explicit requests (tracks are added when it runs)."""

    frame: Frame
    requests: list[Request] = field(default_factory=list)


@dataclass
class QueueStats:
    dropped_jobs: int = 0
    dropped_requests: int = 0
    skipped_tracking_frames: int = 0


class WorkQueue:
    """Thread-safe: the executor submits, the worker takes."""

    def __init__(self, max_jobs: int = 8) -> None:
        if max_jobs < 1:
            raise ValueError(f"max queued frames must be at least 1, got {max_jobs}")
        self.max_jobs = max_jobs
        self._jobs: deque[Job] = deque()
        self._tracking: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.stats = QueueStats()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._jobs) + (self._tracking is not None)

    def submit(self, frame: Frame, requests: list[Request]) -> list[Job]:
        """Queue explicit requests for `frame` (merged with a queued job for the same frame).

        Returns the jobs dropped to make room (oldest first) so the caller can warn.
        """
        dropped = []
        with self._cond:
            job = next((j for j in self._jobs if j.frame is frame), None)
            if job is not None:
                job.requests.extend(requests)
            else:
                self._jobs.append(Job(frame, list(requests)))
            while len(self._jobs) > self.max_jobs:
                old = self._jobs.popleft()
                self.stats.dropped_jobs += 1
                self.stats.dropped_requests += len(old.requests)
                dropped.append(old)
            self._cond.notify()
        return dropped

    def submit_tracking(self, frame: Frame) -> None:
        """Offer a frame that only advances tracks; a newer one replaces it if it has not started."""
        with self._cond:
            if self._tracking is not None:
                self.stats.skipped_tracking_frames += 1
            self._tracking = frame
            self._cond.notify()

    def _ready(self) -> bool:
        return bool(self._jobs) or self._tracking is not None or self._closed

    def take(self, timeout: float | None = None) -> Job | None:
        """The next job: explicit ones first, in order; else the latest tracking frame. None on timeout."""
        with self._cond:
            if not self._cond.wait_for(self._ready, timeout):
                return None
            if self._jobs:
                job = self._jobs.popleft()
                waiting = self._tracking
                if waiting is not None and waiting.stamp_ns <= job.frame.stamp_ns:
                    # This job advances the tracks on a frame at least as new.
                    self._tracking = None
                    if waiting is not job.frame:
                        self.stats.skipped_tracking_frames += 1
                return job
            if self._tracking is not None:
                frame, self._tracking = self._tracking, None
                return Job(frame)
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._tracking = None
            self._cond.notify_all()


@dataclass
class Segmented:
    """One prompt's result on a frame."""

    prompt_id: str
    prompt: Prompt
    result: Any
    tracked: bool


@dataclass
class FrameOutput:
    frame: Frame
    rgb: np.ndarray
    items: list[Segmented]
    latency_ms: float
    rejected: list[str] = field(default_factory=list)  # "id: why" for prompts that could not run
    ended: list[tuple[str, str]] = field(default_factory=list)  # (track id, reason)
    stock: bool = False  # stock SAM ran instead of the foveated model


class FrameProcessor:
    """Runs one job: decode, gather explicit and tracking prompts, predict once, update tracks.

    Above `crossover` prompts per frame (measured by `stt bench`), encoding the whole image once with
    stock SAM is cheaper than one foveated encode per prompt; `stock` is then used if given.
    """

    def __init__(
        self,
        predictor: Any,
        tracker: Tracker,
        multimask: str | int = "auto",
        stock: Any = None,
        crossover: int = 0,
        decode: Callable[[Any], np.ndarray] = message_to_rgb,
    ) -> None:
        self.predictor = predictor
        self.tracker = tracker
        self.multimask = multimask
        self.stock = stock
        self.crossover = crossover
        self.decode = decode
        self.latency = LatencyStats()

    def process(self, job: Job) -> FrameOutput:
        """Raises ValueError (naming the problem) for an image that cannot be decoded."""
        frame = job.frame
        rgb = self.decode(frame.image)
        height, width = rgb.shape[:2]
        rejected, ended, explicit = [], [], {}
        for request in job.requests:
            if request.ends_track:
                if self.tracker.end(request.prompt_id):
                    ended.append((request.prompt_id, ENDED_BY_CALLER))
                continue
            try:
                request.prompt.validate(height, width)
            except ValueError as error:
                rejected.append(f"{request.prompt_id}: {error}")
                continue
            explicit[request.prompt_id] = request  # the last request for an id wins
        tracking = self.tracker.prompts(frame.stamp_ns, exclude=set(explicit))
        prompts = [r.prompt for r in explicit.values()] + tracking
        if not prompts:
            return FrameOutput(frame, rgb, [], self._latency(frame), rejected, ended)
        use_stock = self.stock is not None and self.crossover > 0 and len(prompts) >= self.crossover
        model = self.stock if use_stock else self.predictor
        results = model.predict(rgb, prompts, multimask=self.multimask)
        items = []
        for request, result in zip(explicit.values(), results[: len(explicit)], strict=True):
            items.append(Segmented(request.prompt_id, request.prompt, result, tracked=False))
            if request.track:
                ended += self.tracker.start(request.prompt_id, result, frame.stamp_ns)
        for prompt, result in zip(tracking, results[len(explicit) :], strict=True):
            items.append(Segmented(prompt.id, prompt, result, tracked=True))
            reason = self.tracker.update(prompt.id, result, frame.stamp_ns)
            if reason is not None:
                ended.append((prompt.id, reason))
        latency = self._latency(frame)
        self.latency.add(latency)
        return FrameOutput(frame, rgb, items, latency, rejected, ended, use_stock)

    @staticmethod
    def _latency(frame: Frame) -> float:
        return (time.monotonic() - frame.received) * 1000.0


class Worker:
    """A daemon thread: take a job, process it, hand the output (or the error) back to the node."""

    def __init__(
        self,
        queue: WorkQueue,
        processor: FrameProcessor,
        on_output: Callable[[FrameOutput], None],
        on_error: Callable[[Job, Exception], None],
    ) -> None:
        self.queue = queue
        self.processor = processor
        self.on_output = on_output
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stt_worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.queue.close()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self.queue.take(timeout=0.1)
            if job is None:
                continue
            try:
                self.on_output(self.processor.process(job))
            except Exception as error:  # the node must survive any bad frame or model failure
                self.on_error(job, error)
