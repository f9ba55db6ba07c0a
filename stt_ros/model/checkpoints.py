"""Loading SAM: official checkpoints from a path, the shipped reference model, or explicit random weights."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from stt_ros.model.sam_config import OFFICIAL_CONFIGS, SamConfig, build_sam, randomize_positions

LOGGER = logging.getLogger(__name__)
RANDOM = "random"
VARIANTS = (*OFFICIAL_CONFIGS, "reference")
NO_ADAPTER = "none"  # `adapter=` value for the untrained (identity) adapters: the zero-shot foveated model
REFERENCE_ADAPTER = Path(__file__).resolve().parent.parent / "weights" / "reference_adapter.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or made for another model."""


def variant_config(variant: str) -> SamConfig:
    if variant in OFFICIAL_CONFIGS:
        return OFFICIAL_CONFIGS[variant]
    if variant == "reference":
        from stt_ros.model.reference import SHIPPED_CONFIG

        return SHIPPED_CONFIG
    raise ValueError(f"unknown SAM variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def default_adapter(variant: str, checkpoint: str | Path | None) -> Path | None:
    """The adapter a predictor uses when none is named: the shipped one for the shipped reference weights.

    It was trained for exactly those weights, so any other checkpoint (yours, random, official) has none.
    """
    if variant == "reference" and checkpoint is None and REFERENCE_ADAPTER.is_file():
        return REFERENCE_ADAPTER
    return None


def load_sam(variant: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> Sam:
    """A SAM in eval mode on `device`.

    `checkpoint` is a path to an official `.pth` (vit_b/l/h) or, for "reference", to a `stt train-reference`
    weights file (None: the shipped one); "random" gives random weights (smoke tests and benchmarks only; warns).
    """
    config = variant_config(variant)
    if checkpoint is not None and str(checkpoint) == RANDOM:
        message = (
            f"stt_ros: building {variant} with RANDOM weights (checkpoint='random'): masks are noise; "
            "use this for benchmarks and smoke tests only"
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        LOGGER.warning(message)
        sam = randomize_positions(build_sam(config), torch.Generator().manual_seed(0))
        return sam.to(device)
    if variant == "reference":
        from stt_ros.model.reference import load_reference_sam

        try:
            return load_reference_sam(device, checkpoint)
        except (FileNotFoundError, ValueError) as error:
            raise CheckpointError(str(error)) from None
    if checkpoint is None:
        raise CheckpointError(
            f"variant {variant} needs a checkpoint: pass the path of the official SAM file "
            f"(e.g. sam_{variant}_....pth), or checkpoint='random' for random weights"
        )
    sam = build_sam(config)
    sam.load_state_dict(read_state_dict(checkpoint, variant, config))
    return sam.to(device)


def read_state_dict(path: str | Path, variant: str, config: SamConfig) -> dict[str, torch.Tensor]:
    """Read a SAM state dict with `weights_only=True` and check it fits `config`, naming what does not."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} could not be read as a PyTorch file: it is truncated or not a checkpoint ({error})"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a SAM state dict (a mapping of names to tensors)")
    expected = {name: tuple(t.shape) for name, t in build_sam_shapes(config).items()}
    missing = sorted(set(expected) - set(state))
    mismatched = sorted(name for name in expected if name in state and tuple(state[name].shape) != expected[name])
    if missing or mismatched:
        guess = guess_variant(state)
        hint = f"; it looks like a {guess} checkpoint" if guess and guess != variant else ""
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if mismatched:
            name = mismatched[0]
            found = tuple(state[name].shape)
            problems.append(f"{len(mismatched)} tensors of the wrong shape (e.g. {name}: {found} vs {expected[name]})")
        raise CheckpointError(f"checkpoint {path} does not fit SAM {variant}: {', '.join(problems)}{hint}")
    return state


def build_sam_shapes(config: SamConfig) -> dict[str, torch.Tensor]:
    """Parameter and buffer shapes of a SAM with `config`, without allocating its weights."""
    with torch.device("meta"):
        return build_sam(config).state_dict()


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Which official variant a state dict's encoder width and depth match, if any."""
    pos = state.get("image_encoder.pos_embed")
    if pos is None:
        return None
    depth = len({key.split(".")[2] for key in state if key.startswith("image_encoder.blocks.")})
    for name, config in OFFICIAL_CONFIGS.items():
        if pos.shape[-1] == config.encoder_embed_dim and depth == config.encoder_depth:
            return name
    return None
