"""Portal sessions: a random id in an HttpOnly cookie, everything else in the store.

The cookie holds 256 random bits; the store keeps only their SHA-256, so a copy of the
database cannot be replayed as cookies. A session is made at sign-in (its id is new then,
and again when the second factor is proven: the id an attacker may have planted before
sign-in is never the one that gets rights), ends at sign-out, after ``session_idle``
without a request and ``session_max`` after it was made, whatever happens.

Sessions live in the store (:class:`StoreSessions`), so every worker and every node on one
database serves any browser. A session is written whole once, when it starts; after that
each change touches one field (a notice, a sent code, the pending enrolment), and the ones
that must happen once are taken, not read: two requests of one browser never overwrite each
other, and a confirmation sent twice finds its pending enrolment once. Rotating the id at a
sign-in step deletes the old session first; only the request that deleted it gets the new
one.

A session also records when its user last proved a second factor (``proven_at``: at the
sign-in's code step, at the enrolment that made it a full session, at a "confirm it is
you" step). A security change needs that to be at most ``reauth_after`` ago
(:meth:`SessionManager.fresh`): a session cookie stolen from a browser is worth an hour of
looking, not a new authenticator for the thief.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from radmfa.auth.signin import SentCode
from radmfa.store.base import PendingEnrolment, PortalSession, TokenRecord

__all__ = [
    "STAGE_CODE",
    "STAGE_ENROLL",
    "STAGE_FULL",
    "Session",
    "SessionManager",
    "SessionStore",
    "session_key",
]

#: The password was right; the second factor is still due. Nothing else may be done.
STAGE_CODE = "code"
#: Signed in on the password alone (the enrolment grace period, or an enrolment link): may
#: enroll a first factor.
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
    """One signed-in (or half signed-in) browser, as a request found it. Frozen: changes go
    to the store field by field (:class:`SessionManager`)."""

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
    pending: PendingEnrolment | None = None
    #: A one-time message for the next page ("Authenticator app added").
    notice: str | None = None
    #: When the enrolment grace period ends, for ``STAGE_ENROLL`` pages (None: unknown).
    grace_ends_at: float | None = None
    #: A member of ``portal.helpdesk_groups``, checked at sign-in (full sessions only).
    helpdesk: bool = False
    #: An email/SMS code sent for this sign-in (``STAGE_CODE``), or to a new address being
    #: registered (its hash only).
    sent: SentCode | None = None
    #: The hash of the enrolment link a password-only session was started with: spent by
    #: the enrolment it allows.
    link: bytes | None = None
    #: When the user last proved a second factor in this session (None: never).
    proven_at: float | None = None

    @property
    def replacing(self) -> str | None:
        """The token id the pending enrolment replaces (a new phone for the old one)."""
        return self.pending.replacing if self.pending is not None else None


def sent_text(sent: SentCode | None) -> str | None:
    """A sent code's record as the store keeps it (its hash, never the code)."""
    if sent is None:
        return None
    return json.dumps(
        {
            "factor": sent.factor,
            "token_id": sent.token_id,
            "address": sent.address,
            "masked": sent.masked,
            "code_hash": sent.code_hash.hex(),
            "expires_at": sent.expires_at,
            "tries": sent.tries,
        },
        sort_keys=True,
    )


def sent_from(text: str | None) -> SentCode | None:
    """The record back; one that cannot be read is no code at all (ask for a new one)."""
    if text is None:
        return None
    try:
        fields = json.loads(text)
        return SentCode(
            factor=str(fields["factor"]),
            token_id=fields["token_id"],
            address=str(fields["address"]),
            masked=str(fields["masked"]),
            code_hash=bytes.fromhex(fields["code_hash"]),
            expires_at=float(fields["expires_at"]),
            tries=int(fields["tries"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


def session_of(record: PortalSession) -> Session:
    return Session(
        key=record.key,
        user=record.user,
        name=record.name,
        stage=record.stage,
        csrf=record.csrf,
        created_at=record.created_at,
        last_seen=record.last_seen,
        pending=record.pending,
        notice=record.notice,
        grace_ends_at=record.grace_ends_at,
        helpdesk=record.helpdesk,
        sent=sent_from(record.sent),
        link=record.link,
        proven_at=record.proven_at,
    )


class SessionStore(Protocol):
    """Where sessions live: the store's portal calls, each atomic on its own (the daemon's
    :class:`~radmfa.store.facade.AsyncStore` is one)."""

    def put_portal_session(self, session: PortalSession) -> Deferred[None]: ...
    def touch_portal_session(self, key: bytes, now: float) -> Deferred[PortalSession | None]: ...
    def delete_portal_session(self, key: bytes) -> Deferred[bool]: ...
    def set_portal_notice(self, key: bytes, notice: str | None) -> Deferred[bool]: ...
    def set_portal_sent(self, key: bytes, sent: str | None) -> Deferred[bool]: ...
    def set_portal_proven(self, key: bytes, at: float) -> Deferred[bool]: ...
    def take_portal_sent(self, key: bytes) -> Deferred[str | None]: ...
    def offer_portal_pending(
        self, key: bytes, pending: PendingEnrolment | None, *, only_if_empty: bool = False
    ) -> Deferred[PendingEnrolment | None]: ...
    def take_portal_pending(self, key: bytes) -> Deferred[PendingEnrolment | None]: ...


class SessionManager:
    """Makes, finds, rotates and ends sessions under the configured timeouts, and says
    whether a session proved a factor recently enough for a security change."""

    def __init__(
        self,
        store: SessionStore,
        clock: IReactorTime,
        *,
        idle: float,
        longest: float,
        reauth_after: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.idle = idle
        self.longest = longest
        self.reauth_after = reauth_after

    async def find(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value (its idle timer restarted), else None."""
        if not session_id or len(session_id) > 128:
            return None
        record = await self.store.touch_portal_session(
            session_key(session_id), self.clock.seconds()
        )
        return session_of(record) if record is not None else None

    async def start(
        self,
        user: str,
        name: str,
        stage: str,
        *,
        replacing: Session | None = None,
        grace_ends_at: float | None = None,
        helpdesk: bool = False,
        link: bytes | None = None,
        notice: str | None = None,
    ) -> tuple[str, Session] | None:
        """A new session (and the cookie value that names it) for a sign-in step; the one
        it replaces ends. None when that one had ended already: another request of the
        same browser took this step first, and a step is taken once. The absolute timeout
        counts from the first step of the sign-in."""
        if replacing is not None and not await self.store.delete_portal_session(replacing.key):
            return None
        now = self.clock.seconds()
        session_id = secrets.token_urlsafe(ID_BYTES)
        created = replacing.created_at if replacing is not None else now
        # A full session starts at the step that proved a factor (a code, or a new factor
        # confirmed by its code); the other stages have proven none.
        proven_at = now if stage == STAGE_FULL else None
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
            link=link if stage == STAGE_ENROLL else None,
            notice=notice,
            proven_at=proven_at,
        )
        await self.store.put_portal_session(
            PortalSession(
                key=session.key,
                user=user,
                name=name,
                stage=stage,
                csrf=session.csrf,
                created_at=created,
                last_seen=now,
                idle=self.idle,
                ends_at=created + self.longest,
                grace_ends_at=grace_ends_at,
                helpdesk=session.helpdesk,
                link=session.link,
                notice=notice,
                proven_at=proven_at,
            )
        )
        return session_id, session

    def fresh(self, session: Session) -> bool:
        """Whether ``session`` may make a security change now: a full session whose user
        proved a second factor at most ``reauth_after`` ago. Nothing proven is never fresh."""
        if session.stage != STAGE_FULL or session.proven_at is None:
            return False
        return self.clock.seconds() - session.proven_at <= self.reauth_after

    async def prove(self, session: Session) -> bool:
        """The user proved a second factor just now (a "confirm it is you" step); False when
        the session ended meanwhile."""
        return await self.store.set_portal_proven(session.key, self.clock.seconds())

    async def end(self, session: Session) -> None:
        await self.store.delete_portal_session(session.key)

    async def notice(self, session: Session, notice: str | None) -> None:
        """The one-time message of the session's next page (None: clear it)."""
        await self.store.set_portal_notice(session.key, notice)

    async def sent(self, session: Session, sent: SentCode | None) -> None:
        await self.store.set_portal_sent(session.key, sent_text(sent))

    async def take_sent(self, session: Session) -> SentCode | None:
        """The code sent for this session, removed in the same step: of two answers sent
        at once, one is checked (a wrong one puts it back, with the try counted)."""
        return sent_from(await self.store.take_portal_sent(session.key))

    async def offer_pending(
        self,
        session: Session,
        token: TokenRecord | None,
        replacing: str | None = None,
        *,
        only_if_empty: bool = False,
    ) -> PendingEnrolment | None:
        """Set the app being enrolled (None: none); ``only_if_empty``: keep one shown
        already. The pending enrolment stored afterwards."""
        pending = PendingEnrolment(token, replacing) if token is not None else None
        return await self.store.offer_portal_pending(
            session.key, pending, only_if_empty=only_if_empty
        )

    async def take_pending(self, session: Session) -> PendingEnrolment | None:
        return await self.store.take_portal_pending(session.key)


def same_token(expected: str, given: str | None) -> bool:
    """A form token compared in constant time (a missing one never matches)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(
        expected.encode("ascii", "replace"), given.encode("ascii", "replace")
    )
