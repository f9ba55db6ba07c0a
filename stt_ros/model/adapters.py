"""The two trainable adapters (DESIGN §2.3). Both start as exact no-ops: their output factors are zero."""

from __future__ import annotations

import math

import torch
from torch import nn

PATCH_RANK = 8  # default rank of the patch projection adapter
GEOMETRY_HIDDEN = 64  # default width of the geometric encoding MLP


class PatchProjectionAdapter(nn.Module):
    """A per-level low-rank residual on SAM's patch embedding of a flattened token patch.

    Coarse tokens are blurred versions of the patches SAM was trained on; a small per-level correction
    lets training map them back towards what the frozen blocks expect.
    """

    def __init__(self, in_features: int, embed_dim: int, num_levels: int, rank: int = PATCH_RANK) -> None:
        super().__init__()
        self.rank = rank
        self.down = nn.Parameter(torch.randn(num_levels, in_features, rank) / math.sqrt(in_features))
        self.up = nn.Parameter(torch.zeros(num_levels, rank, embed_dim))

    def forward(self, patches: torch.Tensor, level_slices: tuple[slice, ...]) -> torch.Tensor:
        """Residual (B, N, C) for flattened patches (B, N, D) whose tokens are ordered by level."""
        parts = [
            patches[:, level_slice] @ self.down[level].to(patches.dtype) @ self.up[level].to(patches.dtype)
            for level, level_slice in enumerate(level_slices)
        ]
        return torch.cat(parts, dim=1)


class GeometricEncodingAdapter(nn.Module):
    """An MLP of (x / img_size, y / img_size, log2 stride) added to the sampled SAM position embedding.

    SAM's `pos_embed` knows where a token is but not how large it is; this learns the rest.
    """

    def __init__(self, embed_dim: int, hidden: int = GEOMETRY_HIDDEN) -> None:
        super().__init__()
        self.hidden = hidden
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, centres: torch.Tensor, strides: torch.Tensor, img_size: int) -> torch.Tensor:
        """(B, N, C) from token centres (B, N, 2) in frame px and strides (N,)."""
        scale = torch.log2(strides.to(centres.dtype)).expand(centres.shape[0], -1)[..., None]
        features = torch.cat([centres / img_size, scale], dim=-1)
        return self.net(features.to(self.net[0].weight.dtype))
