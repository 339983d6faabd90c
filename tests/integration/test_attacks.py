"""Attacks on the lockout and on the user identity, through the daemon: a real slapd, the
daemon as a subprocess, raw RADIUS packets from the pyrad test client, and slapd's own log to
count the binds that reached the directory.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import time
from collections.abc import Iterator

import ldap3
import pyotp
import pytest
from pyrad import packet as rp

from tests.support.daemon import RadmfaDaemon, deadline_poll
from tests.support.radius_client import (
    DICTIONARY,
    REJECT,
    RadiusTestClient,
    build_request,
)
from tests.support.slapd import (
    PEOPLE_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    LdapUser,
    Slapd,
)

pytestmark = pytest.mark.integration

SECRET = "attack-client-secret-0123"
_counter = itertools.count()


@pytest.fixture(scope="module")
def daemon(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadmfaDaemon]:
    config = {
        "clients": [{"name": "vpn", "address": "127.0.0.0/8", "secret": SECRET}],
        # Direct bind: slapd binds uid=<fullwidth alice> as alice (caseIgnoreMatch).
        "ldap": {"servers": [slapd.url], "user_dn": f"uid={{username}},{PEOPLE_DN}", "timeout": 5},
        "otp": {"mode": "auto", "challenge_timeout": 60},
        "lockout": {"max_failures": 5, "duration": "5m"},
        # No per-user delay: the lockout alone is what a burst must not outrun here.
        "rate_limits": {"user": {"delay": 0}, "source": {"max_failures": 0}},
        "radius": {"reject_delay": 0, "max_in_flight": 4096},
        "policy": {
            "default": "required",
            "rules": [{"name": "password-only", "users": ["pwonly*"], "mfa": "exempt"}],
        },
        "audit": {"flush_interval": "0.1s"},
    }
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-attacks"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(daemon: RadmfaDaemon) -> Iterator[RadiusTestClient]:
    c = RadiusTestClient(daemon.port, SECRET.encode(), source="127.0.0.5")
    yield c
    c.close()


def new_user(slapd: Slapd, prefix: str) -> LdapUser:
    name = f"{prefix}{next(_counter)}x{random.randrange(10**6)}"
    user = LdapUser(name, f"pw-{name}-Secret")
    slapd.add_users([user])
    return user


def burst(client: RadiusTestClient, user: str, passwords: list[str]) -> dict[int, int]:
    """Send every request before reading any reply; the reply code by request Identifier."""
    requests = {}
    for identifier, password in enumerate(passwords):
        pkt = build_request(client.secret, user, password, identifier=identifier)
        requests[identifier] = pkt
        client.send_raw(pkt.RequestPacket())
    codes: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while len(codes) < len(requests) and time.monotonic() < deadline:
        data = client.receive_raw(1.0)
        if data is None:
            continue
        reply = rp.Packet(packet=data, secret=client.secret, dict=DICTIONARY)
        assert requests[reply.id].VerifyReply(reply, data)
        codes[reply.id] = reply.code
    return codes


def audit_reasons(daemon: RadmfaDaemon, user: str) -> list[str]:
    done = daemon.cli("audit", "--user", user, "--kind", "auth", "--format", "json")
    assert done.returncode == 0, done.stderr
    return [row["reason"] for row in json.loads(done.stdout)]


def test_a_burst_of_wrong_passwords_reaches_the_directory_at_most_max_failures_times(
    daemon, slapd, client
):
    user = new_user(slapd, "pwonly")
    codes = burst(client, user.uid, [f"wrong-{i}" for i in range(200)])
    assert len(codes) == 200 and set(codes.values()) == {REJECT}
    binds = [dn for dn in slapd.binds() if dn.lower() == user.dn.lower()]
    assert len(binds) <= 5, f"{len(binds)} binds reached slapd"
    reasons = deadline_poll(
        lambda: (r := audit_reasons(daemon, user.uid)) and len(r) == 200 and r,
        10,
        what="200 audit rows",
    )
    assert reasons.count("bad_password") == len(binds)
    assert set(reasons) <= {"bad_password", "throttled", "locked"}
    # The right password now meets the lock, still without a bind.
    assert client.auth(user.uid, user.password).code == REJECT
    assert len([dn for dn in slapd.binds() if dn.lower() == user.dn.lower()]) == len(binds)


def test_a_burst_of_wrong_codes_with_the_right_password_gets_max_failures_code_checks(
    daemon, slapd, client
):
    user = new_user(slapd, "mfa")
    secret = base64.b32encode(random.randbytes(20)).decode()
    assert daemon.cli("token", "add", user.uid, "--secret", secret).returncode == 0
    good = pyotp.TOTP(secret).now()
    wrong = [f"{(int(good) + 1 + i) % 10**6:06d}" for i in range(200)]
    codes = burst(client, user.uid, [user.password + code for code in wrong])
    assert set(codes.values()) == {REJECT}
    reasons = deadline_poll(
        lambda: (r := audit_reasons(daemon, user.uid)) and len(r) == 200 and r,
        10,
        what="200 audit rows",
    )
    # auto mode: a tail that is no valid code is part of the password, so these were binds
    tried = reasons.count("bad_otp") + reasons.count("bad_password")
    assert 1 <= tried <= 5
    assert set(reasons) <= {"bad_otp", "bad_password", "throttled", "locked"}
    binds = [dn for dn in slapd.binds() if dn.lower() == user.dn.lower()]
    assert len(binds) <= 5


ASCII_LOWER = "abcdefghijklmnopqrstuvwxyz"
FULLWIDTH = str.maketrans({c: chr(0xFF41 + i) for i, c in enumerate(ASCII_LOWER)})


def test_the_directory_binds_other_spellings_as_the_same_account(slapd):
    """The premise of the identity rule, checked against this slapd directly: every one of
    these spellings binds as the account, so each must reach the same state in radmfa."""
    user = new_user(slapd, "spell")
    for spelling in (
        user.uid.translate(FULLWIDTH),
        user.uid.upper(),
        user.uid.upper().replace("I", "\u0130"),
    ):
        conn = ldap3.Connection(
            ldap3.Server(slapd.url), user=f"uid={spelling},{PEOPLE_DN}", password=user.password
        )
        assert conn.bind(), (spelling, conn.result)
        conn.unbind()


def test_a_disabled_user_is_refused_under_every_spelling_without_a_bind(daemon, slapd, client):
    user = new_user(slapd, "pwonlydis")
    assert daemon.cli("user", "disable", user.uid, "--reason", "test").returncode == 0
    before = len(slapd.binds())
    for spelling in (
        user.uid.translate(FULLWIDTH),
        user.uid.upper(),
        user.uid[:3] + user.uid[3:].translate(FULLWIDTH),
        f"  {user.uid} ",
    ):
        assert client.auth(spelling, user.password).code == REJECT
    assert len(slapd.binds()) == before
    reasons = deadline_poll(
        lambda: (r := audit_reasons(daemon, user.uid)) and len(r) == 4 and r, 10, what="rows"
    )
    assert set(reasons) == {"user_disabled"}


def test_an_enrolled_user_needs_the_code_under_a_fullwidth_spelling(daemon, slapd, client):
    user = new_user(slapd, "enrolled")
    secret = base64.b32encode(random.randbytes(20)).decode()
    assert daemon.cli("token", "add", user.uid, "--secret", secret).returncode == 0
    reply = client.auth(user.uid.translate(FULLWIDTH), user.password)
    assert reply.code == rp.AccessChallenge  # the token of the account is found


def test_a_name_without_a_safe_key_is_refused_before_the_directory(daemon, slapd, client):
    user = new_user(slapd, "pwonlyi")
    before = len(slapd.binds())
    reply = client.auth(user.uid.upper().replace("I", "\u0130"), user.password)
    assert reply.code == REJECT
    assert len(slapd.binds()) == before
    daemon.wait_for_log("reason=unsafe_user_name")


# -- one name per entry (search-then-bind) ------------------------------------------------------


@pytest.fixture(scope="module")
def by_mail_daemon(
    slapd: Slapd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RadmfaDaemon]:
    """Search-then-bind with a filter that finds an entry by its uid or its mail, and an
    enrolment grace period for users without a factor."""
    config = {
        "clients": [{"name": "vpn", "address": "127.0.0.0/8", "secret": SECRET}],
        "ldap": {
            "servers": [slapd.url],
            "base_dn": SUFFIX,
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "user_filter": "(|(uid={username})(mail={username}))",
            "timeout": 5,
        },
        "otp": {"mode": "auto", "challenge_timeout": 60},
        "radius": {"reject_delay": 0},
        "policy": {"default": "required", "unenrolled": {"grace_days": 14}},
    }
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-by-mail"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_an_entry_found_by_its_mail_keeps_the_state_of_its_uid(by_mail_daemon, slapd):
    """The mail address finds the same entry as the uid; were it a second identity, it
    would have no token (a grace-period login on the password alone) and no disable flag."""
    name = f"bymail{next(_counter)}x{random.randrange(10**6)}"
    user = LdapUser(name, f"pw-{name}-Secret", mail=f"{name}@example.org")
    slapd.add_users([user])
    secret = base64.b32encode(random.randbytes(20)).decode()
    assert by_mail_daemon.cli("token", "add", user.uid, "--secret", secret).returncode == 0
    client = RadiusTestClient(by_mail_daemon.port, SECRET.encode(), source="127.0.0.5")
    try:
        assert client.auth(user.uid, user.password).code == rp.AccessChallenge
        assert client.auth(user.mail, user.password).code == REJECT
        assert by_mail_daemon.cli("user", "disable", user.uid, "--reason", "t").returncode == 0
        assert client.auth(user.mail, user.password).code == REJECT
    finally:
        client.close()
    by_mail_daemon.wait_for_log("refused (log in with the entry's own name)")
