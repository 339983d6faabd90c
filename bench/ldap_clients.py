"""LDAP client A/B: our native engine against OpenLDAP's libldap (python-ldap), same work.

    .venv/bin/python -m bench.ldap_clients                  # the full run (a few minutes)
    .venv/bin/python -m bench.ldap_clients --quick          # a smoke run

It answers one question: does a reactor-driven libldap client cost more client CPU per login
than :class:`~radmfa.directory.ldap_native.NativeLdapPasswordChecker`? Both run in this one
process on one Twisted reactor against one slapd (``bench.run``'s users), and both do a
search-then-bind login: one user search on a service connection (pipelined, two connections)
and one simple bind as the user on a pool of ``pool_size`` bind connections, with ``K`` logins
in flight. The native engine is driven exactly as the daemon drives it
(``check_password(user, password)``); the libldap client is a prototype here, not an engine in
``daemon/``, and does the same check-level work with the engines' shared helpers (result
interpretation, naming and account-state checks, one timer per operation, one deadline per
check), so the difference measured is the LDAP client itself: BER framing, connection and
pool plumbing. Two ``-bare`` clients take the check's rules away on both sides (search, then
bind, chained callbacks on the same pools): ``native-bare`` drives the native engine's own
connection pools, ``libldap-bare`` the prototype's, which compares the two clients alone.

Client CPU is ``getrusage(RUSAGE_SELF)`` (user + system, every thread of this process, so the
ldap3 engine's thread pool counts too) over the measured window; slapd's CPU comes from
``/proc/<pid>/stat``. Rounds alternate the clients (the order rotates every round) so a shared
machine's drift hits them alike; the summary gives medians, the spread and the per-round
ratios to the reference run next to it (``native``, or ``native-bare`` for the bare
clients). A ``harness`` row (a checker that answers at once) shows what the
driver itself costs per login; it is included in every client's number.

python-ldap is not a radmfa dependency: build it with Debian's ``libldap2-dev libsasl2-dev``
and ``pip install python-ldap==3.4.8``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.internet.task import react
from twisted.python.failure import Failure
from zope.interface import implementer

from bench.run import ROOT, BenchUser, make_bench_users, users_ldif
from radmfa.config import LdapConfig
from radmfa.directory.answers import (
    Verdict,
    interpret_bind,
    interpret_search,
)
from radmfa.directory.base import DirectoryOutcome, DirectoryResult
from radmfa.directory.naming import naming_attributes
from radmfa.directory.rules import (
    FinalAnswer,
    account_state,
    build_user_filter,
    refuse_before_ldap,
    refuse_misnamed,
    search_attributes,
)
from tests.support.certs import make_ca, make_server_cert
from tests.support.slapd import PEOPLE_DN, SERVICE_DN, SERVICE_PASSWORD, Slapd

CLIENTS = ("native", "libldap", "native-bare", "libldap-bare", "ldap3", "harness")
_TICKS = os.sysconf("SC_CLK_TCK")
_MISSING = """\
bench.ldap_clients: python-ldap is not installed in this Python ({python}).
It is not a radmfa dependency; to run this benchmark build it here:
    apt-get install libldap2-dev libsasl2-dev
    {python} -m pip install python-ldap==3.4.8
or leave the libldap client out: --clients native,ldap3"""


class Checker(Protocol):
    def check_password(self, username: str, password: str) -> Deferred[DirectoryResult]: ...


# -- the libldap prototype ----------------------------------------------------------------------


class LibldapError(Exception):
    """A request written to libldap got no usable answer (timeout, connection gone)."""


@implementer(IReadDescriptor)
class LibldapConnection:
    """One ``LDAPObject`` (one TCP connection) driven from the reactor, without threads.

    Requests go out with python-ldap's asynchronous calls (``search_ext``, ``simple_bind``:
    libldap encodes and writes them at once); the socket (``fileno()``) is a reactor reader,
    and every wake-up drains libldap with ``result3(RES_ANY, all=1, timeout=0)`` until it has
    nothing complete left (libldap may have buffered more than one message). Each request has
    its own timer, as in the native engine. The connect and the first bind are blocking, at
    set-up only (outside the measured window); an engine would use ``OPT_CONNECT_ASYNC``.
    """

    def __init__(
        self, ldap_module: Any, reactor: Any, url: str, timeout: float, ca_file: str | None
    ) -> None:
        self._ldap = ldap_module
        self._reactor = reactor
        self._timeout = timeout
        self._ld = ldap_module.ldapobject.LDAPObject(url)
        self._ld.set_option(ldap_module.OPT_PROTOCOL_VERSION, 3)
        self._ld.set_option(ldap_module.OPT_REFERRALS, 0)  # never chase (L-09)
        self._ld.set_option(ldap_module.OPT_NETWORK_TIMEOUT, timeout)
        self._ca_file = ca_file
        if ca_file is not None:  # libldap checks the chain and the host name (L-08)
            self._ld.set_option(ldap_module.OPT_X_TLS_CACERTFILE, ca_file)
            self._ld.set_option(ldap_module.OPT_X_TLS_REQUIRE_CERT, ldap_module.OPT_X_TLS_DEMAND)
            self._ld.set_option(ldap_module.OPT_X_TLS_NEWCTX, 0)  # last: applies the above
        self._pending: dict[int, tuple[Deferred[Any], IDelayedCall]] = {}
        self._fd = -1

    def open(self, who: str, password: str) -> None:
        if self._ca_file is not None:
            self._ld.start_tls_s()
        self._ld.simple_bind_s(who, password)
        self._fd = self._ld.fileno()
        self._reactor.addReader(self)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def search(
        self, base: str, filterstr: str, attributes: Sequence[str], size_limit: int, time_limit: int
    ) -> Deferred[Any]:
        msgid = self._ld.search_ext(
            base,
            self._ldap.SCOPE_SUBTREE,
            filterstr,
            list(attributes) or ["1.1"],
            sizelimit=size_limit,
            timeout=time_limit,
        )
        return self._track(msgid)

    def bind(self, dn: str, password: bytes) -> Deferred[Any]:
        return self._track(self._ld.simple_bind(dn, password))

    def _track(self, msgid: int) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        timer = self._reactor.callLater(self._timeout, self._timed_out, msgid)
        self._pending[msgid] = (done, timer)
        return done

    def _timed_out(self, msgid: int) -> None:
        done, _timer = self._pending.pop(msgid)
        try:
            self._ld.abandon_ext(msgid)
        except self._ldap.LDAPError:
            pass
        done.errback(LibldapError(f"no answer within {self._timeout:g}s"))

    def _settle(self, msgid: int | None, outcome: Any, failed: bool) -> None:
        if msgid is None or msgid not in self._pending:
            return  # abandoned after a timeout, or unsolicited
        done, timer = self._pending.pop(msgid)
        timer.cancel()
        if failed:
            done.errback(outcome)
        else:
            done.callback(outcome)

    # IReadDescriptor

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        result3 = self._ld.result3
        any_message = self._ldap.RES_ANY
        while self._fd >= 0:  # a callback may have closed this connection
            try:
                rtype, rdata, msgid, _controls = result3(any_message, 1, 0)
            except self._ldap.LDAPError as exc:
                info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
                msgid = info.get("msgid")
                if msgid is None:  # the connection itself failed
                    self.connectionLost(Failure(exc))
                    return
                self._settle(msgid, exc, True)
                continue
            if rtype is None:
                return
            self._settle(msgid, rdata, False)

    def connectionLost(self, reason: Failure) -> None:
        self._reactor.removeReader(self)
        pending, self._pending = self._pending, {}
        for done, timer in pending.values():
            timer.cancel()
            done.errback(LibldapError(f"connection lost: {reason.getErrorMessage()}"))

    def logPrefix(self) -> str:
        return "libldap"

    def close(self) -> None:
        if self._fd >= 0:
            self._reactor.removeReader(self)
            self._fd = -1
        self._ld.unbind_ext()


class LibldapPool:
    """Operations on a fixed set of connections, at most ``depth`` in flight on each, the
    rest in a FIFO (as the native engine's ConnectionPool: depth 1 for binds)."""

    def __init__(self, connections: Sequence[LibldapConnection], depth: int) -> None:
        self._connections = list(connections)
        self._depth = depth
        self._queue: deque[tuple[Callable[[LibldapConnection], Deferred[Any]], Deferred[Any]]] = (
            deque()
        )

    def submit(self, operation: Callable[[LibldapConnection], Deferred[Any]]) -> Deferred[Any]:
        conn = self._pick()
        if conn is None:
            waiting: Deferred[Any] = Deferred()
            self._queue.append((operation, waiting))
            return waiting
        return self._run(conn, operation)

    def _pick(self) -> LibldapConnection | None:
        best = min(self._connections, key=lambda c: c.outstanding)
        return best if best.outstanding < self._depth else None

    def _run(
        self, conn: LibldapConnection, operation: Callable[[LibldapConnection], Deferred[Any]]
    ) -> Deferred[Any]:
        running = operation(conn)
        running.addBoth(self._freed)
        return running

    def _freed(self, result: Any) -> Any:
        while self._queue:
            conn = self._pick()
            if conn is None:
                break
            operation, waiting = self._queue.popleft()
            self._run(conn, operation).chainDeferred(waiting)
        return result

    def close(self) -> None:
        for conn in self._connections:
            conn.close()


class LibldapChecker:
    """Search-then-bind on libldap with the same rules as the native engine's ``_check_on``
    (one server, no user cache, no failover: the benchmark's configuration)."""

    def __init__(
        self,
        ldap_module: Any,
        config: LdapConfig,
        reactor: Any,
        *,
        search_connections: int = 2,
        search_depth: int = 64,
    ) -> None:
        assert config.base_dn and config.bind_dn
        self._ldap = ldap_module
        self._config = config
        self._reactor = reactor
        self._url = config.servers[0]
        self._base = config.base_dn
        self._attributes = search_attributes((), config, None)
        self._wanted = {name.lower(): name for name in self._attributes}
        self._naming = naming_attributes(config.user_filter)
        self._time_limit = max(1, int(config.timeout))
        self._deadline = config.timeout + 1.0
        searchers = [self._connect(config.bind_dn, config.bind_password or "")]
        searchers += [
            self._connect(config.bind_dn, config.bind_password or "")
            for _ in range(search_connections - 1)
        ]
        self._search_pool = LibldapPool(searchers, search_depth)
        self._bind_pool = LibldapPool(
            [self._connect("", "") for _ in range(config.pool_size)], depth=1
        )

    def _connect(self, who: str, password: str) -> LibldapConnection:
        tls_ca = self._config.ca_file if self._config.start_tls else None
        conn = LibldapConnection(self._ldap, self._reactor, self._url, self._config.timeout, tls_ca)
        conn.open(who, password)
        return conn

    def check_password(self, username: str, password: str) -> Deferred[DirectoryResult]:
        refused = refuse_before_ldap(username, password, closed=False)
        if isinstance(refused, DirectoryResult):
            return succeed(refused)
        checking = Deferred.fromCoroutine(self._check(username, refused))
        checking.addTimeout(
            self._deadline,
            self._reactor,
            onTimeoutCancel=lambda _r, t: _unavailable(f"no LDAP answer within {t:g}s"),
        )
        return checking

    def close(self) -> None:
        self._search_pool.close()
        self._bind_pool.close()

    async def _check(self, username: str, password: bytes) -> DirectoryResult:
        try:
            dn, found = await self._search_user(username)
            state = account_state(found, self._reactor.seconds())
            if state is not None:
                return DirectoryResult(
                    DirectoryOutcome.INVALID_CREDENTIALS, dn, self._url, detail=state
                )
            ret, _ = await self._answer(self._bind_pool, _bind(dn, password))
            answer = interpret_bind(ret)
        except FinalAnswer as exc:
            return exc.result
        except LibldapError as exc:
            return _unavailable(str(exc))
        if answer.verdict is Verdict.OK:
            return DirectoryResult(DirectoryOutcome.OK, dn, self._url)
        if answer.verdict is Verdict.REJECTED:
            return DirectoryResult(
                DirectoryOutcome.INVALID_CREDENTIALS, dn, self._url, detail=answer.detail
            )
        return _unavailable(f"bind failed: {answer.description} ({answer.code})")

    async def _search_user(self, username: str) -> tuple[str, dict[str, list[str]]]:
        filterstr = build_user_filter(self._config.user_filter, username)
        limit, base, wanted = self._time_limit, self._base, self._attributes
        ret, rdata = await self._answer(
            self._search_pool, lambda conn: conn.search(base, filterstr, wanted, 2, limit)
        )
        answer = interpret_search(ret)
        if answer.verdict is not Verdict.OK:
            raise FinalAnswer(_unavailable(f"user search failed: {answer.description}"))
        entries = [(dn, attrs) for dn, attrs in rdata if dn is not None]  # references dropped
        if len(entries) != 1 or answer.truncated:
            outcome = (
                DirectoryOutcome.NO_SUCH_USER if not entries else DirectoryOutcome.AMBIGUOUS_USER
            )
            raise FinalAnswer(DirectoryResult(outcome, server=self._url, detail="lookup"))
        dn, raw = entries[0]
        found: dict[str, list[str]] = {}
        for name, values in raw.items():
            key = self._wanted.get(name.lower())
            if key is not None and values and key not in found:
                found[key] = [v.decode("utf-8", "replace") for v in values]
        refuse_misnamed(dn, found, self._naming, username, self._url)
        return dn, found

    async def _answer(
        self, pool: LibldapPool, operation: Callable[[LibldapConnection], Deferred[Any]]
    ) -> tuple[tuple[bool, dict[str, Any], list[Any], None], list[Any]]:
        """The operation's result as the SAFE_SYNC tuple the shared interpreters judge, and
        what libldap returned with it (search entries as ``(dn, attributes)``)."""
        try:
            rdata = await pool.submit(operation)
        except self._ldap.LDAPError as exc:
            info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            result = {
                "result": info.get("result"),
                "description": info.get("desc", ""),
                "message": info.get("info", ""),
            }
            return (False, result, [], None), []
        return (True, {"result": 0, "description": "success"}, [], None), list(rdata or ())


def _bind(dn: str, password: bytes) -> Callable[[LibldapConnection], Deferred[Any]]:
    return lambda conn: conn.bind(dn, password)


def _unavailable(detail: str) -> DirectoryResult:
    return DirectoryResult(DirectoryOutcome.UNAVAILABLE, detail=detail)


class BareLibldapChecker(LibldapChecker):
    """The least a libldap login costs on the reactor: the search, then the bind, chained
    callbacks on the same pools, none of the check's rules (no coroutine, no deadline, no
    result interpretation beyond success)."""

    def check_password(self, username: str, password: str) -> Deferred[DirectoryResult]:
        filterstr = build_user_filter(self._config.user_filter, username)
        secret = password.encode("utf-8")
        base, wanted, limit = self._base, self._attributes, self._time_limit
        found = self._search_pool.submit(lambda c: c.search(base, filterstr, wanted, 2, limit))
        found.addCallback(lambda rdata: self._bind_pool.submit(_bind(rdata[0][0], secret)))
        found.addCallbacks(_ok, _failed)
        return found


class BareNativeChecker:
    """The same least work on the native engine's own client: its search and bind pools
    (``LdapClientProtocol`` and ``ConnectionPool``, reached through the checker's private
    state), without the checker's rules. Against :class:`BareLibldapChecker` it compares the
    clients alone: BER framing in Python against libldap."""

    def __init__(self, native: Any, config: LdapConfig) -> None:
        entry = native._pools[config.servers[0]]
        self._search_pool, self._bind_pool = entry.search, entry.bind
        self._filter = native._filter
        self._base = config.base_dn
        self._attributes = native._search_attributes

    def check_password(self, username: str, password: str) -> Deferred[DirectoryResult]:
        filter_ber = self._filter.encode(username)
        secret = password.encode("utf-8")
        base, wanted = self._base, self._attributes

        def search(conn: Any) -> Deferred[Any]:
            return conn.search(base, filter_ber, wanted, size_limit=2, time_limit=3)

        found = self._search_pool.submit(search)
        found.addCallback(lambda outcome: self._bind_pool.submit(_native_bind(outcome, secret)))
        found.addCallbacks(_ok, _failed)
        return found


def _native_bind(outcome: Any, secret: bytes) -> Callable[[Any], Deferred[Any]]:
    dn = outcome.entries[0].dn
    return lambda conn: conn.bind(dn, secret)


def _ok(_result: Any) -> DirectoryResult:
    return DirectoryResult(DirectoryOutcome.OK)


def _failed(failure: Failure) -> DirectoryResult:
    return _unavailable(failure.getErrorMessage())


class InstantChecker:
    """Answers OK at once: what the driver itself costs per login."""

    def check_password(self, username: str, password: str) -> Deferred[DirectoryResult]:
        return succeed(DirectoryResult(DirectoryOutcome.OK, f"uid={username}"))


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Row:
    round: int
    client: str
    in_flight: int
    logins: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    slapd_cpu_s: float
    logins_per_s: float
    cpu_us_per_login: float
    slapd_cpu_us_per_login: float
    outcomes: dict[str, int] = field(default_factory=dict)
    loadavg: float = 0.0


def slapd_cpu(pid: int) -> float:
    """slapd's user + system CPU seconds so far (one process, many threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text()
    parts = fields[fields.rindex(")") + 2 :].split()
    return (int(parts[11]) + int(parts[12])) / _TICKS


def own_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class UserCycle:
    """Hands out bench users in a fixed shuffled order, round and round."""

    def __init__(self, users: Sequence[BenchUser], seed: int) -> None:
        self.users = list(users)
        random.Random(seed).shuffle(self.users)
        self.cursor = 0

    def next(self) -> BenchUser:
        user = self.users[self.cursor]
        self.cursor = (self.cursor + 1) % len(self.users)
        return user


def drive(checker: Checker, users: UserCycle, count: int, in_flight: int) -> Deferred[Counter]:
    """``count`` checks, ``in_flight`` at a time (closed loop); fires with the outcomes."""
    outcomes: Counter[str] = Counter()
    finished: Deferred[Counter] = Deferred()
    state = {"launched": 0, "open": 0, "done": 0, "pumping": False}

    def landed(result: Any) -> None:
        if isinstance(result, Failure):
            outcomes[f"error: {result.getErrorMessage()[:80]}"] += 1
        else:
            outcomes[result.outcome.name] += 1
        state["open"] -= 1
        state["done"] += 1
        if state["done"] == count:
            finished.callback(outcomes)
        else:
            pump()

    def pump() -> None:
        if state["pumping"]:
            return  # a synchronous answer: the loop below goes on
        state["pumping"] = True
        while state["open"] < in_flight and state["launched"] < count:
            user = users.next()
            state["launched"] += 1
            state["open"] += 1
            checker.check_password(user.uid, user.password).addBoth(landed)
        state["pumping"] = False

    pump()
    return finished


async def measure(
    checker: Checker, users: UserCycle, count: int, in_flight: int, slapd_pid: int
) -> tuple[float, float, float, float, Counter]:
    """(wall, user CPU, system CPU, slapd CPU) seconds of one window, and the outcomes."""
    s0 = slapd_cpu(slapd_pid)
    u0, k0 = own_cpu()
    w0 = time.perf_counter()
    outcomes = await drive(checker, users, count, in_flight)
    w1 = time.perf_counter()
    u1, k1 = own_cpu()
    s1 = slapd_cpu(slapd_pid)
    return w1 - w0, u1 - u0, k1 - k0, s1 - s0, outcomes


def make_row(round_no: int, client: str, in_flight: int, count: int, took: tuple[Any, ...]) -> Row:
    wall, user, system, slapd, outcomes = took
    return Row(
        round=round_no,
        client=client,
        in_flight=in_flight,
        logins=count,
        wall_s=round(wall, 4),
        cpu_user_s=round(user, 4),
        cpu_sys_s=round(system, 4),
        slapd_cpu_s=round(slapd, 3),
        logins_per_s=round(count / wall, 1),
        cpu_us_per_login=round((user + system) / count * 1e6, 1),
        slapd_cpu_us_per_login=round(slapd / count * 1e6, 1),
        outcomes=dict(outcomes),
        loadavg=os.getloadavg()[0],
    )


def summarize(rows: Sequence[Row], clients: Sequence[str], depths: Sequence[int]) -> list[dict]:
    """Per client and depth: medians, min and max over the rounds, and the per-round CPU
    ratios to the reference run back to back with it in the same round (``native`` for the
    checkers, ``native-bare`` for the bare clients)."""
    out = []
    for depth in depths:
        for client in clients:
            mine = [r for r in rows if r.client == client and r.in_flight == depth]
            if not mine:
                continue
            cpu = [r.cpu_us_per_login for r in mine]
            rate = [r.logins_per_s for r in mine]
            slapd = [r.slapd_cpu_us_per_login for r in mine]
            system = [r.cpu_sys_s / r.logins * 1e6 for r in mine]
            entry: dict[str, Any] = {
                "client": client,
                "in_flight": depth,
                "rounds": len(mine),
                "logins_per_s": _spread(rate),
                "cpu_us_per_login": _spread(cpu),
                "of_which_system_us": _spread(system),
                "slapd_cpu_us_per_login": _spread(slapd),
            }
            reference = "native-bare" if client.endswith("-bare") else "native"
            base = {r.round: r for r in rows if r.client == reference and r.in_flight == depth}
            ratios = [
                r.cpu_us_per_login / base[r.round].cpu_us_per_login
                for r in mine
                if r.round in base and client != reference
            ]
            if ratios:
                entry["reference"] = reference
                entry["cpu_ratio"] = _spread(ratios, 3)
                entry["rounds_cheaper_than_reference"] = sum(1 for x in ratios if x < 1)
            out.append(entry)
    return out


def _spread(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def print_summary(summary: Sequence[dict]) -> None:
    header = (
        f"{'client':<12} {'K':>3} {'rounds':>6} {'logins/s':>9} {'(min-max)':>13} "
        f"{'cpu us':>7} {'(min-max)':>13} {'slapd us':>8} {'ratio':>6} {'(min-max)':>13}"
    )
    print(header)
    print("-" * len(header))
    for s in summary:
        rate, cpu, slapd = s["logins_per_s"], s["cpu_us_per_login"], s["slapd_cpu_us_per_login"]
        ratio = s.get("cpu_ratio")
        ratio_text = (
            f"{ratio['median']:>6.3f} {ratio['min']:>6.3f}-{ratio['max']:<6.3f}" if ratio else ""
        )
        print(
            f"{s['client']:<12} {s['in_flight']:>3} {s['rounds']:>6} {rate['median']:>9.0f} "
            f"{rate['min']:>6.0f}-{rate['max']:<6.0f} {cpu['median']:>7.1f} "
            f"{cpu['min']:>6.1f}-{cpu['max']:<6.1f} {slapd['median']:>8.1f} {ratio_text}"
        )


# -- the run ------------------------------------------------------------------------------------


def build_clients(
    names: Sequence[str], config: LdapConfig, reactor: Any, ldap_module: Any
) -> tuple[dict[str, Checker], list[Callable[[], None]]]:
    from radmfa.directory.ldap import LdapPasswordChecker
    from radmfa.directory.ldap_native import NativeLdapPasswordChecker
    from radmfa.threads import ThreadPoolRunner

    checkers: dict[str, Checker] = {}
    cleanups: list[Callable[[], None]] = []
    for name in names:
        if name == "native":
            native = NativeLdapPasswordChecker(config, reactor)
            checkers[name] = native
            cleanups.append(native.close)
        elif name in ("libldap", "libldap-bare"):
            kind = LibldapChecker if name == "libldap" else BareLibldapChecker
            prototype = kind(ldap_module, config, reactor)
            checkers[name] = prototype
            cleanups.append(prototype.close)
        elif name == "native-bare":
            engine = NativeLdapPasswordChecker(config, reactor)
            checkers[name] = BareNativeChecker(engine, config)
            cleanups.append(engine.close)
        elif name == "ldap3":
            # As the daemon builds it: a thread pool of pool_size for the ldap3 engine.
            runner = ThreadPoolRunner(reactor, "bench-ldap3", config.pool_size)
            runner.start()
            checkers[name] = LdapPasswordChecker(config, runner, reactor)
            cleanups.append(runner.stop)
        elif name == "harness":
            checkers[name] = InstantChecker()
    return checkers, cleanups


async def run_rounds(
    reactor: Any,
    args: argparse.Namespace,
    slapd: Slapd,
    users: list[BenchUser],
    ca_file: str | None,
):
    ldap_module = _import_ldap() if _wants_libldap(args.clients) else None
    config = LdapConfig(
        servers=(slapd.url,),
        base_dn=PEOPLE_DN,
        user_filter="(uid={username})",
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        timeout=3.0,
        pool_size=args.pool_size,
        start_tls=ca_file is not None,
        ca_file=ca_file,
    )
    checkers, cleanups = build_clients(args.clients, config, reactor, ldap_module)
    cycles = {name: UserCycle(users, seed=i) for i, name in enumerate(args.clients)}
    assert slapd.pid is not None
    rows: list[Row] = []
    try:
        for name in args.clients:  # connections open, slapd's caches and our code warm
            count = _count(name, args.warmup)
            took = await measure(checkers[name], cycles[name], count, max(args.depths), slapd.pid)
            row = make_row(0, name, max(args.depths), count, took)
            print(f"  warm-up {name:<12} {row.logins_per_s:7.0f}/s {row.outcomes}", flush=True)
        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(args.clients)
            order = args.clients[shift:] + args.clients[:shift]
            for depth in args.depths:
                for name in order:
                    count = _count(name, args.logins)
                    took = await measure(checkers[name], cycles[name], count, depth, slapd.pid)
                    row = make_row(round_no, name, depth, count, took)
                    rows.append(row)
                    bad = {k: v for k, v in row.outcomes.items() if k != "OK"}
                    print(
                        f"  round {round_no} K={depth:<3} {name:<12} {row.logins_per_s:7.0f}/s "
                        f"cpu {row.cpu_us_per_login:6.1f} us/login "
                        f"slapd {row.slapd_cpu_us_per_login:6.1f} us/login"
                        + (f"  NOT OK: {bad}" if bad else ""),
                        flush=True,
                    )
    finally:
        for cleanup in cleanups:
            cleanup()
    return rows


def _count(client: str, logins: int) -> int:
    """The ldap3 engine opens a TCP connection per bind and is slow: a quarter as many."""
    return max(100, logins // 4) if client == "ldap3" else logins


def _wants_libldap(clients: Sequence[str]) -> bool:
    return any(name.startswith("libldap") for name in clients)


def _import_ldap() -> Any:
    import ldap
    import ldap.ldapobject

    return ldap


def versions() -> dict[str, Any]:
    import twisted

    found: dict[str, Any] = {"python": platform.python_version(), "twisted": twisted.__version__}
    try:
        ldap = _import_ldap()
    except ImportError:
        return found
    info = ldap.get_option(ldap.OPT_API_INFO)
    vendor = int(info["vendor_version"])
    found["python-ldap"] = ldap.__version__
    found["libldap"] = f"{vendor // 10000}.{vendor // 100 % 100}.{vendor % 100}"
    return found


def git_head() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--in-flight", default="16,64", help="comma list of K (logins in flight)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--logins", type=int, default=8000, help="per row (ldap3: a quarter as many)"
    )
    parser.add_argument("--warmup", type=int, default=2000, help="unmeasured logins per client")
    parser.add_argument(
        "--clients",
        help=f"comma list of {', '.join(CLIENTS)} (default: all; with --tls all but ldap3, "
        "which makes a TLS handshake per bind)",
    )
    parser.add_argument(
        "--pool-size", type=int, default=16, help="bind connections (ldap3: threads)"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="StartTLS on every connection (certificates made by the run, chain and host name "
        "checked by each client)",
    )
    parser.add_argument("--quick", action="store_true", help="200 users, 500 logins, 1 round")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "results" / "ldap-clients.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.logins, args.warmup, args.rounds = 200, 500, 200, 1
    if args.clients is None:
        args.clients = ",".join(c for c in CLIENTS if not (args.tls and c == "ldap3"))
    args.clients = [c for c in args.clients.split(",") if c]
    unknown = sorted(set(args.clients) - set(CLIENTS))
    if unknown:
        parser.error(f"unknown client(s) {', '.join(unknown)}; choose from {', '.join(CLIENTS)}")
    args.depths = [int(k) for k in args.in_flight.split(",")]
    if _wants_libldap(args.clients):
        try:
            _import_ldap()
        except ImportError:
            print(_MISSING.format(python=sys.executable), file=sys.stderr)
            return 2

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="radmfa-ldap-clients-") as tmp_name:
        tmp = Path(tmp_name)
        users = make_bench_users(args.users)
        tls: dict[str, Any] = {}
        ca_file: str | None = None
        if args.tls:
            ca = make_ca(tmp / "ca")
            cert = make_server_cert(tmp / "cert", ca, ["127.0.0.1"])
            tls = {"tls_cert": cert.cert_path, "tls_key": cert.key_path}
            ca_file = str(ca.cert_path)
        slapd = Slapd(tmp / "slapd", debug="0", **tls)
        started = time.perf_counter()
        slapd.add_ldif(users_ldif(users))
        slapd.start()
        print(f"slapd: {args.users} users loaded in {time.perf_counter() - started:.1f}s")
        holder: dict[str, list[Row]] = {}

        async def body(reactor: Any) -> None:
            holder["rows"] = await run_rounds(reactor, args, slapd, users, ca_file)

        def run(reactor: Any) -> Deferred[None]:
            return Deferred.fromCoroutine(body(reactor))

        try:
            react_once(run)
        finally:
            slapd.kill()
    rows = holder.get("rows", [])
    summary = summarize(rows, args.clients, args.depths)
    print()
    print_summary(summary)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_head(),
        "users": args.users,
        "tls": "StartTLS" if args.tls else "none",
        "in_flight": args.depths,
        "rounds": args.rounds,
        "logins_per_row": args.logins,
        "pool_size": args.pool_size,
        "search_connections": 2,
        "search_depth": 64,
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "versions": versions(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"meta": meta, "summary": summary, "rows": [asdict(r) for r in rows]}, indent=1)
        + "\n"
    )
    print(f"\nJSON written to {args.json}")
    return 0


def react_once(run: Callable[[Any], Deferred[None]]) -> None:
    """``task.react`` without its ``sys.exit``: the run goes on to write its results."""
    try:
        react(run)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


if __name__ == "__main__":
    raise SystemExit(main())
