"""RFC 5080 section 2.2.2 duplicate detection with a response cache.

Why it matters here: one-time codes are single-use and LDAP counts failed binds, so a
retransmission must never be processed twice. A duplicate of a request still in flight is
dropped; a duplicate of an answered one gets the cached reply bytes unchanged. The same key
with a new Request Authenticator is a new request and supersedes the old entry, whose late
result is then ignored (R-12).

The cache is per listening socket (one per
:class:`~radmfa.radius.udp.RadiusDatagramProtocol`), so the key needs
only (source IP, source port, Identifier). Time comes from an injected ``IReactorTime``.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

from twisted.internet.interfaces import IDelayedCall, IReactorTime

Key = tuple[str, int, int]
"""(normalised source IP, source port, RADIUS Identifier)."""

DEFAULT_MAX_ENTRIES = 65536


class _Status(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"


NEW: Final = _Status.NEW
"""Not seen (or superseded): process it."""
IN_FLIGHT: Final = _Status.IN_FLIGHT
"""Being processed: drop the duplicate silently."""


@dataclass(frozen=True, slots=True)
class Answered:
    """Already answered: resend ``reply`` byte for byte."""

    reply: bytes


LookupResult = Literal[_Status.NEW, _Status.IN_FLIGHT] | Answered


class CacheFull(Exception):
    """Every slot holds a request still in flight; the new request must be dropped.

    In-flight entries are never evicted: that would let a retransmission be processed twice.
    """


@dataclass(eq=False, slots=True)
class Token:
    """Handle for one request's entry; identity, not value, tells a superseded one apart."""

    key: Key
    authenticator: bytes


@dataclass(slots=True)
class _Entry:
    token: Token
    reply: bytes | None = None
    expires: float = 0.0


class DuplicateCache:
    """Bounded map from request key to in-flight marker or cached reply.

    Answered entries live ``window`` seconds. When full, the oldest answered entries are
    evicted first; if only in-flight entries remain, :meth:`begin` raises :class:`CacheFull`.
    """

    def __init__(
        self,
        clock: IReactorTime,
        window: float = 30.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        #: Seconds an answer is kept; may be changed at runtime (config reload), applies to
        #: answers cached from then on.
        self.window = window
        self._max_entries = max_entries
        self._entries: dict[Key, _Entry] = {}
        #: Answered keys in answer order, which is also expiry order.
        self._answered: OrderedDict[Key, None] = OrderedDict()
        self._sweep_call: IDelayedCall | None = None

    def lookup(self, key: Key, authenticator: bytes) -> LookupResult:
        """Classify a request; a different authenticator purges the old entry and is NEW."""
        self._expire(self._clock.seconds())
        entry = self._entries.get(key)
        if entry is None:
            return NEW
        if entry.token.authenticator != authenticator:
            self._remove(key)
            return NEW
        if entry.reply is None:
            return IN_FLIGHT
        return Answered(entry.reply)

    def begin(self, key: Key, authenticator: bytes) -> Token:
        """Mark a request in flight; replaces (supersedes) any entry for the same key."""
        self._expire(self._clock.seconds())
        if key in self._entries:
            self._remove(key)
        while len(self._entries) >= self._max_entries:
            if not self._answered:
                raise CacheFull(f"{len(self._entries)} requests are in flight")
            oldest, _ = self._answered.popitem(last=False)
            del self._entries[oldest]
        token = Token(key, authenticator)
        self._entries[key] = _Entry(token)
        return token

    def finish(self, token: Token, reply: bytes) -> bool:
        """Cache the reply; False (and nothing stored) if the entry was superseded or dropped."""
        entry = self._entries.get(token.key)
        if entry is None or entry.token is not token or entry.reply is not None:
            return False
        if self.window <= 0:
            del self._entries[token.key]
            return True
        entry.reply = reply
        entry.expires = self._clock.seconds() + self.window
        self._answered[token.key] = None
        self._schedule_sweep()
        return True

    def abandon(self, token: Token) -> None:
        """Forget an in-flight request that gets no reply, so a retransmission is processed."""
        entry = self._entries.get(token.key)
        if entry is not None and entry.token is token and entry.reply is None:
            del self._entries[token.key]

    def is_current(self, token: Token) -> bool:
        """Whether ``token`` still owns its key (not superseded, abandoned or evicted)."""
        entry = self._entries.get(token.key)
        return entry is not None and entry.token is token

    @property
    def in_flight(self) -> int:
        return len(self._entries) - len(self._answered)

    def __len__(self) -> int:
        return len(self._entries)

    def stop(self) -> None:
        """Cancel the pending sweep timer (shutdown, tests)."""
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()
        self._sweep_call = None

    def _remove(self, key: Key) -> None:
        del self._entries[key]
        self._answered.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._answered:
            key = next(iter(self._answered))
            if self._entries[key].expires > now:
                break
            del self._answered[key]
            del self._entries[key]

    def _schedule_sweep(self) -> None:
        """One timer for the earliest expiry frees memory even when no packets arrive."""
        if self._sweep_call is not None and self._sweep_call.active():
            return
        if not self._answered:
            self._sweep_call = None
            return
        first = self._entries[next(iter(self._answered))]
        delay = max(0.0, first.expires - self._clock.seconds())
        self._sweep_call = self._clock.callLater(delay, self._sweep)

    def _sweep(self) -> None:
        self._sweep_call = None
        self._expire(self._clock.seconds())
        self._schedule_sweep()
