"""Config keys for operations: systemd credentials, metrics, log format."""

from __future__ import annotations

from pathlib import Path

import pytest

from radmfa.config import ConfigError, ListenAddress, MetricsConfig, load_config

BASE = """\
clients:
  - name: vpn
    address: 192.0.2.10
{client}
ldap:
  servers: [ldaps://ldap.example.org]
{ldap}
{extra}
"""


def write(tmp_path: Path, client: str = '    secret: "a-long-enough-secret-123"', ldap: str = "",
          extra: str = "") -> Path:  # fmt: skip
    if not ldap:
        ldap = '  user_dn: "uid={username},ou=people,dc=example,dc=org"'
    path = tmp_path / "radmfa.yaml"
    path.write_text(BASE.format(client=client, ldap=ldap, extra=extra))
    path.chmod(0o600)  # private, as radmfa init writes it (else the inline secret is a warning)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "creds"
    directory.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    return directory


def test_secret_credential_is_read_from_the_credentials_directory(tmp_path, credentials):
    (credentials / "vpn-secret").write_bytes(b"from-systemd-credential-0123\n")
    config = load_config(write(tmp_path, "    secret_credential: vpn-secret"))
    assert config.clients[0].secret == b"from-systemd-credential-0123"


def test_bind_password_credential(tmp_path, credentials):
    (credentials / "ldap-bind-password").write_text("s3rvice\n")
    ldap = (
        '  base_dn: "ou=people,dc=example,dc=org"\n'
        '  bind_dn: "cn=radmfa,dc=example,dc=org"\n'
        "  bind_password_credential: ldap-bind-password"
    )
    config = load_config(write(tmp_path, ldap=ldap))
    assert config.ldap is not None and config.ldap.bind_password == "s3rvice"


def test_missing_credential_names_file_line_and_the_unit_line(tmp_path, credentials):
    path = write(tmp_path, "    secret_credential: vpn-secret")
    (found,) = problems(path)
    assert found.startswith(f"{path}:4: clients[0].secret_credential: credential 'vpn-secret'")
    assert str(credentials) in found
    assert "LoadCredential=vpn-secret:/etc/credstore/radmfa-vpn-secret" in found


def test_credential_outside_systemd_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (found,) = problems(write(tmp_path, "    secret_credential: vpn-secret"))
    assert "$CREDENTIALS_DIRECTORY is not set" in found


def test_credential_name_is_not_a_path_and_not_with_another_secret(tmp_path, credentials):
    (found,) = problems(write(tmp_path, "    secret_credential: ../etc/shadow"))
    assert "is not a credential name" in found
    both = '    secret: "a-long-enough-secret-123"\n    secret_credential: vpn-secret'
    (found,) = problems(write(tmp_path, both))
    assert "clients[0].secret_credential: give secret or secret_credential, not both" in found


def test_empty_credential_is_an_error(tmp_path, credentials):
    (credentials / "vpn-secret").write_text("\n")
    (found,) = problems(write(tmp_path, "    secret_credential: vpn-secret"))
    assert "is empty" in found


def test_metrics_off_by_default_loopback_when_given(tmp_path):
    assert load_config(write(tmp_path)).metrics is None
    assert load_config(write(tmp_path, extra="metrics: {}")).metrics == MetricsConfig(
        ListenAddress("127.0.0.1", 9812)
    )
    config = load_config(write(tmp_path, extra='metrics:\n  listen: "[::1]:9100"'))
    assert config.metrics == MetricsConfig(ListenAddress("::1", 9100))
    assert config.warnings == ()


def test_metrics_on_a_public_address_warns_and_bad_address_is_an_error(tmp_path):
    config = load_config(write(tmp_path, extra='metrics:\n  listen: "0.0.0.0:9812"'))
    assert any("metrics.listen" in w and "no authentication" in w for w in config.warnings)
    (found,) = problems(write(tmp_path, extra="metrics:\n  listen: nowhere"))
    assert "metrics.listen: 'nowhere' is not host:port" in found and "127.0.0.1:9812" in found


def test_log_format(tmp_path):
    assert load_config(write(tmp_path)).logging.format == "text"
    config = load_config(write(tmp_path, extra="logging:\n  format: JSON"))
    assert config.logging.format == "json"
    (found,) = problems(write(tmp_path, extra="logging:\n  format: xml"))
    assert "logging.format: must be one of text, json" in found
