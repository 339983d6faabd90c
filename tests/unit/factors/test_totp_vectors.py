"""RFC 6238 Appendix B: the login path (radmfa.factors.hmacotp) and enrolment's pyotp generator
give the RFC's codes."""

from __future__ import annotations

import pytest

from radmfa.factors.base import MatchKind
from radmfa.factors.totp import TotpFactor, make_otp
from radmfa.store.base import TokenRecord

SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


def token(algorithm: str) -> TokenRecord:
    return TokenRecord("rfc", "rfc", "totp", SEEDS[algorithm], 8, algorithm, 30, 0.0)


@pytest.mark.parametrize(("when", "sha1", "sha256", "sha512"), VECTORS)
def test_rfc6238_appendix_b(when: int, sha1: str, sha256: str, sha512: str):
    for algorithm, expected in (("SHA1", sha1), ("SHA256", sha256), ("SHA512", sha512)):
        assert make_otp(token(algorithm)).at(when) == expected
        match = TotpFactor(skew=0).verify(token(algorithm), expected, float(when))
        assert (match.kind, match.step) == (MatchKind.MATCH, when // 30)
