"""``radmfa token import`` / ``token add --secret`` run twice: one token per secret, so a code
is accepted once. The CLI runs in-process against a store made by ``radmfa init``."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pyotp
import pytest

from radmfa.cli.main import main
from radmfa.config import load_config
from radmfa.factors.base import FactorRegistry, MatchKind
from radmfa.factors.totp import TotpFactor
from radmfa.store import open_store
from radmfa.store.base import AUDIT_ADMIN, AuditQuery

SECRET = base64.b32encode(b"0123456789abcdefghij").decode()
OTHER = base64.b32encode(b"jihgfedcba9876543210").decode()


@pytest.fixture
def config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["init", "--dir", str(tmp_path / "etc")]) == 0
    capsys.readouterr()
    return str(tmp_path / "etc" / "radmfa.yaml")


def radmfa(config: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["-c", config, *args])
    out, err = capsys.readouterr()
    return code, out, err


def tokens_of(config: str, user: str) -> list:
    store = open_store(load_config(config).store)
    try:
        return store.list_tokens(user)
    finally:
        store.close()


def test_importing_a_file_twice_adds_nothing_the_second_time_and_says_which_rows(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "tokens.csv"
    data.write_text(f"user,secret\nalice,{SECRET}\nbob,{SECRET}\nAlice,{SECRET.lower()}\n")
    code, out, _ = radmfa(config, capsys, "token", "import", str(data))
    assert code == 0
    # Line 4 is alice's secret again (other spelling of name and secret): skipped at once.
    assert f"{data}:4: alice already has this totp secret, skipped" in out
    assert "imported 2 token(s) for 2 user(s); 1 skipped" in out

    code, out, _ = radmfa(config, capsys, "token", "import", str(data))
    assert code == 0
    assert out.splitlines() == [
        f"{data}:2: alice already has this totp secret, skipped",
        f"{data}:3: bob already has this totp secret, skipped",
        f"{data}:4: alice already has this totp secret, skipped",
        "imported 0 token(s) for 0 user(s); 3 skipped (secret already enrolled)",
    ]
    assert len(tokens_of(config, "alice")) == 1 and len(tokens_of(config, "bob")) == 1
    store = open_store(load_config(config).store)
    try:
        imports = store.query_audit(AuditQuery(kind=AUDIT_ADMIN))
    finally:
        store.close()
    assert sorted(e.user for e in imports) == ["alice", "bob"]  # the re-run added no rows


def test_add_with_a_secret_the_user_already_has_is_refused(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert radmfa(config, capsys, "token", "add", "alice", "--secret", SECRET)[0] == 0
    code, out, err = radmfa(config, capsys, "token", "add", "alice", "--secret", SECRET)
    assert code == 1
    assert "alice already has a totp token with this secret; nothing added" in err
    assert out == ""
    assert radmfa(config, capsys, "token", "add", "alice", "--secret", OTHER)[0] == 0
    assert len(tokens_of(config, "alice")) == 2


def test_after_an_import_and_an_add_of_one_secret_a_code_is_accepted_once(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "tokens.json"
    data.write_text(f'[{{"user": "alice", "secret": "{SECRET}"}}]')
    radmfa(config, capsys, "token", "import", str(data))
    radmfa(config, capsys, "token", "import", str(data))
    radmfa(config, capsys, "token", "add", "alice", "--secret", SECRET)
    now = time.time()  # the CLI stamps tokens with the wall clock
    code = pyotp.TOTP(SECRET).at(now)
    factors = FactorRegistry([TotpFactor()])
    store = open_store(load_config(config).store)
    try:
        accepted = 0
        for _ in range(3):  # what the pipeline does per login: find a match, advance its step
            token, match = factors.verify(store.list_tokens("alice"), code, now)
            if token is not None and match.kind is MatchKind.MATCH:
                assert match.step is not None
                accepted += store.advance_step(token.token_id, match.step)
    finally:
        store.close()
    assert accepted == 1
