"""RadSec framing, client identification and connection states, with a fake TLS transport.

The TLS handshake itself is OpenSSL's (tested end to end in tests/integration/test_radsec.py);
here a transport stands in for Twisted's TLS layer: it hands over the peer certificate the
handshake verified and records what the connection writes and how it closes.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import crypto
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from radmfa.auth.model import AccessRequest, Decision, Outcome, Reason
from radmfa.config import RADSEC_SECRET, CertificateMatch, ClientConfig, RadiusConfig, TlsListener
from radmfa.radius import codec
from radmfa.radius.clients import ClientTable
from radmfa.radius.codec import ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCOUNTING_REQUEST, STATUS_SERVER
from radmfa.radius.server import RadiusServer, RadiusStats
from radmfa.radius.tls import (
    CLOSE_GRACE,
    FrameError,
    PacketFramer,
    RadsecConnection,
    RadsecFactory,
)
from tests.support.certs import TestCA, make_ca, make_server_cert

ACCEPT = Decision(Outcome.ACCEPT, Reason.OK, user="alice")
UDP_SECRET = b"udp-secret-of-the-nas-long-enough"


def packet(identifier: int = 1, *, secret: bytes = RADSEC_SECRET, **kwargs: Any) -> bytes:
    kwargs.setdefault("user_name", "alice")
    if kwargs.get("code", 1) == 1:
        kwargs.setdefault("password", "hunter2-do-not-log")
    return codec.encode_request(secret, identifier=identifier, message_authenticator=True, **kwargs)


# -- framing ----------------------------------------------------------------------------------


def test_framer_cuts_coalesced_and_split_packets_in_order() -> None:
    packets = [packet(i) for i in range(5)]
    stream = b"".join(packets)
    framer = PacketFramer()
    got: list[bytes] = []
    rng = random.Random(6614)
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 90)
        got += framer.feed(stream[pos : pos + step])
        pos += step
    assert got == packets
    assert framer.pending == 0


def test_framer_holds_an_incomplete_packet_until_the_rest_arrives() -> None:
    whole = packet()
    framer = PacketFramer()
    assert framer.feed(whole[:3]) == []  # not even the Length yet
    assert framer.feed(whole[3:-1]) == []
    assert framer.pending == len(whole) - 1
    assert framer.feed(whole[-1:]) == [whole]


@pytest.mark.parametrize("length", [0, 4, 19, 4097, 65535])
def test_framer_refuses_a_length_outside_20_to_4096(length: int) -> None:
    framer = PacketFramer()
    with pytest.raises(FrameError):
        framer.feed(bytes((1, 1)) + length.to_bytes(2, "big") + bytes(16))


def test_framer_fuzzed_streams_only_ever_raise_frame_error() -> None:
    rng = random.Random(7360)
    for _ in range(2000):
        framer = PacketFramer()
        data = rng.randbytes(rng.randint(0, 300))
        try:
            for packet_bytes in framer.feed(data):
                assert 20 <= len(packet_bytes) <= 4096
        except FrameError:
            pass
        assert framer.pending < 4096


# -- client identification --------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    dns_nas: bytes  # SAN nas1.example.org, CN "NAS one"
    cn_only: bytes  # CN edge.example.org, no SAN
    other: bytes  # SAN other.example.org
    dns_nas_x509: crypto.X509
    other_x509: crypto.X509
    dir: Path
    ca: TestCA


def _der(path: Path) -> tuple[bytes, crypto.X509]:
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, path.read_bytes())
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert), cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("radsec-certs")
    ca = make_ca(directory)
    nas = make_server_cert(
        directory, ca, ["nas1.example.org"], stem="nas", common_name="NAS one", client=True
    )
    edge = make_server_cert(
        directory, ca, ["edge.example.org"], stem="edge", subject_alt_names=False, client=True
    )
    other = make_server_cert(directory, ca, ["other.example.org"], stem="other", client=True)
    nas_der, nas_x509 = _der(nas.cert_path)
    other_der, other_x509 = _der(other.cert_path)
    return Certs(nas_der, _der(edge.cert_path)[0], other_der, nas_x509, other_x509, directory, ca)


def radsec(
    name: str, *, names: tuple[str, ...] = (), fingerprints: tuple[bytes, ...] = (), **kw: Any
) -> ClientConfig:
    network = kw.pop("network", None)
    return ClientConfig(
        name,
        ipaddress.ip_network(network) if network else None,
        RADSEC_SECRET,
        certificate=CertificateMatch(fingerprints, names),
        **kw,
    )


def sha256(der: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(der).digest()


def test_a_certificate_is_matched_by_its_dns_subject_alt_name_not_its_cn(certs: Certs) -> None:
    table = ClientTable(
        [radsec("nas", names=("nas1.example.org",)), radsec("cn", names=("nas one",))]
    )
    found = table.lookup_certificate(certs.dns_nas, "192.0.2.1")
    assert found is not None and found.name == "nas"


def test_the_cn_counts_only_without_a_dns_subject_alt_name(certs: Certs) -> None:
    table = ClientTable([radsec("edge", names=("edge.example.org",))])
    found = table.lookup_certificate(certs.cn_only, "192.0.2.1")
    assert found is not None and found.name == "edge"


def test_a_fingerprint_entry_wins_over_a_name_entry_and_the_catch_all(certs: Certs) -> None:
    table = ClientTable(
        [
            radsec("any"),
            radsec("by-name", names=("nas1.example.org",)),
            radsec("by-fingerprint", fingerprints=(sha256(certs.dns_nas),)),
        ]
    )
    assert table.lookup_certificate(certs.dns_nas, "192.0.2.1").name == "by-fingerprint"  # type: ignore[union-attr]
    assert table.lookup_certificate(certs.other, "192.0.2.1").name == "any"  # type: ignore[union-attr]


def test_a_certificate_matching_no_entry_finds_no_client(certs: Certs) -> None:
    table = ClientTable(
        [
            radsec("by-name", names=("nas1.example.org",)),
            radsec("pinned", fingerprints=(sha256(certs.dns_nas),)),
        ]
    )
    assert table.lookup_certificate(certs.other, "192.0.2.1") is None
    assert table.lookup_certificate(b"not DER at all", "192.0.2.1") is None


def test_every_criterion_of_an_entry_must_hold(certs: Certs) -> None:
    """A fingerprint entry that also names the certificate, or restricts the address, does
    not match when that part fails; no looser entry is invented."""
    table = ClientTable(
        [
            radsec(
                "pinned-and-named",
                names=("someone-else.example.org",),
                fingerprints=(sha256(certs.dns_nas),),
            ),
            radsec("from-lan", names=("other.example.org",), network="10.0.0.0/8"),
        ]
    )
    assert table.lookup_certificate(certs.dns_nas, "192.0.2.1") is None
    assert table.lookup_certificate(certs.other, "192.0.2.1") is None
    assert table.lookup_certificate(certs.other, "10.1.2.3").name == "from-lan"  # type: ignore[union-attr]
    assert table.lookup_certificate(certs.other, "::ffff:10.1.2.3").name == "from-lan"  # type: ignore[union-attr]


def test_a_radsec_entry_never_matches_a_udp_source_address() -> None:
    """Its secret is the public "radsec": over UDP that would let anyone sign requests."""
    table = ClientTable([radsec("edge", names=("edge.example.org",), network="192.0.2.0/24")])
    assert table.lookup("192.0.2.7") is None


# -- connections ------------------------------------------------------------------------------


@dataclass
class FakeTlsTransport:
    """Stands in for Twisted's TLS layer after (or during) the handshake: the verified peer
    certificate, every write, and how the connection was closed."""

    peer: crypto.X509 | None
    writes: list[bytes] = field(default_factory=list)
    closed: str | None = None
    protocol: RadsecConnection | None = None
    producer: object | None = None
    reading: bool = True
    #: A peer that reads nothing: a polite close never completes (connectionLost never comes).
    stuck: bool = False
    closing: bool = False

    def getPeerCertificate(self) -> crypto.X509 | None:
        return self.peer

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert self.producer is None and streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        assert self.producer is not None
        self.producer = None

    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def write(self, data: bytes) -> None:
        assert self.closed is None, "write after close"
        self.writes.append(data)

    def _close(self, how: str) -> None:
        if self.closed is None:
            self.closed = how
            if self.protocol is not None:
                self.protocol.connectionLost(Failure(ConnectionError(how)))

    def loseConnection(self) -> None:
        if self.stuck:
            self.closing = True
            return
        self._close("lose")

    def abortConnection(self) -> None:
        self._close("abort")


class ControlledHandler:
    def __init__(self) -> None:
        self.requests: list[AccessRequest] = []
        self.pending: list[Deferred[Decision]] = []

    def handle(self, request: AccessRequest) -> Deferred[Decision]:
        self.requests.append(request)
        waiting: Deferred[Decision] = Deferred()
        self.pending.append(waiting)
        return waiting


@dataclass
class Harness:
    factory: RadsecFactory
    server: RadiusServer
    handler: ControlledHandler
    clock: Clock
    stats: RadiusStats
    certs: Certs
    #: The client tables in turn; the last is current (append one to "reload").
    tables: list[ClientTable]

    def connect(
        self, peer: crypto.X509 | None = None, source: str = "192.0.2.50", *, handshake: bool = True
    ) -> tuple[RadsecConnection, FakeTlsTransport]:
        conn = self.factory.buildProtocol(IPv4Address("TCP", source, 40000))
        transport = FakeTlsTransport(peer if peer is not None else self.certs.dns_nas_x509)
        transport.protocol = conn
        conn.makeConnection(transport)  # type: ignore[arg-type]
        if handshake and transport.closed is None:
            conn.handshakeCompleted()
        return conn, transport


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    captured: list[LogEvent] = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)


LISTENER = TlsListener(
    "127.0.0.1",
    2083,
    "c",
    "k",
    "ca",
    handshake_timeout=5,
    idle_timeout=60,
    max_connections_per_client=2,
)


@pytest.fixture
def h(certs: Certs, events: list[LogEvent]) -> Harness:
    clock = Clock()
    handler = ControlledHandler()
    stats = RadiusStats()
    table = ClientTable(
        [
            ClientConfig("udp-nas", ipaddress.ip_network("192.0.2.50/32"), UDP_SECRET),
            radsec("nas", names=("nas1.example.org",)),
        ]
    )
    tables = [table]
    server = RadiusServer(
        lambda: tables[-1], handler, clock, RadiusConfig(reject_delay=0, request_timeout=120), stats
    )
    return Harness(RadsecFactory(server, LISTENER), server, handler, clock, stats, certs, tables)


def test_requests_are_identified_by_certificate_and_answered_in_any_order(h: Harness) -> None:
    conn, transport = h.connect()
    conn.dataReceived(packet(1) + packet(2))
    assert [r.client_name for r in h.handler.requests] == ["nas", "nas"]
    assert h.handler.requests[0].client_address == "192.0.2.50"
    h.handler.pending[1].callback(ACCEPT)
    h.handler.pending[0].callback(
        Decision(Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED, reply_message="Code?", state=b"s" * 16)
    )
    assert [(r[0], r[1]) for r in transport.writes] == [(ACCESS_ACCEPT, 2), (ACCESS_CHALLENGE, 1)]
    for reply in transport.writes:  # signed with the RadSec secret, Message-Authenticator first
        assert reply[20] == codec.Attr.MESSAGE_AUTHENTICATOR
    assert transport.closed is None


def test_the_source_address_never_picks_the_client(h: Harness) -> None:
    """A certificate matching no entry is refused even from the address of a UDP client."""
    conn, transport = h.connect(h.certs.other_x509, source="192.0.2.50")
    assert transport.closed == "abort" or transport.closed == "lose"
    assert conn.client is None
    assert h.factory.refused == 1
    assert h.server.stats.tls_refused == 1  # radmfa_radius_packets_total{kind="tls_refused"}


def test_data_before_the_handshake_is_never_processed(h: Harness) -> None:
    conn, transport = h.connect(handshake=False)
    conn.dataReceived(packet(1))
    assert h.handler.requests == []
    assert transport.closed == "abort"


def test_a_stalled_handshake_is_closed_after_the_timeout(h: Harness) -> None:
    _conn, transport = h.connect(handshake=False)
    h.clock.advance(4.9)
    assert transport.closed is None
    h.clock.advance(0.2)
    assert transport.closed == "abort"
    assert h.factory.handshaking == 0


def test_half_open_handshakes_from_one_address_are_capped(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("radmfa.radius.tls.MAX_HANDSHAKES_PER_SOURCE", 3)
    stalled = [h.connect(handshake=False)[1] for _ in range(3)]
    _, refused = h.connect(handshake=False)
    assert refused.closed == "abort"
    assert all(t.closed is None for t in stalled)
    _, elsewhere = h.connect(source="192.0.2.99")  # another address still gets in
    assert elsewhere.closed is None


def test_connections_per_client_are_capped_and_freed_on_close(h: Harness) -> None:
    first = h.connect()
    h.connect()
    _, third = h.connect()
    assert third.closed is not None
    first[1].loseConnection()
    _, again = h.connect()
    assert again.closed is None
    assert h.factory.open_connections("nas") == 2


def test_status_server_is_answered_without_the_pipeline(h: Harness) -> None:
    _conn, transport = h.connect()
    _conn.dataReceived(packet(7, code=STATUS_SERVER, user_name=None))
    assert h.handler.requests == []
    assert transport.writes[0][0] == ACCESS_ACCEPT and transport.writes[0][1] == 7


def test_an_identifier_in_flight_on_the_connection_is_a_duplicate(h: Harness) -> None:
    conn, transport = h.connect()
    conn.dataReceived(packet(9))
    conn.dataReceived(packet(9))
    assert len(h.handler.requests) == 1
    assert h.stats.duplicates == 1
    h.handler.pending[0].callback(ACCEPT)
    conn.dataReceived(packet(9))  # answered: the Identifier may be used again
    assert len(h.handler.requests) == 2
    assert transport.closed is None


def _relength(whole: bytes, change: int, tail: bytes) -> bytes:
    """``whole`` with its Length field off by ``change`` (cut or padded with ``tail``)."""
    length = len(whole) + change
    body = whole[:length] if change < 0 else whole + tail
    return body[:2] + length.to_bytes(2, "big") + body[4:]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: bytes((1, 1, 0, 5)) + bytes(16), id="length-below-20"),
        pytest.param(lambda: bytes((1, 1, 0x10, 0x01)), id="length-above-4096"),
        pytest.param(lambda: packet(1, secret=b"not-radsec"), id="bad-message-authenticator"),
        pytest.param(lambda: packet(1, code=ACCESS_ACCEPT), id="a-reply-code"),
        pytest.param(lambda: _relength(packet(1), +4, b"\0" * 4), id="length-past-attributes"),
        pytest.param(lambda: _relength(packet(1), -3, b""), id="length-inside-an-attribute"),
    ],
)
def test_a_bad_packet_closes_the_connection_before_the_pipeline(h: Harness, bad: Any) -> None:
    conn, transport = h.connect()
    conn.dataReceived(bad() + packet(2))  # nothing after it is read either
    assert transport.closed == "abort"
    assert h.handler.requests == []


def test_a_request_refused_by_a_rule_is_dropped_alone(h: Harness) -> None:
    """No Message-Authenticator while the entry requires one: that request is dropped, and
    the connection (a proxy's, carrying other NAS) stays."""
    conn, transport = h.connect()
    unsigned = codec.encode_request(RADSEC_SECRET, identifier=1, user_name="a", password="b")
    conn.dataReceived(unsigned + packet(2))
    assert transport.closed is None
    assert [r.packet_id for r in h.handler.requests] == [2]
    assert h.stats.dropped == 1


def test_accounting_is_dropped_without_closing_the_shared_connection(h: Harness) -> None:
    conn, transport = h.connect()
    accounting = bytearray(packet(3))
    accounting[0] = ACCOUNTING_REQUEST
    conn.dataReceived(bytes(accounting) + packet(4))
    assert transport.closed is None
    assert [r.packet_id for r in h.handler.requests] == [4]


def test_a_connection_lost_mid_request_drops_the_reply_but_the_request_ends(h: Harness) -> None:
    conn, transport = h.connect()
    conn.dataReceived(packet(1))
    transport.loseConnection()
    h.handler.pending[0].callback(ACCEPT)  # the pipeline finishes: its attempt ends as usual
    assert transport.writes == []
    assert h.server.outstanding == 0 and h.server.in_flight == 0
    assert h.stats.accepts == 0


def test_an_idle_connection_is_closed_but_not_while_a_request_is_in_flight(h: Harness) -> None:
    conn, transport = h.connect()
    conn.dataReceived(packet(1))
    h.clock.advance(61)
    assert transport.closed is None  # a slow decision is not an idle peer
    h.handler.pending[0].callback(ACCEPT)
    h.clock.advance(59)
    assert transport.closed is None
    h.clock.advance(2)
    assert transport.closed == "lose"
    assert h.factory.open_connections("nas") == 0


def test_a_stream_fuzzed_after_the_handshake_never_crashes(
    h: Harness, events: list[LogEvent]
) -> None:
    rng = random.Random(2083)
    for _ in range(300):
        conn, _transport = h.connect(source=f"192.0.2.{rng.randint(1, 200)}")
        valid = packet(rng.randint(0, 255))
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        conn.dataReceived(bytes(data) + rng.randbytes(rng.randint(0, 40)))
        conn.connectionLost(Failure(ConnectionError("bye")))
    assert not [e for e in events if "log_failure" in e]
    for pending in h.handler.pending:
        pending.callback(ACCEPT)
    assert h.server.outstanding == 0


def test_after_drain_no_request_starts(h: Harness) -> None:
    conn, _transport = h.connect()
    h.server.drain()
    conn.dataReceived(packet(1))
    assert h.handler.requests == []


# -- what a peer can put in the log ------------------------------------------------------------


def test_a_refused_certificate_cannot_fill_the_log_with_its_names(
    h: Harness, events: list[LogEvent]
) -> None:
    """Its subjectAltNames are the peer's choice (within what the CA signs): the refusal
    shows a few of them, cut short, never the whole list."""
    names = [f"{i:03d}-" + "x" * 200 + ".example.org" for i in range(300)]
    flood = make_server_cert(
        h.certs.dir, h.certs.ca, names, stem="flood", common_name="flood", client=True
    )
    _conn, transport = h.connect(_der(flood.cert_path)[1])
    assert transport.closed is not None
    lines = [formatEvent(e) for e in events if "Refused a RadSec" in e.get("log_format", "")]
    assert len(lines) == 1 and "000-xxx" in lines[0] and "296 more" in lines[0]
    assert len(lines[0]) < 1000


# -- resource use -----------------------------------------------------------------------------


def test_a_packet_trickling_in_a_byte_at_a_time_does_not_hold_the_connection(h: Harness) -> None:
    """Slowloris: one byte every 50 s (under the 60 s idle_timeout) of a packet that is
    never finished must not keep the connection, and its slot of the client, forever."""
    conn, transport = h.connect()
    whole = packet(1)
    for byte in whole[:-1]:
        if transport.closed is not None:
            break
        conn.dataReceived(bytes((byte,)))
        h.clock.advance(50)
    assert transport.closed is not None
    assert h.handler.requests == []
    assert h.factory.open_connections("nas") == 0


def test_a_peer_that_reads_nothing_is_cut_off_after_a_polite_close(h: Harness) -> None:
    """A polite close waits for the queued replies to go out; a peer that never reads keeps
    that from finishing. Its connection (and descriptor) must go anyway, and keep its slot of
    the client's cap until it has: else close, reconnect, repeat leaks descriptors."""
    _conn, transport = h.connect()
    transport.stuck = True
    h.clock.advance(61)  # idle: closed politely
    assert transport.closing and transport.closed is None
    assert h.factory.open_connections("nas") == 1
    h.clock.advance(CLOSE_GRACE)
    assert transport.closed == "abort"
    assert h.factory.open_connections("nas") == 0


def test_an_open_connection_stops_reading_while_its_replies_are_not_read(h: Harness) -> None:
    """The socket calls pauseProducing when its send buffer is full: the peer is not reading
    its replies. Reading its requests stops until resumeProducing, so the replies waiting for
    it stay bounded (about one read's worth)."""
    conn, transport = h.connect()
    assert transport.producer is conn
    conn.pauseProducing()
    assert not transport.reading
    conn.resumeProducing()
    assert transport.reading
    h.clock.advance(61)  # idle
    assert transport.closed == "lose" and transport.producer is None  # unregistered first


def test_ipv6_handshakes_are_capped_per_slash_64(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One host holds a whole /64: a fresh address per connection must not lift the cap."""
    monkeypatch.setattr("radmfa.radius.tls.MAX_HANDSHAKES_PER_SOURCE", 3)
    stalled = [h.connect(source=f"2001:db8::{i + 1:x}", handshake=False)[1] for i in range(3)]
    _, refused = h.connect(source="2001:db8::ffff:1", handshake=False)
    assert refused.closed == "abort"
    assert all(t.closed is None for t in stalled)
    _, elsewhere = h.connect(source="2001:db8:0:1::1", handshake=False)  # the next /64
    assert elsewhere.closed is None


def test_handshakes_in_progress_are_capped_in_all(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many addresses, a few stalled handshakes each: together they must not take every
    descriptor of the process (LDAP, the store and UDP share them)."""
    monkeypatch.setattr("radmfa.radius.tls.MAX_HANDSHAKES", 5)
    stalled = [h.connect(source=f"192.0.2.{i + 1}", handshake=False)[1] for i in range(5)]
    _, refused = h.connect(source="198.51.100.1", handshake=False)
    assert refused.closed == "abort"
    assert all(t.closed is None for t in stalled)
    h.clock.advance(6)  # the stalled ones time out: room again
    _, later = h.connect(source="198.51.100.1", handshake=False)
    assert later.closed is None
    assert h.factory.handshaking == 1


# -- reload -----------------------------------------------------------------------------------


def test_a_client_entry_removed_by_a_reload_takes_no_more_requests(h: Harness) -> None:
    """Its connection was opened before the reload; a removed entry (a NAS retired, a key
    stolen) must not keep working over it until the peer hangs up."""
    conn, transport = h.connect()
    conn.dataReceived(packet(1))
    h.tables.append(ClientTable([radsec("other", names=("other.example.org",))]))
    conn.dataReceived(packet(2))
    assert [r.packet_id for r in h.handler.requests] == [1]
    assert transport.closed is not None and conn.closed


def test_a_fingerprint_changed_by_a_reload_closes_the_old_certificates_connection(
    h: Harness,
) -> None:
    conn, transport = h.connect()
    pinned_elsewhere = radsec(
        "nas", names=("nas1.example.org",), fingerprints=(sha256(h.certs.other),)
    )
    h.tables.append(ClientTable([pinned_elsewhere]))
    conn.dataReceived(packet(1))
    assert h.handler.requests == [] and transport.closed is not None


def test_an_address_condition_added_by_a_reload_applies_to_open_connections(
    h: Harness,
) -> None:
    conn, transport = h.connect(source="192.0.2.50")
    h.tables.append(ClientTable([radsec("nas", names=("nas1.example.org",), network="10.0.0.0/8")]))
    conn.dataReceived(packet(1))
    assert h.handler.requests == [] and transport.closed is not None


def test_an_entry_still_matching_after_a_reload_keeps_its_connection_with_new_settings(
    h: Harness,
) -> None:
    conn, transport = h.connect()
    unsigned = codec.encode_request(RADSEC_SECRET, identifier=1, user_name="a", password="b")
    conn.dataReceived(unsigned)
    assert h.handler.requests == []  # the entry requires a Message-Authenticator
    h.tables.append(
        ClientTable(
            [radsec("nas", names=("nas1.example.org",), require_message_authenticator=False)]
        )
    )
    conn.dataReceived(unsigned)
    assert [r.packet_id for r in h.handler.requests] == [1]
    assert transport.closed is None


def test_close_all_closes_open_and_handshaking_connections(h: Harness) -> None:
    _, opened = h.connect()
    _, handshaking = h.connect(source="192.0.2.77", handshake=False)
    h.factory.close_all("its listen_tls entry was removed")
    assert opened.closed is not None and handshaking.closed is not None
    assert h.factory.handshaking == 0 and h.factory.open_connections("nas") == 0
    assert h.factory.refused == 0  # closed by the server, not refused peers
