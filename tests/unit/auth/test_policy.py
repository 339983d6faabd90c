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
    ("dave", [], "vpn", None, "00:11:22:33:44:55", "default", "required"),
    # an address in another accepted spelling is that address
    ("dave", [], "vpn", None, "10.20.3.4:51820", "office", "optional"),
    ("carol", CONTRACTORS, "vpn", None, "[::ffff:198.51.100.66]:1", "contractors", "ip_denied"),
    # a station that is no address is unknown: sources do not match, allow_from refuses
    ("dave", [], "vpn", None, "10.20.3.04", "default", "required"),
    ("carol", CONTRACTORS, "vpn", None, "203.0.113.007", "default", "required"),
    ("alice", ADMINS, "vpn", None, "10.1.2.03", "admins", "ip_not_allowed"),
    ("alice", ADMINS, "vpn", None, "aa:bb:cc:dd:ee:ff", "admins", "ip_not_allowed"),
    ("alice", ADMINS, "vpn", None, "host.example.org", "admins", "ip_not_allowed"),
]


@pytest.mark.parametrize(("user", "groups", "client", "nas", "station", "rule", "expected"), TABLE)
def test_policy_table(policy, user, groups, client, nas, station, rule, expected) -> None:
    verdict = decide(policy, user, groups, client, station, nas)
    assert (verdict.rule, outcome(verdict)) == (rule, expected)


def test_packet_source_is_the_address_without_a_station(policy: Policy) -> None:
    verdict = decide(policy, "dave", [], "vpn", None, source="10.20.0.1")
    assert (verdict.rule, verdict.mfa) == ("office", "optional")
    verdict = decide(policy, "dave", [], "vpn", None, source="::ffff:10.20.0.1")
    assert (verdict.rule, verdict.mfa) == ("office", "optional")


def test_a_station_that_is_no_address_never_takes_the_packet_source(policy: Policy) -> None:
    # the NAS at 10.20.0.1 is in the office; a user with an unreadable station is not
    for station in ("not-an-ip", "10.20.0.001", "aa:bb:cc:dd:ee:ff"):
        verdict = decide(policy, "dave", [], "vpn", station, source="10.20.0.1")
        assert (verdict.rule, verdict.mfa) == ("default", "required"), station


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


def test_dn_normalisation_keeps_escaped_commas() -> None:
    assert normalize_dn("CN=Smith\\, J , OU=Groups") == "cn=smith\\, j,ou=groups"
    groups = GroupSet.of(["cn=Smith\\, J,ou=groups", "local-name"])
    assert groups.has("smith, j") and groups.has("local-name")
    assert groups.has(normalize_dn("CN=smith\\, j,OU=groups"))


# -- address rules and stations that are no IP address --------------------------------------

ADDRESS_RULES = """\
clients:
  - {name: vpn, address: 10.0.0.0/8, secret: a-long-random-secret-0001}
  - {name: wifi, address: 192.168.0.0/16, secret: a-long-random-secret-0002}
local_users: {path: users}
policy:
  default: {mfa: required, deny_from: ["203.0.113.0/24", "2001:db8:bad::/48"]}
  rules:
    - {name: blocked-net, users: [mallory], sources: [198.51.100.0/24], deny: true}
    - {name: office, sources: [10.20.0.0/16], mfa: exempt}
    - {name: partners, users: [partner], allow_from: [192.0.2.0/24]}
    - name: wifi
      clients: [wifi]
      deny_from: [192.168.66.0/24]
      mac_station: nas
"""

#: Every way a station has been seen to get around a deny: as no address, each used to fall
#: back to the packet source (the NAS, 10.9.9.9 here), which no list names.
UNREADABLE = [
    "203.0.113.005",
    "0xCB.0.113.5",
    "0313.0.113.5",
    "3405803781",
    "203.0.113",
    "fe80::1%eth0",
    "vpn-user.example.org",
    "aa:bb:cc:dd:ee:ff",
    "203.0.113.5:99999",
    "[2001:db8:bad::1",
]


@pytest.fixture(scope="module")
def address_policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    config = parse_config(ADDRESS_RULES, base_dir=tmp_path_factory.mktemp("address-rules"))
    return Policy(config.policy)


def judge(
    policy: Policy, station: str | None, *, user: str = "dave", client: str = "vpn"
) -> tuple[str, str]:
    source = "192.168.1.1" if client == "wifi" else "10.9.9.9"
    verdict = policy.evaluate(Subject(user, client, None, subject_address(station, source)))
    assert isinstance(verdict, Verdict)
    return verdict.rule, outcome(verdict)


@pytest.mark.parametrize(
    "station",
    ["203.0.113.5", "203.0.113.5:1234", "[2001:db8:bad::1]", "[2001:db8:bad::1]:443"],
)
def test_deny_from_reads_every_accepted_spelling(address_policy: Policy, station: str) -> None:
    assert judge(address_policy, station) == ("default", "ip_denied")


@pytest.mark.parametrize("station", UNREADABLE)
def test_deny_from_refuses_a_station_that_is_no_address(
    address_policy: Policy, station: str
) -> None:
    assert judge(address_policy, station) == ("default", "ip_denied")


@pytest.mark.parametrize("station", UNREADABLE)
def test_allow_from_refuses_a_station_that_is_no_address(
    address_policy: Policy, station: str
) -> None:
    assert judge(address_policy, station, user="partner") == ("partners", "ip_not_allowed")
    assert judge(address_policy, "192.0.2.7", user="partner") == ("partners", "required")


@pytest.mark.parametrize("station", ["10.20.0.07", "10.20.0.7.", "office-pc.example.org"])
def test_sources_do_not_match_a_station_that_is_no_address(
    address_policy: Policy, station: str
) -> None:
    assert judge(address_policy, "10.20.0.7") == ("office", "exempt")
    assert judge(address_policy, station) == ("default", "ip_denied")


@pytest.mark.parametrize("station", ["198.51.100.007", "blocked.example.org", "aabbccddeeff"])
def test_a_deny_rule_cannot_be_skipped_with_a_station_that_is_no_address(
    address_policy: Policy, station: str
) -> None:
    assert judge(address_policy, "198.51.100.7", user="mallory") == ("blocked-net", "deny")
    assert judge(address_policy, station, user="mallory") == ("blocked-net", "deny")
    assert judge(address_policy, "192.0.2.9", user="mallory") == ("default", "required")


def test_without_a_station_the_packet_source_counts(address_policy: Policy) -> None:
    assert judge(address_policy, None) == ("default", "required")
    verdict = address_policy.evaluate(
        Subject("dave", "vpn", None, subject_address(None, "10.20.0.1"))
    )
    assert isinstance(verdict, Verdict) and verdict.rule == "office"


def test_mac_station_nas_compares_the_nas_address_for_mac_stations_only(
    address_policy: Policy,
) -> None:
    def wifi(station: str, source: str) -> tuple[str, str]:
        subject = Subject("dave", "wifi", None, subject_address(station, source))
        verdict = address_policy.evaluate(subject)
        assert isinstance(verdict, Verdict)
        return verdict.rule, outcome(verdict)

    assert wifi("AA-BB-CC-DD-EE-FF", "192.168.1.1") == ("wifi", "required")
    assert wifi("aabb.ccdd.eeff", "192.168.66.1") == ("wifi", "ip_denied")  # the AP is denied
    # a station that is neither an address nor a MAC stays unknown, even here
    assert wifi("laptop.example.org", "192.168.1.1") == ("wifi", "ip_denied")
    assert wifi("aa:bb-cc:dd-ee:ff", "192.168.1.1") == ("wifi", "ip_denied")
    # an IP station is the user's address, not the NAS's
    assert wifi("192.168.66.9", "192.168.1.1") == ("wifi", "ip_denied")
    assert wifi("192.168.7.9", "192.168.66.1") == ("wifi", "required")


def test_a_subject_without_an_address_is_unknown_to_address_lists(address_policy: Policy) -> None:
    verdict = address_policy.evaluate(Subject("dave", "vpn"))
    assert isinstance(verdict, Verdict) and verdict.address_refusal == "ip_denied"
