"""The results bag: what the node would have published for each evaluated frame, stamped like the input.

Same topics, types and stamps as the live node (DESIGN §4), and each message's receive time is the input
image's, so `ros2 bag play` of both bags side by side lines the masks up with their frames.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from stt_ros.bag.writer import BagWriter
from stt_ros.pipeline.conversions import MessageKit, frame_messages
from stt_ros.prompts import Prompt

SEGMENTATIONS_TOPIC = "/stt/segmentations"
MASK_TOPIC = "/stt/mask"


class ResultsBag:
    """An mcap bag receiving one SegmentationArray and one mono8 label image per evaluated frame."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._kit = MessageKit.rosbags()
        self._bag = BagWriter(self.path, "mcap")
        self.frames = 0

    def __enter__(self) -> ResultsBag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(
        self,
        header: Any,
        log_time_ns: int,
        shape: tuple[int, int],
        prompts: Sequence[Prompt],
        results: Sequence[Any],
        latency_ms: float,
        tracked: Collection[str] = (),
    ) -> None:
        """Publish one frame's results; `header` is the input image's, `shape` its (height, width).

        Prompts whose id is in `tracked` came from the tracker, not from a new prompt (`tracked` field).
        """
        segmentations, labels = frame_messages(self._kit, header, shape, prompts, results, tracked, latency_ms)
        self._bag.write(SEGMENTATIONS_TOPIC, segmentations, log_time_ns)
        self._bag.write(MASK_TOPIC, labels, log_time_ns)
        self.frames += 1

    def close(self) -> None:
        self._bag.close()
