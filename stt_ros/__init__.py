"""stt_ros: foveated tokenization in front of a frozen Segment Anything encoder.

The public API is imported lazily so `import stt_ros` stays cheap for the ROS node and the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "FoveationPattern": "stt_ros.foveation",
    "Prompt": "stt_ros.prompts",
    "FoveatedPredictor": "stt_ros.predictor",
    "ReferencePredictor": "stt_ros.predictor",
    "SegmentationResult": "stt_ros.prompts",
}

__all__ = ["FoveatedPredictor", "FoveationPattern", "Prompt", "ReferencePredictor", "SegmentationResult"]

if TYPE_CHECKING:
    from stt_ros.foveation import FoveationPattern
    from stt_ros.predictor import FoveatedPredictor, ReferencePredictor
    from stt_ros.prompts import Prompt, SegmentationResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stt_ros' has no attribute {name!r}")
