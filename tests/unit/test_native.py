"""radmfa.native: telling a compiled build from a pure one (``radmfa --version``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from radmfa import native
from radmfa.cli.main import main

DAEMON = Path(native.__file__).resolve().parents[1]


def test_every_compiled_module_exists_as_source() -> None:
    for path in native.COMPILED:
        assert (DAEMON / path).is_file(), path


def test_version_names_the_build_of_the_running_modules(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    line = capsys.readouterr().out.strip()
    compiled = [p for p in native.COMPILED if native.is_compiled(native.module_name(p))]
    if compiled:
        assert "compiled with mypyc" in line and "radius.codec" in line
    else:
        assert line.endswith(", pure Python")


def test_a_copy_without_extension_modules_reports_pure(tmp_path: Path) -> None:
    copy = tmp_path / "daemon"
    (copy / "radmfa").mkdir(parents=True)
    for path in DAEMON.joinpath("radmfa").rglob("*.py"):
        target = copy / path.relative_to(DAEMON)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(copy)}
    out = subprocess.run(
        [sys.executable, "-c", "from radmfa.native import describe; print(describe())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "pure Python"


def test_a_compiled_module_older_than_its_source_is_reported_stale(tmp_path: Path) -> None:
    package = tmp_path / "pkg_native_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    suffix = native.EXTENSION_SUFFIXES[0]
    built = package / f"mod{suffix}"
    built.write_bytes(b"")  # never imported: only its name and time are read
    source = package / "mod.py"
    source.write_text("")
    os.utime(built, (1_000_000, 1_000_000))
    sys.path.insert(0, str(tmp_path))
    try:
        assert native.is_compiled("pkg_native_probe.mod")
        assert native.stale("pkg_native_probe.mod")
        os.utime(built, None)
        os.utime(source, (1_000_000, 1_000_000))
        assert not native.stale("pkg_native_probe.mod")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pkg_native_probe", None)
