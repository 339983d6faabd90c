"""TOTP (RFC 6238): the window and the input checks; the code itself is
:func:`radmfa.factors.hmacotp.hotp_code` at the time step (pyotp builds new tokens and their
provisioning URIs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING

import pyotp

from radmfa.factors.base import NO_MATCH, BaseFactor, CodeMatch, MatchKind
from radmfa.factors.hmacotp import hotp_code, usable
from radmfa.store.base import TokenRecord

if TYPE_CHECKING:
    from radmfa.factors.plugins import FactorContext

_DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
_ASCII_DIGITS = frozenset("0123456789")


def is_code_shaped(code: str, digits: int) -> bool:
    """Exactly ``digits`` ASCII digits: pyotp NFKC-normalises, so full-width digits would pass."""
    return len(code) == digits and all(c in _ASCII_DIGITS for c in code)


class _TokenTOTP(pyotp.TOTP):
    """pyotp's TOTP, holding the raw secret: pyotp would base32-decode it for every code."""

    def __init__(self, token: TokenRecord) -> None:
        if len(token.secret) * 8 < self.min_secret_length_bits:  # pyotp's own rule, kept
            raise ValueError(f"Secrets must be at least {self.min_secret_length_bits} bits")
        self._raw = token.secret
        super().__init__(
            base64.b32encode(token.secret).decode("ascii"),
            digits=token.digits,
            digest=_DIGESTS[token.algorithm],
            interval=token.period,
        )

    def byte_secret(self) -> bytes:
        return self._raw


def make_otp(token: TokenRecord) -> pyotp.TOTP:
    """pyotp's generator for ``token`` (enrolment's checks, provisioning URIs)."""
    return _TokenTOTP(token)


def _window(current: int, skew: int) -> list[int]:
    """Steps to try, the current one first: most codes match it, so most checks cost one HMAC."""
    steps = [current]
    for distance in range(1, skew + 1):
        steps += [current - distance, current + distance]
    return [s for s in steps if s >= 0]


class TotpFactor(BaseFactor):
    """Accepts codes from ``skew`` steps before to ``skew`` steps after now, each step once."""

    type = "totp"
    label = "authenticator app"

    def __init__(self, skew: int = 1) -> None:
        self.skew = skew

    def code_lengths(self, token: TokenRecord) -> tuple[int, ...]:
        return (token.digits,)

    def verify(self, token: TokenRecord, code: str, now: float) -> CodeMatch:
        secret, digits, algorithm = token.secret, token.digits, token.algorithm
        if not is_code_shaped(code, digits) or not usable(secret, digits, algorithm):
            return NO_MATCH
        if token.period <= 0:
            return NO_MATCH
        current = int(now) // token.period
        replayed: int | None = None
        for step in _window(current, self.skew):
            if hmac.compare_digest(hotp_code(secret, step, digits, algorithm), code):
                if token.last_step is not None and step <= token.last_step:
                    replayed = step
                    continue
                return CodeMatch(MatchKind.MATCH, step)
        if replayed is not None:
            return CodeMatch(MatchKind.REPLAY, replayed)
        return NO_MATCH


def create(context: FactorContext) -> TotpFactor:
    """Entry point ``radmfa.factors: totp``."""
    return TotpFactor(skew=context.config.otp.totp.skew)
