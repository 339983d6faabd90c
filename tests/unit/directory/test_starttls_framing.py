"""The native LDAP connection at the framing level: nothing read in clear survives StartTLS.

An attacker on the path can append bytes to the server's StartTLS answer. Whatever the TLS layer
later delivers must be framed on its own, never glued to those bytes (a forged bind success
completed by the real, encrypted "invalid credentials" answer).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from radmfa.directory.ber import (
    BIND_RESPONSE,
    EXTENDED_RESPONSE,
    MessageDecoder,
    encode_extended_request,
)
from radmfa.directory.ber import STARTTLS_OID as STARTTLS
from radmfa.directory.ldap_native import ConnectionFailed, LdapClientProtocol, LdapError

TIMEOUT = 5.0
#: ExtendedResponse, messageID 1, success, responseName StartTLS.
STARTTLS_ANSWER = (
    bytes([0x30, 0x24, 0x02, 0x01, 0x01, 0x78, 0x1F, 0x0A, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00])
    + bytes([0x8A, 0x16])
    + STARTTLS.encode()
)
#: The first 14 octets of a BindResponse "success" for messageID 2 whose length promises 14
#: more: exactly what OpenLDAP's "invalid credentials" answer (below) supplies.
FORGED_PREFIX = bytes.fromhex("30 1a 02 01 02 61 15 0a 01 00 04 00 04 00")
INVALID_CREDENTIALS = bytes.fromhex("30 0c 02 01 02 61 07 0a 01 31 04 00 04 00")
SUCCESS = bytes.fromhex("30 0c 02 01 02 61 07 0a 01 00 04 00 04 00")


class TlsStringTransport(StringTransport):
    """A StringTransport that records ``startTLS`` and ``abortConnection`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.tls_started: list[Any] = []
        self.aborted = False

    def startTLS(self, options: Any) -> None:
        self.tls_started.append(options)

    def abortConnection(self) -> None:
        self.aborted = True


def connected() -> tuple[LdapClientProtocol, TlsStringTransport, Clock]:
    clock = Clock()
    proto = LdapClientProtocol(clock, TIMEOUT, "ldap://test bind")
    transport = TlsStringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def outcome(deferred: Any) -> Any:
    results: list[Any] = []
    deferred.addBoth(results.append)
    return results[0] if results else None


def test_the_forged_prefix_would_complete_into_a_success():
    """The attack itself, on a bare decoder: prefix + the real "invalid credentials" answer."""
    messages = MessageDecoder().feed(FORGED_PREFIX + INVALID_CREDENTIALS)
    assert [(mid, r.op, r.code) for mid, r in messages] == [(2, BIND_RESPONSE, 0)]
    assert MessageDecoder().feed(STARTTLS_ANSWER)[0][1].op == EXTENDED_RESPONSE


def test_starttls_request_is_what_the_encoder_makes():
    proto, transport, _clock = connected()
    proto.start_tls(object())
    assert transport.value() == encode_extended_request(1, STARTTLS)


@pytest.mark.parametrize(
    "after",
    [FORGED_PREFIX, FORGED_PREFIX[:1], SUCCESS, SUCCESS + FORGED_PREFIX],
    ids=["partial-message", "one-octet", "whole-message", "whole-and-partial"],
)
def test_bytes_in_clear_after_the_starttls_answer_drop_the_connection(after):
    proto, transport, _clock = connected()
    handshake = proto.start_tls(object())
    proto.dataReceived(STARTTLS_ANSWER + after)
    failure = outcome(handshake)
    assert failure is not None and failure.check(LdapError)
    assert "clear after the StartTLS answer" in failure.getErrorMessage()
    assert transport.tls_started == []  # no handshake on a stream that lost its framing
    assert transport.aborted and not proto.alive


def test_bytes_before_the_handshake_completes_drop_the_connection():
    """The StartTLS answer alone, then (same reactor turn) more clear bytes: the handshake has
    started, so they can only be clear text injected into what is now a TLS stream."""
    proto, transport, _clock = connected()
    handshake = proto.start_tls(object())
    proto.dataReceived(STARTTLS_ANSWER[:5])
    proto.dataReceived(STARTTLS_ANSWER[5:])
    assert transport.tls_started  # the answer was clean: the handshake began
    proto.dataReceived(FORGED_PREFIX)  # what a real TLS layer never hands up before the handshake
    failure = outcome(handshake)
    assert failure is not None and failure.check(ConnectionFailed)
    assert not proto.alive


def test_after_a_clean_starttls_the_decoder_starts_empty():
    proto, transport, _clock = connected()
    handshake = proto.start_tls(object())
    proto.dataReceived(STARTTLS_ANSWER)
    assert transport.tls_started and proto.alive
    proto.handshakeCompleted()
    assert outcome(handshake) is None  # fired with None: the connection is ready
    bind = proto.bind("uid=alice,dc=example", b"wrong")
    proto.dataReceived(INVALID_CREDENTIALS)
    assert outcome(bind).code == 49


def test_ldaps_refuses_clear_bytes_that_came_before_the_handshake():
    proto, transport, _clock = connected()
    proto.dataReceived(FORGED_PREFIX)  # before begin_tls: a server (or someone) speaking first
    failure = outcome(proto.begin_tls(object()))
    assert failure is not None and failure.check(ConnectionFailed)
    assert transport.tls_started == [] and not proto.alive
