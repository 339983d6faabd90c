"""Second factors end to end: the daemon as a subprocess, real slapd, a real SMTP server
(aiosmtpd with STARTTLS and AUTH), pam_radius through pamtester, and a third-party factor
installed as a throw-away distribution on the daemon's PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_daemon import LEGACY_SECRET, STRICT_SECRET, Enrolled, base_config
from tests.integration.test_pam_radius import pam_service
from tests.support.daemon import RadmfaDaemon, deadline_poll
from tests.support.ports import free_port
from tests.support.radius_client import ACCEPT, CHALLENGE, REJECT, RadiusTestClient, Reply
from tests.support.slapd import SERVICE_DN, SERVICE_PASSWORD, SUFFIX, LdapUser, Slapd
from tests.support.smtpd import SmtpServer
from tests.unit.factors.test_factors import write_plugin

pytestmark = pytest.mark.integration


class PluginDaemon(RadmfaDaemon):
    """The daemon (and its CLI) with a directory of extra distributions on PYTHONPATH."""

    plugin_path: Path | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.plugin_path is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.plugin_path), env.get("PYTHONPATH", "")) if p
            )
        return env


def email_config(smtp: dict) -> dict:
    return {"smtp": smtp, "from": "radmfa <mfa@example.org>", "cooldown": "2s"}


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    server = SmtpServer(
        tmp_path_factory.mktemp("smtp"), security="starttls", username="radmfa", password="pw-1"
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def daemon(
    slapd: Slapd, smtp: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PluginDaemon]:
    plugins = tmp_path_factory.mktemp("plugins")
    write_plugin(plugins, "reverse")
    config = base_config(slapd)
    config["otp"] = {
        "mode": "auto",
        "challenge_timeout": 60,
        "email": email_config(smtp.config()),
        "plugins": {"reverse": {"suffix": "!"}},
    }
    config["lockout"] = {"max_failures": 30, "duration": "5m"}
    d = PluginDaemon(tmp_path_factory.mktemp("radmfa-2fa"), config)
    d.plugin_path = plugins
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(daemon: RadmfaDaemon) -> Iterator[RadiusTestClient]:
    c = RadiusTestClient(daemon.port, STRICT_SECRET.encode(), source="127.0.0.3")
    yield c
    c.close()


def with_email(daemon: RadmfaDaemon, slapd: Slapd) -> tuple[Enrolled, str]:
    user = Enrolled(daemon, slapd)
    address = f"{user.name}@example.org"
    done = daemon.cli("token", "add", user.name, "--type", "email", "--address", address)
    assert done.returncode == 0, done.stderr
    return user, address


# -- email through pam_radius -------------------------------------------------------------


class PamSession:
    """pamtester driven interactively: prompts end without a newline, so read raw bytes."""

    def __init__(self, service: str, user: str) -> None:
        self.process = subprocess.Popen(
            ["pamtester", "-v", service, user, "authenticate"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, 4096):
            self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def answer(self, after: str, line: str) -> None:
        deadline_poll(lambda: after in self.text, 10, what=repr(after))
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def finish(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(30)
        self._reader.join(5)
        return code


def test_pam_radius_password_then_email_then_the_mailed_code(daemon, slapd, smtp, tmp_path):
    user, address = with_email(daemon, slapd)
    masked = f"{user.name[0]}***@example.org"
    for service in pam_service(tmp_path, daemon.port, LEGACY_SECRET, "email"):
        pam = PamSession(service, user.name)
        pam.answer("assword", user.password)
        pam.answer(f"type email ({masked})", "email")
        code = smtp.code_for(address)
        pam.answer(f"Enter the code sent to {masked}", code)
        assert pam.finish() == 0, pam.text
        assert "successfully authenticated" in pam.text
        # pam_radius sends the PAM service as NAS-Identifier: the mail names it
        assert smtp.wait_for(address)["Subject"] == f"Your {service} verification code"
    daemon.wait_for_log(f'decision=accept reason=ok user="{user.name}" client=legacy')
    assert code not in daemon.log()


def test_password_comma_email_in_one_field_then_the_code(daemon, slapd, smtp, client):
    user, address = with_email(daemon, slapd)
    started = time.monotonic()
    first = client.auth(user.name, user.password + ",email")
    assert first is not None and first.code == CHALLENGE
    assert time.monotonic() - started < 1.0  # the reply does not wait for the mail server
    second = client.auth(user.name, smtp.code_for(address), state=first.state)
    assert second is not None and second.code == ACCEPT
    again = client.auth(user.name, smtp.code_for(address), state=first.state)
    assert again is not None and again.code == REJECT


def test_resend_inside_the_cooldown_sends_nothing_new(daemon, slapd, smtp, client):
    user, address = with_email(daemon, slapd)
    reply = client.auth(user.name, user.password + ",email")
    for _ in range(4):
        reply = client.auth(user.name, "email", state=reply.state)
        assert reply is not None and reply.code == CHALLENGE
    assert "Please wait" in reply.messages[0]
    smtp.wait_for(address)
    assert len(smtp.messages_to(address)) == 1


# -- a changed address in the directory ----------------------------------------------------


@pytest.fixture(scope="module")
def search_daemon(
    slapd: Slapd, smtp: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RadmfaDaemon]:
    """Search-then-bind, so the bind reads each user's ``mail``."""
    config = base_config(slapd)
    config["ldap"] = {
        "servers": [slapd.url],
        "base_dn": SUFFIX,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "timeout": 2,
    }
    config["otp"] = {"mode": "auto", "challenge_timeout": 60, "email": email_config(smtp.config())}
    config["lockout"] = {"max_failures": 30, "duration": "5m"}
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-mail"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_changed_ldap_mail_gets_nothing_until_the_app_code_vouches_for_it(
    search_daemon, slapd, smtp
):
    daemon = search_daemon
    user = Enrolled(daemon, slapd)
    old, new = f"{user.name}@example.org", f"{user.name}@evil.example"
    slapd.modify(f"dn: {LdapUser(user.name, '').dn}\nchangetype: modify\nadd: mail\nmail: {old}\n")
    assert daemon.cli("token", "add", user.name, "--type", "email").returncode == 0
    c = RadiusTestClient(daemon.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        first = c.auth(user.name, user.password)  # the bind reads the first address: trusted
        assert first is not None and first.code == CHALLENGE
        assert c.auth(user.name, user.code(), state=first.state).code == ACCEPT
        slapd.modify(
            f"dn: {LdapUser(user.name, '').dn}\nchangetype: modify\nreplace: mail\nmail: {new}\n"
        )
        # the attack: password,email, (no code to give), drop, password,email again
        for _ in range(2):
            asked = c.auth(user.name, user.password + ",email")
            assert asked is not None and asked.code == CHALLENGE
            assert asked.messages[0].startswith("To confirm your new email address")
            again = c.auth(user.name, "", state=asked.state)
            assert again is not None and again.code == CHALLENGE
        daemon.wait_for_log("nothing sent to the new email address", count=2)
        # the honest exchange: the app's code vouches, then the new address gets its code
        asked = c.auth(user.name, user.password + ",email")
        step = c.auth(user.name, user.code(1), state=asked.state)
        assert step is not None and step.code == CHALLENGE
        assert "to confirm it" in step.messages[0]
        done = c.auth(user.name, smtp.code_for(new), state=step.state)
        assert done is not None and done.code == ACCEPT
        assert len(smtp.messages_to(new)) == 1  # the attack sent nothing there
        daemon.wait_for_log(f"{user.name} confirmed the new email address")
        listed = json.loads(daemon.cli("token", "list", user.name, "--json").stdout)
        mail = next(t for t in listed if t["type"] == "email")
        assert (mail["address"], mail["confirmed"]) == (new, True)

        # trusted now: an ordinary email login
        def ordinary_email_login() -> Reply | None:
            reply = c.auth(user.name, user.password + ",email")
            return reply if reply.messages[0].startswith("Enter the code sent to") else None

        asked = deadline_poll(ordinary_email_login, 10, 0.5, what="the 2s send cooldown")
        assert c.auth(user.name, smtp.code_for(new, 2), state=asked.state).code == ACCEPT
    finally:
        c.close()


# -- backup and emergency codes -----------------------------------------------------------


def test_backup_code_used_by_twenty_clients_at_once_is_accepted_once(daemon, slapd):
    user = Enrolled(daemon, slapd)
    done = daemon.cli("backup-codes", user.name, "--json")
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout)["codes"]
    assert len(codes) == 10
    clients = [
        RadiusTestClient(daemon.port, STRICT_SECRET.encode(), source="127.0.0.3") for _ in range(20)
    ]
    try:
        from tests.support.radius_client import build_request

        packets = [build_request(c.secret, user.name, user.password + codes[0]) for c in clients]
        for c, pkt in zip(clients, packets, strict=True):
            c.send_raw(pkt.RequestPacket())
        replies = [c.read_reply(pkt, 10) for c, pkt in zip(clients, packets, strict=True)]
    finally:
        for c in clients:
            c.close()
    outcomes = [r.code if r else None for r in replies]
    assert outcomes.count(ACCEPT) == 1 and outcomes.count(REJECT) == 19, outcomes
    shown = json.loads(daemon.cli("user", "show", user.name, "--json").stdout)
    assert (shown["backup_codes_left"], shown["backup_codes_total"]) == (9, 10)
    assert "backup:    9 of 10 codes left" in daemon.cli("user", "show", user.name).stdout
    # a new set: the old codes die
    daemon.cli("backup-codes", user.name)
    c = RadiusTestClient(daemon.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        assert c.auth(user.name, user.password + codes[1]).code == REJECT
    finally:
        c.close()


def test_emergency_code_from_the_help_desk_is_logged_with_its_issuer(daemon, slapd, client):
    user = Enrolled(daemon, slapd)
    done = daemon.cli("emergency-code", user.name, "--ttl", "2m", "--json")
    assert done.returncode == 0, done.stderr
    issued = json.loads(done.stdout)
    assert "issued by" in done.stderr and issued["issuer"]
    reply = client.auth(user.name, user.password + issued["code"])
    assert reply is not None and reply.code == ACCEPT
    daemon.wait_for_log(f"{user.name}: emergency code issued by {issued['issuer']}")
    assert client.auth(user.name, user.password + issued["code"]).code == REJECT
    assert daemon.cli("emergency-code", user.name, "--ttl", "5h").returncode == 2


# -- a third-party factor -----------------------------------------------------------------


def test_plugin_factor_from_an_entry_point_logs_in(daemon, slapd, client):
    user = Enrolled(daemon, slapd)
    import base64

    secret = base64.b32encode(b"radmfaplugin42").decode()
    done = daemon.cli("token", "add", user.name, "--type", "reverse", "--secret", secret)
    assert done.returncode == 0, done.stderr
    first = client.auth(user.name, user.password)
    assert first is not None and first.code == CHALLENGE
    reply = client.auth(user.name, "24nigulpafmdar!", state=first.state)
    assert reply is not None and reply.code == ACCEPT
    daemon.wait_for_log(f'decision=accept reason=ok user="{user.name}" client=strict')
    assert "factor=reverse" in daemon.log()
    assert daemon.cli("token", "add", user.name, "--type", "nonesuch").returncode == 2


# -- the mail server is down ----------------------------------------------------------------


def test_smtp_down_still_answers_logs_and_tells_the_user(slapd, tmp_path):
    dead = {"host": "127.0.0.1", "port": free_port(), "security": "none", "timeout": 2}
    config = base_config(slapd)
    config["otp"] = {"mode": "auto", "email": email_config(dead)}
    d = RadmfaDaemon(tmp_path / "radmfa", config)
    d.start()
    c = RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        user, _address = with_email(d, slapd)
        started = time.monotonic()
        first = c.auth(user.name, user.password + ",email")
        assert first is not None and first.code == CHALLENGE
        assert time.monotonic() - started < 1.0
        d.wait_for_log("was not delivered: SMTP 127.0.0.1")
        again = c.auth(user.name, "", state=first.state)
        assert again is not None and again.code == CHALLENGE
        assert again.messages[0].startswith("Your email code could not be sent.")
        done = c.auth(user.name, user.code(), state=again.state)  # nothing lost: the app works
        assert done is not None and done.code == ACCEPT
    finally:
        c.close()
        assert d.stop() == 0
