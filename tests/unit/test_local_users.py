"""The users file: scrypt passwords, and groups (a third field, a groups file, nesting) for
policy rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from radmfa.directory.base import DirectoryOutcome
from radmfa.directory.local import (
    LocalUsersChecker,
    UsersFileError,
    hash_password,
    load_groups_file,
    read_users_file,
)
from radmfa.testing import InlineRunner

HASH = hash_password("pw", salt=b"\x01" * 16)


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    return out[0]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_users_file_with_and_without_groups(tmp_path: Path) -> None:
    path = write(tmp_path, "users", f"# demo\nalice:{HASH}:staff, vpn\nbob:{HASH}\n")
    hashes, groups = read_users_file(path)
    assert set(hashes) == {"alice", "bob"}
    assert groups == {"alice": {"staff", "vpn"}, "bob": set()}


def test_groups_file_nests_with_at_names(tmp_path: Path) -> None:
    users = write(tmp_path, "users", f"alice:{HASH}:staff\nbob:{HASH}\ncarol:{HASH}\n")
    groups = write(
        tmp_path,
        "groups",
        "# group: members\nstaff: bob\nvpn: @staff carol\neveryone: @vpn\nloop: @loop alice\n",
    )
    checker = LocalUsersChecker(users, InlineRunner(), groups)
    found = result(checker.user_groups("alice"))
    assert found.outcome is DirectoryOutcome.OK
    assert found.groups == ("everyone", "loop", "staff", "vpn")
    assert result(checker.user_groups("bob")).groups == ("everyone", "staff", "vpn")
    assert result(checker.user_groups("carol")).groups == ("everyone", "vpn")
    assert result(checker.user_groups("nobody")).outcome is DirectoryOutcome.NO_SUCH_USER


def test_password_check_still_works_and_ignores_an_entry(tmp_path: Path) -> None:
    checker = LocalUsersChecker(write(tmp_path, "users", f"alice:{HASH}:x\n"), InlineRunner())
    assert result(checker.check_password("alice", "pw")).outcome is DirectoryOutcome.OK
    assert result(checker.check_password("alice", "no")).outcome is not DirectoryOutcome.OK


@pytest.mark.parametrize(
    ("text", "problem"),
    [("staff alice\n", "expected 'group: member"), ("a: x\na: y\n", "listed twice")],
)
def test_groups_file_problems_name_the_line(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "groups", text)
    with pytest.raises(UsersFileError, match=problem) as info:
        load_groups_file(path)
    assert f"{path}:" in str(info.value)
