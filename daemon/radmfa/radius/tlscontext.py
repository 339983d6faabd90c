"""The OpenSSL context of a RadSec listener, re-read on reload.

Mutual TLS as RFC 6614 section 2.3 asks: the server shows its certificate chain, the client
must show one that chains to ``ca_file`` (OpenSSL checks the chain, dates and the TLS client
purpose), TLS 1.2 at least (1.3 only with ``tls13_only``), no compression, no renegotiation,
no session tickets. :class:`ReloadableServerTls` hands every new connection the context built
last, so a reload that renews the certificate applies to the next handshake while open
connections keep theirs; a reload that changes what a client must show (the CA certificates,
the TLS floor) closes the open ones too (:attr:`ServerContext.trust`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from zope.interface import implementer

from radmfa.config import TlsListener, check_tls_files


class TlsSetupError(Exception):
    """The listener's certificate, key or CA cannot be used; the message names the file."""


@dataclass(frozen=True)
class ServerContext:
    """A listener's OpenSSL context, and what its handshakes demand of a client."""

    context: SSL.Context
    #: The CA certificates (DER) a client certificate must chain to, and whether TLS 1.3 is
    #: the floor: connections verified under other ones must not outlive a reload.
    trust: tuple[frozenset[bytes], bool]


def build_context(listener: TlsListener) -> ServerContext:
    """A server context for ``listener``'s files; raises :class:`TlsSetupError`."""
    problem = check_tls_files(listener.cert_file, listener.key_file, listener.ca_file)
    if problem is not None:
        raise TlsSetupError(problem[1])
    try:
        chain = x509.load_pem_x509_certificates(Path(listener.cert_file).read_bytes())
        key = load_pem_private_key(Path(listener.key_file).read_bytes(), password=None)
        authorities = x509.load_pem_x509_certificates(Path(listener.ca_file).read_bytes())
        options = CertificateOptions(
            # A key that cannot sign (DH, X25519: outside pyOpenSSL's key union) raises
            # TypeError here, handled below like any unusable file.
            privateKey=crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            certificate=crypto.X509.from_cryptography(chain[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
            verify=True,
            requireCertificate=True,
            caCerts=[crypto.X509.from_cryptography(c) for c in authorities],
            raiseMinimumTo=TLSVersion.TLSv1_3 if listener.tls13_only else None,
            enableSessions=False,
            enableSessionTickets=False,
        )
        context = options.getContext()
    except (OSError, ValueError, TypeError, SSL.Error) as error:
        raise TlsSetupError(
            f"{listener.cert_file}: cannot build the TLS context: {error}"
        ) from None
    # Not left to library defaults: the floor, and no renegotiation (TLS 1.2 only has it).
    context.set_min_proto_version(SSL.TLS1_3_VERSION if listener.tls13_only else SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
    anchors = frozenset(c.public_bytes(serialization.Encoding.DER) for c in authorities)
    return ServerContext(context, (anchors, listener.tls13_only))


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTls:
    """The connection creator given to Twisted's TLS layer; :meth:`reload` swaps the context."""

    def __init__(self, listener: TlsListener) -> None:
        self.listener = listener
        self._built = build_context(listener)

    @property
    def trust(self) -> tuple[frozenset[bytes], bool]:
        """What new connections are verified against (see :attr:`ServerContext.trust`)."""
        return self._built.trust

    def swap(self, listener: TlsListener, built: ServerContext) -> None:
        """Serve new connections with ``built`` (by :func:`build_context` for a reload,
        before anything else was changed, so a bad file refuses the whole reload)."""
        self.listener, self._built = listener, built

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._built.context, None)
