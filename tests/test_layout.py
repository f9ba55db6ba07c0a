"""The floor plan holds: everything outside stt_ros/ros/ imports without ROS, and README's public API imports."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import stt_ros

ROS_ONLY = ("rclpy", "cv_bridge", "launch", "launch_ros", "sensor_msgs", "geometry_msgs", "tf2_ros", "stt_ros.msg")


def core_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(stt_ros.__path__, "stt_ros.")
        if not info.name.startswith("stt_ros.ros")
    )


def test_every_module_outside_ros_imports_without_ros():
    """In a fresh interpreter where every ROS package is made unimportable."""
    blocker = (
        "import sys\n"
        f"for name in {ROS_ONLY!r}: sys.modules[name] = None\n"
        f"import importlib\nfor module in {core_modules()!r}: importlib.import_module(module)\n"
    )
    run = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_core_is_all_there():
    assert {"stt_ros.pipeline.scheduler", "stt_ros.bag.reader", "stt_ros.evaluation.bench"} <= set(core_modules())


def test_readme_public_api_imports():
    from stt_ros import FoveatedPredictor, FoveationPattern, Prompt, ReferencePredictor, SegmentationResult

    assert FoveationPattern.stt().num_tokens == 172
    assert all(callable(name) for name in (FoveatedPredictor, Prompt, ReferencePredictor, SegmentationResult))
