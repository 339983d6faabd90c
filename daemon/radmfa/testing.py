"""Documented fakes for tests: use these rather than ad-hoc mocks.

They implement the same contracts as the real parts (radmfa.threads.BlockingRunner,
radmfa.directory.base.PasswordChecker) so a unit test exercises the real pipeline with a
deterministic clock and no threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred

from radmfa.directory.base import DirectoryOutcome, DirectoryResult, GroupResult, UserEntry

T = TypeVar("T")


class InlineRunner:
    """A BlockingRunner that runs the call on the spot: the Deferred has fired on return."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        self.calls += 1
        return defer.maybeDeferred(fn, *args, **kwargs)


@dataclass
class FakeDirectory:
    """A PasswordChecker over a dict; records every bind so tests can count them.

    ``unavailable`` simulates a dead directory; ``pending`` makes binds wait until the test
    fires them (to test retransmissions and concurrency).
    """

    users: dict[str, str] = field(default_factory=dict)
    #: What a search-then-bind would return with a successful bind (mail, mobile, ...).
    attributes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    unavailable: bool = False
    hold: bool = False
    binds: list[tuple[str, str]] = field(default_factory=list)
    pending: list[tuple[Deferred[DirectoryResult], DirectoryResult]] = field(default_factory=list)
    #: Group DNs (or names) per user, for :meth:`user_groups` (a GroupResolver).
    groups: dict[str, list[str]] = field(default_factory=dict)
    #: Users whose group lookup was asked for, in order (to count the lookups).
    group_lookups: list[str] = field(default_factory=list)
    #: The directory's own refusal of an account, whatever the password ("account_disabled",
    #: "password_expired", ...), as a real engine reports it in ``detail``.
    refusals: dict[str, str] = field(default_factory=dict)
    #: The entries handed back to check_password (search-then-bind reusing a group lookup).
    entries: list[UserEntry | None] = field(default_factory=list)

    def check_password(
        self, username: str, password: str, *, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]:
        if not password:
            raise AssertionError("the pipeline must never ask for an empty-password bind")
        self.entries.append(entry)
        if username in self.refusals:  # refused from the entry's attributes: no bind
            return defer.succeed(
                DirectoryResult(
                    DirectoryOutcome.INVALID_CREDENTIALS, detail=self.refusals[username]
                )
            )
        self.binds.append((username, password))
        result = self._result(username, password)
        if self.hold:
            d: Deferred[DirectoryResult] = Deferred()
            self.pending.append((d, result))
            return d
        return defer.succeed(result)

    def user_groups(self, username: str) -> Deferred[GroupResult]:
        self.group_lookups.append(username)
        if self.unavailable:
            return defer.succeed(GroupResult(DirectoryOutcome.UNAVAILABLE, detail="fake outage"))
        if username not in self.users:
            return defer.succeed(GroupResult(DirectoryOutcome.NO_SUCH_USER))
        entry = UserEntry(f"uid={username},ou=fake", dict(self.attributes.get(username, {})))
        return defer.succeed(
            GroupResult(DirectoryOutcome.OK, tuple(self.groups.get(username, ())), entry)
        )

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d, result in pending:
            d.callback(result)

    def _result(self, username: str, password: str) -> DirectoryResult:
        if self.unavailable:
            return DirectoryResult(DirectoryOutcome.UNAVAILABLE, detail="fake outage")
        expected = self.users.get(username)
        if expected is None:
            return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS)
        if expected == password:
            return DirectoryResult(
                DirectoryOutcome.OK,
                dn=f"uid={username},ou=fake",
                attributes=dict(self.attributes.get(username, {})),
            )
        return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS, dn=f"uid={username},ou=fake")

    def close(self) -> None:
        pass


@dataclass
class RecordingMailer:
    """Stands in for :class:`radmfa.delivery.smtp.SmtpTransport`: keeps every message.

    ``fail`` makes sends fail with a DeliveryError; ``hold`` keeps them pending until
    :meth:`release` (to prove the reply does not wait for delivery).
    """

    fail: bool = False
    hold: bool = False
    messages: list[Any] = field(default_factory=list)
    pending: list[Deferred[None]] = field(default_factory=list)

    def send(self, message: Any) -> Deferred[None]:
        from radmfa.factors.base import DeliveryError

        if self.fail:
            return defer.fail(DeliveryError("SMTP 127.0.0.1:25: Connection refused"))
        self.messages.append(message)
        if self.hold:
            d: Deferred[None] = Deferred()
            self.pending.append(d)
            return d
        return defer.succeed(None)

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.callback(None)

    def codes(self) -> list[str]:
        """The codes in the messages so far (the last word of the first line of the body)."""
        import re

        found = []
        for message in self.messages:
            body = message.get_content()
            match = re.search(r"\bis ([0-9A-Z]{6,12})\b", body)
            if match:
                found.append(match.group(1))
        return found


@dataclass
class RecordingSms:
    """Stands in for an SMS provider (webhook or command): keeps (number, message) pairs."""

    fail: bool = False
    sent: list[tuple[str, str]] = field(default_factory=list)

    def send(self, number: str, message: str, user: str) -> Deferred[None]:
        from radmfa.factors.base import DeliveryError

        if self.fail:
            return defer.fail(DeliveryError("SMS webhook answered HTTP 500"))
        self.sent.append((number, message))
        return defer.succeed(None)
