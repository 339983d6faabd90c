"""One log line when a dependency goes away and one when it is back, not one per request.

A database outage under load would otherwise write a line for every login and every audit
batch; the admin needs to know when it started, why, when it ended and what it cost.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class Outage:
    """The state of one dependency as its callers see it: up, or down since a time."""

    def __init__(self, what: str, clock: IReactorTime, log: Logger) -> None:
        self.what = what
        self.clock = clock
        self.log = log
        self.since: float | None = None
        #: Calls that failed during the current outage.
        self.failures = 0

    def failed(self, error: str) -> None:
        """A call failed: the first of an outage is logged (an error), the others counted."""
        self.failures += 1
        if self.since is not None:
            return
        self.since = self.clock.seconds()
        self.log.error(
            "{what} unavailable: {err} (logged once until it is back)", what=self.what, err=error
        )

    def ok(self) -> None:
        """A call went through: the end of an outage, if there was one, is logged."""
        if self.since is None:
            return
        self.log.warn(
            "{what} available again after {secs:.1f}s; {n} call(s) failed meanwhile",
            what=self.what,
            secs=self.clock.seconds() - self.since,
            n=self.failures,
        )
        self.since, self.failures = None, 0
