"""A users file for demos and labs: ``name:scrypt$N$r$p$salt$hash`` lines, ``#`` comments.

It lets a newcomer authenticate within a minute without a directory server. Passwords are
stored as scrypt hashes (stdlib ``hashlib.scrypt``), never in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from twisted.internet.defer import Deferred

from radmfa.directory.base import DirectoryOutcome, DirectoryResult
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


def load_users_file(path: str | Path) -> dict[str, str]:
    """Parse the file; errors name the line so an admin can fix it."""
    users: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsersFileError(f"{path}: cannot read users file: {e}") from e
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep or not name or not encoded.startswith("scrypt$"):
            raise UsersFileError(f"{path}:{number}: expected 'name:scrypt$...' (see radmfa demo)")
        if name in users:
            raise UsersFileError(f"{path}:{number}: user {name!r} listed twice")
        users[name] = encoded
    return users


# Verifying against this keeps unknown users as slow as known ones.
_DUMMY_HASH = hash_password("radmfa-timing-equaliser", salt=b"\0" * 16)


class LocalUsersChecker:
    """PasswordChecker over a users file; scrypt runs in the directory thread pool."""

    def __init__(self, path: str | Path, runner: BlockingRunner) -> None:
        self._users = load_users_file(path)
        self._runner = runner

    def check_password(self, username: str, password: str) -> Deferred[DirectoryResult]:
        return self._runner.run(self._check, username, password)

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
