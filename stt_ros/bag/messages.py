"""ROS 2 message types without a ROS install: a `rosbags` typestore with our `msg/` definitions.

The `.msg` files in the repository's `msg/` are the single source of truth. colcon builds them with
rosidl; offline tools (bag reading and writing, tests) register the very same text here, so a bag written
by the node and one written by `stt` use identical definitions.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "stt_ros"
MESSAGE_NAMES = ("PointPrompt", "Segmentation", "SegmentationArray")
MSG_DIR_ENV = "STT_ROS_MSG_DIR"
DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
# vision_msgs 4.x (Humble and Jazzy), which rosbags does not ship: the fields of the types the node publishes
# and reads, so offline tools write Detection2D/3D arrays a ROS 2 install reads as its own.
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections",
}


def msg_type_name(name: str) -> str:
    """The full ROS 2 type name of one of our messages, e.g. ``stt_ros/msg/PointPrompt``."""
    return f"{PACKAGE}/msg/{name}"


def _candidate_dirs() -> list[Path]:
    """Where the `.msg` files can live, most specific first.

    An explicit override, then the wheel's package data (``stt_ros/msg``), then a source or editable
    checkout (``<repo>/msg``), then every ROS install prefix (``<prefix>/share/stt_ros/msg``), including
    the one this package was installed into by colcon (``<prefix>/lib/pythonX.Y/site-packages/stt_ros``).
    """
    here = Path(__file__).resolve().parents[1]  # the stt_ros package
    dirs = []
    if os.environ.get(MSG_DIR_ENV):
        dirs.append(Path(os.environ[MSG_DIR_ENV]))
    dirs += [here / "msg", here.parent / "msg"]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes += [str(parent) for parent in here.parents if (parent / "share" / PACKAGE).is_dir()]
    dirs += [Path(prefix) / "share" / PACKAGE / "msg" for prefix in prefixes]
    return dirs


def find_msg_dir() -> Path:
    """The directory holding our three `.msg` files; raises FileNotFoundError listing where it looked."""
    candidates = _candidate_dirs()
    for directory in candidates:
        if all((directory / f"{name}.msg").is_file() for name in MESSAGE_NAMES):
            return directory
    looked = "\n  ".join(str(d) for d in candidates)
    raise FileNotFoundError(
        f"stt_ros message definitions ({', '.join(n + '.msg' for n in MESSAGE_NAMES)}) not found; looked in:"
        f"\n  {looked}\nReinstall stt_ros, or set {MSG_DIR_ENV} to the repository's msg/ directory."
    )


def message_definitions(msg_dir: Path | None = None) -> dict[str, str]:
    """Full type name → `.msg` text, read from `msg_dir` (default: `find_msg_dir()`)."""
    directory = Path(msg_dir) if msg_dir is not None else find_msg_dir()
    return {
        msg_type_name(name): (directory / f"{name}.msg").read_text(encoding="utf-8") for name in MESSAGE_NAMES
    }


@cache
def typestore(distro: str = "humble") -> Typestore:
    """A typestore with the ROS 2 standard types of `distro` ("humble" or "jazzy"), vision_msgs and ours.

    Cached: the same store object is returned for the same distro, so message classes compare equal.
    """
    if distro not in DISTROS:
        raise ValueError(f"unknown ROS 2 distro {distro!r}; use one of {sorted(DISTROS)}")
    store = get_typestore(DISTROS[distro])
    types = {}
    for name, text in {**VISION_MSGS, **message_definitions()}.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
