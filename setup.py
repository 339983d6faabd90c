"""The build steps pyproject.toml cannot express: ship the unit and example config, and compile
the hot path with mypyc.

``systemd/radmfa.service`` and ``config/radmfa.yaml`` stay at the top of the repository (the
source of truth admins and tests read); the wheel carries copies as ``radmfa/data/`` so an
installed radmfa can print them (``radmfa show-unit``, ``radmfa show-config``).

The modules listed in ``radmfa.native.COMPILED`` are built into C extensions with mypyc when a
C compiler and Python's headers are present; otherwise, or with ``RADMFA_PURE=1``, the package
stays pure Python (same sources, same behaviour, slower). A failed compilation falls back to pure
with a warning rather than failing the install.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import sysconfig
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: The list lives in radmfa.packaged, which reads the files back (stdlib only, safe to run here).
SHIPPED: dict[str, str] = runpy.run_path(str(HERE / "daemon" / "radmfa" / "packaged.py"))["SHIPPED"]
COMPILED: tuple[str, ...] = runpy.run_path(str(HERE / "daemon" / "radmfa" / "native.py"))[
    "COMPILED"
]

# mypy's view of the code while compiling: the type checker's own settings are pyproject.toml's
# [tool.mypy] (scripts/test.sh); here third-party packages are Any (no_site_packages), so the
# result does not depend on what the build environment has installed, and errors in the modules
# the compiled ones import are not ours to report (follow_imports = silent).
MYPYC_CONFIG = """\
[mypy]
follow_imports = silent
ignore_missing_imports = true
no_site_packages = true
explicit_package_bases = true
cache_dir = {cache}
"""


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "radmfa" / "data"
        target.mkdir(parents=True, exist_ok=True)
        for name, source in SHIPPED.items():
            shutil.copyfile(HERE / source, target / name)


class OptionalBuildExt(build_ext):
    """Compiled modules are an optimisation: a compiler that fails leaves a working pure build."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.warn(f"radmfa: compiling with mypyc failed ({error}); installing pure Python")


def why_pure() -> str | None:
    """Why this build cannot or must not compile, or None when it can."""
    if os.environ.get("RADMFA_PURE", "") not in ("", "0"):
        return "RADMFA_PURE is set"
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "Python's headers (Python.h) are missing: install python3-dev"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(os.environ.get("CC", compiler).split()[0]) is None:
        return f"no C compiler ({compiler}): install build-essential"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "mypyc is not installed in the build environment"
    return None


def remove_inplace_extensions() -> None:
    """An editable install keeps its extensions beside the sources, where Python imports them
    before the ``.py``: a pure rebuild must remove them, or the old compiled code keeps running."""
    daemon = HERE / "daemon"
    for suffix in EXTENSION_SUFFIXES:
        for path in COMPILED:
            (daemon / path.removesuffix(".py")).with_suffix(suffix).unlink(missing_ok=True)
        (daemon / f"radmfa__mypyc{suffix}").unlink(missing_ok=True)


def compiled_extensions() -> list[Any]:
    reason = why_pure()
    if reason is not None:
        print(f"radmfa: building pure Python ({reason})", file=sys.stderr)
        remove_inplace_extensions()
        return []
    from mypyc.build import mypycify

    config = Path(tempfile.mkdtemp(prefix="radmfa-mypyc-")) / "mypyc.ini"
    build = HERE / "build" / "mypyc"
    config.write_text(MYPYC_CONFIG.format(cache=build / ".mypy_cache"), encoding="utf-8")
    # mypy names modules by their path: run from daemon/ so radmfa/... is the package radmfa.
    here = os.getcwd()
    os.chdir(HERE / "daemon")
    try:
        return mypycify(
            ["--config-file", str(config), *COMPILED],
            group_name="radmfa",
            target_dir=str(build),
        )
    finally:
        os.chdir(here)


setup(
    cmdclass={"build_py": BuildPyWithData, "build_ext": OptionalBuildExt},
    ext_modules=compiled_extensions(),
)
