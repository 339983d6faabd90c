"""The native engine's verify callback: every error refuses the handshake, with a reason.

OpenSSL calls it once per certificate of the chain; what it returns decides the handshake,
and an exception escaping it would be lost (Twisted's own callback logs those and goes on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.python.failure import Failure

from radmfa.directory.tlsnames import ServerName
from radmfa.directory.tlsverify import (
    CertificateRefused,
    _Verifier,
    describe_tls_failure,
    make_tls_options,
)
from tests.support.certs import make_ca, make_server_cert

EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


class FakeTlsProtocol:
    """Stands for TLSMemoryBIOProtocol: records ``failVerification`` reasons."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def failVerification(self, reason: Failure) -> None:
        assert reason.check(CertificateRefused)
        self.reasons.append(reason.getErrorMessage())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base: Path = tmp_path_factory.mktemp("pki")
    ca = make_ca(base / "ca")

    def load(cert: Any) -> crypto.X509:
        loaded = x509.load_pem_x509_certificate(cert.cert_path.read_bytes())
        return crypto.X509.from_cryptography(loaded)

    return {
        "ca": ca,
        "cn_only": load(make_server_cert(base, ca, ["dc1.corp.example"], subject_alt_names=False)),
        "wrong": load(make_server_cert(base, ca, ["dc9.corp.example"], stem="wrong")),
    }


def verifier(host: str = "dc1.corp.example") -> tuple[_Verifier, FakeTlsProtocol]:
    protocol = FakeTlsProtocol()
    return _Verifier(protocol, ServerName(host)), protocol


def test_a_cn_only_certificate_for_the_host_passes(pki):
    check, protocol = verifier()
    assert check.verify(None, pki["cn_only"], 0, 1, 1) is True  # the CA, as OpenSSL judged it
    assert check.verify(None, pki["cn_only"], 0, 0, 1) is True
    assert check.passed and protocol.reasons == []


def test_a_name_mismatch_refuses_with_the_reason(pki):
    check, protocol = verifier()
    assert check.verify(None, pki["wrong"], 0, 0, 1) is False
    assert protocol.reasons == ["the certificate names DNS dc9.corp.example, not dc1.corp.example"]
    assert not check.passed


def test_a_chain_error_refuses_with_openssl_s_words(pki):
    check, protocol = verifier()
    assert check.verify(None, pki["cn_only"], EXPIRED, 0, 0) is False
    assert protocol.reasons == ["certificate has expired (the server's certificate)"]
    check, protocol = verifier()
    assert check.verify(None, pki["cn_only"], 9999, 1, 0) is False
    assert protocol.reasons == ["certificate verify error 9999 (chain depth 1)"]


def test_any_exception_during_the_check_refuses_the_handshake():
    class Broken:
        def to_cryptography(self) -> Any:
            raise ValueError("duplicate extension")

    check, protocol = verifier()
    assert check.verify(None, Broken(), 0, 0, 1) is False
    assert protocol.reasons == ["certificate check failed: ValueError: duplicate extension"]


def test_a_handshake_done_without_a_checked_certificate_is_refused(pki):
    check, protocol = verifier()
    check.handshake_event(None, SSL.SSL_CB_HANDSHAKE_DONE, 1)
    assert protocol.reasons == ["the server's certificate was not checked"]
    check, protocol = verifier()
    check.verify(None, pki["cn_only"], 0, 0, 1)
    check.handshake_event(None, SSL.SSL_CB_HANDSHAKE_DONE, 1)
    assert protocol.reasons == []


def test_refusing_after_the_protocol_is_gone_still_refuses(pki):
    protocol = FakeTlsProtocol()
    check = _Verifier(protocol, ServerName("dc1.corp.example"))
    del protocol
    assert check.verify(None, pki["wrong"], 0, 0, 1) is False


def test_handshake_failures_read_as_one_line():
    refused = Failure(CertificateRefused("the certificate names DNS a, not b"))
    assert describe_tls_failure(refused) == "the certificate names DNS a, not b"
    openssl = Failure(SSL.Error([("SSL routines", "", "tlsv1 alert protocol version")]))
    assert describe_tls_failure(openssl) == "TLS error: tlsv1 alert protocol version"
    assert describe_tls_failure(Failure(ConnectionResetError("reset"))) == "connection lost: reset"


def test_options_refuse_a_host_no_certificate_can_name(pki):
    with pytest.raises(ValueError, match="not a host name"):
        make_tls_options("bad host", str(pki["ca"].cert_path))
    assert make_tls_options("dc1.corp.example", str(pki["ca"].cert_path)).name.sni == (
        b"dc1.corp.example"
    )
