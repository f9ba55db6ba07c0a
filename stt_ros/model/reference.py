"""The project's own small SAM, trained on synthetic scenes (DESIGN §2.7, variant "reference").

No official SAM checkpoint can be downloaded where the project is built, so this model gives the demo
masks that really follow objects and gives tests a segmentation quality to measure. It has SAM's exact
architecture (1024 frame, patch 16, windowed + global blocks with relative positions, SAM's prompt encoder
and mask decoder), only narrower and shallower.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from stt_ros.model.sam_config import SamConfig, build_sam

REFERENCE_CONFIG = SamConfig(
    encoder_embed_dim=96,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(3,),
    img_size=1024,
    patch_size=16,
    window_size=8,
    prompt_embed_dim=96,
    decoder_depth=2,
    decoder_mlp_dim=384,
    decoder_num_heads=4,
    iou_head_hidden_dim=96,
    mask_in_chans=8,
)

REFERENCE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "reference_sam.pt"
# What the shipped weights can do, said wherever they are used; update it with MODEL_CARD.md on retraining.
REFERENCE_STATUS = (
    "trained to held-out single-point mIoU 0.766 (oracle-of-3 0.810) against a 0.80 target: masks follow the "
    "prompted object but are coarse (see stt_ros/weights/MODEL_CARD.md)"
)


def save_reference_weights(sam: Sam, config: SamConfig, path: str | Path, meta: dict | None = None) -> None:
    """Store weights in fp16 (half the size; they load back into fp32) with the config they belong to."""
    state = {key: value.detach().to("cpu", torch.float16) for key, value in sam.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config.to_dict(), "state_dict": state, "meta": meta or {}}, path)


def reference_weights_meta(path: str | Path) -> dict:
    """How a weights file was made (steps, seed, training config, and the run it continued, if any)."""
    return torch.load(path, map_location="cpu", weights_only=True).get("meta", {})


def load_reference_sam(
    device: str | torch.device = "cpu",
    path: str | Path | None = None,
    config: SamConfig = REFERENCE_CONFIG,
) -> Sam:
    """The trained reference SAM in eval mode (fp32); a clear error if its weights are missing or stale."""
    path = Path(path) if path is not None else REFERENCE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"reference SAM weights not found at {path}; they ship with the package, or train them with "
            f"`stt train-reference --out {path}`"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
        raise ValueError(f"{path} is not a reference SAM weights file (expected keys 'config', 'state_dict')")
    stored = SamConfig.from_dict(blob["config"])
    if stored != config:
        raise ValueError(f"{path} was trained for a different SAM shape:\n  file: {stored}\n  want: {config}")
    sam = build_sam(config)
    expected = sam.state_dict()
    state = blob["state_dict"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match the reference SAM: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    sam.load_state_dict({key: value.float() for key, value in state.items()})
    return sam.to(device).eval()


def average_reference_weights(
    paths: Sequence[str | Path], out: str | Path, config: SamConfig = REFERENCE_CONFIG
) -> None:
    """Write the uniform average of several weights files of one shape (a "model soup").

    Runs continued from the same weights with different scenes land in one basin; their average scores
    higher than either (MODEL_CARD.md). The output's meta lists the meta of every file it averages.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two weights files, got {len(paths)}")
    states = [load_reference_sam("cpu", path, config).state_dict() for path in paths]
    sam = build_sam(config)
    sam.load_state_dict({key: sum(state[key] for state in states) / len(states) for key in states[0]})
    save_reference_weights(sam, config, out, {"average_of": [reference_weights_meta(path) for path in paths]})
