"""Policy decisions as a table: user x groups x client x NAS x station -> outcome.

The rules are read from YAML exactly as an admin writes them, so the table also proves the
config reader and the evaluator agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radmfa.auth.policy import (
    NEEDS_GROUPS,
    GroupSet,
    Policy,
    Subject,
    Verdict,
    device_key,
    normalize_dn,
    subject_address,
)
from radmfa.config import parse_config

DAY = 86400.0

CONFIG = """\
clients:
  - {name: vpn, address: 10.0.0.0/8, secret: a-long-random-secret-0001}
  - {name: wifi, address: 192.168.0.0/16, secret: a-long-random-secret-0002}
  - {name: pam, address: 127.0.0.0/8, secret: a-long-random-secret-0003}
ldap:
  servers: [ldap://127.0.0.1]
  base_dn: "dc=example,dc=org"
  bind_dn: "cn=radmfa,dc=example,dc=org"
  bind_password: "service-secret"
trusted_devices: {days: 30}
policy:
  default: required
  unenrolled: {grace_days: 7}
  rules:
    - name: blocked
      users: [mallory]
      deny: true
    - name: service-accounts
      users: ["svc-*"]
      clients: [pam]
      mfa: exempt
    - name: admins
      groups: ["cn=Admins,ou=groups,dc=example,dc=org"]
      mfa: required
      allow_from: [10.1.0.0/16]
      trusted_device_days: 0
    - name: lab-wifi
      clients: [wifi]
      nas_identifiers: ["lab-*"]
      mfa: optional
    - name: contractors
      groups: [contractors]
      sources: [203.0.113.0/24, 198.51.100.0/24]
      deny_from: [198.51.100.66/32]
      mfa: required
      grace_logins: 3
      grace_days: 0
    - name: office
      sources: [10.20.0.0/16]
      mfa: optional
"""

ADMINS = ["cn=admins,ou=groups,dc=example,dc=org"]
CONTRACTORS = ["cn=contractors,ou=groups,dc=example,dc=org"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    config = parse_config(CONFIG, base_dir=tmp_path_factory.mktemp("policy"))
    return Policy(config.policy, config.trusted_devices.ttl)


def decide(
    policy: Policy,
    user: str,
    groups: list[str] | None,
    client: str,
    station: str | None,
    nas: str | None = None,
    source: str = "10.9.9.9",
) -> Verdict:
    subject = Subject(
        user=user.casefold(),
        client=client,
        nas_identifier=nas,
        address=subject_address(station, source),
        groups=GroupSet.of(groups) if groups is not None else None,
    )
    verdict = policy.evaluate(subject)
    assert isinstance(verdict, Verdict), verdict
    return verdict


def outcome(verdict: Verdict) -> str:
    if verdict.deny:
        return "deny"
    if verdict.address_refusal:
        return verdict.address_refusal
    return verdict.mfa


# user, groups, client, nas, station -> rule, outcome
TABLE = [
    ("mallory", [], "vpn", None, "10.1.2.3", "blocked", "deny"),
    ("Mallory", ADMINS, "pam", None, None, "blocked", "deny"),
    ("svc-backup", [], "pam", None, None, "service-accounts", "exempt"),
    ("SVC-Monitor", [], "pam", None, "127.0.0.9", "service-accounts", "exempt"),
    ("svc-backup", [], "vpn", None, "10.1.2.3", "default", "required"),  # wrong client
    ("alice", ADMINS, "vpn", None, "10.1.2.3", "admins", "required"),
    ("alice", ADMINS, "vpn", None, "10.2.0.1", "admins", "ip_not_allowed"),
    (
        "alice",
        ["CN=Admins, OU=Groups, DC=example, DC=org"],
        "vpn",
        None,
        "10.1.0.9",
        "admins",
        "required",
    ),
    ("bob", [], "wifi", "lab-3", "aa-bb-cc-dd-ee-ff", "lab-wifi", "optional"),
    ("bob", [], "wifi", "guest", "aa-bb-cc-dd-ee-ff", "default", "required"),
    ("bob", [], "wifi", None, None, "default", "required"),
    ("carol", CONTRACTORS, "vpn", None, "203.0.113.7", "contractors", "required"),
    ("carol", CONTRACTORS, "vpn", None, "198.51.100.66", "contractors", "ip_denied"),
    ("carol", CONTRACTORS, "vpn", None, "192.0.2.1", "default", "required"),  # not from there
    ("carol", ["contractors"], "vpn", None, "203.0.113.7", "contractors", "required"),
    ("dave", [], "vpn", None, "203.0.113.7", "default", "required"),  # not a contractor
    ("dave", [], "vpn", None, "10.20.3.4", "office", "optional"),
    ("dave", CONTRACTORS, "vpn", None, "10.20.3.4", "office", "optional"),
    # a MAC station is no address: the packet source (10.9.9.9) counts
    ("dave", [], "vpn", None, "00:11:22:33:44:55", "default", "required"),
]


@pytest.mark.parametrize(("user", "groups", "client", "nas", "station", "rule", "expected"), TABLE)
def test_policy_table(policy, user, groups, client, nas, station, rule, expected) -> None:
    verdict = decide(policy, user, groups, client, station, nas)
    assert (verdict.rule, outcome(verdict)) == (rule, expected)


def test_packet_source_is_the_address_without_a_station_ip(policy: Policy) -> None:
    verdict = decide(policy, "dave", [], "vpn", None, source="10.20.0.1")
    assert (verdict.rule, verdict.mfa) == ("office", "optional")
    verdict = decide(policy, "dave", [], "vpn", "not-an-ip", source="::ffff:10.20.0.1")
    assert (verdict.rule, verdict.mfa) == ("office", "optional")


def test_groups_are_asked_for_only_when_a_group_rule_could_decide(policy: Policy) -> None:
    def ask(user: str, client: str, station: str | None) -> object:
        return policy.evaluate(Subject(user, client, None, subject_address(station, "10.9.9.9")))

    assert ask("mallory", "vpn", None) != NEEDS_GROUPS  # decided by name first
    assert ask("svc-x", "pam", None) != NEEDS_GROUPS
    assert ask("alice", "vpn", "10.1.2.3") is NEEDS_GROUPS  # "admins" could match
    # "admins" has no other condition, so any user anywhere needs the lookup.
    assert ask("bob", "wifi", None) is NEEDS_GROUPS


def test_grace_and_trusted_device_settings_follow_the_rule(policy: Policy) -> None:
    admins = decide(policy, "alice", ADMINS, "vpn", "10.1.2.3")
    assert admins.trusted_device_ttl == 0
    assert (admins.grace.seconds, admins.grace.logins) == (7 * DAY, 0)
    contractors = decide(policy, "carol", CONTRACTORS, "vpn", "203.0.113.7")
    assert contractors.trusted_device_ttl == 30 * DAY
    assert (contractors.grace.seconds, contractors.grace.logins) == (0, 3)


def test_no_rules_means_the_default_for_everyone() -> None:
    config = parse_config(
        "clients: [{name: v, address: 10.0.0.0/8, secret: a-long-random-secret-0001}]\n"
        "local_users: {path: users}\npolicy: {default: {mfa: exempt, deny_from: [10.6.0.0/16]}}\n",
        base_dir=Path("/tmp"),
    )
    policy = Policy(config.policy)
    verdict = policy.evaluate(Subject("x", "v", None, subject_address(None, "10.5.0.1")))
    assert isinstance(verdict, Verdict) and (verdict.rule, verdict.mfa) == ("default", "exempt")
    refused = policy.evaluate(Subject("x", "v", None, subject_address(None, "10.6.0.1")))
    assert isinstance(refused, Verdict) and refused.address_refusal == "ip_denied"


@pytest.mark.parametrize(
    ("station", "key"),
    [
        (None, None),
        ("  ", None),
        ("10.0.0.1", "10.0.0.1"),
        (" 2001:DB8::1 ", "2001:db8::1"),
        ("AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff"),
        ("aabb.ccdd.eeff", "aa:bb:cc:dd:ee:ff"),
        ("aabbccddeeff", "aa:bb:cc:dd:ee:ff"),
        ("Kiosk-7", "kiosk-7"),
    ],
)
def test_device_keys(station: str | None, key: str | None) -> None:
    assert device_key(station) == key


def test_dn_normalisation_keeps_escaped_commas() -> None:
    assert normalize_dn("CN=Smith\\, J , OU=Groups") == "cn=smith\\, j,ou=groups"
    groups = GroupSet.of(["cn=Smith\\, J,ou=groups", "local-name"])
    assert groups.has("smith, j") and groups.has("local-name")
    assert groups.has(normalize_dn("CN=smith\\, j,OU=groups"))
