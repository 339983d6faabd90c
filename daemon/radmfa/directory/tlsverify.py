"""TLS client options for the native LDAP engine: chain and host name checked, fail closed.

Twisted's ``optionsForClientTLS`` checks the name through service_identity in its verify
callback and, on anything but a plain mismatch (a certificate without subjectAltName is one),
logs a critical traceback and lets the handshake go on, verified by chain alone. Here the
verify callback is ours: the chain as OpenSSL judged it, then the name by the rule both engines
share (:mod:`radmfa.directory.tlsnames`), and *any* error in between refuses the handshake.
The reason reaches the connection's ``connectionLost`` and, from there, one warning line.
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from radmfa.directory.tlsnames import NameMismatch, ServerName

__all__ = ["CertificateRefused", "VerifyingClientTLS", "describe_tls_failure", "make_tls_options"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)

#: OpenSSL's X509_V_ERR_* texts for what goes wrong in practice (x509_txt.c).
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    4: "unable to decrypt certificate's signature",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    13: "format error in certificate's notBefore field",
    14: "format error in certificate's notAfter field",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate (not signed by a CA in ca_file)",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "invalid CA certificate",
    25: "path length constraint exceeded",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
}


class CertificateRefused(Exception):
    """The server's certificate failed verification; the message says why (for the log)."""


def make_tls_options(host: str, ca_file: str | None) -> VerifyingClientTLS:
    """Client TLS options: certificate checked against ``ca_file`` (or the system's trust
    store), host name (or IP address) checked against it, TLS 1.2 or newer (L-08).

    ValueError for a ``ca_file`` without certificates or a host no certificate can name.
    """
    from twisted.internet import ssl  # needs pyOpenSSL (twisted[tls])

    if ca_file is None:
        trust = ssl.platformTrust()
    else:
        pem = Path(ca_file).read_bytes()
        certificates = [ssl.Certificate.loadPEM(block) for block in _PEM_CERTIFICATE.findall(pem)]
        if not certificates:
            raise ValueError(f"LDAP: no PEM certificate in ca_file {ca_file}")
        trust = ssl.trustRootFromCertificates(certificates)
    try:
        name = ServerName(host)
    except ValueError as exc:
        raise ValueError(f"LDAP: {exc}") from None
    options = ssl.CertificateOptions(trustRoot=trust, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
    return VerifyingClientTLS(options.getContext(), name)


def describe_tls_failure(failure: Failure) -> str:
    """Why a handshake ended, in one line: the certificate check's reason, OpenSSL's error
    texts, or whatever the connection was lost with."""
    value = failure.value
    if isinstance(value, CertificateRefused):
        return str(value)
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        texts = [str(e[-1]) for e in value.args[0] if isinstance(e, tuple) and e]
        if texts:
            return "TLS error: " + "; ".join(texts)
    return f"connection lost: {failure.getErrorMessage() or type(value).__name__}"


@implementer(IOpenSSLClientConnectionCreator)
class VerifyingClientTLS:
    """Makes each client connection with :class:`_Verifier` as its verify callback."""

    def __init__(self, context: SSL.Context, name: ServerName) -> None:
        self._context = context
        self.name = name

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        sni = self.name.sni
        if sni is not None:
            connection.set_tlsext_host_name(sni)
        verifier = _Verifier(tlsProtocol, self.name)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verifier.verify)
        connection.set_info_callback(verifier.handshake_event)
        return connection


class _Verifier:
    """One handshake's certificate check. Refusing records the reason on the TLS protocol
    (``failVerification``) so that the connection is lost with it, not with OpenSSL's bare
    "certificate verify failed"."""

    __slots__ = ("_name", "_protocol", "passed")

    def __init__(self, tls_protocol: Any, name: ServerName) -> None:
        # Weak: the OpenSSL connection holds this callback and the protocol holds the
        # connection; a strong reference would make a cycle of every connection.
        self._protocol = weakref.ref(tls_protocol)
        self._name = name
        #: True once the server's own certificate passed both checks.
        self.passed = False

    def verify(self, _conn: SSL.Connection, cert: Any, error: int, depth: int, ok: int) -> bool:
        # Nothing may escape an OpenSSL callback; every error refuses the handshake.
        try:
            if not ok:
                reason = _VERIFY_ERRORS.get(error, f"certificate verify error {error}")
                where = "the server's certificate" if depth == 0 else f"chain depth {depth}"
                return self._refuse(f"{reason} ({where})")
            if depth != 0:
                return True
            self._name.check(cert.to_cryptography())
        except NameMismatch as exc:
            return self._refuse(str(exc))
        except Exception as exc:
            return self._refuse(f"certificate check failed: {type(exc).__name__}: {exc}")
        self.passed = True
        return True

    def handshake_event(self, _conn: SSL.Connection, where: int, _code: int) -> None:
        """A handshake that finished without the server's certificate checked (no callback
        at depth 0, whatever the reason) is refused too."""
        if where & SSL.SSL_CB_HANDSHAKE_DONE and not self.passed:
            self._refuse("the server's certificate was not checked")

    def _refuse(self, reason: str) -> bool:
        protocol = self._protocol()
        if protocol is not None:
            try:
                protocol.failVerification(Failure(CertificateRefused(reason)))
            except Exception:  # noqa: S110 -- returning False still refuses the handshake
                pass
        return False
