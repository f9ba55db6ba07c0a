"""Foveated tokenization (DESIGN §2.2): nested square rings of coarser tokens around a fovea.

Everything here is in SAM-frame pixels. A pattern is pure geometry; `FoveationPattern.extract` turns an
image and B fovea centres into B token sets in one batched call (integral images + gathers, no loop over
tokens), on whatever device the image tensor lives on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the onnxruntime backend runs without torch: patterns as geometry only, no extraction
    torch = F = None

TOKEN_MODES = ("pixel", "pooled")
# The zero-shot winner of `stt variants` on the reference model (README, "Reference model"): pooled coarse
# tokens agree with stock SAM better than box-averaged pixels (0.44 vs 0.36 IoU).
DEFAULT_TOKENS = "pooled"


@dataclass(frozen=True)
class TokenLayout:
    """Per-token geometry relative to the pattern origin; tokens are ordered level by level, row-major."""

    corners: np.ndarray  # (N, 2) int, (x, y) px of each token's top-left corner
    strides: np.ndarray  # (N,) int
    levels: np.ndarray  # (N,) int
    level_slices: tuple[slice, ...]  # tokens of level l are corners[level_slices[l]]


@dataclass(frozen=True)
class FoveatedTokens:
    """B token sets. Patches are SAM-normalised 16x16 RGB; invalid tokens hold zeros (the pixel mean)."""

    patches: torch.Tensor  # (B, N, 3, T, T) float32
    corners: torch.Tensor  # (B, N, 2) frame px (x, y), int64
    centres: torch.Tensor  # (B, N, 2) frame px (x, y), float32
    strides: torch.Tensor  # (N,) int64
    levels: torch.Tensor  # (N,) int64
    valid: torch.Tensor  # (B, N) bool: centre inside [0, img_size) on both axes
    origins: torch.Tensor  # (B, 2) int64 frame px (x, y) of the pattern's top-left corner


@dataclass(frozen=True)
class FoveationPattern:
    """Token size plus per-level strides and grid sizes; level l is a `grids[l]`-square of stride-s tokens.

    Level l's block spans `token_size * strides[l] * grids[l]` px and is centred on the fovea; each level
    keeps only the tokens outside the level below, so the levels tile the largest block exactly.
    """

    token_size: int
    strides: tuple[int, ...]
    grids: tuple[int, ...]

    def __init__(self, token_size: int, strides: Sequence[int], grids: Sequence[int]) -> None:
        object.__setattr__(self, "token_size", token_size)
        object.__setattr__(self, "strides", tuple(strides))
        object.__setattr__(self, "grids", tuple(grids))
        self._validate()

    @classmethod
    def stt(cls) -> FoveationPattern:
        """Segment This Thing's pattern: 172 tokens covering 1280x1280 px."""
        return cls(16, (1, 2, 4, 6, 8), (4, 4, 6, 8, 10))

    @classmethod
    def uniform(cls, grid: int, token_size: int = 16) -> FoveationPattern:
        """One stride-1 level of `grid` x `grid` tokens: stock SAM's tokenization when grid = 2 * G."""
        return cls(token_size, (1,), (grid,))

    @classmethod
    def parse(cls, text: str) -> FoveationPattern:
        """'stt', 'uniform:G' or 'strides/grids' such as '1,2,4,6,8/4,4,6,8,10' (token size 16)."""
        text = text.strip()
        if text == "stt":
            return cls.stt()
        if text.startswith("uniform:"):
            return cls.uniform(_parse_ints(text.split(":", 1)[1], "uniform grid")[0])
        if "/" not in text:
            raise ValueError(
                f"pattern {text!r} is not 'stt', 'uniform:GRID' or 'STRIDES/GRIDS' (e.g. 1,2,4,6,8/4,4,6,8,10)"
            )
        strides, grids = text.split("/", 1)
        return cls(16, _parse_ints(strides, "strides"), _parse_ints(grids, "grids"))

    @property
    def spec(self) -> str:
        """The text `parse` reads back into this pattern, for records and reports ('stt' when it is STT's).

        `parse` knows SAM's 16 px patches only; another token size is appended for the reader.
        """
        if self == FoveationPattern.stt():
            return "stt"
        if self.strides == (1,) and self.token_size == 16:
            return f"uniform:{self.grids[0]}"
        text = f"{','.join(map(str, self.strides))}/{','.join(map(str, self.grids))}"
        return text if self.token_size == 16 else f"{text} (token size {self.token_size})"

    def _validate(self) -> None:
        if not isinstance(self.token_size, int | np.integer) or self.token_size <= 0:
            raise ValueError(f"token size must be a positive integer, got {self.token_size!r}")
        if not self.strides or not self.grids:
            raise ValueError("a pattern needs at least one level (strides and grids are empty)")
        if len(self.strides) != len(self.grids):
            raise ValueError(
                f"strides and grids must have one entry per level, got {len(self.strides)} strides "
                f"and {len(self.grids)} grids"
            )
        for name, values in (("strides", self.strides), ("grids", self.grids)):
            for value in values:
                if not isinstance(value, int | np.integer) or value <= 0:
                    raise ValueError(f"{name} must be positive integers, got {list(values)}")
        for level in range(1, len(self.strides)):
            if self.strides[level] <= self.strides[level - 1]:
                raise ValueError(f"strides must increase level by level, got {list(self.strides)}")
            inner, outer = self.block_sizes[level - 1], self.block_sizes[level]
            if outer <= inner:
                raise ValueError(
                    f"blocks must grow level by level, got {list(self.block_sizes)} px "
                    f"(block = token_size * stride * grid)"
                )
            step = self.token_size * self.strides[level]
            if inner % step or (outer - inner) % (2 * step):
                raise ValueError(
                    f"level {level} does not nest evenly around level {level - 1}: its {step} px tokens "
                    f"must tile the ring between the {inner} px and {outer} px blocks "
                    "(inner block a multiple of the token span, ring width a multiple of it on each side)"
                )

    @property
    def block_sizes(self) -> tuple[int, ...]:
        return tuple(self.token_size * s * g for s, g in zip(self.strides, self.grids, strict=True))

    @property
    def extent(self) -> int:
        """Side of the square the pattern covers, in px."""
        return self.block_sizes[-1]

    @property
    def level_counts(self) -> tuple[int, ...]:
        counts = [self.grids[0] ** 2]
        for level in range(1, len(self.grids)):
            inner = self.block_sizes[level - 1] // (self.token_size * self.strides[level])
            counts.append(self.grids[level] ** 2 - inner**2)
        return tuple(counts)

    @property
    def num_tokens(self) -> int:
        return sum(self.level_counts)

    @property
    def num_pixels(self) -> int:
        """Pixels that move into the model: token_size² per token (3 channels each)."""
        return self.num_tokens * self.token_size**2

    def layout(self) -> TokenLayout:
        return _layout(self)

    def origin(self, centres: torch.Tensor) -> torch.Tensor:
        """Top-left corner of the pattern for fovea centres (B, 2): snapped so stride-1 tokens are patches."""
        t = self.token_size
        return (t * torch.round((centres - self.extent / 2) / t)).to(torch.int64)

    def extract(
        self,
        image: torch.Tensor,
        centres: torch.Tensor,
        img_size: int,
        pixel_mean: torch.Tensor,
        pixel_std: torch.Tensor,
        mode: str = "pixel",
        image_size: torch.Tensor | None = None,
    ) -> FoveatedTokens:
        """Tokens of one (h, w, 3) uint8 frame image for B fovea centres (B, 2) in frame px.

        `image_size`: the (h, w) of the image when it comes padded (the exported graph takes a frame-sized
        image and the resized image's size as a tensor); pixels beyond it are padding.

        `pixel` tokens box-average each s x s pixel block of a stride-s token (STT); `pooled` tokens
        average the s² stride-1 patches they cover pixel by pixel, which equals the mean of SAM's patch
        embeddings of those patches because the embedding is linear. Pixels outside the resized image
        (SAM's padding, or beyond the frame) count as the pixel mean, i.e. zero after normalisation.
        """
        if mode not in TOKEN_MODES:
            raise ValueError(f"token mode must be one of {TOKEN_MODES}, got {mode!r}")
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"extract needs an (h, w, 3) uint8 image tensor, got {tuple(image.shape)} {image.dtype}")
        device = image.device
        layout = self.layout()
        origins = self.origin(centres.to(device).float())
        corners = origins[:, None, :] + torch.as_tensor(layout.corners, device=device)[None]
        strides = torch.as_tensor(layout.strides, device=device)
        levels = torch.as_tensor(layout.levels, device=device)
        centres_tok = corners.float() + (self.token_size * strides[None, :, None]).float() / 2
        valid = ((centres_tok >= 0) & (centres_tok < img_size)).all(dim=2)
        sums, counts = (_pixel_sums if mode == "pixel" else _pooled_sums)(
            image, image_size, corners, strides, self.token_size
        )
        mean = pixel_mean.to(device).reshape(1, 1, 1, 1, 3).float()
        std = pixel_std.to(device).reshape(1, 1, 1, 1, 3).float()
        area = (strides.float() ** 2).reshape(1, -1, 1, 1, 1)
        patches = (sums.float() - counts.float()[..., None] * mean) / (area * std)
        patches = torch.where(valid[:, :, None, None, None], patches, torch.zeros_like(patches))
        return FoveatedTokens(
            patches=patches.permute(0, 1, 4, 2, 3).contiguous(),
            corners=corners,
            centres=centres_tok,
            strides=strides,
            levels=levels,
            valid=valid,
            origins=origins,
        )

    def paint(
        self,
        values: torch.Tensor,
        tokens: FoveatedTokens,
        canvas_size: int,
        pixels_per_cell: int,
        fill: float,
    ) -> torch.Tensor:
        """Lay per-token k x k blocks (B, N, C, k, k) onto a (B, C, S, S) canvas of `pixels_per_cell` px cells.

        A stride-s token's block is stretched (nearest) over its footprint; cells no valid token covers get
        `fill`. Used for the decoder's low-res logit canvas, the neck's grid and visualisation.
        """
        batch, num, channels, k, _ = values.shape
        device = values.device
        index_map = torch.as_tensor(_paint_index(self, k, pixels_per_cell), device=device)
        span = index_map.shape[0]
        cells = torch.arange(canvas_size, device=device)
        offset = torch.div(tokens.origins, pixels_per_cell, rounding_mode="floor")  # (B, 2) cells
        local_y = cells[None, :] - offset[:, 1:2]  # (B, S)
        local_x = cells[None, :] - offset[:, 0:1]
        inside = ((local_y >= 0) & (local_y < span))[:, :, None] & ((local_x >= 0) & (local_x < span))[:, None, :]
        flat = index_map[local_y.clamp(0, span - 1)[:, :, None], local_x.clamp(0, span - 1)[:, None, :]]  # (B,S,S)
        token = torch.div(flat, k * k, rounding_mode="floor")
        covered = inside & torch.gather(tokens.valid, 1, token.reshape(batch, -1)).reshape(token.shape)
        source = values.permute(0, 2, 1, 3, 4).reshape(batch, channels, num * k * k)
        painted = torch.gather(source, 2, flat.reshape(batch, 1, -1).expand(-1, channels, -1))
        painted = painted.reshape(batch, channels, canvas_size, canvas_size)
        return torch.where(covered[:, None], painted, torch.full_like(painted, fill))

    def footprint_mean(self, grid: torch.Tensor, tokens: FoveatedTokens, cell: int) -> torch.Tensor:
        """Mean of a (B or 1, G, G, C) cell grid over each token's footprint, clipped to the grid: (B, N, C)."""
        return self.footprint_mean_of_integral(integral_image(grid, first_dim=1), tokens, cell).to(grid.dtype)

    def footprint_mean_of_integral(self, integral: torch.Tensor, tokens: FoveatedTokens, cell: int) -> torch.Tensor:
        """`footprint_mean` from a precomputed `integral_image`, for grids that do not change (pos_embed)."""
        side = integral.shape[1] - 1
        start = torch.div(tokens.corners, cell, rounding_mode="floor")
        span = torch.div(tokens.strides * self.token_size, cell, rounding_mode="floor").clamp(min=1)
        lo = start.clamp(0, side)
        hi = (start + span[None, :, None]).clamp(0, side)
        batch = torch.arange(tokens.corners.shape[0], device=integral.device)[:, None]
        batch = batch if integral.shape[0] > 1 else torch.zeros_like(batch)
        total = _box_sums(lambda y, x: integral[batch, y, x], lo[..., 1], hi[..., 1], lo[..., 0], hi[..., 0])
        count = ((hi - lo).prod(dim=2)).clamp(min=1)
        return total / count[..., None]

    def reconstruct(
        self, tokens: FoveatedTokens, img_size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor
    ) -> torch.Tensor:
        """What the model sees, as (B, img_size, img_size, 3) uint8 frames (mean colour where no token is)."""
        painted = self.paint(tokens.patches, tokens, img_size, 1, 0.0)
        std = pixel_std.to(painted.device).reshape(1, 3, 1, 1)
        mean = pixel_mean.to(painted.device).reshape(1, 3, 1, 1)
        return (painted * std + mean).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def integral_image(values: torch.Tensor, first_dim: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Integral image over dims `first_dim` and `first_dim + 1`, with a leading zero row and column.

    float64 by default so that a one-cell box reads its cell back to float32 precision, which the
    stock-SAM invariant needs; integers for exact pixel sums (torch's cumsum would widen int32 to int64).
    """
    dtype = torch.float64 if dtype is None else dtype
    out = values.to(dtype).cumsum(first_dim, dtype=dtype).cumsum(first_dim + 1, dtype=dtype)
    return F.pad(out, [0, 0] * (values.ndim - first_dim - 2) + [1, 0, 1, 0])


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"pattern {what} must be comma-separated integers, got {text!r}") from None


@functools.lru_cache(maxsize=32)
def _layout(pattern: FoveationPattern) -> TokenLayout:
    t, extent = pattern.token_size, pattern.extent
    corners, strides, levels, slices = [], [], [], []
    for level, (stride, grid, block) in enumerate(
        zip(pattern.strides, pattern.grids, pattern.block_sizes, strict=True)
    ):
        start = (extent - block) // 2
        span = t * stride
        offsets = start + span * np.arange(grid)
        ys, xs = np.meshgrid(offsets, offsets, indexing="ij")
        keep = np.ones_like(xs, dtype=bool)
        if level:
            inner = pattern.block_sizes[level - 1]
            lo = (extent - inner) // 2
            keep = ~(_within(xs, lo, inner, span) & _within(ys, lo, inner, span))
        first = sum(len(c) for c in corners)
        corners.append(np.stack([xs[keep], ys[keep]], axis=1))
        strides.append(np.full(int(keep.sum()), stride))
        levels.append(np.full(int(keep.sum()), level))
        slices.append(slice(first, first + int(keep.sum())))
    return TokenLayout(
        corners=np.concatenate(corners).astype(np.int64),
        strides=np.concatenate(strides).astype(np.int64),
        levels=np.concatenate(levels).astype(np.int64),
        level_slices=tuple(slices),
    )


def _within(starts: np.ndarray, lo: int, size: int, span: int) -> np.ndarray:
    """Whether tokens [start, start + span) lie inside [lo, lo + size)."""
    return (starts >= lo) & (starts + span <= lo + size)


@functools.lru_cache(maxsize=32)
def _paint_index(pattern: FoveationPattern, k: int, pixels_per_cell: int) -> np.ndarray:
    """For each cell of the pattern's extent, the flat index token * k² + sub-block it shows."""
    layout = pattern.layout()
    span = pattern.extent // pixels_per_cell
    index = np.zeros((span, span), dtype=np.int64)
    for token, (corner, stride) in enumerate(zip(layout.corners, layout.strides, strict=True)):
        size = pattern.token_size * int(stride) // pixels_per_cell
        x0, y0 = (int(c) // pixels_per_cell for c in corner)
        sub = (np.arange(size) * k) // size
        index[y0 : y0 + size, x0 : x0 + size] = token * k * k + sub[:, None] * k + sub[None, :]
    return index


def _box_sums(
    at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    y1: torch.Tensor,
    x0: torch.Tensor,
    x1: torch.Tensor,
) -> torch.Tensor:
    """Sums over [y0, y1) x [x0, x1) from an integral image read through `at(y, x)`."""
    return at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)


def _pixel_sums(
    image: torch.Tensor, size: torch.Tensor | None, corners: torch.Tensor, strides: torch.Tensor, t: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums and in-image counts of each s x s block of every token: (B, N, T, T, 3), (B, N, T, T); the image
    ends at `size` (h, w) if given, else at its own edge."""
    steps = torch.arange(t + 1, device=image.device)
    edges = corners[:, :, None, :] + strides[None, :, None, None] * steps[None, None, :, None]  # (B, N, T+1, 2)
    if size is None:
        ys, xs = edges[..., 1].clamp(0, image.shape[0]), edges[..., 0].clamp(0, image.shape[1])
    else:  # tensor bounds: the exported graph's image size is an input
        zero = torch.zeros_like(size[0])
        ys = torch.minimum(torch.maximum(edges[..., 1], zero), size[0])
        xs = torch.minimum(torch.maximum(edges[..., 0], zero), size[1])
    if image.device.type == "cpu" and not torch.compiler.is_compiling():  # OpenCV's integral: ~50x two cumsums
        integral = torch.from_numpy(cv2.integral(np.ascontiguousarray(image.numpy()), sdepth=cv2.CV_32S))
    else:
        integral = integral_image(image, dtype=torch.int64)
    y0, y1 = ys[:, :, :-1, None], ys[:, :, 1:, None]
    x0, x1 = xs[:, :, None, :-1], xs[:, :, None, 1:]
    return _box_sums(lambda y, x: integral[y, x], y0, y1, x0, x1), (y1 - y0) * (x1 - x0)


def _pooled_sums(
    image: torch.Tensor, size: torch.Tensor | None, corners: torch.Tensor, strides: torch.Tensor, t: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over the s x s patches a token covers, pixel by pixel (phase-aligned): (B, N, T, T, 3), and the
    counts of in-image pixels; the image ends at `size` (h, w) if given, else at its own edge."""
    h, w = image.shape[:2]
    rows, cols = -(-h // t), -(-w // t)
    pixels = image.to(torch.int32)  # sums stay below 255 * h * w < 2**31: int32 halves the memory traffic
    if size is None:
        inside = torch.ones((h, w, 1), dtype=torch.int32, device=image.device)
    else:  # tensor bounds: the exported graph's image size is an input
        steps = torch.arange(max(h, w), device=image.device)
        inside = ((steps[:h, None] < size[0]) & (steps[None, :w] < size[1])).to(torch.int32)[..., None]
        pixels = pixels * inside
    # The in-image indicator as a fourth channel: its sums are the counts. Built without in-place slices,
    # which an exported graph would turn into full-frame scatters.
    padded = F.pad(torch.cat([pixels, inside], dim=-1), (0, 0, 0, cols * t - w, 0, rows * t - h))
    phases = padded.reshape(rows, t, cols, t, 4).permute(0, 2, 1, 3, 4)  # (rows, cols, T, T, 4)
    integral = integral_image(phases, dtype=torch.int32)
    cells = torch.div(corners, t, rounding_mode="floor")
    y0 = cells[..., 1].clamp(0, rows)
    x0 = cells[..., 0].clamp(0, cols)
    y1 = (cells[..., 1] + strides[None]).clamp(0, rows)
    x1 = (cells[..., 0] + strides[None]).clamp(0, cols)
    sums = _box_sums(lambda y, x: integral[y, x], y0, y1, x0, x1)  # (B, N, T, T, 4)
    return sums[..., :3], sums[..., 3]
