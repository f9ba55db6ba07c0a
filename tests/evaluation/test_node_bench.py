"""`stt bench --node` walks every step of the node's per-frame path on the offline twin (no ROS needed)."""

from __future__ import annotations

import math

from stt_ros.evaluation.node_bench import EXTRA_STEPS, STEPS, measure_node_overhead, rosbags_path


def test_every_step_is_timed_on_the_offline_twin():
    overhead = measure_node_overhead(width=96, height=64, prompts=2, repeats=1, path=rosbags_path())
    assert overhead.path == "rosbags-image + rosbags (offline twin)"
    assert set(overhead.median_ms) == {*STEPS, *EXTRA_STEPS}
    assert all(math.isfinite(ms) and ms >= 0 for ms in overhead.median_ms.values())
