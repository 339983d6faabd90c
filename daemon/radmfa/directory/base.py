"""The password-checker contract: one call, one directory bind at most."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred


class DirectoryOutcome(enum.Enum):
    OK = "ok"
    #: Wrong password, or unknown user in direct-bind mode (the directory cannot tell us).
    INVALID_CREDENTIALS = "invalid_credentials"
    NO_SUCH_USER = "no_such_user"
    AMBIGUOUS_USER = "ambiguous_user"
    #: No server answered in time: fail closed, but never count it against the user.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class DirectoryResult:
    outcome: DirectoryOutcome
    #: The entry's DN (or the local user name) when known; used as the stable identity in logs.
    dn: str | None = None
    #: Which server answered, for logs and metrics.
    server: str | None = None
    detail: str = ""
    attributes: dict[str, list[str]] = field(default_factory=dict)


class PasswordChecker(Protocol):
    """Checks a user's directory password.

    Implementations must never bind with an empty password, must make at most one user bind
    per call, and must not raise: transport problems become ``UNAVAILABLE``.
    """

    def check_password(self, username: str, password: str) -> Deferred[DirectoryResult]: ...

    def close(self) -> None:
        """Release connections and threads (called on shutdown and after a reload)."""
        ...
