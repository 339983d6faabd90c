"""Generated RADIUS secrets paste anywhere: no leading "-" for radclient or a NAS CLI to
read as an option (the demo secret once made radclient fail with "invalid option -- 'G'").
Secrets given to the CLI can stay off its command line, where ``ps`` shows them to anyone."""

from __future__ import annotations

import argparse
import base64
import io
from pathlib import Path

import pytest

from radmfa.cli.common import new_radius_secret
from radmfa.cli.main import main
from radmfa.config import load_config
from radmfa.store import open_store


def test_generated_secrets_are_letters_and_digits_of_the_asked_length():
    seen = {new_radius_secret() for _ in range(2000)}
    assert len(seen) == 2000
    assert all(len(s) == 32 and s.isascii() and s.isalnum() for s in seen)
    assert len(new_radius_secret(24)) == 24


# -- secrets kept off the command line (ps shows every argument to every local user) ---------

RAW = b"0123456789abcdefghij"
BASE32 = base64.b32encode(RAW).decode()


@pytest.fixture
def config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["init", "--dir", str(tmp_path / "etc")]) == 0
    capsys.readouterr()
    return str(tmp_path / "etc" / "radmfa.yaml")


def stored_secrets(config: str) -> list[bytes]:
    store = open_store(load_config(config).store)
    try:
        return [t.secret for t in store.list_tokens("alice")]
    finally:
        store.close()


def test_token_add_reads_the_secret_from_a_file_or_stdin_without_a_warning(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    path = tmp_path / "alice.b32"
    path.write_text(BASE32 + "\n")
    assert main(["-c", config, "token", "add", "alice", "--secret-file", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert stored_secrets(config) == [RAW]
    other = base64.b32encode(RAW[::-1]).decode()
    monkeypatch.setattr("sys.stdin", io.StringIO(other.lower() + "\n"))
    assert main(["-c", config, "token", "add", "alice", "--secret", "-", "--json"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and other not in err
    assert stored_secrets(config) == [RAW, RAW[::-1]]


def test_token_add_with_the_secret_as_an_argument_still_works_but_warns(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", config, "token", "add", "alice", "--secret", BASE32, "--no-qr"]) == 0
    err = capsys.readouterr().err
    assert "--secret on the command line is visible to other local users" in err
    assert "--secret-file FILE or --secret -" in err
    assert BASE32 not in err
    assert stored_secrets(config) == [RAW]


def test_a_missing_secret_file_or_empty_stdin_is_a_usage_error(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    missing = str(tmp_path / "nope")
    assert main(["-c", config, "token", "add", "alice", "--secret-file", missing]) == 2
    assert "No such file" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["-c", config, "token", "add", "alice", "--secret", "-"]) == 2
    assert "standard input ended before the secret" in capsys.readouterr().err
    assert stored_secrets(config) == []


def test_test_auth_reads_the_shared_secret_from_stdin_before_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from radmfa.cli.testauth import _ask, _target

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret shared\nthe-password\n"))
    args = argparse.Namespace(
        server="127.0.0.1:1812", secret="-", secret_file=None, config="/nonexistent"
    )
    _, secret = _target(args)
    assert secret == b"s3cret shared" and _ask("Password: ", hidden=True) == "the-password"
    assert "warning" not in capsys.readouterr().err
    _, secret = _target(argparse.Namespace(**{**vars(args), "secret": "visible"}))
    assert secret == b"visible"
    assert "--secret on the command line is visible" in capsys.readouterr().err
