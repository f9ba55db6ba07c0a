"""Per-prompt records of an evaluation run and their summary (what metrics.json holds).

Quality numbers are deterministic functions of the records; everything measured with a clock lives
under the summary's "timing" key, so two runs on the same bag and weights compare equal without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

HISTOGRAM_BINS = 20  # IoU histogram over [0, 1] in steps of 0.05
LATENCY_PERCENTILES = (50, 90, 99)


@dataclass
class PromptRecord:
    """One prompt on one frame: what the model chose and how it compares with GT and stock SAM."""

    frame: int
    prompt_id: str
    score: float
    index: int
    area: int
    iou: float | None = None  # chosen mask vs ground truth
    oracle_iou: float | None = None  # best of the 3 multimask outputs vs ground truth
    sam_iou: float | None = None  # chosen mask vs stock SAM's chosen mask (agreement)
    depth_coverage: float | None = None  # share of the (eroded) mask with valid depth (with --depth-topic)
    depth_points: int | None = None  # valid depth points of the object


@dataclass
class FrameRecord:
    """One evaluated frame; `latency_ms` is the predictor call alone (decode and I/O excluded)."""

    index: int
    stamp_ns: int
    prompts: int
    latency_ms: float
    sam_latency_ms: float | None = None
    prompt_records: list[PromptRecord] = field(default_factory=list)


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def iou_summary(values: Sequence[float]) -> dict:
    """Mean, median, recall at 0.5/0.75/0.9 and a fixed-bin histogram of IoU values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"count": 0}
    counts, _ = np.histogram(array, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return {
        "count": int(array.size),
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "recall@0.5": float((array >= 0.5).mean()),
        "recall@0.75": float((array >= 0.75).mean()),
        "recall@0.9": float((array >= 0.9).mean()),
        "histogram": counts.tolist(),
    }


def latency_summary(values_ms: Sequence[float]) -> dict:
    """Mean, max and the p50/p90/p99 percentiles of latencies in milliseconds."""
    array = np.asarray(values_ms, dtype=np.float64)
    if array.size == 0:
        return {"count": 0}
    summary = {"count": int(array.size), "mean_ms": float(array.mean()), "max_ms": float(array.max())}
    for q in LATENCY_PERCENTILES:
        summary[f"p{q}_ms"] = float(np.percentile(array, q))
    return summary


def summarize(frames: Sequence[FrameRecord], wall_s: float) -> dict:
    """The metrics.json body (without run provenance): quality, agreement, timing."""
    prompts = [p for f in frames for p in f.prompt_records]
    ious = [p.iou for p in prompts if p.iou is not None]
    oracle = [p.oracle_iou for p in prompts if p.oracle_iou is not None]
    agreement = [p.sam_iou for p in prompts if p.sam_iou is not None]
    # Frames without prompts cost nothing and would flatter the latency figures.
    busy = [f for f in frames if f.prompts]
    predict_s = sum(f.latency_ms for f in busy) / 1000.0
    timing = {
        "frame_latency": latency_summary([f.latency_ms for f in busy]),
        "prompt_latency": latency_summary([f.latency_ms / f.prompts for f in busy]),
        "predict_s": predict_s,
        "wall_s": wall_s,
        "frames_per_s": len(busy) / predict_s if predict_s > 0 else None,
        "prompts_per_s": len(prompts) / predict_s if predict_s > 0 else None,
        "end_to_end_frames_per_s": len(frames) / wall_s if wall_s > 0 else None,
    }
    sam_busy = [f.sam_latency_ms for f in busy if f.sam_latency_ms is not None]
    if sam_busy:
        timing["sam_frame_latency"] = latency_summary(sam_busy)
    return {
        "frames": len(frames),
        "frames_with_prompts": len(busy),
        "prompts": len(prompts),
        "mean_score": _mean([p.score for p in prompts]),
        "iou": iou_summary(ious),
        "oracle_iou": iou_summary(oracle),
        "sam_agreement": iou_summary(agreement),
        "depth": depth_summary(prompts),
        "timing": timing,
    }


def depth_summary(prompts: Sequence[PromptRecord]) -> dict:
    """How well depth covered the objects: mean and median coverage, objects with no valid depth, points."""
    lifted = [p for p in prompts if p.depth_coverage is not None]
    if not lifted:
        return {"count": 0}
    coverage = np.array([p.depth_coverage for p in lifted])
    points = np.array([p.depth_points for p in lifted])
    return {
        "count": len(lifted),
        "mean_coverage": float(coverage.mean()),
        "median_coverage": float(np.median(coverage)),
        "objects_without_depth": int((points == 0).sum()),
        "median_points": float(np.median(points)),
    }


def records_as_rows(frames: Sequence[FrameRecord]) -> list[dict]:
    """Flat per-prompt rows (frame stamp included) for frames.jsonl and spreadsheets."""
    rows = []
    for frame in frames:
        for prompt in frame.prompt_records:
            row = asdict(prompt)
            row["stamp_ns"] = frame.stamp_ns
            rows.append(row)
    return rows
