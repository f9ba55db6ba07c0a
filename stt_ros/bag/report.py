"""metrics.json, report.md and PNG plots of an evaluation run, written even when the run stopped early."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stt_ros.bag.metrics import HISTOGRAM_BINS, FrameRecord
from stt_ros.evaluation.plotting import pyplot

plt = pyplot()

PLOTS = {
    "iou": "iou_histogram.png",
    "latency": "latency.png",
    "timeline": "timeline.png",
}


def write_metrics(out: Path, metrics: dict) -> Path:
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _plot_iou(path: Path, frames: Sequence[FrameRecord]) -> bool:
    series = {
        "chosen mask vs GT": [p.iou for f in frames for p in f.prompt_records if p.iou is not None],
        "oracle of 3 vs GT": [p.oracle_iou for f in frames for p in f.prompt_records if p.oracle_iou is not None],
        "agreement with stock SAM": [p.sam_iou for f in frames for p in f.prompt_records if p.sam_iou is not None],
    }
    series = {name: values for name, values in series.items() if values}
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    bins = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for name, values in series.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.8, label=f"{name} (mean {np.mean(values):.3f})")
    ax.set_xlabel("IoU")
    ax.set_ylabel("prompts")
    ax.set_xlim(0.0, 1.0)
    ax.set_title("IoU distribution")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_latency(path: Path, frames: Sequence[FrameRecord]) -> bool:
    ours = [f.latency_ms for f in frames if f.prompts]
    if not ours:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, values in (
        ("foveated", ours),
        ("stock SAM", [f.sam_latency_ms for f in frames if f.sam_latency_ms]),
    ):
        if values:
            ordered = np.sort(values)
            ax.step(ordered, np.arange(1, len(ordered) + 1) / len(ordered), where="post", label=name)
    ax.set_xlabel("predictor latency per frame (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Latency CDF")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_timeline(path: Path, frames: Sequence[FrameRecord]) -> bool:
    if not frames:
        return False
    index = [f.index for f in frames]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8.0, 5.0))
    top.plot(index, [f.latency_ms for f in frames], ".-", label="foveated")
    if any(f.sam_latency_ms is not None for f in frames):
        top.plot(index, [f.sam_latency_ms for f in frames], ".-", label="stock SAM")
    top.set_ylabel("latency (ms)")
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    for name, key in (("IoU vs GT", "iou"), ("agreement with SAM", "sam_iou")):
        values = [
            np.mean(v) if (v := [getattr(p, key) for p in f.prompt_records if getattr(p, key) is not None]) else np.nan
            for f in frames
        ]
        if not np.all(np.isnan(values)):
            bottom.plot(index, values, ".-", label=f"mean {name}")
    bottom.plot(index, [f.prompts for f in frames], ":", color="grey", label="prompts")
    bottom.set_xlabel("frame")
    bottom.set_ylabel("IoU / prompts")
    bottom.legend(loc="lower right")
    bottom.grid(alpha=0.3)
    fig.suptitle("Per-frame timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_plots(out: Path, frames: Sequence[FrameRecord]) -> list[str]:
    """The PNG plots that have data, by file name."""
    written = []
    for key, draw in (("iou", _plot_iou), ("latency", _plot_latency), ("timeline", _plot_timeline)):
        if draw(out / PLOTS[key], frames):
            written.append(PLOTS[key])
    return written


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _iou_row(name: str, summary: dict) -> str:
    if not summary.get("count"):
        return f"| {name} | 0 | – | – | – | – | – |"
    return (
        f"| {name} | {summary['count']} | {_fmt(summary['mean'])} | {_fmt(summary['median'])} | "
        f"{_fmt(summary['recall@0.5'])} | {_fmt(summary['recall@0.75'])} | {_fmt(summary['recall@0.9'])} |"
    )


def _latency_row(name: str, summary: dict) -> str:
    if not summary.get("count"):
        return f"| {name} | 0 | – | – | – | – |"
    return (
        f"| {name} | {summary['count']} | {_fmt(summary['p50_ms'], 2)} | {_fmt(summary['p90_ms'], 2)} | "
        f"{_fmt(summary['p99_ms'], 2)} | {_fmt(summary['mean_ms'], 2)} |"
    )


def render_report(metrics: dict, plots: Sequence[str]) -> str:
    """report.md: what was run, how good, how fast, what was skipped, and how to replay it."""
    run, timing = metrics["run"], metrics["timing"]
    lines = [
        "# stt eval-bag report",
        "",
        f"- bag: `{run['bag']}` ({run['storage']})",
        f"- images: `{run['image_topic']}`; prompts: {run['prompt_source']}",
        f"- model: {run['variant']} (checkpoint {run['checkpoint']}, adapter {run['adapter']}) on {run['device']}",
        f"- foveation: pattern `{run['pattern']}`, {run['attention']} attention, "
        f"{run['tokens']} coarse tokens, proportional attention {run['proportional']}",
        f"- frames evaluated: {metrics['frames']} ({metrics['frames_with_prompts']} with prompts), "
        f"prompts: {metrics['prompts']}",
        f"- status: {run['status']}",
        "",
        "## Quality",
        "",
        "| | prompts | mean IoU | median | R@0.5 | R@0.75 | R@0.9 |",
        "|---|---|---|---|---|---|---|",
        _iou_row("chosen mask vs GT (mIoU)", metrics["iou"]),
        _iou_row("oracle of 3 vs GT", metrics["oracle_iou"]),
        _iou_row("agreement with stock SAM", metrics["sam_agreement"]),
        "",
        f"Mean predicted IoU (score): {_fmt(metrics['mean_score'])}.",
        "",
        *_depth_lines(metrics["depth"]),
        "## Speed",
        "",
        "Predictor time only (image decoding and bag I/O excluded).",
        "",
        "| | frames | p50 | p90 | p99 | mean (ms) |",
        "|---|---|---|---|---|---|",
        _latency_row("foveated, per frame", timing["frame_latency"]),
        _latency_row("foveated, per prompt", timing["prompt_latency"]),
    ]
    if "sam_frame_latency" in timing:
        lines.append(_latency_row("stock SAM, per frame", timing["sam_frame_latency"]))
    lines += [
        "",
        f"Throughput: {_fmt(timing['frames_per_s'], 1)} frames/s, "
        f"{_fmt(timing['prompts_per_s'], 1)} prompts/s "
        f"(predictor); {_fmt(timing['end_to_end_frames_per_s'], 1)} frames/s end to end "
        f"over {_fmt(timing['wall_s'], 1)} s.",
        "",
        "## Input problems",
        "",
    ]
    problems = metrics["input"]
    if not any(problems["counts"].values()):
        lines.append("None: every message was read and used.")
    else:
        lines += [f"- {name.replace('_', ' ')}: {count}" for name, count in problems["counts"].items() if count]
        lines += [f"  - e.g. {example}" for example in problems["examples"]]
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({name})" for name in plots] or ["No data to plot."]
    lines += [
        "",
        "## Replay",
        "",
        "The results bag carries the node's topics (`/stt/segmentations`, `/stt/mask`, `/stt/detections`, and",
        "with depth `/stt/objects` and `/stt/points`) stamped with the input images' headers. Play it beside the",
        "input (Jazzy and later take several `-i`):",
        "",
        "```",
        f"ros2 bag play -i {run['bag']} -i {run['results_bag']}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _depth_lines(depth: dict) -> list[str]:
    if not depth.get("count"):
        return []
    return [
        f"Depth (`{depth.get('topic', 'depth')}`): {depth['count']} objects lifted to 3-D, mean coverage "
        f"{_fmt(depth['mean_coverage'])} of their (eroded) mask pixels (median {_fmt(depth['median_coverage'])}), "
        f"median {depth['median_points']:.0f} points; {depth['objects_without_depth']} without any valid depth.",
        "",
    ]


def write_report(out: Path, metrics: dict, frames: Sequence[FrameRecord]) -> Path:
    """Plots, metrics.json and report.md into `out`; returns the report's path."""
    plots = write_plots(out, frames)
    write_metrics(out, metrics)
    path = out / "report.md"
    path.write_text(render_report(metrics, plots), encoding="utf-8")
    return path
