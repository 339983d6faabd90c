"""The YAML loader: typed settings out, every problem reported as ``FILE:LINE: key.path: ...``."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from radmfa.config import (
    AuditConfig,
    ClientConfig,
    Config,
    ConfigError,
    GraceConfig,
    LdapConfig,
    LdapGroupsConfig,
    ListenAddress,
    LocalUsersConfig,
    LockoutConfig,
    LoggingConfig,
    OtpConfig,
    PolicyConfig,
    PolicyRule,
    RadiusConfig,
    RateLimitsConfig,
    RuleOutcome,
    SourceLimitConfig,
    StoreConfig,
    TotpConfig,
    TrustedDevicesConfig,
    UserLimitConfig,
    format_problems,
    load_config,
    parse_config,
    parse_duration,
    parse_listen_address,
)
from radmfa.config import attempts as attempts_section
from radmfa.config import audit as audit_section
from radmfa.config import clients as clients_section
from radmfa.config import factors as factors_section
from radmfa.config import ldap as ldap_section
from radmfa.config import local_users as local_users_section
from radmfa.config import monitoring as monitoring_section
from radmfa.config import otp as otp_section
from radmfa.config import policy as policy_section
from radmfa.config import portal as portal_section
from radmfa.config import radius as radius_section
from radmfa.config import root as root_section
from radmfa.config import store as store_section
from radmfa.config import usernames as usernames_section

DAY = 86400.0


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "radmfa.yaml"

CLIENT = """\
clients:
  - name: vpn
    address: 127.0.0.0/8
    secret: a-long-random-secret-0001
"""
LOCAL = """\
local_users:
  path: users
"""
#: The smallest valid file; tests append one section to it.
BASE = CLIENT + LOCAL
LDAP = """\
ldap:
  servers: [ldap://127.0.0.1]
  user_dn: "uid={username},ou=people,dc=example,dc=org"
"""


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the test config")


def write(tmp_path: Path, text: str, name: str = "radmfa.yaml") -> Path:
    """Written private, as ``radmfa init`` does: a readable file with a secret is a warning."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems


def assert_one_problem(tmp_path: Path, text: str, needle: str, path: str, fragment: str) -> None:
    """Exactly one problem: on the line holding ``needle``, about ``path``, saying ``fragment``."""
    found = problems(tmp_path, text)
    prefix = f"{tmp_path / 'radmfa.yaml'}:{line_of(text, needle)}: {path}: "
    assert len(found) == 1, found
    assert found[0].startswith(prefix), (found[0], prefix)
    assert fragment in found[0], found[0]


def assert_one_warning(tmp_path: Path, text: str, needle: str, path: str, fragment: str) -> None:
    warnings = load(tmp_path, text).warnings
    prefix = f"{tmp_path / 'radmfa.yaml'}:{line_of(text, needle)}: {path}: "
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(prefix), (warnings[0], prefix)
    assert fragment in warnings[0], warnings[0]


# -- whole files -----------------------------------------------------------------------------

FULL = """\
listen:
  - 192.0.2.1:1812
  - "[2001:db8::1]:11812"
clients:
  - name: vpn
    address: 10.0.0.0/8
    secret: "0123456789abcdef-vpn"
    require_message_authenticator: true
  - name: pam
    address: 2001:db8::/32
    secret_file: secrets/pam
    require_message_authenticator: false
    limit_proxy_state: true
ldap:
  servers: [ldap://ldap1.example.org, "ldap://ldap2.example.org:3389"]
  base_dn: "ou=people,dc=example,dc=org"
  user_filter: "(&(objectClass=person)(uid={username}))"
  bind_dn: "cn=radmfa,dc=example,dc=org"
  bind_password_file: bindpw
  start_tls: true
  ca_file: ca.pem
  timeout: 2.5
  pool_size: 4
  retry_after: 1m
  user_cache: 30s
  groups:
    membership: memberof
    base_dn: "ou=groups,dc=example,dc=org"
    filter: "(objectClass=groupOfUniqueNames)"
    member_attribute: uniqueMember
    nested: false
    max_depth: 3
store:
  path: state/db.sqlite3
  key_file: /srv/radmfa/secret.key
otp:
  mode: Challenge
  totp: {digits: 8, period: 60, algorithm: sha512, skew: 2, issuer: "Example Corp"}
  challenge_timeout: 5m
  challenge_prompt: "Code: "
lockout:
  max_failures: 10
  duration: 1h
radius:
  reject_delay: 0
  duplicate_window: "10"
  max_in_flight: 100
  request_timeout: 5s
logging:
  level: DEBUG
policy:
  default: {mfa: required, deny_from: [203.0.113.0/24]}
  unenrolled: {grace_days: 14, grace_logins: 5, message: "Enroll now: {left} left."}
  rules:
    - name: service
      users: ["svc-*", Backup]
      mfa: exempt
      allow_from: 10.9.0.0/16
    - name: staff
      groups: [vpn-staff, "cn=Admins,ou=groups,dc=example,dc=org"]
      clients: [vpn]
      nas_identifiers: [GW-1]
      sources: [10.0.0.0/8, "2001:db8::/32"]
      mfa: Optional
      trusted_device_days: 7
      grace_days: "12h"
      grace_logins: 2
    - name: blocked
      users: [mallory]
      deny: true
trusted_devices: {days: 30}
rate_limits:
  user: {window: 10m, free_failures: 5, delay: 2s, max_delay: 5m}
  source: {window: 1m, max_failures: 100}
audit: {enabled: false, retention_days: 90, flush_interval: 1s, batch_size: 100}
"""


def test_full_config_round_trips_every_key_into_the_dataclasses(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pam").write_bytes(b"secret-from-a-file-0001\n")
    (tmp_path / "bindpw").write_text("s3rvice-pässword\n", encoding="utf-8")
    for secret in (tmp_path / "secrets" / "pam", tmp_path / "bindpw"):
        secret.chmod(0o600)
    (tmp_path / "ca.pem").write_text("not checked here\n")

    config = load(tmp_path, FULL)

    assert config == Config(
        source=str(tmp_path / "radmfa.yaml"),
        listen=(ListenAddress("192.0.2.1", 1812), ListenAddress("2001:db8::1", 11812)),
        clients=(
            ClientConfig(
                name="vpn",
                network=ipaddress.ip_network("10.0.0.0/8"),
                secret=b"0123456789abcdef-vpn",
                require_message_authenticator=True,
                limit_proxy_state=True,
            ),
            ClientConfig(
                name="pam",
                network=ipaddress.ip_network("2001:db8::/32"),
                secret=b"secret-from-a-file-0001",
                require_message_authenticator=False,
                limit_proxy_state=True,
            ),
        ),
        ldap=LdapConfig(
            servers=("ldap://ldap1.example.org", "ldap://ldap2.example.org:3389"),
            base_dn="ou=people,dc=example,dc=org",
            user_filter="(&(objectClass=person)(uid={username}))",
            bind_dn="cn=radmfa,dc=example,dc=org",
            bind_password="s3rvice-pässword",
            start_tls=True,
            ca_file=str(tmp_path / "ca.pem"),
            timeout=2.5,
            pool_size=4,
            retry_after=60.0,
            user_cache=30.0,
            groups=LdapGroupsConfig(
                membership="memberof",
                base_dn="ou=groups,dc=example,dc=org",
                filter="(objectClass=groupOfUniqueNames)",
                member_attribute="uniqueMember",
                nested=False,
                max_depth=3,
            ),
        ),
        local_users=None,
        store=StoreConfig(
            path=str(tmp_path / "state" / "db.sqlite3"), key_file="/srv/radmfa/secret.key"
        ),
        otp=OtpConfig(
            mode="challenge",
            totp=TotpConfig(digits=8, period=60, algorithm="SHA512", skew=2, issuer="Example Corp"),
            challenge_timeout=300.0,
            challenge_prompt="Code: ",
        ),
        lockout=LockoutConfig(max_failures=10, duration=3600.0),
        radius=RadiusConfig(
            reject_delay=0.0, duplicate_window=10.0, max_in_flight=100, request_timeout=5.0
        ),
        logging=LoggingConfig(level="debug"),
        warnings=(),
        policy=PolicyConfig(
            default=RuleOutcome(deny_from=(net("203.0.113.0/24"),)),
            unenrolled=GraceConfig(14 * DAY, 5, "Enroll now: {left} left."),
            rules=(
                PolicyRule(
                    "service",
                    users=("svc-*", "backup"),
                    outcome=RuleOutcome(mfa="exempt", allow_from=(net("10.9.0.0/16"),)),
                ),
                PolicyRule(
                    "staff",
                    groups=("vpn-staff", "cn=admins,ou=groups,dc=example,dc=org"),
                    clients=("vpn",),
                    nas_identifiers=("gw-1",),
                    sources=(net("10.0.0.0/8"), net("2001:db8::/32")),
                    outcome=RuleOutcome(
                        mfa="optional",
                        trusted_device_ttl=7 * DAY,
                        grace_seconds=12 * 3600,
                        grace_logins=2,
                    ),
                ),
                PolicyRule("blocked", users=("mallory",), outcome=RuleOutcome(deny=True)),
            ),
        ),
        trusted_devices=TrustedDevicesConfig(30 * DAY),
        rate_limits=RateLimitsConfig(UserLimitConfig(600, 5, 2, 300), SourceLimitConfig(60, 100)),
        audit=AuditConfig(False, 90 * DAY, 1.0, 100),
    )


def test_minimal_config_gets_the_dataclass_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)

    assert config.listen == (ListenAddress("127.0.0.1", 1812),)
    assert config.clients == (
        ClientConfig("vpn", ipaddress.ip_network("127.0.0.0/8"), b"a-long-random-secret-0001"),
    )
    assert config.ldap is None
    assert config.local_users == LocalUsersConfig(path=str(tmp_path / "users"))
    assert config.store == StoreConfig()
    assert config.otp == OtpConfig()
    assert config.lockout == LockoutConfig()
    assert config.radius == RadiusConfig()
    assert config.logging == LoggingConfig()
    assert config.warnings == ()


def test_empty_sections_read_as_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + "store:\notp:\n  totp:\nlockout: {}\nradius:\nlogging:\n")

    assert (config.store, config.otp, config.radius) == (StoreConfig(), OtpConfig(), RadiusConfig())


def test_ldap_direct_bind_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, CLIENT + LDAP)

    assert config.ldap == LdapConfig(
        servers=("ldap://127.0.0.1",), user_dn="uid={username},ou=people,dc=example,dc=org"
    )
    assert config.local_users is None


@pytest.mark.parametrize("spelling", ["libldap", "LibLDAP"])
def test_ldap_engine_libldap(tmp_path: Path, spelling: str) -> None:
    config = load(tmp_path, CLIENT + LDAP + f"  engine: {spelling}\n")

    assert config.ldap is not None and config.ldap.engine == "libldap"


def test_ldap_engine_is_libldap_by_default(tmp_path: Path) -> None:
    config = load(tmp_path, CLIENT + LDAP)

    assert config.ldap is not None and config.ldap.engine == "libldap"
    assert config.warnings == ()


@pytest.mark.parametrize("spelling", ["native", "Native"])
def test_ldap_engine_native_reads_as_libldap_with_a_warning(tmp_path: Path, spelling: str) -> None:
    """The engine libldap replaced: an old config keeps starting, and says what to write."""
    text = CLIENT + LDAP + f"  engine: {spelling}\n"

    config = load(tmp_path, text)

    assert config.ldap is not None and config.ldap.engine == "libldap"
    assert_one_warning(tmp_path, text, "engine:", "ldap.engine", "deprecated")
    assert "write engine: libldap" in config.warnings[0]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ber", "must be one of libldap, ldap3 (got 'ber')"),
        ("[native]", "expected a single value"),
    ],
)
def test_ldap_engine_other_values_are_one_problem(
    tmp_path: Path, value: str, fragment: str
) -> None:
    text = CLIENT + LDAP + f"  engine: {value}\n"

    assert_one_problem(tmp_path, text, "engine:", "ldap.engine", fragment)


def test_example_config_loads_without_problems_or_warnings() -> None:
    if not Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        pytest.skip("the example's ldap.ca_file (Debian's CA bundle) is not on this host")

    # As text: how the checkout happens to set the file's mode is not the example's concern.
    config = parse_config(EXAMPLE.read_text(), source=str(EXAMPLE), base_dir=EXAMPLE.parent)

    assert config.warnings == ()
    assert config.ldap is not None and config.ldap.user_dn is not None
    debian_pam = [c for c in config.clients if not c.require_message_authenticator]
    assert debian_pam and all(c.limit_proxy_state for c in debian_pam)


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = {
        *root_section.TOP_KEYS,
        *clients_section.CLIENT_KEYS,
        *clients_section.CERTIFICATE_KEYS,
        *radius_section.LISTEN_TLS_KEYS,
        *ldap_section.LDAP_KEYS,
        *otp_section.OTP_KEYS,
        *otp_section.TOTP_KEYS,
        *radius_section.RADIUS_KEYS,
        *factors_section.HOTP_KEYS,
        *factors_section.BACKUP_KEYS,
        *factors_section.EMERGENCY_KEYS,
        *factors_section.EMAIL_KEYS,
        *factors_section.SMS_KEYS,
        *policy_section.POLICY_KEYS,
        *policy_section.RULE_KEYS,
        *policy_section.GRACE_KEYS,
        *policy_section.TRUSTED_DEVICES_KEYS,
        *attempts_section.RATE_LIMITS_KEYS,
        *attempts_section.USER_LIMIT_KEYS,
        *attempts_section.SOURCE_LIMIT_KEYS,
        *audit_section.AUDIT_KEYS,
        *ldap_section.LDAP_GROUPS_KEYS,
        *local_users_section.LOCAL_USERS_KEYS,
        *store_section.STORE_KEYS,
        *attempts_section.LOCKOUT_KEYS,
        *monitoring_section.LOGGING_KEYS,
        *monitoring_section.METRICS_KEYS,
        *usernames_section.USERNAMES_KEYS,
        *portal_section.PORTAL_KEYS,
        *portal_section.PORTAL_TLS_KEYS,
    }
    for key in keys:  # as a key, or a commented-out one
        assert re.search(rf"^\s*#?\s*(- )?{key}:", text, re.MULTILINE), key


# -- reading the file ------------------------------------------------------------------------


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.problems[0].startswith(f"{tmp_path}: cannot read: ")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "radmfa.yaml"
    path.write_bytes(b"clients: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems[0].startswith(f"{path}: cannot read: not UTF-8")


def test_yaml_syntax_error_is_one_problem_with_its_line(tmp_path: Path) -> None:
    text = BASE + "listen:\n  - [::1]:1812\n"

    found = problems(tmp_path, text)

    assert len(found) == 1
    assert found[0].startswith(
        f"{tmp_path / 'radmfa.yaml'}:{line_of(text, '[::1]')}: YAML syntax: "
    )


def test_bad_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    text = "clients:\n  - name: vpn\n   address: 10.0.0.0/8\n"

    found = problems(tmp_path, text)

    assert len(found) == 1 and found[0].startswith(f"{tmp_path / 'radmfa.yaml'}:3: YAML syntax: ")


def test_empty_file_asks_for_clients_and_a_directory(tmp_path: Path) -> None:
    found = problems(tmp_path, "# nothing yet\n")

    source = tmp_path / "radmfa.yaml"
    assert [p.split(": missing")[0] for p in found] == [f"{source}:1: clients", f"{source}:1: ldap"]
    assert "local_users for a demo" in found[1]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert_one_problem(tmp_path, "- clients\n", "clients", "(top level)", "must be a mapping")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    text = CLIENT + LDAP + '  user_dn: "cn={username},dc=example,dc=org"\n'

    assert_one_problem(
        tmp_path, text, "cn={username}", "ldap.user_dn", "duplicate key (first given on line 7)"
    )


def test_duplicate_top_level_section_is_an_error(tmp_path: Path) -> None:
    text = BASE + "local_users:  # again\n  path: other\n"

    assert_one_problem(
        tmp_path, text, "# again", "local_users", "duplicate key (first given on line 5)"
    )


def test_unknown_key_suggests_the_closest_known_one(tmp_path: Path) -> None:
    text = CLIENT + LDAP + "  sever: ldap://x\n"

    found = problems(tmp_path, text)

    assert found == [
        f"{tmp_path / 'radmfa.yaml'}:{line_of(text, 'sever')}: ldap.sever: "
        "unknown key (did you mean 'servers'?)"
    ]


def test_unknown_top_level_key_lists_known_ones_when_nothing_is_close(tmp_path: Path) -> None:
    assert_one_problem(
        tmp_path, BASE + "zzz: 1\n", "zzz", "zzz", "unknown key (known keys: listen, clients"
    )


def test_misspelt_section_suggests_the_section(tmp_path: Path) -> None:
    assert_one_problem(
        tmp_path, BASE + "lockuot:\n  max_failures: 3\n", "lockuot", "lockuot", "'lockout'"
    )


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = """\
clients:
  - name: vpn
    address: 10.0.0.1/8
    secret: no
ldap:
  servers: []
  user_dn: "uid=x"
otp:
  mode: push
radius:
  reject_delay: 3s
"""
    found = problems(tmp_path, text)

    source = tmp_path / "radmfa.yaml"
    assert [p.split(": ", 2)[:2] for p in found] == [
        [f"{source}:3", "clients[0].address"],
        [f"{source}:4", "clients[0].secret"],
        [f"{source}:6", "ldap.servers"],
        [f"{source}:7", "ldap.user_dn"],
        [f"{source}:9", "otp.mode"],
        [f"{source}:11", "radius.reject_delay"],
    ]


def test_format_problems_counts_then_lists_one_per_line() -> None:
    err = ConfigError(["a.yaml:1: x: bad", "a.yaml:2: y: worse"])

    assert format_problems(err) == (
        "the configuration has 2 problems:\na.yaml:1: x: bad\na.yaml:2: y: worse"
    )
    assert format_problems(ConfigError(["a.yaml:1: x: bad"])).startswith(
        "the configuration has 1 problem:\n"
    )


def test_parse_config_reads_text_with_a_given_source_and_base_dir(tmp_path: Path) -> None:
    config = parse_config(BASE, source="inline.yaml", base_dir=tmp_path)

    assert config.source == "inline.yaml"
    assert config.local_users == LocalUsersConfig(str(tmp_path / "users"))
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "logging: {level: loud}\n", source="inline.yaml")
    assert info.value.problems[0].startswith("inline.yaml:7: logging.level: ")


def test_merge_keys_work_and_explicit_keys_win(tmp_path: Path) -> None:
    text = (
        LOCAL
        + """\
clients:
  - &common
    name: a
    address: 10.1.0.0/16
    secret: a-long-random-secret-0001
    require_message_authenticator: false
  - <<: *common
    name: b
    address: 10.2.0.0/16
"""
    )
    clients = load(tmp_path, text).clients

    assert [(c.name, str(c.network), c.require_message_authenticator) for c in clients] == [
        ("a", "10.1.0.0/16", False),
        ("b", "10.2.0.0/16", False),
    ]


# -- YAML 1.1 surprises and strict types -----------------------------------------------------


@pytest.mark.parametrize("raw", ["no", "yes", "off", "0644", "12345", "0x1f", "1.5", "~"])
def test_unquoted_secret_that_yaml_would_retype_is_an_error(tmp_path: Path, raw: str) -> None:
    text = LOCAL + f"clients:\n  - name: vpn\n    address: 10.0.0.0/8\n    secret: {raw}\n"

    found = problems(tmp_path, text)

    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'radmfa.yaml'}:6: clients[0].secret: ")
    if raw == "~":
        assert "has no value" in found[0]
    else:
        assert "put it in quotes" in found[0]
        assert raw not in found[0].split("secret: ", 1)[1]  # the secret is not echoed


def test_secret_no_message_says_it_became_a_boolean(tmp_path: Path) -> None:
    text = LOCAL + "clients:\n  - name: vpn\n    address: 10.0.0.0/8\n    secret: no\n"

    assert_one_problem(
        tmp_path,
        text,
        "secret: no",
        "clients[0].secret",
        "YAML reads the unquoted value as a boolean (true/false); put it in quotes",
    )


def test_quoted_secret_that_looks_like_a_number_is_kept_verbatim(tmp_path: Path) -> None:
    text = LOCAL + 'clients:\n  - name: vpn\n    address: 10.0.0.0/8\n    secret: "0644"\n'

    config = load(tmp_path, text)

    assert config.clients[0].secret == b"0644"
    assert len(config.warnings) == 1  # short, but a string


def test_string_where_a_boolean_belongs_is_an_error(tmp_path: Path) -> None:
    text = BASE + 'otp:\n  allow_password_only: "no"\n'

    assert_one_problem(
        tmp_path, text, "allow_password_only", "otp.allow_password_only", "must be true or false"
    )


def test_number_where_a_boolean_belongs_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace("    secret:", "    require_message_authenticator: 1\n    secret:")

    assert_one_problem(
        tmp_path,
        text,
        "require_message_authenticator",
        "clients[0].require_message_authenticator",
        "must be true or false, not the number 1",
    )


def test_boolean_where_an_integer_belongs_is_an_error(tmp_path: Path) -> None:
    text = BASE + "lockout:\n  max_failures: true\n"

    assert_one_problem(
        tmp_path, text, "max_failures", "lockout.max_failures", "must be a whole number"
    )


def test_octal_looking_integer_is_an_error(tmp_path: Path) -> None:
    text = BASE + "lockout:\n  max_failures: 010\n"

    assert_one_problem(
        tmp_path, text, "max_failures", "lockout.max_failures", "YAML reads 010 as 8"
    )


def test_base_60_duration_is_an_error(tmp_path: Path) -> None:
    text = BASE + "lockout:\n  duration: 1:30\n"

    assert_one_problem(tmp_path, text, "duration", "lockout.duration", "YAML reads 1:30 as 90")


def test_quoted_number_where_an_integer_belongs_is_an_error(tmp_path: Path) -> None:
    text = BASE + 'otp:\n  totp:\n    digits: "6"\n'

    assert_one_problem(tmp_path, text, "digits", "otp.totp.digits", "must be a whole number")


def test_unquoted_number_where_a_string_belongs_says_to_quote_it(tmp_path: Path) -> None:
    text = BASE + "otp:\n  totp:\n    issuer: 2024\n"

    assert_one_problem(
        tmp_path,
        text,
        "issuer",
        "otp.totp.issuer",
        'must be a string, but YAML reads 2024 as the number 2024; put it in quotes: "2024"',
    )


def test_section_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    assert_one_problem(tmp_path, BASE + "otp: auto\n", "otp", "otp", "must be a mapping")


def test_list_where_a_single_value_belongs_is_an_error(tmp_path: Path) -> None:
    text = BASE + "logging:\n  level: [info]\n"

    assert_one_problem(tmp_path, text, "level", "logging.level", "not a list")


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("1.5s", 1.5),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("30d", 2592000.0),
        (" 10 s ", 10.0),
        ("2H", 7200.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -0.5,
        "-5s",
        True,
        False,
        None,
        "",
        "s",
        "5 minutes",
        "10ms",
        "1.5.2s",
        "1e3",
        "inf",
        float("inf"),
        float("nan"),
        [30],
        "\uff11\uff10s",  # full-width digits
    ],
)
def test_parse_duration_rejects_naming_the_accepted_forms(value: object) -> None:
    with pytest.raises(ValueError, match=r'"90s", "15m", "12h", "30d"'):
        parse_duration(value)


def test_duration_garbage_in_the_file_names_the_accepted_forms(tmp_path: Path) -> None:
    text = BASE + "lockout:\n  duration: soon\n"

    assert_one_problem(tmp_path, text, "duration", "lockout.duration", '"15m"')


# -- listen ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:1812", ListenAddress("127.0.0.1", 1812)),
        ("0.0.0.0:1", ListenAddress("0.0.0.0", 1)),
        ("[::1]:1812", ListenAddress("::1", 1812)),
        ("[::]:65535", ListenAddress("::", 65535)),
    ],
)
def test_parse_listen_address(text: str, expected: ListenAddress) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('"1812"', "is not host:port"),
        ("1812", "is not host:port"),
        ("localhost:1812", "is not an IP address"),
        ("::1:1812", 'brackets: "[::1]:1812"'),
        ('"[127.0.0.1]:1812"', "only IPv6 addresses go in brackets"),
        ('"[::1]1812"', "is not host:port"),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:65536", "from 1 to 65535"),
        ("127.0.0.1:radius", "from 1 to 65535"),
        ('"127.0.0.1:"', "from 1 to 65535"),
    ],
)
def test_bad_listen_entry(tmp_path: Path, entry: str, fragment: str) -> None:
    text = BASE + f"listen:\n  - {entry}\n"

    assert_one_problem(tmp_path, text, f"- {entry}", "listen[0]", fragment)


def test_listen_must_not_be_empty(tmp_path: Path) -> None:
    assert_one_problem(tmp_path, BASE + "listen: []\n", "listen", "listen", "at least one")


def test_listen_must_be_a_list(tmp_path: Path) -> None:
    text = BASE + "listen: 127.0.0.1:1812\n"

    assert_one_problem(tmp_path, text, "listen", "listen", "must be a list")


def test_listen_address_twice_is_an_error(tmp_path: Path) -> None:
    text = BASE + 'listen:\n  - 127.0.0.1:1812\n  - "[::1]:1812"\n  - 127.0.0.1:1812  # again\n'

    assert_one_problem(tmp_path, text, "# again", "listen[2]", "listed twice (also listen[0])")


def test_listen_wildcard_overlapping_a_specific_address_is_an_error(tmp_path: Path) -> None:
    text = BASE + "listen:\n  - 0.0.0.0:1812\n  - 127.0.0.1:1812\n"

    assert_one_problem(tmp_path, text, "127.0.0.1:1812", "listen[1]", "overlaps listen[0]")


def test_listen_same_host_on_two_ports_is_fine(tmp_path: Path) -> None:
    text = BASE + "listen:\n  - 0.0.0.0:1812\n  - 127.0.0.1:11812\n  - '[::]:1812'\n"

    assert len(load(tmp_path, text).listen) == 3


# -- clients ---------------------------------------------------------------------------------


def clients(body: str) -> str:
    """A file with local_users (lines 1-2) and ``clients:`` on line 3, then ``body``."""
    return LOCAL + "clients:\n" + body


def test_clients_missing(tmp_path: Path) -> None:
    assert_one_problem(tmp_path, LOCAL, "local_users", "clients", "missing: list the RADIUS")


def test_clients_empty(tmp_path: Path) -> None:
    assert_one_problem(tmp_path, LOCAL + "clients: []\n", "clients", "clients", "at least one")


CLIENT_CASES = [
    pytest.param(
        "  - address: 10.0.0.0/8\n    secret: a-long-random-secret-0001\n",
        "address",
        "clients[0].name",
        "missing: give the client a name",
        id="name-missing",
    ),
    pytest.param(
        "  - name: vpn\n    secret: a-long-random-secret-0001\n",
        "name: vpn",
        "clients[0].address",
        "missing: give the client's IP address",
        id="address-missing",
    ),
    pytest.param(
        "  - name: vpn\n    address: 10.0.0.1/8\n    secret: a-long-random-secret-0001\n",
        "address",
        "clients[0].address",
        "10.0.0.1/8 has host bits set; write the network 10.0.0.0/8",
        id="host-bits",
    ),
    pytest.param(
        "  - name: vpn\n    address: nas.example.org\n    secret: a-long-random-secret-0001\n",
        "address",
        "clients[0].address",
        "'nas.example.org' is not an IP address or CIDR network",
        id="host-name",
    ),
    pytest.param(
        "  - name: vpn\n    address: 10.0.0.0/33\n    secret: a-long-random-secret-0001\n",
        "address",
        "clients[0].address",
        "is not an IP address or CIDR network",
        id="bad-prefix",
    ),
    pytest.param(
        "  - name: vpn\n    address: 10.0.0.0/8\n",
        "name: vpn",
        "clients[0].secret",
        "missing: give the shared secret as secret, or secret_file",
        id="no-secret",
    ),
    pytest.param(
        "  - name: vpn\n    address: 10.0.0.0/8\n    secret: a-long-random-secret-0001\n"
        "    secret_file: s\n",
        "secret_file",
        "clients[0].secret_file",
        "give secret or secret_file, not both",
        id="both-secrets",
    ),
    pytest.param(
        '  - name: vpn\n    address: 10.0.0.0/8\n    secret: ""\n',
        "secret",
        "clients[0].secret",
        "must not be empty",
        id="empty-secret",
    ),
    pytest.param(
        "  - name: vpn\n    address: 10.0.0.0/8\n    secret_file: nothing-here\n",
        "secret_file",
        "clients[0].secret_file",
        "cannot read",
        id="secret-file-missing",
    ),
    pytest.param(
        "  - name: vpn\n    address: 10.0.0.0/8\n    secert: a-long-random-secret-0001\n"
        "    secret: a-long-random-secret-0001\n",
        "secert",
        "clients[0].secert",
        "unknown key (did you mean 'secret'?)",
        id="typo",
    ),
    pytest.param(
        "  - name: a\n    address: 10.0.0.0/8\n    secret: a-long-random-secret-0001\n"
        "  - name: a  # again\n    address: 10.1.0.0/16\n    secret: a-long-random-secret-0002\n",
        "# again",
        "clients[1].name",
        "'a' is already the name of clients[0]",
        id="duplicate-name",
    ),
    pytest.param(
        "  - name: a\n    address: 10.0.0.0/8\n    secret: a-long-random-secret-0001\n"
        "  - name: b\n    address: 10.0.0.0/8  # same\n    secret: a-long-random-secret-0002\n",
        "# same",
        "clients[1].address",
        "10.0.0.0/8 is already the address of clients[0] (a)",
        id="duplicate-network",
    ),
    pytest.param(
        "  - name: a\n    address: 10.0.0.1\n    secret: a-long-random-secret-0001\n"
        "  - name: b\n    address: 10.0.0.1/32  # same\n    secret: a-long-random-secret-0002\n",
        "# same",
        "clients[1].address",
        "already the address of clients[0]",
        id="same-host-written-twice",
    ),
    pytest.param("  - vpn\n", "- vpn", "clients[0]", "must be a mapping", id="not-a-mapping"),
]


@pytest.mark.parametrize(("body", "needle", "path", "fragment"), CLIENT_CASES)
def test_bad_client(tmp_path: Path, body: str, needle: str, path: str, fragment: str) -> None:
    assert_one_problem(tmp_path, clients(body), needle, path, fragment)


def test_client_single_address_and_ipv6_network(tmp_path: Path) -> None:
    text = clients(
        "  - name: a\n    address: 192.0.2.7\n    secret: a-long-random-secret-0001\n"
        "  - name: b\n    address: 2001:db8::/48\n    secret: a-long-random-secret-0002\n"
    )

    networks = [c.network for c in load(tmp_path, text).clients]

    assert networks == [ipaddress.ip_network("192.0.2.7/32"), ipaddress.ip_network("2001:db8::/48")]


def test_short_secret_is_a_warning_not_an_error(tmp_path: Path) -> None:
    text = clients("  - name: vpn\n    address: 10.0.0.0/8\n    secret: testing123\n")

    assert_one_warning(
        tmp_path, text, "testing123", "clients[0].secret", "shorter than 16 characters"
    )
    assert load(tmp_path, text).clients[0].secret == b"testing123"


def test_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "vpn").write_bytes(b"from-a-file-secret-0001\r\n")
    (tmp_path / "secrets" / "vpn").chmod(0o600)
    text = clients("  - name: vpn\n    address: 10.0.0.0/8\n    secret_file: secrets/vpn\n")

    config = load(tmp_path, text)

    assert config.clients[0].secret == b"from-a-file-secret-0001"
    assert config.warnings == ()


def test_short_secret_file_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("short\n")
    (tmp_path / "s").chmod(0o600)
    text = clients("  - name: vpn\n    address: 10.0.0.0/8\n    secret_file: s\n")

    assert_one_warning(tmp_path, text, "secret_file", "clients[0].secret_file", "shorter than 16")


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("\n")
    text = clients("  - name: vpn\n    address: 10.0.0.0/8\n    secret_file: s\n")

    assert_one_problem(tmp_path, text, "secret_file", "clients[0].secret_file", "is empty")


def test_turning_off_both_blastradius_defences_is_a_warning(tmp_path: Path) -> None:
    text = clients(
        "  - name: vpn\n    address: 10.0.0.0/8\n    secret: a-long-random-secret-0001\n"
        "    require_message_authenticator: false\n    limit_proxy_state: false\n"
    )

    assert_one_warning(
        tmp_path, text, "limit_proxy_state", "clients[0].limit_proxy_state", "BlastRADIUS"
    )


# -- ldap or local_users ---------------------------------------------------------------------


def test_neither_ldap_nor_local_users(tmp_path: Path) -> None:
    assert_one_problem(
        tmp_path, CLIENT, "clients", "ldap", "missing: configure ldap to check passwords"
    )


def test_both_ldap_and_local_users(tmp_path: Path) -> None:
    text = CLIENT + LDAP + LOCAL

    assert_one_problem(tmp_path, text, "local_users", "local_users", "either ldap or local_users")


def test_local_users_path_is_required(tmp_path: Path) -> None:
    assert_one_problem(
        tmp_path, CLIENT + "local_users: {}\n", "local_users", "local_users.path", "missing"
    )


def ldap(*lines: str) -> str:
    """A file with one client (lines 1-4), ``ldap:`` on line 5, then ``lines``."""
    return CLIENT + "ldap:\n" + "".join(f"  {line}\n" for line in lines)


SERVERS = "servers: [ldap://127.0.0.1]"
USER_DN = 'user_dn: "uid={username},dc=example,dc=org"'
BASE_DN = 'base_dn: "dc=example,dc=org"'

LDAP_CASES = [
    pytest.param(
        (USER_DN,), "ldap:", "ldap.servers", "missing: list the directory", id="no-servers"
    ),
    pytest.param(("servers: []", USER_DN), "servers", "ldap.servers", "at least one", id="empty"),
    pytest.param(
        ("servers: ldap://127.0.0.1", USER_DN),
        "servers",
        "ldap.servers",
        "must be a list",
        id="str",
    ),
    pytest.param(
        ("servers: [http://x.example.org]", USER_DN),
        "servers",
        "ldap.servers[0]",
        "must look like ldap://host[:port] or ldaps://host[:port]",
        id="scheme",
    ),
    pytest.param(
        ("servers: [ldap1.example.org]", USER_DN),
        "servers",
        "ldap.servers[0]",
        "must look like ldap://",
        id="no-scheme",
    ),
    pytest.param(
        ('servers: ["ldap://x.example.org/dc=example"]', "start_tls: true", USER_DN),
        "servers",
        "ldap.servers[0]",
        "the DN belongs in user_dn or base_dn",
        id="path",
    ),
    pytest.param(
        ('servers: ["ldaps://x.example.org:99999"]', USER_DN),
        "servers",
        "ldap.servers[0]",
        "is not a valid URL",
        id="port",
    ),
    pytest.param((SERVERS,), "ldap:", "ldap.user_dn", "missing: give user_dn", id="no-dn"),
    pytest.param(
        (SERVERS, USER_DN, BASE_DN), "base_dn", "ldap.base_dn", "not both", id="user-and-base-dn"
    ),
    pytest.param(
        (SERVERS, 'user_dn: "uid=alice,dc=example,dc=org"'),
        "user_dn",
        "ldap.user_dn",
        "must contain {username}",
        id="user-dn-no-placeholder",
    ),
    pytest.param(
        (SERVERS, 'user_dn: "uid={user},dc=example,dc=org"'),
        "user_dn",
        "ldap.user_dn",
        "unknown placeholder {user}",
        id="user-dn-wrong-placeholder",
    ),
    pytest.param(
        (SERVERS, 'user_dn: "uid={username,dc=example"'),
        "user_dn",
        "ldap.user_dn",
        "unmatched { or }",
        id="user-dn-brace",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'user_filter: "uid={username}"'),
        "user_filter",
        "ldap.user_filter",
        "must be one parenthesised LDAP filter",
        id="filter-no-parens",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'user_filter: "(uid={username})(objectClass=person)"'),
        "user_filter",
        "ldap.user_filter",
        "must be one parenthesised LDAP filter",
        id="filter-two-groups",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'user_filter: "(uid=alice)"'),
        "user_filter",
        "ldap.user_filter",
        "must contain {username}",
        id="filter-no-placeholder",
    ),
    pytest.param(
        (SERVERS, USER_DN, 'user_filter: "(uid={username})"'),
        "user_filter",
        "ldap.user_filter",
        "only used with base_dn",
        id="filter-with-user-dn",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'bind_dn: "cn=radmfa,dc=example,dc=org"'),
        "bind_dn",
        "ldap.bind_dn",
        "needs bind_password or bind_password_file",
        id="bind-dn-without-password",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'bind_dn: "cn=r,dc=example"', 'bind_password: ""'),
        "bind_password",
        "ldap.bind_password",
        "must not be empty",
        id="empty-bind-password",
    ),
    pytest.param(
        (
            SERVERS,
            BASE_DN,
            'bind_dn: "cn=r,dc=example"',
            'bind_password: "pw-pw-pw"',
            "bind_password_file: pw",
        ),
        "bind_password_file",
        "ldap.bind_password_file",
        "give bind_password or bind_password_file, not both",
        id="both-passwords",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'bind_password: "pw-pw-pw"'),
        "bind_password",
        "ldap.bind_password",
        "bind_dn is not",
        id="password-without-bind-dn",
    ),
    pytest.param(
        (SERVERS, USER_DN, 'bind_dn: "cn=r,dc=example"', 'bind_password: "pw-pw-pw"'),
        "bind_dn",
        "ldap.bind_dn",
        "only used with base_dn",
        id="bind-dn-with-direct-bind",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'bind_dn: "cn=r,dc=example"', "bind_password: no"),
        "bind_password",
        "ldap.bind_password",
        "put it in quotes",
        id="unquoted-bind-password",
    ),
    pytest.param(
        (SERVERS, BASE_DN, 'bind_dn: "cn=r,dc=example"', "bind_password_file: missing"),
        "bind_password_file",
        "ldap.bind_password_file",
        "cannot read",
        id="bind-password-file-missing",
    ),
    pytest.param(
        ("servers: [ldaps://ldap.example.org]", USER_DN, "start_tls: true"),
        "start_tls",
        "ldap.start_tls",
        "cannot be used with ldaps://",
        id="start-tls-with-ldaps",
    ),
    pytest.param(
        (SERVERS, USER_DN, "start_tls: yes please"),
        "start_tls",
        "ldap.start_tls",
        "must be true or false",
        id="start-tls-string",
    ),
    pytest.param(
        (SERVERS, USER_DN, "ca_file: no-such-ca.pem"),
        "ca_file",
        "ldap.ca_file",
        "no-such-ca.pem does not exist",
        id="ca-file-missing",
    ),
    pytest.param(
        (SERVERS, USER_DN, "timeout: 0"), "timeout", "ldap.timeout", "more than 0s", id="timeout-0"
    ),
    pytest.param(
        (SERVERS, USER_DN, "timeout: 61s"),
        "timeout",
        "ldap.timeout",
        "more than 0s and at most 1m (got 61s)",
        id="timeout-61",
    ),
    pytest.param(
        (SERVERS, USER_DN, "pool_size: 0"),
        "pool_size",
        "ldap.pool_size",
        "between 1 and 256 (got 0)",
        id="pool-0",
    ),
    pytest.param(
        (SERVERS, USER_DN, "pool_size: 257"),
        "pool_size",
        "ldap.pool_size",
        "between 1 and 256",
        id="pool-257",
    ),
    pytest.param(
        (SERVERS, USER_DN, "retry_after: -1"),
        "retry_after",
        "ldap.retry_after",
        "must be 0 or more",
        id="retry-negative",
    ),
    pytest.param(
        (SERVERS, USER_DN, "sever: x"),
        "sever",
        "ldap.sever",
        "unknown key (did you mean 'servers'?)",
        id="typo",
    ),
    pytest.param(
        (SERVERS, BASE_DN, "user_cache: -5s"),
        "user_cache",
        "ldap.user_cache",
        "it must be 0 or more",
        id="user-cache-negative",
    ),
    pytest.param(
        (SERVERS, BASE_DN, "user_cache: -1"),
        "user_cache",
        "ldap.user_cache",
        "it must be 0 or more",
        id="user-cache-negative-number",
    ),
    pytest.param(
        (SERVERS, BASE_DN, "user_cache: 2h"),
        "user_cache",
        "ldap.user_cache",
        "must be at most 1h (got 2h): a cached entry hides directory changes",
        id="user-cache-too-long",
    ),
    pytest.param(
        (SERVERS, BASE_DN, "user_cache: 3601"),
        "user_cache",
        "ldap.user_cache",
        "must be at most 1h (got 3601s)",
        id="user-cache-just-too-long",
    ),
    pytest.param(
        (SERVERS, BASE_DN, "user_cache: soon"),
        "user_cache",
        "ldap.user_cache",
        "is not a duration",
        id="user-cache-not-a-duration",
    ),
]


@pytest.mark.parametrize(("lines", "needle", "path", "fragment"), LDAP_CASES)
def test_bad_ldap(
    tmp_path: Path, lines: tuple[str, ...], needle: str, path: str, fragment: str
) -> None:
    assert_one_problem(tmp_path, ldap(*lines), needle, path, fragment)


def test_ldap_search_then_bind_with_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("bind-secret\n")
    text = ldap(SERVERS, BASE_DN, 'bind_dn: "cn=r,dc=example"', "bind_password_file: pw")

    settings = load(tmp_path, text).ldap

    assert settings is not None
    assert (settings.base_dn, settings.user_filter) == ("dc=example,dc=org", "(uid={username})")
    assert (settings.bind_dn, settings.bind_password) == ("cn=r,dc=example", "bind-secret")


def test_ldap_anonymous_search_is_allowed(tmp_path: Path) -> None:
    settings = load(tmp_path, ldap(SERVERS, BASE_DN)).ldap

    assert settings is not None and settings.bind_dn is None and settings.bind_password is None


def test_ldap_cleartext_to_a_remote_server_is_a_warning(tmp_path: Path) -> None:
    text = ldap("servers: [ldap://127.0.0.1, ldap://ldap.example.org]", USER_DN)

    assert_one_warning(tmp_path, text, "servers", "ldap.servers[1]", "unencrypted")


@pytest.mark.parametrize(
    "servers",
    ["[ldap://localhost, 'ldap://[::1]:389']", "[ldaps://ldap.example.org]"],
)
def test_ldap_loopback_or_tls_draws_no_warning(tmp_path: Path, servers: str) -> None:
    assert load(tmp_path, ldap(f"servers: {servers}", USER_DN)).warnings == ()


def test_ldap_start_tls_silences_the_cleartext_warning(tmp_path: Path) -> None:
    text = ldap("servers: [ldap://ldap.example.org]", USER_DN, "start_tls: true")

    assert load(tmp_path, text).warnings == ()


def test_ldap_user_cache_is_off_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path, ldap(SERVERS, BASE_DN)).ldap

    assert settings is not None and settings.user_cache == 0.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60.0), ("2m", 120.0), ("90", 90.0), ("1.5", 1.5), ("1h", 3600.0)]
)
def test_ldap_user_cache_is_a_duration(tmp_path: Path, text: str, seconds: float) -> None:
    settings = load(tmp_path, ldap(SERVERS, BASE_DN, f"user_cache: {text}")).ldap

    assert settings is not None and settings.user_cache == seconds


def test_ldap_user_cache_with_direct_bind_is_accepted_and_unused(tmp_path: Path) -> None:
    config = load(tmp_path, ldap(SERVERS, USER_DN, "user_cache: 60s"))

    assert config.ldap is not None and config.ldap.user_cache == 60.0
    assert config.warnings == ()


def test_ldap_timeout_of_exactly_60s_is_allowed(tmp_path: Path) -> None:
    settings = load(tmp_path, ldap(SERVERS, USER_DN, "timeout: 1m")).ldap

    assert settings is not None and settings.timeout == 60.0


# -- otp, lockout, radius, logging, store ----------------------------------------------------


def section(name: str, *lines: str) -> str:
    """BASE (lines 1-6), then ``name:`` on line 7, then ``lines`` indented under it."""
    return BASE + f"{name}:\n" + "".join(f"  {line}\n" for line in lines)


SECTION_CASES = [
    (("otp", "mode: push"), "mode", "otp.mode", "must be one of append, challenge, auto"),
    (("otp", "totp:", "  digits: 5"), "digits", "otp.totp.digits", "between 6 and 10 (got 5)"),
    (("otp", "totp:", "  digits: 11"), "digits", "otp.totp.digits", "between 6 and 10"),
    (("otp", "totp:", "  period: 0"), "period", "otp.totp.period", "between 1 and 120"),
    (("otp", "totp:", "  period: 121"), "period", "otp.totp.period", "between 1 and 120"),
    (("otp", "totp:", "  algorithm: MD5"), "algorithm", "otp.totp.algorithm", "SHA1, SHA256"),
    (("otp", "totp:", "  skew: -1"), "skew", "otp.totp.skew", "between 0 and 10"),
    (("otp", "totp:", "  skew: 11"), "skew", "otp.totp.skew", "between 0 and 10"),
    (("otp", "totp:", '  issuer: ""'), "issuer", "otp.totp.issuer", "must not be empty"),
    (("otp", "totp:", "  digitz: 6"), "digitz", "otp.totp.digitz", "did you mean 'digits'?"),
    (
        ("otp", "challenge_timeout: 9s"),
        "challenge_timeout",
        "otp.challenge_timeout",
        "between 10s and 10m (got 9s)",
    ),
    (
        ("otp", "challenge_timeout: 601"),
        "challenge_timeout",
        "otp.challenge_timeout",
        "between 10s and 10m",
    ),
    (
        ("otp", f'challenge_prompt: "{"x" * 254}"'),
        "challenge_prompt",
        "otp.challenge_prompt",
        "at most 253",
    ),
    (("lockout", "max_failures: 0"), "max_failures", "lockout.max_failures", "between 1 and 100"),
    (
        ("lockout", "max_failures: 101"),
        "max_failures",
        "lockout.max_failures",
        "between 1 and 100",
    ),
    (("lockout", "duration: 0.5s"), "duration", "lockout.duration", "at least 1s (got 0.5s)"),
    (("lockout", "duration: 0"), "duration", "lockout.duration", "at least 1s"),
    (
        ("radius", "reject_delay: 3"),
        "reject_delay",
        "radius.reject_delay",
        "between 0s and 2.5s (got 3)",
    ),
    (("radius", "reject_delay: -1s"), "reject_delay", "radius.reject_delay", "0 or more"),
    (
        ("radius", "duplicate_window: 4s"),
        "duplicate_window",
        "radius.duplicate_window",
        "between 5s and 30s",
    ),
    (
        ("radius", "duplicate_window: 31"),
        "duplicate_window",
        "radius.duplicate_window",
        "between 5s and 30s",
    ),
    (
        ("radius", "max_in_flight: 0"),
        "max_in_flight",
        "radius.max_in_flight",
        "between 1 and 1000000",
    ),
    (
        ("radius", "request_timeout: 0.5"),
        "request_timeout",
        "radius.request_timeout",
        "between 1s and 1m",
    ),
    (
        ("radius", "reject_delay: 2s", "request_timeout: 2s"),
        "request_timeout",
        "radius.request_timeout",
        "must be longer than reject_delay",
    ),
    (("logging", "level: verbose"), "level", "logging.level", "debug, info, warning, error"),
    (
        ("store", "path: same", "key_file: same"),
        "key_file",
        "store.key_file",
        "separate file from the database",
    ),
    (("store", "path: 42"), "path: 42", "store.path", 'put it in quotes: "42"'),
]


@pytest.mark.parametrize(
    ("lines", "needle", "path", "fragment"),
    SECTION_CASES,
    ids=[case[2] for case in SECTION_CASES],
)
def test_bad_setting(
    tmp_path: Path, lines: tuple[str, ...], needle: str, path: str, fragment: str
) -> None:
    assert_one_problem(tmp_path, section(*lines), needle, path, fragment)


@pytest.mark.parametrize("digits", [7, 9, 10])
def test_unusual_totp_digits_are_a_warning(tmp_path: Path, digits: int) -> None:
    text = section("otp", "totp:", f"  digits: {digits}")

    assert_one_warning(tmp_path, text, "digits", "otp.totp.digits", "only show 6 or 8 digits")
    assert load(tmp_path, text).otp.totp.digits == digits


def test_case_insensitive_choices_are_stored_canonically(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        BASE + "otp:\n  mode: APPEND\n  totp: {algorithm: sha256}\nlogging: {level: Warning}\n",
    )

    assert (config.otp.mode, config.otp.totp.algorithm) == ("append", "SHA256")
    assert config.logging.level == "warning"


def test_boundary_values_are_accepted(tmp_path: Path) -> None:
    text = BASE + (
        "otp:\n  totp: {digits: 10, period: 120, skew: 0}\n  challenge_timeout: 10m\n"
        "lockout: {max_failures: 100, duration: 1s}\n"
        "radius: {reject_delay: 2.5s, duplicate_window: 5, request_timeout: 60}\n"
    )

    config = load(tmp_path, text)

    assert config.otp.challenge_timeout == 600.0
    assert (config.lockout.max_failures, config.lockout.duration) == (100, 1.0)
    assert (config.radius.reject_delay, config.radius.duplicate_window) == (2.5, 5.0)


# -- paths -----------------------------------------------------------------------------------


def test_relative_paths_are_resolved_from_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc" / "radmfa"
    etc.mkdir(parents=True)
    (etc / "vpn.secret").write_text("a-long-random-secret-0001\n")
    text = "local_users:\n  path: ../users.txt\n" + (
        "clients:\n  - name: vpn\n    address: 10.0.0.0/8\n    secret_file: vpn.secret\n"
        "store:\n  path: db/radmfa.sqlite3\n  key_file: /abs/secret.key\n"
    )
    path = write(etc, text)
    monkeypatch.chdir(tmp_path)  # not where the file is

    config = load_config(path.relative_to(tmp_path))

    assert config.local_users == LocalUsersConfig(str(tmp_path / "etc" / "users.txt"))
    assert config.store == StoreConfig(str(etc / "db" / "radmfa.sqlite3"), "/abs/secret.key")
    assert config.clients[0].secret == b"a-long-random-secret-0001"
    assert config.source == "etc/radmfa/radmfa.yaml"


def test_relative_ldap_files_are_resolved_from_the_config_files_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load(tmp_path, ldap(SERVERS, USER_DN, "ca_file: tls/ca.pem")).ldap

    assert settings is not None and settings.ca_file == str(tmp_path / "tls" / "ca.pem")


def test_store_postgresql_takes_a_dsn_a_password_file_and_a_pool_size(tmp_path: Path) -> None:
    (tmp_path / "pg-password").write_text("s3cret-pw\n")
    (tmp_path / "pg-password").chmod(0o600)
    text = BASE + (
        "store:\n  engine: postgresql\n"
        '  dsn: "host=db1.example.org dbname=radmfa user=radmfa"\n'
        "  password_file: pg-password\n  pool_size: 4\n  key_file: /abs/secret.key\n"
    )
    config = load_config(write(tmp_path, text))
    store = config.store
    assert (store.engine, store.dsn, store.password, store.pool_size) == (
        "postgresql",
        "host=db1.example.org dbname=radmfa user=radmfa",
        "s3cret-pw",
        4,
    )
    assert "s3cret-pw" not in repr(store)


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ("engine: postgresql\n", "store.dsn: missing"),
        ('engine: postgresql\n  dsn: "host=db1 port"\n', "store.dsn: is not a valid libpq"),
        ("engine: postgresql\n  dsn: host=db1\n  path: /x.db\n", "store.path: is only used"),
        ("dsn: host=db1\n", "store.dsn: is only used with engine: postgresql"),
        (
            "engine: postgresql\n  dsn: host=db1\n  password_file: /nonexistent/pw\n",
            "store.password_file",
        ),
        ("engine: mysql\n", "store.engine"),
        ("engine: postgresql\n  dsn: host=db1\n  pool_size: 0\n", "store.pool_size"),
    ],
)
def test_store_section_problems_are_reported_with_file_and_line(
    tmp_path: Path, store: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BASE + "store:\n  " + store))
    text = "\n".join(caught.value.problems)
    assert problem in text, text
    assert "radmfa.yaml:" in text


SEARCH_BASE = CLIENT + (
    "ldap:\n  servers: [ldap://127.0.0.1]\n  base_dn: dc=example,dc=org\n"
    "  bind_dn: cn=radmfa,dc=example,dc=org\n  bind_password: service-secret\n"
)


@pytest.mark.parametrize(
    "spelled", ["({username}=alice)", "(&(objectClass=person)(x{username}=1))"]
)
def test_a_user_filter_with_the_name_in_an_attribute_is_refused(tmp_path: Path, spelled: str):
    # ({username}=alice): the login "uid" would find alice's entry and bind as it, while
    # radmfa keeps a second factor, lockout and admin state for a user called "uid"
    text = SEARCH_BASE + f'  user_filter: "{spelled}"\n'
    assert_one_problem(tmp_path, text, "user_filter", "ldap.user_filter", "only stand in a value")


def test_a_user_filter_that_never_compares_the_whole_name_is_a_warning(tmp_path: Path):
    text = SEARCH_BASE + '  user_filter: "(userPrincipalName={username}@example.org)"\n'
    assert_one_warning(tmp_path, text, "user_filter", "ldap.user_filter", "named by the login")


def test_a_client_may_set_its_own_mode(tmp_path: Path):
    text = CLIENT + "    mode: Append\n" + LOCAL
    assert load(tmp_path, text).clients[0].mode == "append"
    assert load(tmp_path, BASE).clients[0].mode is None
    bad = CLIENT + "    mode: sometimes\n" + LOCAL
    assert_one_problem(tmp_path, bad, "mode:", "clients[0].mode", "must be one of")
