"""Timeouts that rarely fire, swept by one reactor timer instead of one ``callLater`` each.

Every request (and every LDAP operation) has a deadline, and nearly all of them end long
before it. A Twisted ``DelayedCall`` per deadline costs a heap insertion, a cancellation and
the reactor's bookkeeping of both on every pass of the event loop; here a deadline is an
entry appended to a queue, cleared when its work ends, and one timer armed for the oldest
live entry fires the ones that are due.

Deadlines are kept in the order they were set: with one timeout length (the usual case)
that is the order they fall due. When the length changes (a config reload), a deadline set
after the change waits at most until the ones set before it are due.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Deadline", "Deadlines"]


class Deadline:
    """One timeout: ``fire`` is called once at ``at`` unless cancelled first."""

    __slots__ = ("at", "fire")

    def __init__(self, at: float, fire: Callable[[], object]) -> None:
        self.at = at
        self.fire: Callable[[], object] | None = fire

    @property
    def active(self) -> bool:
        return self.fire is not None


class Deadlines:
    """A queue of :class:`Deadline` on one clock, swept by one timer."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._queue: collections.deque[Deadline] = collections.deque()
        self._timer: IDelayedCall | None = None

    def __len__(self) -> int:
        """Entries still queued (cancelled ones are dropped from the front only)."""
        return len(self._queue)

    def add(self, delay: float, fire: Callable[[], object]) -> Deadline:
        """Call ``fire`` in ``delay`` seconds unless :meth:`cancel` comes first."""
        deadline = Deadline(self._clock.seconds() + delay, fire)
        self._queue.append(deadline)
        if self._timer is None:
            self._timer = self._clock.callLater(delay, self._sweep)
        return deadline

    def cancel(self, deadline: Deadline) -> None:
        """The work ended in time. Its entry (and the callback's references) go at once
        when it is the oldest, as it mostly is; else its callback is dropped now and the
        entry when the ones before it go."""
        deadline.fire = None
        queue = self._queue
        while queue and queue[0].fire is None:
            queue.popleft()

    def stop(self) -> None:
        """Forget every deadline (nothing fires) and the timer."""
        for deadline in self._queue:
            deadline.fire = None
        self._queue.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _sweep(self) -> None:
        self._timer = None
        queue = self._queue
        now = self._clock.seconds()
        while queue:
            head = queue[0]
            if head.fire is not None and head.at > now:
                break
            queue.popleft()
            fire, head.fire = head.fire, None
            if fire is not None:
                fire()
        if self._timer is not None:  # armed by a deadline a callback added: re-armed below
            self._timer.cancel()
            self._timer = None
        if queue:
            self._timer = self._clock.callLater(max(0.0, queue[0].at - now), self._sweep)
