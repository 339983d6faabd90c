"""Small pieces several factors share: random codes, their hashes, masked addresses."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

DIGITS = "0123456789"
#: Upper-case letters without the ones people confuse with digits or each other (I, O).
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"

#: scrypt cost for stored single-use codes (backup and emergency codes): about 8 ms and 4 MiB
#: here. The codes themselves carry the strength (backup codes 65 random bits); the KDF is
#: defence in depth for a stolen database, and each login attempt costs at most one hash
#: because codes are found by a non-secret lookup prefix first (see backup.py).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**12, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32


def random_code(length: int, alphabet: str = DIGITS) -> str:
    """``length`` characters drawn uniformly from ``alphabet`` with the OS CSPRNG."""
    return "".join(secrets.choice(alphabet) for _ in range(length))


def slow_hash(code: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        code.encode("ascii"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=HASH_BYTES,
        maxmem=64 * 1024 * 1024,
    )


def seal_code(code: str) -> bytes:
    """``salt | scrypt(code, salt)``: what a token stores instead of a single-use code."""
    salt = os.urandom(SALT_BYTES)
    return salt + slow_hash(code, salt)


def code_matches(stored: bytes, code: str) -> bool:
    """Constant-time check of ``code`` against :func:`seal_code` output."""
    if len(stored) != SALT_BYTES + HASH_BYTES:
        return False
    salt, expected = stored[:SALT_BYTES], stored[SALT_BYTES:]
    return hmac.compare_digest(slow_hash(code, salt), expected)


def mask_email(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org``."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def mask_number(number: str) -> str:
    """``+49 151 2345 1234`` -> ``******1234``: the last four digits only, length hidden."""
    digits = [c for c in number if c.isdigit()]
    return "******" + "".join(digits[-4:])
