"""Everything lives in setup.cfg; this file only ships the repository's msg/ inside the wheel."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithMessages(build_py):
    """Copy `msg/*.msg` into the built `stt_ros/msg/` so offline tools register the same definitions."""

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "msg"
        target = Path(self.build_lib) / "stt_ros" / "msg"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob("*.msg")):
            shutil.copy2(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithMessages})
