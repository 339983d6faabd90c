"""Portal sessions: a random id in an HttpOnly cookie, everything else on the server.

The cookie holds 256 random bits; the server keeps only their SHA-256, so a copy of the
session storage cannot be replayed as cookies. A session is made at sign-in (its id is new
then, and again when the second factor is proven: the id an attacker may have planted
before sign-in is never the one that gets rights), ends at sign-out, after ``session_idle``
without a request and ``session_max`` after it was made, whatever happens.

Storage is behind :class:`SessionStore` (asynchronous, so a store-backed one can sit behind
the daemon's store runner, shared by every worker and node); :class:`MemorySessionStore`
keeps them in this process until then.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from radmfa.auth.signin import SentCode
from radmfa.store.base import TokenRecord

__all__ = [
    "STAGE_CODE",
    "STAGE_ENROLL",
    "STAGE_FULL",
    "MemorySessionStore",
    "Session",
    "SessionManager",
    "SessionStore",
    "session_key",
]

#: The password was right; the second factor is still due. Nothing else may be done.
STAGE_CODE = "code"
#: Signed in on the password alone during the enrolment grace period: may enroll a factor.
STAGE_ENROLL = "enroll"
#: Signed in with a second factor (or just enrolled one).
STAGE_FULL = "full"

#: Bytes of randomness in a session id and a CSRF token.
ID_BYTES = 32


def session_key(session_id: str) -> bytes:
    """What the server keys a session by: the hash of the cookie's value, never the value."""
    return hashlib.sha256(session_id.encode("ascii", "replace")).digest()


@dataclass(frozen=True)
class Session:
    """One signed-in (or half signed-in) browser. Frozen: changes make a new record."""

    #: :func:`session_key` of the cookie's value.
    key: bytes
    #: The store key of the user, and the canonical name pages show.
    user: str
    name: str
    stage: str
    #: The form token of this session (compared in constant time on every POST).
    csrf: str
    created_at: float
    last_seen: float
    #: An authenticator app being enrolled: shown, not stored until a code confirms it.
    pending: TokenRecord | None = None
    #: A one-time message for the next page ("Authenticator app added").
    notice: str | None = None
    #: When the enrolment grace period ends, for ``STAGE_ENROLL`` pages (None: unknown).
    grace_ends_at: float | None = None
    #: The token id the pending enrolment replaces (a new phone for the old one).
    replacing: str | None = None
    #: A member of ``portal.helpdesk_groups``, checked at sign-in (full sessions only).
    helpdesk: bool = False
    #: An email/SMS code sent for this sign-in (``STAGE_CODE``), or to a new address being
    #: registered (its hash only).
    sent: SentCode | None = None


class SessionStore(Protocol):
    """Where sessions live. Every method is atomic on its own."""

    def get(self, key: bytes) -> Deferred[Session | None]: ...

    def touch(self, key: bytes, now: float) -> Deferred[Session | None]:
        """The session with its ``last_seen`` set to ``now`` (None: there is none)."""
        ...

    def put(self, session: Session) -> Deferred[None]: ...

    def delete(self, key: bytes) -> Deferred[None]: ...

    def take_pending(self, key: bytes) -> Deferred[TokenRecord | None]:
        """The session's pending enrolment, removed in the same step: a confirmation sent
        twice (two tabs, a double click) finds it once."""
        ...

    def purge(self, now: float, idle: float, longest: float) -> Deferred[int]:
        """Drop sessions past either timeout; how many went."""
        ...


class MemorySessionStore:
    """Sessions in this process's memory (the portal runs in one process; see
    :mod:`radmfa.portal`). Calls finish at once, on the reactor thread."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: bytes) -> Deferred[Session | None]:
        return succeed(self._sessions.get(key))

    def touch(self, key: bytes, now: float) -> Deferred[Session | None]:
        session = self._sessions.get(key)
        if session is not None:
            session = self._sessions[key] = replace(session, last_seen=now)
        return succeed(session)

    def put(self, session: Session) -> Deferred[None]:
        self._sessions[session.key] = session
        return succeed(None)

    def delete(self, key: bytes) -> Deferred[None]:
        self._sessions.pop(key, None)
        return succeed(None)

    def take_pending(self, key: bytes) -> Deferred[TokenRecord | None]:
        session = self._sessions.get(key)
        if session is None or session.pending is None:
            return succeed(None)
        self._sessions[key] = replace(session, pending=None)
        return succeed(session.pending)

    def purge(self, now: float, idle: float, longest: float) -> Deferred[int]:
        gone = [k for k, s in self._sessions.items() if expired(s, now, idle, longest)]
        for key in gone:
            del self._sessions[key]
        return succeed(len(gone))


def expired(session: Session, now: float, idle: float, longest: float) -> bool:
    return now >= session.last_seen + idle or now >= session.created_at + longest


class SessionManager:
    """Makes, finds, rotates and ends sessions under the configured timeouts."""

    def __init__(
        self, store: SessionStore, clock: IReactorTime, *, idle: float, longest: float
    ) -> None:
        self.store = store
        self.clock = clock
        self.idle = idle
        self.longest = longest

    async def find(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value (its idle timer restarted), else None; an
        expired one is deleted on the way."""
        if not session_id:
            return None
        key = session_key(session_id)
        session = await self.store.get(key)
        if session is None:
            return None
        now = self.clock.seconds()
        if expired(session, now, self.idle, self.longest):
            await self.store.delete(key)
            return None
        return await self.store.touch(key, now)

    async def start(
        self,
        user: str,
        name: str,
        stage: str,
        *,
        replacing: Session | None = None,
        grace_ends_at: float | None = None,
        helpdesk: bool = False,
    ) -> tuple[str, Session]:
        """A new session (and the cookie value that names it) for a sign-in step; the one
        it replaces ends. The absolute timeout counts from the first step of the sign-in."""
        if replacing is not None:
            await self.store.delete(replacing.key)
        now = self.clock.seconds()
        session_id = secrets.token_urlsafe(ID_BYTES)
        created = replacing.created_at if replacing is not None else now
        session = Session(
            key=session_key(session_id),
            user=user,
            name=name,
            stage=stage,
            csrf=secrets.token_urlsafe(ID_BYTES),
            created_at=created,
            last_seen=now,
            grace_ends_at=grace_ends_at,
            helpdesk=helpdesk and stage == STAGE_FULL,
        )
        await self.store.put(session)
        return session_id, session

    async def update(self, session: Session) -> None:
        await self.store.put(session)

    async def end(self, session: Session) -> None:
        await self.store.delete(session.key)

    async def take_pending(self, session: Session) -> TokenRecord | None:
        return await self.store.take_pending(session.key)

    def purge(self) -> Deferred[int]:
        return self.store.purge(self.clock.seconds(), self.idle, self.longest)


def same_token(expected: str, given: str | None) -> bool:
    """A form token compared in constant time (a missing one never matches)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(
        expected.encode("ascii", "replace"), given.encode("ascii", "replace")
    )
