"""RADIUS over UDP: one listening socket in front of the :class:`RadiusServer`.

``datagramReceived`` walks one direction only: find the client by source address, let the
server validate and decode, consult this socket's duplicate cache (RFC 5080), and hand the
request to the server with a reply channel that caches the answer and sends it back to the
exact source. Nothing raises out of the protocol.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from radmfa.config import ClientConfig, RadiusConfig
from radmfa.radius.clients import source_address
from radmfa.radius.codec import STATUS_SERVER, DecodedRequest
from radmfa.radius.dupcache import IN_FLIGHT, Answered, CacheFull, DuplicateCache, Token
from radmfa.radius.server import RadiusServer, RadiusStats


@dataclass(eq=False, slots=True)
class _UdpReply:
    """The reply channel of one datagram request: its duplicate-cache slot and source."""

    protocol: RadiusDatagramProtocol
    token: Token
    addr: Any
    client: ClientConfig
    identifier: int

    def deliver(self, reply: bytes) -> bool:
        protocol = self.protocol
        if not protocol.cache.finish(self.token, reply):
            protocol.log.info(
                "Not sending the reply to request {id} from {client}: "
                "a newer request with the same Identifier replaced it",
                id=self.identifier,
                client=self.client.name,
            )
            return False
        protocol.write(reply, self.addr)
        return True

    def abandon(self) -> None:
        self.protocol.cache.abandon(self.token)


class RadiusDatagramProtocol(DatagramProtocol):
    """One UDP listening socket; every socket of a process shares one :class:`RadiusServer`.

    The duplicate cache is per socket: with SO_REUSEPORT workers the kernel keeps a client's
    source port on one worker, so its retransmissions meet their cache entry.
    """

    log = Logger(namespace="radmfa.radius")
    #: Twisted's "Starting protocol ..." lines say nothing an admin needs.
    noisy = False

    def __init__(self, server: RadiusServer, *, cache: DuplicateCache | None = None) -> None:
        self.server = server
        config = server.radius_config
        self.cache = (
            cache if cache is not None else DuplicateCache(server.clock, config.duplicate_window)
        )
        #: The UDP socket replies go out on directly (see :meth:`write`); None for transports
        #: that are not a real socket (tests).
        self._socket: socket.socket | None = None

    @property
    def stats(self) -> RadiusStats:
        return self.server.stats

    @property
    def radius_config(self) -> RadiusConfig:
        return self.server.radius_config

    @radius_config.setter
    def radius_config(self, config: RadiusConfig) -> None:
        """Config reload: limits and delays apply to requests received from now on."""
        self.server.radius_config = config
        self.cache.window = config.duplicate_window

    def startProtocol(self) -> None:
        get_handle = getattr(self.transport, "getHandle", None)
        sock = get_handle() if get_handle is not None else None
        self._socket = sock if isinstance(sock, socket.socket) else None

    def stopProtocol(self) -> None:
        self._socket = None
        self.cache.stop()

    # ---------------------------------------------------------------------------------------
    # Receiving

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            self._receive(datagram, addr)
        except Exception:
            self.stats.internal_errors += 1
            self.log.failure("Unexpected error while handling a datagram from {addr!r}", addr=addr)

    def _receive(self, datagram: bytes, addr: Any) -> None:
        server = self.server
        server.stats.received += 1
        received_at = server.clock.seconds()
        source, port = source_address(str(addr[0])), int(addr[1])
        client = server.client_for_address(source)
        if client is None:
            return
        decoded = server.admit(datagram, client, source)
        if not isinstance(decoded, DecodedRequest):
            return
        if decoded.code == STATUS_SERVER:
            reply = server.status_reply(decoded, client)
            if reply is not None:
                self.write(reply, addr)
            return
        self._dispatch(client, decoded, source, port, addr, received_at)

    def _dispatch(
        self,
        client: ClientConfig,
        decoded: DecodedRequest,
        source: str,
        port: int,
        addr: Any,
        received_at: float,
    ) -> None:
        """Duplicate cache, load limits, then the server (R-12, max_in_flight)."""
        server = self.server
        key = (source, port, decoded.identifier)
        found = self.cache.lookup(key, decoded.authenticator)
        if found is IN_FLIGHT:
            server.stats.duplicates += 1
            self.log.debug(
                "Dropped a retransmission of request {id} from {client}: still in progress",
                id=decoded.identifier,
                client=client.name,
            )
            return
        if isinstance(found, Answered):
            server.stats.duplicates += 1
            self.write(found.reply, addr)
            return
        if not server.has_room(client, source):
            return
        try:
            token = self.cache.begin(key, decoded.authenticator)
        except CacheFull:
            server.stats.overloaded += 1
            server.drop_log("overloaded", client, source, "duplicate cache full")
            return
        channel = _UdpReply(self, token, addr, client, decoded.identifier)
        server.submit(client, decoded, received_at, channel)

    def write(self, data: bytes, addr: Any) -> None:
        """Send a reply. Straight on the socket when there is one: the address came from
        recvfrom, so Twisted's per-write address validation (a few microseconds) adds
        nothing. A full socket buffer drops the reply; the client retransmits (RFC 5080)."""
        if self.transport is None:
            return
        try:
            if self._socket is not None:
                self._socket.sendto(data, addr)
            else:
                self.transport.write(data, addr)
        except ConnectionRefusedError:
            pass  # an ICMP error from an earlier datagram: nothing to do with this one
        except OSError as error:
            self.log.warn("Cannot send a reply to {addr!r}: {error}", addr=addr, error=str(error))
