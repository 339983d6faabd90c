"""Transports against real servers on loopback: SMTP (aiosmtpd: STARTTLS, TLS, AUTH), an HTTP
webhook (Twisted web on the test reactor) and a command (spawnProcess)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import resource, server

from radmfa.config import CommandConfig, SmtpConfig, WebhookConfig
from radmfa.delivery.sms import CommandProvider, WebhookProvider
from radmfa.delivery.smtp import SmtpTransport, build_message
from radmfa.factors.base import DeliveryError
from radmfa.testing import InlineRunner
from tests.support.ports import free_port
from tests.support.smtpd import SmtpServer


def smtp_config(server: SmtpServer, **kw: object) -> SmtpConfig:
    values = {**server.config(), **kw}
    return SmtpConfig(
        host=str(values["host"]),
        port=int(values["port"]),  # type: ignore[arg-type]
        security=values["security"],  # type: ignore[arg-type]
        username=values.get("username"),  # type: ignore[arg-type]
        password=values.get("password"),  # type: ignore[arg-type]
        ca_file=values.get("ca_file"),  # type: ignore[arg-type]
        timeout=5,
    )


def deliver(transport: SmtpTransport, to: str) -> list[object]:
    results: list[object] = []
    message = build_message("radmfa <mfa@example.org>", to, "Your code", "Your code is 123456")
    transport.send(message).addBoth(results.append)
    return results


@pytest.mark.parametrize("security", ["starttls", "tls", "none"])
def test_smtp_delivers_with_each_security_mode_and_login(tmp_path: Path, security: str):
    server = SmtpServer(tmp_path, security=security, username="radmfa", password="s3cret").start()
    try:
        results = deliver(SmtpTransport(smtp_config(server), InlineRunner()), "bob@example.org")
        assert results == [None]
        message = server.wait_for("bob@example.org")
        assert message["From"] == "radmfa <mfa@example.org>"
        assert "123456" in message.get_content()
    finally:
        server.stop()


def test_smtp_wrong_password_is_a_delivery_error(tmp_path: Path):
    server = SmtpServer(tmp_path, username="radmfa", password="s3cret").start()
    try:
        config = smtp_config(server, password="wrong")
        (result,) = deliver(SmtpTransport(config, InlineRunner()), "bob@example.org")
        assert result.check(DeliveryError)  # type: ignore[attr-defined]
        assert "login refused (535)" in result.getErrorMessage()  # type: ignore[attr-defined]
    finally:
        server.stop()


def test_smtp_untrusted_certificate_is_refused(tmp_path: Path):
    server = SmtpServer(tmp_path).start()
    try:
        config = smtp_config(server, ca_file=None)  # the system store does not know our CA
        (result,) = deliver(SmtpTransport(config, InlineRunner()), "bob@example.org")
        assert result.check(DeliveryError)  # type: ignore[attr-defined]
        assert server.messages_to("bob@example.org") == []
    finally:
        server.stop()


def test_smtp_down_is_a_delivery_error_quickly():
    config = SmtpConfig(host="127.0.0.1", port=free_port(), security="none", timeout=2)
    (result,) = deliver(SmtpTransport(config, InlineRunner()), "bob@example.org")
    assert result.check(DeliveryError)  # type: ignore[attr-defined]
    assert "Connection refused" in result.getErrorMessage()  # type: ignore[attr-defined]


# -- webhook ------------------------------------------------------------------------------


class Gateway(resource.Resource):
    isLeaf = True

    def __init__(self, status: int = 202, stall: bool = False) -> None:
        super().__init__()
        self.status = status
        self.stall = stall
        self.requests: list[tuple[bytes, dict[bytes, list[bytes]], bytes]] = []

    def render(self, request):  # type: ignore[no-untyped-def]
        body = request.content.read()
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.requests.append((request.method, headers, body))
        if self.stall:
            return server.NOT_DONE_YET
        request.setResponseCode(self.status)
        return b'{"ok": true}'


@pytest.fixture
def gateway():
    site_resource = Gateway()
    port = reactor.listenTCP(0, server.Site(site_resource), interface="127.0.0.1")
    site_resource.url = f"http://127.0.0.1:{port.getHost().port}/send"  # type: ignore[attr-defined]
    yield site_resource
    port.stopListening()


def webhook(url: str, **kw: object) -> WebhookConfig:
    return WebhookConfig(url=url, **kw)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_webhook_posts_json_with_headers(gateway):
    config = webhook(
        gateway.url,
        headers=(("Authorization", "Bearer t0ken"),),
        body=(("to", "{number}"), ("text", "{message}"), ("account", "radmfa")),
    )
    await WebhookProvider(config, reactor).send("+491512345678", "123456 is your code", "bob")
    method, headers, body = gateway.requests[0]
    assert method == b"POST"
    assert headers[b"Authorization"] == [b"Bearer t0ken"]
    assert headers[b"Content-Type"] == [b"application/json"]
    assert json.loads(body) == {
        "to": "+491512345678",
        "text": "123456 is your code",
        "account": "radmfa",
    }


@pytest_twisted.ensureDeferred
async def test_webhook_form_body_and_unexpected_status(gateway):
    gateway.status = 500
    config = webhook(gateway.url, body_format="form")
    with pytest.raises(DeliveryError, match="HTTP 500"):
        await WebhookProvider(config, reactor).send("+491512345678", "a b", "bob")
    assert gateway.requests[0][2] == b"to=%2B491512345678&message=a+b"


@pytest_twisted.ensureDeferred
async def test_webhook_that_never_answers_times_out(gateway):
    gateway.stall = True
    config = webhook(gateway.url, timeout=0.3)
    with pytest.raises(DeliveryError, match=r"no answer within 0\.3s"):
        await WebhookProvider(config, reactor).send("+491512345678", "x", "bob")


# -- command ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_command_gets_the_number_as_argument_and_the_message_on_stdin(tmp_path: Path):
    out = tmp_path / "sent.txt"
    script = tmp_path / "send-sms"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"open({str(out)!r}, 'w').write(sys.argv[1] + '|' + sys.stdin.read())\n"
    )
    script.chmod(0o755)
    provider = CommandProvider(CommandConfig(argv=(str(script), "{number}")), reactor)
    await provider.send("+491512345678", "123456 is your code", "bob")
    assert out.read_text() == "+491512345678|123456 is your code"


@pytest_twisted.ensureDeferred
async def test_command_failure_and_timeout(tmp_path: Path):
    failing = CommandProvider(
        CommandConfig(argv=("/bin/sh", "-c", "echo modem busy; exit 3")), reactor
    )
    with pytest.raises(DeliveryError, match="exited 3: modem busy"):
        await failing.send("+491512345678", "x", "bob")
    slow = CommandProvider(CommandConfig(argv=("/bin/sleep", "30"), timeout=0.3), reactor)
    with pytest.raises(DeliveryError, match="timed out and was killed"):
        await slow.send("+491512345678", "x", "bob")


def argv_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A real program that writes the arguments it was given, one JSON list, and exits 0."""
    out = tmp_path / "argv.json"
    script = tmp_path / "record-argv"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    script.chmod(0o755)
    return script, out


@pytest_twisted.ensureDeferred
async def test_command_gets_user_and_number_after_the_documented_double_dash(tmp_path: Path):
    script, out = argv_recorder(tmp_path)
    provider = CommandProvider(
        CommandConfig(argv=(str(script), "--", "{number}", "{user}", "--name={user}")), reactor
    )
    await provider.send("+491512345678", "x", "bob-smith")
    assert json.loads(out.read_text()) == ["--", "+491512345678", "bob-smith", "--name=bob-smith"]


@pytest.mark.parametrize("user", ["-rf", "--config=/tmp/evil", "-"])
@pytest_twisted.ensureDeferred
async def test_a_user_name_starting_with_a_dash_never_reaches_the_command(
    tmp_path: Path, user: str
):
    script, out = argv_recorder(tmp_path)
    provider = CommandProvider(CommandConfig(argv=(str(script), "{user}", "{number}")), reactor)
    with pytest.raises(DeliveryError, match=r"not run: \{user\} starts with '-'"):
        await provider.send("+491512345678", "x", user)
    assert not out.exists()  # the program never ran


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_a_refused_command_is_a_delivery_failure_notice_for_the_user(tmp_path: Path):
    from radmfa.config import SmsConfig
    from radmfa.delivery.courier import Courier
    from radmfa.factors.base import Destination, SendContext
    from radmfa.factors.sms import SmsFactor
    from radmfa.store.facade import AsyncStore
    from radmfa.store.memory import MemoryStore

    script, out = argv_recorder(tmp_path)
    command = CommandConfig(argv=(str(script), "--", "{user}"))
    factor = SmsFactor(
        SmsConfig(provider="command", command=command),
        CommandProvider(command, reactor),
        None,
    )
    store = MemoryStore()
    courier = Courier(AsyncStore(store, InlineRunner()))
    context = SendContext(user="-x", client="vpn", service="vpn", expires_at=0.0, ttl=300.0)
    courier.dispatch("-x", factor, Destination("+491512345678", "+49******78", True), "1", context)
    await courier.drain()
    assert (courier.sent, courier.failed) == (0, 1)
    assert store.take_notice("-x") == "Your SMS code could not be sent."
    assert not out.exists()
