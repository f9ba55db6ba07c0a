"""The node's parameters: one table (names, defaults, meaning) and their validation, ROS-free.

`config/stt.yaml`, the node's `declare_parameter` calls and docs/ROS.md all follow `PARAMETERS`; a test
checks the YAML against it. Validation happens here so a bad value is a clear error at configure time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stt_ros.foveation import DEFAULT_TOKENS
from stt_ros.model.checkpoints import NO_ADAPTER
from stt_ros.model.encoder import DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL
from stt_ros.pipeline.camera import CAMERA_MODELS
from stt_ros.pipeline.detections import DETECTION_MODES

IMAGE_TRANSPORTS = ("raw", "compressed")
DEPTH_MODES = ("off", "on")
BACKENDS = ("torch", "onnxruntime")
IMAGE_QOS = ("sensor_data", "reliable")
RANDOM_CHECKPOINT = "random"


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    description: str


PARAMETERS = (
    Parameter("variant", "vit_b", "SAM variant: vit_b, vit_l, vit_h, or reference (the shipped toy model)"),
    Parameter(
        "checkpoint",
        "",
        "official SAM .pth path; for variant reference a `stt train-reference` weights file (empty: the shipped "
        "one); 'random' for random weights (smoke tests only)",
    ),
    Parameter(
        "adapter",
        "",
        "trained adapter file; empty: the shipped one for variant reference with its own weights, else none; "
        f"{NO_ADAPTER}: the untrained (identity) adapters",
    ),
    Parameter(
        "backend",
        "torch",
        "torch, or onnxruntime: run the `stt export` graph in `model` (no torch or segment-anything needed)",
    ),
    Parameter("model", "", "the .onnx graph for backend onnxruntime; its variant and foveation must match these"),
    Parameter(
        "onnx_providers",
        "tensorrt,cuda,cpu",
        "ONNX Runtime execution providers, most preferred first; missing ones are skipped with a warning",
    ),
    Parameter("trt_engine_cache", "", "TensorRT engine cache directory; empty: a folder in the temp directory"),
    Parameter("device", "auto", "torch device: auto (cuda when available, else cpu), cuda, cuda:1, cpu"),
    Parameter("dtype", "fp32", "fp32, fp16 or bf16 (autocast on GPU)"),
    Parameter("pattern", "stt", "foveation pattern: stt, uniform:G, or strides/grids (1,2,4,6,8/4,4,6,8,10)"),
    Parameter(
        "attention",
        DEFAULT_ATTENTION,
        "encoder attention over foveated tokens: global (every token attends to all) or window (SAM's windowed "
        "blocks stay windowed)",
    ),
    Parameter("tokens", DEFAULT_TOKENS, "coarse tokens: pooled (mean of patch embeddings) or pixel (box means)"),
    Parameter(
        "proportional",
        DEFAULT_PROPORTIONAL,
        "proportional attention: a stride-s token weighs like the s² patches it replaces",
    ),
    Parameter("multimask", "auto", "output choice: auto, best, largest, single, 0, 1 or 2"),
    Parameter("mask_threshold", 0.0, "logit threshold for mask pixels (SAM's default 0.0)"),
    Parameter("stock_sam_crossover", 0, "prompts per frame from which stock SAM runs instead; 0: never"),
    Parameter("image_transport", "raw", "raw (sensor_msgs/Image) or compressed (CompressedImage)"),
    Parameter("image_qos", "sensor_data", "sensor_data (best effort, depth 5) or reliable (depth 10)"),
    Parameter("frame_buffer_size", 30, "frames kept for binding stamped prompts"),
    Parameter("prompt_tolerance", 0.1, "seconds: farthest a prompt's stamp may be from its frame's"),
    Parameter("max_pending_prompts", 100, "prompts waiting for a newer frame; overflow drops the oldest"),
    Parameter("max_queued_frames", 8, "prompted frames waiting for the model; overflow drops the oldest"),
    Parameter("detection_prompt_mode", "point", "detection prompts: point (box centre), box, point_and_box"),
    Parameter("track_detections", False, "start a track for every detection"),
    Parameter("track_clicks", True, "start a track for every click (image_mouse_left, clicked_point)"),
    Parameter("camera_model", "rectified", "project clicked_point with P (rectified) or K + D (raw)"),
    Parameter("tf_timeout", 0.1, "seconds to wait for the clicked_point transform"),
    Parameter(
        "depth_mode",
        "off",
        "off, or on: lift masks to 3-D with `depth` (16UC1 mm or 32FC1 m) and `depth_camera_info`",
    ),
    Parameter("depth_transport", "raw", "raw (sensor_msgs/Image on depth) or compressed (compressedDepth)"),
    Parameter("depth_tolerance", 0.05, "seconds: farthest a depth image's stamp may be from its colour frame's"),
    Parameter("depth_min", 0.1, "metres: nearer depth is no measurement"),
    Parameter("depth_max", 10.0, "metres: farther depth is no measurement"),
    Parameter("depth_erosion", 2, "pixels taken off each mask's edge before lifting (flying pixels)"),
    Parameter("min_object_points", 20, "objects with fewer valid depth points are left out of ~/objects, ~/points"),
    Parameter("target_frame", "", "tf frame of ~/objects and ~/points; empty: the camera's optical frame"),
    Parameter("max_tracks", 8, "tracks kept at once; starting one more ends the oldest"),
    Parameter("track_min_score", 0.5, "a track ends when its predicted IoU falls below this"),
    Parameter("track_min_area", 16, "a track ends when its mask has fewer pixels than this"),
)
DEFAULTS = {p.name: p.default for p in PARAMETERS}


def _choice(values: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = str(values[name])
    if value not in choices:
        raise ValueError(f"parameter {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _positive(values: Mapping[str, Any], name: str, kind: type = int, allow_zero: bool = False) -> Any:
    value = kind(values[name])
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"parameter {name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


@dataclass(frozen=True)
class NodeConfig:
    """Validated parameter values (see `PARAMETERS` for their meaning)."""

    values: Mapping[str, Any]

    @classmethod
    def from_values(cls, given: Mapping[str, Any]) -> NodeConfig:
        """Defaults overlaid with `given`; raises ValueError naming the first bad parameter."""
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {', '.join(DEFAULTS)}")
        from stt_ros.prompts import parse_multimask

        values = {**DEFAULTS, **given}
        values["multimask"] = parse_multimask(values["multimask"])
        _choice(values, "image_transport", IMAGE_TRANSPORTS)
        _choice(values, "image_qos", IMAGE_QOS)
        _choice(values, "detection_prompt_mode", DETECTION_MODES)
        _choice(values, "camera_model", CAMERA_MODELS)
        _choice(values, "depth_mode", DEPTH_MODES)
        _choice(values, "depth_transport", IMAGE_TRANSPORTS)
        for name in ("frame_buffer_size", "max_pending_prompts", "max_queued_frames", "max_tracks"):
            _positive(values, name)
        for name in ("stock_sam_crossover", "track_min_area", "depth_erosion", "min_object_points"):
            _positive(values, name, allow_zero=True)
        for name in ("prompt_tolerance", "tf_timeout", "depth_tolerance", "depth_min"):
            _positive(values, name, float, allow_zero=True)
        if not float(values["depth_min"]) < float(values["depth_max"]):
            raise ValueError(
                f"parameter depth_max ({values['depth_max']}) must be greater than depth_min ({values['depth_min']})"
            )
        _choice(values, "backend", BACKENDS)
        if values["backend"] == "onnxruntime":
            return cls._onnxruntime(values)
        checkpoint = str(values["checkpoint"])
        if values["variant"] != "reference" and not checkpoint:
            raise ValueError(
                f"parameter checkpoint is empty: give the path of the official SAM {values['variant']} "
                f"file, or '{RANDOM_CHECKPOINT}' to run on random weights (masks are noise)"
            )
        if checkpoint and checkpoint != RANDOM_CHECKPOINT and not Path(checkpoint).expanduser().is_file():
            raise ValueError(f"parameter checkpoint: no file at {checkpoint!r}; download it or fix it")
        adapter = str(values["adapter"])
        if adapter not in ("", NO_ADAPTER) and not Path(adapter).expanduser().is_file():
            raise ValueError(
                f"parameter adapter: no file at {adapter!r}; fix the path, leave it empty for the default or give "
                f"'{NO_ADAPTER}' for untrained adapters"
            )
        return cls(values)

    @classmethod
    def _onnxruntime(cls, values: dict[str, Any]) -> NodeConfig:
        model = str(values["model"])
        if not model:
            raise ValueError("parameter model is empty: backend onnxruntime runs an `stt export` graph; give its path")
        if not Path(model).expanduser().is_file():
            raise ValueError(f"parameter model: no file at {model!r}; export one with `stt export --out {model}`")
        if int(values["stock_sam_crossover"]) > 0:
            raise ValueError("parameter stock_sam_crossover needs backend torch (an exported graph has no stock SAM)")
        return cls(values)

    def __getattr__(self, name: str) -> Any:
        if name in DEFAULTS:
            return self.values[name]
        raise AttributeError(name)

    @property
    def tolerance_ns(self) -> int:
        return round(float(self.values["prompt_tolerance"]) * 1e9)


def load_predictors(config: NodeConfig) -> tuple[Any, Any]:
    """The foveated predictor and, if a crossover is set, stock SAM sharing the same weights."""
    if config.backend == "onnxruntime":
        from stt_ros.deploy.runtime import OnnxPredictor

        expect = {key: config.values[key] for key in ("variant", "pattern", "attention", "tokens", "proportional")}
        providers = [name.strip() for name in str(config.onnx_providers).split(",") if name.strip()]
        cache = str(Path(config.trt_engine_cache).expanduser()) if config.trt_engine_cache else None
        predictor = OnnxPredictor(Path(config.model).expanduser(), providers, cache, expect)
        predictor.mask_threshold = float(config.mask_threshold)
        return predictor, None
    from stt_ros.predictor import FoveatedPredictor, ReferencePredictor

    checkpoint = str(config.checkpoint) or None
    if checkpoint not in (None, RANDOM_CHECKPOINT):
        checkpoint = str(Path(checkpoint).expanduser())
    predictor = FoveatedPredictor.build(
        str(config.variant),
        checkpoint=checkpoint,
        adapter=str(Path(config.adapter).expanduser()) if config.adapter else None,  # "none" stays "none"
        device=str(config.device),
        dtype=str(config.dtype),
        pattern=str(config.pattern),
        attention=str(config.attention),
        tokens=str(config.tokens),
        proportional=bool(config.proportional),
    )
    predictor.sam.mask_threshold = float(config.mask_threshold)
    stock = None
    if int(config.stock_sam_crossover) > 0:
        stock = ReferencePredictor(predictor.sam, dtype=str(config.dtype), variant=str(config.variant))
    return predictor, stock
