"""The login path's HOTP/TOTP code (radmfa.factors.hmacotp) against RFC 4226's vectors and
against pyotp, which enrolment still uses, on random tokens."""

from __future__ import annotations

import base64
import hashlib
import random

import pyotp
import pytest

from radmfa.factors.base import MatchKind
from radmfa.factors.hmacotp import DIGEST_NAMES, MIN_SECRET_BYTES, hotp_code, usable
from radmfa.factors.hotp import HotpFactor
from radmfa.factors.totp import TotpFactor
from radmfa.store.base import TokenRecord

RFC4226_SECRET = b"12345678901234567890"
RFC4226_CODES = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip
DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def test_rfc4226_appendix_d():
    for counter, expected in enumerate(RFC4226_CODES):
        assert hotp_code(RFC4226_SECRET, counter, 6, "SHA1") == expected


def test_the_same_codes_as_pyotp_for_random_tokens():
    rng = random.Random(4226)
    for _ in range(3000):
        secret = rng.randbytes(rng.choice((14, 16, 20, 32, 64)))
        digits = rng.randint(6, 10)
        algorithm = rng.choice(tuple(DIGESTS))
        counter = rng.choice((0, 1, rng.randrange(2**31), rng.randrange(2**63)))
        reference = pyotp.HOTP(
            base64.b32encode(secret).decode(), digits=digits, digest=DIGESTS[algorithm]
        )
        assert hotp_code(secret, counter, digits, algorithm) == reference.at(counter)


def test_what_no_code_is_computed_for():
    assert usable(b"x" * MIN_SECRET_BYTES, 6, "SHA1")
    assert not usable(b"x" * (MIN_SECRET_BYTES - 1), 6, "SHA1")  # a damaged row
    assert not usable(b"x" * 20, 5, "SHA1") and not usable(b"x" * 20, 11, "SHA1")
    assert not usable(b"x" * 20, 6, "MD5") and not usable(b"x" * 20, 6, "sha1")
    with pytest.raises(ValueError):
        hotp_code(RFC4226_SECRET, -1, 6, "SHA1")


@pytest.mark.parametrize("kind", ["totp", "hotp"])
def test_a_token_row_too_weak_to_compute_codes_matches_nothing(kind: str):
    """A store row altered to a short secret (or nonsense parameters) is never a match, and
    never an exception in the middle of a login."""
    factor = TotpFactor(skew=1) if kind == "totp" else HotpFactor()
    short = RFC4226_SECRET[: MIN_SECRET_BYTES - 1]
    for secret, digits, algorithm, period in [
        (short, 6, "SHA1", 30),
        (RFC4226_SECRET, 4, "SHA1", 30),
        (RFC4226_SECRET, 6, "MD5", 30),
        (RFC4226_SECRET, 6, "SHA1", 0),
    ]:
        if kind == "hotp" and period == 0:
            continue  # HOTP has no period
        token = TokenRecord("t", "u", kind, secret, digits, algorithm, period, 0.0, last_step=0)
        # the code these parameters would give at counter (or step) 1, were they allowed
        code = hotp_code(secret, 1, digits, algorithm) if algorithm in DIGEST_NAMES else "123456"
        assert factor.verify(token, code, 30.0).kind is MatchKind.NO_MATCH
