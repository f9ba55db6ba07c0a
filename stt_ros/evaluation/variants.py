"""Which foveated configuration to use: quality and speed of each, zero-shot, against stock SAM.

Every variant runs on the same held-out scenes with SAM's single-point protocol; besides mIoU against
ground truth it reports agreement (IoU) with stock SAM's chosen mask on the same prompt, because with a
frozen SAM, reproducing the stock model is the goal the adapters are trained towards, and the mIoU by
object size, because the foveated model sees large objects only through its coarse rings.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from segment_anything.modeling import Sam
from tqdm import tqdm

from stt_ros.evaluation.heldout import Segmenter, predictor_segmenter
from stt_ros.evaluation.scenes import Scene
from stt_ros.foveation import DEFAULT_TOKENS, TOKEN_MODES
from stt_ros.masks import interior_point, mask_iou
from stt_ros.model.encoder import ATTENTION_MODES, DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL
from stt_ros.predictor import FoveatedPredictor, ReferencePredictor

SIZE_EDGES = (1_000, 4_000, 16_000, 64_000)  # object area bins in original-image pixels
SIZE_BINS = ("<1k", "1k-4k", "4k-16k", "16k-64k", ">=64k")


def size_bin(pixels: int) -> str:
    """The `SIZE_BINS` label of an object of `pixels` pixels."""
    return SIZE_BINS[int(np.searchsorted(SIZE_EDGES, pixels, side="right"))]


@dataclass(frozen=True)
class Variant:
    attention: str = DEFAULT_ATTENTION
    tokens: str = DEFAULT_TOKENS
    proportional: bool = DEFAULT_PROPORTIONAL

    @property
    def name(self) -> str:
        return f"{self.attention}/{self.tokens}" + ("/proportional" if self.proportional else "")

    def predictor(self, sam: Sam, variant: str = "reference") -> FoveatedPredictor:
        return FoveatedPredictor(
            sam, attention=self.attention, tokens=self.tokens, proportional=self.proportional, variant=variant
        )

    @classmethod
    def of(cls, predictor: FoveatedPredictor) -> Variant:
        """The configuration a predictor runs (e.g. one built from an adapter file)."""
        config = predictor.model.config()
        return cls(config["attention"], config["tokens"], config["proportional"])


ALL_VARIANTS = tuple(
    Variant(attention, tokens, proportional)
    for attention, tokens, proportional in itertools.product(ATTENTION_MODES, TOKEN_MODES, (False, True))
)


@dataclass(frozen=True)
class VariantRow:
    name: str
    miou: float  # chosen mask vs ground truth
    oracle_miou: float  # best of the 3 multimask outputs vs ground truth
    agreement: float  # IoU with stock SAM's chosen mask on the same prompt
    ms_per_prompt: float  # median end-to-end time of one prompt alone (B=1)
    instances: int
    by_size: dict[str, float]  # chosen-mask mIoU per object-size bin (SIZE_BINS) that has objects
    size_counts: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def _outputs(segment: Segmenter, scenes: Sequence[Scene]) -> list[tuple[np.ndarray, np.ndarray]]:
    outputs = []
    for scene in scenes:
        outputs.extend(segment(scene.image, [interior_point(mask) for mask in scene.masks()]))
    return outputs


def _b1_latency_ms(predictor, scene: Scene, repeats: int) -> float:
    from stt_ros.prompts import Prompt

    prompt = [Prompt(points=[interior_point(scene.masks()[0])])]
    predictor.predict(scene.image, prompt)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(scene.image, prompt)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def compare_variants(
    sam: Sam,
    scenes: Sequence[Scene],
    variants: Sequence[Variant] = ALL_VARIANTS,
    latency_repeats: int = 5,
    adapters: Sequence[str | Path] = (),
    sam_variant: str = "reference",
) -> list[VariantRow]:
    """Stock SAM first, then each variant zero-shot, then for each trained adapter file the configuration
    it was trained for with its weights, on every instance of `scenes`.

    An adapter fits only the configuration it was trained for, so it adds one row rather than changing all.
    """
    truth = [mask for scene in scenes for mask in scene.masks()]
    stock = ReferencePredictor(sam)
    stock_out = _outputs(predictor_segmenter(stock), scenes)
    candidates = [(variant.name, lambda variant=variant: variant.predictor(sam, sam_variant)) for variant in variants]
    for adapter in adapters:
        trained = FoveatedPredictor.with_adapter(sam, adapter, sam_variant)
        candidates.append((f"{Variant.of(trained).name} + adapter {adapter}", lambda t=trained: t))
    rows = [_row("stock SAM", stock_out, stock_out, truth, _b1_latency_ms(stock, scenes[0], latency_repeats))]
    for name, build in tqdm(candidates, desc="variants", unit="variant"):
        predictor = build()
        out = _outputs(predictor_segmenter(predictor), scenes)
        rows.append(_row(name, out, stock_out, truth, _b1_latency_ms(predictor, scenes[0], latency_repeats)))
    return rows


def _row(name: str, out, stock_out, truth, latency: float) -> VariantRow:
    chosen = [mask_iou(mask, gt) for (mask, _), gt in zip(out, truth, strict=True)]
    oracle = [max(mask_iou(m, gt) for m in multi) for (_, multi), gt in zip(out, truth, strict=True)]
    agree = [mask_iou(mask, ref) for (mask, _), (ref, _) in zip(out, stock_out, strict=True)]
    bins = [size_bin(int(gt.sum())) for gt in truth]
    by_size = {b: [iou for iou, at in zip(chosen, bins, strict=True) if at == b] for b in SIZE_BINS if b in bins}
    return VariantRow(
        name,
        float(np.mean(chosen)),
        float(np.mean(oracle)),
        float(np.mean(agree)),
        latency,
        len(truth),
        {b: float(np.mean(ious)) for b, ious in by_size.items()},
        {b: len(ious) for b, ious in by_size.items()},
    )


def markdown_table(rows: Sequence[VariantRow]) -> str:
    lines = [
        "| model | mIoU | oracle-of-3 mIoU | agreement with stock | ms / prompt (B=1) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.name} | {r.miou:.3f} | {r.oracle_miou:.3f} | {r.agreement:.3f} | {r.ms_per_prompt:.0f} |" for r in rows
    ]
    return "\n".join(lines)


def size_table(rows: Sequence[VariantRow]) -> str:
    """Chosen-mask mIoU per object-size bin (px in the original image), with each bin's object count."""
    bins = [b for b in SIZE_BINS if b in rows[0].size_counts]
    lines = [
        "| model | " + " | ".join(f"{b} px ({rows[0].size_counts[b]})" for b in bins) + " |",
        "|---|" + "---|" * len(bins),
    ]
    lines += [f"| {r.name} | " + " | ".join(f"{r.by_size[b]:.3f}" for b in bins) + " |" for r in rows]
    return "\n".join(lines)
