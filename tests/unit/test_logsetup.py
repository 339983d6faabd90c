"""Log output formats: readable lines and one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import math
import random
import threading
from datetime import UTC, datetime

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from radmfa import logsetup
from radmfa.auth.decisionlog import DecisionLog
from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.logsetup import JsonObserver, LineObserver, _Timestamps


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


# -- the decision line's format --------------------------------------------------------------


def decision_event(user: bytes = b"alice", log_time: float = 1700000000.25) -> dict:
    """The event DecisionLog.record emits, as an observer receives it."""
    captured: list[dict] = []
    globalLogPublisher.addObserver(captured.append)
    try:
        DecisionLog().record(
            AccessRequest(
                user_name=user,
                password=b"secret",
                method=AuthMethod.PAP,
                state=None,
                client_name="vpn",
                client_address="192.0.2.1",
                nas_identifier="gw1",
                calling_station_id="02:00:00:00:00:01",
            ),
            Decision(Outcome.REJECT, Reason.BAD_OTP, method="append", factor="totp", rule="r1"),
            0.00456,
        )
    finally:
        globalLogPublisher.removeObserver(captured.append)
    (decision,) = [e for e in captured if "decision_fields" in e]
    decision["log_time"] = log_time
    return decision


def test_text_decision_line_is_byte_for_byte_the_same():
    out = io.StringIO()
    LineObserver(out, timestamps=True, tag="w1")(decision_event(b'al"ice\r\n'))
    assert out.getvalue() == (
        "2023-11-14T22:13:20.250Z [w1] info radmfa.decision: decision=reject reason=bad_otp "
        'user="al\\"ice\\r\\n" client=vpn src=192.0.2.1 nas_id="gw1" '
        'station="02:00:00:00:00:01" method=append factor=totp ms=4.6 rule=r1\n'
    )


# -- escaping every line ---------------------------------------------------------------------

#: A value with a forged second line, a terminal escape and a Unicode line separator.
HOSTILE = (
    'mallory\n2026-01-01T00:00:00.000Z info radmfa.decision: decision=accept user="alice"'
    "\x1b[2K\u2028"
)
ESCAPED = (
    'mallory\\n2026-01-01T00:00:00.000Z info radmfa.decision: decision=accept user="alice"'
    "\\x1b[2K\\u2028"
)


def emitted(action) -> list[dict]:
    captured: list[dict] = []
    globalLogPublisher.addObserver(captured.append)
    try:
        action()
    finally:
        globalLogPublisher.removeObserver(captured.append)
    return captured


def both_formats(events: list[dict]) -> tuple[str, list[dict]]:
    text, js = io.StringIO(), io.StringIO()
    for e in events:
        LineObserver(text, timestamps=False)(e)
        JsonObserver(js, timestamps=False)(e)
    return text.getvalue(), [json.loads(line) for line in js.getvalue().splitlines()]


def test_a_hostile_value_in_a_non_decision_line_stays_one_escaped_line():
    (warning,) = emitted(
        lambda: Logger(namespace="radmfa.auth").warn(
            "{user} locked for {secs:.0f}s after {n} consecutive failures",
            user=HOSTILE,
            secs=300,
            n=5,
        )
    )
    text, (record,) = both_formats([warning])
    message = f"{ESCAPED} locked for 300s after 5 consecutive failures"
    assert text == f"warn radmfa.auth: {message}\n"
    assert record["message"] == message


def test_directory_text_reaching_the_pipeline_log_is_escaped_in_every_line():
    from radmfa.directory.base import DirectoryOutcome, DirectoryResult
    from tests.unit.auth.test_pipeline import World

    world = World()
    world.directory._result = lambda user, password: DirectoryResult(  # a server's message
        DirectoryOutcome.UNAVAILABLE, detail=HOSTILE
    )
    events = emitted(lambda: world.send(b"alice", b"hunter2" + world.code().encode()))
    text, records = both_formats(events)
    assert any("decision_line" in e for e in events) and len(events) >= 2
    assert len(text.splitlines()) == len(events) == len(records)
    assert f"warn radmfa.auth: directory unavailable: {ESCAPED}\n" in text
    assert "\x1b" not in text and "\u2028" not in text
    assert all(r["message"].isprintable() for r in records)


def test_escaping_keeps_twisteds_message_syntax():
    class Thing:
        def name(self) -> str:
            return "it\r"

    (e,) = emitted(
        lambda: Logger(namespace="t").info(
            "{a!r} {b:>4} {c.name()} {d[k]}", a="x\ny", b=7, c=Thing(), d={"k": "\x07"}
        )
    )
    text, (record,) = both_formats([e])
    assert record["message"] == "'x\\ny'    7 it\\r \\x07"
    (broken,) = emitted(lambda: Logger(namespace="t").info("{missing} field", other="\n"))
    text, (record,) = both_formats([broken])
    assert text.count("\n") == 1 and "Unable to format event" in text


# -- timestamps -------------------------------------------------------------------------------


def reference_stamp(when: float) -> str:
    """The formula the observers used before the per-second cache."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def timestamps_to_check() -> list[float]:
    rng = random.Random(7)
    values: list[float] = [0.0, 0.5, 1.0, -0.5, -1.0, -1.0000001, 1e-7, -1e-7, 86399.9999996]
    for second in (1700000000, 1700000001, 1735689599, 951782400, 4102444799, 1, 59, 3600):
        for frac in (
            0.0, 1e-7, 4e-7, 5e-7, 6e-7, 0.0005, 0.000999, 0.001, 0.0009995, 0.25, 0.5,
            0.9989999, 0.999, 0.9994999, 0.9995, 0.9999, 0.999999, 0.9999994, 0.9999995,
            0.9999996, 0.99999999,
        ):  # fmt: skip
            values.append(second + frac)
        values.append(math.nextafter(float(second), -math.inf))
        values.append(math.nextafter(float(second), math.inf))
    values += [rng.uniform(1.6e9, 1.8e9) for _ in range(20000)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(2000)]
    # Random walks with small steps: the cached second changes often, forwards and back.
    start = 1700000000.0
    for _ in range(5000):
        start += rng.uniform(-0.3, 0.7)
        values.append(start)
    return values


def test_cached_timestamps_match_strftime_including_second_boundaries():
    stamp = _Timestamps()
    for when in timestamps_to_check():
        assert stamp(when) == reference_stamp(when), repr(when)


def test_timestamps_in_both_formats_match_the_old_formula():
    for when in (1700000000.9999996, 1700000000.9994999, 1700000001.0004):
        text, js = io.StringIO(), io.StringIO()
        LineObserver(text, timestamps=True)(event(log_time=when))
        JsonObserver(js, timestamps=True)(event(log_time=when))
        assert text.getvalue().startswith(reference_stamp(when) + " info radmfa.service: ")
        assert json.loads(js.getvalue())["time"] == reference_stamp(when)


# -- buffered decision lines ------------------------------------------------------------------


class CountingStream(io.StringIO):
    """Records each write and each flush, to count what would be syscalls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


def decision(seq: int, log_time: float, level: LogLevel = LogLevel.info) -> dict:
    return {
        "log_time": log_time,
        "log_level": level,
        "log_namespace": "radmfa.decision",
        "log_format": "{decision_line}",
        "decision_line": f"decision=accept n={seq}",
        "decision_fields": {"decision": "accept", "n": seq},
    }


T0 = 1700000000.0


def test_without_buffering_every_line_is_written_and_flushed():
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    for seq in range(3):
        observer(decision(seq, T0 + seq * 0.001))
    assert len(out.writes) == 3 and out.flushes == 3


def test_buffered_decision_lines_wait_for_flush_in_one_write():
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    observer.start_buffering()
    observer(decision(0, T0))  # the first after a quiet spell: written at once
    assert out.getvalue() == "info radmfa.decision: decision=accept n=0\n"
    for seq in range(1, 6):
        observer(decision(seq, T0 + seq * 0.001))
    assert len(out.writes) == 1
    observer.flush()
    assert len(out.writes) == 2 and out.flushes == 2
    assert out.getvalue() == "".join(
        f"info radmfa.decision: decision=accept n={seq}\n" for seq in range(6)
    )
    observer.flush()  # nothing held: nothing written
    assert len(out.writes) == 2


def test_any_other_line_writes_the_held_ones_first_in_order():
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    observer.start_buffering()
    observer(decision(0, T0))
    observer(decision(1, T0 + 0.001))
    observer(decision(2, T0 + 0.002))
    observer(event(log_time=T0 + 0.003))  # info, not a decision
    assert out.writes[-1] == (
        "info radmfa.decision: decision=accept n=1\n"
        "info radmfa.decision: decision=accept n=2\n"
        "info radmfa.service: listening on 127.0.0.1:1812\n"
    )
    assert len(out.writes) == 2


def test_warnings_and_errors_are_never_held():
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    observer.start_buffering()
    observer(decision(0, T0))
    observer(decision(1, T0 + 0.001))
    observer(decision(2, T0 + 0.002, level=LogLevel.warn))
    assert out.getvalue().splitlines()[-2:] == [
        "info radmfa.decision: decision=accept n=1",
        "warn radmfa.decision: decision=accept n=2",
    ]
    observer(event(log_time=T0 + 0.003, log_level=LogLevel.error, log_format="it broke"))
    assert out.getvalue().endswith("error radmfa.service: it broke\n")


def test_a_quiet_spell_writes_at_once_with_anything_still_held():
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    observer.start_buffering()
    observer(decision(0, T0))
    observer(decision(1, T0 + 0.01))  # held: no tick ran
    observer(decision(2, T0 + 0.011 + observer.interval))
    assert len(out.writes) == 2
    assert out.getvalue().count("\n") == 3


def test_a_full_buffer_is_written_without_waiting():
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    observer.size = 200
    observer.start_buffering()
    observer(decision(0, T0))
    seq = 1
    while len(out.writes) == 1:
        observer(decision(seq, T0 + seq * 1e-4))
        seq += 1
    assert len(out.writes[1]) >= 200
    assert out.getvalue().count("\n") == seq


def test_stop_buffering_writes_what_is_held_and_goes_back_to_line_by_line():
    out = CountingStream()
    observer = JsonObserver(out, timestamps=False, tag="w0")
    observer.start_buffering()
    for seq in range(4):
        observer(decision(seq, T0 + seq * 0.001))
    observer.stop_buffering()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["n"] for r in records] == [0, 1, 2, 3] and records[0]["worker"] == "w0"
    writes = len(out.writes)
    observer(decision(4, T0 + 0.005))
    assert len(out.writes) == writes + 1


def test_flush_survives_a_broken_stream():
    class Broken(CountingStream):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    observer = LineObserver(Broken(), timestamps=False)
    observer.start_buffering()
    observer._held.append("held\n")
    observer.flush()  # from a timer or at exit: must not raise
    assert observer._held == []


def test_lines_from_many_threads_are_all_written_once():
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    observer.start_buffering()
    threads = [
        threading.Thread(
            target=lambda base=base: [
                observer(decision(base + i, T0 + i * 1e-5)) for i in range(500)
            ]
        )
        for base in range(0, 4000, 1000)
    ]
    for thread in threads:
        thread.start()
    for _ in range(200):
        observer.flush()
    for thread in threads:
        thread.join()
    observer.flush()
    seen = sorted(int(line.rsplit("=", 1)[1]) for line in out.getvalue().splitlines())
    assert seen == sorted(base + i for base in range(0, 4000, 1000) for i in range(500))


class FakeReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[tuple[str, str, object]] = []

    def addSystemEventTrigger(self, phase: str, event: str, callable: object) -> None:
        self.triggers.append((phase, event, callable))


def test_serve_flushes_every_interval_and_after_the_shutdown_drain(monkeypatch):
    out = CountingStream()
    observer = LineObserver(out, timestamps=False)
    monkeypatch.setattr(logsetup, "_observer", observer)
    registered: list[object] = []
    monkeypatch.setattr(logsetup.atexit, "register", registered.append)
    monkeypatch.setattr(logsetup.atexit, "unregister", registered.remove)
    reactor = FakeReactor()
    logsetup.buffer_decision_lines(reactor, interval=0.05)
    assert registered == [observer.flush]  # a crash on the way out still writes them
    observer(decision(0, T0))
    observer(decision(1, T0 + 0.001))
    assert out.getvalue().count("\n") == 1
    reactor.advance(0.05)
    assert out.getvalue().count("\n") == 2
    observer(decision(2, T0 + 0.002))
    ((phase, name, stop),) = reactor.triggers
    assert (phase, name) == ("after", "shutdown")
    stop()  # after the drain: written, and line by line from now on
    assert out.getvalue().count("\n") == 3
    assert not observer.buffering and registered == [] and not reactor.getDelayedCalls()


def test_serve_without_configured_logging_does_nothing(monkeypatch):
    monkeypatch.setattr(logsetup, "_observer", None)
    reactor = FakeReactor()
    logsetup.buffer_decision_lines(reactor)
    assert reactor.triggers == [] and not reactor.getDelayedCalls()


# -- the standard library's records ---------------------------------------------------------


def test_a_stdlib_warning_becomes_one_escaped_line_in_the_log_format():
    captured: list[dict] = []
    globalLogPublisher.addObserver(captured.append)
    try:
        logsetup.StdlibBridge().handle(
            logging.LogRecord(
                "psycopg.pool", logging.WARNING, __file__, 1, "failed: %s", ("a\nb",), None
            )
        )
    finally:
        globalLogPublisher.removeObserver(captured.append)
    (bridged,) = captured
    out = io.StringIO()
    JsonObserver(out, timestamps=False)(bridged)
    record = json.loads(out.getvalue())
    assert (record["level"], record["namespace"]) == ("warn", "psycopg.pool")
    assert record["message"] == "failed: a\\nb"
    assert out.getvalue().count("\n") == 1


def test_stdlib_records_are_routed_once_and_info_chatter_stays_out():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    captured: list[dict] = []
    globalLogPublisher.addObserver(captured.append)
    try:
        logsetup.route_stdlib_logging()
        logsetup.route_stdlib_logging()
        logging.getLogger("some.library").info("connection given")
        logging.getLogger("some.library").warning("it broke")
    finally:
        globalLogPublisher.removeObserver(captured.append)
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
    assert [(e["log_namespace"], e["log_level"]) for e in captured] == [
        ("some.library", LogLevel.warn)
    ]
