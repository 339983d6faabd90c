"""The transport-neutral RADIUS server: verify, hand off, pace and encode the reply.

A transport (UDP in :mod:`radmfa.radius.udp`, TLS in :mod:`radmfa.radius.tls`) receives bytes,
finds the client (by source address or by certificate) and asks :meth:`RadiusServer.admit` to
validate the packet, check the Message-Authenticator and the BlastRADIUS rules, and decode it.
It then hands the request over with :meth:`RadiusServer.submit` and a :class:`ReplyChannel` of
its own; the server calls the pipeline, enforces the deadline and the reject delay, encodes the
:class:`~radmfa.auth.model.Decision` and gives the bytes back to that channel. One server sits
behind every listening socket of a process, as twisted/names has one ``DNSServerFactory``
behind its UDP and TCP protocols: drain, load limits and counters cover them all.

Every drop is counted and logged at most once per source per minute; nothing raises out of the
server. Policy stays in the pipeline. Two wire-level cases are decided here because the
pipeline could not tell them apart from an ordinary request:

* a User-Password whose hidden length breaks RFC 2865 5.2 is rejected here with reason
  ``BAD_PASSWORD_ENCODING`` (the pipeline never sees it);
* Status-Server is answered here (RFC 5997) without touching the pipeline.

CHAP, MS-CHAP and EAP requests (EAP only with a valid Message-Authenticator) do go to the
handler, which rejects them with ``UNSUPPORTED_METHOD`` and writes the audit line.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Protocol

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.auth.model import (
    GENERIC_REJECT_MESSAGE,
    AccessRequest,
    AuthMethod,
    Decision,
    Outcome,
    Reason,
)
from radmfa.config import ClientConfig, RadiusConfig
from radmfa.deadlines import Deadline, Deadlines
from radmfa.radius.clients import ClientTable
from radmfa.radius.codec import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    ACCESS_REJECT,
    STATUS_SERVER,
    DecodedRequest,
    MalformedPacket,
    decode_request,
    encode_reply,
    validate_packet,
    verify_message_authenticator,
)

#: Seconds between two log lines about the same kind of drop from the same source.
LOG_INTERVAL = 60.0


class Refusal(enum.Enum):
    """Why :meth:`RadiusServer.admit` dropped a packet: a stream transport closes the
    connection on a broken packet (RFC 6614 2.6), not on a policy drop."""

    #: Not a valid packet, or not signed with the secret: the stream cannot be trusted.
    BROKEN = "broken"
    #: Well-formed and authentic, but refused by a rule (Message-Authenticator required...).
    POLICY = "policy"


class RequestHandler(Protocol):
    """The authentication pipeline as the server sees it."""

    def handle(self, request: AccessRequest) -> Deferred[Decision]:
        """Decide one request. May also return a Decision or raise; both are handled."""
        ...


class ReplyChannel(Protocol):
    """Where one accepted request's answer goes: a transport's handle for that request.

    Exactly one of the two methods is called, exactly once.
    """

    def deliver(self, reply: bytes) -> bool:
        """Send ``reply``; False when it could not go out (superseded, connection gone)."""
        ...

    def abandon(self) -> None:
        """No reply will come (a DROP decision, or a bug): free what the request held."""
        ...


@dataclass(slots=True)
class RadiusStats:
    """Counters for the status command and metrics (B-07). Each packet counts once below
    ``received``, except ``missing_authenticator``, which counts every request without a
    Message-Authenticator, answered or not, to show who still needs migrating.
    """

    received: int = 0
    unknown_client: int = 0
    malformed: int = 0
    bad_authenticator: int = 0
    missing_authenticator: int = 0
    #: Duplicates of requests in flight (dropped) or answered (reply resent).
    duplicates: int = 0
    #: Dropped by policy: MA required or Proxy-State/EAP without MA, shutting down, Decision DROP.
    dropped: int = 0
    accepts: int = 0
    rejects: int = 0
    challenges: int = 0
    status_server: int = 0
    overloaded: int = 0
    internal_errors: int = 0
    #: RadSec connections refused (a failed or abandoned handshake, no client entry for the
    #: certificate, a cap reached): connections, not packets, but watched the same way.
    tls_refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RateLimiter:
    """At most one ``allow`` per key per interval, so a flood cannot flood the log."""

    def __init__(self, clock: IReactorTime, interval: float, max_keys: int = 4096) -> None:
        self._clock = clock
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, kind: str, source: str) -> bool:
        now = self._clock.seconds()
        key = (kind, source)
        last = self._last.get(key)
        if last is not None and 0 <= now - last < self._interval:
            return False
        if len(self._last) >= self._max_keys:
            self._last = {k: t for k, t in self._last.items() if 0 <= now - t < self._interval}
            if len(self._last) >= self._max_keys:
                return False  # a spoofed-source flood: stay quiet rather than grow
        self._last[key] = now
        return True


@dataclass(eq=False, slots=True)
class _Job:
    """One request from acceptance to reply (or drop)."""

    client: ClientConfig
    decoded: DecodedRequest
    channel: ReplyChannel
    received_at: float
    settled: bool = False
    #: When it times out, while it waits for a decision.
    deadline: Deadline | None = None


class RadiusServer:
    """Everything about a request that does not depend on how it arrived.

    ``clients`` may be a table or a callable returning the current table, so a config reload
    can swap it without rebuilding the server.
    """

    log = Logger(namespace="radmfa.radius")

    def __init__(
        self,
        clients: ClientTable | Callable[[], ClientTable],
        handler: RequestHandler,
        clock: IReactorTime,
        radius_config: RadiusConfig,
        stats: RadiusStats | None = None,
    ) -> None:
        self._clients = clients
        self._handler = handler
        self.clock = clock
        self.radius_config = radius_config
        self.stats = stats if stats is not None else RadiusStats()
        self._accepting = True
        self._in_flight = 0
        self._outstanding: set[_Job] = set()
        self._drain_waiters: list[Deferred[None]] = []
        self.quiet = RateLimiter(clock, LOG_INTERVAL)
        #: The request deadlines: one timer for them all, not one per request.
        self._deadlines = Deadlines(clock)

    # ---------------------------------------------------------------------------------------
    # Lifecycle

    @property
    def in_flight(self) -> int:
        """Requests waiting for the handler's decision."""
        return self._in_flight

    @property
    def outstanding(self) -> int:
        """Requests accepted and not yet answered (includes rejects waiting out the delay)."""
        return len(self._outstanding)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def stopAccepting(self) -> None:
        """Drop new requests and Status-Server from now on, so clients fail over;
        retransmissions of answered requests still get their cached replies."""
        self._accepting = False

    def drain(self) -> Deferred[None]:
        """Stop accepting and fire once every accepted request has been answered or dropped."""
        self.stopAccepting()
        if not self._outstanding:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._drain_waiters.append(waiter)
        return waiter

    def current_clients(self) -> ClientTable:
        clients = self._clients
        return clients if isinstance(clients, ClientTable) else clients()

    # ---------------------------------------------------------------------------------------
    # Admission

    def client_for_address(self, source: str) -> ClientConfig | None:
        """The client a datagram from ``source`` belongs to; an unknown one is counted and
        logged (once a minute per source)."""
        client = self.current_clients().lookup(source)
        if client is None:
            self.stats.unknown_client += 1
            if self.quiet.allow("unknown", source):
                self.log.warn(
                    "Dropped a packet from {source}: not a configured client "
                    "(further drops from it are not logged for {interval:.0f}s)",
                    source=source,
                    interval=LOG_INTERVAL,
                )
        return client

    def admit(self, data: bytes, client: ClientConfig, source: str) -> DecodedRequest | Refusal:
        """Steps that need no state: structure, Message-Authenticator, BlastRADIUS rules.

        A :class:`Refusal` means dropped (counted and logged). Nothing here touches any
        duplicate cache or the pipeline, so forged packets leave no trace (B-06).
        """
        stats = self.stats
        try:
            valid = validate_packet(data)  # the one walk over the attributes
        except MalformedPacket as error:
            stats.malformed += 1
            self.drop_log("malformed", client, source, f"malformed packet: {error.reason}")
            return Refusal.BROKEN

        authentic = verify_message_authenticator(valid, client.secret)
        if authentic is False:
            stats.bad_authenticator += 1
            self.drop_log(
                "bad_ma",
                client,
                source,
                "wrong Message-Authenticator (is the shared secret the same on both sides?)",
            )
            return Refusal.BROKEN
        if authentic is None:
            stats.missing_authenticator += 1
            if valid.packet[0] == STATUS_SERVER:
                stats.dropped += 1
                self.drop_log(
                    "status_no_ma", client, source, "Status-Server without Message-Authenticator"
                )
                return Refusal.POLICY
            if client.require_message_authenticator:
                stats.dropped += 1
                self.drop_log(
                    "missing_ma",
                    client,
                    source,
                    "no Message-Authenticator and the client requires one "
                    "(set require_message_authenticator: false only for legacy clients)",
                )
                return Refusal.POLICY

        decoded = decode_request(valid, client.secret, client.name, source)
        if authentic is None:
            if decoded.proxy_states and client.limit_proxy_state:
                stats.dropped += 1
                self.drop_log(
                    "proxy_state_no_ma",
                    client,
                    source,
                    "Proxy-State without Message-Authenticator (BlastRADIUS pattern)",
                )
                return Refusal.POLICY
            if decoded.request.method is AuthMethod.EAP:
                stats.dropped += 1
                self.drop_log(
                    "eap_no_ma", client, source, "EAP-Message without Message-Authenticator"
                )
                return Refusal.POLICY
            if self.quiet.allow("legacy", source):
                self.log.info(
                    "Client {client} ({source}) sends requests without Message-Authenticator; "
                    "answering because require_message_authenticator is off",
                    client=client.name,
                    source=source,
                )
        return decoded

    def has_room(self, client: ClientConfig, source: str) -> bool:
        """Whether a new request may start now (not draining, under ``max_in_flight``);
        a refusal is counted and logged."""
        if not self._accepting:
            self.stats.dropped += 1
            self.drop_log("stopping", client, source, "shutting down")
            return False
        if self._in_flight >= self.radius_config.max_in_flight:
            self.stats.overloaded += 1
            self.drop_log("overloaded", client, source, "too many requests in flight")
            return False
        return True

    def drop_log(self, kind: str, client: ClientConfig, source: str, why: str) -> None:
        if self.quiet.allow(kind, source):
            self.log.warn(
                "Dropped a packet from {client} ({source}): {why} "
                "(not logged again for this source for {interval:.0f}s)",
                client=client.name,
                source=source,
                why=why,
                interval=LOG_INTERVAL,
            )

    def status_reply(self, decoded: DecodedRequest, client: ClientConfig) -> bytes | None:
        """RFC 5997: an Access-Accept with MA (and echoed Proxy-State), no side effects; None
        while draining (so proxies fail over) or when no reply can be built.

        Never cached: it is idempotent and clients send each probe with a fresh Identifier.
        """
        if not self._accepting:
            self.stats.dropped += 1
            return None
        try:
            reply = encode_reply(decoded, client.secret, ACCESS_ACCEPT)
        except ValueError as error:  # only with a request stuffed with Proxy-State
            self.stats.internal_errors += 1
            self.log.error(
                "Cannot answer Status-Server from {client}: {error}",
                client=client.name,
                error=str(error),
            )
            return None
        self.stats.status_server += 1
        return reply

    # ---------------------------------------------------------------------------------------
    # Handing off and replying

    def submit(
        self,
        client: ClientConfig,
        decoded: DecodedRequest,
        received_at: float,
        channel: ReplyChannel,
    ) -> None:
        """Take an admitted request (after :meth:`has_room`) to its one reply or drop."""
        job = _Job(client, decoded, channel, received_at)
        self._outstanding.add(job)
        if decoded.password_invalid:
            self.log.info(
                "Rejecting request {id} from {client}: User-Password has an invalid length",
                id=decoded.identifier,
                client=client.name,
            )
            self._reply(job, Decision(Outcome.REJECT, Reason.BAD_PASSWORD_ENCODING))
            return
        self._start(job)

    def _start(self, job: _Job) -> None:
        self._in_flight += 1
        job.deadline = self._deadlines.add(
            self.radius_config.request_timeout, partial(self._timed_out, job)
        )
        result = maybeDeferred(self._handler.handle, job.decoded.request)
        result.addCallbacks(self._decided, self._failed, callbackArgs=(job,), errbackArgs=(job,))
        result.addErrback(self._bug, job)

    def _settle(self, job: _Job) -> bool:
        """Take the one decision for ``job``; False if a timeout already decided it."""
        if job.settled:
            return False
        job.settled = True
        self._in_flight -= 1
        if job.deadline is not None:
            self._deadlines.cancel(job.deadline)
            job.deadline = None
        return True

    def _decided(self, decision: object, job: _Job) -> None:
        if not self._settle(job):
            self.log.info(
                "Ignored a late decision for request {id} from {client} (already timed out)",
                id=job.decoded.identifier,
                client=job.client.name,
            )
            return
        if not isinstance(decision, Decision):
            self.stats.internal_errors += 1
            self.log.error(
                "Handler returned {kind} instead of a Decision; rejecting",
                kind=type(decision).__name__,
            )
            decision = Decision(Outcome.REJECT, Reason.INTERNAL_ERROR)
        self._reply(job, decision)

    def _failed(self, failure: Failure, job: _Job) -> None:
        if not self._settle(job):
            return  # a late failure after the timeout: consumed, already answered
        self.stats.internal_errors += 1
        self.log.failure(
            "Handler failed on request {id} from {client}; rejecting (internal_error)",
            failure,
            id=job.decoded.identifier,
            client=job.client.name,
        )
        self._reply(job, Decision(Outcome.REJECT, Reason.INTERNAL_ERROR))

    def _timed_out(self, job: _Job) -> None:
        if not self._settle(job):
            return
        self.stats.internal_errors += 1
        self.log.error(
            "No decision for request {id} from {client} within {timeout}s; "
            "rejecting (internal_error)",
            id=job.decoded.identifier,
            client=job.client.name,
            timeout=self.radius_config.request_timeout,
        )
        self._reply(job, Decision(Outcome.REJECT, Reason.INTERNAL_ERROR))

    def _bug(self, failure: Failure, job: _Job) -> None:
        """Last resort: a bug in our own reply path must not leave the request hanging."""
        self.stats.internal_errors += 1
        self.log.failure("Bug while replying to {client}", failure, client=job.client.name)
        self._abandon(job)

    def _abandon(self, job: _Job) -> None:
        self._done(job)
        job.channel.abandon()

    def _reply(self, job: _Job, decision: Decision) -> None:
        if decision.outcome is Outcome.DROP:
            self.stats.dropped += 1
            if self.quiet.allow(f"decision:{decision.reason.value}", job.client.name):
                self.log.info(
                    "Dropped request {id} from {client} by decision ({reason}; not logged "
                    "again for this client for {interval:.0f}s)",
                    id=job.decoded.identifier,
                    client=job.client.name,
                    reason=decision.reason.value,
                    interval=LOG_INTERVAL,
                )
            self._abandon(job)
            return
        try:
            code, reply = self._encode(job, decision)
        except ValueError as error:
            self.stats.internal_errors += 1
            self.log.error(
                "Cannot encode the {outcome} for request {id} from {client} ({error}); "
                "rejecting (internal_error)",
                outcome=decision.outcome.value,
                id=job.decoded.identifier,
                client=job.client.name,
                error=str(error),
            )
            try:
                code, reply = self._encode(job, Decision(Outcome.REJECT, Reason.INTERNAL_ERROR))
            except ValueError:
                # Only a request stuffed with Proxy-State can make even this too big.
                self._abandon(job)
                return
        if code == ACCESS_REJECT:
            delay = job.received_at + self.radius_config.reject_delay - self.clock.seconds()
            if delay > 0:
                self.clock.callLater(delay, self._send_safely, job, code, reply)
                return
        self._send(job, code, reply)

    def _encode(self, job: _Job, decision: Decision) -> tuple[int, bytes]:
        decoded, secret = job.decoded, job.client.secret
        if decision.outcome is Outcome.ACCEPT:
            message = decision.reply_message or None
            return ACCESS_ACCEPT, encode_reply(
                decoded,
                secret,
                ACCESS_ACCEPT,
                reply_messages=message,
                attributes=decision.attributes,
            )
        if decision.outcome is Outcome.CHALLENGE:
            return ACCESS_CHALLENGE, encode_reply(
                decoded,
                secret,
                ACCESS_CHALLENGE,
                reply_messages=decision.reply_message,
                state=decision.state,
            )
        message = decision.reply_message or GENERIC_REJECT_MESSAGE
        return ACCESS_REJECT, encode_reply(decoded, secret, ACCESS_REJECT, reply_messages=message)

    def _send_safely(self, job: _Job, code: int, reply: bytes) -> None:
        try:
            self._send(job, code, reply)
        except Exception:
            self.stats.internal_errors += 1
            self.log.failure(
                "Bug while sending a delayed reply to {client}", client=job.client.name
            )
            self._done(job)

    def _send(self, job: _Job, code: int, reply: bytes) -> None:
        self._done(job)
        if not job.channel.deliver(reply):
            return
        if code == ACCESS_ACCEPT:
            self.stats.accepts += 1
        elif code == ACCESS_CHALLENGE:
            self.stats.challenges += 1
        else:
            self.stats.rejects += 1

    def _done(self, job: _Job) -> None:
        self._outstanding.discard(job)
        if not self._outstanding and self._drain_waiters:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)
