"""The UDP protocol and the server behind it, with a recording transport, a fake clock and a
handler the test controls."""

from __future__ import annotations

import gc
import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher

from radmfa.auth.model import (
    GENERIC_REJECT_MESSAGE,
    AccessRequest,
    AuthMethod,
    Decision,
    Outcome,
    Reason,
)
from radmfa.config import ClientConfig, RadiusConfig
from radmfa.native import is_compiled
from radmfa.radius import codec
from radmfa.radius.clients import ClientTable
from radmfa.radius.codec import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    ACCESS_REJECT,
    STATUS_SERVER,
    Attr,
)
from radmfa.radius.server import RadiusServer, RadiusStats
from radmfa.radius.udp import RadiusDatagramProtocol

SECRET = b"s3cret-shared-with-nas"
LEGACY_SECRET = b"legacy-pam-radius-secret"
NAS = ("192.0.2.10", 40000)
LEGACY = ("192.0.2.20", 40001)
PASSWORD = "hunter2-do-not-log"

ACCEPT = Decision(Outcome.ACCEPT, Reason.OK, user="alice")
REJECT = Decision(Outcome.REJECT, Reason.BAD_PASSWORD, user="alice")


@dataclass
class RecordingTransport:
    """Stands in for a UDP port: keeps every datagram written, in order."""

    writes: list[tuple[bytes, Any]] = field(default_factory=list)

    def write(self, data: bytes, addr: Any = None) -> None:
        self.writes.append((data, addr))


class ControlledHandler:
    """Records each request and returns a Deferred the test fires when it wants.

    Set ``decision`` to answer immediately instead, or ``error`` to raise synchronously.
    """

    def __init__(self) -> None:
        self.requests: list[AccessRequest] = []
        self.pending: list[Deferred[Decision]] = []
        self.decision: Decision | None = None
        self.error: Exception | None = None

    def handle(self, request: AccessRequest) -> Deferred[Decision]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        if self.decision is not None:
            return succeed(self.decision)
        waiting: Deferred[Decision] = Deferred()
        self.pending.append(waiting)
        return waiting


@dataclass
class Harness:
    protocol: RadiusDatagramProtocol
    transport: RecordingTransport
    handler: ControlledHandler
    clock: Clock
    stats: RadiusStats
    events: list[LogEvent]
    #: Logged tracebacks the test provokes on purpose; any other one fails the test.
    expected_failures: int = 0

    def send(self, packet: bytes, addr: tuple[str, int] = NAS) -> None:
        self.protocol.datagramReceived(packet, addr)

    @property
    def replies(self) -> list[bytes]:
        return [data for data, _ in self.transport.writes]

    def log_text(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)

    def failures(self) -> list[LogEvent]:
        return [event for event in self.events if "log_failure" in event]


def make_clients() -> ClientTable:
    return ClientTable(
        [
            ClientConfig("nas", ipaddress.ip_network("192.0.2.10/32"), SECRET),
            ClientConfig(
                "legacy-pam",
                ipaddress.ip_network("192.0.2.20/32"),
                LEGACY_SECRET,
                require_message_authenticator=False,
                limit_proxy_state=True,
            ),
            ClientConfig(
                "legacy-proxy",
                ipaddress.ip_network("192.0.2.30/32"),
                LEGACY_SECRET,
                require_message_authenticator=False,
                limit_proxy_state=False,
            ),
            ClientConfig("loopback", ipaddress.ip_network("127.0.0.1/32"), SECRET),
        ]
    )


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    captured: list[LogEvent] = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)


def build(events: list[LogEvent], **config: Any) -> Harness:
    clock = Clock()
    handler = ControlledHandler()
    stats = RadiusStats()
    server = RadiusServer(make_clients(), handler, clock, RadiusConfig(**config), stats)
    protocol = RadiusDatagramProtocol(server)
    transport = RecordingTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return Harness(protocol, transport, handler, clock, stats, events)


@pytest.fixture
def h(events: list[LogEvent]) -> Iterator[Harness]:
    harness = build(events)
    yield harness
    # Whatever a test does: no password in any log line, no unexpected traceback (also none
    # from a Deferred that failed unobserved, which is only reported when collected).
    gc.collect()
    assert PASSWORD not in harness.log_text()
    assert SECRET.decode() not in harness.log_text()
    assert len(harness.failures()) == harness.expected_failures


def request(
    identifier: int = 1,
    *,
    secret: bytes = SECRET,
    ma: bool = True,
    authenticator: bytes | None = None,
    **kwargs: Any,
) -> bytes:
    kwargs.setdefault("user_name", "alice")
    if "attributes" not in kwargs and kwargs.get("password", PASSWORD) is not None:
        kwargs.setdefault("password", PASSWORD)
    return codec.encode_request(
        secret,
        identifier=identifier,
        authenticator=authenticator,
        message_authenticator=ma,
        **kwargs,
    )


def attributes(reply: bytes) -> list[tuple[int, bytes]]:
    return codec.parse_attributes(reply)


def reply_messages(reply: bytes) -> bytes:
    return b"".join(v for t, v in attributes(reply) if t == Attr.REPLY_MESSAGE)


def assert_signed_reply(reply: bytes, req: bytes, secret: bytes = SECRET) -> None:
    assert reply[20] == Attr.MESSAGE_AUTHENTICATOR and reply[21] == 18
    assert reply[1] == req[1]
    assert codec.verify_reply(reply, req[4:20], secret)


# ---------------------------------------------------------------------------------------------
# The normal path


def test_accept_is_sent_at_once_to_the_exact_source(h: Harness) -> None:
    h.handler.decision = Decision(Outcome.ACCEPT, Reason.OK, reply_message="Welcome")
    req = request(5)
    h.send(req)
    assert len(h.transport.writes) == 1
    reply, addr = h.transport.writes[0]
    assert addr == NAS
    assert reply[0] == ACCESS_ACCEPT
    assert_signed_reply(reply, req)
    assert reply_messages(reply) == b"Welcome"
    assert h.stats.accepts == 1 and h.stats.received == 1


def test_handler_gets_a_plain_request_with_the_client_identity(h: Harness) -> None:
    h.handler.decision = ACCEPT
    h.send(request(5, attributes=[(Attr.NAS_IDENTIFIER, b"vpn1")], password=PASSWORD))
    [seen] = h.handler.requests
    assert seen.user_name == b"alice"
    assert seen.password == PASSWORD.encode()
    assert seen.method is AuthMethod.PAP
    assert seen.client_name == "nas"
    assert seen.client_address == "192.0.2.10"
    assert seen.nas_identifier == "vpn1"
    assert seen.packet_id == 5


def test_challenge_carries_state_and_message(h: Harness) -> None:
    h.handler.decision = Decision(
        Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED, reply_message="Code: ", state=b"\x07" * 16
    )
    req = request()
    h.send(req)
    [reply] = h.replies
    assert reply[0] == ACCESS_CHALLENGE
    assert_signed_reply(reply, req)
    assert (Attr.STATE, b"\x07" * 16) in attributes(reply)
    assert reply_messages(reply) == b"Code: "
    assert h.stats.challenges == 1


@pytest.mark.logs_errors
def test_challenge_without_message_becomes_a_reject(h: Harness) -> None:
    h.handler.decision = Decision(Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED, state=b"s" * 16)
    h.send(request())
    h.clock.advance(1)
    [reply] = h.replies
    assert reply[0] == ACCESS_REJECT
    assert h.stats.internal_errors == 1


@pytest.mark.logs_errors
def test_handler_returning_a_non_decision_is_rejected(h: Harness) -> None:
    h.send(request())
    h.handler.pending[0].callback("yes")  # type: ignore[arg-type]
    h.clock.advance(1)
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]
    assert h.stats.internal_errors == 1


# ---------------------------------------------------------------------------------------------
# Who may talk to us


def test_unknown_client_gets_no_reply_and_one_log_line_per_minute(h: Harness) -> None:
    stranger = ("127.0.0.2", 5000)
    h.send(request(), stranger)
    h.send(request(), stranger)
    h.clock.advance(59)
    h.send(request(), stranger)
    assert h.replies == [] and h.handler.requests == []
    assert h.stats.unknown_client == 3
    assert h.log_text().count("127.0.0.2") == 1
    h.clock.advance(1)
    h.send(request(), stranger)
    assert h.log_text().count("127.0.0.2") == 2


def test_nas_ip_address_does_not_identify_a_client(h: Harness) -> None:
    spoof = request(attributes=[(Attr.NAS_IP_ADDRESS, bytes((192, 0, 2, 10)))], password="x")
    h.send(spoof, ("198.51.100.1", 1812))
    assert h.replies == [] and h.stats.unknown_client == 1


def test_ipv4_mapped_source_matches_the_ipv4_client(h: Harness) -> None:
    h.handler.decision = ACCEPT
    mapped = ("::ffff:127.0.0.1", 5000)
    req = request()
    h.send(req, mapped)
    [(reply, addr)] = h.transport.writes
    assert addr == mapped  # answered on the address it came from
    assert_signed_reply(reply, req)
    assert h.handler.requests[0].client_name == "loopback"
    assert h.handler.requests[0].client_address == "127.0.0.1"


def test_clients_can_be_a_callable_swapped_on_reload(events: list[LogEvent]) -> None:
    tables = [ClientTable([])]
    clock = Clock()
    handler = ControlledHandler()
    handler.decision = ACCEPT
    protocol = RadiusDatagramProtocol(
        RadiusServer(lambda: tables[0], handler, clock, RadiusConfig())
    )
    transport = RecordingTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    protocol.datagramReceived(request(1), NAS)
    assert transport.writes == []
    tables[0] = make_clients()
    protocol.datagramReceived(request(2), NAS)
    assert len(transport.writes) == 1


def test_malformed_packet_is_dropped_counted_and_logged_without_traceback(h: Harness) -> None:
    h.send(request()[:19])
    h.send(b"\x04" + request()[1:])  # Accounting-Request on the auth port
    assert h.replies == [] and h.stats.malformed == 2
    assert h.failures() == []
    assert "malformed packet" in h.log_text()


@pytest.mark.skipif(
    is_compiled("radmfa.radius.codec"),
    reason="compiled codec calls its own functions directly; scripts/test.sh runs this pure",
)
def test_each_datagram_is_walked_and_rule_checked_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    parse, rules = codec._parse, codec._check_request_rules

    def counted_parse(*args: Any) -> Any:
        calls.append("parse")
        return parse(*args)

    def counted_rules(*args: Any) -> None:
        calls.append("rules")
        rules(*args)

    monkeypatch.setattr(codec, "_parse", counted_parse)
    monkeypatch.setattr(codec, "_check_request_rules", counted_rules)
    h.handler.decision = ACCEPT
    h.send(request(1))
    h.send(request(2, ma=False, secret=LEGACY_SECRET), LEGACY)
    assert calls == ["parse", "rules"] * 2
    assert h.stats.accepts == 2


# ---------------------------------------------------------------------------------------------
# Message-Authenticator and BlastRADIUS


def test_bad_message_authenticator_is_dropped_without_touching_the_cache(h: Harness) -> None:
    h.handler.decision = ACCEPT
    valid = request(9)
    h.send(valid)
    flipped = bytearray(valid)
    flipped[30] ^= 0x01  # inside the Message-Authenticator value
    h.send(bytes(flipped))
    h.send(request(9, secret=b"wrong-secret"))
    assert h.stats.bad_authenticator == 2
    h.send(valid)  # retransmission of the valid original still hits the cache
    assert len(h.handler.requests) == 1
    assert len(h.replies) == 2 and h.replies[0] == h.replies[1]
    assert h.stats.duplicates == 1


def test_missing_message_authenticator_is_dropped_when_required(h: Harness) -> None:
    h.handler.decision = ACCEPT
    h.send(request(ma=False))
    assert h.replies == [] and h.handler.requests == []
    assert h.stats.missing_authenticator == 1 and h.stats.dropped == 1


def test_missing_message_authenticator_is_answered_when_not_required(h: Harness) -> None:
    h.handler.decision = ACCEPT
    req = request(ma=False, secret=LEGACY_SECRET)
    h.send(req, LEGACY)
    [reply] = h.replies
    assert_signed_reply(reply, req, LEGACY_SECRET)  # replies always carry MA first
    assert h.stats.missing_authenticator == 1 and h.stats.dropped == 0


def test_proxy_state_without_ma_is_dropped_when_limited(h: Harness) -> None:
    h.handler.decision = ACCEPT
    h.send(request(ma=False, secret=LEGACY_SECRET, proxy_states=[b"183"]), LEGACY)
    assert h.replies == [] and h.handler.requests == []
    with_ma = request(2, secret=LEGACY_SECRET, proxy_states=[b"183"])
    h.send(with_ma, LEGACY)
    [reply] = h.replies
    assert [v for t, v in attributes(reply) if t == Attr.PROXY_STATE] == [b"183"]


def test_proxy_state_without_ma_is_answered_when_not_limited(h: Harness) -> None:
    h.handler.decision = ACCEPT
    states = [bytes.fromhex("313833"), bytes.fromhex("00ff"), bytes.fromhex("deadbeef")]
    req = request(ma=False, secret=LEGACY_SECRET, proxy_states=states)
    h.send(req, ("192.0.2.30", 1645))
    [reply] = h.replies
    assert [v for t, v in attributes(reply) if t == Attr.PROXY_STATE] == states


def test_eap_without_ma_is_dropped_even_for_legacy_clients(h: Harness) -> None:
    h.handler.decision = REJECT
    eap = [(Attr.EAP_MESSAGE, b"\x02\x01\x00\x09\x01alice")]
    h.send(request(ma=False, secret=LEGACY_SECRET, attributes=eap), LEGACY)
    assert h.handler.requests == []
    h.send(request(2, attributes=eap))
    assert [r.method for r in h.handler.requests] == [AuthMethod.EAP]


@pytest.mark.parametrize(
    "extra",
    [
        [(Attr.CHAP_PASSWORD, bytes(17)), (Attr.CHAP_CHALLENGE, bytes(16))],
        [(Attr.VENDOR_SPECIFIC, (311).to_bytes(4, "big") + b"\x19\x04ab")],
    ],
    ids=["chap", "mschap"],
)
def test_unsupported_methods_go_to_the_handler(h: Harness, extra: Any) -> None:
    h.handler.decision = Decision(Outcome.REJECT, Reason.UNSUPPORTED_METHOD)
    h.send(request(attributes=extra))
    h.clock.advance(1)
    assert h.handler.requests[0].method in (AuthMethod.CHAP, AuthMethod.MSCHAP)
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]


def test_status_server_with_ma_is_accepted_without_the_handler(h: Harness) -> None:
    probe = codec.encode_request(
        SECRET,
        code=STATUS_SERVER,
        identifier=77,
        message_authenticator=True,
        proxy_states=[b"\x00\x01"],
    )
    h.send(probe)
    [reply] = h.replies
    assert reply[0] == ACCESS_ACCEPT
    assert_signed_reply(reply, probe)
    assert [t for t, _ in attributes(reply)] == [Attr.MESSAGE_AUTHENTICATOR, Attr.PROXY_STATE]
    assert h.handler.requests == [] and h.stats.status_server == 1


def test_status_server_without_ma_is_dropped_even_for_legacy_clients(h: Harness) -> None:
    h.send(codec.encode_request(LEGACY_SECRET, code=STATUS_SERVER), LEGACY)
    h.send(codec.encode_request(SECRET, code=STATUS_SERVER))
    assert h.replies == [] and h.stats.status_server == 0


# ---------------------------------------------------------------------------------------------
# Reject delay, duplicates, timeouts


def test_reject_waits_for_the_delay_floor(h: Harness) -> None:
    h.handler.decision = REJECT
    req = request()
    h.send(req)
    assert h.replies == []
    h.clock.advance(0.999)
    assert h.replies == []
    h.clock.advance(0.001)
    [reply] = h.replies
    assert reply[0] == ACCESS_REJECT
    assert_signed_reply(reply, req)
    assert reply_messages(reply) == GENERIC_REJECT_MESSAGE.encode()
    assert h.stats.rejects == 1


def test_reject_delay_is_a_floor_not_an_extra_wait(h: Harness) -> None:
    h.send(request())
    h.clock.advance(2.5)
    h.handler.pending[0].callback(REJECT)
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]


def test_reject_uses_the_decision_message_when_given(h: Harness) -> None:
    h.handler.decision = Decision(Outcome.REJECT, Reason.LOCKED, reply_message="Try later.")
    h.send(request())
    h.clock.advance(1)
    assert reply_messages(h.replies[0]) == b"Try later."


def test_retransmission_while_processing_gets_nothing_and_one_handler_call(h: Harness) -> None:
    req = request(3)
    h.send(req)
    h.send(req)
    h.send(req)
    assert len(h.handler.requests) == 1 and h.replies == []
    assert h.stats.duplicates == 2
    h.handler.pending[0].callback(ACCEPT)
    assert len(h.replies) == 1


def test_retransmission_after_the_answer_gets_identical_bytes(h: Harness) -> None:
    req = request(3)
    h.send(req)
    h.handler.pending[0].callback(ACCEPT)
    h.clock.advance(10)
    h.send(req)
    assert len(h.handler.requests) == 1
    assert len(h.replies) == 2 and h.replies[0] == h.replies[1]


def test_retransmission_during_the_reject_delay_is_dropped(h: Harness) -> None:
    h.handler.decision = REJECT
    req = request(3)
    h.send(req)
    h.clock.advance(0.5)
    h.send(req)
    assert h.replies == [] and len(h.handler.requests) == 1
    h.clock.advance(0.5)
    assert len(h.replies) == 1
    h.send(req)
    assert len(h.replies) == 2 and h.replies[0] == h.replies[1]


def test_after_the_window_the_same_bytes_are_processed_again(h: Harness) -> None:
    h.handler.decision = ACCEPT
    req = request(3)
    h.send(req)
    h.clock.advance(30)
    h.send(req)
    assert len(h.handler.requests) == 2


def test_new_authenticator_with_same_id_supersedes_the_old_request(h: Harness) -> None:
    first = request(4, authenticator=b"\x01" * 16)
    second = request(4, authenticator=b"\x02" * 16)
    h.send(first)
    h.send(second)
    assert len(h.handler.requests) == 2
    h.handler.pending[0].callback(ACCEPT)  # late result of the superseded request
    assert h.replies == []
    h.handler.pending[1].callback(ACCEPT)
    [reply] = h.replies
    assert_signed_reply(reply, second)
    assert h.protocol.server.outstanding == 0


@pytest.mark.logs_errors
def test_handler_exception_becomes_a_delayed_reject(h: Harness) -> None:
    h.expected_failures = 1
    h.handler.error = RuntimeError("directory exploded")
    h.send(request())
    assert h.replies == []
    h.clock.advance(1)
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]
    assert reply_messages(h.replies[0]) == GENERIC_REJECT_MESSAGE.encode()
    assert h.stats.internal_errors == 1
    assert len(h.failures()) == 1  # logged once, with the traceback, for the developer


@pytest.mark.logs_errors
def test_handler_errback_becomes_a_reject(h: Harness) -> None:
    h.expected_failures = 1
    h.send(request())
    h.handler.pending[0].errback(RuntimeError("ldap down"))
    h.clock.advance(1)
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]


@pytest.mark.logs_errors
def test_slow_handler_times_out_into_a_reject_and_late_result_is_ignored(h: Harness) -> None:
    req = request()
    h.send(req)
    h.clock.advance(9.9)
    assert h.replies == []
    h.clock.advance(0.1)
    [reply] = h.replies
    assert reply[0] == ACCESS_REJECT
    assert h.protocol.server.in_flight == 0
    h.handler.pending[0].callback(ACCEPT)
    assert len(h.replies) == 1
    h.send(req)
    assert h.replies[1] == reply  # the cached answer is the reject


@pytest.mark.logs_errors
def test_late_failure_after_the_timeout_is_consumed_quietly(h: Harness) -> None:
    h.send(request())
    h.clock.advance(10)
    h.handler.pending[0].errback(RuntimeError("late"))
    gc.collect()
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]
    assert h.failures() == []  # no "Unhandled error in Deferred" either
    assert h.stats.internal_errors == 1  # the timeout, counted once


def test_drop_decision_sends_nothing_and_forgets_the_request(h: Harness) -> None:
    h.handler.decision = Decision(Outcome.DROP, Reason.OVERLOADED)
    req = request()
    h.send(req)
    h.clock.advance(5)
    assert h.replies == [] and h.stats.dropped == 1
    h.send(req)  # the client's retry is processed, not treated as a duplicate
    assert len(h.handler.requests) == 2


def test_requests_beyond_max_in_flight_are_dropped(events: list[LogEvent]) -> None:
    h = build(events, max_in_flight=2)
    for identifier in (1, 2, 3):
        h.send(request(identifier))
    assert len(h.handler.requests) == 2
    assert h.stats.overloaded == 1
    h.handler.pending[0].callback(ACCEPT)
    h.send(request(3))
    assert len(h.handler.requests) == 3


def test_invalid_password_length_is_rejected_without_the_handler(h: Harness) -> None:
    h.send(request(password=None, attributes=[(Attr.USER_PASSWORD, bytes(17))]))
    h.clock.advance(1)
    assert h.handler.requests == []
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]


def test_reloaded_radius_config_applies_to_new_requests(h: Harness) -> None:
    h.handler.decision = REJECT
    h.protocol.radius_config = RadiusConfig(reject_delay=0, duplicate_window=5)
    req = request()
    h.send(req)
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]
    assert h.protocol.cache.window == 5
    h.clock.advance(5)
    h.send(req)
    assert len(h.handler.requests) == 2  # the shorter window expired the answer


def test_zero_reject_delay_sends_at_once(events: list[LogEvent]) -> None:
    h = build(events, reject_delay=0)
    h.handler.decision = REJECT
    h.send(request())
    assert [r[0] for r in h.replies] == [ACCESS_REJECT]


# ---------------------------------------------------------------------------------------------
# Shutdown and robustness


def test_drain_waits_for_in_flight_requests_and_refuses_new_ones(h: Harness) -> None:
    answered = request(1)
    h.handler.decision = ACCEPT
    h.send(answered)
    h.handler.decision = None
    h.send(request(2))
    drained = h.protocol.server.drain()
    fired: list[object] = []
    drained.addCallback(fired.append)
    h.send(request(3))
    assert len(h.handler.requests) == 2 and h.stats.dropped == 1
    h.send(answered)  # a retransmission of an answered request is still answered
    assert len(h.replies) == 2
    assert fired == []
    h.handler.pending[0].callback(REJECT)
    assert fired == []  # the reject is still waiting out its delay
    h.clock.advance(1)
    assert fired == [None]
    assert len(h.replies) == 3


def test_status_server_is_not_answered_while_draining(h: Harness) -> None:
    h.protocol.server.stopAccepting()
    h.send(codec.encode_request(SECRET, code=STATUS_SERVER, message_authenticator=True))
    assert h.replies == [] and h.stats.dropped == 1


def test_drain_with_nothing_in_flight_fires_at_once(h: Harness) -> None:
    fired: list[object] = []
    h.protocol.server.drain().addCallback(fired.append)
    assert fired == [None]


@pytest.mark.logs_errors
def test_nothing_escapes_datagram_received(h: Harness) -> None:
    h.expected_failures = 1
    h.protocol.datagramReceived(request(), ("192.0.2.10",))  # a broken address tuple
    assert h.stats.internal_errors == 1


def test_fuzzed_datagrams_never_crash_the_protocol(h: Harness) -> None:
    h.handler.decision = REJECT
    rng = random.Random(2024)
    base = [
        (request(1), NAS),
        (request(2, proxy_states=[b"p"], state=b"s" * 16), NAS),
        (codec.encode_request(SECRET, code=STATUS_SERVER, message_authenticator=True), NAS),
        # Without a Message-Authenticator, mutations get past the MA check into decoding.
        (request(3, ma=False, secret=LEGACY_SECRET), LEGACY),
        (request(4, ma=False, secret=LEGACY_SECRET, attributes=[(Attr.STATE, b"x")]), LEGACY),
    ]
    for _ in range(3000):
        packet, source = rng.choice(base)
        data = bytearray(packet)
        for _ in range(rng.randint(1, 3)):
            if data and rng.random() < 0.7:
                data[rng.randrange(len(data))] = rng.randrange(256)
            else:
                data = data[: rng.randrange(len(data) + 1)]
        h.send(bytes(data), source)
    h.clock.advance(2)
    assert h.stats.internal_errors == 0
    assert h.failures() == []
    assert h.stats.received == 3000
    assert h.stats.malformed > 0 and h.stats.bad_authenticator > 0
    assert len(h.handler.requests) > 100  # mutated requests did reach the pipeline


def test_write_errors_are_logged_not_raised(h: Harness) -> None:
    def broken(data: bytes, addr: Any = None) -> None:
        raise OSError("Network is unreachable")

    h.transport.write = broken  # type: ignore[method-assign]
    h.handler.decision = ACCEPT
    h.send(request())
    assert h.stats.internal_errors == 0
    assert "Network is unreachable" in h.log_text()


@pytest.mark.logs_errors
def test_log_lines_carry_no_secret_or_password(h: Harness) -> None:
    h.expected_failures = 1
    h.handler.error = RuntimeError("boom")
    h.send(request(1))
    h.send(request(2, secret=b"not-the-secret-xyz"))
    h.send(request(3, ma=False))
    h.clock.advance(1)
    text = h.log_text()
    assert "nas" in text and "192.0.2.10" in text  # the client is named...
    assert PASSWORD not in text and "not-the-secret-xyz" not in text  # ...its secrets are not
    assert all(event["log_level"] is not LogLevel.debug for event in h.failures())
