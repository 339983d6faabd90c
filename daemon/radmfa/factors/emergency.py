"""Emergency codes: a short-lived, single-use code a help desk reads out to a locked-out user.

``radmfa emergency-code USER`` issues one (replacing any earlier one of that user), recording
the operating-system account that ran the command; the daemon logs that name again when the
code is used. The token's ``period`` is the lifetime in seconds from ``created_at``, and
``last_step`` goes None -> 1 when it is spent, atomically, like a backup code.

The code is stored as ``salt | HMAC-SHA256(salt, code)`` (``codes.keyed_seal``), not with
scrypt: it is checked on the event loop, where a 10 ms KDF per attempt would stall every other
login (and hand a guesser a CPU lever). A slow hash would buy little: the code (8 digits, 26.6
bits) lives minutes (``otp.emergency.ttl``, 2 min by default), its hash is sealed with the
store's AES-GCM key like every token secret, so a copy of the database alone gives nothing to
guess against, and whoever also has the key file can read every TOTP secret anyway. Online,
lockout and throttles bound guessing as for any code.

Codes issued by earlier versions (an scrypt hash) are treated as expired: never usable, never
hashed. They lived minutes; the help desk issues a new one.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from radmfa.factors.base import NO_MATCH, BaseFactor, CodeMatch, MatchKind
from radmfa.factors.codes import DIGITS, is_keyed_seal, keyed_seal, keyed_seal_matches, random_code
from radmfa.factors.totp import is_code_shaped
from radmfa.store.base import TokenRecord

if TYPE_CHECKING:
    from radmfa.factors.plugins import FactorContext

CODE_DIGITS = 8
_ISSUER_PREFIX = "issued by "
#: Binds a stored hash to this use, so it can never pass for another kind of code.
_PURPOSE = b"radmfa/emergency-code/v2:"


def issue(user: str, ttl: float, issuer: str, now: float) -> tuple[str, TokenRecord]:
    """A new code (to print once) and the token that stores its hash."""
    code = random_code(CODE_DIGITS, DIGITS)
    token = TokenRecord(
        token_id="em" + secrets.token_hex(6),
        user=user,
        type="emergency",
        secret=keyed_seal(code, _PURPOSE),
        digits=CODE_DIGITS,
        algorithm="",
        period=max(1, int(ttl)),
        created_at=now,
        description=f"{_ISSUER_PREFIX}{issuer}",
    )
    return code, token


def expires_at(token: TokenRecord) -> float:
    return token.created_at + token.period


def issuer(token: TokenRecord) -> str:
    return token.description.removeprefix(_ISSUER_PREFIX) or "unknown"


class EmergencyCodeFactor(BaseFactor):
    type = "emergency"
    label = "emergency code"

    def code_lengths(self, token: TokenRecord) -> tuple[int, ...]:
        return (CODE_DIGITS,)

    def usable(self, token: TokenRecord, now: float) -> bool:
        return token.last_step is None and now < expires_at(token) and is_keyed_seal(token.secret)

    def verify(self, token: TokenRecord, code: str, now: float) -> CodeMatch:
        if not is_code_shaped(code, CODE_DIGITS) or now >= expires_at(token):
            return NO_MATCH
        if not keyed_seal_matches(token.secret, code, _PURPOSE):  # a legacy seal: expired
            return NO_MATCH
        if token.last_step is not None:
            return CodeMatch(MatchKind.REPLAY, 1)
        return CodeMatch(MatchKind.MATCH, 1)

    def audit(self, token: TokenRecord) -> str:
        issued = datetime.fromtimestamp(token.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"emergency code issued by {issuer(token)} at {issued} used"


def create(context: FactorContext) -> EmergencyCodeFactor:
    """Entry point ``radmfa.factors: emergency``."""
    return EmergencyCodeFactor()
