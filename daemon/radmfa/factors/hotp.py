"""HOTP (RFC 4226): counter-based codes from hardware tokens and apps.

The token's ``last_step`` is the **last counter accepted** (None before the first login), the
same meaning ``last_step`` has for TOTP: so the store's compare-and-set ``advance_step`` moves
the counter forward atomically, and never back. A login accepts the counters from the next
expected one up to ``window`` beyond it (RFC 4226 section 7.4 look-ahead); a token that has
drifted further is brought back with ``radmfa token resync`` and two consecutive codes.
"""

from __future__ import annotations

import base64
import hmac
from typing import TYPE_CHECKING

import pyotp

from radmfa.factors.base import NO_MATCH, BaseFactor, CodeMatch, MatchKind
from radmfa.factors.hmacotp import hotp_code, usable
from radmfa.factors.totp import _DIGESTS, is_code_shaped
from radmfa.store.base import TokenRecord

if TYPE_CHECKING:
    from radmfa.factors.plugins import FactorContext


class _TokenHOTP(pyotp.HOTP):
    """pyotp's HOTP holding the raw secret (no base32 round trip per code)."""

    def __init__(self, token: TokenRecord) -> None:
        if len(token.secret) * 8 < 112:
            raise ValueError("Secrets must be at least 112 bits")
        self._raw = token.secret
        super().__init__(
            base64.b32encode(token.secret).decode("ascii"),
            digits=token.digits,
            digest=_DIGESTS[token.algorithm],
        )

    def byte_secret(self) -> bytes:
        return self._raw


def make_hotp(token: TokenRecord) -> pyotp.HOTP:
    return _TokenHOTP(token)


def next_counter(token: TokenRecord) -> int:
    """The counter the next login is expected to use."""
    return 0 if token.last_step is None else token.last_step + 1


def last_step_for(initial_counter: int) -> int | None:
    """``last_step`` of a new token whose first code is at ``initial_counter``."""
    return None if initial_counter == 0 else initial_counter - 1


class HotpFactor(BaseFactor):
    type = "hotp"
    label = "hardware token"

    def __init__(self, window: int = 10, resync_window: int = 100) -> None:
        self.window = window
        self.resync_window = resync_window

    def code_lengths(self, token: TokenRecord) -> tuple[int, ...]:
        return (token.digits,)

    def verify(self, token: TokenRecord, code: str, now: float) -> CodeMatch:
        secret, digits, algorithm = token.secret, token.digits, token.algorithm
        if not is_code_shaped(code, digits) or not usable(secret, digits, algorithm):
            return NO_MATCH
        start = next_counter(token)
        for counter in range(start, start + self.window + 1):
            if hmac.compare_digest(hotp_code(secret, counter, digits, algorithm), code):
                return CodeMatch(MatchKind.MATCH, counter)
        # Only to tell a replay from a wrong code in the log: the last few used counters.
        for counter in range(max(0, start - self.window - 1), start):
            if hmac.compare_digest(hotp_code(secret, counter, digits, algorithm), code):
                return CodeMatch(MatchKind.REPLAY, counter)
        return NO_MATCH

    def find_consecutive(self, token: TokenRecord, first: str, second: str) -> int | None:
        """The counter of ``second`` when ``first``, ``second`` are the codes of two consecutive
        counters within ``resync_window`` of the next expected one (RFC 4226 section 7.4)."""
        if not (is_code_shaped(first, token.digits) and is_code_shaped(second, token.digits)):
            return None
        otp = make_hotp(token)
        start = next_counter(token)
        for counter in range(start, start + self.resync_window):
            if hmac.compare_digest(otp.at(counter), first) and hmac.compare_digest(
                otp.at(counter + 1), second
            ):
                return counter + 1
        return None


def create(context: FactorContext) -> HotpFactor:
    """Entry point ``radmfa.factors: hotp``."""
    hotp = context.config.otp.hotp
    return HotpFactor(window=hotp.window, resync_window=hotp.resync_window)
