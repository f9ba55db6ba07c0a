"""SAM's prompt encoder and mask decoder driven on a foveated token set (DESIGN §2.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import nn


def sparse_embeddings(prompt_encoder: PromptEncoder, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SAM's sparse prompt embeddings of prompts in its sparse layout (`geometry.SparsePrompts`): the positional
    encoding of each point's pixel centre plus its label's embedding; padding points (-1) are SAM's
    not-a-point embedding alone. Exactly `PromptEncoder(points, boxes)`, in one expression ONNX can carry."""
    pe = prompt_encoder.pe_layer.forward_with_coords(coords + 0.5, prompt_encoder.input_image_size)
    kinds = torch.cat([e.weight for e in prompt_encoder.point_embeddings])  # (4, C): labels 0, 1, 2, 3
    labelled = pe + kinds[labels.clamp(min=0)]
    padding = prompt_encoder.not_a_point_embed.weight.to(pe.dtype).expand_as(pe)
    return torch.where((labels == -1)[..., None], padding, labelled)


def attend(
    attention: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """SAM's decoder `Attention` with its own projections, plus a key mask SAM's version does not take."""
    heads = attention.num_heads
    q = attention._separate_heads(attention.q_proj(q), heads)
    k = attention._separate_heads(attention.k_proj(k), heads)
    v = attention._separate_heads(attention.v_proj(v), heads)
    mask = None if key_valid is None else key_valid[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attention.out_proj(attention._recombine_heads(out))


class FoveatedMaskDecoder(nn.Module):
    """Turns per-token image features and prompts into per-token 4x4 mask logits and IoU predictions."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(
        self,
        features: torch.Tensor,
        centres: torch.Tensor,
        valid: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        img_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 4, N, 16) in SAM's order (0 = single-mask, 1-3 multimask) and IoU (B, 4), for prompts in
        SAM's sparse layout."""
        sparse = sparse_embeddings(self.prompt_encoder, coords, labels)
        image_pe = self.prompt_encoder.pe_layer.forward_with_coords(centres, (img_size, img_size))
        src = features + self.prompt_encoder.no_mask_embed.weight.to(features.dtype)
        decoder = self.mask_decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens[None].expand(sparse.shape[0], -1, -1), sparse.to(output_tokens.dtype)], dim=1)
        queries, keys = self._two_way(src, image_pe.to(src.dtype), tokens, valid)
        batch, num, channels = keys.shape
        upscaled = decoder.output_upscaling(keys.reshape(batch * num, channels, 1, 1))  # (B*N, C/8, 4, 4)
        upscaled = upscaled.reshape(batch, num, upscaled.shape[1], 16)
        mask_tokens = queries[:, 1 : 1 + decoder.num_mask_tokens]
        hyper = torch.stack(
            [mlp(mask_tokens[:, index]) for index, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        logits = torch.einsum("bkc,bncp->bknp", hyper, upscaled)
        return logits, decoder.iou_prediction_head(queries[:, 0])

    def _two_way(
        self, src: torch.Tensor, pe: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's TwoWayTransformer, with invalid image tokens masked wherever they would be keys."""
        transformer = self.mask_decoder.transformer
        queries, keys = tokens, src
        for layer in transformer.layers:
            if layer.skip_first_layer_pe:
                queries = attend(layer.self_attn, queries, queries, queries)
            else:
                q = queries + tokens
                queries = queries + attend(layer.self_attn, q, q, queries)
            queries = layer.norm1(queries)
            q, k = queries + tokens, keys + pe
            queries = layer.norm2(queries + attend(layer.cross_attn_token_to_image, q, k, keys, valid))
            queries = layer.norm3(queries + layer.mlp(queries))
            q, k = queries + tokens, keys + pe
            keys = layer.norm4(keys + attend(layer.cross_attn_image_to_token, k, q, queries))
        q, k = queries + tokens, keys + pe
        queries = transformer.norm_final_attn(
            queries + attend(transformer.final_attn_token_to_image, q, k, keys, valid)
        )
        return queries, keys
