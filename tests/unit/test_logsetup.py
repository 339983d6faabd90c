"""Log output formats: readable lines and one JSON object per line."""

from __future__ import annotations

import io
import json

from twisted.logger import LogLevel
from twisted.python.failure import Failure

from radmfa.auth.decisionlog import DecisionLog
from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.logsetup import JsonObserver, LineObserver


def event(**fields) -> dict:
    base = {
        "log_time": 1700000000.25,
        "log_level": LogLevel.info,
        "log_namespace": "radmfa.service",
        "log_format": "listening on {addr}",
        "addr": "127.0.0.1:1812",
    }
    base.update(fields)
    return base


def test_json_line_has_time_level_namespace_message():
    out = io.StringIO()
    JsonObserver(out, timestamps=True)(event())
    record = json.loads(out.getvalue())
    assert record == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "namespace": "radmfa.service",
        "message": "listening on 127.0.0.1:1812",
    }
    assert out.getvalue().count("\n") == 1


def test_json_under_journald_has_no_time_and_names_the_worker():
    out = io.StringIO()
    JsonObserver(out, timestamps=False, tag="w1")(event())
    record = json.loads(out.getvalue())
    assert "time" not in record and record["worker"] == "w1"


def test_json_decision_carries_structured_fields_and_no_password():
    captured: list[dict] = []
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(captured.append)
    try:
        DecisionLog().record(
            AccessRequest(
                user_name=b"alice\r\nforged",
                password=b"hunter2123456",
                method=AuthMethod.PAP,
                state=None,
                client_name="vpn",
                client_address="192.0.2.1",
                nas_identifier="gw1",
            ),
            Decision(Outcome.ACCEPT, Reason.OK, user="alice", method="append", factor="totp"),
            0.0123,
        )
    finally:
        globalLogPublisher.removeObserver(captured.append)
    (decision,) = [e for e in captured if "decision_fields" in e]
    out = io.StringIO()
    JsonObserver(out, timestamps=True)(decision)
    text = out.getvalue()
    record = json.loads(text)
    assert record["namespace"] == "radmfa.decision"
    assert record["message"].startswith("decision=accept reason=ok")
    fields = {k: record[k] for k in ("decision", "reason", "user", "client", "factor", "ms")}
    assert fields == {
        "decision": "accept",
        "reason": "ok",
        "user": "alice",
        "client": "vpn",
        "factor": "totp",
        "ms": 12.3,
    }
    assert record["nas_id"] == "gw1" and record["method"] == "append"
    assert "hunter2" not in text and "\n" not in text.rstrip("\n")


def test_json_failure_carries_the_traceback_in_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    out = io.StringIO()
    JsonObserver(out, timestamps=False)(
        event(log_level=LogLevel.error, log_failure=failure, log_format="it broke")
    )
    record = json.loads(out.getvalue())
    assert record["level"] == "error" and "ValueError: boom" in record["traceback"]
    assert out.getvalue().count("\n") == 1


def test_text_lines_are_unchanged():
    out = io.StringIO()
    LineObserver(out, timestamps=False, tag="w0")(event())
    assert out.getvalue() == "[w0] info radmfa.service: listening on 127.0.0.1:1812\n"
