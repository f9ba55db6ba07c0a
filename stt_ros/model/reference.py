"""The project's own small SAM, trained on synthetic scenes (DESIGN §2.7, variant "reference").

No official SAM checkpoint can be downloaded where the project is built, so this model gives the demo
masks that really follow objects and gives tests a segmentation quality to measure. It has SAM's exact
architecture (1024 frame, patch 16, windowed + global blocks with relative positions, SAM's prompt encoder
and mask decoder), only narrower and shallower.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam

from stt_ros.model.sam_config import SamConfig, build_sam

REFERENCE_WIDTH = 96  # the from-scratch shape: stages 1-9 of MODEL_CARD.md trained at it
REFERENCE_DEPTH = 4
SHIPPED_WIDTH = 192  # the shipped weights: stage 9 widened (`stt train-reference --init --width`) and trained on


def reference_config(width: int = REFERENCE_WIDTH, depth: int = REFERENCE_DEPTH) -> SamConfig:
    """The reference shape at another encoder/decoder width and encoder depth (defaults: the from-scratch one).

    Width is the encoder's embedding and the decoder's transformer dimension alike (SAM's neck maps one to the
    other, here without changing it); 4 heads throughout, global attention in every fourth block and the last.
    """
    if width < 32 or width % 16:
        raise ValueError(
            f"reference width must be a multiple of 16 of at least 32 (4 heads, 1/8 upscaling), got {width}"
        )
    if depth < 1:
        raise ValueError(f"reference encoder depth must be at least 1, got {depth}")
    return SamConfig(
        encoder_embed_dim=width,
        encoder_depth=depth,
        encoder_num_heads=4,
        encoder_global_attn_indexes=tuple(i for i in range(depth) if i % 4 == 3 or i == depth - 1),
        img_size=1024,
        patch_size=16,
        window_size=8,
        prompt_embed_dim=width,
        decoder_depth=2,
        decoder_mlp_dim=4 * width,
        decoder_num_heads=4,
        iou_head_hidden_dim=width,
        mask_in_chans=8,
    )


REFERENCE_CONFIG = reference_config()
SHIPPED_CONFIG = reference_config(SHIPPED_WIDTH)

REFERENCE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "reference_sam.pt"
# What the shipped weights can do, said wherever they are used; update it with MODEL_CARD.md on retraining.
REFERENCE_STATUS = (
    "trained to held-out single-point mIoU 0.801 (oracle-of-3 0.825; target 0.80): masks follow the prompted "
    "object but are coarse on small ones (see stt_ros/weights/MODEL_CARD.md)"
)


def save_reference_weights(sam: Sam, config: SamConfig, path: str | Path, meta: dict | None = None) -> None:
    """Store weights in fp16 (half the size; they load back into fp32) with the config they belong to."""
    state = {key: value.detach().to("cpu", torch.float16) for key, value in sam.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config.to_dict(), "state_dict": state, "meta": shared_repeats(meta or {})}, path)


def shared_repeats(tree: Any, seen: dict[str, Any] | None = None) -> Any:
    """`tree` with equal dicts, lists and tuples made one object, which pickle then writes once.

    An average's meta holds each run's lineage, and runs continued from one file share all of it: without
    this, every average repeats its ancestors' records (the stage-14 file: 0.8 MB of 10.4).
    """
    seen = {} if seen is None else seen
    if isinstance(tree, dict):
        node: Any = {key: shared_repeats(value, seen) for key, value in tree.items()}
    elif isinstance(tree, list | tuple):
        node = type(tree)(shared_repeats(value, seen) for value in tree)
    else:
        return tree
    return seen.setdefault(repr(node), node)


def read_reference_weights(path: str | Path) -> tuple[SamConfig, dict[str, torch.Tensor], dict]:
    """(shape, fp16 state dict, meta) of a `stt train-reference` weights file, or an error that says why not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"reference SAM weights not found at {path}; they ship with the package, or train them with "
            f"`stt train-reference --out {path}`"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} could not be read: it is truncated or not a weights file ({error})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
        raise ValueError(f"{path} is not a reference SAM weights file (expected keys 'config', 'state_dict')")
    return SamConfig.from_dict(blob["config"]), blob["state_dict"], blob.get("meta", {})


def open_reference_weights(path: str | Path, config: SamConfig | None = None) -> tuple[Sam, SamConfig, dict]:
    """(model in fp32 on the CPU, its shape, meta) from one read of a weights file, every part checked.

    The model has the shape the file records; `config`, if given, must be that shape.
    """
    stored, state, meta = read_reference_weights(path)
    if config is not None and stored != config:
        raise ValueError(f"{path} was trained for a different SAM shape:\n  file: {stored}\n  want: {config}")
    sam = build_sam(stored)
    expected = sam.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not match the SAM shape it records: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    sam.load_state_dict({key: value.float() for key, value in state.items()})
    return sam, stored, meta


def load_reference_sam(
    device: str | torch.device = "cpu",
    path: str | Path | None = None,
    config: SamConfig | None = None,
) -> Sam:
    """A trained reference SAM in eval mode (fp32), of the shape its file records unless `config` demands one.

    None loads the shipped weights; any `stt train-reference` output (another --width or --depth too) loads.
    """
    sam = open_reference_weights(Path(path) if path is not None else REFERENCE_WEIGHTS, config)[0]
    return sam.to(device).eval()


def average_reference_weights(paths: Sequence[str | Path], out: str | Path) -> None:
    """Write the uniform average of several weights files of one shape (a "model soup").

    Runs continued from the same weights with different scenes land in one basin; their average scores
    higher than either (MODEL_CARD.md). The output's meta lists the meta of every file it averages.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two weights files, got {len(paths)}")
    config = None  # the first file's shape; the others must have it
    states, metas = [], []
    for path in paths:
        sam, config, meta = open_reference_weights(path, config)
        states.append(sam.state_dict())
        metas.append(meta)
    sam = build_sam(config)
    sam.load_state_dict({key: sum(state[key] for state in states) / len(states) for key in states[0]})
    save_reference_weights(sam, config, out, {"average_of": metas})
