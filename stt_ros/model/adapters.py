"""The trainable adapters (DESIGN §2.3). All start as exact no-ops: their output factors are zero.

Two are always there (patch projection, geometric encoding); the optional low-rank update of the encoder's
qkv projections (`LowRankLinear` around SAM's frozen layer) leaves SAM's own weights untouched too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stt_ros.foveation import FoveatedTokens

PATCH_RANK = 8  # default rank of the patch projection adapter (the hidden width with the MLP kind)
GEOMETRY_HIDDEN = 64  # default width of the geometric encoding MLP
PATCH_ADAPTERS = ("lowrank", "mlp")
DEFAULT_PATCH_ADAPTER = "lowrank"
GEOMETRY_INPUTS = ("position", "fovea")
DEFAULT_GEOMETRY_INPUTS = "position"
ENCODER_LORA = 0  # rank of the encoder qkv update; 0: none (SAM's encoder exactly as trained)


class PatchProjectionAdapter(nn.Module):
    """A per-level residual on SAM's patch embedding of a flattened token patch: low-rank linear, or an MLP.

    Coarse tokens are blurred versions of the patches SAM was trained on; a small per-level correction
    lets training map them back towards what the frozen blocks expect. The MLP kind puts a GELU (with a
    bias) between the same two factors, so `rank` is its hidden width.
    """

    def __init__(
        self,
        in_features: int,
        embed_dim: int,
        num_levels: int,
        rank: int = PATCH_RANK,
        kind: str = DEFAULT_PATCH_ADAPTER,
    ) -> None:
        super().__init__()
        if kind not in PATCH_ADAPTERS:
            raise ValueError(f"patch adapter must be one of {PATCH_ADAPTERS}, got {kind!r}")
        if rank < 1:
            raise ValueError(f"patch adapter rank must be at least 1, got {rank}")
        self.rank, self.kind = rank, kind
        self.down = nn.Parameter(torch.randn(num_levels, in_features, rank) / math.sqrt(in_features))
        self.up = nn.Parameter(torch.zeros(num_levels, rank, embed_dim))
        if kind == "mlp":
            self.hidden_bias = nn.Parameter(torch.zeros(num_levels, 1, rank))

    def forward(self, patches: torch.Tensor, level_slices: tuple[slice, ...]) -> torch.Tensor:
        """Residual (B, N, C) for flattened patches (B, N, D) whose tokens are ordered by level."""
        parts = []
        for level, level_slice in enumerate(level_slices):
            hidden = patches[:, level_slice] @ self.down[level].to(patches.dtype)
            if self.kind == "mlp":
                hidden = F.gelu(hidden + self.hidden_bias[level].to(hidden.dtype))
            parts.append(hidden @ self.up[level].to(hidden.dtype))
        return torch.cat(parts, dim=1)


class GeometricEncodingAdapter(nn.Module):
    """An MLP of the token's geometry added to the sampled SAM position embedding.

    SAM's `pos_embed` knows where a token is but not how large it is; the "position" inputs are
    (x / img_size, y / img_size, log2 stride). The "fovea" inputs add where the token sits in the pattern
    (its offset from the fovea over the pattern's extent, and its level one-hot), so the correction can
    differ between a ring's inner and outer tokens.
    """

    def __init__(
        self,
        embed_dim: int,
        hidden: int = GEOMETRY_HIDDEN,
        inputs: str = DEFAULT_GEOMETRY_INPUTS,
        num_levels: int = 1,
        extent: int = 1,
    ) -> None:
        super().__init__()
        if inputs not in GEOMETRY_INPUTS:
            raise ValueError(f"geometry inputs must be one of {GEOMETRY_INPUTS}, got {inputs!r}")
        self.hidden, self.inputs = hidden, inputs
        self.num_levels, self.extent = num_levels, extent
        in_features = 3 + (2 + num_levels if inputs == "fovea" else 0)
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, tokens: FoveatedTokens, img_size: int) -> torch.Tensor:
        """(B, N, C) from the tokens' centres (frame px), strides, and with "fovea" their origins and levels."""
        centres = tokens.centres
        scale = torch.log2(tokens.strides.to(centres.dtype)).expand(centres.shape[0], -1)[..., None]
        parts = [centres / img_size, scale]
        if self.inputs == "fovea":
            offset = (centres - tokens.origins[:, None, :].to(centres.dtype)) / self.extent - 0.5
            level = F.one_hot(tokens.levels, self.num_levels).to(centres.dtype)
            parts += [offset, level.expand(centres.shape[0], -1, -1)]
        return self.net(torch.cat(parts, dim=-1).to(self.net[0].weight.dtype))


class LowRankLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank residual whose output factor starts at zero."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.down = nn.Parameter(torch.randn(base.in_features, rank, device=base.weight.device) / math.sqrt(rank))
        self.up = nn.Parameter(torch.zeros(rank, base.out_features, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.down.to(x.dtype) @ self.up.to(x.dtype)
