"""radmfa demo --dir D reuses what it finds in D: only when D and those files are the caller's
own and nobody else can write them (root must never serve another user's configuration)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from radmfa.cli.main import EXIT_OK, EXIT_USAGE, main

OTHER_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def demo(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["demo", "--dir", str(directory), "--no-serve"])
    return code, capsys.readouterr().err


@needs_root
def test_a_directory_owned_by_another_user_is_refused(tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, OTHER_UID, OTHER_UID)

    code, err = demo(theirs, capsys)

    assert code == EXIT_USAGE
    assert f"{theirs} belongs to uid {OTHER_UID}, not to you" in err
    assert list(theirs.iterdir()) == []  # nothing written, nothing run


@needs_root
def test_a_config_planted_by_another_user_in_my_directory_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    planted = mine / "radmfa.yaml"
    planted.write_text("otp: {sms: {provider: command, command: {argv: [/bin/true]}}}\n")
    os.chown(planted, OTHER_UID, OTHER_UID)

    code, err = demo(mine, capsys)

    assert code == EXIT_USAGE
    assert f"{planted} belongs to uid {OTHER_UID}" in err
    assert sorted(p.name for p in mine.iterdir()) == ["radmfa.yaml"]


def test_a_directory_others_can_write_is_refused(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)

    code, err = demo(shared, capsys)

    assert code == EXIT_USAGE
    assert "is writable by others (mode 0777)" in err


def test_a_reused_file_that_is_a_link_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / "users").symlink_to("/etc/passwd")

    code, err = demo(mine, capsys)

    assert code == EXIT_USAGE
    assert f"{mine / 'users'} is not a plain file" in err


def test_my_own_private_directory_is_set_up_and_reused(tmp_path, capsys):
    mine = tmp_path / "mine"
    assert demo(mine, capsys)[0] == EXIT_OK
    assert (mine / "radmfa.yaml").is_file() and (mine / "radmfa.sqlite3").is_file()
    assert demo(mine, capsys)[0] == EXIT_OK  # a re-run reuses it
