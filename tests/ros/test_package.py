"""The ROS package files: package.xml validates, CMake generates exactly msg/, launch files and the node
compile, and config/stt.yaml matches the node's parameter table."""

from __future__ import annotations

import json
import py_compile
import re
from pathlib import Path

import pytest
import yaml

from stt_ros.pipeline.parameters import DEFAULTS, PARAMETERS

REPO = Path(__file__).resolve().parents[2]


def test_package_xml_is_valid_format_3():
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO / "package.xml"))
    package.validate()
    assert package.name == "stt_ros" and package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]
    runtime = {d.name for d in package.exec_depends + package.build_depends}
    assert {"rclpy", "vision_msgs", "tf2_ros_py", "diagnostic_msgs", "sensor_msgs", "launch_ros"} <= runtime


def test_cmake_generates_exactly_the_msg_files():
    cmake = (REPO / "CMakeLists.txt").read_text()
    generated = sorted(re.findall(r'"msg/(\w+)\.msg"', cmake))
    assert generated == sorted(p.stem for p in (REPO / "msg").glob("*.msg"))
    # rosidl installs the Python package already; a second install target would clash.
    assert not re.search(r"^\s*ament_python_install_package", cmake, re.MULTILINE)
    assert 'DESTINATION "${PYTHON_INSTALL_DIR}/stt_ros"' in cmake
    assert "install(PROGRAMS scripts/stt_node scripts/stt DESTINATION lib/${PROJECT_NAME})" in cmake


@pytest.mark.parametrize(
    "path",
    [
        "launch/stt.launch.py",
        "launch/replay.launch.py",
        "launch/demo.launch.py",
        "stt_ros/ros/node.py",
        "scripts/stt_node",
        "scripts/stt",
    ],
)
def test_launch_files_and_node_compile(path, tmp_path):
    py_compile.compile(str(REPO / path), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.parametrize("script", ["stt_node", "stt"])
def test_scripts_are_executable(script):
    assert (REPO / "scripts" / script).stat().st_mode & 0o111


def test_docs_install_what_the_ros_tests_provision():
    """docs/ROS.md's pip commands are the ones tests/ros_live/run.sh runs: the documented path is the tested one."""

    def pip_lines(text: str) -> set[str]:
        lines = {" ".join(line.split()) for line in text.replace("\\\n", " ").splitlines()}
        return {
            re.sub(r'-c "?\S*constraints\.txt"?', "-c constraints.txt", line.replace(" -q", "").replace(" 2>&1", ""))
            .split(" | ")[0]
            for line in lines
            if line.startswith("python3 -m pip install")
        }

    provisioned = pip_lines((REPO / "tests" / "ros_live" / "run.sh").read_text())
    assert provisioned and provisioned <= pip_lines((REPO / "docs" / "ROS.md").read_text())


def test_yaml_has_every_parameter_with_its_default():
    config = yaml.safe_load((REPO / "config" / "stt.yaml").read_text())
    parameters = config["/**"]["ros__parameters"]
    assert parameters.pop("diagnostic_updater") == {"period": 1.0}  # diagnostic_updater's own parameter
    assert parameters == DEFAULTS
    for parameter in PARAMETERS:  # types must match: ROS 2 rejects e.g. an int for a double parameter
        assert type(parameters[parameter.name]) is type(parameter.default), parameter.name


def test_docs_list_every_parameter_with_its_default():
    docs = (REPO / "docs" / "ROS.md").read_text()
    for parameter in PARAMETERS:
        default = json.dumps(parameter.default)  # YAML's spelling: true, 0.1, "auto"
        assert f"| `{parameter.name}` | `{default}` |" in docs, parameter.name
