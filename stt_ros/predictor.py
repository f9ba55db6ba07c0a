"""Predictors: an RGB image and prompts in, original-size masks and IoU scores out (DESIGN §3).

`FoveatedPredictor` re-encodes a foveated token set per prompt; `ReferencePredictor` is stock SAM
(encode the whole image once, decode each prompt) behind the same interface, for comparison and for
the many-prompts-per-image case where encoding once is cheaper.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from stt_ros.foveation import DEFAULT_TOKENS, FoveationPattern
from stt_ros.frame import FramedImage, FramedPrompts, SamFrame
from stt_ros.geometry import resized_shape
from stt_ros.model.checkpoints import NO_ADAPTER, default_adapter, load_sam
from stt_ros.model.encoder import DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL, DEFAULT_WINDOW_PADDING
from stt_ros.model.foveated_sam import SAM_TO_STT_ORDER, FoveatedSam, model_options, read_adapter_file
from stt_ros.prompts import Prompt, SegmentationResult, choose_outputs, parse_multimask, validate_prompts

LOGGER = logging.getLogger(__name__)

FOVEATION_SETTINGS = ("pattern", "attention", "tokens", "proportional")
"""The foveated model's settings a user chooses (command-line options, node parameters, recorded with results)."""
DTYPES = {
    None: None,
    "fp32": None,
    "float32": None,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto": the GPU when torch sees one, else the CPU; otherwise the device named, if it exists."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device {device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return device


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if isinstance(dtype, torch.dtype):
        return None if dtype == torch.float32 else dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of fp32, bf16, fp16, got {dtype!r}")
    return DTYPES[dtype]


class _Predictor:
    """Validation, batching by prompt shape, output selection and SAM's post-processing."""

    def __init__(self, sam: Sam, dtype: str | torch.dtype | None = None) -> None:
        self.sam = sam.eval()
        self.frame = SamFrame(sam.image_encoder.img_size)
        self.dtype = resolve_dtype(dtype)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def mask_threshold(self) -> float:
        return float(self.sam.mask_threshold)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def predict(
        self, image: np.ndarray, prompts: Sequence[Prompt], multimask: str | int = "auto"
    ) -> list[SegmentationResult]:
        """One result per prompt, in order. Prompts of equal shape run as one batch."""
        policy = parse_multimask(multimask)
        results: list[SegmentationResult | None] = [None] * len(prompts)
        for framed, indices, logits, iou in self._batches(image, prompts):
            chosen = self._choose(policy, [prompts[i] for i in indices], logits, iou)
            picked = logits[torch.arange(len(indices), device=logits.device), chosen][:, None]
            masks = self._postprocess(picked, framed)[:, 0].cpu().numpy()
            iou_cpu = iou.float().cpu().numpy()
            for row, index in enumerate(indices):
                out = int(chosen[row])
                results[index] = SegmentationResult(
                    mask=masks[row],
                    score=float(iou_cpu[row, out]),
                    scores=tuple(float(s) for s in iou_cpu[row, :3]),
                    index=out,
                )
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def predict_logits(self, image: np.ndarray, prompts: Sequence[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
        """All four outputs: low-res logits (P, 4, 4G, 4G) and IoU predictions (P, 4), in prompt order."""
        logits_all: list[torch.Tensor | None] = [None] * len(prompts)
        iou_all: list[torch.Tensor | None] = [None] * len(prompts)
        for _, indices, logits, iou in self._batches(image, prompts):
            for row, index in enumerate(indices):
                logits_all[index], iou_all[index] = logits[row].float(), iou[row].float()
        if not prompts:
            raise ValueError("predict_logits needs at least one prompt")
        return torch.stack(logits_all), torch.stack(iou_all)  # type: ignore[arg-type]

    def upscale(self, logits: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """SAM's post-processing of low-res logits (P, K, 4G, 4G) to the original (H, W) size, as logits."""
        input_size = resized_shape(*image_size, self.frame.img_size)
        return self.sam.postprocess_masks(logits.float(), input_size, image_size)

    def _batches(
        self, image: np.ndarray, prompts: Sequence[Prompt]
    ) -> Iterator[tuple[FramedImage, list[int], torch.Tensor, torch.Tensor]]:
        framed = self.frame.image(image, self.device)
        validate_prompts(prompts, *framed.original_size)
        groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for index, prompt in enumerate(prompts):
            groups[prompt.shape_key].append(index)
        if groups:
            self._prepare(framed)
        for indices in groups.values():
            batch = self.frame.prompts([prompts[i] for i in indices], framed.original_size, self.device)
            with self._autocast():
                logits, iou = self._logits(framed, batch)
            yield framed, indices, logits, iou

    def _prepare(self, framed: FramedImage) -> None:
        """Per-image work shared by all prompts (stock SAM encodes the image here)."""

    def _logits(self, framed: FramedImage, prompts: FramedPrompts) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _choose(
        self, policy: str | int, prompts: list[Prompt], logits: torch.Tensor, iou: torch.Tensor
    ) -> torch.Tensor:
        areas = None
        if policy == "largest":
            areas = (logits[:, :3] > self.sam.mask_threshold).flatten(2).sum(dim=2).cpu().numpy()
        chosen = choose_outputs(policy, prompts, iou.float().cpu().numpy(), areas)
        return torch.as_tensor(chosen, device=logits.device)

    def _postprocess(self, logits: torch.Tensor, framed: FramedImage) -> torch.Tensor:
        return (
            self.sam.postprocess_masks(logits.float(), framed.input_size, framed.original_size)
            > self.sam.mask_threshold
        )


class FoveatedPredictor(_Predictor):
    """Segment-this-thing on a frozen SAM: one foveated encode per prompt, batched over prompts."""

    def __init__(
        self,
        sam: Sam,
        pattern: FoveationPattern | str | None = None,
        attention: str = DEFAULT_ATTENTION,
        tokens: str = DEFAULT_TOKENS,
        proportional: bool = DEFAULT_PROPORTIONAL,
        emulate_window_padding: bool = DEFAULT_WINDOW_PADDING,
        dtype: str | torch.dtype | None = None,
        variant: str = "custom",
        **adapter_options,
    ) -> None:
        """`adapter_options` (patch_rank, geometry_hidden, decoder, decoder_rank) go to `FoveatedSam`."""
        super().__init__(sam, dtype)
        if isinstance(pattern, str):
            pattern = FoveationPattern.parse(pattern)
        self.variant = variant
        self.adapter = NO_ADAPTER  # the adapter file whose weights it runs (set by `with_adapter`)
        self.model = FoveatedSam(
            sam,
            pattern=pattern,
            attention=attention,
            tokens=tokens,
            proportional=proportional,
            emulate_window_padding=emulate_window_padding,
            **adapter_options,
        ).eval()

    @classmethod
    def build(
        cls,
        variant: str = "reference",
        checkpoint: str | Path | None = None,
        adapter: str | Path | None = None,
        device: str | torch.device | None = None,
        **options,
    ) -> FoveatedPredictor:
        """Load `variant` ("vit_b", "vit_l", "vit_h" with a checkpoint path or "random"; "reference").

        `adapter`: a trained adapter file; "none": the untrained adapters (the zero-shot model); None: the
        shipped adapter where there is one for these weights (`checkpoints.default_adapter`) and `options` ask
        for nothing it was not trained for, else the untrained adapters (an explicit setting wins, with a warning).
        """
        sam = load_sam(variant, checkpoint, resolve_device(device))
        if adapter is None:
            adapter = default_adapter(variant, checkpoint) or NO_ADAPTER
            if adapter != NO_ADAPTER:
                differing = _differing_options(model_options(read_adapter_file(adapter)["config"]), options)
                if differing:
                    LOGGER.warning(
                        "the shipped adapter %s was trained for other settings (%s): running untrained adapters "
                        "(zero-shot); leave those settings at their defaults to use it",
                        adapter,
                        differing,
                    )
                    adapter = NO_ADAPTER
        if str(adapter) == NO_ADAPTER:
            return cls(sam, variant=variant, **options)
        return cls.with_adapter(sam, adapter, variant, **options)

    @classmethod
    def with_adapter(cls, sam: Sam, adapter: str | Path, variant: str, **options) -> FoveatedPredictor:
        """The model a trained adapter file describes, on an already loaded `sam`, with its weights.

        Settings come from the file; options passed here override them and must then agree with it.
        """
        options = {**model_options(read_adapter_file(adapter)["config"]), **options}
        predictor = cls(sam, variant=variant, **options)
        predictor.model.load_adapters(adapter, variant)
        predictor.adapter = str(adapter)
        return predictor

    @property
    def pattern(self) -> FoveationPattern:
        return self.model.pattern

    @property
    def settings(self) -> dict:
        """The foveated configuration in effect, whoever chose it (options, an adapter file or the defaults)."""
        config = self.model.config()
        return {"pattern": self.pattern.spec, **{key: config[key] for key in FOVEATION_SETTINGS[1:]}}

    def _logits(self, framed: FramedImage, prompts: FramedPrompts) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(framed.resized, prompts)


class ReferencePredictor(_Predictor):
    """Stock SAM: the full image encoded once per `predict` call, then every prompt decoded against it."""

    def __init__(self, sam: Sam, dtype: str | torch.dtype | None = None, variant: str = "custom") -> None:
        super().__init__(sam, dtype)
        self.variant = variant
        self._features: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        variant: str = "reference",
        checkpoint: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> ReferencePredictor:
        return cls(load_sam(variant, checkpoint, resolve_device(device)), dtype=dtype, variant=variant)

    def _prepare(self, framed: FramedImage) -> None:
        image = framed.resized.permute(2, 0, 1)[None].float()
        with self._autocast():
            self._features = self.sam.image_encoder(self.sam.preprocess(image))

    def _logits(self, framed: FramedImage, prompts: FramedPrompts) -> tuple[torch.Tensor, torch.Tensor]:
        points = None if prompts.points is None else (prompts.points, prompts.labels)
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=prompts.boxes, masks=None)
        logits, iou = self.sam.mask_decoder.predict_masks(
            image_embeddings=self._features,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        order = list(SAM_TO_STT_ORDER)
        return logits[:, order], iou[:, order]


def _differing_options(trained: dict, asked: dict) -> str:
    """The settings in `asked` that an adapter trained with `trained` does not fit, as 'name: asked' pairs."""
    differing = []
    for key, value in asked.items():
        if key not in trained:
            continue
        if key == "pattern" and isinstance(value, str):
            value = FoveationPattern.parse(value)
        if value != trained[key]:
            differing.append(f"{key}: {value.spec if key == 'pattern' else value}")
    return ", ".join(differing)
