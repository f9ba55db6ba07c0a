"""Under ROS 2, `stt bench --node` times the node's own path: cv_bridge and rclpy messages."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("cv_bridge")

from stt_ros.evaluation.node_bench import EXTRA_STEPS, STEPS, measure_node_overhead, rclpy_path


def test_the_node_path_is_found_and_every_step_is_timed():
    path = rclpy_path()
    assert path is not None and path.name == "cv_bridge + rclpy"
    overhead = measure_node_overhead(width=96, height=64, prompts=2, repeats=1, path=path)
    assert set(overhead.median_ms) == {*STEPS, *EXTRA_STEPS}
