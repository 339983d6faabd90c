"""The HMAC one-time password (RFC 4226 section 5.3; TOTP, RFC 6238, is it at the time step)
as one plain function over the raw secret, for the login path.

pyotp computes the same codes but wants the secret in base32 and a generator object per
secret: a base32 encoding, a decoding and an object for every login of a user not seen
recently. This module has no classes and only typed code, so mypyc compiles it
(:mod:`radmfa.native`); pyotp stays for enrolment (its checks of a new token) and the
provisioning URIs. ``tests/unit/factors/test_hmacotp.py`` holds it to the RFCs' vectors and to
pyotp on random tokens.
"""

from __future__ import annotations

import hmac

#: The token algorithms the store holds, by hashlib's names.
DIGEST_NAMES: dict[str, str] = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
#: The shortest secret a code is computed from (pyotp's rule at enrolment: 112 bits, NIST SP
#: 800-63B): a shorter one can only come from a damaged or altered store row.
MIN_SECRET_BYTES = 14
MIN_DIGITS, MAX_DIGITS = 6, 10


def usable(secret: bytes, digits: int, algorithm: str) -> bool:
    """Whether codes can be computed for a token with these parameters at all."""
    return (
        len(secret) >= MIN_SECRET_BYTES
        and MIN_DIGITS <= digits <= MAX_DIGITS
        and algorithm in DIGEST_NAMES
    )


def hotp_code(secret: bytes, counter: int, digits: int, algorithm: str) -> str:
    """The ``digits``-digit code for ``counter`` (the caller checked :func:`usable`; a
    negative counter is a ValueError, as in pyotp)."""
    if counter < 0:
        raise ValueError("the counter must not be negative")
    mac = hmac.digest(secret, counter.to_bytes(8, "big"), DIGEST_NAMES[algorithm])
    offset = mac[-1] & 0x0F
    truncated = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(truncated % 10**digits).zfill(digits)
