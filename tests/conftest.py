"""Suite-wide rules: a test fails if Twisted logs an error it did not expect.

Suite-wide fixtures: ``postgres``, one throwaway PostgreSQL server for the whole session,
shared by the store contract (tests/unit) and the integration tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from tests.support.fixtures import postgres  # noqa: F401 - registered once for every directory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "logs_errors: the test provokes logged errors on purpose and checks them"
    )


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request: pytest.FixtureRequest) -> Iterator[list[dict]]:
    """Unhandled errors in Deferreds and log.failure calls would otherwise pass silently."""
    errors: list[dict] = []

    def observe(event: dict) -> None:
        level = event.get("log_level")
        if event.get("log_failure") is not None or level in (LogLevel.error, LogLevel.critical):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield errors
    finally:
        globalLogPublisher.removeObserver(observe)
    if errors and request.node.get_closest_marker("logs_errors") is None:
        from twisted.logger import formatEvent

        shown = "\n".join(formatEvent(e) for e in errors[:5])
        pytest.fail(f"{len(errors)} error(s) logged during the test:\n{shown}", pytrace=False)
