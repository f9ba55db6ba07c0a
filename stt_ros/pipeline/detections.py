"""vision_msgs/Detection2DArray → prompts, so any 2-D detector can ask for masks of what it found.

vision_msgs 4.x (Humble, Jazzy) puts the box centre at `bbox.center.position.{x,y}`; 3.x (Foxy) had
`bbox.center.{x,y}`. Both are read.
"""

from __future__ import annotations

from typing import Any

from stt_ros.prompts import Prompt

DETECTION_MODES = ("point", "box", "point_and_box")


def _centre(bbox: Any) -> tuple[float, float]:
    centre = bbox.center
    position = getattr(centre, "position", centre)
    return float(position.x), float(position.y)


def detection_id(detection: Any, index: int) -> str:
    """The detection's own `id`; else its best hypothesis' class id and its index; else `det<index>`."""
    own = str(getattr(detection, "id", "") or "")
    if own:
        return own
    results = list(getattr(detection, "results", []) or [])
    if results:
        best = max(results, key=lambda r: float(getattr(r, "hypothesis", r).score))
        class_id = str(getattr(best, "hypothesis", best).class_id)
        if class_id:
            return f"{class_id}_{index}"
    return f"det{index}"


def detection_prompts(msg: Any, mode: str = "point", prefix: str = "") -> list[Prompt]:
    """One prompt per detection with a non-empty box: its centre point, its box, or both.

    `prefix` keeps detector ids apart from clicked ones. Raises ValueError for an unknown mode.
    """
    if mode not in DETECTION_MODES:
        raise ValueError(f"unknown detection prompt mode {mode!r}; use one of {', '.join(DETECTION_MODES)}")
    prompts = []
    for index, detection in enumerate(msg.detections):
        bbox = detection.bbox
        u, v = _centre(bbox)
        width, height = float(bbox.size_x), float(bbox.size_y)
        if not (width > 0 and height > 0):
            continue
        box = (u - width / 2, v - height / 2, u + width / 2, v + height / 2)
        prompts.append(
            Prompt(
                points=[(u, v)] if mode != "box" else [],
                labels=[1] if mode != "box" else [],
                box=box if mode != "point" else None,
                id=prefix + detection_id(detection, index),
            )
        )
    return prompts
