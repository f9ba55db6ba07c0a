#!/usr/bin/env bash
# The real-ROS tests (part of `make test`): colcon-build this package in a temporary workspace, then run the
# rclpy tests (tests/ros) and the launch tests (tests/ros_live/test_*.py) against the installed package,
# listing each test with its result.
#
# Which ROS: the one already sourced ($ROS_DISTRO set: your Humble or Jazzy, with the node's Python deps
# installed as docs/ROS.md says); else the prebuilt Jazzy in ../shared/ros2 (CI and the development machine),
# which this script provisions exactly as docs/ROS.md tells users to. With neither, it skips, saying why.
# STT_OFFLINE_PYTHON: the Python of the offline `stt` tools (the Makefile passes the project venv's).
set -eo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
shared_ros=${STT_SHARED_ROS2:-$repo/../shared/ros2}

# ROS runs on the system python3: a virtualenv active in this shell (CI's, or yours) must not reach colcon,
# whose CMake would otherwise generate the messages with the venv's Python.
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vx "$VIRTUAL_ENV/bin" | paste -sd: -)
  unset VIRTUAL_ENV PYTHONHOME
fi

if [ -z "${ROS_DISTRO:-}" ]; then
  if [ ! -f "$shared_ros/env.sh" ]; then
    echo "ROS tests skipped: no ROS 2 here (source /opt/ros/<distro>/setup.bash first to run them)"
    exit 0
  fi
  bash "$shared_ros/install.sh" >/dev/null
  # shellcheck disable=SC1091
  source "$shared_ros/env.sh"
  # The node's Python dependencies, then those of the demo and of `ros2 run stt_ros stt ...`, then the
  # onnxruntime backend's, exactly as docs/ROS.md installs them on Jazzy (PEP 668: --break-system-packages;
  # numpy stays 1.x for cv_bridge).
  python3 -m pip install -q --user --break-system-packages -c "$repo/constraints.txt" \
    "numpy<2" torch torchvision segment-anything 2>&1 | (grep -v "^WARNING: " || true)
  python3 -m pip install -q --user --break-system-packages -c "$repo/constraints.txt" \
    "numpy<2" rosbags rosbags-image tqdm matplotlib 2>&1 | (grep -v "^WARNING: " || true)
  python3 -m pip install -q --user --break-system-packages -c "$repo/constraints.txt" \
    "numpy<2" onnxruntime pillow 2>&1 | (grep -v "^WARNING: " || true)
fi

work=$(mktemp -d)
trap 'ros2 daemon stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$work/ws/src" "$work/results"
ln -s "$repo" "$work/ws/src/stt_ros"
echo "colcon build (ROS 2 $ROS_DISTRO) in $work/ws"
(cd "$work/ws" && colcon build --cmake-args -DBUILD_TESTING=OFF > "$work/build.log" 2>&1) || {
  tail -40 "$work/build.log"
  exit 1
}
# shellcheck disable=SC1091
source "$work/ws/install/setup.bash"
export ROS_DOMAIN_ID=$((100 + RANDOM % 100))  # keep parallel runs on one machine apart
export STT_OFFLINE_PYTHON=${STT_OFFLINE_PYTHON:-python3}

status=0
# From outside the checkout, so `import stt_ros` finds the installed package (with its generated msg/).
(cd "$work" && python3 -m pytest -v -p no:cacheprovider --rootdir "$repo" -c "$repo/pyproject.toml" "$repo/tests/ros") \
  2>&1 | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" || status=1
cd "$repo"
for test in tests/ros_live/test_*.py; do
  name=$(basename "$test" .py)
  if ! timeout 600 launch_test --junit-xml "$work/results/$name.xml" "$test" > "$work/$name.log" 2>&1; then
    status=1
    echo "---- $test failed; its output ends:"
    tail -60 "$work/$name.log"
  fi
  grep -E "^(replay|stt_node /diagnostics)" "$work/$name.log" || true
done
python3 - "$work/results" <<'EOF'
import sys
from pathlib import Path
from xml.etree import ElementTree

for report in sorted(Path(sys.argv[1]).glob("*.xml")):
    for case in ElementTree.parse(report).iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        print(f"{'FAILED' if failed else 'PASSED'}  {report.stem} :: {case.get('name')}  ({float(case.get('time', 0)):.1f} s)")
EOF
exit $status
