"""Check a password with an LDAP simple bind (ldap3, in a bounded thread pool).

Two modes, chosen by the config: a *direct bind* builds the user's DN from ``user_dn`` (the
user name escaped per RFC 4514), and *search-then-bind* finds the DN with a service account
(filter value escaped per RFC 4515) and binds as the DN the server returned.

The blocking work (:class:`LdapAuthenticator`) runs through a :class:`BlockingRunner`, one call
per check. The Twisted side (:class:`LdapPasswordChecker`) bounds concurrency, applies the
overall deadline and remembers which servers failed recently; it never raises.

Rules this module keeps (the LDAP items L-01..L-15 of the project's security checklist):

- no bind with an empty password, and no LDAP traffic for it at all (L-01);
- ldap3 ``SAFE_SYNC`` returns ``(status, result, response, request)`` and a tuple is always
  true, so every answer goes through :func:`interpret_bind` / :func:`interpret_search` (L-02);
  a bind is judged by a ``bindResponse`` only;
- a fresh ``Server`` and ``Connection`` for every user bind, unbound afterwards; service
  connections are pooled, one per worker at most, and never carry a user bind (L-03);
- connect and receive timeouts on every socket, plus a deadline on the Deferred (L-04);
- our own failover instead of ldap3's ``ServerPool`` and no RESTARTABLE strategy (L-05, L-06);
- fail over on transport errors and busy/unavailable/other answers only; an answered bind is
  final (L-07);
- certificate validation with ``CERT_REQUIRED`` and StartTLS before any bind; a StartTLS failure
  makes that server unusable, never a cleartext bind (L-08);
- no referral chasing, and only ``searchResEntry`` results count (L-09);
- exactly one search hit, else NO_SUCH_USER / AMBIGUOUS_USER (L-10, L-11, L-12).

Passwords go to ldap3 as UTF-8 *bytes*, so ldap3 applies no SASLprep (RFC 4013) mapping: the
directory sees exactly what the user typed, as OpenLDAP and Active Directory expect (L-15).
"""

from __future__ import annotations

import math
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import ldap3
from cryptography import x509
from ldap3.core.exceptions import (
    LDAPCertificateError,
    LDAPCommunicationError,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
)
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.config import LdapConfig, LdapGroupsConfig
from radmfa.directory.answers import (
    LdapAnswer,
    SearchAnswer,
    Verdict,
    interpret_bind,
    interpret_search,
)
from radmfa.directory.base import (
    DirectoryOutcome,
    DirectoryResult,
    GroupResult,
    UserEntry,
)
from radmfa.directory.entrycache import EntryCache
from radmfa.directory.groupwalk import MAX_GROUPS, GroupWalk, group_probe_filter
from radmfa.directory.health import ServerHealth
from radmfa.directory.naming import naming_attributes
from radmfa.directory.rules import (
    BindUnanswered,
    FinalAnswer,
    LdapServer,
    ServerDown,
    account_state,
    attribute_values,
    build_user_dn,
    build_user_filter,
    check_lookup_config,
    describe_error,
    group_result,
    locked_by_ppolicy,
    make_user_cache,
    no_groups,
    parse_server,
    refuse_before_ldap,
    refuse_misnamed,
    search_attributes,
    unavailable,
    username_problem,
)
from radmfa.directory.tlsnames import NameMismatch, ServerName
from radmfa.threads import BlockingRunner

__all__ = [
    "Attempt",
    "CheckedTls",
    "ConnectionFactory",
    "Ldap3Connector",
    "LdapAuthenticator",
    "LdapConnection",
    "LdapPasswordChecker",
    "make_tls",
]

log = Logger(namespace="radmfa.directory.ldap")


#: Exceptions meaning "this server did not answer": the next server may.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    LDAPCommunicationError,  # socket open/send/receive errors, session terminated by server
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
    LDAPCertificateError,
    OSError,  # includes ssl.SSLError and socket.timeout
)


# -- the blocking part --------------------------------------------------------------------------


class LdapConnection(Protocol):
    """What :class:`LdapAuthenticator` uses of an ldap3 ``Connection`` (SAFE_SYNC)."""

    tls_started: bool

    def open(self, read_server_info: bool = ...) -> Any: ...
    def start_tls(self, read_server_info: bool = ...) -> Any: ...
    def bind(self, read_server_info: bool = ..., controls: Any = ...) -> Any: ...
    def search(
        self,
        search_base: str,
        search_filter: str,
        *,
        search_scope: Literal["BASE", "LEVEL", "SUBTREE"] = ...,
        attributes: Any = ...,
        size_limit: int = ...,
        time_limit: int = ...,
    ) -> Any: ...
    def unbind(self, controls: Any = ...) -> Any: ...


#: ``connect(server, user, password)``: a new, unopened connection. ``user=None`` is anonymous.
ConnectionFactory = Callable[[LdapServer, str | None, bytes | str | None], LdapConnection]


class Ldap3Connector:
    """Builds a fresh ldap3 ``Server`` and ``Connection`` per call (nothing shared between threads).

    A ``Server`` object keeps per-address availability state and is not thread-safe (ldap3
    #1174), so each connection gets its own; ``get_info=NONE`` means no schema reads.
    """

    def __init__(self, config: LdapConfig) -> None:
        self.timeout = float(config.timeout)
        self.receive_timeout = max(1, math.ceil(config.timeout))  # must be an int (ldap3 #1068)
        self.tls: ldap3.Tls | None = None
        if config.start_tls or any(parse_server(s).use_ssl for s in config.servers):
            self.tls = make_tls(config.ca_file)
            for text in config.servers:  # a host no certificate can name: say so now
                host = parse_server(text).host
                try:
                    ServerName(host)
                except ValueError as exc:
                    raise ValueError(f"LDAP: {exc}") from None

    def __call__(
        self, server: LdapServer, user: str | None, password: bytes | str | None
    ) -> LdapConnection:
        ldap_server = ldap3.Server(
            server.host,
            port=server.port,
            use_ssl=server.use_ssl,
            get_info=ldap3.NONE,
            connect_timeout=self.timeout,
            tls=self.tls,
            allowed_referral_hosts=[],
        )
        conn: LdapConnection = ldap3.Connection(
            ldap_server,
            user=user,
            # ldap3 binds bytes as they are (the password with surrogateescape); its stub
            # says str.
            password=password,  # type: ignore[arg-type]
            authentication=ldap3.SIMPLE if user is not None else ldap3.ANONYMOUS,
            client_strategy=ldap3.SAFE_SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            receive_timeout=self.receive_timeout,
            auto_referrals=False,
            raise_exceptions=False,
        )
        return conn


def make_tls(ca_file: str | None) -> CheckedTls:
    """Certificate and host name checked; TLS 1.2 or newer (L-08)."""
    return CheckedTls(ca_file)


class CheckedTls(ldap3.Tls):
    """ldap3's ``Tls`` with the handshake and the host-name check done by radmfa.

    ldap3 checks the name with ``ssl.match_hostname`` or, on Python 3.12 and later, with a
    backport of its own that ignores IP subjectAltNames and falls back to the CN. Here the
    name is checked by :mod:`radmfa.directory.tlsnames`, the rule the libldap engine applies,
    after the chain (``CERT_REQUIRED`` against ``ca_file`` or the system store). One
    ``SSLContext`` serves every connection (it is thread-safe), and every wrap completes the
    handshake and the check before the socket is handed back: nothing is sent before.
    """

    def __init__(self, ca_file: str | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)
        context.check_hostname = False  # the name is checked below, by tlsnames
        context.verify_mode = ssl.CERT_REQUIRED
        self._context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        """What ldap3 calls for LDAPS and after a StartTLS answer (``do_handshake`` is True
        for both with SAFE_SYNC; the handshake is done here either way)."""
        server = connection.server
        url = f"{'ldaps' if server.ssl else 'ldap'}://{server.host}:{server.port}"
        try:
            name = ServerName(server.host)
            sni = name.sni.decode("ascii") if name.sni is not None else None
            wrapped = self._context.wrap_socket(
                connection.socket, server_hostname=sni, do_handshake_on_connect=False
            )
        except Exception as exc:
            _handshake_failed(url, f"{type(exc).__name__}: {exc}")
            raise
        connection.socket = wrapped  # ldap3 closes it, whatever happens next
        try:
            wrapped.do_handshake()
            der = wrapped.getpeercert(binary_form=True)
            if not der:
                raise NameMismatch("the server sent no certificate")
            name.check(x509.load_der_x509_certificate(der))
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            _handshake_failed(url, reason)
            raise LDAPCertificateError(reason) from None
        except NameMismatch as exc:
            _handshake_failed(url, str(exc))
            raise LDAPCertificateError(str(exc)) from None
        except Exception as exc:
            _handshake_failed(url, f"{type(exc).__name__}: {exc}")
            raise


def _handshake_failed(url: str, reason: str) -> None:
    """One warning line per failed handshake, worded as the libldap engine's (Twisted's
    loggers may be called from any thread)."""
    log.warn(
        "LDAP {name}: TLS handshake failed: {reason}; no credentials sent", name=url, reason=reason
    )


# The failover rules as control flow, shared by both engines.


def _quiet_unbind(conn: LdapConnection) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: S110 -- the socket may be gone; nothing to do about it
        pass


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one :meth:`LdapAuthenticator.authenticate` (or ``lookup_groups``) call did, for
    the server health map."""

    result: DirectoryResult | GroupResult
    #: (url, reason) for each server that gave no usable answer, in the order tried.
    failed: tuple[tuple[str, str], ...] = ()
    #: The server whose answer decided the result, if one did.
    answered_by: str | None = None


class _ServiceConnections:
    """Idle service-account connections per server, reused across checks.

    A connection is taken by one thread at a time, so the pool never holds more connections
    than there are worker threads. Broken ones are dropped and replaced on the next take.
    """

    def __init__(self, open_connection: Callable[[LdapServer], LdapConnection]) -> None:
        self._open = open_connection
        self._idle: dict[str, list[LdapConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, server: LdapServer, *, fresh: bool = False) -> tuple[LdapConnection, bool]:
        """(connection, reused); opening a new one may raise ServerDown or FinalAnswer."""
        if not fresh:
            with self._lock:
                idle = self._idle.get(server.url)
                if idle:
                    return idle.pop(), True
        return self._open(server), False

    def give_back(self, server: LdapServer, conn: LdapConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.setdefault(server.url, []).append(conn)
                return
        _quiet_unbind(conn)

    def drop_idle(self, server: LdapServer) -> None:
        """Forget idle connections to ``server`` (one was found dead, so the rest likely are)."""
        with self._lock:
            idle = self._idle.pop(server.url, [])
        for conn in idle:
            _quiet_unbind(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
        for conn in idle:
            _quiet_unbind(conn)


class LdapAuthenticator:
    """The blocking half: tries the given servers in order and returns an :class:`Attempt`.

    Thread-safe; one instance serves all worker threads. It never raises for LDAP or network
    trouble (that becomes part of the Attempt), only for programming errors.
    """

    def __init__(
        self,
        config: LdapConfig,
        connect: ConnectionFactory | None = None,
        attributes: Sequence[str] = (),
        groups: LdapGroupsConfig | None = None,
        user_cache: EntryCache | None = None,
    ) -> None:
        """``user_cache``: recently found user entries, used instead of a user search."""
        check_lookup_config(config)
        self._config = config
        self._connect: ConnectionFactory = connect or Ldap3Connector(config)
        self._attributes = tuple(attributes)
        self._groups = groups
        self._search_attributes = search_attributes(attributes, config, groups)
        self._naming = naming_attributes(config.user_filter) if config.base_dn else ()
        self._time_limit = max(1, math.ceil(config.timeout))
        self._service = _ServiceConnections(self._open_service_connection)
        self.user_cache = user_cache

    def close(self) -> None:
        self._service.close()

    def authenticate(
        self,
        servers: Sequence[LdapServer],
        username: str,
        password: bytes,
        entry: UserEntry | None = None,
        now: float = 0.0,
    ) -> Attempt:
        failed: list[tuple[str, str]] = []
        for server in servers:
            try:
                result = self._check_on(server, username, password, entry, now)
            except ServerDown as exc:
                failed.append((server.url, str(exc)))
                continue
            except FinalAnswer as exc:
                return Attempt(exc.result, tuple(failed), server.url)
            except BindUnanswered as exc:
                # The server may have checked the password: another server would make it two
                # attempts (and two counts against an AD lockout). Fail closed instead.
                failed.append((server.url, str(exc)))
                break
            return Attempt(result, tuple(failed), server.url)
        reasons = "; ".join(f"{url}: {why}" for url, why in failed) or "no servers configured"
        return Attempt(
            DirectoryResult(
                DirectoryOutcome.UNAVAILABLE, detail=f"no LDAP server answered ({reasons})"
            ),
            tuple(failed),
        )

    def lookup_groups(self, servers: Sequence[LdapServer], username: str) -> Attempt:
        """The user search, then the group searches (:class:`GroupWalk`), as the service
        account on the first server that answers."""
        return self._first_answer(servers, lambda server: self._groups_on(server, username))

    def find_groups(self, servers: Sequence[LdapServer], names: Sequence[str]) -> Attempt:
        """The groups of ``names`` the directory has (:func:`group_probe_filter`), as the
        service account on the first server that answers."""
        return self._first_answer(servers, lambda server: self._find_groups_on(server, names))

    def _first_answer(
        self, servers: Sequence[LdapServer], ask: Callable[[LdapServer], GroupResult]
    ) -> Attempt:
        failed: list[tuple[str, str]] = []
        for server in servers:
            try:
                result = ask(server)
            except ServerDown as exc:
                failed.append((server.url, str(exc)))
                continue
            except FinalAnswer as exc:
                return Attempt(group_result(exc.result), tuple(failed), server.url)
            return Attempt(result, tuple(failed), server.url)
        reasons = "; ".join(f"{url}: {why}" for url, why in failed) or "no servers configured"
        return Attempt(
            GroupResult(
                DirectoryOutcome.UNAVAILABLE, detail=f"no LDAP server answered ({reasons})"
            ),
            tuple(failed),
        )

    # -- one server --

    def _groups_on(self, server: LdapServer, username: str) -> GroupResult:
        settings = self._groups
        if settings is None or not self._config.base_dn:
            raise FinalAnswer(
                DirectoryResult(DirectoryOutcome.UNAVAILABLE, detail="group lookups are off")
            )
        dn, found = self._find_user(server, username)
        walk = GroupWalk(settings, dn, attribute_values(found, "memberOf"))
        base = settings.base_dn or self._config.base_dn
        while filters := walk.filters():
            level: list[str] = []
            for group_filter in filters:
                answer = self._search(
                    server, group_filter, base=base, attributes=(), size_limit=MAX_GROUPS
                )
                if answer.verdict is not Verdict.OK:
                    raise FinalAnswer(
                        DirectoryResult(
                            DirectoryOutcome.UNAVAILABLE,
                            server=server.url,
                            detail=f"group search failed: {answer.description} ({answer.code})",
                        )
                    )
                level.extend(e["dn"] for e in answer.entries if isinstance(e.get("dn"), str))
            walk.add(level)
        return GroupResult(
            DirectoryOutcome.OK, walk.groups, UserEntry(dn, found), server=server.url
        )

    def _find_groups_on(self, server: LdapServer, names: Sequence[str]) -> GroupResult:
        settings = self._groups
        if settings is None or not self._config.base_dn:
            raise FinalAnswer(
                DirectoryResult(DirectoryOutcome.UNAVAILABLE, detail="group lookups are off")
            )
        answer = self._search(
            server,
            group_probe_filter(settings, names),
            base=settings.base_dn or self._config.base_dn,
            attributes=(),
            size_limit=MAX_GROUPS,
        )
        if answer.verdict is not Verdict.OK:
            raise FinalAnswer(
                DirectoryResult(
                    DirectoryOutcome.UNAVAILABLE,
                    server=server.url,
                    detail=f"group search failed: {answer.description} ({answer.code})",
                )
            )
        found = tuple(e["dn"] for e in answer.entries if isinstance(e.get("dn"), str))
        return GroupResult(DirectoryOutcome.OK, found, server=server.url)

    def _check_on(
        self,
        server: LdapServer,
        username: str,
        password: bytes,
        entry: UserEntry | None = None,
        now: float = 0.0,
    ) -> DirectoryResult:
        found: dict[str, list[str]] = {}
        if entry is not None:
            dn, found = entry.dn, entry.attributes
        elif self._config.user_dn:
            dn = build_user_dn(self._config.user_dn, username)
        else:
            dn, found = self._find_user(server, username)
        state = account_state(found, now) if self._config.account_state else None
        if state is not None:  # refused without a bind
            self._forget(username)
            return DirectoryResult(
                DirectoryOutcome.INVALID_CREDENTIALS, dn, server.url, detail=state
            )
        answer = self._user_bind(server, dn, password)
        if answer.verdict is Verdict.OK:
            return DirectoryResult(
                DirectoryOutcome.OK, dn, server.url, attributes=self._factor_attributes(found)
            )
        if answer.verdict is Verdict.REJECTED:
            self._forget(username)  # the next check searches again (moved, locked, fixed)
            detail = answer.detail
            if detail == "bad_password" and locked_by_ppolicy(found):
                detail = "account_locked"
            return DirectoryResult(
                DirectoryOutcome.INVALID_CREDENTIALS, dn, server.url, detail=detail
            )
        if answer.verdict is Verdict.TRANSIENT:
            raise ServerDown(f"bind answered {answer.description or 'nothing'}")
        return DirectoryResult(
            DirectoryOutcome.UNAVAILABLE,
            dn,
            server.url,
            detail=f"bind failed: {answer.description} ({answer.code})",
        )

    def _start_tls(self, conn: LdapConnection) -> None:
        try:
            ret = conn.start_tls(read_server_info=False)
        except TRANSPORT_ERRORS as exc:
            raise ServerDown(f"StartTLS failed: {describe_error(exc)}") from None
        status = ret[0] if isinstance(ret, tuple) else ret
        if status is not True or not getattr(conn, "tls_started", False):
            raise ServerDown("StartTLS failed")

    def _open(self, server: LdapServer, conn: LdapConnection) -> None:
        """Connect, and StartTLS when configured; ServerDown if either fails."""
        try:
            conn.open(read_server_info=False)
        except TRANSPORT_ERRORS as exc:
            raise ServerDown(describe_error(exc)) from None
        if self._config.start_tls and not server.use_ssl:
            self._start_tls(conn)

    def _user_bind(self, server: LdapServer, dn: str, password: bytes) -> LdapAnswer:
        """The one user bind of this check, on its own connection."""
        conn = self._connect(server, dn, password)
        try:
            self._open(server, conn)
            try:
                return interpret_bind(conn.bind(read_server_info=False))
            except TRANSPORT_ERRORS as exc:
                raise BindUnanswered(f"bind got no answer: {describe_error(exc)}") from None
        finally:
            _quiet_unbind(conn)

    def _open_service_connection(self, server: LdapServer) -> LdapConnection:
        bind_dn = self._config.bind_dn or None
        password = (self._config.bind_password or "").encode("utf-8") if bind_dn else None
        conn = self._connect(server, bind_dn, password)
        try:
            self._open(server, conn)
            if bind_dn is None:
                return conn  # anonymous search
            try:
                answer = interpret_bind(conn.bind(read_server_info=False))
            except TRANSPORT_ERRORS as exc:
                raise ServerDown(f"service bind got no answer: {describe_error(exc)}") from None
        except BaseException:
            _quiet_unbind(conn)
            raise
        if answer.verdict is Verdict.OK:
            return conn
        _quiet_unbind(conn)
        if answer.verdict is Verdict.TRANSIENT:
            raise ServerDown(f"service bind answered {answer.description or 'nothing'}")
        raise FinalAnswer(
            DirectoryResult(
                DirectoryOutcome.UNAVAILABLE,
                server=server.url,
                detail=f"service account bind failed: {answer.description} ({answer.code})",
            )
        )

    def _search(
        self,
        server: LdapServer,
        search_filter: str,
        *,
        base: str | None = None,
        attributes: Sequence[str] | None = None,
        size_limit: int = 2,
    ) -> SearchAnswer:
        """Search as the service account; a stale pooled connection is replaced once."""
        base = base or self._config.base_dn
        assert base is not None
        wanted = self._search_attributes if attributes is None else tuple(attributes)
        for attempt in range(2):
            conn, reused = self._service.take(server, fresh=attempt > 0)
            try:
                ret = conn.search(
                    base,
                    search_filter,
                    search_scope=ldap3.SUBTREE,
                    attributes=list(wanted) or ldap3.NO_ATTRIBUTES,
                    size_limit=size_limit,
                    time_limit=self._time_limit,
                )
                answer = interpret_search(ret)
            except TRANSPORT_ERRORS as exc:
                _quiet_unbind(conn)
                if reused:  # idle timeout or server restart since it was pooled
                    self._service.drop_idle(server)
                    continue
                raise ServerDown(f"search got no answer: {describe_error(exc)}") from None
            except BaseException:
                _quiet_unbind(conn)
                raise
            if answer.verdict is Verdict.TRANSIENT:
                _quiet_unbind(conn)
                raise ServerDown(f"search answered {answer.description or 'nothing'}")
            self._service.give_back(server, conn)
            return answer
        raise AssertionError("unreachable: the second attempt uses a fresh connection")

    def _find_user(self, server: LdapServer, username: str) -> tuple[str, dict[str, list[str]]]:
        """The user's entry: from the cache when it holds one, else the user search."""
        if self.user_cache is None:
            return self._search_user(server, username)
        cached = self.user_cache.get(username)
        if cached is not None:
            return cached
        dn, found = self._search_user(server, username)
        self.user_cache.put(username, dn, found)
        return dn, found

    def _forget(self, username: str) -> None:
        """The directory refused this user: a cached entry may be what is wrong."""
        if self.user_cache is not None:
            self.user_cache.drop(username)

    def _search_user(self, server: LdapServer, username: str) -> tuple[str, dict[str, list[str]]]:
        """The user search: exactly one entry, or a FinalAnswer saying what went wrong."""
        answer = self._search(server, build_user_filter(self._config.user_filter, username))
        if answer.verdict is not Verdict.OK:
            raise FinalAnswer(
                DirectoryResult(
                    DirectoryOutcome.UNAVAILABLE,
                    server=server.url,
                    detail=f"user search failed: {answer.description} ({answer.code})",
                )
            )
        if len(answer.entries) > 1 or answer.truncated:
            raise FinalAnswer(
                DirectoryResult(
                    DirectoryOutcome.AMBIGUOUS_USER,
                    server=server.url,
                    detail=f"{len(answer.entries)}{'+' if answer.truncated else ''} entries match",
                )
            )
        if not answer.entries:
            raise FinalAnswer(
                DirectoryResult(
                    DirectoryOutcome.NO_SUCH_USER, server=server.url, detail="no_such_user"
                )
            )
        entry = answer.entries[0]
        dn = entry.get("dn")
        if not isinstance(dn, str) or not dn:
            raise FinalAnswer(
                DirectoryResult(
                    DirectoryOutcome.UNAVAILABLE,
                    server=server.url,
                    detail="search returned an entry without a DN",
                )
            )
        attributes = self._pick_attributes(entry)
        refuse_misnamed(dn, attributes, self._naming, username, server.url)
        return dn, attributes

    def _pick_attributes(self, entry: Mapping[str, Any]) -> dict[str, list[str]]:
        """Every attribute the user search asked for, by the name it was asked for."""
        if not self._search_attributes:
            return {}
        raw = {
            str(name).lower(): values
            for name, values in (entry.get("raw_attributes") or {}).items()
        }
        picked: dict[str, list[str]] = {}
        for name in self._search_attributes:
            values = raw.get(name.lower())
            if values:
                picked[name] = [
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values
                ]
        return picked

    def _factor_attributes(self, found: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """What a successful check returns: the attributes the factors asked for."""
        return {name: list(found[name]) for name in self._attributes if name in found}


# -- the Twisted part ---------------------------------------------------------------------------


@dataclass
class _Pending:
    """One check in flight: the caller's Deferred and the semaphore ticket it waits on."""

    outer: Deferred[Any]
    ticket: Deferred[Any] | None = None
    #: Makes the caller's result from a problem (a DirectoryResult or a GroupResult).
    failed: Callable[[str], Any] = field(default=lambda detail: unavailable(detail))


class LdapPasswordChecker:
    """:class:`~radmfa.directory.base.PasswordChecker` backed by LDAP simple binds.

    ``runner`` should be a pool of ``config.pool_size`` threads; a semaphore of the same size
    keeps at most that many checks in the pool, and at most ``max_pending`` waiting for it (more
    are answered UNAVAILABLE at once). Each check has a deadline of
    ``timeout * len(servers) + 1`` seconds measured on ``clock``; past it the caller gets
    UNAVAILABLE while the thread finishes on its own (ldap3's socket timeouts bound it).

    A server that gave no usable answer is tried last for ``retry_after`` seconds; servers are
    otherwise tried in the configured order.

    With ``config.user_cache`` an entry the user search found is reused for that long
    (:mod:`radmfa.directory.entrycache`) and forgotten when the directory refuses the user; it
    saves the search only, never the user bind.
    """

    def __init__(
        self,
        config: LdapConfig,
        runner: BlockingRunner,
        clock: IReactorTime,
        *,
        attributes: Sequence[str] = (),
        groups: LdapGroupsConfig | None = None,
        max_pending: int = 1000,
        connect: ConnectionFactory | None = None,
    ) -> None:
        if not config.servers:
            raise ValueError("LDAP: no servers configured")
        if groups is not None and not config.base_dn:
            raise ValueError("LDAP: group lookups need search-then-bind (base_dn)")
        self._config = config
        self._servers = tuple(parse_server(s) for s in config.servers)
        self._runner = runner
        self._clock = clock
        self._authenticator = LdapAuthenticator(
            config, connect, attributes, groups, make_user_cache(config, clock.seconds)
        )
        self._semaphore = DeferredSemaphore(max(1, config.pool_size))
        self._max_pending = max_pending
        self._deadline = config.timeout * len(self._servers) + 1.0
        self._health = ServerHealth(self._servers, lambda s: s.url, clock, config.retry_after)
        self._closed = False

    @property
    def servers(self) -> tuple[LdapServer, ...]:
        return self._servers

    @property
    def deadline(self) -> float:
        return self._deadline

    def servers_down(self) -> list[str]:
        """URLs currently skipped after a failure (for status output and tests)."""
        return self._health.down()

    @property
    def user_cache_hits(self) -> int:
        """Checks and group lookups that skipped the user search (``ldap.user_cache``)."""
        cache = self._authenticator.user_cache
        return cache.hits if cache is not None else 0

    @property
    def user_cache_misses(self) -> int:
        """Lookups the cache could not answer, so a user search was sent."""
        cache = self._authenticator.user_cache
        return cache.misses if cache is not None else 0

    def check_password(
        self, username: str, password: str, *, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]:
        try:
            return self._check(username, password, entry)
        except Exception as exc:  # never raise to the pipeline
            log.failure("LDAP check failed unexpectedly", Failure())
            return succeed(unavailable(f"internal error: {describe_error(exc)}"))

    def user_groups(self, username: str) -> Deferred[GroupResult]:
        """:class:`~radmfa.directory.base.GroupResolver`: a user search and the group
        searches on the service connection, in the pool, under the same deadline."""
        try:
            if self._closed:
                return succeed(no_groups("LDAP checker is closed"))
            problem = username_problem(username)
            if problem is not None:
                return succeed(GroupResult(DirectoryOutcome.NO_SUCH_USER, detail=problem))
            if len(self._semaphore.waiting) >= self._max_pending:
                return succeed(no_groups("LDAP queue full"))
            return self._submit(
                lambda: self._runner.run(
                    self._authenticator.lookup_groups, self._health.order(), username
                ),
                no_groups,
            )
        except Exception as exc:  # never raise to the pipeline
            log.failure("LDAP group lookup failed unexpectedly", Failure())
            return succeed(no_groups(f"internal error: {describe_error(exc)}"))

    def find_groups(self, names: Sequence[str]) -> Deferred[GroupResult]:
        """:class:`~radmfa.directory.base.GroupFinder`: one search on the service
        connection, in the pool, under the same deadline as a check."""
        try:
            if self._closed:
                return succeed(no_groups("LDAP checker is closed"))
            wanted = tuple(names)
            return self._submit(
                lambda: self._runner.run(
                    self._authenticator.find_groups, self._health.order(), wanted
                ),
                no_groups,
            )
        except Exception as exc:  # never raise to the caller
            log.failure("LDAP group search failed unexpectedly", Failure())
            return succeed(no_groups(f"internal error: {describe_error(exc)}"))

    def close(self) -> None:
        self._closed = True
        self._authenticator.close()

    # -- internals --

    def _check(
        self, username: str, password: str, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]:
        refused = refuse_before_ldap(username, password, closed=self._closed)
        if isinstance(refused, DirectoryResult):
            return succeed(refused)
        secret = refused
        if len(self._semaphore.waiting) >= self._max_pending:
            return succeed(unavailable("LDAP queue full"))
        return self._submit(
            lambda: self._runner.run(
                self._authenticator.authenticate,
                self._health.order(),
                username,
                secret,
                entry,
                self._clock.seconds(),
            ),
            unavailable,
        )

    def _submit(self, work: Callable[[], Deferred[Attempt]], failed: Callable[[str], Any]) -> Any:
        """Run ``work`` in the pool once the semaphore lets it, under the deadline; problems
        become ``failed(detail)``."""
        pending = _Pending(outer=Deferred(lambda _d: self._abandon(pending)), failed=failed)
        pending.outer.addTimeout(
            self._deadline,
            self._clock,
            onTimeoutCancel=lambda _f, timeout: failed(f"no LDAP answer within {timeout:g}s"),
        )
        pending.ticket = self._semaphore.acquire()
        pending.ticket.addCallback(self._start, pending, work)
        pending.ticket.addErrback(self._ticket_failed, pending)
        return pending.outer

    def _abandon(self, pending: _Pending) -> None:
        """The caller stopped waiting (deadline or cancel): give up a queued ticket."""
        if pending.ticket is not None and not pending.ticket.called:
            pending.ticket.cancel()

    def _ticket_failed(self, failure: Failure, pending: _Pending) -> None:
        if failure.check(CancelledError):
            return None
        log.failure("LDAP check failed unexpectedly", failure)
        if not pending.outer.called:
            pending.outer.callback(pending.failed(f"internal error: {failure.getErrorMessage()}"))
        return None

    def _start(
        self, _token: object, pending: _Pending, work: Callable[[], Deferred[Attempt]]
    ) -> None:
        if pending.outer.called:  # abandoned just as the ticket came through
            self._semaphore.release()
            return
        try:
            running = work()
        except BaseException:
            self._semaphore.release()
            raise
        running.addBoth(self._finished, pending)

    def _finished(self, outcome: Attempt | Failure, pending: _Pending) -> None:
        self._semaphore.release()
        if isinstance(outcome, Failure):
            log.failure("LDAP check failed unexpectedly", outcome)
            result = pending.failed(f"internal error: {outcome.getErrorMessage()}")
        else:
            self._health.record(outcome.failed, outcome.answered_by)
            result = outcome.result
        if not pending.outer.called:
            pending.outer.callback(result)
