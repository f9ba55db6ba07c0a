"""What the node adds to the model's latency per frame, the model itself left out.

Steps, as the node runs them: the header check and stamp binding of the frame and its prompts (executor
thread), decoding, the prompts' validation, the result messages (SegmentationArray and mono8 label image) and
the overlay (drawn only while someone subscribes); apart, re-prompting tracks and, with depth, lifting every
mask to 3-D with the sample bag's depth geometry and building ~/objects and ~/points. Under a ROS 2 Python (rclpy and
cv_bridge importable, e.g. `ros2 run stt_ros stt bench --node`) it times the node's own path: cv_bridge
and rclpy messages, serialised as a publish does. Elsewhere it times the offline twin (rosbags-image and
rosbags messages) and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from stt_ros.bag.messages import msg_type_name
from stt_ros.bag.sample import FRAME_ID, scene_depth
from stt_ros.evaluation.scenes import generate_scene
from stt_ros.masks import interior_point
from stt_ros.pipeline.binding import Frame, FrameBuffer, RequestIds, request_from_message
from stt_ros.pipeline.conversions import (
    MessageKit,
    cloud_points,
    detection3d_array_message,
    frame_messages,
    header_message,
    image_message,
    image_problem,
    mask_crop,
    overlay_image,
    point_cloud_message,
)
from stt_ros.pipeline.lifting import Intrinsics, depth_from_message, lift_frame
from stt_ros.pipeline.scheduler import FrameProcessor, Job
from stt_ros.pipeline.tracking import Tracker

STEPS = ("check and bind", "decode", "prompts", "result messages", "overlay")
TRACKING_STEP = "tracks"
DEPTH_STEP = "depth: lift, objects, points"
EXTRA_STEPS = (TRACKING_STEP, DEPTH_STEP)  # reported apart: only with tracks, only with depth_mode on
SCENE_SEED = 4  # a scene with many objects
WARMUP = 3  # frames that warm caches and are not counted


@dataclass
class MessagePath:
    """How frames and prompts arrive and results leave: the node's (rclpy) or the offline tools' (rosbags)."""

    name: str
    kit: MessageKit
    decode: Callable[[Any], np.ndarray]
    serialize: Callable[[Any], bytes]


def rclpy_path() -> MessagePath | None:
    """The node's path, if this Python has ROS 2 and a built stt_ros."""
    try:
        from stt_ros.ros.conversions import RCLPY_KIT, frame_to_rgb, serialize_message

        RCLPY_KIT.lookup(msg_type_name("PointPrompt"))  # stt_ros's generated messages
    except (ImportError, AttributeError):
        return None
    return MessagePath("cv_bridge + rclpy", RCLPY_KIT, frame_to_rgb, serialize_message)


def rosbags_path() -> MessagePath:
    """The offline tools' path: rosbags-image decoding, rosbags messages and CDR."""
    from stt_ros.bag.messages import typestore
    from stt_ros.pipeline.conversions import message_to_rgb

    store = typestore()

    def serialize(msg: Any) -> bytes:
        return store.serialize_cdr(msg, msg.__msgtype__)

    return MessagePath("rosbags-image + rosbags (offline twin)", MessageKit.rosbags(), message_to_rgb, serialize)


@dataclass
class NodeOverhead:
    path: str
    width: int
    height: int
    prompts: int
    repeats: int
    median_ms: dict[str, float]

    @property
    def without_overlay_ms(self) -> float:
        return sum(self.median_ms[step] for step in STEPS if step != "overlay")

    def to_dict(self) -> dict:
        return {**asdict(self), "without_overlay_ms": self.without_overlay_ms}

    def table(self) -> str:
        rows = [f"| {step} | {self.median_ms[step]:.2f} |" for step in (*STEPS, *EXTRA_STEPS)]
        return "\n".join(
            [
                f"node overhead per frame, {self.width}x{self.height}, {self.prompts} prompts, {self.path}, "
                f"median of {self.repeats}",
                "| step | ms |",
                "|---|---|",
                *rows,
                f"| **total without the overlay** (tracks and depth apart) | **{self.without_overlay_ms:.2f}** |",
            ]
        )


class _Stopwatch:
    """Milliseconds between laps, appended to `samples[step]`."""

    def __init__(self, samples: dict[str, list[float]]) -> None:
        self.samples = samples
        self.restart()

    def restart(self) -> None:
        self.began = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.samples[step].append((now - self.began) * 1e3)
        self.began = now


class _Replay:
    """A predictor that answers every prompt with one of the scene's real object masks: no model."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks

    def predict(self, rgb: np.ndarray, prompts: list[Any], multimask: Any = "auto") -> list[Any]:
        return [
            SimpleNamespace(mask=self.masks[i % len(self.masks)], score=0.9, scores=(0.2, 0.9, 0.5), index=1)
            for i in range(len(prompts))
        ]


def measure_node_overhead(
    width: int = 1280, height: int = 720, prompts: int = 8, repeats: int = 50, path: MessagePath | None = None
) -> NodeOverhead:
    """Median milliseconds per step over `repeats` frames of a synthetic scene with `prompts` objects."""
    if width < 16 or height < 16 or prompts < 1 or repeats < 1:
        raise ValueError("--node needs an image of at least 16x16 px, --prompts >= 1 and --repeats >= 1")
    path = path or rclpy_path() or rosbags_path()
    scene = generate_scene(SCENE_SEED, width, height)
    masks = [scene.instances == k for k in range(1, int(scene.instances.max()) + 1)]
    masks = sorted(masks, key=lambda mask: -int(mask.sum()))[:prompts]
    points = [interior_point(mask) for mask in masks]
    bgr = np.ascontiguousarray(scene.image[:, :, ::-1])

    def point(u: float, v: float) -> Any:
        return path.kit.new("geometry_msgs/msg/Point", x=u, y=v, z=0.0)

    samples: dict[str, list[float]] = {step: [] for step in (*STEPS, *EXTRA_STEPS)}
    depth = image_message(path.kit, header_message(path.kit, 0, FRAME_ID), scene_depth(scene.instances), "16UC1")
    camera = Intrinsics(0.8 * width, 0.8 * width, (width - 1) / 2, (height - 1) / 2, width, height)
    ids = RequestIds()
    for index in range(repeats + WARMUP):
        stamp = 1_700_000_000 * 10**9 + index * 100_000_000
        header = header_message(path.kit, stamp, FRAME_ID)
        image = image_message(path.kit, header, bgr, "bgr8")
        messages = [
            path.kit.new(
                msg_type_name("PointPrompt"),
                header=header,
                id="",
                points=[point(u, v)],
                labels=path.kit.pack_uint8([1]),
                has_box=False,
                box=np.zeros(4, np.float32),
                track=False,
            )
            for u, v in (points[i % len(points)] for i in range(prompts))
        ]
        buffer = FrameBuffer(30, 100_000_000, 100)
        clock = _Stopwatch(samples)

        assert image_problem(image) is None  # the executor thread: check, buffer, bind
        frame = Frame(stamp, image.header, image, time.monotonic())
        buffer.add_frame(frame)
        requests = [request_from_message(msg, ids) for msg in messages]
        bound = [buffer.bind(request) for request in requests]
        clock.lap("check and bind")

        rgb = path.decode(image)  # the worker thread from here on
        clock.lap("decode")
        processor = FrameProcessor(_Replay(masks), Tracker(max_tracks=prompts), decode=lambda _, rgb=rgb: rgb)
        clock.restart()
        output = processor.process(Job(bound[0], requests))
        clock.lap("prompts")
        results = [item.result for item in output.items]
        shown = [item.prompt for item in output.items]
        for msg in frame_messages(path.kit, header, (height, width), shown, results, (), output.latency_ms):
            path.serialize(msg)
        clock.lap("result messages")
        drawn = overlay_image(rgb, [result.mask for result in results], [prompt.points for prompt in shown])
        path.serialize(image_message(path.kit, header, drawn, "bgr8"))
        clock.lap("overlay")

        crops = [mask_crop(result.mask) for result in results]  # with depth on: the 3-D outputs
        clock.restart()
        lifted = lift_frame(depth_from_message(depth), (height, width), crops, camera, None)
        kept = [shown[i].id for i in lifted.kept], [results[i].score for i in lifted.kept]
        path.serialize(detection3d_array_message(path.kit, header, *kept, lifted.objects))
        path.serialize(point_cloud_message(path.kit, header, cloud_points(lifted.objects)))
        clock.lap(DEPTH_STEP)

        tracker = Tracker(max_tracks=prompts)  # every tracked object is re-prompted from its last mask
        for k, result in enumerate(results):
            tracker.start(f"t{k}", result, stamp)
        clock.restart()
        tracker.prompts(stamp + 1)
        clock.lap(TRACKING_STEP)
    median = {step: float(np.median(values[WARMUP:])) for step, values in samples.items()}
    return NodeOverhead(path.name, width, height, prompts, repeats, median)
