"""FoveatedSam: a frozen `segment_anything.Sam` that sees a foveated token set instead of the full grid."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from torch import nn

from stt_ros.foveation import DEFAULT_TOKENS, TOKEN_MODES, FoveatedTokens, FoveationPattern
from stt_ros.frame import FramedPrompts
from stt_ros.model.adapters import (
    DEFAULT_GEOMETRY_INPUTS,
    DEFAULT_PATCH_ADAPTER,
    ENCODER_LORA,
    GEOMETRY_HIDDEN,
    PATCH_RANK,
    LowRankLinear,
)
from stt_ros.model.decoder import FoveatedMaskDecoder
from stt_ros.model.encoder import DEFAULT_ATTENTION, DEFAULT_PROPORTIONAL, DEFAULT_WINDOW_PADDING, FoveatedImageEncoder

ADAPTER_FORMAT_VERSION = 2
# Settings version-1 files (before the richer adapters) did not record: they had these values.
VERSION_1_DEFAULTS = {
    "patch_adapter": DEFAULT_PATCH_ADAPTER,
    "geometry_inputs": DEFAULT_GEOMETRY_INPUTS,
    "encoder_lora": ENCODER_LORA,
}
OUTSIDE_LOGIT = -20.0  # finite on purpose: SAM's bilinear upsampling turns -inf into NaN
SAM_TO_STT_ORDER = (1, 2, 3, 0)  # SAM's decoder puts the single-mask output first; we put it last
DECODER_MODES = ("frozen", "full", "lowrank")
DEFAULT_DECODER = "frozen"
DECODER_RANK = 8  # default rank of the low-rank decoder update


def trainable_decoder(mask_decoder: nn.Module, mode: str, rank: int) -> nn.Module:
    """The mask decoder the foveated model runs: SAM's own when frozen, else a private copy.

    A copy keeps the SAM object itself untouched, so the same SAM can serve as the distillation teacher
    while its decoder (or a low-rank update of every linear layer in it) trains.
    """
    if mode not in DECODER_MODES:
        raise ValueError(f"decoder mode must be one of {DECODER_MODES}, got {mode!r}")
    if mode == "frozen":
        return mask_decoder
    decoder = copy.deepcopy(mask_decoder)
    if mode == "full":
        decoder.requires_grad_(True)
        return decoder
    if rank < 1:
        raise ValueError(f"decoder rank must be at least 1, got {rank}")
    linears = [(name, module) for name, module in decoder.named_modules() if isinstance(module, nn.Linear)]
    for name, module in linears:
        parent_name, _, child = name.rpartition(".")
        setattr(decoder.get_submodule(parent_name), child, LowRankLinear(module, rank))
    return decoder


class FoveatedSam(nn.Module):
    """Tokenize around each prompt, run SAM's frozen encoder and decoder on the tokens, paint SAM's canvas.

    Only the adapters train; every SAM parameter is frozen. With untrained adapters and the uniform
    pattern this reproduces stock SAM (DESIGN §2.5).
    """

    def __init__(
        self,
        sam: Sam,
        pattern: FoveationPattern | None = None,
        attention: str = DEFAULT_ATTENTION,
        tokens: str = DEFAULT_TOKENS,
        proportional: bool = DEFAULT_PROPORTIONAL,
        emulate_window_padding: bool = DEFAULT_WINDOW_PADDING,
        patch_rank: int = PATCH_RANK,
        geometry_hidden: int = GEOMETRY_HIDDEN,
        decoder: str = DEFAULT_DECODER,
        decoder_rank: int = DECODER_RANK,
        patch_adapter: str = DEFAULT_PATCH_ADAPTER,
        geometry_inputs: str = DEFAULT_GEOMETRY_INPUTS,
        encoder_lora: int = ENCODER_LORA,
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
            patch_adapter=patch_adapter,
            geometry_inputs=geometry_inputs,
            encoder_lora=encoder_lora,
        ).to(sam.device)
        self.decoder_mode = decoder
        self.decoder_rank = decoder_rank if decoder == "lowrank" else 0
        mask_decoder = trainable_decoder(sam.mask_decoder, decoder, decoder_rank)
        self.decoder = FoveatedMaskDecoder(sam.prompt_encoder, mask_decoder)

    @property
    def img_size(self) -> int:
        return self.sam.image_encoder.img_size

    @property
    def canvas_size(self) -> int:
        """SAM's low-res logit canvas: 4 cells per grid cell."""
        return 4 * self.encoder.grid

    def tokenize(
        self, image: torch.Tensor, fovea: torch.Tensor, image_size: torch.Tensor | None = None
    ) -> FoveatedTokens:
        return self.pattern.extract(
            image,
            fovea,
            self.img_size,
            self.sam.pixel_mean.flatten(),
            self.sam.pixel_std.flatten(),
            self.tokens,
            image_size,
        )

    def forward(self, image: torch.Tensor, prompts: FramedPrompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (B, 4, 4G, 4G) and IoU predictions (B, 4); index 0-2 multimask, 3 single-mask."""
        return self.segment(image, prompts.fovea, prompts.sparse_coords, prompts.sparse_labels)

    def segment(
        self,
        image: torch.Tensor,
        fovea: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        image_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` on plain tensors: the resized image (its (h, w) `image_size` when it comes padded to the
        frame), foveae and prompts in SAM's sparse layout. What the exported ONNX graph computes."""
        tokens = self.tokenize(image, fovea, image_size)
        return self.decode(tokens, self.encoder(tokens), coords, labels)

    def decode(
        self, tokens: FoveatedTokens, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`segment` from the encoder's per-token features (B, N, C), which feature distillation also reads."""
        logits, iou = self.decoder(features, tokens.centres, tokens.valid, coords, labels, self.img_size)
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
            "patch_adapter": encoder.patch_adapter.kind,
            "patch_rank": encoder.patch_adapter.rank,
            "geometry_inputs": encoder.geometry_adapter.inputs,
            "geometry_hidden": encoder.geometry_adapter.hidden,
            "encoder_lora": encoder.encoder_lora,
            "embed_dim": encoder.encoder.patch_embed.proj.out_channels,
            "depth": len(encoder.encoder.blocks),
            "img_size": self.img_size,
            "decoder": self.decoder_mode,
            "decoder_rank": self.decoder_rank,
        }

    def adapter_modules(self) -> dict[str, nn.Module]:
        """The modules with trainable weights; the mask decoder only when it trains."""
        modules = {"patch_adapter": self.encoder.patch_adapter, "geometry_adapter": self.encoder.geometry_adapter}
        if self.encoder.qkv_lora is not None:
            modules["encoder_lora"] = self.encoder.qkv_lora
        if self.decoder_mode != "frozen":
            modules["mask_decoder"] = self.decoder.mask_decoder
        return modules

    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Only the tensors that train, per module (a low-rank decoder stores its factors, not SAM's weights)."""
        return {
            name: {key: value.detach().clone() for key, value in module.named_parameters() if value.requires_grad}
            for name, module in self.adapter_modules().items()
        }

    def load_trainable_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """Inverse of `trainable_state`; every trainable tensor must be present, with its shape."""
        for name, module in self.adapter_modules().items():
            expected = {key for key, value in module.named_parameters() if value.requires_grad}
            given = state.get(name, {})
            missing, unexpected = sorted(expected - set(given)), sorted(set(given) - expected)
            if missing or unexpected:
                raise ValueError(f"adapter state for {name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
            module.load_state_dict(given, strict=False)

    def save_adapters(
        self, path: str | Path, variant: str, extra: dict | None = None, dtype: torch.dtype = torch.float32
    ) -> None:
        """Trainable tensors (in `dtype`: float16 halves a shipped file; they load back into float32) + config."""
        state = {
            name: {key: value.to("cpu", dtype) for key, value in tensors.items()}
            for name, tensors in self.trainable_state().items()
        }
        payload = {
            "format": "stt_ros.adapters",
            "version": ADAPTER_FORMAT_VERSION,
            "variant": variant,
            "config": self.config(),
            "state": state,
            "extra": extra or {},
        }
        torch.save(payload, Path(path))

    def load_adapters(self, path: str | Path, variant: str, start: bool = False) -> dict:
        """Load an adapter file, refusing one made for another variant or configuration.

        With `start` (a training run that continues from the file) the decoder settings may differ, so a
        feature-distilled file can start a run that also trains the decoder: the encoder's adapters load,
        the decoder's weights only when the file trained it the same way.
        """
        payload = read_adapter_file(path, self.sam.device)
        if payload.get("variant") != variant:
            raise ValueError(f"adapter {path} was trained for variant {payload.get('variant')!r}, not {variant!r}")
        free = ("decoder", "decoder_rank") if start else ()
        mismatched = {
            key: (value, payload["config"].get(key))
            for key, value in self.config().items()
            if key not in free and payload["config"].get(key) != value
        }
        if mismatched:
            details = ", ".join(
                f"{key}: model {ours!r} vs adapter {theirs!r}" for key, (ours, theirs) in mismatched.items()
            )
            raise ValueError(
                f"adapter {path} does not match this model ({details}); build the predictor with the adapter's settings"
            )
        state = payload["state"]
        if start:
            same_decoder = all(payload["config"].get(key) == self.config()[key] for key in free)
            kept = {name: tensors for name, tensors in state.items() if name != "mask_decoder" or same_decoder}
            state = {**self.trainable_state(), **kept}
        self.load_trainable_state(state)
        return payload.get("extra", {})


def read_adapter_file(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """The payload of an adapter file written by `FoveatedSam.save_adapters`, or a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {path} does not exist")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise ValueError(f"adapter file {path} is not a readable PyTorch file ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != "stt_ros.adapters":
        raise ValueError(f"{path} is not an stt_ros adapter file (write one with `stt train`)")
    payload["config"] = {**VERSION_1_DEFAULTS, **payload["config"]}
    return payload


def model_options(config: dict) -> dict:
    """`FoveatedSam` keyword arguments that rebuild the model an adapter `config()` describes."""
    pattern = config["pattern"]
    options = {
        "pattern": FoveationPattern(pattern["token_size"], pattern["strides"], pattern["grids"]),
        **{key: config[key] for key in ("tokens", "attention", "proportional", "emulate_window_padding")},
        **{key: config[key] for key in ("patch_adapter", "patch_rank", "geometry_inputs", "geometry_hidden")},
        "encoder_lora": config["encoder_lora"],
    }
    if config.get("decoder", "frozen") != "frozen":
        options.update(decoder=config["decoder"], decoder_rank=config["decoder_rank"])
    return options
