"""The password-checker contract: one call, one directory bind at most."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeGuard

from twisted.internet.defer import Deferred


class DirectoryOutcome(enum.Enum):
    OK = "ok"
    #: Wrong password, or unknown user in direct-bind mode (the directory cannot tell us).
    INVALID_CREDENTIALS = "invalid_credentials"
    NO_SUCH_USER = "no_such_user"
    AMBIGUOUS_USER = "ambiguous_user"
    #: No server answered in time: fail closed, but never count it against the user.
    UNAVAILABLE = "unavailable"


#: ``DirectoryResult.detail`` values saying the directory refuses the account itself, whatever
#: the password (AD bind data codes 530/531/532/533/701/773/775, userAccountControl bits,
#: accountExpires, ppolicy pwdAccountLockedTime/pwdReset). An expired password is one of them:
#: never treated as valid.
ACCOUNT_STATES = frozenset(
    {
        "account_disabled",
        "account_locked",
        "account_expired",
        "password_expired",
        "password_must_change",
        "logon_hours_restricted",
        "workstation_restricted",
    }
)


@dataclass(frozen=True, slots=True)
class UserEntry:
    """A user's entry as a user search found it. ``GroupResolver.user_groups`` returns it so
    the password check that follows binds to this DN without searching again."""

    dn: str
    #: Every attribute the search returned, by the name the engine asked for.
    attributes: dict[str, list[str]] = field(default_factory=dict)


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
    per call, and must not raise: transport problems become ``UNAVAILABLE``. ``entry`` (from
    :meth:`GroupResolver.user_groups`) is the user's entry already found: bind to its DN
    instead of searching again (callers pass it only to checkers that resolve groups).
    """

    def check_password(
        self, username: str, password: str, *, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]: ...

    def close(self) -> None:
        """Release connections and threads (called on shutdown and after a reload)."""
        ...


@dataclass(frozen=True, slots=True)
class GroupResult:
    """What :meth:`GroupResolver.user_groups` found."""

    #: OK, NO_SUCH_USER, AMBIGUOUS_USER or UNAVAILABLE (fail closed; never the user's fault).
    outcome: DirectoryOutcome
    #: Every group the user is in, nested ones included: DNs as the directory spelled them,
    #: or names (users file).
    groups: tuple[str, ...] = ()
    #: The user's entry when a user search found it (search-then-bind).
    entry: UserEntry | None = None
    server: str | None = None
    detail: str = ""


class GroupResolver(Protocol):
    """Optional capability of a password checker: the groups a user belongs to.

    Looked up on the service account's connection (never as the user, never a user bind), at
    most once per request and only when a policy rule with groups could decide it. Must not
    raise: transport problems become ``UNAVAILABLE``.
    """

    def user_groups(self, username: str) -> Deferred[GroupResult]: ...


class GroupFinder(Protocol):
    """Optional capability next to :class:`GroupResolver`: which of some named groups the
    directory has, searched on the service connection with the same group filter the
    lookups use. Start-up and reload ask it about every group a policy rule names, so a rule
    that can never match (a typo, a group the filter does not admit) is reported. Must not
    raise: transport problems become ``UNAVAILABLE``."""

    def find_groups(self, names: Sequence[str]) -> Deferred[GroupResult]:
        """``names``: folded group names (a cn, a users-file name) or DNs. The result's
        ``groups``: the matching groups found, as the directory spells them (DNs or names)."""
        ...


def resolves_groups(checker: object) -> TypeGuard[GroupResolver]:
    """Whether a password checker has the :class:`GroupResolver` capability (checkers
    declare none: having the method is the capability)."""
    return hasattr(checker, "user_groups")


def finds_groups(checker: object) -> TypeGuard[GroupFinder]:
    """Whether a password checker has the :class:`GroupFinder` capability."""
    return hasattr(checker, "find_groups")
