"""Stamp binding: exact, nearest, too old, too new (waits), unstamped; and PointPrompt → Request."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from stt_ros.bag.messages import typestore
from stt_ros.pipeline.binding import Frame, FrameBuffer, Request, RequestIds, request_from_message, stamp_to_ns
from stt_ros.prompts import Prompt

MS = 1_000_000


def frame(ms: int) -> Frame:
    return Frame(ms * MS, header=None, image=None, received=0.0)


def request(ms: int, pid: str = "a") -> Request:
    return Request(pid, Prompt(points=[(1.0, 1.0)]), stamp_ns=ms * MS)


@pytest.fixture
def buffer() -> FrameBuffer:
    buf = FrameBuffer(capacity=3, tolerance_ns=20 * MS)
    for ms in (100, 133, 166):
        assert buf.add_frame(frame(ms)) == []
    return buf


def test_exact_and_nearest(buffer):
    assert buffer.bind(request(133)).stamp_ns == 133 * MS
    assert buffer.bind(request(140)).stamp_ns == 133 * MS
    assert buffer.bind(request(160)).stamp_ns == 166 * MS
    assert buffer.stats.bound == 3


def test_capacity_forgets_the_oldest(buffer):
    buffer.add_frame(frame(200))
    assert [f.stamp_ns // MS for f in buffer.frames] == [133, 166, 200]


def test_too_old_is_dropped_and_counted(buffer):
    assert buffer.bind(request(50)) is None
    assert buffer.stats.too_old == 1
    assert buffer.bind(request(85)).stamp_ns == 100 * MS  # within tolerance of the oldest


def test_gap_without_a_near_frame_is_counted(buffer):
    buffer.add_frame(frame(300))  # buffer: 133, 166, 300
    assert buffer.bind(request(230)) is None
    assert buffer.stats.no_frame_near == 1


def test_too_new_waits_for_the_next_frame(buffer):
    assert buffer.bind(request(190)) is None
    assert len(buffer.pending) == 1
    settled = buffer.add_frame(frame(199))
    assert [(f.stamp_ns // MS, r.prompt_id) for f, r in settled] == [(199, "a")]
    assert not buffer.pending


def test_too_new_settles_on_the_clock_when_no_frame_comes(buffer):
    assert buffer.bind(request(180)) is None
    assert buffer.expire(now_ns=190 * MS) == []  # still within tolerance: keep waiting
    settled = buffer.expire(now_ns=200 * MS)
    assert [f.stamp_ns // MS for f, _ in settled] == [166]  # 14 ms away: within tolerance
    assert buffer.bind(request(250)) is None
    assert buffer.expire(now_ns=300 * MS) == []
    assert buffer.stats.no_frame_near == 1 and not buffer.pending


def test_unstamped_takes_the_latest_or_waits_for_the_first():
    empty = FrameBuffer(capacity=2, tolerance_ns=5 * MS)
    assert empty.bind(request(0)) is None
    assert empty.bind(request(5)) is None  # stamped, no frame yet: waits too
    settled = empty.add_frame(frame(7))
    assert sorted(r.stamp_ns for _, r in settled) == [0, 5 * MS]
    empty.add_frame(frame(9))
    assert empty.bind(request(0)).stamp_ns == 9 * MS


def test_pending_is_bounded():
    buf = FrameBuffer(capacity=1, tolerance_ns=MS, max_pending=2)
    for i in range(5):
        buf.bind(request(0, str(i)))
    assert [r.prompt_id for r in buf.pending] == ["3", "4"] and buf.stats.pending_overflow == 3


def test_out_of_order_frames_stay_sorted():
    buf = FrameBuffer(capacity=3, tolerance_ns=MS)
    for ms in (10, 30, 20):
        buf.add_frame(frame(ms))
    assert [f.stamp_ns // MS for f in buf.frames] == [10, 20, 30]


def test_bad_parameters():
    with pytest.raises(ValueError, match="capacity"):
        FrameBuffer(capacity=0)
    with pytest.raises(ValueError, match="tolerance"):
        FrameBuffer(tolerance_ns=-1)


def point_prompt(**fields):
    types = typestore().types
    defaults = {
        "header": types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=2, nanosec=5), frame_id="cam"
        ),
        "id": "",
        "points": [types["geometry_msgs/msg/Point"](x=3.5, y=4.0, z=9.0)],
        "labels": np.array([], dtype=np.uint8),
        "has_box": False,
        "box": np.zeros(4, dtype=np.float32),
        "track": False,
    }
    return types["stt_ros/msg/PointPrompt"](**{**defaults, **fields})


def test_point_prompt_to_request():
    ids = RequestIds()
    req = request_from_message(point_prompt(), ids, received=1.5)
    assert req.prompt_id == "p1" and req.stamp_ns == 2_000_000_005 and req.received == 1.5
    assert req.prompt.points == [(3.5, 4.0)] and req.prompt.box is None and not req.track
    req = request_from_message(
        point_prompt(id="mug", has_box=True, box=np.float32([1, 2, 3, 4]), track=True), ids
    )
    assert req.prompt_id == "mug" and req.prompt.box == (1, 2, 3, 4) and req.track
    end = request_from_message(point_prompt(id="mug", points=[]), ids)
    assert end.ends_track and end.prompt is None
    with pytest.raises(ValueError, match="asks to track"):
        request_from_message(point_prompt(points=[], track=True), ids)
    with pytest.raises(ValueError, match="1 points but 2 labels"):
        request_from_message(point_prompt(labels=np.uint8([1, 0])), ids)


def test_stamp_to_ns():
    assert stamp_to_ns(SimpleNamespace(sec=1, nanosec=2)) == 1_000_000_002
