"""Small pieces several factors share: random codes, their hashes, masked addresses."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

DIGITS = "0123456789"
#: Upper-case letters without the ones people confuse with digits or each other (I, O).
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"

#: scrypt cost for stored backup codes (emergency codes use :func:`keyed_seal`): about 8 ms
#: and 4 MiB here. The codes themselves carry the strength (backup codes 65 random bits); the KDF is
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


#: First byte of :func:`keyed_seal` output; legacy :func:`seal_code` output has no such tag
#: and a different length.
KEYED_SEAL_TAG = b"\x01"
_KEYED_SEAL_BYTES = len(KEYED_SEAL_TAG) + SALT_BYTES + hashlib.sha256().digest_size


def keyed_seal(code: str, purpose: bytes) -> bytes:
    """``tag | salt | HMAC-SHA256(salt, purpose | code)`` with a fresh 16-byte salt: for codes
    that live minutes and are checked on the event loop (a few microseconds, no KDF)."""
    salt = os.urandom(SALT_BYTES)
    return KEYED_SEAL_TAG + salt + _keyed_digest(salt, purpose, code)


def is_keyed_seal(stored: bytes) -> bool:
    return len(stored) == _KEYED_SEAL_BYTES and stored[:1] == KEYED_SEAL_TAG


def keyed_seal_matches(stored: bytes, code: str, purpose: bytes) -> bool:
    """Constant-time check of ``code`` against :func:`keyed_seal` output; anything else
    (a legacy scrypt seal) never matches and costs no hash."""
    if not is_keyed_seal(stored):
        return False
    salt, expected = stored[1 : 1 + SALT_BYTES], stored[1 + SALT_BYTES :]
    return hmac.compare_digest(_keyed_digest(salt, purpose, code), expected)


def _keyed_digest(salt: bytes, purpose: bytes, code: str) -> bytes:
    return hmac.new(salt, purpose + code.encode("utf-8"), hashlib.sha256).digest()


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
