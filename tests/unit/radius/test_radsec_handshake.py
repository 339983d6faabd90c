"""RadSec with real TLS on both sides, in memory: OpenSSL as the peer, Twisted's TLS layer and
our context as the server, bytes carried by hand (no sockets, an injected clock).

What the fake transport of test_radius_tls.py cannot show: what OpenSSL refuses in the
handshake with our context (versions, certificate purpose, chains, renegotiation, resumption),
what reaches the connection around the end of the handshake, and how the connection drives
Twisted's own TLS layer (flow control, closing).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from radmfa.auth.model import AccessRequest, Decision
from radmfa.config import RADSEC_SECRET, CertificateMatch, ClientConfig, RadiusConfig, TlsListener
from radmfa.radius import codec
from radmfa.radius.clients import ClientTable
from radmfa.radius.codec import ACCESS_ACCEPT, STATUS_SERVER
from radmfa.radius.server import RadiusServer, RadiusStats
from radmfa.radius.tls import CLOSE_GRACE, RadsecConnection, RadsecFactory, radsec_factory
from radmfa.radius.tlscontext import ReloadableServerTls
from tests.support.certs import ServerCert, TestCA, make_ca, make_server_cert

NAS = "nas1.example.org"


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    server: ServerCert
    nas: ServerCert  # clientAuth, SAN nas1.example.org
    server_only: ServerCert  # SAN nas1.example.org, but serverAuth only
    stranger: ServerCert  # clientAuth, a name no entry has
    issued_by_leaf: tuple[Path, Path]  # (chain, key): "nas1" signed by the nas leaf itself
    dir: Path


def _signed_by_leaf(directory: Path, ca: TestCA, leaf: ServerCert) -> tuple[Path, Path]:
    """A certificate for nas1.example.org signed by a leaf (CA:FALSE) the CA issued."""
    now = datetime.datetime.now(datetime.UTC)
    issuer = x509.load_pem_x509_certificate(leaf.cert_path.read_bytes())
    issuer_key = serialization.load_pem_private_key(leaf.key_path.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAS)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAS)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    chain = directory / "by-leaf.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + leaf.cert_path.read_bytes())
    key_path = directory / "by-leaf.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return chain, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("radsec-handshake")
    ca = make_ca(d)
    nas = make_server_cert(d, ca, [NAS], stem="nas", client=True)
    return Pki(
        ca=ca,
        server=make_server_cert(d, ca, ["radmfa.example.org"], stem="radmfa"),
        nas=nas,
        server_only=make_server_cert(d, ca, [NAS], stem="server-only"),
        stranger=make_server_cert(d, ca, ["stranger.example.org"], stem="stranger", client=True),
        issued_by_leaf=_signed_by_leaf(d, ca, nas),
        dir=d,
    )


class Handler:
    def __init__(self) -> None:
        self.requests: list[AccessRequest] = []

    def handle(self, request: AccessRequest) -> Deferred[Decision]:
        self.requests.append(request)
        return Deferred()


def listener(pki: Pki, **kw: object) -> TlsListener:
    return TlsListener(
        "127.0.0.1",
        2083,
        str(pki.server.cert_path),
        str(pki.server.key_path),
        str(pki.ca.cert_path),
        idle_timeout=60,
        **kw,  # type: ignore[arg-type]
    )


CLIENTS = [ClientConfig("nas", None, RADSEC_SECRET, certificate=CertificateMatch((), (NAS,)))]


class Link:
    """One connection: an OpenSSL client object and the server's TLS protocol over a
    StringTransport, with the bytes between them moved by :meth:`pump`."""

    def __init__(
        self, pki: Pki, client_context: SSL.Context, *, tls: TlsListener | None = None
    ) -> None:
        self.clock = Clock()
        self.handler = Handler()
        self.stats = RadiusStats()
        self.server = RadiusServer(
            ClientTable(CLIENTS), self.handler, self.clock, RadiusConfig(reject_delay=0), self.stats
        )
        tls = tls or listener(pki)
        self.factory = RadsecFactory(self.server, tls)
        wrapped = radsec_factory(ReloadableServerTls(tls), self.factory)
        self.tls = wrapped.buildProtocol(IPv4Address("TCP", "192.0.2.5", 40000))
        self.tcp = StringTransport()
        self.tls.makeConnection(self.tcp)
        self.peer = SSL.Connection(client_context, None)
        self.peer.set_connect_state()

    @property
    def connection(self) -> RadsecConnection:
        return self.tls.wrappedProtocol  # type: ignore[no-any-return]

    def to_server(self) -> bool:
        try:
            data = self.peer.bio_read(1 << 20)
        except SSL.WantReadError:
            return False
        if self.tcp.disconnecting:
            return False  # the server closed: nothing more is read
        self.tls.dataReceived(data)
        self.clock.advance(0)  # Twisted's TLS layer writes small records at the next turn
        return True

    def to_peer(self) -> bool:
        data = self.tcp.value()
        self.tcp.clear()
        if data:
            self.peer.bio_write(data)
        return bool(data)

    def handshake(self) -> SSL.Error | None:
        """Run the handshake as far as it goes; the peer's error if it failed on its side."""
        for _ in range(10):
            try:
                self.peer.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as error:
                return error
            moved = self.to_server()
            moved = self.to_peer() or moved
            if not moved:
                break
        return None

    def send(self, data: bytes) -> None:
        self.peer.send(data)
        self.to_server()

    def receive(self) -> bytes:
        self.to_peer()
        try:
            return self.peer.recv(65536)
        except SSL.WantReadError:
            return b""

    @property
    def open(self) -> bool:
        return self.connection.client is not None and not self.tcp.disconnecting


def context(
    pki: Pki,
    cert: ServerCert | tuple[Path, Path] | None = None,
    *,
    version: int | None = None,
) -> SSL.Context:
    """A client context showing ``cert`` (the nas certificate by default)."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    chain, key = (
        cert
        if isinstance(cert, tuple)
        else ((cert or pki.nas).cert_path, (cert or pki.nas).key_path)
    )
    ctx.use_certificate_chain_file(str(chain))
    ctx.use_privatekey_file(str(key))
    ctx.load_verify_locations(str(pki.ca.cert_path))
    ctx.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))
    if version is not None:
        ctx.set_min_proto_version(version)
        ctx.set_max_proto_version(version)
        if version < SSL.TLS1_2_VERSION:
            ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer it at all
    return ctx


def status_server(identifier: int) -> bytes:
    return codec.encode_request(
        RADSEC_SECRET, code=STATUS_SERVER, identifier=identifier, message_authenticator=True
    )


def access_request(identifier: int) -> bytes:
    return codec.encode_request(
        RADSEC_SECRET,
        identifier=identifier,
        user_name="alice",
        password="pw",
        message_authenticator=True,
    )


@pytest.fixture
def link(pki: Pki) -> Iterator[Link]:
    made = Link(pki, context(pki))
    assert made.handshake() is None and made.open
    yield made


# -- what the handshake refuses ---------------------------------------------------------------


def test_the_nas_certificate_opens_and_is_answered(link: Link) -> None:
    link.send(status_server(5))
    reply = link.receive()
    assert reply[0] == ACCESS_ACCEPT and reply[1] == 5
    assert link.connection.client is not None and link.connection.client.name == "nas"


@pytest.mark.parametrize("version", [SSL.TLS1_VERSION, SSL.TLS1_1_VERSION], ids=["1.0", "1.1"])
def test_tls_before_1_2_is_refused(pki: Pki, version: int) -> None:
    made = Link(pki, context(pki, version=version))
    assert made.handshake() is not None
    assert made.connection.client is None and made.tcp.disconnecting


def test_tls_1_2_is_refused_with_tls13_only(pki: Pki) -> None:
    made = Link(pki, context(pki, version=SSL.TLS1_2_VERSION), tls=listener(pki, tls13_only=True))
    assert made.handshake() is not None
    assert made.connection.client is None


def test_a_certificate_for_server_authentication_only_is_refused(pki: Pki) -> None:
    """OpenSSL checks the TLS client purpose: a web server's certificate from the same CA,
    with the NAS's very name, does not open a RadSec connection."""
    made = Link(pki, context(pki, pki.server_only))
    made.handshake()
    assert made.connection.client is None and made.tcp.disconnecting
    assert made.handler.requests == []


def test_a_certificate_signed_by_a_client_certificate_is_refused(pki: Pki) -> None:
    """A leaf (CA:FALSE) cannot issue: nas1's certificate holder minting another name."""
    made = Link(pki, context(pki, pki.issued_by_leaf))
    made.handshake()
    assert made.connection.client is None and made.tcp.disconnecting


def test_client_renegotiation_is_refused(pki: Pki) -> None:
    made = Link(pki, context(pki, version=SSL.TLS1_2_VERSION))
    assert made.handshake() is None and made.open
    assert made.peer.renegotiate()
    with pytest.raises(SSL.WantReadError):
        made.peer.do_handshake()
    made.to_server()
    made.to_peer()
    with pytest.raises(SSL.Error, match="no renegotiation"):
        made.peer.recv(100)
    assert made.connection.client is not None  # still the one verified client


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION], ids=["1.2", "1.3"])
def test_no_session_is_resumed(pki: Pki, version: int) -> None:
    """Every connection runs the full handshake: the certificate is verified each time
    (against the CA of the moment), never skipped by a ticket or a cached session."""
    ctx = context(pki, version=version)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_CLIENT)
    first = Link(pki, ctx)
    assert first.handshake() is None
    first.send(status_server(1))
    assert first.receive()  # any TLS 1.3 ticket came before the reply
    again = Link(pki, ctx)
    again.peer.set_session(first.peer.get_session())
    assert again.handshake() is None and again.open
    assert not SSL._lib.SSL_session_reused(again.peer._ssl)  # type: ignore[attr-defined]


# -- around the end of the handshake ----------------------------------------------------------


def test_requests_sent_with_the_last_handshake_flight_are_not_read_if_refused(pki: Pki) -> None:
    """TLS 1.3: the peer may send requests right behind its Finished, in one segment. A
    certificate no entry takes must not get them read, decoded or answered."""
    made = Link(pki, context(pki, pki.stranger, version=SSL.TLS1_3_VERSION))
    with pytest.raises(SSL.WantReadError):
        made.peer.do_handshake()
    made.to_server()  # ClientHello
    made.to_peer()  # ServerHello .. Finished
    made.peer.do_handshake()  # the peer is done; its Finished waits in its BIO
    made.peer.send(access_request(1) + status_server(2))
    made.to_server()  # Finished and both requests in one segment
    assert made.connection.client is None and made.connection.closed
    assert made.handler.requests == [] and made.stats.received == 0


def test_requests_sent_with_the_last_handshake_flight_belong_to_the_verified_client(
    pki: Pki,
) -> None:
    made = Link(pki, context(pki, version=SSL.TLS1_3_VERSION))
    with pytest.raises(SSL.WantReadError):
        made.peer.do_handshake()
    made.to_server()
    made.to_peer()
    made.peer.do_handshake()
    made.peer.send(access_request(1))
    made.to_server()
    assert [(r.client_name, r.packet_id) for r in made.handler.requests] == [("nas", 1)]


# -- flow control and closing with Twisted's TLS layer ----------------------------------------


def test_a_peer_not_reading_its_replies_is_no_longer_read(link: Link) -> None:
    """The socket's send buffer fills (the peer reads nothing) and the socket tells its
    producer to pause: through Twisted's TLS layer that must stop reading the socket, or
    every request read adds to replies that pile up in memory."""
    assert link.tcp.producer is not None and link.tcp.streaming
    link.tcp.producer.pauseProducing()
    assert link.tcp.producerState == "paused"
    link.tcp.producer.resumeProducing()
    assert link.tcp.producerState == "producing"


def test_an_idle_peer_that_never_answers_the_close_is_cut_off(link: Link) -> None:
    """Twisted's TLS layer closes politely: it sends close_notify and keeps the socket until
    the peer answers with its own. A peer that never does would hold the descriptor for
    ever, its slot of the client's cap already free; after CLOSE_GRACE it is aborted."""
    link.clock.advance(61)
    assert link.connection.closed and not link.tcp.disconnecting  # waiting for the peer
    assert link.factory.open_connections("nas") == 1  # still held until it is gone
    link.clock.advance(CLOSE_GRACE)
    assert link.tcp.disconnected  # StringTransport's mark of abortConnection


def test_a_refused_peer_that_never_answers_the_close_is_cut_off(pki: Pki) -> None:
    """Any certificate of the CA, even one no entry takes, gets a polite refusal after the
    handshake: without a deadline, ignoring it and connecting again leaked a descriptor each
    time, counted nowhere (neither handshaking nor open)."""
    made = Link(pki, context(pki, pki.stranger))
    made.handshake()
    assert made.connection.closed and made.factory.handshaking == 0
    made.clock.advance(CLOSE_GRACE)
    assert made.tcp.disconnected
