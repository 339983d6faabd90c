"""The one build step pyproject.toml cannot express: ship the unit and example config.

``systemd/radmfa.service`` and ``config/radmfa.yaml`` stay at the top of the repository (the
source of truth admins and tests read); the wheel carries copies as ``radmfa/data/`` so an
installed radmfa can print them (``radmfa show-unit``, ``radmfa show-config``).
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: The list lives in radmfa.packaged, which reads the files back (stdlib only, safe to run here).
SHIPPED: dict[str, str] = runpy.run_path(str(HERE / "daemon" / "radmfa" / "packaged.py"))["SHIPPED"]


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "radmfa" / "data"
        target.mkdir(parents=True, exist_ok=True)
        for name, source in SHIPPED.items():
            shutil.copyfile(HERE / source, target / name)


setup(cmdclass={"build_py": BuildPyWithData})
