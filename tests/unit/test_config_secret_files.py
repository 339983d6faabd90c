"""Files holding secrets that every user of the host can read draw a warning (not an error:
existing installations keep starting), in check-config's output and the start-up log."""

from __future__ import annotations

from pathlib import Path

import pytest

from radmfa.cli.main import main
from radmfa.config import load_config

CLIENT_FILE = """\
clients:
  - name: vpn
    address: 10.0.0.0/8
    secret_file: vpn.secret
local_users:
  path: users
"""


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def config_file(tmp_path: Path, text: str, mode: int = 0o640) -> Path:
    write(tmp_path / "vpn.secret", "a-long-random-secret-0001\n", 0o640)
    return write(tmp_path / "radmfa.yaml", text, mode)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o444])
def test_a_client_secret_file_others_can_read_is_a_warning(tmp_path: Path, mode: int):
    path = config_file(tmp_path, CLIENT_FILE)
    (tmp_path / "vpn.secret").chmod(mode)

    warnings = load_config(path).warnings

    secret = tmp_path / "vpn.secret"
    assert warnings == (
        f"{path}:{line_of(CLIENT_FILE, 'secret_file')}: clients[0].secret_file: {secret} holds "
        f"a secret but every user of this host can read it (mode {mode:04o}); chmod o-r {secret}",
    )


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660])
def test_a_secret_file_for_its_owner_and_group_is_quiet(tmp_path: Path, mode: int):
    path = config_file(tmp_path, CLIENT_FILE)
    (tmp_path / "vpn.secret").chmod(mode)

    assert load_config(path).warnings == ()


def test_an_ldap_bind_password_file_others_can_read_is_a_warning(tmp_path: Path):
    write(tmp_path / "bindpw", "s3rvice\n", 0o644)
    text = CLIENT_FILE.replace("local_users:\n  path: users\n", "") + (
        "ldap:\n"
        "  servers: [ldap://127.0.0.1]\n"
        '  base_dn: "dc=example,dc=org"\n'
        '  bind_dn: "cn=radmfa,dc=example,dc=org"\n'
        "  bind_password_file: bindpw\n"
    )
    path = config_file(tmp_path, text)

    (warning,) = load_config(path).warnings

    assert f":{line_of(text, 'bind_password_file')}: ldap.bind_password_file: " in warning
    assert "every user of this host can read it (mode 0644)" in warning


def test_an_smtp_password_file_others_can_read_is_a_warning(tmp_path: Path):
    write(tmp_path / "smtp.pw", "mail-pass\n", 0o644)
    text = CLIENT_FILE + (
        "otp:\n"
        "  email:\n"
        "    from: radmfa@example.org\n"
        "    smtp: {host: smtp.example.org, username: u, password_file: smtp.pw}\n"
    )
    path = config_file(tmp_path, text)

    (warning,) = load_config(path).warnings

    assert ": otp.email.smtp.password_file: " in warning
    assert "can read it (mode 0644)" in warning


INLINE = """\
clients:
  - name: vpn
    address: 10.0.0.0/8
    secret: a-long-random-secret-0001
  - name: wifi
    address: 10.1.0.0/16
    secret: another-long-random-secret-02
local_users:
  path: users
"""


def test_a_config_with_inline_secrets_others_can_read_is_one_warning(tmp_path: Path):
    path = write(tmp_path / "radmfa.yaml", INLINE, 0o644)

    warnings = load_config(path).warnings

    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{path}:{line_of(INLINE, 'secret:')}: clients[0].secret: ")
    assert "this file holds 2 secrets and every user of this host can read it" in warnings[0]
    assert f"chmod o-r {path}" in warnings[0]
    assert "a-long-random-secret" not in warnings[0]  # never the secret itself


def test_a_private_config_with_inline_secrets_is_quiet(tmp_path: Path):
    assert load_config(write(tmp_path / "radmfa.yaml", INLINE, 0o640)).warnings == ()


def test_a_readable_config_without_inline_secrets_is_quiet(tmp_path: Path):
    assert load_config(config_file(tmp_path, CLIENT_FILE, 0o644)).warnings == ()


def test_check_config_prints_the_warning_and_still_accepts(tmp_path: Path, capsys):
    path = write(tmp_path / "radmfa.yaml", INLINE, 0o644)

    code = main(["-c", str(path), "check-config"])

    out = capsys.readouterr()
    assert code == 0
    assert "configuration OK" in out.out
    assert out.err.startswith(f"warning: {path}:4: clients[0].secret: this file holds 2 secrets")
