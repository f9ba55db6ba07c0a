"""SAM's frozen ViT encoder driven on a foveated token set (DESIGN §2.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from stt_ros.foveation import FoveatedTokens, FoveationPattern, integral_image
from stt_ros.model.adapters import (
    DEFAULT_GEOMETRY_INPUTS,
    DEFAULT_PATCH_ADAPTER,
    ENCODER_LORA,
    GEOMETRY_HIDDEN,
    PATCH_RANK,
    GeometricEncodingAdapter,
    LowRankLinear,
    PatchProjectionAdapter,
)

ATTENTION_MODES = ("window", "global")
DEFAULT_ATTENTION = "global"  # foveated tokens attend to all others; leads window attention (README: variants table)
DEFAULT_PROPORTIONAL = True  # a stride-s token weighs as the s² patches it replaces (README: variants table)
DEFAULT_WINDOW_PADDING = True  # SAM pads a 64-cell grid to whole windows; emulating it keeps stock parity


@dataclass
class TokenGeometry:
    """Where the tokens of one batch sit, in SAM grid cells; attention biases are cached per block shape."""

    cells: torch.Tensor  # (B, N, 2) token centres in cell units (x, y): centre / patch - 0.5
    valid: torch.Tensor  # (B, N)
    key_bonus: torch.Tensor  # (N,) proportional attention: log(s²), or zeros
    grid: int
    _masks: dict = field(default_factory=dict)
    _relative: dict = field(default_factory=dict)

    def key_mask(self, window: int) -> torch.Tensor:
        """(B, 1, N, N) additive mask: valid keys (in the same window when `window` > 0), self always."""
        if window not in self._masks:
            allowed = self.valid[:, None, :].expand(-1, self.valid.shape[1], -1)
            if window:
                ids = self.window_ids(window)
                allowed = allowed & (ids[:, :, None, :] == ids[:, None, :, :]).all(dim=-1)
            allowed = allowed | torch.eye(allowed.shape[1], dtype=torch.bool, device=allowed.device)
            bias = torch.where(allowed, self.key_bonus[None, None, :], torch.tensor(-math.inf, device=allowed.device))
            self._masks[window] = bias[:, None]
        return self._masks[window]

    def window_ids(self, window: int) -> torch.Tensor:
        """(B, N, 2) window index per axis: floor(centre / (patch * window)) = floor((cell + 0.5) / window)."""
        return torch.floor((self.cells + 0.5) / window).to(torch.int64)

    def relative(self, axis: int, length: int) -> Interpolation:
        """Table positions of the offsets query - key along `axis` (0 = x, 1 = y), in cells: (B, N, N)."""
        if (axis, length) not in self._relative:
            coord = self.cells[..., axis]
            self._relative[axis, length] = Interpolation.at(coord[:, :, None] - coord[:, None, :], length)
        return self._relative[axis, length]


def rel_pos_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """SAM's table resized to 2 * size - 1 entries exactly as `get_rel_pos` does (a no-op for official ones)."""
    length = 2 * size - 1
    if rel_pos.shape[0] == length:
        return rel_pos
    resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
    return resized.reshape(-1, length).permute(1, 0)


@dataclass(frozen=True)
class Interpolation:
    """Where continuous offsets fall in a table of `length` entries: neighbours and weight, clamped to the ends."""

    low: torch.Tensor
    high: torch.Tensor
    weight: torch.Tensor

    @classmethod
    def at(cls, offsets: torch.Tensor, length: int) -> Interpolation:
        position = (offsets + (length - 1) / 2).clamp(0, length - 1)
        low = position.floor().clamp(max=max(length - 2, 0)).to(torch.int64)
        return cls(low, (low + 1).clamp(max=length - 1), position - low)


def interpolate_table(projected: torch.Tensor, where: Interpolation) -> torch.Tensor:
    """Linear interpolation of q·table (B, H, N, L) at the positions `where` (B, N, M): (B, H, N, M).

    Interpolating the projections equals projecting the interpolated table rows (linearity), and costs
    one (N x L) product instead of N x M table rows.
    """
    expand = (-1, projected.shape[1], -1, -1)
    low_values = projected.gather(-1, where.low[:, None].expand(*expand))
    high_values = projected.gather(-1, where.high[:, None].expand(*expand))
    weight = where.weight.to(projected.dtype)[:, None]
    return low_values + (high_values - low_values) * weight


class FoveatedImageEncoder(nn.Module):
    """Patch embedding + adapters, SAM's blocks on the token set, and SAM's neck, for B foveae at once.

    With `encoder_lora` > 0 each block's qkv projection runs through a `LowRankLinear` held here, around
    SAM's layer, so the SAM object itself (and a stock predictor or teacher sharing it) is unchanged.
    """

    def __init__(
        self,
        encoder: ImageEncoderViT,
        pattern: FoveationPattern,
        attention: str = DEFAULT_ATTENTION,
        proportional: bool = DEFAULT_PROPORTIONAL,
        emulate_window_padding: bool = DEFAULT_WINDOW_PADDING,
        patch_rank: int = PATCH_RANK,
        geometry_hidden: int = GEOMETRY_HIDDEN,
        patch_adapter: str = DEFAULT_PATCH_ADAPTER,
        geometry_inputs: str = DEFAULT_GEOMETRY_INPUTS,
        encoder_lora: int = ENCODER_LORA,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention mode must be one of {ATTENTION_MODES}, got {attention!r}")
        patch = encoder.patch_embed.proj.kernel_size[0]
        if pattern.token_size != patch:
            raise ValueError(f"pattern token size {pattern.token_size} must equal SAM's patch size {patch}")
        self.encoder = encoder
        self.pattern = pattern
        self.attention = attention
        self.proportional = proportional
        self.emulate_window_padding = emulate_window_padding
        self.patch = patch
        self.grid = encoder.img_size // patch
        embed_dim = encoder.patch_embed.proj.out_channels
        levels = len(pattern.strides)
        self.patch_adapter = PatchProjectionAdapter(3 * patch * patch, embed_dim, levels, patch_rank, patch_adapter)
        self.geometry_adapter = GeometricEncodingAdapter(
            embed_dim, geometry_hidden, geometry_inputs, levels, pattern.extent
        )
        if encoder_lora < 0:
            raise ValueError(f"encoder LoRA rank must be at least 0 (0: none), got {encoder_lora}")
        self.encoder_lora = encoder_lora
        self.qkv_lora = (
            nn.ModuleList(LowRankLinear(block.attn.qkv, encoder_lora) for block in encoder.blocks)
            if encoder_lora
            else None
        )

    def forward(self, tokens: FoveatedTokens) -> torch.Tensor:
        """(B, N, C_out) neck features per token."""
        x = self.embed(tokens)
        geometry = self.geometry(tokens)
        for index, block in enumerate(self.encoder.blocks):
            qkv = block.attn.qkv if self.qkv_lora is None else self.qkv_lora[index]
            x = x + self._attention(block.attn, qkv, block.norm1(x), geometry, block.window_size)
            x = x + block.mlp(block.norm2(x))
        return self._neck(x, tokens)

    def geometry(self, tokens: FoveatedTokens) -> TokenGeometry:
        strides = tokens.strides.to(tokens.centres.dtype)
        bonus = 2 * torch.log(strides) if self.proportional else torch.zeros_like(strides)
        return TokenGeometry(tokens.centres / self.patch - 0.5, tokens.valid, bonus, self.grid)

    def embed(self, tokens: FoveatedTokens) -> torch.Tensor:
        proj = self.encoder.patch_embed.proj
        flat = tokens.patches.flatten(2).to(proj.weight.dtype)
        x = F.linear(flat, proj.weight.flatten(1), proj.bias)
        x = x + self.patch_adapter(flat, self.pattern.layout().level_slices)
        if self.encoder.pos_embed is not None:
            x = x + self.pattern.footprint_mean_of_integral(self._pos_integral(), tokens, self.patch).to(x.dtype)
        return x + self.geometry_adapter(tokens, self.encoder.img_size)

    def _pos_integral(self) -> torch.Tensor:
        """Integral image of SAM's frozen pos_embed, recomputed only when the parameter changes."""
        pos = self.encoder.pos_embed
        if torch.compiler.is_compiling():  # an export traces the computation itself (no data pointer to key on)
            return integral_image(pos.detach(), first_dim=1)
        key = (pos.device, pos._version, pos.data_ptr())
        if getattr(self, "_pos_cache_key", None) != key:
            self._pos_cache = integral_image(pos.detach(), first_dim=1)
            self._pos_cache_key = key
        return self._pos_cache

    def _attention(
        self, attn: nn.Module, qkv_layer: nn.Module, x: torch.Tensor, geometry: TokenGeometry, window_size: int
    ) -> torch.Tensor:
        batch, num, channels = x.shape
        heads = attn.num_heads
        qkv = qkv_layer(x).reshape(batch, num, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        windowed = window_size > 0 and self.attention == "window"
        bias = geometry.key_mask(window_size if windowed else 0).to(q.dtype)
        if attn.use_rel_pos:
            size = window_size if window_size > 0 else self.grid
            table_h = rel_pos_table(attn.rel_pos_h, size)
            table_w = rel_pos_table(attn.rel_pos_w, size)
            projected_h = q @ table_h.T.to(q.dtype)
            projected_w = q @ table_w.T.to(q.dtype)
            bias = bias + interpolate_table(projected_h, geometry.relative(1, table_h.shape[0]))
            bias = bias + interpolate_table(projected_w, geometry.relative(0, table_w.shape[0]))
            if windowed and self.emulate_window_padding and self.grid % window_size:
                pad_bias = self._padding_bias(projected_h, projected_w, geometry, window_size)
                key_bias, value_bias = attn.qkv.bias.reshape(3, heads, 1, -1)[1:]
                k = torch.cat([k, key_bias[None].expand(batch, -1, -1, -1).to(k.dtype)], dim=2)
                v = torch.cat([v, value_bias[None].expand(batch, -1, -1, -1).to(v.dtype)], dim=2)
                bias = torch.cat([bias.expand(-1, heads, -1, -1), pad_bias], dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return attn.proj(torch.cat(out.unbind(1), dim=-1))  # heads side by side: transpose + reshape, exportable

    def _padding_bias(
        self, projected_h: torch.Tensor, projected_w: torch.Tensor, geometry: TokenGeometry, window: int
    ) -> torch.Tensor:
        """Bias (B, H, N, 1) of one key standing for all zero-padded cells in each query's window.

        Stock SAM pads the grid to a multiple of the window after norm1, so padded cells are keys with
        k = k-bias and v = v-bias. They share k and v, so they merge into one key whose logit carries
        log Σ exp(relative-position bias) over the padded cells; the relative bias is separable in
        rows and columns, so that sum is (window rows x window cols) minus (valid rows x valid cols).
        """
        ids = geometry.window_ids(window)  # (B, N, 2)
        steps = torch.arange(window, device=ids.device)
        log_sums = []
        for axis, projected in ((1, projected_h), (0, projected_w)):
            lines = ids[..., axis : axis + 1] * window + steps  # (B, N, window) cell rows/cols of the window
            offsets = geometry.cells[..., axis : axis + 1] - lines
            logits = interpolate_table(projected, Interpolation.at(offsets, projected.shape[-1]))  # (B, H, N, window)
            inside = (lines < self.grid)[:, None]
            log_sums.append((logits.logsumexp(-1), logits.masked_fill(~inside, -math.inf).logsumexp(-1)))
        (rows_all, rows_valid), (cols_all, cols_valid) = log_sums
        total = rows_all + cols_all
        ratio = (rows_valid + cols_valid - total).clamp(max=0)
        padded = torch.log(-torch.expm1(ratio))  # -inf where the window has no padded cell
        has_padding = ((ids + 1) * window > self.grid).any(dim=-1)[:, None]
        return torch.where(has_padding, total + padded, torch.tensor(-math.inf, device=total.device))[..., None]

    def _neck(self, x: torch.Tensor, tokens: FoveatedTokens) -> torch.Tensor:
        """1x1 conv and LayerNorm per token, then the 3x3 conv and LayerNorm on the grid they tile."""
        batch, num, channels = x.shape
        conv1, norm1, conv2, norm2 = self.encoder.neck
        per_token = norm1(conv1(x.reshape(batch * num, channels, 1, 1))).reshape(batch, num, -1, 1, 1)
        grid = self.pattern.paint(per_token, tokens, self.grid, self.patch, 0.0)
        grid = norm2(conv2(grid))
        return self.pattern.footprint_mean(grid.permute(0, 2, 3, 1), tokens, self.patch)
