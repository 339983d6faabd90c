"""Policy, trusted devices, admin state and the audit trail, end to end: a real slapd with
groupOfNames groups (one nested), the daemon as a subprocess, the pyrad test client sending
Calling-Station-Id and NAS-Identifier, and the CLI on the same store.

Short lifetimes ("2s") stand in for days: the config takes durations wherever it takes days.
Nothing sleeps for a fixed time: expiries are awaited by polling the CLI with a deadline.
"""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import random
import signal
import time
from collections.abc import Iterator

import pyotp
import pytest

from tests.integration.test_daemon import quoted, radclient
from tests.support.daemon import RadmfaDaemon, deadline_poll
from tests.support.radius_client import ACCEPT, CHALLENGE, REJECT, RadiusTestClient, Reply
from tests.support.slapd import (
    GROUPS_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    LdapUser,
    Slapd,
    group_ldif,
    ou_ldif,
)

pytestmark = pytest.mark.integration

SECRET = "policy-client-secret-0123"
CALLING_STATION_ID, NAS_IDENTIFIER = 31, 32
_counter = itertools.count()


class User:
    """A directory user, optionally with a TOTP token enrolled through the CLI."""

    def __init__(self, daemon: RadmfaDaemon, slapd: Slapd, prefix: str, token: bool = True):
        self.name = f"{prefix}{next(_counter)}x{random.randrange(10**6)}"
        self.password = f"pw-{self.name}-Secret"
        self.ldap = LdapUser(self.name, self.password)
        slapd.add_users([self.ldap])
        self.totp: pyotp.TOTP | None = None
        if token:
            secret = base64.b32encode(random.randbytes(20)).decode()
            done = daemon.cli("token", "add", self.name, "--secret", secret, "--json")
            assert done.returncode == 0, done.stderr
            self.totp = pyotp.TOTP(secret)
        self.steps = itertools.count()

    @property
    def dn(self) -> str:
        return self.ldap.dn

    def code(self) -> str:
        """A code not used before by this user (the next step each time; the window is 1)."""
        assert self.totp is not None
        return self.totp.at(time.time() + 30 * (next(self.steps) - 1))


@pytest.fixture(scope="module")
def groups(slapd: Slapd) -> Slapd:
    """staff is nested in vpn-users; members are added by the tests with :func:`join`. A
    groupOfNames needs a member, so each starts with the service account."""
    slapd.add_ldif(
        ou_ldif(GROUPS_DN)
        + group_ldif("staff", [SERVICE_DN])
        + group_ldif("vpn-users", [f"cn=staff,{GROUPS_DN}"])
        + group_ldif("contractors", [SERVICE_DN])
    )
    return slapd


def join(slapd: Slapd, group: str, user: User) -> None:
    slapd.modify(
        f"dn: cn={group},{GROUPS_DN}\nchangetype: modify\nadd: member\nmember: {user.dn}\n"
    )


def policy_config(slapd: Slapd) -> dict:
    return {
        "clients": [
            {"name": "vpn", "address": "127.0.0.0/8", "secret": SECRET},
            {"name": "branch", "address": "127.0.0.2/32", "secret": SECRET},
        ],
        "ldap": {
            "servers": [slapd.url],
            "base_dn": SUFFIX,
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "timeout": 2,
            "groups": {"membership": "member", "base_dn": GROUPS_DN},
        },
        "otp": {"mode": "auto", "challenge_timeout": 60},
        "lockout": {"max_failures": 5, "duration": "5m"},
        "radius": {"reject_delay": 0},
        "trusted_devices": {"days": "1h"},
        "policy": {
            "default": "required",
            "rules": [
                {
                    "name": "edge",
                    "nas_identifiers": ["edge-*"],
                    "deny_from": ["203.0.113.0/24", "2001:db8:bad::/48"],
                },
                {"name": "service-accounts", "users": ["svc-*"], "mfa": "exempt"},
                {
                    "name": "contractors",
                    "groups": ["contractors"],
                    "deny_from": ["203.0.113.0/24"],
                },
                {
                    "name": "vpn-staff",
                    "groups": ["vpn-users"],
                    "trusted_device_days": 0,
                    "reply": {
                        "Tunnel-Type": "VLAN",
                        "Tunnel-Medium-Type": "IEEE-802",
                        "Tunnel-Private-Group-Id": "120",
                        "Filter-Id": "staff",
                        "Cisco-AVPair": ["shell:priv-lvl=1", "ip:inacl#1=permit ip any any"],
                    },
                },
                {"name": "kiosk", "nas_identifiers": ["kiosk-*"], "trusted_device_days": "3s"},
            ],
        },
        "audit": {"flush_interval": "0.1s"},
    }


@pytest.fixture(scope="module")
def daemon(groups: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadmfaDaemon]:
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-policy"), policy_config(groups))
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(daemon: RadmfaDaemon) -> Iterator[RadiusTestClient]:
    c = RadiusTestClient(daemon.port, SECRET.encode(), source="127.0.0.3")
    yield c
    c.close()


def login(
    client: RadiusTestClient,
    user: User,
    password: str,
    *,
    station: str | None = None,
    nas: str | None = None,
) -> Reply:
    extra: dict[int, list[bytes]] = {}
    if station is not None:
        extra[CALLING_STATION_ID] = [station.encode()]
    if nas is not None:
        extra[NAS_IDENTIFIER] = [nas.encode()]
    reply = client.auth(user.name, password, extra=extra)
    assert reply is not None
    return reply


def cli_ok(daemon: RadmfaDaemon, *args: str) -> str:
    done = daemon.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def user_binds(slapd: Slapd, user: User) -> int:
    return sum(1 for dn in slapd.wait_for_binds(0) if dn.lower() == user.dn.lower())


# -- policy rules ---------------------------------------------------------------------------


def test_a_reload_that_denies_a_group_refuses_answers_to_challenges_issued_before_it(
    groups, tmp_path
):
    slapd = groups
    d = RadmfaDaemon(tmp_path / "radmfa", policy_config(slapd))
    d.start()
    c = RadiusTestClient(d.port, SECRET.encode(), source="127.0.0.3")
    try:
        contractor, other = User(d, slapd, "leaving"), User(d, slapd, "staying")
        join(slapd, "contractors", contractor)
        asked = login(c, contractor, contractor.password)
        kept = login(c, other, other.password)
        assert (asked.code, kept.code) == (CHALLENGE, CHALLENGE)
        config = policy_config(slapd)
        config["listen"], config["store"] = d.config["listen"], d.config["store"]
        rules = config["policy"]["rules"]  # contractors: refused from now on
        at = next(i for i, rule in enumerate(rules) if rule["name"] == "contractors")
        rules[at] = {"name": "contractors", "groups": ["contractors"], "deny": True}
        d.write_config(config)
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded")
        answer = c.auth(contractor.name, contractor.code(), state=asked.state)
        assert answer is not None and answer.code == REJECT
        denied = f'reason=policy_deny user="{contractor.name}"'
        d.wait_for_log(denied)
        assert "rule=contractors" in next(x for x in d.log().splitlines() if denied in x)
        # a challenge of someone the new rules still let in is answered as before
        assert c.auth(other.name, other.code(), state=kept.state).code == ACCEPT
    finally:
        c.close()
        assert d.stop() == 0


def test_exempt_service_account_needs_only_its_password(daemon, slapd, client):
    svc = User(daemon, slapd, "svc-backup", token=False)
    assert login(client, svc, svc.password).code == ACCEPT
    daemon.wait_for_log(f'reason=exempt user="{svc.name}"')
    assert f'user="{svc.name}" client=vpn' in daemon.log()


def test_nested_group_member_is_found_and_the_rule_named(daemon, slapd, client):
    staffer = User(daemon, slapd, "staff")
    contractor = User(daemon, slapd, "contractor")
    join(slapd, "staff", staffer)
    join(slapd, "contractors", contractor)
    # staffer is in staff, which is in vpn-users: the vpn-staff rule, which trusts no device
    reply = login(client, staffer, staffer.password + staffer.code(), station="10.20.0.1")
    assert reply.code == ACCEPT
    daemon.wait_for_log(f'reason=ok user="{staffer.name}"')
    line = next(x for x in daemon.log().splitlines() if f'user="{staffer.name}"' in x)
    assert "rule=vpn-staff" in line
    assert login(client, staffer, staffer.password, station="10.20.0.1").code == CHALLENGE

    # contractors are refused from 203.0.113.0/24 before any bind of theirs
    binds = user_binds(slapd, contractor)
    reply = login(
        client, contractor, contractor.password + contractor.code(), station="203.0.113.5"
    )
    assert reply.code == REJECT
    daemon.wait_for_log(f'reason=ip_denied user="{contractor.name}"')
    assert user_binds(slapd, contractor) == binds
    reply = login(client, contractor, contractor.password + contractor.code(), station="10.1.1.1")
    assert reply.code == ACCEPT


def test_a_group_rule_puts_its_vlan_on_the_accept_and_nothing_else_gets_it(daemon, slapd):
    """What a switch or VPN concentrator reads, as radclient prints it."""
    staffer, other = User(daemon, slapd, "vlan"), User(daemon, slapd, "novlan")
    join(slapd, "staff", staffer)  # staff is nested in vpn-users

    def send(user: User, password: str) -> tuple[str | None, str]:
        attrs = {
            "User-Name": quoted(user.name),
            "User-Password": quoted(password),
            "Message-Authenticator": "0x00",
        }
        return radclient(daemon.port, SECRET, attrs)

    reply, out = send(staffer, staffer.password + staffer.code())
    assert reply == "Access-Accept", out
    received = out[out.index("Received Access-Accept") :]
    for line in [
        "Tunnel-Type:0 = VLAN",
        "Tunnel-Medium-Type:0 = IEEE-802",
        'Tunnel-Private-Group-Id:0 = "120"',
        'Filter-Id = "staff"',
        'Cisco-AVPair = "shell:priv-lvl=1"',
        'Cisco-AVPair = "ip:inacl#1=permit ip any any"',
    ]:
        assert line in received, (line, received)
    reply, out = send(staffer, staffer.password + "000000")
    assert reply == "Access-Reject" and "Tunnel" not in out[out.index("Received") :], out
    reply, out = send(other, other.password + other.code())  # the default rule: no attributes
    assert reply == "Access-Accept" and "Tunnel" not in out[out.index("Received") :], out


#: Calling-Station-Ids that once fell back to the packet source (the NAS, 127.0.0.1, which no
#: list names) and so got around a deny_from: all are refused now, read or unreadable.
DENIED_STATIONS = [
    "203.0.113.5",
    "203.0.113.5:1234",
    "[2001:db8:bad::1]",
    "203.0.113.005",
    "0xCB.0.113.5",
    "3405803781",
    "vpn-user.example.org",
    "aa-bb-cc-dd-ee-ff",
]


def test_deny_from_holds_for_every_spelling_of_a_station(daemon, slapd):
    user = User(daemon, slapd, "edge")

    def send(station: str, password: str) -> str | None:
        attrs = {
            "User-Name": quoted(user.name),
            "User-Password": quoted(password),
            "NAS-Identifier": quoted("edge-1"),
            "Calling-Station-Id": quoted(station),
            "Message-Authenticator": "0x00",
        }
        reply, out = radclient(daemon.port, SECRET, attrs)
        assert f'"{station}"' in out, out  # radclient sent it as given
        return reply

    binds = user_binds(slapd, user)
    for station in DENIED_STATIONS:
        assert send(station, user.password) == "Access-Reject", station
    daemon.wait_for_log(
        f'reason=ip_denied user="{user.name}"', count=len(DENIED_STATIONS), timeout=15
    )
    assert user_binds(slapd, user) == binds  # refused before any bind
    assert send("198.51.100.7", user.password + user.code()) == "Access-Accept"
    daemon.wait_for_log(f'reason=ok user="{user.name}"')
    line = next(x for x in daemon.log().splitlines() if f'reason=ok user="{user.name}"' in x)
    assert "rule=edge" in line


# -- trusted devices ------------------------------------------------------------------------


def test_trusted_device_skips_the_code_and_expires(daemon, slapd, client):
    user = User(daemon, slapd, "kiosk")
    station, nas = "02-00-5E-10-00-01", "kiosk-3"
    assert login(client, user, user.password + user.code(), station=station, nas=nas).code == ACCEPT
    assert login(client, user, user.password, station=station, nas=nas).code == ACCEPT
    daemon.wait_for_log(f'reason=trusted_device user="{user.name}"')
    listed = json.loads(cli_ok(daemon, "device", "list", user.name, "--json"))
    assert [d["device"] for d in listed] == ["02:00:5e:10:00:01"]
    # another device, or none, still needs the code
    assert (
        login(client, user, user.password, station="02-00-5E-10-00-02", nas=nas).code == CHALLENGE
    )
    assert login(client, user, user.password, nas=nas).code == CHALLENGE
    # the kiosk rule remembers devices for 3 s
    deadline_poll(
        lambda: json.loads(cli_ok(daemon, "device", "list", user.name, "--json")) == [],
        timeout=10,
        interval=0.5,
        what="the device to expire",
    )
    assert login(client, user, user.password, station=station, nas=nas).code == CHALLENGE


def test_a_remembered_device_counts_only_for_its_client_and_nas(daemon, slapd, client):
    """The same Calling-Station-Id from another client entry (a spoofed MAC, a NAT address
    shared with another site) or another NAS of the same client is not the device."""
    user = User(daemon, slapd, "roamer")
    station, nas = "02-00-5E-10-00-0A", "wlc-1"
    assert login(client, user, user.password + user.code(), station=station, nas=nas).code == ACCEPT
    assert login(client, user, user.password, station=station, nas=nas).code == ACCEPT
    daemon.wait_for_log(f'reason=trusted_device user="{user.name}"')
    branch = RadiusTestClient(daemon.port, SECRET.encode(), source="127.0.0.2")
    try:
        reply = login(branch, user, user.password, station=station, nas=nas)
        assert reply.code == CHALLENGE
        assert login(branch, user, "wrong" + user.password, station=station, nas=nas).code == REJECT
    finally:
        branch.close()
    assert login(client, user, user.password, station=station, nas="wlc-2").code == CHALLENGE
    assert login(client, user, user.password, station=station).code == CHALLENGE
    daemon.wait_for_log(f'reason=challenge_issued user="{user.name}"', count=3)
    assert daemon.log().count(f'reason=trusted_device user="{user.name}"') == 1
    line = next(x for x in daemon.log().splitlines() if f'user="{user.name}" client=branch' in x)
    assert "reason=challenge_issued" in line
    listed = json.loads(cli_ok(daemon, "device", "list", user.name, "--json"))
    assert [(d["device"], d["client"], d["nas_identifier"]) for d in listed] == [
        ("02:00:5e:10:00:0a", "vpn", "wlc-1")
    ]
    table = cli_ok(daemon, "device", "list", user.name).splitlines()
    assert table[0].split()[:4] == ["USER", "DEVICE", "CLIENT", "NAS"]
    assert table[1].split()[:4] == [user.name, "02:00:5e:10:00:0a", "vpn", "wlc-1"]
    shown = json.loads(cli_ok(daemon, "user", "show", user.name, "--json"))
    assert [(d["client"], d["nas_identifier"]) for d in shown["trusted_devices"]] == [
        ("vpn", "wlc-1")
    ]
    out = cli_ok(daemon, "device", "revoke", user.name, station, "--reason", "lost laptop")
    assert out.strip() == f"{user.name}: forgot 02:00:5e:10:00:0a"
    rows = json.loads(
        cli_ok(daemon, "audit", "--user", user.name, "--kind", "admin", "--format", "json")
    )
    assert rows[-1]["before"] == "02:00:5e:10:00:0a via vpn nas=wlc-1"


def test_revoked_device_needs_the_code_again(daemon, slapd, client):
    user = User(daemon, slapd, "laptop")
    station = "10.44.0.7"
    assert login(client, user, user.password + user.code(), station=station).code == ACCEPT
    assert login(client, user, user.password, station=station).code == ACCEPT
    out = cli_ok(daemon, "device", "revoke", user.name, "--all", "--reason", "stolen laptop")
    assert out.strip() == f"{user.name}: forgot {station}"
    assert login(client, user, user.password, station=station).code == CHALLENGE
    assert daemon.cli("device", "revoke", user.name, "--all").returncode == 1


def test_a_new_phone_number_forgets_the_devices(daemon, slapd, client):
    user = User(daemon, slapd, "phone")
    assert login(client, user, user.password + user.code(), station="10.45.0.1").code == ACCEPT
    cli_ok(daemon, "token", "add", user.name, "--type", "sms", "--number", "+4915112345678")
    assert json.loads(cli_ok(daemon, "device", "list", user.name, "--json"))  # first number
    cli_ok(daemon, "token", "add", user.name, "--type", "sms", "--number", "+4915187654321")
    assert json.loads(cli_ok(daemon, "device", "list", user.name, "--json")) == []


# -- admin state ----------------------------------------------------------------------------


def test_suspended_user_logs_in_without_a_code_until_the_time_given(daemon, slapd, client):
    user = User(daemon, slapd, "lostphone")
    out = cli_ok(daemon, "user", "suspend", user.name, "--until", "3s", "--reason", "lost phone")
    assert out.startswith(f"{user.name}: enabled -> suspended until ")
    assert login(client, user, user.password).code == ACCEPT
    daemon.wait_for_log(f'reason=mfa_suspended user="{user.name}"')
    deadline_poll(
        lambda: (
            not json.loads(cli_ok(daemon, "user", "show", user.name, "--json"))["mfa_suspended"]
        ),
        timeout=10,
        interval=0.5,
        what="the suspension to end",
    )
    assert login(client, user, user.password).code == CHALLENGE


def test_disabled_user_is_refused_without_an_ldap_bind(daemon, slapd, client):
    user = User(daemon, slapd, "leaver")
    cli_ok(daemon, "user", "disable", user.name, "--reason", "left the company")
    binds = user_binds(slapd, user)
    assert login(client, user, user.password + user.code()).code == REJECT
    daemon.wait_for_log(f'reason=user_disabled user="{user.name}"')
    assert user_binds(slapd, user) == binds
    cli_ok(daemon, "user", "enable", user.name)
    assert login(client, user, user.password + user.code()).code == ACCEPT


def test_reset_removes_every_factor(daemon, slapd, client):
    user = User(daemon, slapd, "reset")
    cli_ok(daemon, "backup-codes", user.name)
    out = cli_ok(daemon, "user", "reset", user.name, "--reason", "new phone")
    assert out.startswith(f"{user.name}: 11 token(s) and 0 trusted device(s) removed")
    assert login(client, user, user.password).code == REJECT
    daemon.wait_for_log(f'reason=no_token user="{user.name}"')


# -- the audit trail ------------------------------------------------------------------------


def test_audit_answers_who_logged_in_failed_and_changed_what(daemon, slapd, client):
    user = User(daemon, slapd, "audited")
    assert login(client, user, "wrong-password", station="10.9.8.7").code == REJECT
    assert login(client, user, user.password + user.code(), station="10.9.8.7").code == ACCEPT
    cli_ok(daemon, "user", "disable", user.name, "--reason", "ticket 4711")
    assert login(client, user, user.password + user.code()).code == REJECT
    cli_ok(daemon, "user", "enable", user.name)

    def rows() -> list[dict]:
        found = json.loads(cli_ok(daemon, "audit", "--user", user.name, "--format", "json"))
        return found if len(found) >= 6 else []

    events = deadline_poll(rows, timeout=10, interval=0.1, what="the audit rows")
    assert [(e["kind"], e["outcome"] or e["action"], e["reason"]) for e in events] == [
        ("admin", "token-add", None),
        ("auth", "reject", "bad_password"),
        ("auth", "accept", "ok"),
        ("admin", "disable", "ticket 4711"),
        ("auth", "reject", "user_disabled"),
        ("admin", "enable", None),
    ]
    accept = events[2]
    assert (accept["factor"], accept["method"], accept["rule"], accept["station"]) == (
        "totp",
        "append",
        "default",
        "10.9.8.7",
    )
    assert accept["client"] == "vpn" and accept["src"] == "127.0.0.3"
    assert isinstance(accept["latency_ms"], float)
    # the accepted login remembered 10.9.8.7 (trusted_devices: 1h); disabling forgot it
    assert (events[3]["before"], events[3]["after"]) == (
        "enabled",
        "disabled; 1 trusted device(s) revoked",
    )
    assert events[3]["actor"]

    table = cli_ok(daemon, "audit", "--user", user.name).splitlines()
    assert table[0].split() == ["TIME", "USER", "EVENT", "REASON", "DETAILS"]
    body = [line.split() for line in table[1:]]
    assert [(cols[1], cols[2], cols[3]) for cols in body] == [
        (user.name, "admin:token-add", "-"),
        (user.name, "reject", "bad_password"),
        (user.name, "accept", "ok"),
        (user.name, "admin:disable", "ticket"),
        (user.name, "reject", "user_disabled"),
        (user.name, "admin:enable", "-"),
    ]
    assert "factor=totp method=append rule=default client=vpn src=127.0.0.3" in table[3]
    assert "station=10.9.8.7" in table[3] and " ms=" in table[3]
    assert 'before="enabled" after="disabled; 1 trusted device(s) revoked"' in table[4]

    rejects = cli_ok(daemon, "audit", "--user", user.name, "--outcome", "reject").splitlines()
    assert [line.split()[3] for line in rejects[1:]] == ["bad_password", "user_disabled"]
    by_reason = json.loads(
        cli_ok(daemon, "audit", "--reason", "user_disabled", "--since", "1h", "--format", "json")
    )
    assert user.name in {e["user"] for e in by_reason}
    csv_rows = list(
        csv.DictReader(io.StringIO(cli_ok(daemon, "audit", "--user", user.name, "--format", "csv")))
    )
    assert [r["reason"] for r in csv_rows][1:3] == ["bad_password", "ok"]
    assert cli_ok(daemon, "audit", "--user", user.name, "--until", "2000-01-01").strip() == (
        "no matching audit records"
    )
