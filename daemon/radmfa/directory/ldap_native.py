"""Check a password with an LDAP simple bind, natively on the reactor (no threads).

The ldap3 engine (:mod:`radmfa.directory.ldap`) costs a thread hop, pyasn1 encoding and a new
TCP connection per user bind. This engine keeps persistent connections and speaks the few LDAP
messages it needs through :mod:`radmfa.directory.ber`. Three layers, each with one job:

- :class:`LdapClientProtocol`: one TCP connection. Framing, message-ID dispatch, one response
  timeout per operation, StartTLS/LDAPS handshakes. A timeout or a protocol error drops the
  connection and fails everything pending on it.
- :class:`ConnectionPool`: connections to one server for one purpose, each carrying at most
  ``depth`` operations, with a bounded FIFO of waiting operations. Per server there is a
  *search pool* (a few connections bound once as ``bind_dn``, searches pipelined on them) and a
  *bind pool* (up to ``pool_size`` connections, one bind at a time each, RFC 4511 §4.2.1). User
  binds are rebinds on bind-pool connections, which never carry a search: the service identity
  and user identities never share a connection (L-03).
- :class:`NativeLdapPasswordChecker`: the check itself: search (exactly one entry), one user
  bind, failover across servers.

The rules are those of the ldap3 engine, whose pure helpers and result interpretation are reused:
no traffic for an empty password (L-01), timeouts everywhere (L-04), failover only when a server
did not judge the request (L-07), and never after a user bind that was sent but not answered (at
most one password attempt per request), certificate and host name checked and StartTLS before any
bind, never a cleartext fallback (L-08), references ignored (L-09), exactly one search hit (L-12).
"""

from __future__ import annotations

import math
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from typing import Protocol as Protocol_

from ldap3.core.results import RESULT_CODES
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from radmfa.config import LdapConfig, LdapGroupsConfig
from radmfa.directory.answers import (
    LdapAnswer,
    SearchAnswer,
    Verdict,
    interpret_bind,
    interpret_search,
)
from radmfa.directory.base import DirectoryOutcome, DirectoryResult, GroupResult, UserEntry
from radmfa.directory.ber import (
    BIND_RESPONSE,
    EXTENDED_RESPONSE,
    MAX_MESSAGE_ID,
    NOTICE_OF_DISCONNECTION_OID,
    SEARCH_RESULT_DONE,
    STARTTLS_OID,
    BerDecodeError,
    FilterError,
    FilterTemplate,
    LdapResult,
    MessageDecoder,
    Response,
    SearchEntry,
    SearchReference,
    compile_filter,
    encode_bind_request,
    encode_extended_request,
    encode_search_request,
    encode_unbind_request,
)
from radmfa.directory.groupwalk import (
    MAX_GROUPS,
    GroupWalk,
    group_probe_filter,
)
from radmfa.directory.health import ServerHealth
from radmfa.directory.naming import naming_attributes
from radmfa.directory.rules import (
    BindUnanswered,
    FinalAnswer,
    LdapServer,
    ServerDown,
    account_state,
    build_user_dn,
    build_user_filter,
    check_lookup_config,
    group_result,
    locked_by_ppolicy,
    make_user_cache,
    parse_server,
    refuse_before_ldap,
    refuse_misnamed,
    search_attributes,
    username_problem,
)
from radmfa.directory.tlsverify import describe_tls_failure, make_tls_options

__all__ = [
    "ConnectionFailed",
    "ConnectionPool",
    "LdapClientProtocol",
    "LdapError",
    "NativeLdapPasswordChecker",
    "NotSent",
    "OperationFailed",
    "QueueFull",
    "SearchOutcome",
    "ServiceBindRefused",
    "make_tls_options",
]

log = Logger(namespace="radmfa.directory.ldap_native")

T = TypeVar("T")

#: Searches in flight on one service connection. slapd closes an anonymous connection with more
#: than 100 pending requests (``conn_max_pending``), 1000 when bound; stay well below both.
SEARCH_DEPTH = 64
#: Service connections per server; searches are cheap, a couple of connections saturate slapd.
SEARCH_CONNECTIONS = 2
#: Entries kept from one search; the size limit is 2, so a third means a misbehaving server.
_MAX_ENTRIES = 2


# -- errors -------------------------------------------------------------------------------------


class LdapError(Exception):
    """Base of this module's transport-level errors."""


class ConnectionFailed(LdapError):
    """No usable connection: connect, TLS, StartTLS or the service bind did not work out.

    Nothing of the caller's operation was sent, so another server may be tried.
    """


class ServiceBindRefused(LdapError):
    """The server judged the service account's credentials and said no: a final answer."""

    def __init__(self, answer: LdapAnswer) -> None:
        super().__init__(f"{answer.description} ({answer.code})")
        self.answer = answer


class NotSent(LdapError):
    """The connection was gone before the request was written; it may go on another one."""


class OperationFailed(LdapError):
    """The request was written but no answer came (timeout, connection lost, garbage)."""

    def __init__(self, reason: str, *, retriable: bool) -> None:
        super().__init__(reason)
        #: The server closed a connection that looked fine: a stale pooled connection, worth
        #: one more try on another. False after a timeout (that server is not answering).
        self.retriable = retriable


class QueueFull(LdapError):
    """Too many operations already wait for a connection."""


# -- one connection -----------------------------------------------------------------------------

_BIND, _SEARCH, _STARTTLS = "bind", "search", "StartTLS"
_EXPECTED_RESULT = {_BIND: BIND_RESPONSE, _SEARCH: SEARCH_RESULT_DONE, _STARTTLS: EXTENDED_RESPONSE}


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    done: LdapResult
    #: ``searchResEntry`` results (at most two kept); references are only counted (L-09).
    entries: tuple[SearchEntry, ...]
    references: int
    #: More entries arrived than were kept (a server ignoring the size limit).
    overflow: bool = False


class _Operation:
    __slots__ = ("deferred", "entries", "kind", "max_entries", "overflow", "references", "timer")

    def __init__(self, kind: str, timer: IDelayedCall, max_entries: int = _MAX_ENTRIES) -> None:
        self.kind = kind
        self.deferred: Deferred[Any] = Deferred()
        self.timer = timer
        self.entries: list[SearchEntry] = []
        self.max_entries = max_entries
        self.references = 0
        self.overflow = False


@implementer(IHandshakeListener)
class LdapClientProtocol(Protocol):
    """One LDAP connection: requests out, responses dispatched by message ID.

    Every request gets a response timeout of ``timeout`` seconds on ``clock``. When one fires,
    or the server sends something undecodable or unexpected, the connection is dropped at once
    and every pending operation fails with :class:`OperationFailed`: a connection that lost
    track of one answer cannot be trusted with the others.

    The owner learns about the connection through two hooks: ``on_idle`` after an operation
    completes (capacity is free again) and ``on_lost`` once, when it becomes unusable.

    Framing never crosses a change of security layer: the StartTLS answer must be the last
    byte read in clear, nothing may arrive before the handshake completes, and the stream
    under TLS gets a decoder of its own. Bytes an attacker slips in behind the StartTLS
    answer would otherwise be glued to the first answer read through TLS.
    """

    def __init__(self, clock: Any, timeout: float, name: str = "") -> None:
        self._clock = clock
        self._timeout = timeout
        self.name = name
        self._decoder = MessageDecoder()
        self._pending: dict[int, _Operation] = {}
        self._next_id = 1
        self._handshake: Deferred[None] | None = None
        self._handshake_timer: IDelayedCall | None = None
        #: Messages of the current read not dispatched yet (see :meth:`_in_clear_after`).
        self._unread = 0
        #: True from connectionMade until dropped, closed or lost.
        self.alive = False
        self.on_idle: Callable[[LdapClientProtocol], None] | None = None
        self.on_lost: Callable[[LdapClientProtocol], None] | None = None
        #: The plain TCP socket, written to directly (see :meth:`_write`); None under TLS
        #: and after the first short write, when the transport's own buffering takes over.
        self._socket: socket.socket | None = None

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    # -- requests --

    def bind(self, dn: str, password: bytes) -> Deferred[LdapResult]:
        """A simple bind; the caller makes sure nothing else is outstanding (RFC 4511 §4.2.1)."""
        if not dn or not password:
            # Empty name or password: an anonymous or unauthenticated bind, which a server may
            # answer with success (RFC 4513 §5.1, L-01). Never sent, whoever asks.
            raise ValueError("refusing a bind without both a name and a password")
        return self._send(_BIND, lambda mid: encode_bind_request(mid, dn, password))

    def search(
        self,
        base: str,
        filter_ber: bytes,
        attributes: Sequence[str],
        *,
        size_limit: int,
        time_limit: int,
        max_entries: int = _MAX_ENTRIES,
    ) -> Deferred[SearchOutcome]:
        """``max_entries``: entries kept; more set ``overflow`` (a user search wants two at
        most, a group search up to its size limit)."""

        def encode(mid: int) -> bytes:
            return encode_search_request(
                mid, base, filter_ber, attributes, size_limit=size_limit, time_limit=time_limit
            )

        return self._send(_SEARCH, encode, max_entries)

    def start_tls(self, options: Any) -> Deferred[None]:
        """StartTLS (RFC 4511 §4.14): the extended operation, then the handshake.

        Fires once the handshake (certificate and host name included) is complete; any failure
        is an error and the connection is unusable: there is no cleartext fallback.
        """
        if self._pending:
            raise RuntimeError("StartTLS with operations outstanding")
        answer = self._send(_STARTTLS, lambda mid: encode_extended_request(mid, STARTTLS_OID))
        return answer.addCallback(self._starttls_answered, options)

    def _starttls_answered(self, result: LdapResult, options: Any) -> Deferred[None]:
        if result.code != 0:
            description = RESULT_CODES.get(result.code, "")
            raise ConnectionFailed(f"server refused StartTLS: {description} ({result.code})")
        if result.response_name not in (None, STARTTLS_OID):
            self._violation("StartTLS answered with another OID")
            raise ConnectionFailed(f"StartTLS answered for {result.response_name!r}")
        return self.begin_tls(options)

    def begin_tls(self, options: Any) -> Deferred[None]:
        """Start the TLS handshake now (LDAPS does this right after connecting).

        Nothing read in clear may be left over: it would be framed together with what TLS
        delivers. The decoder starts afresh for the protected stream.
        """
        if not self.alive or self.transport is None:
            return fail(ConnectionFailed("connection closed before TLS"))
        leftover = self._in_clear_after()
        if leftover:
            self._violation(f"{leftover} in clear before the TLS handshake")
            return fail(ConnectionFailed(f"{leftover} in clear before the TLS handshake"))
        self._decoder = MessageDecoder()
        self._socket = None  # from now on every byte goes through the TLS layer
        self._handshake = Deferred()
        self._handshake_timer = self._clock.callLater(
            self._timeout, self.drop, f"no TLS handshake within {self._timeout:g}s", False
        )
        self.transport.startTLS(options)  # type: ignore[attr-defined]
        return self._handshake

    def handshakeCompleted(self) -> None:
        handshake, self._handshake = self._handshake, None
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        if handshake is not None and not handshake.called:
            handshake.callback(None)

    def close(self) -> None:
        """Unbind (RFC 4511 §4.3) and close; pending operations fail."""
        if self.alive and self.transport is not None:
            self.transport.write(encode_unbind_request(self._take_id()))
            self.transport.loseConnection()
        self._shut(OperationFailed("connection closed by radmfa", retriable=False))

    def drop(self, reason: str, retriable: bool = False) -> None:
        """Abort the connection now and fail everything pending with ``reason``."""
        if self.alive and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        self._shut(OperationFailed(reason, retriable=retriable))

    def _violation(self, reason: str) -> None:
        """The server broke the protocol: say so in the log (it is a server or network bug),
        then drop the connection like any other failure."""
        log.warn("LDAP {name}: {reason}; dropping the connection", name=self.name, reason=reason)
        self.drop(f"protocol error: {reason}")

    def _take_id(self) -> int:
        mid = self._next_id
        self._next_id = 1 if mid >= MAX_MESSAGE_ID else mid + 1
        return mid

    def _send(
        self, kind: str, encode: Callable[[int], bytes], max_entries: int = _MAX_ENTRIES
    ) -> Deferred[Any]:
        if not self.alive or self.transport is None:
            raise NotSent("connection is closed")
        if not self._pending and self._peer_closed():
            # Closed by the server (restart, idle timeout) and the reactor has not read the EOF
            # yet: say so now, before a single byte of this request leaves.
            self.drop("connection closed by the server", retriable=True)
            raise NotSent("connection closed by the server")
        mid = self._take_id()
        data = encode(mid)
        op = _Operation(
            kind, self._clock.callLater(self._timeout, self._timed_out, mid), max_entries
        )
        self._pending[mid] = op
        self._write(data)
        return op.deferred

    def _write(self, data: bytes) -> None:
        """Send now when the socket takes it all, else leave it to the transport.

        Twisted's TCP transport buffers every write until the next reactor pass, which costs
        two ``epoll_ctl`` calls and a wake-up per request; an LDAP request is a few hundred
        bytes and the socket buffer is nearly always empty, so one ``send`` does it. After a
        short write (or any error, which the transport then reports as usual) the rest and
        everything after it go through the transport, so bytes never overtake each other.
        """
        sock = self._socket
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            self._socket = None
            data = data[sent:]
        self.transport.write(data)  # type: ignore[union-attr]

    def _peer_closed(self) -> bool:
        """Whether an idle connection's socket already holds the server's EOF or reset.

        One non-blocking ``MSG_PEEK`` (a syscall, a microsecond or two), done only when nothing
        is outstanding, so any byte waiting there can only be an EOF, a reset, a Notice of
        Disconnection or TLS housekeeping; only the first two count.
        """
        get_handle = getattr(self.transport, "getHandle", None)
        sock = get_handle() if get_handle is not None else None
        return isinstance(sock, socket.socket) and peer_closed(sock)

    def _timed_out(self, mid: int) -> None:
        op = self._pending.get(mid)
        if op is not None:
            self.drop(f"no {op.kind} answer within {self._timeout:g}s", retriable=False)

    # -- responses --

    def connectionMade(self) -> None:
        self.alive = True
        get_handle = getattr(self.transport, "getHandle", None)
        sock = get_handle() if get_handle is not None else None
        if isinstance(sock, socket.socket) and sock.type == socket.SOCK_STREAM:
            self._socket = sock

    def dataReceived(self, data: bytes) -> None:
        if not self.alive:
            return
        if self._handshake is not None:
            # The TLS layer hands up nothing before the handshake completes; the transport
            # did, so these bytes bypassed it.
            self._violation("data before the TLS handshake completed")
            return
        try:
            messages = self._decoder.feed(data)
        except BerDecodeError as exc:
            self._violation(f"undecodable response: {exc}")
            return
        try:
            for index, (message_id, response) in enumerate(messages):
                if not self.alive:
                    return
                self._unread = len(messages) - index - 1
                self._dispatch(message_id, response)
        finally:
            self._unread = 0

    def _in_clear_after(self) -> str:
        """What the current read holds beyond the message being dispatched ("" if nothing)."""
        parts = []
        if self._unread:
            parts.append(f"{self._unread} message(s)")
        if self._decoder.buffered:
            parts.append(f"{self._decoder.buffered} octet(s)")
        return " and ".join(parts)

    def _dispatch(self, message_id: int, response: Response) -> None:
        op = self._pending.get(message_id)
        if op is None:
            if message_id == 0 and isinstance(response, LdapResult):
                if response.response_name == NOTICE_OF_DISCONNECTION_OID:
                    why = response.diagnostic or RESULT_CODES.get(response.code, "")
                    self.drop(f"server disconnects: {why} ({response.code})", retriable=True)
                    return
            self._violation(f"unsolicited response to message {message_id}")
            return
        if isinstance(response, SearchEntry):
            if op.kind != _SEARCH:
                self._violation(f"search entry in answer to a {op.kind}")
            elif len(op.entries) < op.max_entries:
                op.entries.append(response)
            else:
                op.overflow = True
            return
        if isinstance(response, SearchReference):
            if op.kind != _SEARCH:
                self._violation(f"search reference in answer to a {op.kind}")
            else:
                op.references += 1
            return
        if response.op != _EXPECTED_RESULT[op.kind]:
            self._violation(f"response type 0x{response.op:02x} in answer to a {op.kind}")
            return
        if op.kind == _STARTTLS:
            # RFC 4511 §4.14.2: the server starts the handshake right after its answer. Bytes
            # behind it in clear are a forgery (or a broken server); keeping them would frame
            # them with the first answer read through TLS.
            leftover = self._in_clear_after()
            if leftover:
                self._violation(f"{leftover} in clear after the StartTLS answer")
                return
        del self._pending[message_id]
        op.timer.cancel()
        if not op.deferred.called:  # else the caller cancelled while waiting
            if op.kind == _SEARCH:
                op.deferred.callback(
                    SearchOutcome(response, tuple(op.entries), op.references, op.overflow)
                )
            else:
                op.deferred.callback(response)
        if self.on_idle is not None and self.alive:
            self.on_idle(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._handshake is not None:  # the certificate check's reason, or the TLS error
            text = describe_tls_failure(reason)
        else:
            text = f"connection lost: {reason.getErrorMessage() or type(reason.value).__name__}"
        self._shut(OperationFailed(text, retriable=True))

    def _shut(self, error: OperationFailed) -> None:
        """Mark unusable, tell the owner, then fail what is pending (in that order, so nobody
        retries on this connection)."""
        was_alive = self.alive
        self.alive = False
        if was_alive and self.on_lost is not None:
            self.on_lost(self)
        self.on_idle = self.on_lost = None
        pending, self._pending = self._pending, {}
        for op in pending.values():
            if op.timer.active():
                op.timer.cancel()
            if not op.deferred.called:
                op.deferred.errback(Failure(error))
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        handshake, self._handshake = self._handshake, None
        if handshake is not None and not handshake.called:
            # One line per failed handshake, for the admin: which server and why. Nothing
            # was sent on this connection (no bind before the handshake completes).
            log.warn(
                "LDAP {name}: TLS handshake failed: {reason}; no credentials sent",
                name=self.name,
                reason=str(error),
            )
            handshake.errback(Failure(ConnectionFailed(f"TLS handshake failed: {error}")))


# -- opening connections ------------------------------------------------------------------------


class Connector(Protocol_):
    """Opens ready connections to one server for the pools: connected, TLS in place, bound as
    ``identity`` when one is given. Failures are :class:`ConnectionFailed` (nothing of an
    operation was sent: another server may be tried) or :class:`ServiceBindRefused`."""

    server: LdapServer

    async def open(self, identity: tuple[str, bytes] | None, purpose: str) -> Any: ...


class _Connector:
    """Opens ready connections to one server: TCP, then LDAPS or StartTLS, then (optionally) a
    bind as the service account. Any failure is a :class:`ConnectionFailed` (or
    :class:`ServiceBindRefused`) and the half-open connection is dropped."""

    def __init__(
        self, reactor: Any, server: LdapServer, config: LdapConfig, tls_options: Any | None
    ) -> None:
        self._reactor = reactor
        self.server = server
        self._timeout = float(config.timeout)
        self._start_tls = bool(config.start_tls) and not server.use_ssl
        self._tls_options = tls_options
        self._endpoint = self._make_endpoint()

    def _make_endpoint(self) -> IStreamClientEndpoint:
        host, port, timeout = self.server.host, self.server.port, self._timeout
        if isIPAddress(host):
            return TCP4ClientEndpoint(self._reactor, host, port, timeout=timeout)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(self._reactor, host, port, timeout=timeout)
        return HostnameEndpoint(self._reactor, host, port, timeout=timeout)

    async def open(self, identity: tuple[str, bytes] | None, purpose: str) -> LdapClientProtocol:
        proto = LdapClientProtocol(self._reactor, self._timeout, f"{self.server.url} {purpose}")
        connecting = connectProtocol(self._endpoint, proto)
        connecting.addTimeout(self._timeout, self._reactor)
        try:
            await connecting
        except CancelledError:
            raise
        except Exception as exc:
            raise ConnectionFailed(_describe(exc)) from None
        try:
            if self.server.use_ssl:
                await proto.begin_tls(self._tls_options)
            elif self._start_tls:
                try:
                    await proto.start_tls(self._tls_options)
                except LdapError as exc:
                    raise ConnectionFailed(f"StartTLS failed: {exc}") from None
            if identity is not None:
                await self._service_bind(proto, *identity)
        except BaseException:
            proto.drop("connection set-up failed")
            raise
        return proto

    async def _service_bind(self, proto: LdapClientProtocol, dn: str, password: bytes) -> None:
        try:
            result = await proto.bind(dn, password)
        except LdapError as exc:
            raise ConnectionFailed(f"service bind got no answer: {exc}") from None
        answer = _bind_answer(result)
        if answer.verdict is Verdict.OK:
            return
        if answer.verdict is Verdict.TRANSIENT:
            raise ConnectionFailed(f"service bind answered {answer.description or 'nothing'}")
        raise ServiceBindRefused(answer)


# -- pools --------------------------------------------------------------------------------------


class _Gauge:
    """Operations waiting for a connection, across all pools of one checker."""

    __slots__ = ("limit", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0


class _Waiter:
    """One submitted operation; ``queued`` while it waits in the pool's FIFO."""

    __slots__ = ("operation", "queued", "result")

    def __init__(
        self, operation: Callable[[LdapClientProtocol], Deferred[Any]], pool: ConnectionPool
    ) -> None:
        self.operation = operation
        self.queued = False
        self.result: Deferred[Any] = Deferred(lambda _d: pool._cancel(self))


class ConnectionPool:
    """Connections to one server for one purpose; each carries at most ``depth`` operations.

    :meth:`submit` runs ``operation(connection)`` on the least busy live connection, opening
    one more (up to ``size``) when all are busy, and otherwise queues it (FIFO, bounded by the
    shared gauge). Connections that die are forgotten at once and replaced on demand. When the
    server cannot be reached and no connection is left, every queued operation fails with the
    reason, so a dead server costs one connect attempt per burst, not one per request.

    Cancelling the Deferred from :meth:`submit` removes a queued operation; one already sent
    runs to completion (its connection stays busy until the answer or the timeout).
    """

    def __init__(
        self,
        open_connection: Callable[[], Deferred[LdapClientProtocol]],
        *,
        size: int,
        depth: int,
        gauge: _Gauge,
        name: str = "",
    ) -> None:
        self._open = open_connection
        self.size = max(1, size)
        self.depth = max(1, depth)
        self._gauge = gauge
        self.name = name
        self._ready: list[LdapClientProtocol] = []
        self._opening: set[Deferred[LdapClientProtocol]] = set()
        self._queue: deque[_Waiter] = deque()
        self._closed = False
        #: The connection that answered last (a cheap first guess for :meth:`_pick`).
        self._spare: LdapClientProtocol | None = None

    @property
    def connections(self) -> int:
        return len(self._ready)

    def submit(self, operation: Callable[[LdapClientProtocol], Deferred[T]]) -> Deferred[T]:
        if self._closed:
            return fail(ConnectionFailed("LDAP checker is closed"))
        if not self._queue:
            conn = self._pick()
            if conn is not None:
                if conn.outstanding:  # sharing a pipelined connection: add one if allowed
                    self._grow()
                # Sent at once: the caller waits on the request's own Deferred (the usual
                # case, one Deferred less). Cancelling it only stops the waiting; the request
                # keeps its connection busy until the answer or the timeout, as when queued.
                try:
                    return operation(conn)
                except NotSent:  # died since its last answer; nothing left: pick again
                    self._lost(conn)
                    return self.submit(operation)
                except Exception:
                    return fail(Failure())
        waiter = _Waiter(operation, self)
        if self._gauge.waiting >= self._gauge.limit:
            return fail(QueueFull("LDAP queue full"))
        waiter.queued = True
        self._gauge.waiting += 1
        self._queue.append(waiter)
        self._grow()
        return waiter.result

    def close(self) -> None:
        self._closed = True
        for opening in list(self._opening):
            opening.cancel()
        ready, self._ready, self._spare = self._ready, [], None
        for conn in ready:
            conn.close()
        self._fail_queue(Failure(ConnectionFailed("LDAP checker is closed")))

    # -- internals --

    def _pick(self) -> LdapClientProtocol | None:
        """The least busy live connection with room, if any."""
        spare = self._spare  # the one that answered last: under load, nearly always free
        if spare is not None and spare.alive and not spare.outstanding:
            return spare
        best: LdapClientProtocol | None = None
        for conn in self._ready:
            load = conn.outstanding
            if load == 0:
                return conn
            if load < self.depth and (best is None or load < best.outstanding):
                best = conn
        return best

    def _grow(self) -> None:
        if self._closed or len(self._ready) + len(self._opening) >= self.size:
            return
        opening = self._open()
        if opening.called:  # failed at once (or a test double): handle synchronously
            opening.addCallbacks(self._opened, self._open_failed)
            return
        self._opening.add(opening)
        opening.addBoth(self._forget_opening, opening)
        opening.addCallbacks(self._opened, self._open_failed)

    def _forget_opening(self, result: Any, opening: Deferred[Any]) -> Any:
        self._opening.discard(opening)
        return result

    def _opened(self, conn: LdapClientProtocol) -> None:
        if self._closed:
            conn.close()
            return
        if not conn.alive:  # lost in the moment it became ready: a failed attempt like any other
            self._open_failed(Failure(ConnectionFailed("connection lost during set-up")))
            return
        conn.on_idle = self._idle
        conn.on_lost = self._lost
        self._ready.append(conn)
        self._serve()

    def _open_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError) and self._closed:
            return None
        if not failure.check(LdapError):
            log.failure("LDAP: opening a connection failed unexpectedly", failure)
        if not self._ready and not self._opening:
            self._fail_queue(failure)
        return None

    def _fail_queue(self, failure: Failure) -> None:
        queue, self._queue = self._queue, deque()
        for waiter in queue:
            if waiter.queued:
                waiter.queued = False
                self._gauge.waiting -= 1
                waiter.result.errback(failure)

    def _idle(self, conn: LdapClientProtocol) -> None:
        self._spare = conn
        if self._queue:
            self._serve()

    def _lost(self, conn: LdapClientProtocol) -> None:
        if self._spare is conn:
            self._spare = None
        try:
            self._ready.remove(conn)
        except ValueError:
            pass
        if self._queue:
            self._grow()

    def _serve(self) -> None:
        while self._queue:
            conn = self._pick()
            if conn is None:
                self._grow()
                return
            waiter = self._queue.popleft()
            if not waiter.queued:
                continue  # cancelled while it waited
            waiter.queued = False
            self._gauge.waiting -= 1
            self._run(waiter, conn)

    def _run(self, waiter: _Waiter, conn: LdapClientProtocol) -> None:
        try:
            sent = waiter.operation(conn)
        except NotSent:
            # The connection died between its last answer and now: the request never left,
            # so it may go on another connection (a user bind included).
            self._lost(conn)
            waiter.queued = True
            self._gauge.waiting += 1
            self._queue.appendleft(waiter)
            self._grow()
            self._serve()
            return
        except Exception:
            waiter.result.errback(Failure())
            return
        sent.addBoth(self._deliver, waiter)

    def _deliver(self, result: Any, waiter: _Waiter) -> None:
        if waiter.result.called:  # the caller stopped waiting; drop the late answer
            return None
        if isinstance(result, Failure):
            waiter.result.errback(result)
        else:
            waiter.result.callback(result)
        return None

    def _cancel(self, waiter: _Waiter) -> None:
        if waiter.queued:
            waiter.queued = False
            self._gauge.waiting -= 1


# -- the checker --------------------------------------------------------------------------------


@dataclass
class _Server:
    server: LdapServer
    search: ConnectionPool | None
    bind: ConnectionPool


class NativeLdapPasswordChecker:
    """:class:`~radmfa.directory.base.PasswordChecker` on persistent, pipelined connections.

    ``reactor`` provides TCP, time and (for TLS) pyOpenSSL-backed ``startTLS``. Per server: a
    search pool of ``search_connections`` service connections (search-then-bind only) and a bind
    pool of ``config.pool_size`` connections. At most ``max_pending`` operations wait for a
    connection; beyond that checks are answered UNAVAILABLE ("LDAP queue full") at once.

    Timeouts: connect, TLS handshake and every response ``config.timeout`` each, and the whole
    check ``timeout * len(servers) + 1`` seconds (:attr:`deadline`), as for the ldap3 engine.

    With ``config.user_cache`` an entry the user search found is reused for that long
    (:mod:`radmfa.directory.entrycache`) and forgotten when the directory refuses the user; it
    saves the search only, never the user bind.
    """

    def __init__(
        self,
        config: LdapConfig,
        reactor: Any,
        *,
        attributes: Sequence[str] = (),
        groups: LdapGroupsConfig | None = None,
        max_pending: int = 1000,
        search_connections: int = SEARCH_CONNECTIONS,
        search_depth: int = SEARCH_DEPTH,
    ) -> None:
        if not config.servers:
            raise ValueError("LDAP: no servers configured")
        if groups is not None and not config.base_dn:
            raise ValueError("LDAP: group lookups need search-then-bind (base_dn)")
        check_lookup_config(config)
        self._config = config
        self._reactor = reactor
        self._servers = tuple(parse_server(s) for s in config.servers)
        self._attributes = tuple(attributes)
        self._groups = groups
        #: What the user search asks for (factors, account state, memberOf), by lower name.
        self._search_attributes = search_attributes(attributes, config, groups)
        self._naming = naming_attributes(config.user_filter) if config.base_dn else ()
        self._wanted = {name.lower(): name for name in self._search_attributes}
        self._time_limit = max(1, math.ceil(config.timeout))
        self._deadline = config.timeout * len(self._servers) + 1.0
        self._health: ServerHealth[_Server] | None = None
        self._closed = False
        self._gauge = _Gauge(max_pending)
        #: Recently found user entries (``user_cache``; None when off or in direct-bind mode).
        self._user_cache = make_user_cache(config, reactor.seconds)
        self._filter: FilterTemplate | None = None
        if config.base_dn:
            try:
                self._filter = FilterTemplate(
                    config.user_filter, lambda name: build_user_filter("{username}", name)
                )
            except FilterError as exc:
                raise ValueError(f"LDAP: user_filter: {exc}") from None
        service: tuple[str, bytes] | None = None
        if config.bind_dn:
            service = (config.bind_dn, (config.bind_password or "").encode("utf-8"))
        self._pools: dict[str, _Server] = {}
        for server in self._servers:
            connector = self._connector(server)
            search_pool = None
            if config.base_dn:
                search_pool = ConnectionPool(
                    _opener(connector, service, "search"),
                    size=search_connections,
                    depth=search_depth,
                    gauge=self._gauge,
                    name=f"{server.url} search",
                )
            bind_pool = ConnectionPool(
                _opener(connector, None, "bind"),
                size=config.pool_size,
                depth=1,
                gauge=self._gauge,
                name=f"{server.url} bind",
            )
            self._pools[server.url] = _Server(server, search_pool, bind_pool)

    def _connector(self, server: LdapServer) -> Connector:
        """What opens this engine's connections to ``server`` (TCP and TLS on the reactor)."""
        tls = None
        if server.use_ssl or self._config.start_tls:
            tls = make_tls_options(server.host, self._config.ca_file)
        return _Connector(self._reactor, server, self._config, tls)

    def _user_search_filter(self, username: str) -> Any:
        """The user search's filter as the connections take it (BER here; FilterError)."""
        assert self._filter is not None
        return self._filter.encode(username)

    def _group_search_filter(self, text: str) -> Any:
        """A group search's filter as the connections take it (BER here; FilterError)."""
        return compile_filter(text)

    @property
    def servers(self) -> tuple[LdapServer, ...]:
        return self._servers

    @property
    def deadline(self) -> float:
        return self._deadline

    def servers_down(self) -> list[str]:
        """URLs currently tried last after a failure (for status output and tests)."""
        return self._health.down() if self._health is not None else []

    @property
    def user_cache_hits(self) -> int:
        """Checks and group lookups that skipped the user search (``ldap.user_cache``)."""
        return self._user_cache.hits if self._user_cache is not None else 0

    @property
    def user_cache_misses(self) -> int:
        """Lookups the cache could not answer, so a user search was sent."""
        return self._user_cache.misses if self._user_cache is not None else 0

    def check_password(
        self, username: str, password: str, *, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]:
        try:
            return self._check(username, password, entry)
        except Exception as exc:  # never raise to the pipeline
            log.failure("LDAP check failed unexpectedly", Failure())
            return succeed(_unavailable(f"internal error: {_describe(exc)}"))

    def user_groups(self, username: str) -> Deferred[GroupResult]:
        """:class:`~radmfa.directory.base.GroupResolver`: the user search, then the group
        searches (:class:`~radmfa.directory.ldap.GroupWalk`) on the search pool, under the
        same deadline as a password check."""
        try:
            if self._closed:
                return succeed(_no_groups("LDAP checker is closed"))
            if self._groups is None:
                return succeed(_no_groups("group lookups are off"))
            problem = username_problem(username)
            if problem is not None:
                return succeed(GroupResult(DirectoryOutcome.NO_SUCH_USER, detail=problem))
            if self._gauge.waiting >= self._gauge.limit:
                return succeed(_no_groups("LDAP queue full"))
            looking = Deferred.fromCoroutine(
                self._first_answer(
                    self._health_of().order(), lambda entry: self._groups_on(entry, username)
                )
            )
            looking.addTimeout(
                self._deadline,
                self._reactor,
                onTimeoutCancel=lambda _r, t: _no_groups(f"no LDAP answer within {t:g}s"),
            )
            looking.addErrback(self._internal_error, _no_groups)
            return looking
        except Exception as exc:  # never raise to the pipeline
            log.failure("LDAP group lookup failed unexpectedly", Failure())
            return succeed(_no_groups(f"internal error: {_describe(exc)}"))

    def find_groups(self, names: Sequence[str]) -> Deferred[GroupResult]:
        """:class:`~radmfa.directory.base.GroupFinder`: one search on the search pool, under
        the same deadline as a check."""
        try:
            if self._closed:
                return succeed(_no_groups("LDAP checker is closed"))
            if self._groups is None:
                return succeed(_no_groups("group lookups are off"))
            wanted = tuple(names)
            looking = Deferred.fromCoroutine(
                self._first_answer(
                    self._health_of().order(), lambda entry: self._find_groups_on(entry, wanted)
                )
            )
            looking.addTimeout(
                self._deadline,
                self._reactor,
                onTimeoutCancel=lambda _r, t: _no_groups(f"no LDAP answer within {t:g}s"),
            )
            looking.addErrback(self._internal_error, _no_groups)
            return looking
        except Exception as exc:  # never raise to the caller
            log.failure("LDAP group search failed unexpectedly", Failure())
            return succeed(_no_groups(f"internal error: {_describe(exc)}"))

    def close(self) -> None:
        """Unbind and close every connection; checks in flight end UNAVAILABLE."""
        self._closed = True
        for entry in self._pools.values():
            if entry.search is not None:
                entry.search.close()
            entry.bind.close()

    # -- internals --

    def _check(
        self, username: str, password: str, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]:
        refused = refuse_before_ldap(username, password, closed=self._closed)
        if isinstance(refused, DirectoryResult):
            return succeed(refused)
        secret = refused
        if self._gauge.waiting >= self._gauge.limit:
            return succeed(_unavailable("LDAP queue full"))
        checking = Deferred.fromCoroutine(
            self._authenticate(self._health_of().order(), username, secret, entry)
        )
        checking.addTimeout(self._deadline, self._reactor, onTimeoutCancel=self._timed_out)
        checking.addErrback(self._internal_error, _unavailable)
        return checking

    def _health_of(self) -> ServerHealth[_Server]:
        if self._health is None:
            self._health = ServerHealth(
                list(self._pools.values()),
                lambda entry: entry.server.url,
                self._reactor,
                self._config.retry_after,
            )
        return self._health

    async def _first_answer(
        self, plan: list[_Server], ask: Callable[[_Server], Coroutine[Any, Any, GroupResult]]
    ) -> GroupResult:
        """``ask`` each server in turn (group lookups and searches) until one answers."""
        failed: list[tuple[str, str]] = []
        for entry in plan:
            url = entry.server.url
            try:
                result = await ask(entry)
            except ServerDown as exc:
                failed.append((url, str(exc)))
                continue
            except FinalAnswer as exc:
                self._health_of().record(failed, url)
                return group_result(exc.result)
            self._health_of().record(failed, url)
            return result
        self._health_of().record(failed, None)
        reasons = "; ".join(f"{url}: {why}" for url, why in failed) or "no servers configured"
        return _no_groups(f"no LDAP server answered ({reasons})")

    async def _groups_on(self, entry: _Server, username: str) -> GroupResult:
        settings = self._groups
        assert settings is not None and self._config.base_dn is not None
        url = entry.server.url
        dn, found = await self._find_user(entry, username)
        walk = GroupWalk(settings, dn, _values_of(found, "memberOf"))
        base = settings.base_dn or self._config.base_dn
        while filters := walk.filters():
            level: list[str] = []
            for text in filters:
                try:
                    filter_ber = self._group_search_filter(text)
                except FilterError as exc:
                    raise FinalAnswer(_unavailable(f"bad group filter: {exc}", url)) from None
                outcome = await self._search(
                    entry, filter_ber, base=base, attributes=(), size_limit=MAX_GROUPS
                )
                answer = _search_answer(outcome.done)
                if answer.verdict is Verdict.TRANSIENT:
                    raise ServerDown(f"group search answered {answer.description or 'nothing'}")
                if answer.verdict is not Verdict.OK:
                    raise FinalAnswer(
                        _unavailable(
                            f"group search failed: {answer.description} ({answer.code})", url
                        )
                    )
                level.extend(e.dn for e in outcome.entries if e.dn)
            walk.add(level)
        return GroupResult(DirectoryOutcome.OK, walk.groups, UserEntry(dn, found), server=url)

    async def _find_groups_on(self, entry: _Server, names: Sequence[str]) -> GroupResult:
        settings = self._groups
        assert settings is not None and self._config.base_dn is not None
        url = entry.server.url
        try:
            filter_ber = self._group_search_filter(group_probe_filter(settings, names))
        except FilterError as exc:
            raise FinalAnswer(_unavailable(f"bad group filter: {exc}", url)) from None
        outcome = await self._search(
            entry,
            filter_ber,
            base=settings.base_dn or self._config.base_dn,
            attributes=(),
            size_limit=MAX_GROUPS,
        )
        answer = _search_answer(outcome.done)
        if answer.verdict is Verdict.TRANSIENT:
            raise ServerDown(f"group search answered {answer.description or 'nothing'}")
        if answer.verdict is not Verdict.OK:
            raise FinalAnswer(
                _unavailable(f"group search failed: {answer.description} ({answer.code})", url)
            )
        found = tuple(e.dn for e in outcome.entries if e.dn)
        return GroupResult(DirectoryOutcome.OK, found, server=url)

    async def _authenticate(
        self,
        plan: list[_Server],
        username: str,
        password: bytes,
        user_entry: UserEntry | None = None,
    ) -> DirectoryResult:
        failed: list[tuple[str, str]] = []
        for entry in plan:
            url = entry.server.url
            try:
                result = await self._check_on(entry, username, password, user_entry)
            except ServerDown as exc:
                failed.append((url, str(exc)))
                continue
            except FinalAnswer as exc:
                self._health_of().record(failed, url)
                return exc.result
            except BindUnanswered as exc:
                # The server may have checked the password: another server would make it two
                # attempts (and two counts against an AD lockout). Fail closed instead.
                failed.append((url, str(exc)))
                break
            self._health_of().record(failed, url)
            return result
        self._health_of().record(failed, None)
        reasons = "; ".join(f"{url}: {why}" for url, why in failed) or "no servers configured"
        return _unavailable(f"no LDAP server answered ({reasons})")

    async def _check_on(
        self,
        entry: _Server,
        username: str,
        password: bytes,
        user_entry: UserEntry | None = None,
    ) -> DirectoryResult:
        url = entry.server.url
        found: dict[str, list[str]] = {}
        if user_entry is not None:
            dn, found = user_entry.dn, user_entry.attributes
        elif self._config.user_dn:
            dn = build_user_dn(self._config.user_dn, username)
        else:
            dn, found = await self._find_user(entry, username)
        if self._config.account_state:
            state = account_state(found, self._reactor.seconds())
            if state is not None:  # refused without a bind
                self._forget(username)
                return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS, dn, url, detail=state)
        answer = await self._user_bind(entry, dn, password)
        if answer.verdict is Verdict.OK:
            attributes = {name: found[name] for name in self._attributes if name in found}
            return DirectoryResult(DirectoryOutcome.OK, dn, url, attributes=attributes)
        if answer.verdict is Verdict.REJECTED:
            self._forget(username)  # the next check searches again (moved, locked, fixed)
            detail = answer.detail
            if detail == "bad_password" and locked_by_ppolicy(found):
                detail = "account_locked"
            return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS, dn, url, detail=detail)
        if answer.verdict is Verdict.TRANSIENT:
            raise ServerDown(f"bind answered {answer.description or 'nothing'}")
        return DirectoryResult(
            DirectoryOutcome.UNAVAILABLE,
            dn,
            url,
            detail=f"bind failed: {answer.description} ({answer.code})",
        )

    async def _user_bind(self, entry: _Server, dn: str, password: bytes) -> LdapAnswer:
        """The one user bind of this check, on a bind-pool connection of its own."""
        try:
            result = await entry.bind.submit(lambda conn: conn.bind(dn, password))
        except ConnectionFailed as exc:
            raise ServerDown(str(exc)) from None
        except OperationFailed as exc:
            raise BindUnanswered(f"bind got no answer: {exc}") from None
        except QueueFull:
            raise FinalAnswer(_unavailable("LDAP queue full", entry.server.url)) from None
        return _bind_answer(result)

    async def _search(
        self,
        entry: _Server,
        filter_ber: bytes,
        *,
        base: str | None = None,
        attributes: Sequence[str] | None = None,
        size_limit: int = 2,
    ) -> SearchOutcome:
        """Search as the service account; a connection the server closed is retried once."""
        pool = entry.search
        assert pool is not None and self._config.base_dn is not None
        search_base = base or self._config.base_dn
        wanted = self._search_attributes if attributes is None else tuple(attributes)
        limit = self._time_limit
        keep = max(size_limit, _MAX_ENTRIES)

        def search(conn: LdapClientProtocol) -> Deferred[SearchOutcome]:
            return conn.search(
                search_base,
                filter_ber,
                wanted,
                size_limit=size_limit,
                time_limit=limit,
                max_entries=keep,
            )

        for attempt in range(2):
            try:
                return await pool.submit(search)
            except OperationFailed as exc:
                if exc.retriable and attempt == 0:
                    continue  # idle timeout or restart since it was pooled
                raise ServerDown(f"search got no answer: {exc}") from None
            except ConnectionFailed as exc:
                raise ServerDown(str(exc)) from None
            except ServiceBindRefused as exc:
                raise FinalAnswer(
                    _unavailable(f"service account bind failed: {exc}", entry.server.url)
                ) from None
            except QueueFull:
                raise FinalAnswer(_unavailable("LDAP queue full", entry.server.url)) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _find_user(self, entry: _Server, username: str) -> tuple[str, dict[str, list[str]]]:
        """The user's entry: from the cache when it holds one, else the user search."""
        if self._user_cache is None:
            return await self._search_user(entry, username)
        cached = self._user_cache.get(username)
        if cached is not None:
            return cached
        dn, found = await self._search_user(entry, username)
        self._user_cache.put(username, dn, found)
        return dn, found

    def _forget(self, username: str) -> None:
        """The directory refused this user: a cached entry may be what is wrong."""
        if self._user_cache is not None:
            self._user_cache.drop(username)

    async def _search_user(self, entry: _Server, username: str) -> tuple[str, dict[str, list[str]]]:
        """The user search: exactly one entry, or a FinalAnswer saying what went wrong."""
        url = entry.server.url
        try:
            filter_ber = self._user_search_filter(username)
        except FilterError as exc:
            raise FinalAnswer(_unavailable(f"bad search filter: {exc}", url)) from None
        found = await self._search(entry, filter_ber)
        answer = _search_answer(found.done)
        if answer.verdict is Verdict.TRANSIENT:
            raise ServerDown(f"search answered {answer.description or 'nothing'}")
        if answer.verdict is not Verdict.OK:
            raise FinalAnswer(
                _unavailable(f"user search failed: {answer.description} ({answer.code})", url)
            )
        entries = found.entries
        truncated = answer.truncated or found.overflow
        if len(entries) > 1 or truncated:
            raise FinalAnswer(
                DirectoryResult(
                    DirectoryOutcome.AMBIGUOUS_USER,
                    server=url,
                    detail=f"{len(entries)}{'+' if truncated else ''} entries match",
                )
            )
        if not entries:
            raise FinalAnswer(
                DirectoryResult(DirectoryOutcome.NO_SUCH_USER, server=url, detail="no_such_user")
            )
        found_entry = entries[0]
        if not found_entry.dn:
            raise FinalAnswer(_unavailable("search returned an entry without a DN", url))
        attributes = self._pick_attributes(found_entry)
        refuse_misnamed(found_entry.dn, attributes, self._naming, username, url)
        return found_entry.dn, attributes

    def _pick_attributes(self, entry: SearchEntry) -> dict[str, list[str]]:
        if not self._wanted:
            return {}
        picked: dict[str, list[str]] = {}
        for name, values in entry.attributes:
            wanted = self._wanted.get(name.lower())
            if wanted is not None and values and wanted not in picked:
                picked[wanted] = [v.decode("utf-8", "replace") for v in values]
        return picked

    def _timed_out(self, _result: Any, timeout: float) -> DirectoryResult:
        return _unavailable(f"no LDAP answer within {timeout:g}s")

    def _internal_error(self, failure: Failure, unavailable: Callable[[str], Any]) -> Any:
        if failure.check(CancelledError):  # the caller cancelled: not our error to log
            return failure
        log.failure("LDAP check failed unexpectedly", failure)
        return unavailable(f"internal error: {failure.getErrorMessage()}")


def peer_closed(sock: socket.socket) -> bool:
    """Whether a socket with nothing outstanding already holds its peer's EOF or reset: one
    non-blocking ``MSG_PEEK``."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _opener(
    connector: Connector, identity: tuple[str, bytes] | None, purpose: str
) -> Callable[[], Deferred[LdapClientProtocol]]:
    def open_connection() -> Deferred[LdapClientProtocol]:
        return Deferred.fromCoroutine(connector.open(identity, purpose))

    return open_connection


def _bind_answer(result: LdapResult) -> LdapAnswer:
    """Judge a BindResponse exactly as the ldap3 engine does (shared interpret_bind): any
    other result is an error, whatever its code."""
    description = RESULT_CODES.get(result.code, "")
    details = {
        "result": result.code,
        "description": description,
        "message": result.diagnostic,
        "type": "bindResponse" if result.op == BIND_RESPONSE else f"response 0x{result.op:02x}",
    }
    return interpret_bind((result.code == 0, details, None, None))


def _search_answer(result: LdapResult) -> SearchAnswer:
    description = RESULT_CODES.get(result.code, "")
    return interpret_search((None, {"result": result.code, "description": description}, [], None))


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


def _unavailable(detail: str, server: str | None = None) -> DirectoryResult:
    return DirectoryResult(DirectoryOutcome.UNAVAILABLE, server=server, detail=detail)


def _invalid(detail: str) -> DirectoryResult:
    return DirectoryResult(DirectoryOutcome.INVALID_CREDENTIALS, detail=detail)


def _no_groups(detail: str, server: str | None = None) -> GroupResult:
    return GroupResult(DirectoryOutcome.UNAVAILABLE, server=server, detail=detail)


def _values_of(attributes: dict[str, list[str]], name: str) -> list[str]:
    wanted = name.lower()
    return next((v for k, v in attributes.items() if k.lower() == wanted), [])
