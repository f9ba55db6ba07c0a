"""README's commands are current: every `stt ...` command in it parses with today's CLI, every `make` target it
names exists, and its Python API block imports what stt_ros exports (a newcomer runs them as printed)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from stt_ros.commands.cli import COMMAND_MODULES, build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
SHELL = [line.split("#")[0].strip() for block in BLOCKS for line in block.replace("\\\n", " ").splitlines()]
INLINE = re.findall(r"`(stt [^`]*)`", README)
COMMANDS = sorted({line for line in [*SHELL, *INLINE] if line.startswith("stt ") and "COMMAND" not in line})


@pytest.mark.parametrize("command", [c for c in COMMANDS if " -" in c])
def test_every_full_stt_command_in_readme_parses(command):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"{command!r} no longer parses: {stderr.getvalue().strip().splitlines()[-1]}")


@pytest.mark.parametrize("command", [c for c in COMMANDS if " -" not in c])
def test_every_named_stt_command_exists(command):
    names = {module.rsplit(".", 1)[1].replace("_", "-") for module in COMMAND_MODULES}
    assert set(command.split()[1:]) <= names | {"stt"}, command


def test_make_targets_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"\bmake (\w+)", README))
    assert targets >= {"demo", "test"}
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_the_python_api_block_names_what_stt_ros_exports():
    import stt_ros

    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    imported = re.search(r"^from stt_ros import (.+)$", block, re.M).group(1).split(", ")
    assert imported and all(hasattr(stt_ros, name) for name in imported)
