"""Metrics with a fake clock, the memory store and the fake directory: values, not wiring."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.directory.base import DirectoryOutcome, DirectoryResult
from radmfa.metrics import (
    CountingRunner,
    DecisionMetrics,
    MeasuredDirectory,
    Metrics,
    MetricsResource,
    MetricsService,
)
from radmfa.radius.server import RadiusStats
from radmfa.store.base import StoreError
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import FakeDirectory, InlineRunner


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def request(client: str = "vpn") -> AccessRequest:
    return AccessRequest(
        user_name=b"alice",
        password=b"pw",
        method=AuthMethod.PAP,
        state=None,
        client_name=client,
        client_address="192.0.2.1",
    )


def test_decisions_count_by_client_outcome_reason_and_factor():
    m = Metrics()
    observer = DecisionMetrics(m)
    observer.record(
        request(), Decision(Outcome.ACCEPT, Reason.OK, method="append", factor="totp"), 0.02
    )
    observer.record(request(), Decision(Outcome.ACCEPT, Reason.PASSWORD_ONLY), 0.01)
    observer.record(request("wifi"), Decision(Outcome.REJECT, Reason.BAD_OTP), 0.3)
    observer.record(request("wifi"), Decision(Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED), 0.05)
    assert sample(m, "radmfa_requests_total", client="vpn", outcome="accept") == 2
    assert sample(m, "radmfa_requests_total", client="wifi", outcome="reject") == 1
    assert sample(m, "radmfa_requests_total", client="wifi", outcome="challenge") == 1
    assert sample(m, "radmfa_rejects_total", reason="bad_otp") == 1
    assert sample(m, "radmfa_factor_uses_total", factor="totp", method="append") == 1
    assert sample(m, "radmfa_factor_uses_total", factor="none", method="none") == 1
    assert sample(m, "radmfa_request_duration_seconds_count") == 4
    assert sample(m, "radmfa_request_duration_seconds_bucket", le="0.025") == 2
    assert abs(sample(m, "radmfa_request_duration_seconds_sum") - 0.38) < 1e-9


class ServerDirectory(FakeDirectory):
    """The fake directory, answering slowly (on the test clock) as a named server."""

    def __init__(self, clock: Clock, delay: float, **kw) -> None:
        super().__init__(**kw)
        self.clock, self.delay = clock, delay

    def check_password(self, username: str, password: str):
        result = self._result(username, password)
        result = DirectoryResult(result.outcome, server="ldaps://ldap1", detail=result.detail)
        d: defer.Deferred[DirectoryResult] = defer.Deferred()
        self.clock.callLater(self.delay, d.callback, result)
        return d


def test_directory_latency_outcomes_and_errors_per_server():
    clock, m = Clock(), Metrics()
    inner = ServerDirectory(clock, 0.2, users={"alice": "right"})
    directory = MeasuredDirectory(inner, m, clock)
    results = []
    directory.check_password("alice", "right").addCallback(results.append)
    directory.check_password("alice", "wrong").addCallback(results.append)
    clock.advance(0.2)
    inner.unavailable = True
    directory.check_password("alice", "right").addCallback(results.append)
    clock.advance(0.2)
    assert [r.outcome for r in results] == [
        DirectoryOutcome.OK,
        DirectoryOutcome.INVALID_CREDENTIALS,
        DirectoryOutcome.UNAVAILABLE,
    ]
    server = "ldaps://ldap1"
    assert sample(m, "radmfa_directory_checks_total", server=server, outcome="ok") == 1
    assert (
        sample(m, "radmfa_directory_checks_total", server=server, outcome="invalid_credentials")
        == 1
    )
    assert sample(m, "radmfa_directory_errors_total", server=server) == 1
    assert sample(m, "radmfa_directory_request_duration_seconds_count", server=server) == 3
    assert (
        sample(m, "radmfa_directory_request_duration_seconds_bucket", server=server, le="0.1") == 0
    )
    assert (
        sample(m, "radmfa_directory_request_duration_seconds_bucket", server=server, le="0.25") == 3
    )


def test_measured_directory_passes_close_on():
    closed = []
    inner = FakeDirectory()
    inner.close = lambda: closed.append(True)  # type: ignore[method-assign]
    MeasuredDirectory(inner, Metrics(), Clock()).close()
    assert closed == [True]


def test_store_errors_are_counted_and_passed_on():
    m = Metrics()
    runner = CountingRunner(InlineRunner(), m)

    def advance_step(token_id: str, step: int) -> bool:
        raise StoreError("database is locked")

    failures = []
    runner.run(advance_step, "t", 1).addErrback(failures.append)
    runner.run(lambda: 42).addCallback(failures.append)
    assert isinstance(failures[0].value, StoreError) and failures[1] == 42
    assert sample(m, "radmfa_store_errors_total", operation="advance_step") == 1


def service(store=None, stats=None, runner=None) -> tuple[MetricsService, Metrics, Clock]:
    clock, m = Clock(), Metrics()
    s = MetricsService(
        m,
        clock,
        stats=stats if stats is not None else RadiusStats(),
        store=None
        if store is None
        else AsyncStore(store, runner if runner is not None else InlineRunner()),
    )
    return s, m, clock


def test_packet_counters_mirror_the_protocol_stats():
    stats = RadiusStats()
    s, m, _ = service(stats=stats)
    assert sample(m, "radmfa_radius_packets_total", kind="duplicates") == 0  # present from 0
    stats.received, stats.duplicates, stats.malformed = 5, 2, 1
    s.sync_stats()
    stats.received = 7
    s.sync_stats()
    s.sync_stats()
    assert sample(m, "radmfa_radius_packets_total", kind="received") == 7
    assert sample(m, "radmfa_radius_packets_total", kind="duplicates") == 2
    assert sample(m, "radmfa_radius_packets_total", kind="malformed") == 1


def test_locked_users_gauge_is_refreshed_off_the_reactor_every_30s():
    store = MemoryStore()
    runner = InlineRunner()
    s, m, clock = service(store=store, runner=runner)
    s.start()
    assert sample(m, "radmfa_locked_users") == 0 and runner.calls == 1
    store.record_failure("bob", clock.seconds(), 1, 300)
    store.record_failure("carol", clock.seconds(), 5, 300)  # one failure: not locked
    clock.advance(29)
    assert sample(m, "radmfa_locked_users") == 0
    clock.advance(1)
    assert sample(m, "radmfa_locked_users") == 1 and runner.calls == 2
    clock.advance(300)  # bob's lock expired
    assert sample(m, "radmfa_locked_users") == 0
    s.stop()


class CallLog:
    """A store that records the name of every method called on it, then calls it."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        method = getattr(self.inner, name)

        def called(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)

        called.__name__ = name
        return called


def test_locked_users_refresh_is_one_store_call_whatever_the_number_of_users():
    inner = MemoryStore()
    for i in range(50):
        inner.record_failure(f"user{i}", 0.0, 5, 300)
    inner.record_failure("locked", 0.0, 1, 300)
    store = CallLog(inner)
    s, m, _ = service(store=store)
    s.refresh_locked_users()
    assert store.calls == ["count_locked"]
    assert sample(m, "radmfa_locked_users") == 1


def test_metrics_resource_serves_the_text_format():
    stats = RadiusStats()
    s, m, _ = service(stats=stats)
    stats.malformed = 3
    resource = MetricsResource(m.registry, before=s.sync_stats)
    req = DummyRequest([b"metrics"])
    body = resource.render_GET(req)
    assert req.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    malformed = [
        x.value
        for x in families["radmfa_radius_packets"].samples
        if x.labels.get("kind") == "malformed"
    ]
    assert malformed == [3.0]
