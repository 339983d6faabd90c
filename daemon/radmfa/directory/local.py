"""A users file for demos and labs: ``name:scrypt$N$r$p$salt$hash[:group,group]`` lines,
``#`` comments.

It lets a newcomer authenticate within a minute without a directory server. Passwords are
stored as scrypt hashes (stdlib ``hashlib.scrypt``), never in clear. Groups for policy rules
come from the optional third field and from an optional groups file of
``group: member member @group`` lines, where ``@group`` nests another group's members.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from twisted.internet.defer import Deferred, succeed

from radmfa.directory.base import DirectoryOutcome, DirectoryResult, GroupResult, UserEntry
from radmfa.threads import BlockingRunner

_N, _R, _P = 2**14, 8, 1


class UsersFileError(Exception):
    pass


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(encoded: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsersFileError(f"{path}: cannot read {what}: {e}") from e
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            found.append((number, line))
    return found


def read_users_file(path: str | Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(hash by user, groups by user); errors name the line so an admin can fix it."""
    users: dict[str, str] = {}
    groups: dict[str, set[str]] = {}
    for number, line in _lines(path, "users file"):
        name, sep, rest = line.partition(":")
        encoded, _, group_field = rest.partition(":")
        if not sep or not name or not encoded.startswith("scrypt$"):
            raise UsersFileError(
                f"{path}:{number}: expected 'name:scrypt$...[:group,...]' (see radmfa demo)"
            )
        if name in users:
            raise UsersFileError(f"{path}:{number}: user {name!r} listed twice")
        users[name] = encoded
        groups[name] = {g.strip() for g in group_field.split(",") if g.strip()}
    return users, groups


def load_users_file(path: str | Path) -> dict[str, str]:
    """The password hashes of the users file, by user name."""
    return read_users_file(path)[0]


def load_groups_file(path: str | Path) -> dict[str, set[str]]:
    """``group: member member @group`` lines -> members (``@name``: a nested group)."""
    groups: dict[str, set[str]] = {}
    for number, line in _lines(path, "groups file"):
        name, sep, members = line.partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name):
            raise UsersFileError(f"{path}:{number}: expected 'group: member member @group'")
        if name in groups:
            raise UsersFileError(f"{path}:{number}: group {name!r} listed twice")
        groups[name] = set(members.replace(",", " ").split())
    return groups


def user_group_closure(
    user: str, direct: set[str], groups_file: dict[str, set[str]]
) -> tuple[str, ...]:
    """Every group of ``user``: the users file's, the groups file's naming the user, and any
    group naming one of those as ``@group`` (to any depth; loops are harmless)."""
    found = set(direct) | {g for g, members in groups_file.items() if user in members}
    frontier = set(found)
    while frontier:
        nested = {f"@{g}" for g in frontier}
        frontier = {g for g, members in groups_file.items() if members & nested} - found
        found |= frontier
    return tuple(sorted(found))


# Verifying against this keeps unknown users as slow as known ones.
_DUMMY_HASH = hash_password("radmfa-timing-equaliser", salt=b"\0" * 16)


class LocalUsersChecker:
    """PasswordChecker (and GroupResolver) over a users file; scrypt runs in the directory
    thread pool."""

    def __init__(
        self, path: str | Path, runner: BlockingRunner, groups_path: str | Path | None = None
    ) -> None:
        self._users, direct = read_users_file(path)
        groups_file = load_groups_file(groups_path) if groups_path is not None else {}
        self._groups = {
            user: user_group_closure(user, direct[user], groups_file) for user in self._users
        }
        #: Every group the files name, with members or not (for find_groups).
        self._known = tuple(
            sorted(set(groups_file) | {g for groups in self._groups.values() for g in groups})
        )
        self._runner = runner

    def check_password(
        self, username: str, password: str, *, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]:
        return self._runner.run(self._check, username, password)

    def user_groups(self, username: str) -> Deferred[GroupResult]:
        """From memory: the files are read at start (and reload)."""
        groups = self._groups.get(username)
        if groups is None:
            return succeed(GroupResult(DirectoryOutcome.NO_SUCH_USER, server="local"))
        return succeed(GroupResult(DirectoryOutcome.OK, groups, server="local"))

    def find_groups(self, names: Sequence[str]) -> Deferred[GroupResult]:
        """:class:`~radmfa.directory.base.GroupFinder`: every group the files name (the
        caller picks the ones it asked about)."""
        return succeed(GroupResult(DirectoryOutcome.OK, self._known, server="local"))

    def _check(self, username: str, password: str) -> DirectoryResult:
        if not password:
            return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS, detail="empty password")
        encoded = self._users.get(username)
        if encoded is None:
            verify_password(_DUMMY_HASH, password)
            return DirectoryResult(DirectoryOutcome.NO_SUCH_USER)
        if verify_password(encoded, password):
            return DirectoryResult(DirectoryOutcome.OK, dn=username, server="local")
        return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS, dn=username, server="local")

    def close(self) -> None:
        pass
