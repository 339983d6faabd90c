"""The second-factor contract, and the registry the pipeline asks.

A factor reads one kind of token (``TokenRecord.type``) and answers two questions, both pure:
does this code match this token, and at which step (``verify``); how long are its codes, so an
appended code can be split off a password (``code_lengths``). The pipeline makes a match stick
with the store's atomic ``advance_step`` (a step moves only forward), which is what refuses
replays and makes single-use codes single-use across threads, processes and daemons.

Factors that deliver a code out of band (email, SMS, anything a plugin adds) also implement
:class:`OutOfBandFactor`: the user types its keyword, the pipeline generates the code, binds its
hash to a fresh challenge State, applies the rate limit and asks the factor to deliver it in
the background. The factor never sees the store.

Factors are found through the ``radmfa.factors`` entry-point group (see
:mod:`radmfa.factors.plugins` and docs/factors.md); the built-in ones register the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from twisted.internet.defer import Deferred

from radmfa.store.base import TokenRecord


class MatchKind(enum.Enum):
    MATCH = "match"
    #: The code is right for a step that was already used.
    REPLAY = "replay"
    NO_MATCH = "no_match"


@dataclass(frozen=True, slots=True)
class CodeMatch:
    kind: MatchKind
    #: What the pipeline passes to ``Store.advance_step``; None: nothing to consume (a factor
    #: whose codes may be reused, which it then has to justify itself).
    step: int | None = None


NO_MATCH = CodeMatch(MatchKind.NO_MATCH)


class SecondFactor(Protocol):
    """What every factor provides. Subclass :class:`BaseFactor` to get the optional parts."""

    #: The token type this factor verifies ("totp", ...): also its entry-point name.
    type: str
    #: A few words for prompts and ``radmfa user show`` ("authenticator app", "backup code").
    label: str

    def code_lengths(self, token: TokenRecord) -> tuple[int, ...]:
        """How many characters a code for this token has (for splitting appended codes)."""
        ...

    def verify(self, token: TokenRecord, code: str, now: float) -> CodeMatch:
        """Pure: no I/O, no clock but ``now``. Must compare secrets in constant time."""
        ...

    def usable(self, token: TokenRecord, now: float) -> bool:
        """Whether the token can prove anything now (unspent, not expired, has an address)."""
        ...

    def audit(self, token: TokenRecord) -> str | None:
        """A line to log when a login used this token (who issued it...), or None."""
        ...


class BaseFactor:
    """Defaults for the optional parts of :class:`SecondFactor`."""

    type: str = ""
    label: str = "code"

    def code_lengths(self, token: TokenRecord) -> tuple[int, ...]:
        return ()

    def verify(self, token: TokenRecord, code: str, now: float) -> CodeMatch:
        return NO_MATCH

    def usable(self, token: TokenRecord, now: float) -> bool:
        return True

    def audit(self, token: TokenRecord) -> str | None:
        return None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an out-of-band code goes. ``masked`` is what a Reply-Message may show."""

    address: str
    masked: str
    #: False for an address that changed and has not been proven yet with a code.
    confirmed: bool


@dataclass(frozen=True, slots=True)
class SendContext:
    """What a message may mention besides the code."""

    user: str
    client: str
    #: The NAS-Identifier when the client sent one, else the client's name.
    service: str
    #: Unix time the code stops working.
    expires_at: float
    ttl: float


@runtime_checkable
class OutOfBandFactor(Protocol):
    """A factor whose code is sent on request (the user types ``keyword`` at the prompt)."""

    type: str
    label: str
    keyword: str
    code_ttl: float
    cooldown: float
    max_per_hour: int
    #: Sends of this channel an hour for all users together (a factor without it:
    #: ``radmfa.config.DEFAULT_SENDS_PER_HOUR_TOTAL``).
    max_per_hour_total: int
    prompt: str
    confirm_prompt: str

    def destination(self, token: TokenRecord) -> Destination | None:
        """Where this token's codes go; None when it has no usable address."""
        ...

    def refresh(
        self, token: TokenRecord, attributes: Mapping[str, Sequence[str]], now: float
    ) -> TokenRecord | None:
        """A replacement token when the directory now gives another address, else None.

        Called after each successful directory bind with the attributes it returned. A new
        address comes back unconfirmed; the pipeline stores the replacement (new token id), so
        codes in flight for the old address no longer match anything.
        """
        ...

    def new_code(self) -> str:
        """A fresh random code (CSPRNG)."""
        ...

    def normalize(self, code: str) -> str | None:
        """The typed answer in the form codes are hashed in, or None if it cannot be one."""
        ...

    def send(self, destination: Destination, code: str, context: SendContext) -> Deferred[None]:
        """Deliver ``code``; fires when handed over, fails with :class:`DeliveryError`."""
        ...


class DeliveryError(Exception):
    """A code could not be handed to the mail server, SMS provider or command.

    The message is for the log: what failed and where, never the code.
    """


class FactorRegistry:
    """Maps token types to factors; a new factor registers here, the pipeline does not change."""

    def __init__(self, factors: Sequence[SecondFactor]) -> None:
        self._by_type: dict[str, SecondFactor] = {}
        for factor in factors:
            if factor.type in self._by_type:
                raise ValueError(f"two factors claim the token type {factor.type!r}")
            self._by_type[factor.type] = factor

    def __contains__(self, token_type: str) -> bool:
        return token_type in self._by_type

    def types(self) -> list[str]:
        return sorted(self._by_type)

    def get(self, token_type: str) -> SecondFactor | None:
        return self._by_type.get(token_type)

    def out_of_band(self, token_type: str) -> OutOfBandFactor | None:
        factor = self._by_type.get(token_type)
        # None first: mypy cannot narrow an Optional protocol to another protocol at once.
        if factor is None or not isinstance(factor, OutOfBandFactor):
            return None
        return factor

    def usable(self, token: TokenRecord, now: float) -> bool:
        """The factor is loaded and says the token can be used (plugins may omit ``usable``)."""
        factor = self._by_type.get(token.type)
        if factor is None:
            return False
        check = getattr(factor, "usable", None)
        return True if check is None else bool(check(token, now))

    def label(self, token_type: str) -> str:
        return str(getattr(self._by_type.get(token_type), "label", token_type))

    def audit(self, token: TokenRecord) -> str | None:
        hook = getattr(self._by_type.get(token.type), "audit", None)
        return None if hook is None else hook(token)

    def verify(
        self, tokens: Sequence[TokenRecord], code: str, now: float
    ) -> tuple[TokenRecord | None, CodeMatch]:
        """First token the code matches; a replayed match is reported only if nothing matches."""
        replay: tuple[TokenRecord, CodeMatch] | None = None
        for token in tokens:
            factor = self.get(token.type)
            if factor is None:
                continue
            match = factor.verify(token, code, now)
            if match.kind is MatchKind.MATCH:
                return token, match
            if match.kind is MatchKind.REPLAY and replay is None:
                replay = (token, match)
        if replay is not None:
            return replay
        return None, NO_MATCH

    def code_lengths(self, tokens: Sequence[TokenRecord]) -> list[int]:
        lengths: set[int] = set()
        for token in tokens:
            factor = self.get(token.type)
            if factor is not None:
                lengths.update(factor.code_lengths(token))
        return sorted(lengths, reverse=True)
