"""`OnnxPredictor`: an exported foveated graph behind the predictor interface, on ONNX Runtime, without torch.

Execution providers are tried in the order asked (default: TensorRT with fp16 and an engine cache, CUDA, the
CPU); one that is not installed is skipped with a note, and `provider` says which one runs. Resizing, SAM's
post-processing and the choice among SAM's outputs are numpy, shared with the torch predictors where they
can be (`stt_ros.geometry`, `stt_ros.prompts`).
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stt_ros.geometry import padded_frame, resized_shape, sparse_prompts
from stt_ros.prompts import Prompt, SegmentationResult, choose_outputs, parse_multimask, validate_prompts

FORMAT = "stt_ros.foveated_graph"  # the metadata `stt_ros.deploy.export` writes
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
DEFAULT_PROVIDERS = ("tensorrt", "cuda", "cpu")
# The settings a request may name; a graph made with others is refused.
CHECKED = ("variant", "pattern", "tokens", "attention", "proportional")


def execution_providers(
    requested: Sequence[str], available: Sequence[str], engine_cache: str | Path | None = None
) -> tuple[list[Any], list[str]]:
    """ONNX Runtime's provider list for `requested` (names of PROVIDERS, most preferred first) and notes on
    what was skipped. TensorRT builds fp16 engines and caches them in `engine_cache` (checked writable)."""
    unknown = [name for name in requested if name not in PROVIDERS]
    if unknown or not requested:
        raise ValueError(f"execution providers must be among {', '.join(PROVIDERS)}, got {list(requested)}")
    chosen, notes = [], []
    for name in requested:
        provider = PROVIDERS[name]
        if provider not in available:
            notes.append(f"{provider} is not in this onnxruntime (it has {', '.join(available)}): skipped")
            continue
        if name == "tensorrt":
            cache = Path(engine_cache or Path(tempfile.gettempdir()) / "stt_ros_trt_cache").expanduser()
            try:
                cache.mkdir(parents=True, exist_ok=True)
                probe = cache / ".write_test"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                raise ValueError(
                    f"TensorRT engine cache directory {str(cache)!r} is not writable ({error}); give a writable "
                    "directory (the node's trt_engine_cache, --trt-cache), or drop tensorrt from the providers"
                ) from None
            options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
            chosen.append((provider, options))
        else:
            chosen.append(provider)
    if not chosen:
        raise ValueError(f"none of the execution providers {list(requested)} is in this onnxruntime; add cpu")
    return chosen, notes


def check_metadata(metadata: Mapping[str, str], expect: Mapping[str, Any], path: str | Path) -> None:
    """Refuse a graph whose variant, pattern or options differ from the ones asked for (unset ones pass)."""
    differing = []
    for key in CHECKED:
        wanted = expect.get(key)
        if wanted is None:
            continue
        recorded = metadata.get(key)
        if isinstance(wanted, bool):
            recorded = json.loads(recorded) if recorded is not None else None
        if key == "pattern":
            from stt_ros.foveation import FoveationPattern

            wanted = FoveationPattern.parse(str(wanted)).spec
        if recorded != wanted:
            differing.append(f"{key}: graph {recorded!r}, asked {wanted!r}")
    if differing:
        raise ValueError(
            f"ONNX graph {path} was exported for another model ({'; '.join(differing)}): export it again with "
            "these settings, or ask for the graph's own"
        )


def postprocess(logits: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int]) -> np.ndarray:
    """SAM's post-processing of low-res logits (B, S4, S4) to the original size, in numpy: upsample to the
    frame, crop the padding, resize to the image (bilinear, half-pixel centres, as torch's interpolate)."""
    frame = logits.shape[-1] * 4
    out = []
    for low in np.asarray(logits, dtype=np.float32):
        up = cv2.resize(low, (frame, frame), interpolation=cv2.INTER_LINEAR)[: input_size[0], : input_size[1]]
        out.append(cv2.resize(up, (original_size[1], original_size[0]), interpolation=cv2.INTER_LINEAR))
    return np.stack(out)


class OnnxPredictor:
    """The foveated model from an `stt export` graph: same `predict` as `FoveatedPredictor`, no torch."""

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        engine_cache: str | Path | None = None,
        expect: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX graph at {str(self.path)!r}; make one with `stt export --out {path}`")
        chosen, self.notes = execution_providers(providers, onnxruntime.get_available_providers(), engine_cache)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: the notes above say what matters
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=chosen)
        except Exception as error:  # ONNX Runtime's errors are long and name no remedy
            detail = " ".join(str(error).split())[:200]
            message = f"{self.path} is not an ONNX graph ONNX Runtime can load ({detail}); export it again"
            raise ValueError(message) from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("format") != FORMAT:
            raise ValueError(f"{self.path} is an ONNX graph but not one `stt export` wrote (no {FORMAT} metadata)")
        check_metadata(self.metadata, expect or {}, self.path)
        self.img_size = int(self.metadata["img_size"])
        self.mask_threshold = float(self.metadata["mask_threshold"])
        self.variant = self.metadata["variant"]
        self.adapter = self.metadata.get("adapter", "unrecorded")  # the adapter file baked in, as `stt export` saw it

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first of the session's)."""
        return self.session.get_providers()[0]

    @property
    def device(self) -> str:
        """Where the graph runs, for reports: the execution provider."""
        return self.provider

    @property
    def settings(self) -> dict:
        """The foveated configuration in the graph, as `FoveatedPredictor.settings` gives it."""
        return {key: self.metadata[key] for key in ("pattern", "attention", "tokens", "proportional", "quantization")}

    def predict_logits(self, image: np.ndarray, prompts: Sequence[Prompt]) -> tuple[np.ndarray, np.ndarray]:
        """All four outputs: low-res logits (P, 4, S4, S4) and IoU predictions (P, 4), in prompt order."""
        if not prompts:
            raise ValueError("predict_logits needs at least one prompt")
        logits, iou = None, None
        for indices, batch_logits, batch_iou in self._batches(image, prompts):
            if logits is None:
                logits = np.zeros((len(prompts), *batch_logits.shape[1:]), np.float32)
                iou = np.zeros((len(prompts), 4), np.float32)
            logits[indices], iou[indices] = batch_logits, batch_iou
        return logits, iou

    def upscale(self, logits: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """SAM's post-processing of low-res logits (P, K, S4, S4) to the original (H, W) size, as logits."""
        input_size = resized_shape(*image_size, self.img_size)
        flat = np.asarray(logits).reshape(-1, *logits.shape[-2:])
        return postprocess(flat, input_size, image_size).reshape(*logits.shape[:2], *image_size)

    def predict(
        self, image: np.ndarray, prompts: Sequence[Prompt], multimask: str | int = "auto"
    ) -> list[SegmentationResult]:
        """One result per prompt, in order. Prompts of equal shape run as one batch."""
        policy = parse_multimask(multimask)
        results: list[SegmentationResult | None] = [None] * len(prompts)
        size = image.shape[:2]
        for indices, logits, iou in self._batches(image, prompts):
            group = [prompts[i] for i in indices]
            areas = (logits[:, :3] > self.mask_threshold).reshape(len(indices), 3, -1).sum(axis=2)
            chosen = choose_outputs(policy, group, iou, areas)
            input_size = resized_shape(*size, self.img_size)
            masks = postprocess(logits[np.arange(len(indices)), chosen], input_size, size) > self.mask_threshold
            for row, index in enumerate(indices):
                out = int(chosen[row])
                scores = tuple(float(score) for score in iou[row, :3])
                results[index] = SegmentationResult(masks[row], float(iou[row, out]), scores, out)
        return results  # type: ignore[return-value]

    def _batches(
        self, image: np.ndarray, prompts: Sequence[Prompt]
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        frame, input_size = padded_frame(image, self.img_size)
        validate_prompts(prompts, *image.shape[:2])
        groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for index, prompt in enumerate(prompts):
            groups[prompt.shape_key].append(index)
        for indices in groups.values():
            sparse = sparse_prompts([prompts[i] for i in indices], image.shape[:2], self.img_size)
            feeds = {
                "image": frame,
                "image_size": np.asarray(input_size, dtype=np.int64),
                "fovea": sparse.fovea,
                "coords": sparse.coords,
                "labels": sparse.labels,
            }
            logits, iou = self.session.run(None, feeds)
            yield indices, logits, iou


