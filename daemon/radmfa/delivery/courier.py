"""Delivery in the background: the Access-Challenge never waits for a mail server.

The pipeline hands a code to :meth:`Courier.dispatch` after the challenge is stored and
answers the client at once. When a delivery fails, the failure is logged and a notice is stored
for the user, which the next prompt shows ("The email code could not be sent..."), so the user
learns it at the next step instead of waiting for a message that will never come.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.factors.base import DeliveryError, Destination, OutOfBandFactor, SendContext
from radmfa.store.facade import AsyncStore

log = Logger(namespace="radmfa.delivery")

NOTICE = "Your {label} code could not be sent."


class Courier:
    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self._pending: set[Deferred[Any]] = set()
        #: Deliveries handed over / failed since start (for tests and status output).
        self.sent = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def dispatch(
        self,
        key: str,
        factor: OutOfBandFactor,
        destination: Destination,
        code: str,
        context: SendContext,
    ) -> None:
        """Start delivering; returns at once. Never raises."""
        try:
            d: Deferred[None] = factor.send(destination, code, context)
        except Exception:
            d = fail(Failure())
        self._pending.add(d)

        def delivered(_: object) -> None:
            self.sent += 1
            log.info(
                "{factor} code for {user} handed over for {destination}",
                factor=factor.type,
                user=context.user,
                destination=destination.masked,
            )

        def failed(failure: Failure) -> Deferred[None]:
            self.failed += 1
            why = (
                failure.getErrorMessage()
                if failure.check(DeliveryError)
                else f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
            )
            log.error(
                "{factor} code for {user} to {destination} was not delivered: {why}",
                factor=factor.type,
                user=context.user,
                destination=destination.masked,
                why=why,
            )
            notice = NOTICE.format(label=factor.label)
            noted = self.store.set_notice(key, notice)
            noted.addErrback(lambda f: log.failure("storing a delivery notice failed", f))
            return noted

        def forget(_: object) -> None:
            self._pending.discard(d)

        d.addCallbacks(delivered, failed)
        d.addBoth(forget)

    def drain(self) -> Deferred[Any]:
        """Fires when every delivery started so far has finished (for shutdown)."""
        if not self._pending:
            return succeed(None)
        return DeferredList(list(self._pending), consumeErrors=True)
