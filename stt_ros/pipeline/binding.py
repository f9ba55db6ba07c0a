"""Which camera frame a prompt refers to: a bounded frame buffer and stamp binding.

A prompt carries the stamp of the frame it was made on (a click on a displayed image, a detection of a
frame). It must be segmented on *that* frame, not on whatever arrived last, or a moving camera puts the
point on the wrong object. Stamps are integer nanoseconds; zero means "the latest frame".
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stt_ros.prompts import Prompt


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (`sec`, `nanosec`) → integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class Frame:
    """One received image: its header, the message itself (decoded later, off the executor thread)."""

    stamp_ns: int
    header: Any
    image: Any
    received: float  # time.monotonic() at arrival, for latency


@dataclass
class Request:
    """A prompt on its way to a frame. `prompt` None with `track` False ends the track `prompt_id`."""

    prompt_id: str
    prompt: Prompt | None
    track: bool = False
    stamp_ns: int = 0
    source: str = "prompts"
    received: float = 0.0

    @property
    def ends_track(self) -> bool:
        return self.prompt is None and not self.track


class RequestIds:
    """Ids for prompts that come without one: unique within this node's lifetime."""

    def __init__(self, prefix: str = "p") -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def __call__(self, given: str = "") -> str:
        return given or f"{self._prefix}{next(self._counter)}"


def request_from_message(msg: Any, ids: RequestIds, received: float = 0.0) -> Request:
    """An stt_ros/PointPrompt → Request. Raises ValueError for a prompt that cannot be a prompt."""
    points = [(float(p.x), float(p.y)) for p in msg.points]
    labels = [int(label) for label in msg.labels]
    if labels and len(labels) != len(points):
        raise ValueError(f"PointPrompt {msg.id!r} has {len(points)} points but {len(labels)} labels")
    box = tuple(float(v) for v in msg.box) if msg.has_box else None
    prompt_id = ids(str(msg.id))
    prompt = Prompt(points=points, labels=labels, box=box, id=prompt_id) if points or box else None
    if prompt is None and msg.track:
        raise ValueError(f"PointPrompt {prompt_id!r} asks to track but has no points and no box")
    return Request(prompt_id, prompt, bool(msg.track), stamp_to_ns(msg.header.stamp), "prompts", received)


@dataclass
class BindStats:
    """Counts for diagnostics."""

    bound: int = 0
    too_old: int = 0
    no_frame_near: int = 0
    pending_overflow: int = 0


@dataclass
class FrameBuffer:
    """The last `capacity` frames and the stamped prompts waiting for a newer one.

    - stamp 0: the latest frame (waits for the first frame if none has arrived);
    - a stamp within `tolerance_ns` of a buffered frame: the nearest one;
    - older than every buffered frame by more than the tolerance: dropped (`too_old`);
    - newer than the newest frame: waits until a frame at or after the stamp arrives, or until the
      clock passes stamp + tolerance (`expire`), then takes the nearest frame within tolerance.
    """

    capacity: int = 30
    tolerance_ns: int = 100_000_000
    max_pending: int = 100
    frames: deque[Frame] = field(default_factory=deque)
    pending: deque[Request] = field(default_factory=deque)
    stats: BindStats = field(default_factory=BindStats)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"frame buffer capacity must be at least 1, got {self.capacity}")
        if self.tolerance_ns < 0:
            raise ValueError(f"prompt tolerance must not be negative, got {self.tolerance_ns} ns")

    @property
    def latest(self) -> Frame | None:
        return self.frames[-1] if self.frames else None

    def add_frame(self, frame: Frame) -> list[tuple[Frame, Request]]:
        """Buffer a frame; returns the waiting prompts it settles (bound to their frames)."""
        if self.frames and frame.stamp_ns < self.frames[-1].stamp_ns:
            # Out of order (e.g. a bag replayed twice): keep the buffer sorted.
            index = next(i for i, f in enumerate(self.frames) if f.stamp_ns > frame.stamp_ns)
            self.frames.insert(index, frame)
        else:
            self.frames.append(frame)
        while len(self.frames) > self.capacity:
            self.frames.popleft()
        return self._settle(lambda request: request.stamp_ns == 0 or request.stamp_ns <= frame.stamp_ns)

    def expire(self, now_ns: int) -> list[tuple[Frame, Request]]:
        """Settle waiting prompts whose tolerance ran out by `now_ns` (the node clock)."""
        return self._settle(lambda r: r.stamp_ns != 0 and r.stamp_ns + self.tolerance_ns <= now_ns)

    def bind(self, request: Request) -> Frame | None:
        """The frame for `request` now, or None if it was dropped or must wait (then it is queued)."""
        if request.stamp_ns == 0 and self.frames:
            self.stats.bound += 1
            return self.frames[-1]
        if request.stamp_ns == 0 or not self.frames or request.stamp_ns > self.frames[-1].stamp_ns:
            self._wait(request)
            return None
        return self._nearest(request)

    def _wait(self, request: Request) -> None:
        self.pending.append(request)
        while len(self.pending) > self.max_pending:
            self.pending.popleft()
            self.stats.pending_overflow += 1

    def _nearest(self, request: Request) -> Frame | None:
        if not self.frames:
            self.stats.no_frame_near += 1
            return None
        frame = min(self.frames, key=lambda f: abs(f.stamp_ns - request.stamp_ns))
        if abs(frame.stamp_ns - request.stamp_ns) <= self.tolerance_ns:
            self.stats.bound += 1
            return frame
        if request.stamp_ns < self.frames[0].stamp_ns:
            self.stats.too_old += 1
        else:
            self.stats.no_frame_near += 1
        return None

    def _settle(self, ready: Callable[[Request], bool]) -> list[tuple[Frame, Request]]:
        settled, waiting = [], deque()
        for request in self.pending:
            if not ready(request):
                waiting.append(request)
            elif request.stamp_ns == 0 and self.frames:
                self.stats.bound += 1
                settled.append((self.frames[-1], request))
            else:
                frame = self._nearest(request)
                if frame is not None:
                    settled.append((frame, request))
        self.pending = waiting
        return settled

    def clear(self) -> None:
        self.frames.clear()
        self.pending.clear()
