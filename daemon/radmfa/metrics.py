"""Prometheus metrics: what radmfa decided, how fast, and how its directory and store fare.

Nothing here changes a decision. The pieces attach from the outside:

* :class:`DecisionMetrics` is a :class:`~radmfa.auth.decisionlog.DecisionObserver` on the
  pipeline (requests by client and outcome, reject reasons, factor use, latency);
* :class:`MeasuredDirectory` wraps the :class:`~radmfa.directory.base.PasswordChecker`
  (latency, outcomes and errors per LDAP server), so the engines stay unaware of it;
* :class:`CountingRunner` wraps the store's :class:`~radmfa.threads.BlockingRunner` (errors);
* :class:`MetricsService` mirrors the protocol's :class:`~radmfa.radius.server.RadiusStats`
  (duplicates, malformed packets...), refreshes the locked-user gauge off the reactor and
  serves ``/metrics`` with twisted.web on the reactor.

With ``radius.workers > 1`` every worker writes its values to files in a private directory the
supervisor creates (prometheus_client's multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR``
in the workers' environment only) and the supervisor serves their sum.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from radmfa.auth.model import AccessRequest, Decision, Outcome
from radmfa.clocktrust import DriftWatch, kernel_clock_synchronised
from radmfa.config import ListenAddress
from radmfa.directory.base import (
    DirectoryOutcome,
    DirectoryResult,
    PasswordChecker,
    UserEntry,
)
from radmfa.radius.server import RadiusStats
from radmfa.store.facade import AsyncStore
from radmfa.threads import BlockingRunner

log = Logger(namespace="radmfa.metrics")

T = TypeVar("T")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often the locked-user gauge is recounted from the store (off the reactor).
LOCKED_USERS_INTERVAL = 30.0
#: How often a worker copies its packet counters into the shared files.
STATS_SYNC_INTERVAL = 2.0

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every radmfa metric, in one registry (a private one: tests may build several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "radmfa_requests",
            "Access-Requests decided by the pipeline, by client and outcome",
            ["client", "outcome"],
            registry=r,
        )
        self.rejects = Counter(
            "radmfa_rejects", "Access-Rejects by internal reason", ["reason"], registry=r
        )
        self.factor_uses = Counter(
            "radmfa_factor_uses",
            "Accepted logins by second factor (none: password only) and how it was presented",
            ["factor", "method"],
            registry=r,
        )
        self.request_duration = Histogram(
            "radmfa_request_duration_seconds",
            "Time the pipeline took to decide (without the reject delay)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.directory_duration = Histogram(
            "radmfa_directory_request_duration_seconds",
            "Password checks against the directory, by LDAP server (or local)",
            ["server"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.directory_checks = Counter(
            "radmfa_directory_checks",
            "Password checks by server and outcome",
            ["server", "outcome"],
            registry=r,
        )
        self.directory_errors = Counter(
            "radmfa_directory_errors",
            "Password checks no server answered (the request is rejected, fail closed)",
            ["server"],
            registry=r,
        )
        self.packets = Counter(
            "radmfa_radius_packets",
            "Datagrams by what became of them (duplicates, malformed, unknown_client, ...)",
            ["kind"],
            registry=r,
        )
        self.locked_users = Gauge(
            "radmfa_locked_users",
            "Users locked out right now (recounted every 30 s)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_errors = Counter(
            "radmfa_store_errors", "Store operations that failed", ["operation"], registry=r
        )
        self.clock_synchronised = Gauge(
            "radmfa_clock_synchronised",
            "1 when the kernel says the system clock is synchronised (adjtimex), else 0: "
            "TOTP codes are checked against it",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.totp_drift = Gauge(
            "radmfa_totp_drift_steps",
            "Mean step offset of recent users' accepted authenticator codes from the server's "
            "clock (near 0: phones and server agree; near +1 or -1: the server drifts)",
            registry=r,
            multiprocess_mode="liveall",
        )
        for kind in (f.name for f in fields(RadiusStats)):
            self.packets.labels(kind=kind)  # every series from 0, so rate() works at once


class DecisionMetrics:
    """The pipeline's decisions as counters and a latency histogram (a DecisionObserver)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def record(self, request: AccessRequest, decision: Decision, elapsed: float) -> None:
        m = self.metrics
        m.requests.labels(client=request.client_name, outcome=decision.outcome.value).inc()
        m.request_duration.observe(max(elapsed, 0.0))
        if decision.outcome is Outcome.REJECT:
            m.rejects.labels(reason=decision.reason.value).inc()
        elif decision.outcome is Outcome.ACCEPT:
            m.factor_uses.labels(
                factor=decision.factor or "none", method=decision.method or "none"
            ).inc()


class MeasuredDirectory:
    """A PasswordChecker that times and counts every check of the one it wraps."""

    def __init__(self, inner: PasswordChecker, metrics: Metrics, clock: IReactorTime) -> None:
        self.inner = inner
        self.metrics = metrics
        self.clock = clock

    def check_password(
        self, username: str, password: str, *, entry: UserEntry | None = None
    ) -> Deferred[DirectoryResult]:
        started = self.clock.seconds()

        def measured(result: DirectoryResult) -> DirectoryResult:
            server = result.server or "unknown"
            m = self.metrics
            m.directory_duration.labels(server=server).observe(
                max(self.clock.seconds() - started, 0.0)
            )
            m.directory_checks.labels(server=server, outcome=result.outcome.value).inc()
            if result.outcome is DirectoryOutcome.UNAVAILABLE:
                m.directory_errors.labels(server=server).inc()
            return result

        if entry is not None:
            checking = self.inner.check_password(username, password, entry=entry)
        else:
            checking = self.inner.check_password(username, password)
        return checking.addCallback(measured)

    def close(self) -> None:
        self.inner.close()


class CountingRunner:
    """A BlockingRunner that counts the calls that fail (store errors), then passes them on."""

    def __init__(self, inner: BlockingRunner, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        operation = getattr(fn, "__name__", "call").strip("_") or "call"

        def failed(failure: Failure) -> Failure:
            self.metrics.store_errors.labels(operation=operation).inc()
            return failure

        return self.inner.run(fn, *args, **kwargs).addErrback(failed)


class MetricsService:
    """Keeps the gauges and mirrored counters fresh and, unless a supervisor does, serves them."""

    def __init__(
        self,
        metrics: Metrics,
        clock: IReactorTime,
        *,
        stats: RadiusStats,
        store: AsyncStore | None,
        refresh_locked: bool = True,
        sync_interval: float | None = None,
        drift: DriftWatch | None = None,
        clock_synchronised: Callable[[], bool | None] = kernel_clock_synchronised,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.stats = stats
        self.store = store
        self._seen = RadiusStats()
        self._locked = LoopingCall(self.refresh_locked_users)
        self._locked.clock = clock
        self._refresh_locked = refresh_locked
        self._sync = LoopingCall(self.sync_stats)
        self._sync.clock = clock
        self._sync_interval = sync_interval
        self._drift = drift
        self._clock_synchronised = clock_synchronised
        self.port: Any = None

    def start(self) -> None:
        if self._refresh_locked and self.store is not None:
            self._locked.start(LOCKED_USERS_INTERVAL, now=True)
        if self._sync_interval is not None:
            self._sync.start(self._sync_interval, now=True)

    def listen(self, reactor: Any, address: ListenAddress) -> None:
        self.port = listen_metrics(
            reactor, address, MetricsResource(self.metrics.registry, before=self.sync_stats)
        )

    def stop(self) -> None:
        for loop in (self._locked, self._sync):
            if loop.running:
                loop.stop()
        self.sync_stats()  # a worker's last counts reach the shared files before it exits
        if self.port is not None:
            self.port.stopListening()
            self.port = None

    def sync_stats(self) -> None:
        """Add what the protocol counted since the last call to the packet counters; the
        clock's state and the drift of accepted codes as they are now."""
        synchronised = self._clock_synchronised()
        if synchronised is not None:
            self.metrics.clock_synchronised.set(1 if synchronised else 0)
        if self._drift is not None:
            self.metrics.totp_drift.set(self._drift.mean_offset)
        for f in fields(RadiusStats):
            now, before = getattr(self.stats, f.name), getattr(self._seen, f.name)
            if now > before:
                self.metrics.packets.labels(kind=f.name).inc(now - before)
                setattr(self._seen, f.name, now)

    def refresh_locked_users(self) -> Deferred[None] | None:
        if self.store is None:
            return None
        counted = self.store.count_locked(self.clock.seconds())  # one query
        d = counted.addCallback(self.metrics.locked_users.set)
        d.addErrback(
            lambda f: log.warn("cannot count locked users: {err}", err=f.getErrorMessage())
        )
        return d


class MetricsResource(Resource):
    """``GET /metrics``: the registry in the format the scraper asked for."""

    isLeaf = True

    def __init__(self, registry: Any, before: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.before = before

    def render_GET(self, request: Request) -> bytes:
        if self.before is not None:
            self.before()
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        request.setHeader("content-type", content_type)
        return encoder(self.registry)


class _Index(Resource):
    def render_GET(self, request: Request) -> bytes:
        request.setHeader("content-type", "text/plain; charset=utf-8")
        return b"radmfa: metrics are at /metrics\n"


class _QuietSite(Site):
    """No access-log line per scrape: Prometheus asks every few seconds."""

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def listen_metrics(reactor: Any, address: ListenAddress, resource: Resource) -> Any:
    root = _Index()
    root.putChild(b"metrics", resource)
    return reactor.listenTCP(address.port, _QuietSite(root), interface=address.host)


class SharedMetrics:
    """The supervisor's side of multiprocess mode: a private directory the workers write
    into (its path goes into their environment only), and the registry that sums them."""

    def __init__(self) -> None:
        base = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None
        self.path = tempfile.mkdtemp(prefix="radmfa-metrics-", dir=base)
        #: What the workers' environment needs to write into this directory.
        self.worker_env = {MULTIPROC_ENV: self.path}
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=self.path)
        self.worker_exits = Counter(
            "radmfa_worker_exits",
            "Worker processes that ended (each is started again unless radmfa is stopping)",
            registry=self.registry,
        )

    def worker_ended(self, pid: int | None) -> None:
        self.worker_exits.inc()
        if pid is not None:
            mark_process_dead(pid, self.path)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
