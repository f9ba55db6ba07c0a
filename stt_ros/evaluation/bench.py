"""End-to-end timing of the foveated model against stock SAM (DESIGN §6).

Both run in this process, on the same device, threads, image and prompts, from the uint8 image to
original-size masks. Stock SAM's time for N prompts is T_encode + N * t_decode; the foveated model's is
N * t_prompt; the crossover N* = T_encode / (t_prompt - t_decode) is where encoding once starts to win.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stt_ros.predictor import FoveatedPredictor, ReferencePredictor
from stt_ros.prompts import Prompt


@dataclass
class Timing:
    """Seconds per call over repeats, plus the memory high-water mark while they ran."""

    median_ms: float
    p90_ms: float
    runs: int
    peak_memory_mb: float

    @classmethod
    def of(cls, seconds: list[float], peak_memory_mb: float) -> Timing:
        ms = np.asarray(seconds) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), len(ms), peak_memory_mb)


@dataclass
class BenchResult:
    variant: str
    device: str
    dtype: str
    threads: int
    image_size: tuple[int, int]
    prompts: int
    foveated_b1: Timing
    stock_b1: Timing
    foveated_batch: Timing
    stock_batch: Timing

    @property
    def speedup_b1(self) -> float:
        return self.stock_b1.median_ms / self.foveated_b1.median_ms

    @property
    def foveated_prompts_per_s(self) -> float:
        return 1e3 * self.prompts / self.foveated_batch.median_ms

    @property
    def stock_prompts_per_s(self) -> float:
        return 1e3 * self.prompts / self.stock_batch.median_ms

    @property
    def crossover(self) -> float | None:
        """Prompts per image above which stock SAM is faster; None if it never is (or N = 1)."""
        if self.prompts < 2:
            return None
        decode = (self.stock_batch.median_ms - self.stock_b1.median_ms) / (self.prompts - 1)
        encode = self.stock_b1.median_ms - decode
        per_prompt = self.foveated_batch.median_ms / self.prompts
        if per_prompt <= decode:
            return None
        return encode / (per_prompt - decode)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(
            speedup_b1=self.speedup_b1,
            foveated_prompts_per_s=self.foveated_prompts_per_s,
            stock_prompts_per_s=self.stock_prompts_per_s,
            crossover_prompts_per_image=self.crossover,
        )
        return data

    def table(self) -> str:
        rows = [
            ("", "foveated", "stock SAM"),
            ("B=1 median (ms)", f"{self.foveated_b1.median_ms:.1f}", f"{self.stock_b1.median_ms:.1f}"),
            ("B=1 p90 (ms)", f"{self.foveated_b1.p90_ms:.1f}", f"{self.stock_b1.p90_ms:.1f}"),
            (
                f"{self.prompts} prompts (prompts/s)",
                f"{self.foveated_prompts_per_s:.2f}",
                f"{self.stock_prompts_per_s:.2f}",
            ),
            ("peak memory (MB)", f"{self.foveated_batch.peak_memory_mb:.0f}", f"{self.stock_batch.peak_memory_mb:.0f}"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{a:<{width}}  {b:>10}  {c:>10}" for a, b, c in rows]
        crossover = self.crossover
        lines.append(f"speed-up at B=1 (stock / foveated): {self.speedup_b1:.1f}x")
        lines.append(
            "crossover: stock SAM wins above "
            + (f"{crossover:.1f} prompts per image" if crossover else "no prompt count measured here")
        )
        return "\n".join(lines)


class _Memory:
    """Peak memory while a block runs: the CUDA allocator's peak, or the process's peak RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(call: Callable[[], object], repeats: int, warmup: int, memory: _Memory, label: str) -> Timing:
    for _ in range(warmup):
        call()
    memory.reset()
    seconds = []
    for _ in tqdm(range(repeats), desc=label, leave=False, unit="run"):
        start = time.perf_counter()
        call()  # returns numpy masks: the device has finished
        seconds.append(time.perf_counter() - start)
    return Timing.of(seconds, memory.peak_mb())


def bench_prompts(image: np.ndarray, count: int, seed: int = 0) -> list[Prompt]:
    """`count` single-point prompts spread over the image, reproducibly."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    points = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(count, 2))
    return [Prompt(points=[(float(u), float(v))]) for u, v in points]


def run_bench(
    foveated: FoveatedPredictor | Any,
    stock: ReferencePredictor,
    image: np.ndarray,
    prompts: int,
    repeats: int = 20,
    stock_repeats: int = 5,
    warmup: int = 2,
    dtype: str = "fp32",
) -> BenchResult:
    memory = _Memory(stock.device)  # the foveated model may be an ONNX Runtime graph; stock SAM is torch
    batch = bench_prompts(image, prompts)
    one = batch[:1]
    fov_b1 = _time(lambda: foveated.predict(image, one), repeats, warmup, memory, "foveated B=1")
    fov_batch = _time(lambda: foveated.predict(image, batch), max(1, repeats // 4), 1, memory, "foveated batch")
    stock_b1 = _time(lambda: stock.predict(image, one), stock_repeats, 1, memory, "stock B=1")
    stock_batch = _time(lambda: stock.predict(image, batch), max(1, stock_repeats // 2), 0, memory, "stock batch")
    return BenchResult(
        variant=foveated.variant,
        device=str(foveated.device) + (f" ({torch.cuda.get_device_name()})" if stock.device.type == "cuda" else ""),
        dtype=dtype,
        threads=torch.get_num_threads(),
        image_size=(int(image.shape[0]), int(image.shape[1])),
        prompts=prompts,
        foveated_b1=fov_b1,
        stock_b1=stock_b1,
        foveated_batch=fov_batch,
        stock_batch=stock_batch,
    )


@dataclass
class BackendTiming:
    """One way of running the foveated model: its first call (loading, engine build, warm-up) and steady state."""

    backend: str
    first_call_s: float
    b1: Timing
    batch: Timing
    prompts: int

    @property
    def prompts_per_s(self) -> float:
        return 1e3 * self.prompts / self.batch.median_ms


@dataclass
class BackendComparison:
    """Backends side by side, on the same image, prompts, threads and process."""

    variant: str
    threads: int
    image_size: tuple[int, int]
    timings: list[BackendTiming]

    def to_dict(self) -> dict:
        rows = [{**asdict(t), "prompts_per_s": t.prompts_per_s} for t in self.timings]
        return {"variant": self.variant, "threads": self.threads, "image_size": self.image_size, "backends": rows}

    def table(self) -> str:
        first = self.timings[0]
        lines = [
            f"| backend | first call (s) | B=1 median (p90) ms | {first.prompts} prompts: prompts/s | "
            f"B=1 speed-up vs {first.backend} |",
            "|---|---|---|---|---|",
        ]
        for t in self.timings:
            lines.append(
                f"| {t.backend} | {t.first_call_s:.1f} | {t.b1.median_ms:.1f} ({t.b1.p90_ms:.1f}) | "
                f"{t.prompts_per_s:.2f} | {first.b1.median_ms / t.b1.median_ms:.2f}x |"
            )
        return "\n".join(lines)


def compare_backends(
    makers: dict[str, Callable[[], Any]], image: np.ndarray, prompts: int, repeats: int = 20, warmup: int = 2
) -> list[BackendTiming]:
    """Time each backend `makers[name]()` builds: the first call (building included), then B=1 and a batch."""
    memory = _Memory(torch.device("cpu"))
    batch = bench_prompts(image, prompts)
    timings = []
    for name, make in makers.items():
        start = time.perf_counter()
        predictor = make()
        predictor.predict(image, batch[:1])
        first = time.perf_counter() - start
        b1 = _time(lambda p=predictor: p.predict(image, batch[:1]), repeats, warmup, memory, f"{name} B=1")
        many = _time(lambda p=predictor: p.predict(image, batch), max(1, repeats // 4), 1, memory, f"{name} batch")
        timings.append(BackendTiming(name, first, b1, many, prompts))
    return timings
