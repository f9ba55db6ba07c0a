"""FoveatedSam: a frozen `segment_anything.Sam` that sees a foveated token set instead of the full grid."""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn

from stt_ros.foveation import TOKEN_MODES, FoveatedTokens, FoveationPattern
from stt_ros.frame import FramedPrompts
from stt_ros.model.decoder import FoveatedMaskDecoder
from stt_ros.model.encoder import FoveatedImageEncoder

ADAPTER_FORMAT_VERSION = 1
OUTSIDE_LOGIT = -20.0  # finite on purpose: SAM's bilinear upsampling turns -inf into NaN
SAM_TO_STT_ORDER = (1, 2, 3, 0)  # SAM's decoder puts the single-mask output first; we put it last


class FoveatedSam(nn.Module):
    """Tokenize around each prompt, run SAM's frozen encoder and decoder on the tokens, paint SAM's canvas.

    Only the adapters train; every SAM parameter is frozen. With untrained adapters and the uniform
    pattern this reproduces stock SAM (DESIGN §2.5).
    """

    def __init__(
        self,
        sam: Sam,
        pattern: FoveationPattern | None = None,
        attention: str = "window",
        tokens: str = "pixel",
        proportional: bool = False,
        emulate_window_padding: bool = True,
        patch_rank: int = 8,
        geometry_hidden: int = 64,
    ) -> None:
        super().__init__()
        if tokens not in TOKEN_MODES:
            raise ValueError(f"token mode must be one of {TOKEN_MODES}, got {tokens!r}")
        self.sam = sam
        self.pattern = pattern or FoveationPattern.stt()
        self.tokens = tokens
        for parameter in sam.parameters():
            parameter.requires_grad_(False)
        self.encoder = FoveatedImageEncoder(
            sam.image_encoder,
            self.pattern,
            attention=attention,
            proportional=proportional,
            emulate_window_padding=emulate_window_padding,
            patch_rank=patch_rank,
            geometry_hidden=geometry_hidden,
        ).to(sam.device)
        self.decoder = FoveatedMaskDecoder(sam.prompt_encoder, sam.mask_decoder)

    @property
    def img_size(self) -> int:
        return self.sam.image_encoder.img_size

    @property
    def canvas_size(self) -> int:
        """SAM's low-res logit canvas: 4 cells per grid cell."""
        return 4 * self.encoder.grid

    def tokenize(self, image: torch.Tensor, fovea: torch.Tensor) -> FoveatedTokens:
        return self.pattern.extract(
            image, fovea, self.img_size, self.sam.pixel_mean.flatten(), self.sam.pixel_std.flatten(), self.tokens
        )

    def forward(self, image: torch.Tensor, prompts: FramedPrompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (B, 4, 4G, 4G) and IoU predictions (B, 4); index 0-2 multimask, 3 single-mask."""
        tokens = self.tokenize(image, prompts.fovea)
        features = self.encoder(tokens)
        logits, iou = self.decoder(features, tokens.centres, tokens.valid, prompts, self.img_size)
        order = list(SAM_TO_STT_ORDER)
        return self.paint_logits(logits[:, order], tokens), iou[:, order]

    def paint_logits(self, logits: torch.Tensor, tokens: FoveatedTokens) -> torch.Tensor:
        batch, outputs, num, _ = logits.shape
        blocks = logits.reshape(batch, outputs, num, 4, 4).permute(0, 2, 1, 3, 4)
        return self.pattern.paint(blocks, tokens, self.canvas_size, self.img_size // self.canvas_size, OUTSIDE_LOGIT)

    def config(self) -> dict:
        """Everything an adapter file must agree with to be loaded into this model."""
        encoder = self.encoder
        return {
            "pattern": {
                "token_size": self.pattern.token_size,
                "strides": list(self.pattern.strides),
                "grids": list(self.pattern.grids),
            },
            "tokens": self.tokens,
            "attention": encoder.attention,
            "proportional": encoder.proportional,
            "emulate_window_padding": encoder.emulate_window_padding,
            "patch_rank": encoder.patch_adapter.rank,
            "geometry_hidden": encoder.geometry_adapter.hidden,
            "embed_dim": encoder.encoder.patch_embed.proj.out_channels,
            "depth": len(encoder.encoder.blocks),
            "img_size": self.img_size,
        }

    def adapter_modules(self) -> dict[str, nn.Module]:
        return {"patch_adapter": self.encoder.patch_adapter, "geometry_adapter": self.encoder.geometry_adapter}

    def save_adapters(self, path: str | Path, variant: str, extra: dict | None = None) -> None:
        state = {name: module.state_dict() for name, module in self.adapter_modules().items()}
        payload = {
            "format": "stt_ros.adapters",
            "version": ADAPTER_FORMAT_VERSION,
            "variant": variant,
            "config": self.config(),
            "state": state,
            "extra": extra or {},
        }
        torch.save(payload, Path(path))

    def load_adapters(self, path: str | Path, variant: str) -> dict:
        """Load an adapter file, refusing one made for another variant or configuration."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"adapter file {path} does not exist")
        try:
            payload = torch.load(path, map_location=self.sam.device, weights_only=True)
        except Exception as error:
            raise ValueError(f"adapter file {path} is not a readable PyTorch file ({error})") from None
        if not isinstance(payload, dict) or payload.get("format") != "stt_ros.adapters":
            raise ValueError(f"{path} is not an stt_ros adapter file (write one with `stt train`)")
        if payload.get("variant") != variant:
            raise ValueError(f"adapter {path} was trained for variant {payload.get('variant')!r}, not {variant!r}")
        mismatched = {
            key: (value, payload["config"].get(key))
            for key, value in self.config().items()
            if payload["config"].get(key) != value
        }
        if mismatched:
            details = ", ".join(
                f"{key}: model {ours!r} vs adapter {theirs!r}" for key, (ours, theirs) in mismatched.items()
            )
            raise ValueError(
                f"adapter {path} does not match this model ({details}); build the predictor with the adapter's settings"
            )
        for name, module in self.adapter_modules().items():
            module.load_state_dict(payload["state"][name])
        return payload.get("extra", {})
