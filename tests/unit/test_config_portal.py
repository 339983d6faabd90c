"""The ``portal`` section: off unless given, and every mistake a ``FILE:LINE`` problem."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from radmfa.config import ConfigError, ListenAddress, PortalConfig, load_config
from tests.support.certs import make_ca, make_server_cert

BASE = """\
clients:
  - name: vpn
    address: 192.0.2.10
    secret: "a-long-enough-secret-123"
ldap:
  servers: [ldaps://ldap.example.org]
  user_dn: "uid={username},ou=people,dc=example,dc=org"
"""


def write(tmp_path: Path, portal: str) -> Path:
    path = tmp_path / "radmfa.yaml"
    path.write_text(BASE + portal)
    path.chmod(0o600)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_off_unless_the_section_is_present(tmp_path):
    assert load_config(write(tmp_path, "")).portal is None


def test_an_empty_section_serves_on_loopback_with_the_issue_defaults(tmp_path):
    portal = load_config(write(tmp_path, "portal: {}\n")).portal
    assert portal == PortalConfig()
    assert portal.listen == ListenAddress("127.0.0.1", 9443)
    assert (portal.session_idle, portal.session_max) == (600.0, 3600.0)
    assert portal.reauth_after == 300.0
    assert portal.tls is None and portal.trusted_proxies == () and portal.public_url is None


def test_every_key_is_read(tmp_path):
    portal = load_config(
        write(
            tmp_path,
            "portal:\n"
            '  listen: "[::1]:8443"\n'
            '  public_url: "https://mfa.example.org"\n'
            "  trusted_proxies: [127.0.0.1/32, '::1']\n"
            "  session_idle: 5m\n"
            "  session_max: 2h\n"
            "  helpdesk_groups: [mfa-helpdesk, 'cn=desk,ou=groups,dc=example,dc=org']\n"
            "  reauth_after: 2m\n",
        )
    ).portal
    assert portal is not None
    assert portal.listen == ListenAddress("::1", 8443)
    assert portal.public_url == "https://mfa.example.org/"
    assert portal.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert (portal.session_idle, portal.session_max) == (300.0, 7200.0)
    assert portal.helpdesk_groups == ("mfa-helpdesk", "cn=desk,ou=groups,dc=example,dc=org")
    assert portal.reauth_after == 120.0


def test_unknown_keys_and_bad_values_point_at_their_lines(tmp_path):
    found = problems(
        write(
            tmp_path,
            "portal:\n"
            "  listen: nowhere\n"  # line 9
            "  public_url: ftp://mfa.example.org/\n"
            "  trusted_proxy: [127.0.0.1/32]\n"
            "  session_idle: 10s\n",
        )
    )
    path = tmp_path / "radmfa.yaml"
    assert found[0].startswith(f"{path}:9: portal.listen: 'nowhere' is not host:port")
    assert "9443" in found[0]
    assert found[1].startswith(f"{path}:10: portal.public_url: 'ftp://mfa.example.org/' must be")
    assert (
        found[2]
        == f"{path}:11: portal.trusted_proxy: unknown key (did you mean 'trusted_proxies'?)"
    )
    assert found[3].startswith(f"{path}:12: portal.session_idle: must be between 1m and 1d")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mfa.example.org/", "must be https://"),
        ("https://user:pw@mfa.example.org/", "user name or password"),
        ("https://mfa.example.org/?a=1", "query or fragment"),
        ("https:///nohost", "absolute https:// URL"),
        ("https://mfa.example.org:99999/", "is not a URL"),
    ],
)
def test_public_url_must_be_an_absolute_https_url(tmp_path, url, problem):
    (found,) = problems(write(tmp_path, f'portal:\n  public_url: "{url}"\n'))
    assert "portal.public_url" in found and problem in found


def test_public_url_may_be_plain_http_on_loopback(tmp_path):
    portal = load_config(write(tmp_path, 'portal:\n  public_url: "http://127.0.0.1:9443"\n'))
    assert portal.portal is not None and portal.portal.public_url == "http://127.0.0.1:9443/"


def test_a_network_address_without_tls_or_proxy_is_refused_with_the_reason(tmp_path):
    (found,) = problems(write(tmp_path, 'portal:\n  listen: "0.0.0.0:9443"\n'))
    assert found.startswith(f"{tmp_path / 'radmfa.yaml'}:9: portal.listen: 0.0.0.0 is reachable")
    assert "passwords" in found and "tls" in found and "trusted_proxies" in found


def test_a_network_address_behind_a_trusted_proxy_is_accepted(tmp_path):
    config = load_config(
        write(tmp_path, 'portal:\n  listen: "0.0.0.0:9443"\n  trusted_proxies: [10.0.0.5]\n')
    )
    assert config.portal is not None and config.portal.listen.host == "0.0.0.0"


def test_trusted_proxies_must_be_networks(tmp_path):
    found = problems(
        write(tmp_path, "portal:\n  trusted_proxies: [proxy.example.org, 10.0.0.1/8]\n")
    )
    assert "'proxy.example.org' is not an IP address or CIDR network" in found[0]
    assert "write the network 10.0.0.0/8" in found[1]


def test_idle_longer_than_max_is_refused(tmp_path):
    (found,) = problems(write(tmp_path, "portal:\n  session_idle: 2h\n  session_max: 1h\n"))
    assert "portal.session_idle: must not be longer than session_max" in found


def _tls(tmp_path: Path) -> tuple[Path, Path]:
    ca = make_ca(tmp_path / "ca")
    server = make_server_cert(tmp_path / "srv", ca)
    return server.cert_path, server.key_path


def test_tls_with_a_matching_certificate_and_key(tmp_path):
    cert, key = _tls(tmp_path)
    config = load_config(
        write(
            tmp_path,
            f'portal:\n  listen: "0.0.0.0:9443"\n  tls: {{cert_file: {cert}, key_file: {key}}}\n',
        )
    )
    assert config.portal is not None and config.portal.tls is not None
    assert config.portal.tls.cert_file == str(cert)


def test_tls_files_that_cannot_be_used_are_named(tmp_path):
    cert, key = _tls(tmp_path)
    other_cert, _other_key = _tls(tmp_path / "other")
    missing = tmp_path / "missing.pem"
    (found,) = problems(
        write(tmp_path, f"portal:\n  tls: {{cert_file: {missing}, key_file: {key}}}\n")
    )
    assert f"portal.tls.cert_file: cannot read {missing}: No such file or directory" in found
    (found,) = problems(write(tmp_path, f"portal:\n  tls: {{cert_file: {key}, key_file: {key}}}\n"))
    assert "holds no PEM certificate" in found
    (found,) = problems(
        write(tmp_path, f"portal:\n  tls: {{cert_file: {cert}, key_file: {cert}}}\n")
    )
    assert "portal.tls.key_file" in found and "holds no PEM private key" in found
    (found,) = problems(
        write(tmp_path, f"portal:\n  tls: {{cert_file: {other_cert}, key_file: {key}}}\n")
    )
    assert "is not the private key of the certificate" in found
    (found,) = problems(write(tmp_path, f"portal:\n  tls: {{cert_file: {cert}}}\n"))
    assert "portal.tls.key_file: missing" in found


# -- the grace Reply-Message points at the portal ------------------------------------------------

PORTAL_URL = 'portal: {public_url: "https://mfa.example.org/"}\n'


def test_the_default_grace_message_names_the_portal_when_it_has_an_address(tmp_path):
    with_url = load_config(write(tmp_path, PORTAL_URL)).policy.unenrolled.message
    assert with_url.format(left="13 days") == (
        "Please set up two-factor authentication now at https://mfa.example.org/: 13 days left."
    )
    without = load_config(write(tmp_path, "portal: {}\n")).policy.unenrolled.message
    assert "{url}" not in without and "http" not in without.format(left="1 day")


def test_url_in_a_grace_message_is_the_public_url(tmp_path):
    text = PORTAL_URL + 'policy: {unenrolled: {message: "Enroll at {url} ({left} left)"}}\n'
    message = load_config(write(tmp_path, text)).policy.unenrolled.message
    assert message.format(left="2 logins") == "Enroll at https://mfa.example.org/ (2 logins left)"


def test_url_in_a_grace_message_needs_a_public_url(tmp_path):
    text = 'policy: {unenrolled: {message: "Enroll at {url}"}}\n'
    (problem,) = problems(write(tmp_path, text))
    assert "radmfa.yaml:8: policy.unenrolled.message: uses {url}: set portal.public_url" in problem


def test_a_grace_message_too_long_with_the_url_is_refused(tmp_path):
    long_url = "https://mfa.example.org/" + "x" * 150 + "/"
    text = (
        f'portal: {{public_url: "{long_url}"}}\n'
        'policy: {unenrolled: {message: "Please set up two-factor authentication at {url}"}}\n'
    )
    (problem,) = problems(write(tmp_path, text))
    assert "it must stay under 213" in problem
    # the default message leaves a long address out rather than cut it
    message = load_config(write(tmp_path, f'portal: {{public_url: "{long_url}"}}\n'))
    assert "x" * 150 not in message.policy.unenrolled.message


@pytest.mark.parametrize("value", ["0s", "2d", "soon", "-5m"])
def test_reauth_after_out_of_bounds_points_at_its_line(tmp_path, value):
    (found,) = problems(write(tmp_path, f"portal:\n  session_max: 1h\n  reauth_after: {value}\n"))
    assert found.startswith(f"{tmp_path / 'radmfa.yaml'}:10: portal.reauth_after: "), found
