"""Check a password with an LDAP simple bind through OpenLDAP's libldap (python-ldap).

libldap is the LDAP stack FreeRADIUS's rlm_ldap links: BER, StartTLS and LDAPS (its own TLS
library, chain and host name checked) in C. This engine drives it from the reactor without
threads for every per-login operation, under the pooled check, its pools and failover
(:class:`~radmfa.directory.pooled.PooledLdapChecker`):

- :class:`LibldapConnection`: one ``LDAPObject`` (one TCP connection). Requests go out with
  python-ldap's asynchronous calls (``search_ext``, ``simple_bind``); the socket is a reactor
  reader, and each wake-up drains libldap with ``result3(RES_ANY, 0, 0)`` until nothing
  complete is left. The socket is non-blocking: libldap never waits in a read or a write on
  the reactor thread (a request the kernel cannot take keeps libldap's next request out with
  ``BUSY``, and the connection is dropped like any other that stops answering). One response
  timeout per operation; a timeout drops the connection and fails what is pending on it.
- :class:`LibldapConnector`: opens a connection in a thread of ``runner``: TCP connect,
  StartTLS or LDAPS, radmfa's host-name rule (:mod:`radmfa.directory.tlsnames`) on the
  certificate libldap accepted, then the service bind. python-ldap has only a blocking
  StartTLS, and libldap's connect and handshake block, so set-up never runs on the reactor.

A connection that failed is never used again. libldap 2.5 keeps a dead connection dead (a
request on it fails with SERVER_DOWN, checked against slapd); should a libldap reconnect by
itself at the next request instead, it would do so synchronously and, for StartTLS, without
TLS. So a set-up connection's URI points nowhere as well: no stray request can reach a server
in clear whatever the library version.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from ldap3.core.results import RESULT_CODES
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from radmfa.config import LdapConfig, LdapGroupsConfig
from radmfa.deadlines import Deadline, Deadlines
from radmfa.directory.answers import Verdict
from radmfa.directory.pool import (
    ConnectionFailed,
    NotSent,
    OperationFailed,
    ServiceBindRefused,
)
from radmfa.directory.pooled import FilterError, PooledLdapChecker, bind_answer
from radmfa.directory.results import LdapResult, SearchEntry, SearchOutcome
from radmfa.directory.rules import LdapServer, build_user_filter, describe_error
from radmfa.directory.tlsnames import NameMismatch, ServerName
from radmfa.threads import BlockingRunner

__all__ = ["LibldapConnection", "LibldapConnector", "LibldapPasswordChecker", "import_ldap"]

log = Logger(namespace="radmfa.directory.ldap_libldap")

#: Entries kept from one search by default (a user search asks for two at most).
_MAX_ENTRIES = 2
_BIND, _SEARCH = "bind", "search"
#: RFC 4532 "Who am I?": the request that makes libldap open an LDAPS connection (it connects
#: on a first request only). It carries nothing secret and its answer is abandoned.
_WHOAMI = "1.3.6.1.4.1.4203.1.11.3"
#: Where libldap would go if anything asked a set-up connection to reconnect: a local socket
#: that does not exist, so the attempt fails at once and nothing leaves in clear.
_NO_RECONNECT = "ldapi://%2Fnonexistent%2Fradmfa-never-reconnects"
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")


def import_ldap() -> Any:
    """python-ldap, or a clear ValueError (a configuration problem) when it is missing."""
    try:
        import ldap
        import ldap.extop
        import ldap.ldapobject
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise ValueError(
            "engine libldap needs python-ldap (pip install python-ldap; Debian builds it with "
            "libldap2-dev libsasl2-dev)"
        ) from None
    return ldap


class _Operation:
    __slots__ = ("deadline", "deferred", "entries", "kind", "max_entries", "overflow", "references")

    def __init__(self, kind: str, deadline: Deadline, max_entries: int) -> None:
        self.kind = kind
        self.deferred: Deferred[Any] = Deferred()
        self.deadline = deadline
        self.entries: list[SearchEntry] = []
        self.max_entries = max_entries
        self.references = 0
        self.overflow = False


@implementer(IReadDescriptor)
class LibldapConnection:
    """One set-up ``LDAPObject`` on the reactor: a
    :class:`~radmfa.directory.pooled.LdapConnection` for the connection pools (``bind``,
    ``search``, ``outstanding``, ``alive``, ``close``, ``drop`` and the ``on_idle`` /
    ``on_lost`` hooks)."""

    def __init__(self, ldap: Any, ld: Any, clock: Any, timeout: float, name: str = "") -> None:
        self._ldap = ldap
        self._ld = ld
        self._clock = clock
        self._timeout = timeout
        #: The operations' timeouts: one timer for the connection, not one per operation.
        self._deadlines = Deadlines(clock)
        self.name = name
        self._pending: dict[int, _Operation] = {}
        self.on_idle: Callable[[LibldapConnection], None] | None = None
        self.on_lost: Callable[[LibldapConnection], None] | None = None
        fd = int(ld.fileno())
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)  # shared with the copy below
        #: Our own descriptor of the socket: the one the reactor watches, and the one peeked
        #: at (see _peer_closed). libldap closes its descriptor by itself when it finds the
        #: connection broken; this one stays valid (its number cannot be reused by another
        #: socket) until :meth:`_shut` unregisters and closes it.
        self._sock = socket.socket(fileno=os.dup(fd))
        self._fd = self._sock.fileno()
        self.alive = True
        clock.addReader(self)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    # -- requests --

    def bind(self, dn: str, password: bytes) -> Deferred[LdapResult]:
        """A simple bind; the caller makes sure nothing else is outstanding (RFC 4511 §4.2.1)."""
        if not dn or not password:
            # An anonymous or unauthenticated bind, which a server may answer with success
            # (RFC 4513 §5.1, L-01). Never sent, whoever asks.
            raise ValueError("refusing a bind without both a name and a password")
        return self._send(_BIND, lambda: self._ld.simple_bind(dn, password), _MAX_ENTRIES)

    def search(
        self,
        base: str,
        filterstr: str,
        attributes: Sequence[str],
        *,
        size_limit: int,
        time_limit: int,
        max_entries: int = _MAX_ENTRIES,
    ) -> Deferred[SearchOutcome]:
        """A subtree search; no attributes means ``1.1`` (none)."""
        wanted = list(attributes) or ["1.1"]
        scope = self._ldap.SCOPE_SUBTREE

        def send() -> int:
            try:
                msgid = self._ld.search_ext(
                    base, scope, filterstr, wanted, sizelimit=size_limit, timeout=time_limit
                )
            except (ValueError, UnicodeError) as exc:  # a NUL or a lone surrogate
                raise FilterError(str(exc)) from None
            return int(msgid)

        return self._send(_SEARCH, send, max_entries)

    def close(self) -> None:
        """Unbind (RFC 4511 §4.3) and close; pending operations fail."""
        self._shut(OperationFailed("connection closed by radmfa", retriable=False))

    def drop(self, reason: str, retriable: bool = False) -> None:
        """Close now and fail everything pending with ``reason``."""
        self._shut(OperationFailed(reason, retriable=retriable))

    def _send(self, kind: str, request: Callable[[], int], max_entries: int) -> Deferred[Any]:
        if not self.alive:
            raise NotSent("connection is closed")
        if not self._pending and self._peer_closed():
            # Closed by the server and the reactor has not read the EOF yet: say so now,
            # before a byte of this request leaves.
            self.drop("connection closed by the server", retriable=True)
            raise NotSent("connection closed by the server")
        ldap = self._ldap
        try:
            msgid = request()
        except ldap.FILTER_ERROR as exc:
            raise FilterError(_error_text(exc)) from None
        except ldap.BUSY:
            # libldap could not finish writing an earlier request (the server reads nothing):
            # this one was not sent, and the connection is as good as frozen.
            self.drop("the server takes no more requests", retriable=False)
            raise NotSent("the server takes no more requests") from None
        except ldap.LDAPError as exc:
            self.drop(f"connection lost: {_error_text(exc)}", retriable=True)
            raise NotSent(f"connection lost: {_error_text(exc)}") from None
        op = _Operation(
            kind, self._deadlines.add(self._timeout, partial(self._timed_out, msgid)), max_entries
        )
        self._pending[msgid] = op
        return op.deferred

    def _peer_closed(self) -> bool:
        """Whether an idle connection's socket already holds the server's EOF or reset: one
        non-blocking ``MSG_PEEK`` (a microsecond or two), done only when nothing is
        outstanding, so any byte waiting there can only be an EOF, a reset, a Notice of
        Disconnection or TLS housekeeping; only the first two count."""
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def _timed_out(self, msgid: int) -> None:
        op = self._pending.get(msgid)
        if op is not None:
            self.drop(f"no {op.kind} answer within {self._timeout:g}s", retriable=False)

    # -- responses (IReadDescriptor) --

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return f"libldap {self.name}"

    def doRead(self) -> None:
        """Everything libldap can complete now, one message per call, until nothing is left
        (it may hold more than the socket shows: a TLS record with several messages) or
        until no operation waits for anything: each call is a trip into libldap (a poll,
        often a read), and the one that finds nothing was a third of them. Whatever comes
        unasked afterwards (a Notice of Disconnection, then the server's close) makes the
        socket readable again: the reactor's epoll is level-triggered."""
        ldap = self._ldap
        result3 = self._ld.result3
        any_message = ldap.RES_ANY
        while self.alive:
            try:
                rtype, rdata, msgid, _controls = result3(any_message, 0, 0)
            except ldap.LDAPError as exc:
                # python-ldap raises every final result but success, with the message's ID
                # and type; an error without an ID is the connection's own.
                info = _error_info(exc)
                msgid = info.get("msgid")
                if not isinstance(msgid, int) or msgid <= 0:
                    self.drop(f"connection lost: {_error_text(exc)}", retriable=True)
                    return
                self._received(info.get("msgtype"), None, msgid, info)
            else:
                if rtype is None:  # (an EOF or a reset is an LDAPError above, not this)
                    return
                self._received(rtype, rdata, msgid, {"result": 0})
            if not self._pending:
                return

    def _received(self, rtype: Any, rdata: Any, msgid: int, info: dict[str, Any]) -> None:
        """One message for ``msgid``: an entry or reference of a search, or the final result,
        which must be of the request's own type (a bind is judged by a BindResponse only,
        whatever the code of another)."""
        ldap = self._ldap
        op = self._pending.get(msgid)
        if op is None:
            if msgid == 0:  # unsolicited: a Notice of Disconnection (RFC 4511 §4.4.1)
                self.drop("server disconnects", retriable=True)
            return  # an abandoned request's late answer
        if rtype == ldap.RES_SEARCH_ENTRY:
            if op.kind != _SEARCH:
                self._violation(f"search entry in answer to a {op.kind}")
                return
            for dn, attributes in rdata or ():
                if len(op.entries) >= op.max_entries:
                    op.overflow = True
                    continue
                pairs = tuple((name, tuple(values)) for name, values in attributes.items())
                op.entries.append(SearchEntry(dn, pairs))
            return
        if rtype == ldap.RES_SEARCH_REFERENCE:
            if op.kind != _SEARCH:
                self._violation(f"search reference in answer to a {op.kind}")
            else:
                op.references += 1  # never followed (L-09)
            return
        expected = ldap.RES_BIND if op.kind == _BIND else ldap.RES_SEARCH_RESULT
        if rtype != expected:
            self._violation(f"response type {rtype} in answer to a {op.kind}")
            return
        self._done(msgid, info)

    def _done(self, msgid: int, info: dict[str, Any]) -> None:
        """The operation's final result (python-ldap raises every code but success)."""
        op = self._pending.pop(msgid, None)
        if op is None:
            return
        self._deadlines.cancel(op.deadline)
        code = info.get("result")
        result = LdapResult(
            code=code if isinstance(code, int) else 80,
            matched_dn=str(info.get("matched") or ""),
            diagnostic=str(info.get("info") or ""),
        )
        if not op.deferred.called:  # else the caller cancelled while waiting
            if op.kind == _SEARCH:
                op.deferred.callback(
                    SearchOutcome(result, tuple(op.entries), op.references, op.overflow)
                )
            else:
                op.deferred.callback(result)
        if self.on_idle is not None and self.alive:
            self.on_idle(self)

    def _violation(self, reason: str) -> None:
        log.warn("LDAP {name}: {reason}; dropping the connection", name=self.name, reason=reason)
        self.drop(f"protocol error: {reason}")

    def connectionLost(self, reason: Failure) -> None:
        self._shut(OperationFailed(f"connection lost: {reason.getErrorMessage()}", retriable=True))

    def _shut(self, error: OperationFailed) -> None:
        """Mark unusable, tell the owner, close, then fail what is pending (in that order, so
        nobody retries on this connection)."""
        if not self.alive:
            return
        self.alive = False
        self._clock.removeReader(self)
        if self.on_lost is not None:
            self.on_lost(self)
        self.on_idle = self.on_lost = None
        _quiet_unbind(self._ldap, self._ld)  # non-blocking: an unbind the socket takes, or none
        self._sock.close()
        pending, self._pending = self._pending, {}
        self._deadlines.stop()
        for op in pending.values():
            if not op.deferred.called:
                op.deferred.errback(Failure(error))


class LibldapConnector:
    """Opens :class:`LibldapConnection` s to one server; the blocking set-up runs in
    ``runner``. Any failure is a :class:`ConnectionFailed` (or :class:`ServiceBindRefused`),
    and nothing but the service bind is ever sent before the certificate passed both checks."""

    def __init__(
        self,
        ldap: Any,
        reactor: Any,
        runner: BlockingRunner,
        server: LdapServer,
        config: LdapConfig,
    ) -> None:
        self._ldap = ldap
        self._reactor = reactor
        self._runner = runner
        self.server = server
        self._timeout = float(config.timeout)
        self._start_tls = bool(config.start_tls) and not server.use_ssl
        self._tls = server.use_ssl or self._start_tls
        self._ca_file = config.ca_file
        self._name = ServerName(server.host) if self._tls else None

    async def open(self, identity: tuple[str, bytes] | None, purpose: str) -> LibldapConnection:
        name = f"{self.server.url} {purpose}"
        try:
            ld = await self._runner.run(self._set_up, identity, name)
        except (ConnectionFailed, ServiceBindRefused, CancelledError):
            raise
        except Exception as exc:
            raise ConnectionFailed(describe_error(exc)) from None
        try:
            return LibldapConnection(self._ldap, ld, self._reactor, self._timeout, name)
        except Exception as exc:
            _quiet_unbind(self._ldap, ld)
            raise ConnectionFailed(f"connection set-up failed: {describe_error(exc)}") from None

    # -- in the runner's thread --

    def _set_up(self, identity: tuple[str, bytes] | None, name: str) -> Any:
        ld = self._session(name)
        try:
            if identity is not None:
                self._service_bind(ld, *identity)
            ld.set_option(self._ldap.OPT_URI, _NO_RECONNECT)
        except BaseException:
            _quiet_unbind(self._ldap, ld)
            raise
        return ld

    def _session(self, name: str) -> Any:
        """A connected ``LDAPObject``, TLS in place and checked when configured."""
        ldap, server = self._ldap, self.server
        if server.use_ssl:
            # libldap connects (and makes the TLS handshake) on a first request only.
            ld = self._options(ldap.initialize(server.url))
            try:
                msgid = ld.extop(ldap.extop.ExtendedRequest(_WHOAMI, None))
            except ldap.LDAPError as exc:
                _quiet_unbind(ldap, ld)
                raise ConnectionFailed(self._tls_refused(name, exc)) from None
            _quiet(ld.abandon_ext, msgid)
        else:
            try:
                sock = socket.create_connection((server.host, server.port), self._timeout)
            except OSError as exc:
                raise ConnectionFailed(describe_error(exc)) from None
            ld = self._options(ldap.initialize(server.url, fileno=sock.detach()))
            if self._start_tls:
                try:
                    ld.start_tls_s()
                except ldap.LDAPError as exc:
                    _quiet_unbind(ldap, ld)
                    raise ConnectionFailed(
                        f"StartTLS failed: {self._starttls_refused(name, exc)}"
                    ) from None
        if self._tls:
            try:
                self._check_name(ld, name)
            except ConnectionFailed as exc:
                _quiet_unbind(ldap, ld)
                prefix = "StartTLS failed: " if self._start_tls else ""
                raise ConnectionFailed(f"{prefix}{exc}") from None
        return ld

    def _options(self, ld: Any, require_cert: int | None = None) -> Any:
        ldap = self._ldap
        ld.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        ld.set_option(ldap.OPT_REFERRALS, 0)  # never chase (L-09)
        ld.set_option(ldap.OPT_NETWORK_TIMEOUT, self._timeout)
        ld.set_option(ldap.OPT_TIMEOUT, self._timeout)
        ld.timeout = self._timeout  # python-ldap's own limit for its synchronous calls
        if self._tls:  # chain and (libldap's) host-name check, TLS 1.2 or newer (L-08)
            if self._ca_file is not None:
                ld.set_option(ldap.OPT_X_TLS_CACERTFILE, self._ca_file)
            demand = ldap.OPT_X_TLS_DEMAND if require_cert is None else require_cert
            ld.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, demand)
            ld.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, ldap.OPT_X_TLS_PROTOCOL_TLS1_2)
            ld.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # last: a context with the options above
        return ld

    def _check_name(self, ld: Any, name: str) -> None:
        """radmfa's one host-name rule on the certificate libldap accepted (libldap's own
        falls back to the CN next to subjectAltNames and compares an IP with it as text)."""
        assert self._name is not None
        try:
            der = ld.get_option(self._ldap.OPT_X_TLS_PEERCERT)
            if not der:
                raise NameMismatch("the server sent no certificate")
            self._name.check(x509.load_der_x509_certificate(der))
        except NameMismatch as exc:
            reason = str(exc)
        except Exception as exc:
            reason = f"certificate check failed: {describe_error(exc)}"
        else:
            return
        _handshake_failed(name, reason)
        raise ConnectionFailed(f"TLS handshake failed: {reason}")

    def _starttls_refused(self, name: str, exc: Exception) -> str:
        info = _error_info(exc)
        code = info.get("result")
        if isinstance(code, int) and code > 0:  # the server answered the request: no TLS
            description = RESULT_CODES.get(code, "")
            return f"server refused StartTLS: {description} ({code})"
        return self._tls_refused(name, exc)

    def _tls_refused(self, name: str, exc: Exception) -> str:
        """libldap's refusals all read "(unknown error code)" (GnuTLS): the reason, for the
        log line, is found again by radmfa's own rules on the certificate (:meth:`_diagnose`)."""
        reason = self._diagnose()
        if reason is None:
            reason = f"libldap refused the connection: {_error_text(exc)}"
        _handshake_failed(name, reason)
        return f"TLS handshake failed: {reason}"

    def _diagnose(self) -> str | None:
        """Why the server's certificate is refused, or None (no TLS server there at all, or
        nothing radmfa's rules find wrong). A second handshake that accepts any certificate
        fetches it (nothing is sent there but a Who-am-I or the StartTLS request), then the
        chain is checked against ``ca_file`` and the name by :mod:`~radmfa.directory.tlsnames`.
        """
        ldap, server = self._ldap, self.server
        try:
            if server.use_ssl:
                ld = self._options(ldap.initialize(server.url), ldap.OPT_X_TLS_ALLOW)
                try:
                    ld.extop(ldap.extop.ExtendedRequest(_WHOAMI, None))
                    der = ld.get_option(ldap.OPT_X_TLS_PEERCERT)
                finally:
                    _quiet_unbind(ldap, ld)
            else:
                sock = socket.create_connection((server.host, server.port), self._timeout)
                ld = self._options(
                    ldap.initialize(server.url, fileno=sock.detach()), ldap.OPT_X_TLS_ALLOW
                )
                try:
                    ld.start_tls_s()
                    der = ld.get_option(ldap.OPT_X_TLS_PEERCERT)
                finally:
                    _quiet_unbind(ldap, ld)
            certificate = x509.load_der_x509_certificate(der)
        except Exception:
            return None
        problem = _chain_problem(certificate, self._ca_file)
        if problem is not None:
            return problem
        assert self._name is not None
        try:
            self._name.check(certificate)
        except NameMismatch as exc:
            return str(exc)
        if self._name.sni is not None and server.host.lower().rstrip(".") == "localhost":
            return (
                "libldap checks the name localhost as this machine's own host name "
                f"({socket.gethostname()}), which the certificate does not carry"
            )
        return None

    def _service_bind(self, ld: Any, dn: str, password: bytes) -> None:
        """The service account's bind; judged by its BindResponse only (libldap hands back
        whatever result carries the bind's message ID)."""
        ldap = self._ldap
        try:
            rtype, _data, _msgid, _controls = ld.simple_bind_s(dn, password)
        except ldap.LDAPError as exc:
            info = _error_info(exc)
            code = info.get("result")
            if not isinstance(code, int) or code < 0:  # no answer: libldap's own codes
                raise ConnectionFailed(f"service bind got no answer: {_error_text(exc)}") from None
            rtype = info.get("msgtype")
            if rtype == ldap.RES_BIND:
                result = LdapResult(code, "", str(info.get("info") or ""))
                answer = bind_answer(result)
                if answer.verdict is Verdict.TRANSIENT:
                    raise ConnectionFailed(
                        f"service bind answered {answer.description or 'nothing'}"
                    ) from None
                raise ServiceBindRefused(answer) from None
        if rtype != ldap.RES_BIND:
            raise ConnectionFailed(f"service bind answered with response type {rtype}")


class LibldapPasswordChecker(PooledLdapChecker):
    """:class:`~radmfa.directory.base.PasswordChecker` (and ``GroupResolver``,
    ``GroupFinder``) on libldap: the pooled check, failover, user cache and deadlines over
    :class:`LibldapConnection` s. ``runner`` opens connections (blocking set-up); every
    login's operations run on the reactor.

    Filters are libldap's to parse: the user filter (with a name in it) and the group filter
    are tried once here, so a malformed one stops the start-up or the reload; a search whose
    filter libldap still refuses ends that check "bad ... filter" (nothing sent)."""

    def __init__(
        self,
        config: LdapConfig,
        reactor: Any,
        runner: BlockingRunner,
        *,
        attributes: Sequence[str] = (),
        groups: LdapGroupsConfig | None = None,
        max_pending: int = 1000,
        **pool_options: Any,
    ) -> None:
        self._ldap = import_ldap()
        self._runner = runner
        if config.ca_file is not None:
            try:
                pem = Path(config.ca_file).read_bytes()
            except OSError as exc:
                raise ValueError(f"LDAP: cannot read ca_file {config.ca_file}: {exc}") from None
            if not _PEM_CERTIFICATE.search(pem):
                raise ValueError(f"LDAP: no PEM certificate in ca_file {config.ca_file}")
        if config.base_dn:
            problem = filter_problem(self._ldap, build_user_filter(config.user_filter, "x"))
            if problem is not None:
                raise ValueError(f"LDAP: user_filter: {problem}")
        if groups is not None:
            problem = filter_problem(self._ldap, groups.filter)
            if problem is not None:
                raise ValueError(f"LDAP: groups.filter: {problem}")
        super().__init__(
            config,
            reactor,
            attributes=attributes,
            groups=groups,
            max_pending=max_pending,
            **pool_options,
        )

    def _connector(self, server: LdapServer) -> LibldapConnector:
        try:
            return LibldapConnector(self._ldap, self._reactor, self._runner, server, self._config)
        except ValueError as exc:  # a host no certificate can name
            raise ValueError(f"LDAP: {exc}") from None


def filter_problem(ldap: Any, text: str) -> str | None:
    """Why libldap refuses to send ``text`` as a search filter, or None: its own parser, on a
    handle that points nowhere (a well-formed filter fails to connect, at once)."""
    ld = ldap.initialize(_NO_RECONNECT)
    try:
        ld.search_ext("", ldap.SCOPE_BASE, text, ["1.1"])
    except ldap.FILTER_ERROR as exc:
        return f"{_error_text(exc)} in {text!r}"
    except (ValueError, UnicodeError) as exc:  # a NUL or a lone surrogate
        return f"{exc} in {text!r}"
    except ldap.LDAPError:
        return None
    finally:
        _quiet_unbind(ldap, ld)
    return None  # pragma: no cover - nothing listens there


def _chain_problem(certificate: x509.Certificate, ca_file: str | None) -> str | None:
    """What OpenSSL finds wrong with the server's own certificate against ``ca_file`` (or the
    system's trust store), in OpenSSL's words, or None. Only for the log line: the server's
    intermediate certificates are not at hand here, libldap judged the chain with them."""
    from OpenSSL import crypto

    store = crypto.X509Store()
    if ca_file is not None:
        store.load_locations(ca_file)
    else:  # the system's trust store (pyOpenSSL's X509Store has no set_default_paths)
        paths = ssl.get_default_verify_paths()
        if paths.cafile is None and paths.capath is None:
            return None  # no trust store here to judge the chain with
        try:
            store.load_locations(paths.cafile, paths.capath)
        except crypto.Error:
            return None
    context = crypto.X509StoreContext(store, crypto.X509.from_cryptography(certificate))
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as exc:
        errors = getattr(exc, "errors", None)
        text = str(errors[2]) if isinstance(errors, list) and len(errors) > 2 else str(exc)
        return f"{text} (the server's certificate)"
    return None


def _error_info(exc: BaseException) -> dict[str, Any]:
    return exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}


def _error_text(exc: BaseException) -> str:
    """python-ldap's error as one line: its description and libldap's diagnostic."""
    info = _error_info(exc)
    parts = [str(info.get("desc") or type(exc).__name__)]
    extra = info.get("info")
    if extra and extra != "(unknown error code)":
        parts.append(str(extra))
    return ": ".join(parts)


def _handshake_failed(name: str, reason: str) -> None:
    """One warning line per refused certificate or handshake, worded as the other engines'."""
    log.warn(
        "LDAP {name}: TLS handshake failed: {reason}; no credentials sent", name=name, reason=reason
    )


def _quiet(call: Callable[..., Any], *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # noqa: S110 -- housekeeping on a connection that may be gone
        pass


def _quiet_unbind(ldap: Any, ld: Any) -> None:
    try:
        ld.unbind_ext()
    except ldap.LDAPError:
        pass
