"""The daemon end to end: a real slapd, the daemon as a subprocess, radclient and our pyrad client.

Each test enrolls its own user so TOTP replay protection in one test never affects another.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests.support.daemon import RadmfaDaemon, deadline_poll
from tests.support.radius_client import (
    ACCEPT,
    CHALLENGE,
    REJECT,
    RadiusTestClient,
    build_request,
)
from tests.support.slapd import PEOPLE_DN, LdapUser, Slapd

pytestmark = pytest.mark.integration

STRICT_SECRET = "strict-client-secret-0123"
LEGACY_SECRET = "legacy-client-secret-4567"
_counter = itertools.count()


def base_config(slapd: Slapd, **overrides: object) -> dict:
    config: dict = {
        "clients": [
            # Everything on loopback must sign its requests ...
            {"name": "strict", "address": "127.0.0.0/8", "secret": STRICT_SECRET},
            # ... except the host itself, like a Debian 12 pam_radius 2.0 client.
            {
                "name": "legacy",
                "address": "127.0.0.1/32",
                "secret": LEGACY_SECRET,
                "require_message_authenticator": False,
            },
        ],
        "ldap": {
            "servers": [slapd.url],
            "user_dn": f"uid={{username}},{PEOPLE_DN}",
            "timeout": 2,
        },
        "otp": {"mode": "auto", "challenge_timeout": 60},
        "lockout": {"max_failures": 3, "duration": "5m"},
        "radius": {"reject_delay": 0},
    }
    config.update(overrides)
    return config


class Enrolled:
    """A directory user with a TOTP token enrolled through the CLI."""

    def __init__(self, daemon: RadmfaDaemon, slapd: Slapd, password: str | None = None) -> None:
        self.name = f"user{next(_counter)}x{random.randrange(10**6)}"
        self.password = password or f"pw-{self.name}-Secret"
        slapd.add_users([LdapUser(self.name, self.password)])
        self.secret = base64.b32encode(random.randbytes(20)).decode()
        done = daemon.cli("token", "add", self.name, "--secret", self.secret, "--json")
        assert done.returncode == 0, done.stderr
        self.token_id = json.loads(done.stdout)["token_id"]
        self.totp = pyotp.TOTP(self.secret)

    def code(self, steps: int = 0) -> str:
        return self.totp.at(time.time() + 30 * steps)


#: The LDAP engines the daemon's own tests run with (ldap3 is covered engine by engine in
#: test_ldap_engines.py).
DAEMON_ENGINES = ["libldap"]


def with_engine(config: dict, engine: str) -> dict:
    config["ldap"] = {**config["ldap"], "engine": engine}
    return config


@pytest.fixture(scope="module", params=DAEMON_ENGINES)
def daemon(
    request: pytest.FixtureRequest, slapd: Slapd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RadmfaDaemon]:
    config = with_engine(base_config(slapd), str(request.param))
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def strict_client(daemon: RadmfaDaemon) -> Iterator[RadiusTestClient]:
    client = RadiusTestClient(daemon.port, STRICT_SECRET.encode(), source="127.0.0.3")
    yield client
    client.close()


def radclient(
    port: int, secret: str, attributes: dict[str, str], *, command: str = "auth", retries: int = 1
) -> tuple[str | None, str]:
    """Run the real radclient; return the reply type ("Access-Accept" ...) or None, and output."""
    text = "".join(f"{k} = {v}\n" for k, v in attributes.items())
    done = subprocess.run(
        ["radclient", "-x", "-r", str(retries), "-t", "3", f"127.0.0.1:{port}", command, secret],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    found = re.search(r"Received (Access-\w+)", done.stdout)
    return (found.group(1) if found else None), done.stdout + done.stderr


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- append mode with radclient ---------------------------------------------------------------


def test_radclient_append_mode_accept_then_replay_refused(daemon, slapd):
    user = Enrolled(daemon, slapd)
    attrs = {
        "User-Name": quoted(user.name),
        "User-Password": quoted(user.password + user.code()),
        "Message-Authenticator": "0x00",
    }
    reply, out = radclient(daemon.port, LEGACY_SECRET, attrs)
    assert reply == "Access-Accept", out
    assert "Message-Authenticator" in out
    reply, out = radclient(daemon.port, LEGACY_SECRET, attrs)
    assert reply == "Access-Reject", out
    daemon.wait_for_log(f'reason=otp_replay user="{user.name}"')


def test_radclient_wrong_code_and_wrong_password_rejected(daemon, slapd):
    user = Enrolled(daemon, slapd)
    wrong_code = f"{(int(user.code()) + 1) % 10**6:06d}"
    for password in (user.password + wrong_code, "not-the-password" + user.code()):
        reply, out = radclient(
            daemon.port,
            LEGACY_SECRET,
            {"User-Name": quoted(user.name), "User-Password": quoted(password)},
        )
        assert reply == "Access-Reject", out


def test_radclient_status_server_needs_message_authenticator(daemon):
    reply, out = radclient(
        daemon.port, LEGACY_SECRET, {"Message-Authenticator": "0x00"}, command="status"
    )
    assert reply == "Access-Accept", out
    reply, out = radclient(
        daemon.port, LEGACY_SECRET, {"NAS-Identifier": "probe"}, command="status"
    )
    assert reply is None, out


def test_password_of_128_octets_with_appended_code(daemon, slapd):
    user = Enrolled(daemon, slapd, password="p" * 61 + "ä" * 30 + "!")  # 122 octets in UTF-8
    full = user.password + user.code()
    assert len(full.encode()) == 128
    reply, out = radclient(
        daemon.port,
        LEGACY_SECRET,
        {"User-Name": quoted(user.name), "User-Password": quoted(full)},
    )
    assert reply == "Access-Accept", out


def test_utf8_password_reaches_ldap_intact(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd, password="pässwörd€-日本")
    reply = strict_client.auth(user.name, user.password + user.code())
    assert reply is not None and reply.code == ACCEPT


# -- Message-Authenticator, Proxy-State, malformed input --------------------------------------


def test_strict_client_without_message_authenticator_is_dropped(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    reply = strict_client.auth(
        user.name, user.password + user.code(), message_authenticator=False, timeout=1.5
    )
    assert reply is None
    reply = strict_client.auth(user.name, user.password + user.code())
    assert reply is not None and reply.code == ACCEPT


def test_wrong_message_authenticator_is_dropped(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    pkt = build_request(strict_client.secret, user.name, user.password + user.code())
    raw = bytearray(pkt.RequestPacket())
    raw[22] ^= 0x01  # inside the Message-Authenticator value (first attribute)
    strict_client.send_raw(bytes(raw))
    assert strict_client.receive_raw(1.0) is None


def test_legacy_client_proxy_state_without_message_authenticator_dropped(daemon, slapd):
    user = Enrolled(daemon, slapd)
    client = RadiusTestClient(daemon.port, LEGACY_SECRET.encode(), source="127.0.0.1")
    try:
        reply = client.auth(
            user.name,
            user.password + user.code(),
            message_authenticator=False,
            proxy_states=(b"\x01\x02",),
            timeout=1.5,
        )
        assert reply is None
        reply = client.auth(
            user.name,
            user.password + user.code(),
            proxy_states=(b"183", b"\x00\xff", b"\xde\xad\xbe\xef"),
        )
        assert reply is not None and reply.code == ACCEPT
        assert reply.packet[33] == [b"183", b"\x00\xff", b"\xde\xad\xbe\xef"]
    finally:
        client.close()


def test_random_datagrams_never_stop_the_daemon(daemon, slapd, strict_client):
    rng = random.Random(2865)
    user = Enrolled(daemon, slapd)
    valid = build_request(strict_client.secret, user.name, user.password).RequestPacket()
    for i in range(3000):
        if i % 2:
            data = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            datagram = bytes(data[: rng.randint(0, len(data))] if i % 6 == 1 else data)
        else:
            datagram = rng.randbytes(rng.randint(0, 300))
        strict_client.send_raw(datagram)
    while strict_client.receive_raw(0.2) is not None:  # discard whatever was answered
        pass
    reply = strict_client.auth(user.name, user.password + user.code())
    assert reply is not None and reply.code == ACCEPT
    assert "Traceback" not in daemon.log()


# -- retransmissions --------------------------------------------------------------------------


def test_retransmission_gets_identical_reply_and_no_second_check(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    pkt = build_request(strict_client.secret, user.name, user.password + user.code())
    raw = pkt.RequestPacket()
    strict_client.send_raw(raw)
    first = strict_client.receive_raw(5)
    strict_client.send_raw(raw)
    second = strict_client.receive_raw(5)
    assert first is not None and first == second
    assert first[0] == ACCEPT
    binds_for_user = [dn for dn in slapd.wait_for_binds(0) if dn.startswith(f"uid={user.name},")]
    assert len(binds_for_user) == 1


def test_retransmitted_wrong_code_counts_one_failure(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    wrong = f"{(int(user.code()) + 5) % 10**6:06d}"
    raw = build_request(strict_client.secret, user.name, user.password + wrong).RequestPacket()
    for _ in range(3):
        strict_client.send_raw(raw)
    replies = [strict_client.receive_raw(2) for _ in range(3)]
    answered = [r for r in replies if r is not None]
    assert answered and all(r == answered[0] for r in answered)
    assert answered[0][0] == REJECT
    shown = json.loads(daemon.cli("user", "show", user.name, "--json").stdout)
    assert shown["failures"] == 1


# -- lockout ----------------------------------------------------------------------------------


def test_lockout_blocks_without_bind_and_unlock_clears_it(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    for _ in range(3):
        reply = strict_client.auth(user.name, "wrong-password")
        assert reply is not None and reply.code == REJECT
    binds_before = len(slapd.wait_for_binds(0))
    reply = strict_client.auth(user.name, user.password + user.code())
    assert reply is not None and reply.code == REJECT
    daemon.wait_for_log(f'reason=locked user="{user.name}"')
    assert len(slapd.binds()) == binds_before  # a locked user costs no LDAP bind
    shown = json.loads(daemon.cli("user", "show", user.name, "--json").stdout)
    assert shown["locked"] is True and shown["failures"] == 3
    done = daemon.cli("user", "unlock", user.name)
    assert done.returncode == 0, done.stderr
    reply = strict_client.auth(user.name, user.password + user.code(1))
    assert reply is not None and reply.code == ACCEPT


# -- challenge mode with our client -----------------------------------------------------------


def test_challenge_round_trip_and_state_is_single_use(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    first = strict_client.auth(user.name, user.password)
    assert first is not None and first.code == CHALLENGE
    assert first.state and first.messages and first.messages[0].strip()
    code = user.code()
    second = strict_client.auth(user.name, code, state=first.state)
    assert second is not None and second.code == ACCEPT
    again = strict_client.auth(user.name, user.code(1), state=first.state)
    assert again is not None and again.code == REJECT


def test_rejects_look_the_same_whatever_failed(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    replies = [
        strict_client.auth("no-such-user-anywhere", "whatever123456"),
        strict_client.auth(user.name, "wrong" + user.code()),
        strict_client.auth(user.name, user.password + "000000"),
    ]
    assert all(r is not None and r.code == REJECT for r in replies)
    assert {tuple(r.messages) for r in replies if r} == {("Authentication failed.",)}


# -- directory outage -------------------------------------------------------------------------


@pytest.mark.parametrize("engine", DAEMON_ENGINES)
def test_slapd_killed_then_restarted(fresh_slapd, tmp_path, engine):
    d = RadmfaDaemon(tmp_path / "radmfa", with_engine(base_config(fresh_slapd), engine))
    d.start()
    client = RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        user = Enrolled(d, fresh_slapd)
        assert client.auth(user.name, user.password).code == CHALLENGE
        fresh_slapd.kill()
        reply = client.auth(user.name, user.password, timeout=10)
        assert reply is not None and reply.code == REJECT
        d.wait_for_log("reason=directory_unavailable")
        fresh_slapd.start()
        reply = deadline_poll(
            lambda: (r := client.auth(user.name, user.password)) and r.code == CHALLENGE and r,
            timeout=20,
            interval=0.5,
            what="recovery after slapd restart",
        )
        assert reply.code == CHALLENGE
        shown = json.loads(d.cli("user", "show", user.name, "--json").stdout)
        assert shown["failures"] == 0  # an outage is not the user's failure
    finally:
        client.close()
        assert d.stop() == 0


def test_engine_native_of_an_older_config_runs_libldap_and_says_so(slapd, tmp_path):
    """``engine: native`` (the client libldap replaced) keeps an upgraded daemon starting:
    check-config and the start-up both warn, and logins go through libldap."""
    d = RadmfaDaemon(tmp_path / "radmfa", with_engine(base_config(slapd), "native"))
    warning = f"{d.config_path}:"
    checked = d.cli("check-config")
    assert checked.returncode == 0, checked.stderr
    assert warning in checked.stderr and "ldap.engine: 'native' is deprecated" in checked.stderr
    assert "write engine: libldap" in checked.stderr
    d.start()
    client = RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        assert "ldap.engine: 'native' is deprecated" in d.log_since_start()
        user = Enrolled(d, slapd)
        assert client.auth(user.name, user.password + "x").code == REJECT
        reply = client.auth(user.name, user.password + user.code())
        assert reply is not None and reply.code == ACCEPT
    finally:
        client.close()
        assert d.stop() == 0


# -- reload and shutdown ----------------------------------------------------------------------


def test_sighup_reload_applies_new_secret_and_keeps_old_config_when_invalid(slapd, tmp_path):
    d = RadmfaDaemon(tmp_path / "radmfa", base_config(slapd))
    d.start()
    try:
        user = Enrolled(d, slapd)
        old = RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
        new = RadiusTestClient(d.port, b"rotated-secret-0123456789", source="127.0.0.3")
        assert old.auth(user.name, user.password).code == CHALLENGE

        config = base_config(slapd)
        config["clients"][0]["secret"] = "rotated-secret-0123456789"
        config["listen"], config["store"] = d.config["listen"], d.config["store"]
        d.write_config(config)
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded")
        assert old.auth(user.name, user.password, timeout=1.0) is None
        assert new.auth(user.name, user.password).code == CHALLENGE

        d.config_path.write_text(d.config_path.read_text() + "\nbogus_key: 1\n")
        d.signal(signal.SIGHUP)
        d.wait_for_log("reload refused")
        assert "bogus_key: unknown key" in d.log()
        assert new.auth(user.name, user.password).code == CHALLENGE
        old.close()
        new.close()
    finally:
        assert d.stop() == 0


def test_sigterm_exits_zero(slapd, tmp_path):
    d = RadmfaDaemon(tmp_path / "radmfa", base_config(slapd))
    d.start()
    assert d.stop() == 0
    assert "radmfa stopped" in d.log()


# -- CLI --------------------------------------------------------------------------------------


def test_check_config_reports_file_line_and_key(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "clients:\n  - name: a\n    address: 10.0.0.0/8\n    secret: no\nldap:\n  sever: x\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "radmfa", "-c", str(bad), "check-config"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert f"{bad}:4: clients[0].secret:" in done.stderr
    assert f"{bad}:6: ldap.sever: unknown key (did you mean 'servers'?)" in done.stderr


def test_token_cli_list_remove_and_exit_codes(daemon, slapd):
    user = Enrolled(daemon, slapd)
    listed = json.loads(daemon.cli("token", "list", user.name, "--json").stdout)
    assert [t["token_id"] for t in listed] == [user.token_id]
    assert "secret" not in listed[0]
    assert daemon.cli("token", "remove", user.name, "nope").returncode == 1
    assert daemon.cli("token", "remove", user.name).returncode == 0
    assert json.loads(daemon.cli("token", "list", user.name, "--json").stdout) == []
    assert daemon.cli("token", "add", user.name, "--secret", "not base32!").returncode == 2
    assert daemon.cli("token", "add", user.name, "--secret", "JBSWY3DPEHPK3PXP").returncode == 2
    assert daemon.cli("token", "frobnicate").returncode == 2
    generated = daemon.cli("token", "add", user.name)
    assert generated.returncode == 0
    assert "otpauth://totp/" in generated.stdout and "█" in generated.stdout


def test_logs_never_contain_passwords_codes_or_secrets(daemon, slapd, strict_client):
    user = Enrolled(daemon, slapd)
    code = user.code()
    strict_client.auth(user.name, user.password + code)
    daemon.wait_for_log(f'user="{user.name}"')
    log = daemon.log()
    for needle in (user.password, user.secret, STRICT_SECRET, LEGACY_SECRET):
        assert needle not in log
    assert f"{user.password}{code}" not in log


def test_token_import_then_login_and_bad_file_imports_nothing(
    daemon, slapd, strict_client, tmp_path
):
    users = [
        LdapUser(f"imp{next(_counter)}x{random.randrange(10**6)}", "import-Pw-1") for _ in "ab"
    ]
    slapd.add_users(users)
    secrets_ = [base64.b32encode(random.randbytes(20)).decode() for _ in users]
    good = tmp_path / "tokens.csv"
    good.write_text(
        "user,type,secret,digits,algorithm,period\n"
        + "".join(f"{u.uid},totp,{s},6,SHA1,30\n" for u, s in zip(users, secrets_, strict=True))
    )
    done = daemon.cli("token", "import", str(good))
    assert done.returncode == 0, done.stderr
    assert "imported 2 token(s) for 2 user(s)" in done.stdout
    reply = strict_client.auth(users[1].uid, "import-Pw-1" + pyotp.TOTP(secrets_[1]).now())
    assert reply is not None and reply.code == ACCEPT

    bad = tmp_path / "bad.csv"
    bad.write_text(f"user,secret\nnewcomer,{secrets_[0]}\nbroken,not-base32!\n")
    done = daemon.cli("token", "import", str(bad))
    assert done.returncode == 2
    assert f"{bad}:3:" in done.stderr
    assert json.loads(daemon.cli("token", "list", "newcomer", "--json").stdout) == []


# -- several worker processes -----------------------------------------------------------------


def test_workers_share_the_port_replay_and_lockout(slapd, tmp_path):
    config = base_config(slapd)
    config["radius"] = {"reject_delay": 0, "workers": 2}
    d = RadmfaDaemon(tmp_path / "radmfa", config)
    d.start()
    try:
        d.wait_for_log("worker 0 ready")
        d.wait_for_log("worker 1 ready")
        user = Enrolled(d, slapd)
        code = user.code()
        # Many source ports spread over both workers; the code must still work exactly once.
        clients = [RadiusTestClient(d.port, STRICT_SECRET.encode(), source="127.0.0.3")
                   for _ in range(32)]  # fmt: skip
        codes = [c.auth(user.name, user.password + code).code for c in clients]
        assert codes.count(ACCEPT) == 1 and codes.count(REJECT) == 31
        # 32 source ports all hashed to one worker: odds of 2**-31, so both must have answered.
        deciders = set(
            re.findall(rf'\[(w\d)\] info radmfa.decision: .*user="{user.name}"', d.log())
        )
        assert deciders == {"w0", "w1"}
        for client in clients:
            client.close()
        workers_seen = set(re.findall(r"radmfa worker (\d) ready", d.log()))
        assert workers_seen == {"0", "1"}

        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded", count=2)
    finally:
        assert d.stop() == 0
    assert "radmfa worker 0 stopped" in d.log() and "radmfa worker 1 stopped" in d.log()


def test_user_show_tells_how_far_a_phones_clock_is_off(daemon, slapd, strict_client):
    """A code a step ahead of the server's clock is accepted (window 1), and `user show`
    says so: the admin sees a drifting phone (or, for many users, a drifting server)."""
    user = Enrolled(daemon, slapd)
    while 30 - time.time() % 30 < 2:  # not across a step boundary: the offset would be 0
        time.sleep(0.1)
    reply = strict_client.auth(user.name, user.password + user.code(1))
    assert reply is not None and reply.code == ACCEPT
    shown = json.loads(daemon.cli("user", "show", user.name, "--json").stdout)
    (totp,) = [t for t in shown["tokens"] if t["type"] == "totp"]
    assert totp["drift_steps"] == 1
    text = daemon.cli("user", "show", user.name).stdout
    assert "last code +1 step (30 s ahead of this server's clock)" in text, text


def test_a_login_that_finds_the_store_locked_waits_off_the_event_loop(daemon, slapd, strict_client):
    """SQLite: a login's store calls run on the event loop only while nobody holds the
    file's lock. With the lock held by another connection (the CLI, another worker) the
    login waits on the store thread: the daemon keeps answering, and the login goes
    through once the lock is free."""
    user = Enrolled(daemon, slapd)
    login = build_request(STRICT_SECRET.encode(), user.name, user.password + user.code())
    holder = sqlite3.connect(daemon.workdir / "radmfa.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        strict_client.send_raw(login.RequestPacket())
        reply, out = radclient(
            daemon.port, LEGACY_SECRET, {"Message-Authenticator": "0x00"}, command="status"
        )
        assert reply == "Access-Accept", out  # the event loop is not stuck on the lock
        assert strict_client.receive_raw(0.2) is None  # the login waits for the store
    finally:
        holder.execute("COMMIT")
        holder.close()
    answer = strict_client.read_reply(login)
    assert answer is not None and answer.code == ACCEPT
