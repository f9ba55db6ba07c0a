"""The results bag: what the node would have published for each evaluated frame, stamped like the input.

Same topics, types and stamps as the live node (DESIGN §4), and each message's receive time is the input
image's, so `ros2 bag play` of both bags side by side lines the masks up with their frames.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from stt_ros.bag.writer import BagWriter
from stt_ros.pipeline.conversions import (
    MessageKit,
    cloud_points,
    detection2d_array_message,
    detection3d_array_message,
    frame_messages,
    mask_crop,
    point_cloud_message,
)
from stt_ros.pipeline.lifting import LiftedFrame
from stt_ros.prompts import Prompt

SEGMENTATIONS_TOPIC = "/stt/segmentations"
MASK_TOPIC = "/stt/mask"
DETECTIONS_TOPIC = "/stt/detections"
OBJECTS_TOPIC = "/stt/objects"
POINTS_TOPIC = "/stt/points"


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
        lifted: LiftedFrame | None = None,
    ) -> None:
        """Publish one frame's results; `header` is the input image's, `shape` its (height, width).

        Prompts whose id is in `tracked` came from the tracker, not from a new prompt (`tracked` field);
        `lifted`: the frame's objects in 3-D (from `lift_frame` on these results), in the camera's frame.
        """
        crops = [mask_crop(result.mask) for result in results]
        segmentations, labels = frame_messages(
            self._kit, header, shape, prompts, results, tracked, latency_ms, crops
        )
        ids, scores = [prompt.id for prompt in prompts], [float(result.score) for result in results]
        self._bag.write(SEGMENTATIONS_TOPIC, segmentations, log_time_ns)
        self._bag.write(MASK_TOPIC, labels, log_time_ns)
        self._bag.write(DETECTIONS_TOPIC, detection2d_array_message(self._kit, header, ids, scores, crops), log_time_ns)
        if lifted is not None:
            kept_ids, kept_scores = [ids[i] for i in lifted.kept], [scores[i] for i in lifted.kept]
            objects = detection3d_array_message(self._kit, header, kept_ids, kept_scores, lifted.objects)
            self._bag.write(OBJECTS_TOPIC, objects, log_time_ns)
            cloud = point_cloud_message(self._kit, header, cloud_points(lifted.objects))
            self._bag.write(POINTS_TOPIC, cloud, log_time_ns)
        self.frames += 1

    def close(self) -> None:
        self._bag.close()
