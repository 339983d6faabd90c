"""The policy, trusted_devices, rate_limits, audit and ldap.groups sections: values in, every
mistake reported as ``FILE:LINE: key.path: message``."""

from __future__ import annotations

from pathlib import Path

import pytest

from radmfa.config import RuleOutcome, UserLimitConfig
from tests.unit.test_config import (
    BASE,
    CLIENT,
    LDAP,
    assert_one_problem,
    assert_one_warning,
    line_of,
    load,
    problems,
)

DAY = 86400.0
SEARCH_LDAP = """\
ldap:
  servers: [ldap://127.0.0.1]
  base_dn: "dc=example,dc=org"
  bind_dn: "cn=radmfa,dc=example,dc=org"
  bind_password: "service-secret"
"""


def test_no_policy_section_requires_mfa_for_everyone(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    assert config.policy.default == RuleOutcome(mfa="required")
    assert config.policy.rules == ()
    assert config.trusted_devices.ttl == 0
    assert config.audit.enabled and config.audit.retention == 365 * DAY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optional", RuleOutcome(mfa="optional")),
        ("Exempt", RuleOutcome(mfa="exempt")),
        ("deny", RuleOutcome(deny=True)),
        ("{mfa: optional, allow_from: [10.0.0.0/8]}", None),
    ],
)
def test_default_is_an_outcome_word_or_mapping(tmp_path: Path, text: str, expected) -> None:
    config = load(tmp_path, BASE + f"policy:\n  default: {text}\n")
    if expected is not None:
        assert config.policy.default == expected
    else:
        assert config.policy.default.mfa == "optional"
        assert [str(n) for n in config.policy.default.allow_from] == ["10.0.0.0/8"]


def test_allow_password_only_maps_to_an_optional_default_with_a_warning(tmp_path: Path) -> None:
    text = BASE + "otp:\n  allow_password_only: true\n"
    assert_one_warning(
        tmp_path, text, "allow_password_only", "otp.allow_password_only", "deprecated"
    )
    assert load(tmp_path, text).policy.default == RuleOutcome(mfa="optional")


def test_allow_password_only_false_is_silent(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + "otp:\n  allow_password_only: false\n")
    assert config.warnings == () and config.policy.default.mfa == "required"


def test_allow_password_only_with_a_policy_default_is_an_error(tmp_path: Path) -> None:
    text = BASE + "otp:\n  allow_password_only: true\npolicy:\n  default: exempt\n"
    assert_one_problem(
        tmp_path, text, "allow_password_only", "otp.allow_password_only", "policy.default"
    )


def test_rule_needs_a_unique_name(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - {name: a, users: [x]}\n    - {name: a, users: [y]}\n"
    found = problems(tmp_path, text)
    assert len(found) == 1 and "'a' is already the name of policy.rules[0]" in found[0]
    text = BASE + "policy:\n  rules:\n    - users: [x]\n"
    assert_one_problem(tmp_path, text, "users: [x]", "policy.rules[0].name", "missing")


def test_rule_names_an_unknown_client(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - name: r\n      clients: [vpn, wifi]\n"
    assert_one_problem(
        tmp_path, text, "wifi", "policy.rules[0].clients", "no RADIUS client is named 'wifi'"
    )


def test_group_rules_need_search_then_bind(tmp_path: Path) -> None:
    text = CLIENT + LDAP + "policy:\n  rules:\n    - name: r\n      groups: [staff]\n"
    assert_one_problem(tmp_path, text, "groups:", "policy.rules[0].groups", "ldap.base_dn")
    config = load(tmp_path, CLIENT + SEARCH_LDAP + text.split(LDAP)[1])
    assert config.policy.needs_groups
    assert config.policy.rules[0].groups == ("staff",)


def test_deny_with_mfa_is_an_error(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - name: r\n      deny: true\n      mfa: exempt\n"
    assert_one_problem(tmp_path, text, "mfa: exempt", "policy.rules[0].mfa", "deny: true")


def test_bad_networks_are_reported_on_their_line(tmp_path: Path) -> None:
    text = BASE + (
        "policy:\n  rules:\n    - name: r\n      sources:\n        - 10.0.0.0/8\n"
        "        - vpn.example.org\n      deny_from: [10.1.2.3/16]\n"
    )
    found = problems(tmp_path, text)
    source = tmp_path / "radmfa.yaml"
    assert found == [
        f"{source}:{line_of(text, 'vpn.example')}: policy.rules[0].sources[1]: 'vpn.example.org' "
        "is not an IP address or CIDR network (e.g. 192.0.2.0/24); addresses are compared, "
        "host names are not looked up",
        f"{source}:{line_of(text, 'deny_from')}: policy.rules[0].deny_from[0]: 10.1.2.3/16 has "
        "host bits set; write the network 10.1.0.0/16",
    ]


def test_a_rule_after_a_catch_all_is_flagged(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - name: all\n      mfa: optional\n    - name: late\n"
    assert_one_warning(tmp_path, text, "name: late", "policy.rules[1]", "never applies")


def test_mac_station_is_unknown_unless_a_rule_says_nas(tmp_path: Path) -> None:
    text = BASE + (
        "policy:\n  default: {deny_from: [192.0.2.0/24], mac_station: NAS}\n  rules:\n"
        "    - name: wifi\n      clients: [vpn]\n      mac_station: nas\n"
        "    - {name: lab, users: [x]}\n"
    )
    config = load(tmp_path, text)
    assert config.warnings == ()
    assert config.policy.default.mac_station == "nas"
    assert [r.outcome.mac_station for r in config.policy.rules] == ["nas", "unknown"]
    text = BASE + "policy:\n  rules:\n    - name: r\n      mac_station: maybe\n"
    assert_one_problem(tmp_path, text, "maybe", "policy.rules[0].mac_station", "unknown")


def test_mac_station_nas_for_every_client_is_flagged(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - name: r\n      users: [x]\n      mac_station: nas\n"
    assert_one_warning(tmp_path, text, "mac_station", "policy.rules[0].mac_station", "clients")


def test_unknown_rule_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - name: r\n      user: [x]\n"
    assert_one_problem(tmp_path, text, "user:", "policy.rules[0].user", "did you mean 'users'")


@pytest.mark.parametrize(
    ("value", "seconds"), [("30", 30 * DAY), ("1.5", 1.5 * DAY), ('"90s"', 90), ('"12h"', 43200)]
)
def test_days_are_days_unless_a_unit_says_otherwise(tmp_path: Path, value, seconds) -> None:
    config = load(tmp_path, BASE + f"trusted_devices:\n  days: {value}\n")
    assert config.trusted_devices.ttl == seconds


def test_days_have_bounds(tmp_path: Path) -> None:
    text = BASE + "trusted_devices:\n  days: 400\n"
    assert_one_problem(tmp_path, text, "days", "trusted_devices.days", "0 to 365 days")
    text = BASE + 'trusted_devices:\n  days: "soon"\n'
    assert_one_problem(tmp_path, text, "days", "trusted_devices.days", "number of days")


def test_grace_message_takes_only_left(tmp_path: Path) -> None:
    text = BASE + 'policy:\n  unenrolled:\n    message: "hi {user}"\n'
    assert_one_problem(tmp_path, text, "message", "policy.unenrolled.message", "{left}")


def test_rate_limits_honour_the_nist_cap(tmp_path: Path) -> None:
    text = BASE + "rate_limits:\n  user:\n    free_failures: 101\n"
    assert_one_problem(
        tmp_path, text, "free_failures", "rate_limits.user.free_failures", "between 0 and 100"
    )


def test_user_limit_delay_doubles_up_to_the_cap() -> None:
    limit = UserLimitConfig(window=900, free_failures=3, delay=1, max_delay=10)
    assert [limit.wait(n) for n in range(8)] == [0, 0, 0, 1, 2, 4, 8, 10]
    assert UserLimitConfig(delay=0).wait(50) == 0


def test_ldap_groups_membership_choices(tmp_path: Path) -> None:
    config = load(tmp_path, CLIENT + SEARCH_LDAP + "  groups: {membership: AD_CHAIN}\n")
    assert config.ldap is not None
    assert config.ldap.groups.membership == "ad_chain"
    assert config.ldap.groups.filter == "(objectClass=group)"
    for membership in ("member", "memberof"):
        text = CLIENT + SEARCH_LDAP + f"  groups: {{membership: {membership}}}\n"
        config = load(tmp_path, text)
        assert config.ldap is not None
        # Active Directory's groups too: a nested AD group must not go unseen by default.
        assert config.ldap.groups.filter == "(|(objectClass=groupOfNames)(objectClass=group))"
    text = CLIENT + SEARCH_LDAP + "  groups: {filter: 'objectClass=group'}\n"
    assert_one_problem(tmp_path, text, "filter", "ldap.groups.filter", "parenthesised")


def test_local_users_groups_file_must_exist(tmp_path: Path) -> None:
    text = CLIENT + "local_users:\n  path: users\n  groups_file: groups\n"
    assert_one_problem(tmp_path, text, "groups_file", "local_users.groups_file", "does not exist")
    (tmp_path / "groups").write_text("staff: alice\n")
    config = load(tmp_path, text)
    assert config.local_users is not None
    assert config.local_users.groups_file == str(tmp_path / "groups")


# -- reply attributes ---------------------------------------------------------------------------

REPLY = """\
policy:
  default: {mfa: required, reply: {Class: everyone}}
  rules:
    - name: staff-vpn
      users: [alice]
      reply:
        Filter-Id: staff
        Tunnel-Type: VLAN
        Tunnel-Medium-Type: IEEE-802
        Tunnel-Private-Group-Id: 0120
        Cisco-AVPair: ["shell:priv-lvl=1", "ip:inacl#1=permit ip any any"]
"""


def test_reply_attributes_are_encoded_when_the_file_is_read(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + REPLY)
    (rule,) = config.policy.rules
    assert [(a.name, a.text) for a in rule.outcome.reply] == [
        ("Filter-Id", "staff"),
        ("Tunnel-Type", "VLAN"),
        ("Tunnel-Medium-Type", "IEEE-802"),
        ("Tunnel-Private-Group-Id", "0120"),  # as written, not the YAML number 120
        ("Cisco-AVPair", "shell:priv-lvl=1"),
        ("Cisco-AVPair", "ip:inacl#1=permit ip any any"),
    ]
    assert rule.outcome.reply[3].wire == b"\x51\x060120"
    assert [a.name for a in config.policy.default.reply] == ["Class"]


@pytest.mark.parametrize(
    ("bad", "path", "fragment"),
    [
        ("Bogus-Attr: 1", "policy.rules[0].reply.Bogus-Attr", "unknown attribute 'Bogus-Attr'"),
        ("Idle-Timeout: soon", "policy.rules[0].reply.Idle-Timeout", "'soon' is not a number"),
        ("State: x", "policy.rules[0].reply.State", "cannot be set by a rule"),
        ("Filter-Id: ''", "policy.rules[0].reply.Filter-Id", "an empty value is not sent"),
        ("Filter-Id: {a: b}", "policy.rules[0].reply.Filter-Id", "expected a single value"),
        ("Filter-Id: " + "x" * 254, "policy.rules[0].reply.Filter-Id", "254 bytes"),
        ("Tunnel-Type:40: VLAN", "policy.rules[0].reply.Tunnel-Type:40", "a tag is a number"),
    ],
)
def test_each_bad_reply_attribute_is_reported_at_its_line(
    tmp_path: Path, bad: str, path: str, fragment: str
) -> None:
    text = BASE + f"policy:\n  rules:\n    - name: r\n      reply:\n        {bad}\n"
    assert_one_problem(tmp_path, text, bad[:8], path, fragment)


def test_reply_must_be_a_mapping_without_duplicates(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - name: r\n      reply: [Filter-Id]\n"
    assert_one_problem(tmp_path, text, "reply:", "policy.rules[0].reply", "must be a mapping")
    text = BASE + (
        "policy:\n  rules:\n    - name: r\n      reply:\n"
        "        Filter-Id: a\n        Filter-Id: b\n"
    )
    assert_one_problem(tmp_path, text, "Filter-Id: b", "policy.rules[0].reply.Filter-Id", "dupl")


def test_a_denying_rule_cannot_have_a_reply(tmp_path: Path) -> None:
    text = BASE + "policy:\n  rules:\n    - name: r\n      deny: true\n      reply: {Class: x}\n"
    assert_one_problem(tmp_path, text, "reply:", "policy.rules[0].reply", "accepts nobody")


def test_a_rule_cannot_fill_the_reply(tmp_path: Path) -> None:
    values = ", ".join(f'"{i:03d}' + "x" * 240 + '"' for i in range(13))
    text = BASE + f"policy:\n  rules:\n    - name: r\n      reply: {{Cisco-AVPair: [{values}]}}\n"
    assert_one_problem(tmp_path, text, "reply:", "policy.rules[0].reply", "at most 3000 fit")


def test_the_dictionary_option_adds_names(tmp_path: Path) -> None:
    (tmp_path / "dictionary.acme").write_text(
        "VENDOR Acme 32473\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Role 7 string\nEND-VENDOR Acme\n"
    )
    text = (
        BASE
        + "dictionary: dictionary.acme\n"
        + ("policy:\n  rules:\n    - name: r\n      reply: {Acme-Role: ops}\n")
    )
    config = load(tmp_path, text)
    assert config.dictionary == (str(tmp_path / "dictionary.acme"),)
    assert config.policy.rules[0].outcome.reply[0].wire.endswith(b"\x07\x05ops")
    listed = text.replace("dictionary: dictionary.acme", "dictionary: [dictionary.acme]")
    assert load(tmp_path, listed).policy.rules[0].outcome.reply


def test_a_dictionary_that_cannot_be_read_is_blamed_on_its_line(tmp_path: Path) -> None:
    reply = "policy:\n  rules:\n    - name: r\n      reply: {Class: x}\n"
    text = BASE + "dictionary: [missing.dict]\n" + reply
    assert_one_problem(tmp_path, text, "dictionary:", "dictionary[0]", "cannot read")
    (tmp_path / "bad.dict").write_text("ATTRIBUTE Broken\n")
    text = BASE + "dictionary: [bad.dict]\n" + reply
    assert_one_problem(tmp_path, text, "dictionary:", "dictionary[0]", "not a dictionary")


def test_a_named_dictionary_is_checked_even_when_no_rule_needs_it(tmp_path: Path) -> None:
    text = BASE + "dictionary: [missing.dict]\n"
    assert_one_problem(tmp_path, text, "dictionary:", "dictionary[0]", "cannot read")


def test_a_continue_rule_may_only_add_attributes(tmp_path: Path) -> None:
    rule = "policy:\n  rules:\n    - name: vlan\n      users: [alice]\n      continue: true\n"
    config = load(tmp_path, BASE + rule + "      reply: {Class: x}\n")
    assert config.policy.rules[0].proceed
    text = BASE + rule + "      reply: {Class: x}\n      mfa: exempt\n"
    assert_one_problem(tmp_path, text, "mfa: exempt", "policy.rules[0].mfa", "continue: true")
    assert_one_warning(tmp_path, BASE + rule, "continue:", "policy.rules[0].continue", "nothing")


def test_a_continue_rule_without_conditions_hides_no_rule_after_it(tmp_path: Path) -> None:
    text = BASE + (
        "policy:\n  rules:\n    - {name: all, continue: true, reply: {Class: x}}\n"
        "    - {name: svc, users: [svc-*], mfa: exempt}\n"
    )
    assert load(tmp_path, text).warnings == ()
