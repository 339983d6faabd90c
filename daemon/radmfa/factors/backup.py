"""Backup codes (NIST "look-up secrets"): ten single-use codes for when the phone is lost.

Each code is its own token of type ``backup``, so the store's ``advance_step`` (None -> 1) is
what spends it: twenty concurrent logins with one code get exactly one accept.

A code is 16 characters of Crockford base32 (80 bits), shown as ``xxxx-xxxx-xxxx-xxxx``.
Its first three characters are a **lookup prefix** kept next to the hash; they are not secret.
The other 13 (65 bits, above the 64 NIST recommends) are what an attacker must guess, and
are stored only as ``scrypt(code, per-code 16-byte salt)``, sealed once more with the store's
AES-GCM key like every token secret. Verification compares the prefix first, so a login
costs at most one scrypt (about 8 ms) instead of ten: hashing all ten on every attempt would
make each attempt slow and let a guesser burn CPU ten times faster.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from radmfa.factors.base import NO_MATCH, BaseFactor, CodeMatch, MatchKind
from radmfa.factors.codes import code_matches, random_code, seal_code
from radmfa.store.base import TokenRecord

if TYPE_CHECKING:
    from radmfa.factors.plugins import FactorContext

#: Crockford base32, lower case: no i, l, o, u (read as 1, 1, 0 and not used).
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
CODE_CHARS = 16
LOOKUP_CHARS = 3
_GROUP = 4
_TRANSLATE = str.maketrans({"i": "1", "l": "1", "o": "0"})


def format_code(code: str) -> str:
    return "-".join(code[i : i + _GROUP] for i in range(0, len(code), _GROUP))


def normalize(text: str) -> str | None:
    """What the user typed, as stored codes are hashed: no dashes or blanks, lower case,
    i/l read as 1 and o as 0. None if it cannot be a backup code."""
    if not text.isascii():
        return None
    cleaned = text.replace("-", "").replace(" ", "").lower().translate(_TRANSLATE)
    if len(cleaned) != CODE_CHARS or any(c not in ALPHABET for c in cleaned):
        return None
    return cleaned


def generate(user: str, count: int, now: float) -> tuple[list[str], list[TokenRecord]]:
    """``count`` fresh codes (shown once, formatted) and the tokens that store their hashes."""
    codes: list[str] = []
    prefixes: set[str] = set()
    while len(codes) < count:
        code = random_code(CODE_CHARS, ALPHABET)
        if code[:LOOKUP_CHARS] in prefixes:  # keep "one prefix, one code" within a set
            continue
        prefixes.add(code[:LOOKUP_CHARS])
        codes.append(code)
    tokens = [
        TokenRecord(
            token_id="bk" + secrets.token_hex(6),
            user=user,
            type="backup",
            secret=code[:LOOKUP_CHARS].encode("ascii") + seal_code(code),
            digits=CODE_CHARS,
            algorithm="",
            period=0,
            created_at=now,
            description=f"backup code {index} of {count}",
        )
        for index, code in enumerate(codes, start=1)
    ]
    return [format_code(c) for c in codes], tokens


class BackupCodeFactor(BaseFactor):
    type = "backup"
    label = "backup code"

    def code_lengths(self, token: TokenRecord) -> tuple[int, ...]:
        return (CODE_CHARS + CODE_CHARS // _GROUP - 1, CODE_CHARS)  # with or without dashes

    def usable(self, token: TokenRecord, now: float) -> bool:
        return token.last_step is None

    def verify(self, token: TokenRecord, code: str, now: float) -> CodeMatch:
        typed = normalize(code)
        if typed is None:
            return NO_MATCH
        prefix, stored = token.secret[:LOOKUP_CHARS], token.secret[LOOKUP_CHARS:]
        if typed[:LOOKUP_CHARS].encode("ascii") != prefix:  # not secret: no constant time needed
            return NO_MATCH
        if not code_matches(stored, typed):
            return NO_MATCH
        if token.last_step is not None:
            return CodeMatch(MatchKind.REPLAY, 1)
        return CodeMatch(MatchKind.MATCH, 1)


def create(context: FactorContext) -> BackupCodeFactor:
    """Entry point ``radmfa.factors: backup``."""
    return BackupCodeFactor()
