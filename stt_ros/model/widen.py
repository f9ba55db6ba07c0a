"""Widening a trained SAM by an integer factor without changing what it computes (Net2WiderNet).

Training a wider reference model from scratch costs every stage again. Instead each channel of the trained
model is copied `factor` times: LayerNorm sees the same mean and variance over copies, a layer reading copies
divides its weights by `factor`, and attention keeps its heads, each `factor` times wider, with the key and
relative-position scales that keep every logit. The wider model starts from the trained one's masks; a
little noise lets the copies drift apart once training resumes.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch
from segment_anything.modeling import Sam

from stt_ros.model.sam_config import SamConfig, build_sam

WIDENED_FIELDS = ("encoder_embed_dim", "prompt_embed_dim", "decoder_mlp_dim", "iou_head_hidden_dim")

# Per parameter (a regex on its name): the space of each axis it widens. "plain" copies channel c to
# c, c + n, c + 2n, ...; "heads" copies within each attention head; "qkv" is three "heads" sections; "dec" is
# the decoder's width, laid out like the positional encoding's [sin | cos] halves. A "+in" axis is summed over
# by the layer, so its weights are divided by the factor.
_ENCODER_ATTN = r"image_encoder\.blocks\.\d+\.attn"
_DECODER_ATTN = r"mask_decoder\.transformer\.(layers\.\d+\.\w+|final_attn_token_to_image)"
_DECODER_NORM = r"mask_decoder\.transformer\.(layers\.\d+\.norm\d|norm_final_attn)\.(weight|bias)"
_HIDDEN_MLP = r"mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers"
_RULES: tuple[tuple[str, dict[int, str]], ...] = (
    (r"image_encoder\.pos_embed", {3: "plain"}),
    (r"image_encoder\.patch_embed\.proj\.(weight|bias)", {0: "plain"}),
    (r"image_encoder\.blocks\.\d+\.norm\d\.(weight|bias)", {0: "plain"}),
    (rf"{_ENCODER_ATTN}\.rel_pos_[hw]", {1: "plain"}),
    (rf"{_ENCODER_ATTN}\.qkv\.weight", {0: "qkv", 1: "plain+in"}),
    (rf"{_ENCODER_ATTN}\.qkv\.bias", {0: "qkv"}),
    (rf"{_ENCODER_ATTN}\.proj\.weight", {0: "plain", 1: "heads+in"}),
    (rf"{_ENCODER_ATTN}\.proj\.bias", {0: "plain"}),
    (r"image_encoder\.blocks\.\d+\.mlp\.lin1\.weight", {0: "plain", 1: "plain+in"}),
    (r"image_encoder\.blocks\.\d+\.mlp\.lin(1|2)\.bias", {0: "plain"}),
    (r"image_encoder\.blocks\.\d+\.mlp\.lin2\.weight", {0: "plain", 1: "plain+in"}),
    (r"image_encoder\.neck\.0\.weight", {0: "dec", 1: "plain+in"}),
    (r"image_encoder\.neck\.[13]\.(weight|bias)", {0: "dec"}),
    (r"image_encoder\.neck\.2\.weight", {0: "dec", 1: "dec+in"}),
    (r"prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix", {1: "plain"}),
    (r"prompt_encoder\.(point_embeddings\.\d+|not_a_point_embed|no_mask_embed)\.weight", {1: "dec"}),
    (r"prompt_encoder\.mask_downscaling\.6\.(weight|bias)", {0: "dec"}),
    (rf"{_DECODER_ATTN}\.[qkv]_proj\.weight", {0: "heads", 1: "dec+in"}),
    (rf"{_DECODER_ATTN}\.[qkv]_proj\.bias", {0: "heads"}),
    (rf"{_DECODER_ATTN}\.out_proj\.weight", {0: "dec", 1: "heads+in"}),
    (rf"{_DECODER_ATTN}\.out_proj\.bias", {0: "dec"}),
    (_DECODER_NORM, {0: "dec"}),
    (r"mask_decoder\.transformer\.layers\.\d+\.mlp\.lin1\.weight", {0: "plain", 1: "dec+in"}),
    (r"mask_decoder\.transformer\.layers\.\d+\.mlp\.lin1\.bias", {0: "plain"}),
    (r"mask_decoder\.transformer\.layers\.\d+\.mlp\.lin2\.weight", {0: "dec", 1: "plain+in"}),
    (r"mask_decoder\.transformer\.layers\.\d+\.mlp\.lin2\.bias", {0: "dec"}),
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", {1: "dec"}),
    (r"mask_decoder\.output_upscaling\.0\.weight", {0: "dec+in", 1: "plain"}),  # ConvTranspose2d: (in, out)
    (r"mask_decoder\.output_upscaling\.[01]\.bias", {0: "plain"}),
    (r"mask_decoder\.output_upscaling\.1\.weight", {0: "plain"}),
    (r"mask_decoder\.output_upscaling\.3\.weight", {0: "plain+in", 1: "plain"}),
    (r"mask_decoder\.output_upscaling\.3\.bias", {0: "plain"}),
    (rf"{_HIDDEN_MLP}\.0\.weight", {0: "plain", 1: "dec+in"}),
    (rf"{_HIDDEN_MLP}\.[01]\.bias", {0: "plain"}),
    (rf"{_HIDDEN_MLP}\.1\.weight", {0: "plain", 1: "plain+in"}),
    (r"mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.2\.weight", {0: "plain", 1: "plain+in"}),
    (r"mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.2\.bias", {0: "plain"}),
    (r"mask_decoder\.iou_prediction_head\.layers\.2\.weight", {1: "plain+in"}),
)


def widened_config(config: SamConfig, factor: int) -> SamConfig:
    """`config` with every width `factor` times larger (heads, depths, frame and mask channels unchanged)."""
    return dataclasses.replace(config, **{name: getattr(config, name) * factor for name in WIDENED_FIELDS})


def widen_factor(config: SamConfig, wider: SamConfig) -> int:
    """The integer factor that turns `config` into `wider`, or an error that says what else differs."""
    factor = wider.encoder_embed_dim // config.encoder_embed_dim
    if factor < 1 or widened_config(config, factor) != wider:
        raise ValueError(
            f"can only widen by an integer factor with everything else equal: width {config.encoder_embed_dim} "
            f"(depth {config.encoder_depth}) cannot become width {wider.encoder_embed_dim} "
            f"(depth {wider.encoder_depth}); choose a multiple of {config.encoder_embed_dim} and the same depth"
        )
    return factor


def widen_sam(sam: Sam, config: SamConfig, factor: int, noise: float = 0.0, seed: int = 0) -> Sam:
    """A SAM `factor` times wider that computes what `sam` computes (exactly when `noise` is 0).

    `noise` adds Gaussian noise of that fraction of each widened tensor's standard deviation, so that the
    copies of a channel, which would otherwise get equal gradients forever, can diverge in training.
    """
    if factor < 1:
        raise ValueError(f"the widening factor must be a positive integer, got {factor}")
    wider = build_sam(widened_config(config, factor))
    heads = {"image_encoder": config.encoder_num_heads, "mask_decoder": config.decoder_num_heads}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, old in sam.state_dict().items():
        axes = next((axes for pattern, axes in _RULES if re.fullmatch(pattern, name)), {})
        new = old.detach().cpu().float()
        for axis, space in axes.items():
            kind, _, summed = space.partition("+")
            index = channel_copies(kind, new.shape[axis], factor, heads.get(name.split(".", 1)[0], 1))
            new = new.index_select(axis, index) / (factor if summed else 1)
        new = new * _logit_scale(name, new, factor)
        if axes and noise:
            new = new + noise * new.std() * torch.randn(new.shape, generator=generator)
        state[name] = new
    wider.load_state_dict(state)
    return wider.to(next(sam.parameters()).device)


def channel_copies(kind: str, size: int, factor: int, heads: int) -> torch.Tensor:
    """For each channel of the widened axis, the channel of the original it copies."""
    j = torch.arange(size * factor)
    if kind == "plain":
        return j % size
    if kind == "dec":  # [sin | cos] halves, each copied as a block, so the encoding's layout is kept
        half = size // 2
        return (j // (half * factor)) * half + j % half
    if kind == "heads":
        per_head = size // heads
        return (j // (per_head * factor)) * per_head + j % per_head
    if kind == "qkv":
        section = size // 3
        within = channel_copies("heads", section, factor, heads)
        return (j // (section * factor)) * section + within[j % (section * factor)]
    raise ValueError(f"unknown channel space {kind!r}")


def _logit_scale(name: str, tensor: torch.Tensor, factor: int) -> torch.Tensor | float:
    """Scales that keep attention logits and mask logits while head dimensions and channels grow `factor` times.

    A head `factor` times wider doubles q·k over copies and shrinks SAM's 1/sqrt(head_dim) by sqrt(factor):
    keys are scaled by 1/sqrt(factor). Relative positions (q·R, unscaled) by 1/factor. The hypernetwork's
    output meets `factor` copies of each upscaled channel in a dot product: 1/factor.
    """
    if re.fullmatch(r"image_encoder\.blocks\.\d+\.attn\.qkv\.(weight|bias)", name):
        scale = torch.ones(tensor.shape[0], *[1] * (tensor.dim() - 1))
        section = tensor.shape[0] // 3
        scale[section : 2 * section] = 1 / math.sqrt(factor)
        return scale
    if re.fullmatch(rf"{_DECODER_ATTN}\.k_proj\.(weight|bias)", name):
        return 1 / math.sqrt(factor)
    if re.fullmatch(rf"{_ENCODER_ATTN}\.rel_pos_[hw]", name):
        return 1 / factor
    if re.fullmatch(r"mask_decoder\.output_hypernetworks_mlps\.\d+\.layers\.2\.(weight|bias)", name):
        return 1 / factor
    return 1.0
