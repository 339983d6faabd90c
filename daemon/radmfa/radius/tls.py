"""RADIUS over TLS (RadSec, RFC 6614): framing, client by certificate, one reply per request.

A connection walks through three states: *handshaking* (a timer runs; nothing is read), *open*
(the peer certificate verified by OpenSSL matched a client entry, found only now and never
from the source address) and *closed*. Packets are cut from the stream by their Length field
(RFC 6613 section 2.4); a Length outside 20..4096, a malformed packet or a wrong
Message-Authenticator closes the connection (RFC 6614 section 2.6, RFC 7360), since the
stream cannot be trusted past it. A packet refused by a rule (a Message-Authenticator the
client entry requires, ...) is dropped alone: a proxy's connection carries many NAS. Many
requests may be in flight on one connection and are answered in any order; an Identifier
already in flight on the connection is a duplicate and dropped. A reply to a connection that
closed meanwhile is discarded; the pipeline still finishes the request, so its attempt
reservation ends as usual.

Everything here runs on the reactor and never waits: a peer that stalls mid-handshake or
after it only holds its own connection, until the handshake or idle timeout closes it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol as Interface
from typing import cast

from OpenSSL import crypto
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from radmfa.config import ClientConfig, TlsListener
from radmfa.radius.clients import (
    ClientTable,
    certificate_names,
    normalise_address,
    source_address,
)
from radmfa.radius.codec import (
    ACCOUNTING_REQUEST,
    HEADER_LENGTH,
    MAX_PACKET_LENGTH,
    STATUS_SERVER,
    DecodedRequest,
)
from radmfa.radius.server import LOG_INTERVAL, RadiusServer, Refusal
from radmfa.radius.tlscontext import ReloadableServerTls

#: Connections from one address (an IPv6 /64) still in their handshake; more are closed at
#: once, so one host cannot hold every descriptor with half-open handshakes.
MAX_HANDSHAKES_PER_SOURCE = 32
#: Connections still in their handshake from everywhere together: each holds a descriptor
#: (systemd's default soft limit is 1024 per process, shared with LDAP, the store, UDP), and
#: many addresses need not belong to many hosts.
MAX_HANDSHAKES = 256
#: Seconds a polite close (TLS close_notify, then the unsent replies) may take before the
#: connection is cut: a peer that reads nothing would otherwise hold it open for ever.
CLOSE_GRACE = 10.0


class FrameError(ValueError):
    """The stream cannot be cut into RADIUS packets any more."""


class PacketFramer:
    """Cuts a byte stream into RADIUS packets by their Length field (RFC 6613 section 2.4).

    Holds at most one incomplete packet (< 4096 bytes); raises :class:`FrameError` for a
    Length outside 20..4096, after which the stream is useless.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The complete packets ``data`` finishes, in order."""
        buffer = self._buffer
        buffer += data
        packets: list[bytes] = []
        start = 0
        while len(buffer) - start >= 4:
            length = int.from_bytes(buffer[start + 2 : start + 4], "big")
            if not HEADER_LENGTH <= length <= MAX_PACKET_LENGTH:
                buffer.clear()
                raise FrameError(f"Length field {length} is outside 20..4096")
            if len(buffer) - start < length:
                break
            packets.append(bytes(buffer[start : start + length]))
            start += length
        del buffer[:start]
        return packets


@dataclass(eq=False, slots=True)
class _TlsReply:
    """The reply channel of one request on one connection."""

    connection: RadsecConnection
    identifier: int

    def deliver(self, reply: bytes) -> bool:
        return self.connection.send_reply(self.identifier, reply)

    def abandon(self) -> None:
        self.connection.forget(self.identifier)


class _TlsTransport(Interface):
    """What a connection uses of its transport, Twisted's ``TLSMemoryBIOProtocol``: the TLS
    layer's own methods, and pause/resume, which it passes on to the TCP transport."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def getPeerCertificate(self) -> crypto.X509 | None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


@implementer(IHandshakeListener, IPushProducer)
class RadsecConnection(Protocol):
    """One RadSec connection, under Twisted's TLS layer (``self.transport`` is TLS).

    Once open it is also the producer of its transport: while the socket's send buffer is
    full (a peer that does not read its replies) it stops reading the peer's requests, so
    what is held for one connection stays bounded.
    """

    log = Logger(namespace="radmfa.radius.tls")

    def __init__(self, factory: RadsecFactory, source: str) -> None:
        self.factory = factory
        self.source = source
        self.client: ClientConfig | None = None
        self.closed = False
        self._framer = PacketFramer()
        #: Identifier -> Request Authenticator of requests in flight on this connection.
        self._in_flight: dict[int, bytes] = {}
        self._timer: IDelayedCall | None = None
        #: Already counted and logged as refused (its close is not a failed handshake).
        self._refused = False
        #: Registered as the transport's producer (unregistered before closing).
        self._producing = False
        #: connectionLost came: the descriptor is gone.
        self._lost = False
        #: Cuts a polite close that the peer keeps from finishing.
        self._reaper: IDelayedCall | None = None
        #: The peer certificate (DER) and the client table that found ``client``: a reload
        #: brings a new table, and the certificate is looked up in it again.
        self._certificate = b""
        self._table: ClientTable | None = None

    @property
    def _tls(self) -> _TlsTransport | None:
        """``transport`` as what it is: this protocol only runs wrapped by
        :class:`TLSMemoryBIOFactory` (see :func:`radsec_factory`)."""
        return cast("_TlsTransport | None", self.transport)

    # -- life cycle ----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        if not factory.handshake_started(self):
            self._refuse("too many handshakes in progress from this address", abort=True)
            return
        self._timer = factory.clock.callLater(
            factory.listener.handshake_timeout, self._handshake_timed_out
        )

    def handshakeCompleted(self) -> None:
        """The chain verified (OpenSSL refused any other): now find whose certificate it is."""
        factory = self.factory
        factory.handshake_ended(self)
        self._cancel_timer()
        if self.closed:
            return
        tls = self._tls
        peer = tls.getPeerCertificate() if tls is not None else None
        if tls is None or peer is None:  # cannot happen with requireCertificate; refuse
            self._refuse("no client certificate")
            return
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, peer)
        table = factory.server.current_clients()
        client = table.lookup_certificate(der, self.source)
        if client is None:
            self._refuse(f"no client entry matches its certificate (names {_shown(peer)})")
            return
        if not factory.connection_opened(client, self):
            self._refuse(
                f"client {client.name} already holds "
                f"{factory.listener.max_connections_per_client} connections"
            )
            return
        self.client, self._certificate, self._table = client, der, table
        tls.registerProducer(self, True)
        self._producing = True
        self.log.info(
            "RadSec connection from {client} ({source}) open",
            client=client.name,
            source=self.source,
        )
        self._touch()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        was_open = self.client is not None
        self._lost = True
        if self._reaper is not None and self._reaper.active():
            self._reaper.cancel()
        self._reaper = None
        self._close_state()
        if self.client is not None:  # its slot is free only now that the descriptor is
            self.factory.connection_closed(self.client, self)
        if was_open:
            lost = len(self._in_flight)
            self.log.info(
                "RadSec connection from {client} ({source}) closed{lost}",
                client=self.client.name if self.client else "?",
                source=self.source,
                lost=f"; {lost} request(s) in flight will get no reply" if lost else "",
            )
        elif not self._refused:
            why = reason.getErrorMessage() if isinstance(reason, Failure) else "closed"
            self.factory.refused += 1
            self.factory.server.stats.tls_refused += 1
            self.factory.log_refusal(self.source, f"TLS handshake failed or abandoned: {why}")

    def _close_state(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        self.factory.handshake_ended(self)

    def _refuse(self, why: str, *, abort: bool = False) -> None:
        """Count, log (once a minute per source) and close; no packet was read."""
        self._refused = True
        self.factory.refused += 1
        self.factory.server.stats.tls_refused += 1
        self.factory.log_refusal(self.source, why)
        self._close_state()
        self._hang_up(abort=abort)

    def close(self, why: str) -> None:
        """Close this connection for a reason of the server's (a reload), politely."""
        if self.closed:
            return
        self.log.info(
            "RadSec connection from {client} ({source}) closed: {why}",
            client=self.client.name if self.client else "?",
            source=self.source,
            why=why,
        )
        self._refused = True  # not a failed handshake either
        self._close_state()
        self._hang_up()

    def _still_the_client(self) -> bool:
        """Whether the certificate still belongs to the same client entry after a reload.

        The entry may have been removed, or its fingerprint, names or address changed: the
        connection is closed then, as a new one would be refused. Otherwise it takes the
        entry's new settings (Message-Authenticator rules, mode)."""
        table = self.factory.server.current_clients()
        if table is self._table:
            return True
        client = table.lookup_certificate(self._certificate, self.source)
        if client is None or self.client is None or client.name != self.client.name:
            self.close("its certificate no longer matches its client entry after a reload")
            return False
        self.client, self._table = client, table
        return True

    def _abort(self, why: str) -> None:
        """The peer broke the protocol: close now (RFC 6614 section 2.6), dropping its buffer."""
        client = self.client
        if client is not None:
            self.factory.server.drop_log(
                "tls_close", client, self.source, f"{why}; connection closed"
            )
        self._close_state()
        self._hang_up(abort=True)

    def _hang_up(self, *, abort: bool = False) -> None:
        """Close the transport: politely (TLS close_notify after the replies still queued),
        and for good after :data:`CLOSE_GRACE` if the peer keeps that from finishing."""
        transport = self._tls
        if transport is None or self._lost:
            return
        if self._producing:
            self._producing = False
            transport.unregisterProducer()  # else Twisted's TLS layer waits for it to close
        if abort:
            transport.abortConnection()
            return
        transport.loseConnection()
        if not self._lost and self._reaper is None:
            self._reaper = self.factory.clock.callLater(CLOSE_GRACE, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        transport = self._tls
        if not self._lost and transport is not None:
            transport.abortConnection()

    # -- flow control (IPushProducer) ---------------------------------------------------------

    def pauseProducing(self) -> None:
        """The socket's send buffer is full: read no more requests until it drains."""
        transport = self._tls
        if not self.closed and transport is not None:
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        transport = self._tls
        if not self.closed and transport is not None:
            transport.resumeProducing()

    def stopProducing(self) -> None:
        """The transport is going away; :meth:`connectionLost` follows."""

    # -- timers --------------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self._refuse("no TLS handshake within the handshake_timeout", abort=True)

    def _touch(self) -> None:
        """Restart the idle timer: a whole packet was received, or a reply sent."""
        self._cancel_timer()
        if not self.closed:
            self._timer = self.factory.clock.callLater(
                self.factory.listener.idle_timeout, self._idle
            )

    def _idle(self) -> None:
        self._timer = None
        if self._in_flight:  # a slow decision is not an idle peer
            self._touch()
            return
        self.log.info(
            "RadSec connection from {client} ({source}) idle; closing",
            client=self.client.name if self.client else "?",
            source=self.source,
        )
        self._close_state()
        self._hang_up()

    # -- receiving -----------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        if self.client is None:  # the TLS layer delivers data only after the handshake
            self._refuse("data before the handshake completed", abort=True)
            return
        if not self._still_the_client():
            return
        try:
            packets = self._framer.feed(data)
        except FrameError as error:
            self.factory.server.stats.received += 1
            self.factory.server.stats.malformed += 1
            self._abort(f"malformed stream: {error}")
            return
        if packets:  # a byte now and then of a packet never finished keeps nothing alive
            self._touch()
        for packet in packets:
            if self.closed:
                return
            try:
                self._receive(packet)
            except Exception:
                self.factory.server.stats.internal_errors += 1
                self.log.failure(
                    "Unexpected error on a RadSec packet from {source}", source=self.source
                )
                self._abort("internal error")

    def _receive(self, packet: bytes) -> None:
        client = self.client
        assert client is not None
        server = self.factory.server
        server.stats.received += 1
        received_at = server.clock.seconds()
        if packet[0] == ACCOUNTING_REQUEST:
            # Accounting shares the port in RadSec; not served here, but well-framed: dropped
            # without closing the connection the authentication requests share.
            server.stats.dropped += 1
            server.drop_log(
                "tls_code", client, self.source, f"packet code {packet[0]} is not served here"
            )
            return
        decoded = server.admit(packet, client, self.source)
        if decoded is Refusal.BROKEN:
            self._abort("a malformed or wrongly signed packet")
            return
        if not isinstance(decoded, DecodedRequest):
            return  # refused by a rule (logged): the connection stays, others share it
        if decoded.code == STATUS_SERVER:
            reply = server.status_reply(decoded, client)
            transport = self._tls
            if reply is not None and transport is not None:
                transport.write(reply)
            return
        identifier = decoded.identifier
        if identifier in self._in_flight:
            server.stats.duplicates += 1
            self.log.debug(
                "Dropped request {id} from {client}: its Identifier is in flight here",
                id=identifier,
                client=client.name,
            )
            return
        if not server.has_room(client, self.source):
            return
        self._in_flight[identifier] = decoded.authenticator
        server.submit(client, decoded, received_at, _TlsReply(self, identifier))

    # -- replying ------------------------------------------------------------------------------

    def send_reply(self, identifier: int, reply: bytes) -> bool:
        self._in_flight.pop(identifier, None)
        if self.closed or self.transport is None:
            self.log.info(
                "Reply to request {id} from {client} discarded: its connection closed",
                id=identifier,
                client=self.client.name if self.client else "?",
            )
            return False
        self.transport.write(reply)
        self._touch()
        return True

    def forget(self, identifier: int) -> None:
        self._in_flight.pop(identifier, None)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


def _handshake_key(source: str) -> str:
    """What the per-source handshake cap counts by: the address, or for IPv6 its /64 (one
    host commonly holds a whole /64 and can use any address in it)."""
    ip = normalise_address(source)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return source


#: How much of a refused certificate's names a log line shows: the peer chose them.
SHOWN_NAMES, SHOWN_NAME_LENGTH = 4, 64


def _shown(peer: crypto.X509) -> str:
    """A refused certificate's names for the log: a few, each cut short, escaped by repr."""
    try:
        names = certificate_names(peer.to_cryptography())
    except ValueError:
        return "unreadable"
    shown = [n if len(n) <= SHOWN_NAME_LENGTH else n[:SHOWN_NAME_LENGTH] + "..." for n in names]
    more = len(names) - SHOWN_NAMES
    return repr(shown[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")


class RadsecFactory(Factory):
    """One RadSec listener: builds connections and keeps the per-client and per-source counts.

    Wrapped in Twisted's ``TLSMemoryBIOFactory`` with a
    :class:`~radmfa.radius.tlscontext.ReloadableServerTls`.
    """

    log = Logger(namespace="radmfa.radius.tls")
    noisy = False

    def __init__(self, server: RadiusServer, listener: TlsListener) -> None:
        self.server = server
        self.clock = server.clock
        self.listener = listener
        #: Connections refused (handshake failed or timed out, no matching client, over a cap).
        self.refused = 0
        #: Handshakes in progress by :func:`_handshake_key`, and their number.
        self._handshaking: dict[str, set[RadsecConnection]] = {}
        self._handshakes = 0
        self._open: dict[str, set[RadsecConnection]] = {}

    def buildProtocol(self, addr: IAddress | None) -> RadsecConnection:
        host = getattr(addr, "host", None)
        return RadsecConnection(self, source_address(str(host)))

    # -- accounting of connections ------------------------------------------------------------

    def handshake_started(self, connection: RadsecConnection) -> bool:
        """Whether another handshake may start: under the cap of its source and in all."""
        if self.handshaking >= MAX_HANDSHAKES:
            return False
        key = _handshake_key(connection.source)
        pending = self._handshaking.setdefault(key, set())
        if len(pending) >= MAX_HANDSHAKES_PER_SOURCE:
            if not pending:
                del self._handshaking[key]
            return False
        pending.add(connection)
        self._handshakes += 1
        return True

    def handshake_ended(self, connection: RadsecConnection) -> None:
        key = _handshake_key(connection.source)
        pending = self._handshaking.get(key)
        if pending is not None and connection in pending:
            pending.discard(connection)
            self._handshakes -= 1
            if not pending:
                del self._handshaking[key]

    def connection_opened(self, client: ClientConfig, connection: RadsecConnection) -> bool:
        held = self._open.setdefault(client.name, set())
        if len(held) >= self.listener.max_connections_per_client:
            if not held:
                del self._open[client.name]
            return False
        held.add(connection)
        return True

    def connection_closed(self, client: ClientConfig, connection: RadsecConnection) -> None:
        held = self._open.get(client.name)
        if held is not None:
            held.discard(connection)
            if not held:
                del self._open[client.name]

    def close_all(self, why: str) -> None:
        """Close every connection, open or in its handshake (a reload that removed the
        listener or changed what a client certificate must chain to)."""
        every = [c for held in self._open.values() for c in held]
        every += [c for pending in self._handshaking.values() for c in pending]
        for connection in every:
            connection.close(why)

    def open_connections(self, client_name: str) -> int:
        return len(self._open.get(client_name, ()))

    @property
    def handshaking(self) -> int:
        return self._handshakes

    def log_refusal(self, source: str, why: str) -> None:
        if self.server.quiet.allow(f"tls_refused:{why[:40]}", source):
            self.log.warn(
                "Refused a RadSec connection from {source}: {why} "
                "(not logged again for this source for {interval:.0f}s)",
                source=source,
                why=why,
                interval=LOG_INTERVAL,
            )


def radsec_factory(creator: ReloadableServerTls, factory: RadsecFactory) -> TLSMemoryBIOFactory:
    """The factory to listen with: Twisted's TLS layer around ``factory``'s connections."""
    wrapped = TLSMemoryBIOFactory(creator, False, factory, factory.clock)
    wrapped.noisy = False
    return wrapped
