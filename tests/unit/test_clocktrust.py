"""A server clock that cannot be trusted with TOTP: the kernel's word, and accepted codes that
lean to one side of the server's clock for most users (not one user's drifting phone)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from twisted.internet.task import Clock

import radmfa.cli.serve as serve
from radmfa.cli.main import main
from radmfa.clocktrust import CLOCK_UNSYNCHRONISED, DriftWatch, kernel_clock_synchronised
from radmfa.metrics import Metrics, MetricsService
from radmfa.radius.server import RadiusStats
from tests.unit.test_config import BASE, write


def test_most_users_a_step_ahead_means_the_server_is_slow() -> None:
    watch = DriftWatch(min_users=10, share=0.75)
    for i in range(9):
        watch.record(f"u{i}", 1)
    assert watch.leaning == 0  # too few users to judge
    watch.record("u9", 1)
    assert watch.leaning == 1 and watch.mean_offset == 1.0
    for i in range(10, 14):
        watch.record(f"u{i}", 0)  # 10 of 14 still lean: 71% < 75%
    assert watch.leaning == 0


def test_one_drifting_phone_is_not_a_drifting_server() -> None:
    watch = DriftWatch(min_users=5)
    for _ in range(50):
        watch.record("alice", -1)  # the same user again: counted once
    for i in range(10):
        watch.record(f"u{i}", 0)
    assert watch.users == 11 and watch.leaning == 0
    assert watch.mean_offset == pytest.approx(-1 / 11)


def test_the_window_forgets_the_oldest_users() -> None:
    watch = DriftWatch(window=10, min_users=10, share=0.9)
    for i in range(10):
        watch.record(f"old{i}", -1)
    assert watch.leaning == -1
    for i in range(10):
        watch.record(f"new{i}", 0)
    assert watch.users == 10 and watch.leaning == 0 and watch.mean_offset == 0.0


def test_the_kernel_is_asked_on_linux() -> None:
    answer = kernel_clock_synchronised()
    if sys.platform.startswith("linux"):
        assert answer in (True, False)
    else:
        assert answer is None


@pytest.mark.parametrize(("synchronised", "warned"), [(False, True), (True, False), (None, False)])
def test_check_config_warns_about_an_unsynchronised_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch, synchronised, warned
) -> None:
    monkeypatch.setattr(serve, "kernel_clock_synchronised", lambda: synchronised)
    path = write(tmp_path, BASE)
    assert main(["-c", str(path), "check-config"]) == 0
    out = capsys.readouterr()
    assert "configuration OK" in out.out
    assert (CLOCK_UNSYNCHRONISED in out.err) is warned


def test_metrics_show_the_clock_and_the_drift() -> None:
    watch = DriftWatch(min_users=1)
    watch.record("alice", 1)
    watch.record("bob", 0)
    m = Metrics()
    service = MetricsService(
        m, Clock(), stats=RadiusStats(), store=None, drift=watch, clock_synchronised=lambda: False
    )
    service.sync_stats()
    assert m.registry.get_sample_value("radmfa_clock_synchronised") == 0
    assert m.registry.get_sample_value("radmfa_totp_drift_steps") == 0.5
