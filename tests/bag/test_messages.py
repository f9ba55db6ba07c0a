"""The .msg files are the single source: the typestore registers exactly them, from every install layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from rosbags.typesys import get_types_from_msg

from stt_ros.bag import messages

REPO = Path(__file__).resolve().parents[2]


def test_registers_exactly_the_repository_msg_files():
    files = sorted(p.stem for p in (REPO / "msg").glob("*.msg"))
    assert files == sorted(messages.MESSAGE_NAMES)
    store = messages.typestore()
    for name in files:
        text = (REPO / "msg" / f"{name}.msg").read_text(encoding="utf-8")
        full = messages.msg_type_name(name)
        expected = get_types_from_msg(text, full)[full]
        assert store.fielddefs[full] == expected


def test_found_in_the_source_checkout():
    assert messages.find_msg_dir() == REPO / "msg"


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_cdr_round_trip_of_a_point_prompt(distro):
    import numpy as np

    store = messages.typestore(distro)
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=3, nanosec=5), frame_id="cam"
    )
    point = types["geometry_msgs/msg/Point"](x=10.5, y=20.0, z=0.0)
    prompt = types["stt_ros/msg/PointPrompt"](
        header=header,
        id="cup",
        points=[point],
        labels=np.array([1], dtype=np.uint8),
        has_box=True,
        box=np.array([1, 2, 30, 40], dtype=np.float32),
        track=True,
    )
    raw = store.serialize_cdr(prompt, "stt_ros/msg/PointPrompt")
    back = store.deserialize_cdr(raw, "stt_ros/msg/PointPrompt")
    assert back.id == "cup" and back.track and back.points[0].x == 10.5
    assert back.box.tolist() == [1, 2, 30, 40]


def test_installed_layouts(tmp_path, monkeypatch):
    # A ROS install prefix on AMENT_PREFIX_PATH is searched after the package and the checkout.
    share = tmp_path / "share" / "stt_ros" / "msg"
    share.mkdir(parents=True)
    for name in messages.MESSAGE_NAMES:
        (share / f"{name}.msg").write_text((REPO / "msg" / f"{name}.msg").read_text())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert share in messages._candidate_dirs()
    monkeypatch.setenv(messages.MSG_DIR_ENV, str(share))
    assert messages.find_msg_dir() == share


def test_missing_definitions_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(messages, "_candidate_dirs", lambda: [tmp_path])
    with pytest.raises(FileNotFoundError, match=messages.MSG_DIR_ENV):
        messages.find_msg_dir()


def test_unknown_distro():
    with pytest.raises(ValueError, match="humble"):
        messages.typestore("rolling-2099")
