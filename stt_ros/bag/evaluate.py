"""`stt eval-bag`: run a predictor over a recorded bag exactly as the node would, and measure it.

Frames and prompts go through the node's own `FrameBuffer` (stamp binding) and `Tracker`; a frame is
evaluated once it leaves the buffer, i.e. once the node could no longer bind a prompt to it, so every
prompt the node would have applied to a frame is applied here too, in one batch. Outputs are written as
the run goes and finalised in `finally`: a corrupt message is skipped and counted, a storage failure or
Ctrl-C stops the run but keeps the frames evaluated so far in the results bag, metrics and report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stt_ros.bag.messages import msg_type_name
from stt_ros.bag.metrics import FrameRecord, PromptRecord, records_as_rows, summarize
from stt_ros.bag.reader import Bag, BagError, Message, Skipped
from stt_ros.bag.report import write_report
from stt_ros.bag.results import ResultsBag
from stt_ros.masks import interior_point, mask_iou
from stt_ros.pipeline.binding import Frame, FrameBuffer, Request, RequestIds, request_from_message, stamp_to_ns
from stt_ros.pipeline.conversions import SUPPORTED_ENCODINGS, mask_crop, message_to_rgb
from stt_ros.pipeline.detections import detection_prompts
from stt_ros.pipeline.lifting import DepthFrames, Intrinsics, LiftedFrame, depth_from_message, lift_frame
from stt_ros.pipeline.tracking import Tracker
from stt_ros.predictor import FOVEATION_SETTINGS
from stt_ros.prompts import Prompt

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
GT_TYPES = ("sensor_msgs/msg/Image",)
DEPTH_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_PROMPT = msg_type_name("PointPrompt")
POINT_STAMPED = "geometry_msgs/msg/PointStamped"
DETECTIONS = "vision_msgs/msg/Detection2DArray"
PROMPT_TYPES = (POINT_PROMPT, POINT_STAMPED, DETECTIONS)
GT_DTYPES = {"mono8": np.uint8, "8uc1": np.uint8, "mono16": np.uint16, "16uc1": np.uint16}
MAX_EXAMPLES = 5
RESULTS_BAG = "results"
ROWS_FILE = "prompts.jsonl"


@dataclass
class EvalOptions:
    """What to read and where to write; the model is passed separately (built by the command)."""

    bag: Path
    image_topic: str
    out: Path
    prompt_topic: str | None = None
    gt_topic: str | None = None
    depth_topic: str | None = None  # lift masks to 3-D with this aligned depth (16UC1 mm or 32FC1 m)
    camera_info_topic: str | None = None  # the colour camera's CameraInfo (the aligned depth's intrinsics)
    depth_tolerance_ns: int = 50_000_000
    limit: int | None = None
    progress: bool = True
    buffer: FrameBuffer = field(default_factory=FrameBuffer)
    model: dict = field(default_factory=dict)  # provenance for the report: variant, checkpoint, ...


@dataclass
class _Pending:
    """A buffered frame, its decoded image and the requests bound to it so far."""

    index: int
    frame: Frame
    log_time: int
    rgb: np.ndarray
    requests: list[Request] = field(default_factory=list)


class InputProblems:
    """Counted input problems, with a few examples each run reports (nothing is dropped silently)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def as_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "examples": self.examples}


def instances_from_message(msg: Any) -> np.ndarray:
    """A mono8/mono16 (8UC1/16UC1) instance image → HxW uint16 ids (0 background)."""
    encoding = str(msg.encoding).lower()
    if encoding not in GT_DTYPES:
        raise ValueError(
            f"ground-truth encoding {msg.encoding!r} is not an instance image; use mono8/mono16 (or 8UC1/16UC1)"
        )
    dtype = np.dtype(GT_DTYPES[encoding]).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step < width * dtype.itemsize or data.size < step * height:
        raise ValueError(f"ground-truth image {width}x{height} (step {step}) does not match its {data.size} bytes")
    rows = data[: step * height].reshape(height, step)[:, : width * dtype.itemsize]
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.uint16)


def gt_prompts(instances: np.ndarray) -> list[Prompt]:
    """SAM's single-point protocol: one foreground point per instance, farthest from its boundary."""
    prompts = []
    for k in np.unique(instances):
        point = interior_point(instances == k) if k else None
        if point is not None:
            prompts.append(Prompt(points=[point], labels=[1], id=f"gt{int(k)}"))
    return prompts


def gt_instance(prompt: Prompt, instances: np.ndarray) -> int:
    """The GT instance a prompt asks for: the id under its first foreground point, else the box's majority."""
    for (u, v), label in zip(prompt.points, prompt.label_array(), strict=True):
        if label == 1:
            row = min(max(round(v), 0), instances.shape[0] - 1)
            col = min(max(round(u), 0), instances.shape[1] - 1)
            return int(instances[row, col])
    if prompt.box is not None:
        x0, y0, x1, y1 = (round(c) for c in prompt.box)
        ids = instances[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
        ids = ids[ids > 0]
        if ids.size:
            return int(np.bincount(ids).argmax())
    return 0


def prompt_requests(message: Message, ids: RequestIds) -> list[Request]:
    """Any supported prompt message → the node's Requests (ValueError for a malformed one)."""
    msg = message.msg
    if message.msgtype == POINT_PROMPT:
        return [request_from_message(msg, ids)]
    stamp = stamp_to_ns(msg.header.stamp)
    if message.msgtype == POINT_STAMPED:  # a pixel: x = column, y = row
        prompt = Prompt(points=[(float(msg.point.x), float(msg.point.y))], labels=[1], id=ids())
        return [Request(prompt.id, prompt, stamp_ns=stamp, source="point")]
    return [Request(p.id, p, stamp_ns=stamp, source="detections") for p in detection_prompts(msg, prefix="det_")]


class Evaluation:
    """One run: feed messages in, evaluate frames as they leave the buffer, write outputs as it goes."""

    def __init__(self, options: EvalOptions, predictor: Any, reference: Any | None = None) -> None:
        self.options = options
        self.predictor = predictor
        self.reference = reference
        self.buffer = options.buffer
        self.tracker = Tracker()
        self.ids = RequestIds()
        self.problems = InputProblems()
        self.pending: dict[int, _Pending] = {}  # by stamp, insertion (receive) order
        self.gt: dict[int, np.ndarray] = {}  # instance images by stamp
        self.frames: list[FrameRecord] = []
        self.accepted = 0
        self.depth = DepthFrames(4 * self.buffer.capacity, options.depth_tolerance_ns)
        self.intrinsics: Intrinsics | None = None

    # -- input ------------------------------------------------------------------------------------
    def on_image(self, message: Message) -> None:
        msg = message.msg
        encoding = getattr(msg, "encoding", None)
        if encoding is not None and str(encoding) not in SUPPORTED_ENCODINGS:
            raise BagError(
                f"image topic {message.topic}: encoding {encoding!r} is not supported; supported: "
                f"{', '.join(SUPPORTED_ENCODINGS)} or CompressedImage (JPEG/PNG); "
                "republish it or pick another topic"
            )
        try:
            rgb = message_to_rgb(msg)
        except ValueError as error:
            self.problems.add("undecodable_images", f"{message.topic} at t={message.log_time}: {error}")
            return
        frame = Frame(stamp_to_ns(msg.header.stamp), msg.header, None, 0.0)
        if frame.stamp_ns in self.pending:
            self.problems.add("duplicate_frames", f"{message.topic}: a second frame with stamp {frame.stamp_ns}")
            return
        self.pending[frame.stamp_ns] = _Pending(self.accepted, frame, message.log_time, rgb)
        self.accepted += 1
        self._attach(self.buffer.add_frame(frame))

    def on_prompt(self, message: Message) -> None:
        try:
            requests = prompt_requests(message, self.ids)
        except ValueError as error:
            self.problems.add("invalid_prompts", f"{message.topic} at t={message.log_time}: {error}")
            return
        limit = self.options.limit
        for request in requests:
            if limit is not None and self.accepted >= limit and self._past_last_frame(request):
                continue  # meant for a frame beyond --limit: not an input problem
            frame = self.buffer.bind(request)
            if frame is not None:
                self._attach([(frame, request)])

    def _past_last_frame(self, request: Request) -> bool:
        newest = self.buffer.latest
        return newest is None or request.stamp_ns == 0 or request.stamp_ns > newest.stamp_ns + self.buffer.tolerance_ns

    def on_gt(self, message: Message) -> None:
        try:
            self.gt[stamp_to_ns(message.msg.header.stamp)] = instances_from_message(message.msg)
        except ValueError as error:
            self.problems.add("undecodable_ground_truth", f"{message.topic} at t={message.log_time}: {error}")

    def on_depth(self, message: Message) -> None:
        self.depth.add(stamp_to_ns(message.msg.header.stamp), message.msg)

    def on_camera_info(self, message: Message) -> None:
        try:
            self.intrinsics = Intrinsics.from_camera_info(message.msg)
        except ValueError as error:
            self.problems.add("uncalibrated_camera_info", f"{message.topic} at t={message.log_time}: {error}")

    def lift(self, pending: _Pending, results: list[Any]) -> LiftedFrame | None:
        """The frame's objects in 3-D from the depth nearest its stamp; None (and a counted problem) without."""
        stamp = pending.frame.stamp_ns
        depth_msg = self.depth.nearest(stamp)
        if depth_msg is None:
            self.problems.add("frames_without_depth", f"frame {stamp}: no {self.options.depth_topic} message near it")
            return None
        try:
            crops = [mask_crop(result.mask) for result in results]
            return lift_frame(depth_from_message(depth_msg), pending.rgb.shape[:2], crops, self.intrinsics, None)
        except ValueError as error:
            self.problems.add("unusable_depth", f"frame {stamp}: {error}")
            return None

    def _attach(self, bound: Sequence[tuple[Frame, Request]]) -> None:
        for frame, request in bound:
            pending = self.pending.get(frame.stamp_ns)
            if pending is None:
                self.problems.add("late_prompts", f"prompt {request.prompt_id!r}: frame {frame.stamp_ns} already done")
            else:
                pending.requests.append(request)

    # -- evaluation -------------------------------------------------------------------------------
    def ready(self, final: bool) -> list[_Pending]:
        """Frames no prompt can reach any more (left the buffer), or all of them at the end."""
        buffered = {f.stamp_ns for f in self.buffer.frames}
        gt_only = self.options.prompt_topic is None
        done = [
            p for stamp, p in self.pending.items() if final or stamp not in buffered or (gt_only and stamp in self.gt)
        ]
        for p in done:
            del self.pending[p.frame.stamp_ns]
        return done

    def frame_prompts(self, pending: _Pending, instances: np.ndarray | None) -> tuple[list[Prompt], set[str], set[str]]:
        """This frame's prompts (explicit ones, then tracks), the ids that start tracks, the tracked ids."""
        if self.options.prompt_topic is None:
            return (gt_prompts(instances) if instances is not None else []), set(), set()
        height, width = pending.rgb.shape[:2]
        explicit: dict[str, Prompt] = {}
        starts: set[str] = set()
        for request in pending.requests:  # a later prompt with the same id replaces an earlier one
            if request.ends_track:
                self.tracker.end(request.prompt_id)
                explicit.pop(request.prompt_id, None)
                continue
            try:
                request.prompt.validate(height, width)
            except ValueError as error:
                self.problems.add("invalid_prompts", f"prompt {request.prompt_id!r}: {error}")
                continue
            explicit[request.prompt_id] = request.prompt
            (starts.add if request.track else starts.discard)(request.prompt_id)
        tracked = self.tracker.prompts(pending.frame.stamp_ns, exclude=set(explicit))
        return [*explicit.values(), *tracked], starts, {p.id for p in tracked}

    def evaluate(self, pending: _Pending, results_bag: ResultsBag, rows: Any) -> None:
        stamp = pending.frame.stamp_ns
        instances = self.gt.pop(stamp, None)
        if self.options.gt_topic and instances is None:
            self.problems.add("frames_without_ground_truth", f"frame {stamp}: no {self.options.gt_topic} message")
        prompts, starts, tracked = self.frame_prompts(pending, instances)
        record = FrameRecord(index=pending.index, stamp_ns=stamp, prompts=len(prompts), latency_ms=0.0)
        if prompts:
            start = time.perf_counter()
            results = self.predictor.predict(pending.rgb, prompts)
            record.latency_ms = (time.perf_counter() - start) * 1000.0
            for prompt, result in zip(prompts, results, strict=True):
                if prompt.id in tracked:
                    self.tracker.update(prompt.id, result, stamp)
                elif prompt.id in starts:
                    self.tracker.start(prompt.id, result, stamp)
            record.prompt_records = self._score(pending, prompts, results, instances, record)
            lifted = self.lift(pending, results) if self.options.depth_topic else None
            for rec, obj in zip(record.prompt_records, lifted.lifted if lifted else [None] * len(results), strict=True):
                if obj is not None:
                    rec.depth_points, rec.depth_coverage = obj.valid_pixels, obj.coverage
            results_bag.write(
                pending.frame.header,
                pending.log_time,
                pending.rgb.shape[:2],
                prompts,
                results,
                record.latency_ms,
                tracked,
                lifted,
            )
        self.frames.append(record)
        for row in records_as_rows([record]):
            rows.write(json.dumps(row, sort_keys=True) + "\n")
        rows.flush()

    def consume(self, bag: Bag, roles: dict[str, str], results: ResultsBag, rows: Any, bar: tqdm) -> None:
        """Read the bag once, in receive order, evaluating frames as they leave the buffer."""
        limit = self.options.limit
        images_after_limit = 0
        for item in bag.read(roles):
            if isinstance(item, Skipped):
                self.problems.add("undecodable_messages", f"{item.topic} at t={item.log_time}: {item.reason}")
                continue
            role = roles[item.topic]
            if role == "image" and limit is not None and self.accepted >= limit:
                # Past the limit: read on only while the node could still bind prompts to kept frames.
                images_after_limit += 1
                if images_after_limit > self.buffer.capacity:
                    return
                continue
            handlers = {"image": self.on_image, "prompt": self.on_prompt, "gt": self.on_gt}
            handlers.update(depth=self.on_depth, camera_info=self.on_camera_info)
            handlers[role](item)
            self._attach(self.buffer.expire(item.log_time))
            for pending in self.ready(final=False):
                self.evaluate(pending, results, rows)
                bar.update()

    def flush(self, results: ResultsBag, rows: Any, bar: tqdm) -> None:
        """Evaluate the frames still buffered at the end of the input."""
        for pending in self.ready(final=True):
            self.evaluate(pending, results, rows)
            bar.update()

    def metrics(self, bag: Bag, status: str, wall_s: float) -> dict:
        """metrics.json: the summary plus input problems, tracks and run provenance."""
        metrics = summarize(self.frames, wall_s)
        for kind, count in sorted(vars(self.buffer.stats).items()):
            if kind != "bound" and count:
                self.problems.counts[f"unbound_prompts_{kind}"] = count
        metrics["input"] = self.problems.as_dict()
        if options_depth := self.options.depth_topic:
            metrics["depth"]["topic"] = options_depth
        metrics["tracks"] = {"started": self.tracker.stats.started, "ended": dict(self.tracker.stats.ended)}
        options = self.options
        metrics["run"] = {
            "bag": str(options.bag),
            "storage": bag.storage,
            "image_topic": options.image_topic,
            "prompt_source": (
                f"`{options.prompt_topic}` ({bag.topics[options.prompt_topic]})"
                if options.prompt_topic
                else f"ground truth `{options.gt_topic}` (one point per instance)"
            ),
            "gt_topic": options.gt_topic,
            "results_bag": str(Path(options.out) / RESULTS_BAG),
            "status": status,
            **{key: "–" for key in ("variant", "checkpoint", "adapter", "device", *FOVEATION_SETTINGS)},
            **{key: str(value) for key, value in options.model.items()},
        }
        return metrics

    def _score(
        self,
        pending: _Pending,
        prompts: list[Prompt],
        results: list[Any],
        instances: np.ndarray | None,
        record: FrameRecord,
    ) -> list[PromptRecord]:
        records = [
            PromptRecord(pending.index, p.id, float(r.score), int(r.index), int(np.count_nonzero(r.mask)))
            for p, r in zip(prompts, results, strict=True)
        ]
        if instances is not None and instances.shape != pending.rgb.shape[:2]:
            self.problems.add("ground_truth_size_mismatch", f"frame {record.stamp_ns}: GT {instances.shape} vs image")
            instances = None
        if instances is not None:
            logits, _ = self.predictor.predict_logits(pending.rgb, prompts)
            upscaled = self.predictor.upscale(logits[:, :3], instances.shape)  # torch or numpy, by backend
            upscaled = np.asarray(upscaled.cpu() if hasattr(upscaled, "cpu") else upscaled)
            multimask = upscaled > self.predictor.mask_threshold
            for rec, prompt, result, outputs in zip(records, prompts, results, multimask, strict=True):
                k = gt_instance(prompt, instances)
                if k == 0:
                    self.problems.add("prompts_on_background", f"prompt {prompt.id!r} on frame {record.stamp_ns}")
                    continue
                gt = instances == k
                rec.iou = mask_iou(result.mask, gt)
                rec.oracle_iou = max(mask_iou(m, gt) for m in outputs)
        if self.reference is not None:
            start = time.perf_counter()
            stock = self.reference.predict(pending.rgb, prompts)
            record.sam_latency_ms = (time.perf_counter() - start) * 1000.0
            for rec, ours, theirs in zip(records, results, stock, strict=True):
                rec.sam_iou = mask_iou(ours.mask, theirs.mask)
        return records


def _topics(options: EvalOptions, bag: Bag) -> dict[str, str]:
    """Role of each topic read, after checking that each exists with a supported type."""
    if options.prompt_topic is None and options.gt_topic is None:
        raise BagError("give --prompt-topic (prompts as recorded) or --gt-topic (prompts from ground truth), or both")
    roles = {options.image_topic: "image"}
    bag.require(options.image_topic, IMAGE_TYPES, "image")
    if options.prompt_topic:
        bag.require(options.prompt_topic, PROMPT_TYPES, "prompt")
        roles[options.prompt_topic] = "prompt"
    if options.gt_topic:
        bag.require(options.gt_topic, GT_TYPES, "ground-truth")
        roles[options.gt_topic] = "gt"
    if options.depth_topic:
        if not options.camera_info_topic:
            infos = sorted(t for t, m in bag.topics.items() if m == CAMERA_INFO) or ["none"]
            raise BagError(
                f"--depth-topic needs --camera-info-topic (the intrinsics to lift with); CameraInfo topics in "
                f"the bag: {', '.join(infos)}"
            )
        bag.require(options.depth_topic, DEPTH_TYPES, "depth")
        bag.require(options.camera_info_topic, (CAMERA_INFO,), "camera info")
        roles[options.depth_topic] = "depth"
        roles[options.camera_info_topic] = "camera_info"
    expected = 1 + bool(options.prompt_topic) + bool(options.gt_topic) + 2 * bool(options.depth_topic)
    if len(roles) != expected:
        raise BagError("image, prompt, ground-truth, depth and camera info topics must be different topics")
    return roles


def check_inputs(options: EvalOptions, bag: Bag) -> dict[str, str]:
    """Fail on a bad topic or output directory (before any slow model loading); the role of each topic."""
    results_path = Path(options.out) / RESULTS_BAG
    if results_path.exists():
        raise BagError(f"{results_path} exists from an earlier run; choose another --out or remove it")
    return _topics(options, bag)


def run_evaluation(options: EvalOptions, predictor: Any, reference: Any | None = None, bag: Bag | None = None) -> dict:
    """Evaluate, write results bag, prompts.jsonl, metrics.json, report.md and plots; return the metrics.

    `bag` is `options.bag` already open (the command checks it before loading the model); opening a bag
    can cost a full scan, and a salvaged one a copy. Raises BagError (after writing every output) when the
    bag stops being readable part-way.
    """
    out = Path(options.out)
    results_path = out / RESULTS_BAG
    with nullcontext(bag) if bag is not None else Bag(options.bag) as bag:
        roles = check_inputs(options, bag)
        out.mkdir(parents=True, exist_ok=True)
        run = Evaluation(options, predictor, reference)
        if bag.salvaged:
            run.problems.add("unfinished_recording", bag.salvaged)
        total = bag.counts[options.image_topic]
        bar = tqdm(
            total=total if options.limit is None else min(total, options.limit),
            unit="frame",
            desc="eval-bag",
            disable=not options.progress,
            dynamic_ncols=True,
        )
        status, error = "complete", None
        started = time.perf_counter()
        try:
            with ResultsBag(results_path) as results, open(out / ROWS_FILE, "w", encoding="utf-8") as rows:
                try:
                    run.consume(bag, roles, results, rows, bar)
                except BagError as caught:  # storage failed part-way: finish the frames already read
                    status, error = f"stopped early: {caught}", caught
                run.flush(results, rows, bar)
        except KeyboardInterrupt:
            status = "interrupted (Ctrl-C)"
            raise
        finally:
            bar.close()
            write_report(out, run.metrics(bag, status, time.perf_counter() - started), run.frames)
    if error is not None:
        raise error
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
