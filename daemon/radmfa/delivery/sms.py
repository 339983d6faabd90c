"""SMS providers: an HTTP webhook (most SMS gateways) or a local command (modems, scripts).

Both are non-blocking: the webhook uses Twisted's HTTP client (``twisted.web.client.Agent``),
the command runs under ``reactor.spawnProcess``. Both have a timeout; a command that overruns
it is killed.
"""

from __future__ import annotations

import json
import string
from io import BytesIO
from typing import Any, Protocol
from urllib.parse import urlencode

from twisted.internet import error as internet_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from radmfa.config import CommandConfig, WebhookConfig
from radmfa.factors.base import DeliveryError

#: Output of a command kept for the log.
_MAX_OUTPUT = 2048


class SmsProvider(Protocol):
    def send(self, number: str, message: str, user: str) -> Deferred[None]: ...


class WebhookProvider:
    """POST (or PUT/GET) the number and message to an HTTP endpoint, JSON or form encoded."""

    def __init__(self, config: WebhookConfig, reactor: Any, agent: Any | None = None) -> None:
        self.config = config
        self.reactor = reactor
        if agent is None and reactor is not None:
            pool = HTTPConnectionPool(reactor, persistent=False)
            agent = Agent(reactor, connectTimeout=config.timeout, pool=pool)
        self.agent = agent

    def render(self, number: str, message: str, user: str) -> tuple[bytes, str]:
        fields = dict(_fields(self.config, number, message, user))
        if self.config.body_format == "json":
            return json.dumps(fields).encode("utf-8"), "application/json"
        return urlencode(fields).encode("utf-8"), "application/x-www-form-urlencoded"

    def send(self, number: str, message: str, user: str) -> Deferred[None]:
        if self.agent is None:
            raise DeliveryError("SMS can only be sent by the daemon")
        c = self.config
        body, content_type = self.render(number, message, user)
        headers = Headers({"User-Agent": ["radmfa"]})
        for name, value in c.headers:
            headers.addRawHeader(name, value)
        producer = None
        url = c.url
        if c.method == "GET":  # the fields go in the query string
            url += ("&" if "?" in url else "?") + urlencode(_fields(c, number, message, user))
        else:
            headers.setRawHeaders("Content-Type", [content_type])
            producer = FileBodyProducer(BytesIO(body))
        d: Deferred[Any] = self.agent.request(c.method.encode(), url.encode(), headers, producer)
        d.addCallback(self._check)

        def timed_out(result: object, timeout: float) -> Failure:
            return Failure(DeliveryError(f"SMS webhook {c.method}: no answer within {timeout:g}s"))

        d.addTimeout(c.timeout, self.reactor, onTimeoutCancel=timed_out)
        d.addErrback(self._explain)
        return d

    def _check(self, response: Any) -> Deferred[None]:
        body = readBody(response)

        def done(_: bytes) -> None:
            if response.code not in self.config.success_codes:
                raise DeliveryError(f"SMS webhook answered HTTP {response.code}")

        return body.addCallback(done)

    def _explain(self, failure: Failure) -> Failure:
        if failure.check(DeliveryError):
            return failure
        why = failure.getErrorMessage() or type(failure.value).__name__
        if failure.check(internet_error.TimeoutError, CancelledError):
            why = f"no answer within {self.config.timeout:g}s"
        return Failure(DeliveryError(f"SMS webhook {self.config.method} failed: {why}"))


def _fields(c: WebhookConfig, number: str, message: str, user: str) -> list[tuple[str, str]]:
    return [
        (name, template.format(number=number, message=message, user=user))
        for name, template in c.body
    ]


class CommandProvider:
    """Run ``argv`` (with {number} and {user} filled in), the message on its standard input.

    Exit status 0 means sent. No shell is involved; the environment is minimal. A filled-in
    argument that starts with ``-`` is refused (a delivery failure): the program would read a
    user name such as ``--config=/tmp/x`` as an option, whether or not its argv has ``--``.
    """

    def __init__(self, config: CommandConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor

    def send(self, number: str, message: str, user: str) -> Deferred[None]:
        if self.reactor is None:
            raise DeliveryError("SMS can only be sent by the daemon")
        argv = [self.config.argv[0]]
        for template in self.config.argv[1:]:
            argument = template.format(number=number, user=user)
            if argument.startswith("-") and not template.startswith("-"):
                raise DeliveryError(
                    f"SMS command {argv[0]}: not run: {_first_field(template)} starts with '-', "
                    "which the program would read as an option"
                )
            argv.append(argument)
        done: Deferred[None] = Deferred()
        protocol = _SendProcess(message.encode("utf-8"), done, argv[0])
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        try:
            transport = self.reactor.spawnProcess(protocol, argv[0], argv, env=env)
        except OSError as e:
            raise DeliveryError(f"SMS command {argv[0]}: cannot start: {e}") from None
        timer = self.reactor.callLater(self.config.timeout, protocol.overrun, transport)

        def cancel_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(cancel_timer)
        return done


def _first_field(template: str) -> str:
    """``{user}`` for ``"{user}@x"``: the placeholder an argument starts with."""
    for _text, name, _spec, _conversion in string.Formatter().parse(template):
        return f"{{{name}}}" if name is not None else "an argument"
    return "an argument"


class _SendProcess(ProcessProtocol):
    def __init__(self, message: bytes, done: Deferred[None], program: str) -> None:
        self.message = message
        self.done = done
        self.program = program
        self.output = b""
        self.timed_out = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.message)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-_MAX_OUTPUT:]

    errReceived = outReceived

    def overrun(self, transport: Any) -> None:
        self.timed_out = True
        try:
            transport.signalProcess("KILL")
        except internet_error.ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        if self.done.called:
            return
        if self.timed_out:
            self.done.errback(DeliveryError(f"SMS command {self.program} timed out and was killed"))
            return
        if reason.check(internet_error.ProcessDone):
            self.done.callback(None)
            return
        status = getattr(reason.value, "exitCode", None)
        said = self.output.decode("utf-8", "replace").strip().splitlines()
        tail = f": {said[-1][:200]}" if said else ""
        self.done.errback(DeliveryError(f"SMS command {self.program} exited {status}{tail}"))
