"""The LDAP check on persistent, pooled connections: search (exactly one entry), one user
bind, failover across servers, group lookups and the user-entry cache, on the reactor.

An engine supplies only how connections are opened (:meth:`PooledLdapChecker._connector`);
the libldap engine (:mod:`radmfa.directory.ldap_libldap`) is the one that does. Per server
there is a *search pool* (a few connections bound once as ``bind_dn``, searches pipelined on
them) and a *bind pool* (up to ``pool_size`` connections, one bind at a time each, RFC 4511
§4.2.1). User binds are rebinds on bind-pool connections, which never carry a search: the
service identity and user identities never share a connection (L-03).

The rules are those of every engine (:mod:`radmfa.directory.rules`,
:mod:`radmfa.directory.answers`): no traffic for an empty password (L-01), timeouts
everywhere (L-04), failover only when a server did not judge the request (L-07), and never
after a user bind that was sent but not answered (at most one password attempt per request),
references ignored (L-09), exactly one search hit (L-12).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ldap3.core.results import RESULT_CODES
from twisted.internet.defer import CancelledError, Deferred, succeed
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
from radmfa.directory.base import DirectoryOutcome, DirectoryResult, GroupResult, UserEntry
from radmfa.directory.groupwalk import MAX_GROUPS, GroupWalk, group_probe_filter
from radmfa.directory.health import ServerHealth
from radmfa.directory.naming import naming_attributes
from radmfa.directory.pool import (
    ConnectionFailed,
    ConnectionPool,
    Gauge,
    OperationFailed,
    PooledConnection,
    QueueFull,
    ServiceBindRefused,
)
from radmfa.directory.results import LdapResult, SearchEntry, SearchOutcome
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

__all__ = [
    "SEARCH_CONNECTIONS",
    "SEARCH_DEPTH",
    "Connector",
    "FilterError",
    "LdapConnection",
    "PooledLdapChecker",
    "bind_answer",
]

log = Logger(namespace="radmfa.directory.pooled")


log = Logger(namespace="radmfa.directory.pooled")

#: Searches in flight on one service connection. slapd closes an anonymous connection with more
#: than 100 pending requests (``conn_max_pending``), 1000 when bound; stay well below both.
SEARCH_DEPTH = 64
#: Service connections per server; searches are cheap, a couple of connections saturate slapd.
SEARCH_CONNECTIONS = 2
#: Entries kept from one search; the size limit is 2, so a third means a misbehaving server.
_MAX_ENTRIES = 2


class FilterError(ValueError):
    """A search filter the LDAP library refused to send (malformed): nothing was sent."""


class LdapConnection(PooledConnection, Protocol):
    """One ready connection of an engine: bound (or not) and with TLS in place, carrying
    binds and searches; a request that could not be written raises
    :class:`~radmfa.directory.pool.NotSent` (or :class:`FilterError`) at once."""

    name: str

    def bind(self, dn: str, password: bytes) -> Deferred[LdapResult]: ...

    def search(
        self,
        base: str,
        filterstr: str,
        attributes: Sequence[str],
        *,
        size_limit: int,
        time_limit: int,
        max_entries: int = ...,
    ) -> Deferred[SearchOutcome]: ...


class Connector(Protocol):
    """Opens ready connections to one server for the pools: connected, TLS in place, bound as
    ``identity`` when one is given. Failures are :class:`ConnectionFailed` (nothing of an
    operation was sent: another server may be tried) or :class:`ServiceBindRefused`."""

    server: LdapServer

    async def open(self, identity: tuple[str, bytes] | None, purpose: str) -> LdapConnection: ...


@dataclass
class _Server:
    server: LdapServer
    search: ConnectionPool[LdapConnection] | None
    bind: ConnectionPool[LdapConnection]


class PooledLdapChecker:
    """:class:`~radmfa.directory.base.PasswordChecker` (and ``GroupResolver``,
    ``GroupFinder``) on persistent, pipelined connections that :meth:`_connector` opens.

    ``reactor`` provides time (and whatever the engine's connections need). Per server: a
    search pool of ``search_connections`` service connections (search-then-bind only) and a bind
    pool of ``config.pool_size`` connections. At most ``max_pending`` operations wait for a
    connection; beyond that checks are answered UNAVAILABLE ("LDAP queue full") at once.

    Timeouts: connection set-up and every response ``config.timeout`` each, and the whole
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
        self._gauge = Gauge(max_pending)
        #: Recently found user entries (``user_cache``; None when off or in direct-bind mode).
        self._user_cache = make_user_cache(config, reactor.seconds)
        service: tuple[str, bytes] | None = None
        if config.bind_dn:
            service = (config.bind_dn, (config.bind_password or "").encode("utf-8"))
        self._pools: dict[str, _Server] = {}
        for server in self._servers:
            connector = self._connector(server)
            search_pool: ConnectionPool[LdapConnection] | None = None
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
        """What opens the engine's connections to ``server``."""
        raise NotImplementedError

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
            return succeed(unavailable(f"internal error: {describe_error(exc)}"))

    def user_groups(self, username: str) -> Deferred[GroupResult]:
        """:class:`~radmfa.directory.base.GroupResolver`: the user search, then the group
        searches (:class:`~radmfa.directory.ldap.GroupWalk`) on the search pool, under the
        same deadline as a password check."""
        try:
            if self._closed:
                return succeed(no_groups("LDAP checker is closed"))
            if self._groups is None:
                return succeed(no_groups("group lookups are off"))
            problem = username_problem(username)
            if problem is not None:
                return succeed(GroupResult(DirectoryOutcome.NO_SUCH_USER, detail=problem))
            if self._gauge.waiting >= self._gauge.limit:
                return succeed(no_groups("LDAP queue full"))
            looking = Deferred.fromCoroutine(
                self._first_answer(
                    self._health_of().order(), lambda entry: self._groups_on(entry, username)
                )
            )
            looking.addTimeout(
                self._deadline,
                self._reactor,
                onTimeoutCancel=lambda _r, t: no_groups(f"no LDAP answer within {t:g}s"),
            )
            looking.addErrback(self._internal_error, no_groups)
            return looking
        except Exception as exc:  # never raise to the pipeline
            log.failure("LDAP group lookup failed unexpectedly", Failure())
            return succeed(no_groups(f"internal error: {describe_error(exc)}"))

    def find_groups(self, names: Sequence[str]) -> Deferred[GroupResult]:
        """:class:`~radmfa.directory.base.GroupFinder`: one search on the search pool, under
        the same deadline as a check."""
        try:
            if self._closed:
                return succeed(no_groups("LDAP checker is closed"))
            if self._groups is None:
                return succeed(no_groups("group lookups are off"))
            wanted = tuple(names)
            looking = Deferred.fromCoroutine(
                self._first_answer(
                    self._health_of().order(), lambda entry: self._find_groups_on(entry, wanted)
                )
            )
            looking.addTimeout(
                self._deadline,
                self._reactor,
                onTimeoutCancel=lambda _r, t: no_groups(f"no LDAP answer within {t:g}s"),
            )
            looking.addErrback(self._internal_error, no_groups)
            return looking
        except Exception as exc:  # never raise to the caller
            log.failure("LDAP group search failed unexpectedly", Failure())
            return succeed(no_groups(f"internal error: {describe_error(exc)}"))

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
            return succeed(unavailable("LDAP queue full"))
        checking = Deferred.fromCoroutine(
            self._authenticate(self._health_of().order(), username, secret, entry)
        )
        checking.addTimeout(self._deadline, self._reactor, onTimeoutCancel=self._timed_out)
        checking.addErrback(self._internal_error, unavailable)
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
        return no_groups(f"no LDAP server answered ({reasons})")

    async def _groups_on(self, entry: _Server, username: str) -> GroupResult:
        settings = self._groups
        assert settings is not None and self._config.base_dn is not None
        url = entry.server.url
        dn, found = await self._find_user(entry, username)
        walk = GroupWalk(settings, dn, attribute_values(found, "memberOf"))
        base = settings.base_dn or self._config.base_dn
        while filters := walk.filters():
            level: list[str] = []
            for text in filters:
                outcome = await self._search(
                    entry, text, base=base, attributes=(), size_limit=MAX_GROUPS, what="group"
                )
                answer = _search_answer(outcome.done)
                if answer.verdict is Verdict.TRANSIENT:
                    raise ServerDown(f"group search answered {answer.description or 'nothing'}")
                if answer.verdict is not Verdict.OK:
                    raise FinalAnswer(
                        unavailable(
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
        outcome = await self._search(
            entry,
            group_probe_filter(settings, names),
            base=settings.base_dn or self._config.base_dn,
            attributes=(),
            size_limit=MAX_GROUPS,
            what="group",
        )
        answer = _search_answer(outcome.done)
        if answer.verdict is Verdict.TRANSIENT:
            raise ServerDown(f"group search answered {answer.description or 'nothing'}")
        if answer.verdict is not Verdict.OK:
            raise FinalAnswer(
                unavailable(f"group search failed: {answer.description} ({answer.code})", url)
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
        return unavailable(f"no LDAP server answered ({reasons})")

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
            raise FinalAnswer(unavailable("LDAP queue full", entry.server.url)) from None
        return bind_answer(result)

    async def _search(
        self,
        entry: _Server,
        filterstr: str,
        *,
        base: str | None = None,
        attributes: Sequence[str] | None = None,
        size_limit: int = 2,
        what: str = "search",
    ) -> SearchOutcome:
        """Search as the service account; a connection the server closed is retried once. A
        filter the library refuses ends the check: "bad {what} filter"."""
        pool = entry.search
        assert pool is not None and self._config.base_dn is not None
        search_base = base or self._config.base_dn
        wanted = self._search_attributes if attributes is None else tuple(attributes)
        limit = self._time_limit
        keep = max(size_limit, _MAX_ENTRIES)

        def search(conn: LdapConnection) -> Deferred[SearchOutcome]:
            return conn.search(
                search_base,
                filterstr,
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
                    unavailable(f"service account bind failed: {exc}", entry.server.url)
                ) from None
            except QueueFull:
                raise FinalAnswer(unavailable("LDAP queue full", entry.server.url)) from None
            except FilterError as exc:
                raise FinalAnswer(
                    unavailable(f"bad {what} filter: {exc}", entry.server.url)
                ) from None
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
        found = await self._search(entry, build_user_filter(self._config.user_filter, username))
        answer = _search_answer(found.done)
        if answer.verdict is Verdict.TRANSIENT:
            raise ServerDown(f"search answered {answer.description or 'nothing'}")
        if answer.verdict is not Verdict.OK:
            raise FinalAnswer(
                unavailable(f"user search failed: {answer.description} ({answer.code})", url)
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
            raise FinalAnswer(unavailable("search returned an entry without a DN", url))
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
        return unavailable(f"no LDAP answer within {timeout:g}s")

    def _internal_error(self, failure: Failure, failed: Callable[[str], Any]) -> Any:
        if failure.check(CancelledError):  # the caller cancelled: not our error to log
            return failure
        log.failure("LDAP check failed unexpectedly", failure)
        return failed(f"internal error: {failure.getErrorMessage()}")


def _opener(
    connector: Connector, identity: tuple[str, bytes] | None, purpose: str
) -> Callable[[], Deferred[LdapConnection]]:
    def open_connection() -> Deferred[LdapConnection]:
        return Deferred.fromCoroutine(connector.open(identity, purpose))

    return open_connection


def bind_answer(result: LdapResult) -> LdapAnswer:
    """Judge a BindResponse exactly as the ldap3 engine does (shared interpret_bind); the
    connection made sure it is one."""
    description = RESULT_CODES.get(result.code, "")
    details = {
        "result": result.code,
        "description": description,
        "message": result.diagnostic,
        "type": "bindResponse",
    }
    return interpret_bind((result.code == 0, details, None, None))


def _search_answer(result: LdapResult) -> SearchAnswer:
    description = RESULT_CODES.get(result.code, "")
    return interpret_search((None, {"result": result.code, "description": description}, [], None))
