"""Wiring: builds the object graph from a Config and owns its life cycle on a reactor.

Everything that a reload may change (clients, secrets, directory settings, OTP and lockout
policy) lives in one immutable :class:`Runtime`; a reload builds a new one and swaps a single
reference, so a request runs start to finish under the settings it started with.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from radmfa import audit
from radmfa.audit import AuditRecorder
from radmfa.auth.decisionlog import DecisionLog, DecisionObserver
from radmfa.auth.groupcheck import check_policy_groups
from radmfa.auth.ledger import AttemptEnds, attempt_lease
from radmfa.auth.model import AccessRequest, Decision
from radmfa.auth.pipeline import Authenticator, PipelineSettings
from radmfa.auth.policy import Policy
from radmfa.clocktrust import CLOCK_UNSYNCHRONISED, DriftWatch, kernel_clock_synchronised
from radmfa.config import Config, ConfigError, ListenAddress, TlsListener, load_config
from radmfa.directory.base import GroupFinder, PasswordChecker, finds_groups, resolves_groups
from radmfa.directory.ldap import LdapPasswordChecker
from radmfa.directory.ldap_libldap import LibldapPasswordChecker
from radmfa.directory.local import LocalUsersChecker, UsersFileError
from radmfa.factors.plugins import FactorLoadError, build_factors, directory_attributes
from radmfa.metrics import (
    STATS_SYNC_INTERVAL,
    CountingRunner,
    DecisionMetrics,
    MeasuredDirectory,
    Metrics,
    MetricsService,
)
from radmfa.portal.service import PortalService
from radmfa.radius.clients import ClientTable
from radmfa.radius.server import RadiusServer, RadiusStats
from radmfa.radius.tls import RadsecFactory, radsec_factory
from radmfa.radius.tlscontext import (
    ReloadableServerTls,
    ServerContext,
    TlsSetupError,
    build_context,
)
from radmfa.radius.udp import RadiusDatagramProtocol
from radmfa.store import describe as describe_store
from radmfa.store import open_store
from radmfa.store.base import Store, StoreBusy
from radmfa.store.facade import AsyncStore
from radmfa.store.sqlite import SqliteStore
from radmfa.threads import (
    BlockingRunner,
    InlineFirstRunner,
    PooledRunner,
    SerialThreadRunner,
    ThreadPoolRunner,
)

log = Logger(namespace="radmfa.service")

PURGE_INTERVAL = 60.0
#: Seconds between two WAL checkpoints by the store thread when logins write on the reactor.
CHECKPOINT_INTERVAL = 1.0
#: Requests in flight in this process above which a login's store calls go to the store
#: thread rather than run on the reactor: at moderate load inline is cheaper (no thread
#: wake-ups); under saturation the thread overlaps SQLite (which releases the GIL) with the
#: reactor's Python (docs/benchmarks/2026-12-06-login-path.md: +11% logins/s at 64
#: outstanding, no change at 1,000/s).
INLINE_MAX_IN_FLIGHT = 8
#: Seconds between two looks at whether a replaced directory's requests are done.
RETIRE_CHECK_INTERVAL = 0.5


class SetupError(Exception):
    """The daemon cannot start with this configuration (bad users file, unusable store...)."""


@dataclass(frozen=True)
class Runtime:
    config: Config
    clients: ClientTable
    directory: PasswordChecker
    authenticator: Authenticator
    #: The directory, when policy rules name groups and it can search for them.
    group_finder: GroupFinder | None = None
    #: What the directory was built from (None: always built anew); see directory_inputs.
    directory_inputs: object = None
    #: The directory as built (``directory`` may be it measured), for the next reload.
    built_directory: PasswordChecker | None = None


class InFlight(Protocol):
    """Something that counts the requests it is deciding (an Authenticator)."""

    @property
    def in_flight(self) -> int: ...


def close_when_done(
    clock: IReactorTime,
    requests: InFlight,
    close: Callable[[], object],
    *,
    earliest: float,
    latest: float,
) -> None:
    """Call ``close`` once ``requests`` has none in flight, but not before ``earliest``
    seconds (users the counter does not see, a portal sign-in, get that long, as they always
    did) and at the latest after ``latest`` seconds, whatever is left; looking every
    :data:`RETIRE_CHECK_INTERVAL` in between."""
    give_up = clock.seconds() + max(earliest, latest)

    def check() -> None:
        if requests.in_flight and clock.seconds() < give_up:
            clock.callLater(RETIRE_CHECK_INTERVAL, check)
        else:
            close()

    clock.callLater(earliest, check)


def _file_digest(path: str | None) -> bytes | None:
    """What a file holds, as a SHA-256 digest (through any symlink). Not its mtime and size:
    ``cp -p``, ``rsync -a``, an archive or an image with normalised times can put a renewed
    CA of the same size in place with the old file's mtime. A CA file is small and read once
    a reload."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").digest()
    except OSError:
        return None


def _wants_groups(config: Config) -> bool:
    """Group lookups only when a policy rule matches on groups, or the portal's help-desk
    pages are for members of some."""
    helpdesk = config.portal is not None and bool(config.portal.helpdesk_groups)
    return config.policy.needs_groups or helpdesk


def directory_inputs(config: Config) -> object:
    """Everything an LDAP directory is built from, the CA file's contents included (by their
    digest): a reload that leaves it equal keeps the running directory, with its open
    connections and cached entries, rather than starting cold while logins keep coming. None
    (never equal) for a users file, which a reload is there to read again."""
    if config.ldap is None:
        return None
    return (
        config.ldap,
        _wants_groups(config),
        directory_attributes(config),
        _file_digest(config.ldap.ca_file),
    )


def build_directory(config: Config, runner: BlockingRunner, clock: Any) -> PasswordChecker:
    if config.ldap is not None:
        groups = config.ldap.groups if _wants_groups(config) else None
        try:
            wanted = directory_attributes(config)  # addresses for email / SMS codes
            if config.ldap.engine == "libldap":  # connections are opened on the runner
                return LibldapPasswordChecker(
                    config.ldap, clock, runner, attributes=wanted, groups=groups
                )
            return LdapPasswordChecker(config.ldap, runner, clock, attributes=wanted, groups=groups)
        except ValueError as e:
            raise SetupError(f"ldap: {e}") from None
    if config.local_users is not None:
        try:
            return LocalUsersChecker(
                config.local_users.path, runner, config.local_users.groups_file
            )
        except UsersFileError as e:
            raise SetupError(str(e)) from None
    raise SetupError("no password backend configured (ldap or local_users)")


def build_runtime(
    config: Config,
    *,
    store: AsyncStore,
    directory_runner: BlockingRunner,
    clock: Any,
    metrics: Metrics | None = None,
    recorder: AuditRecorder | None = None,
    drift: DriftWatch | None = None,
    attempt_ends: AttemptEnds | None = None,
    running: Runtime | None = None,
) -> Runtime:
    """The parts that answer requests under ``config``; ``running`` (at a reload) lends its
    directory when ``config`` builds the same one."""
    inputs = directory_inputs(config)
    directory: PasswordChecker
    if (
        running is not None
        and running.built_directory is not None
        and inputs is not None
        and running.directory_inputs == inputs
    ):
        built, directory = running.built_directory, running.directory  # measured, if it is
    else:
        built = build_directory(config, directory_runner, clock)
        # Measured from outside: the engines and the pipeline stay as they are.
        directory = built if metrics is None else MeasuredDirectory(built, metrics, clock)
    groups = built if resolves_groups(built) else None
    finder = built if config.policy.needs_groups and finds_groups(built) else None
    try:
        factors = build_factors(config, clock)
    except FactorLoadError as e:
        raise SetupError(str(e)) from None
    observers: list[DecisionObserver] = [DecisionLog()]
    if metrics is not None:
        observers.append(DecisionMetrics(metrics))
    if recorder is not None:
        observers.append(recorder)
    try:
        authenticator = Authenticator(
            settings=PipelineSettings(
                otp=config.otp,
                lockout=config.lockout,
                policy=Policy(config.policy, config.trusted_devices.ttl),
                rate_limits=config.rate_limits,
                usernames=config.usernames,
                attempt_lease=attempt_lease(
                    config.radius.request_timeout,
                    config.ldap.timeout if config.ldap is not None else 0.0,
                    len(config.ldap.servers) if config.ldap is not None else 1,
                ),
                client_modes={c.name: c.mode for c in config.clients if c.mode is not None},
            ),
            directory=directory,
            store=store,
            factors=factors,
            clock=clock,
            observers=observers,
            groups=groups,
            audit=recorder,
            drift=drift,
            attempt_ends=attempt_ends,
        )
    except ValueError as e:
        raise SetupError(str(e)) from None
    return Runtime(
        config,
        ClientTable(config.clients),
        directory,
        authenticator,
        group_finder=finder,
        directory_inputs=inputs,
        built_directory=built,
    )


class Daemon:
    """One radmfa process: sockets, thread pools, store, and the current Runtime."""

    def __init__(self, config: Config, reactor: Any, *, worker: int | None = None) -> None:
        self.reactor = reactor
        self.config = config
        #: Set when this process is one of several workers sharing the ports (SO_REUSEPORT).
        self.worker = worker
        self.name = "radmfa" if worker is None else f"radmfa worker {worker}"
        self.stats = RadiusStats()
        self.store: Store | None = None
        #: Attempt ends on their way to the store, one batch across reloads (set with the store).
        self.attempt_ends: AttemptEnds | None = None
        #: SQLite serialises writers anyway: one thread (and one connection) avoids lock
        #: contention. PostgreSQL serves calls concurrently: one thread per pooled connection.
        self.db: SerialThreadRunner | PooledRunner = (
            PooledRunner(reactor, "radmfa-db", config.store.pool_size)
            if config.store.engine == "postgresql"
            else SerialThreadRunner(reactor, "radmfa-db")
        )
        #: The audit trail's own thread (and so its own SQLite connection): a batch of rows
        #: never makes a login's store call queue behind it.
        self.audit_db = SerialThreadRunner(reactor, "radmfa-audit")
        pool_size = config.ldap.pool_size if config.ldap and config.ldap.engine == "ldap3" else 4
        self.directory_runner = ThreadPoolRunner(reactor, "radmfa-directory", pool_size)
        self.runtime: Runtime | None = None
        #: Every listening socket hands its requests to this one server (drain, load limits
        #: and counters cover them all).
        self.server = RadiusServer(self.current_clients, self, reactor, config.radius, self.stats)
        self.ports: dict[ListenAddress, tuple[Any, RadiusDatagramProtocol]] = {}
        #: RadSec listeners: the port, its certificates (swapped on reload) and its factory.
        self.tls_ports: dict[ListenAddress, tuple[Any, ReloadableServerTls, RadsecFactory]] = {}
        self._purge = LoopingCall(self._maintain)
        self._purge.clock = reactor
        #: SQLite: the login calls run on the reactor first (see _quick_calls).
        self.inline: InlineFirstRunner | None = None
        self._checkpoints: LoopingCall | None = None
        #: Queues decisions for the audit trail and writes them in batches (audit.enabled).
        self.recorder: AuditRecorder | None = None
        #: Prometheus metrics, when the config has a metrics section (workers write them to
        #: files the supervisor serves; a single process serves them itself).
        self.metrics = Metrics() if config.metrics is not None else None
        #: The store runner as the pipeline sees it: counting failures when metrics are on.
        self.store_calls: BlockingRunner = (
            self.db if self.metrics is None else CountingRunner(self.db, self.metrics)
        )
        #: Store work nobody waits on (purging): the store thread runs it when no login's
        #: call is queued, so it does not add to login latency.
        self.store_background: BlockingRunner = (
            self.db.background
            if self.metrics is None
            else CountingRunner(self.db.background, self.metrics)
        )
        #: Audit rows and pruning, on the audit thread.
        self.audit_calls: BlockingRunner = (
            self.audit_db if self.metrics is None else CountingRunner(self.audit_db, self.metrics)
        )
        self.metrics_service: MetricsService | None = None
        #: Accepted TOTP codes' offsets from this server's clock, across reloads.
        self.drift = DriftWatch()
        #: The self-service portal, in this process when it serves it (see radmfa.portal).
        self.portal: PortalService | None = None
        #: Callers of a second stop() while the first is running (None: never stopped).
        self._stop_waiters: list[Deferred[None]] | None = None
        self._stopped = False

    # -- the handler the server calls --------------------------------------------------------

    def handle(self, request: AccessRequest) -> Deferred[Decision]:
        assert self.runtime is not None
        return self.runtime.authenticator.handle(request)

    def current_clients(self) -> ClientTable:
        assert self.runtime is not None
        return self.runtime.clients

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, start the pools and bind every listen address (raises on failure)."""
        try:
            self.store = open_store(self.config.store)
        except Exception as e:
            where = describe_store(self.config.store)
            raise SetupError(f"cannot open the store {where}: {e}") from None
        #: The store on each lane: logins', background work's (purging, counting) and the
        #: audit trail's.
        self.logins = AsyncStore(self.store, self.store_calls, quick=self._quick_calls(self.store))
        self.attempt_ends = AttemptEnds(self.logins, self.reactor)
        self.background = AsyncStore(self.store, self.store_background)
        self.trail = AsyncStore(self.store, self.audit_calls)
        self.db.start()
        self.directory_runner.start()
        self.audit_db.start()  # pruning runs there even with recording off
        if self.config.audit.enabled:
            self.recorder = AuditRecorder(
                self.trail,
                self.reactor,
                flush_interval=self.config.audit.flush_interval,
                batch_size=self.config.audit.batch_size,
            )
            self.recorder.start()
        self.runtime = self._build(self.config)
        self._check_groups(self.runtime)
        if self.worker in (None, 0) and kernel_clock_synchronised() is False:
            log.warn("{problem}", problem=CLOCK_UNSYNCHRONISED)
        for address in self.config.listen:
            self._listen(address)
        for listener in self.config.listen_tls:
            try:
                self._listen_tls(listener)
            except TlsSetupError as e:
                raise SetupError(f"listen_tls: {e}") from None
        self._start_metrics()
        self._start_portal()
        self._purge.start(PURGE_INTERVAL, now=False)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def _quick_calls(self, store: Store) -> BlockingRunner | None:
        """On SQLite, a login's quick calls run on the reactor, on a connection that never
        waits: one that finds the file's lock taken (the store or audit thread, another
        worker, the CLI) goes to the store thread instead. That connection leaves WAL
        checkpoints (an fsync) to the store thread, every second."""
        if not isinstance(store, SqliteStore):
            return None  # PostgreSQL: every call is a network round trip
        store.forbid_waiting()
        server = self.server
        self.inline = InlineFirstRunner(
            self.db, StoreBusy, lambda: server.in_flight > INLINE_MAX_IN_FLIGHT
        )
        self._checkpoints = LoopingCall(self._checkpoint, store)
        self._checkpoints.clock = self.reactor
        self._checkpoints.start(CHECKPOINT_INTERVAL, now=False)
        if self.metrics is None:
            return self.inline
        return CountingRunner(self.inline, self.metrics)

    def _checkpoint(self, store: SqliteStore) -> None:
        d = self.db.background.run(store.checkpoint)
        d.addErrback(lambda f: log.failure("checkpointing the SQLite WAL failed", f))

    def log_ready(self) -> None:
        """The line tests, scripts and admins wait for. Logged once the reactor runs (and so
        handles SIGTERM), never between binding and that moment."""
        log.info(
            "{name} ready: listening on {addrs}, {n} client(s), password backend {backend}, "
            "otp mode {mode}",
            name=self.name,
            addrs=", ".join(
                [_fmt(a) for a in self.config.listen]
                + [f"{_fmt(_tls_address(t))} (RadSec)" for t in self.config.listen_tls]
            ),
            n=len(self.config.clients),
            backend="ldap" if self.config.ldap else "local users file",
            mode=self.config.otp.mode,
        )

    def _start_metrics(self) -> None:
        if self.metrics is None or self.config.metrics is None:
            return
        service = MetricsService(
            self.metrics,
            self.reactor,
            stats=self.stats,
            # The background lane: a login's store call never waits behind the count.
            store=self.background,
            # One worker is enough to count locked users (the store is shared).
            refresh_locked=self.worker in (None, 0),
            sync_interval=None if self.worker is None else STATS_SYNC_INTERVAL,
            drift=self.drift,
        )
        if self.worker is None:  # with workers the supervisor serves the sum
            try:
                service.listen(self.reactor, self.config.metrics.listen)
            except Exception as e:
                raise SetupError(
                    f"metrics: cannot listen on {_fmt(self.config.metrics.listen)}: {e}"
                ) from None
        service.start()
        self.metrics_service = service

    def _start_portal(self) -> None:
        """Every worker serves the portal on one shared port: sessions live in the store."""
        settings = self.config.portal
        if settings is None:
            return
        portal = PortalService(
            settings,
            self._current_runtime,
            self.reactor,
            sessions=self.logins,
            shared=listen_reuseport_tcp if self.worker is not None else None,
        )
        try:
            portal.start()
        except Exception as e:
            raise SetupError(f"portal: cannot listen on {_fmt(settings.listen)}: {e}") from None
        self.portal = portal
        log.info("portal: serving {url}", url=portal.url)

    def _current_runtime(self) -> Runtime:
        assert self.runtime is not None
        return self.runtime

    def _build(self, config: Config) -> Runtime:
        assert self.store is not None
        return build_runtime(
            config,
            store=self.logins,
            directory_runner=self.directory_runner,
            clock=self.reactor,
            metrics=self.metrics,
            recorder=self.recorder,
            drift=self.drift,
            attempt_ends=self.attempt_ends,
            running=self.runtime,
        )

    def _listen(self, address: ListenAddress) -> None:
        protocol = RadiusDatagramProtocol(self.server)
        if self.worker is None:
            port = self.reactor.listenUDP(address.port, protocol, interface=address.host)
        else:
            port = listen_reuseport(self.reactor, address, protocol)
        self.ports[address] = (port, protocol)

    def _listen_tls(self, listener: TlsListener) -> None:
        creator = ReloadableServerTls(listener)
        factory = RadsecFactory(self.server, listener)
        wrapped = radsec_factory(creator, factory)
        address = _tls_address(listener)
        if self.worker is None:
            port = self.reactor.listenTCP(listener.port, wrapped, interface=listener.host)
        else:
            port = listen_reuseport_tcp(self.reactor, address, wrapped)
        self.tls_ports[address] = (port, creator, factory)

    def reload(self, path: str) -> bool:
        """Re-read the config; on any problem keep running on the old one and say why."""
        try:
            config = load_config(path)
        except ConfigError as e:
            for problem in e.problems:
                log.error(
                    "reload refused, keeping the running configuration: {problem}", problem=problem
                )
            return False
        try:
            runtime = self._build(config)
            # Certificates and keys are read again (renewed files apply to new connections).
            contexts = {_tls_address(t): build_context(t) for t in config.listen_tls}
        except Exception as e:
            log.error("reload refused, keeping the running configuration: {err}", err=str(e))
            return False
        self._warn_restart_only(config)
        old, self.runtime, self.config = self.runtime, runtime, config
        self._check_groups(runtime)
        self.server.radius_config = config.radius
        self._rebind(config)
        self._rebind_tls(config, contexts)
        for protocol in self._protocols():
            protocol.radius_config = config.radius
        if old is not None and old.directory is not runtime.directory:
            self._retire(old)
        log.info("configuration reloaded from {path}", path=path)
        return True

    def _retire(self, old: Runtime) -> None:
        """Close a replaced directory once the requests that started under it are done
        (a check may go on after its RADIUS deadline, through waits and failover): not
        before ``request_timeout + 1`` s, and at the latest after the longest a request can
        work (its attempt lease)."""
        authenticator = old.authenticator
        close_when_done(
            self.reactor,
            authenticator,
            old.directory.close,
            earliest=old.config.radius.request_timeout + 1,
            latest=authenticator.settings.attempt_lease,
        )

    def _check_groups(self, runtime: Runtime) -> None:
        """Warn about groups the policy names that the directory lacks; in the background
        (never holding up start-up or a reload), by one process of a group of workers."""
        if self.worker in (None, 0):
            check_policy_groups(runtime.config.policy, runtime.group_finder)

    def _warn_restart_only(self, config: Config) -> None:
        if config.store != self.config.store:
            log.warn("store settings changed: they take effect at the next restart")
        old_pool = self.config.ldap.pool_size if self.config.ldap else None
        new_pool = config.ldap.pool_size if config.ldap else None
        if old_pool != new_pool:
            log.warn("ldap.pool_size changed: it takes effect at the next restart")
        if config.metrics != self.config.metrics:
            log.warn("metrics settings changed: they take effect at the next restart")
        if config.portal != self.config.portal:
            log.warn("portal settings changed: they take effect at the next restart")
        old_audit, new_audit = self.config.audit, config.audit
        if (old_audit.enabled, old_audit.flush_interval, old_audit.batch_size) != (
            new_audit.enabled,
            new_audit.flush_interval,
            new_audit.batch_size,
        ):
            log.warn("audit settings changed: they take effect at the next restart")

    def _rebind(self, config: Config) -> None:
        wanted = set(config.listen)
        for address in list(self.ports):
            if address not in wanted:
                port, _ = self.ports.pop(address)
                port.stopListening()
                log.info("stopped listening on {addr}", addr=_fmt(address))
        for address in config.listen:
            if address not in self.ports:
                try:
                    self._listen(address)
                    log.info("listening on {addr}", addr=_fmt(address))
                except Exception as e:
                    log.error("cannot listen on {addr}: {err}", addr=_fmt(address), err=str(e))

    def _rebind_tls(self, config: Config, contexts: dict[ListenAddress, ServerContext]) -> None:
        wanted = {_tls_address(t): t for t in config.listen_tls}
        for address in list(self.tls_ports):
            if address not in wanted:
                port, _, factory = self.tls_ports.pop(address)
                port.stopListening()
                factory.close_all("its listen_tls entry was removed")
                log.info("stopped listening on {addr} (RadSec)", addr=_fmt(address))
        for address, listener in wanted.items():
            if address in self.tls_ports:
                _, creator, factory = self.tls_ports[address]
                trust = creator.trust
                creator.swap(listener, contexts[address])
                factory.listener = listener
                if creator.trust != trust:  # verified against a CA no longer trusted
                    factory.close_all("the listener's ca_file or tls13_only changed")
                continue
            try:
                self._listen_tls(listener)
                log.info("listening on {addr} (RadSec)", addr=_fmt(address))
            except Exception as e:
                log.error("cannot listen on {addr}: {err}", addr=_fmt(address), err=str(e))

    def _protocols(self) -> list[RadiusDatagramProtocol]:
        return [protocol for _, protocol in self.ports.values()]

    def stop(self) -> Deferred[Any]:
        """Stop taking packets, let in-flight requests finish, then release everything.

        A second call (the shutdown trigger after an explicit stop) waits for the first."""
        if self._stop_waiters is not None:
            waiter: Deferred[None] = Deferred()
            if self._stopped:
                waiter.callback(None)
            else:
                self._stop_waiters.append(waiter)
            return waiter
        self._stop_waiters = []

        def stopped(result: object) -> object:
            self._stopped = True
            for waiting in self._stop_waiters or ():
                waiting.callback(None)
            return result

        return self._stop().addBoth(stopped)

    def _stop(self) -> Deferred[Any]:
        if self._purge.running:
            self._purge.stop()
        if self._checkpoints is not None and self._checkpoints.running:
            self._checkpoints.stop()
        drains = [self.server.drain()]
        if self.runtime is not None:  # codes still being delivered (bounded by their timeouts)
            drains.append(self.runtime.authenticator.courier.drain())
        d: Deferred[Any] = DeferredList(drains) if drains else succeed(None)
        ends = self.attempt_ends
        if ends is not None:  # attempt ends still batched, before the store closes
            d.addCallback(lambda _: ends.flush())
        if self.recorder is not None:  # the last decisions, before the store closes
            recorder = self.recorder
            d.addCallback(lambda _: recorder.stop())

        def release(_: object) -> None:
            if self.metrics_service is not None:
                self.metrics_service.stop()
            if self.portal is not None:
                self.portal.stop()
            for port, _protocol in self.ports.values():
                port.stopListening()
            self.ports.clear()
            for port, _creator, _factory in self.tls_ports.values():
                port.stopListening()
            self.tls_ports.clear()
            if self.runtime is not None:
                self.runtime.directory.close()
            self.directory_runner.stop()
            self.audit_db.stop()
            self.db.stop()
            if self.store is not None:
                self.store.close()
            log.info("{name} stopped", name=self.name)

        d.addCallback(release)
        return d

    def _maintain(self) -> Deferred[Any] | None:
        """Every minute, off the event loop: expired challenges, devices and failure records;
        and (one process per store) audit rows past their retention, in small batches."""
        if self.store is None:
            return None
        now = self.reactor.seconds()
        d = self.background.purge_expired(now, now - self.config.rate_limits.longest_window)
        d.addErrback(lambda f: log.failure("purging expired challenges failed", f))
        retention = self.config.audit.retention
        if retention > 0 and self.worker in (None, 0):
            trail = self.trail
            d.addCallback(lambda _: Deferred.fromCoroutine(audit.prune(trail, now - retention)))
            d.addCallback(self._pruned)
            d.addErrback(lambda f: log.failure("pruning the audit trail failed", f))
        return d

    @staticmethod
    def _pruned(count: int) -> None:
        if count:
            log.info("audit trail: {n} row(s) past the retention period deleted", n=count)


def listen_reuseport(reactor: Any, address: ListenAddress, protocol: Any) -> Any:
    """Bind with SO_REUSEPORT so every worker gets its own socket on the same address."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port))
        sock.setblocking(False)
        return reactor.adoptDatagramPort(sock.fileno(), family, protocol)
    finally:
        sock.close()  # the reactor holds its own duplicate of the descriptor


def listen_reuseport_tcp(reactor: Any, address: ListenAddress, factory: Any) -> Any:
    """A RadSec port shared by every worker (SO_REUSEPORT): the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        sock.listen(128)
        sock.setblocking(False)
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()  # the reactor holds its own duplicate of the descriptor


def _tls_address(listener: TlsListener) -> ListenAddress:
    return ListenAddress(listener.host, listener.port)


def _fmt(address: ListenAddress) -> str:
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"
