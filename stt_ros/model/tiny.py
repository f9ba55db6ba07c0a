"""Small random-weight SAMs for tests and smoke runs (no checkpoint needed)."""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam

from stt_ros.foveation import DEFAULT_TOKENS, TOKEN_MODES
from stt_ros.model.encoder import ATTENTION_MODES, DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL
from stt_ros.model.sam_config import SamConfig, build_sam, randomize_positions


def tiny_config(img_size: int = 256, window_size: int = 4, depth: int = 2, embed_dim: int = 32) -> SamConfig:
    """A SAM shape small enough for CPU tests: windowed and global blocks, relative positions."""
    global_indexes = tuple(range(1, depth, 2))
    return SamConfig(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=2,
        encoder_global_attn_indexes=global_indexes,
        img_size=img_size,
        window_size=window_size,
        prompt_embed_dim=32,
        decoder_depth=2,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
        mask_in_chans=4,
    )


def tiny_sam(seed: int = 0, config: SamConfig | None = None) -> Sam:
    """A random-weight SAM with randomised `pos_embed` / `rel_pos_*` (deterministic by seed)."""
    torch.manual_seed(seed)
    sam = build_sam(config or tiny_config())
    generator = torch.Generator().manual_seed(seed + 1)
    return randomize_positions(sam, generator)


def stock_equivalent_options(sam: Sam) -> dict:
    """FoveatedSam options under which, with untrained adapters, it reproduces stock SAM (DESIGN §2.5): one
    stride-1 level twice the frame's grid, so it covers the frame from any fovea, in window mode."""
    encoder = sam.image_encoder
    grid = encoder.img_size // encoder.patch_embed.proj.kernel_size[0]
    return {"pattern": f"uniform:{2 * grid}", "attention": "window"}


def non_default_options() -> dict:
    """A value other than the default for each foveated-model option, so mismatch tests follow the defaults."""
    return {
        "tokens": next(mode for mode in TOKEN_MODES if mode != DEFAULT_TOKENS),
        "attention": next(mode for mode in ATTENTION_MODES if mode != DEFAULT_ATTENTION),
        "proportional": not DEFAULT_PROPORTIONAL,
    }
