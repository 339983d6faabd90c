"""Send Twisted's log events to stderr, one line each, filtered by level.

Two formats: ``text`` (readable) and ``json`` (one object per line for log collectors, with the
decision fields as keys). Under systemd (``$JOURNAL_STREAM`` set) lines carry no timestamp:
journald adds its own. Only the rendered message and the decision fields are written, never the
other fields of an event, so nothing a caller passed along by mistake can leak.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}


class LineObserver:
    def __init__(self, stream: IO[str], timestamps: bool, tag: str = "") -> None:
        self.stream = stream
        self.timestamps = timestamps
        self.tag = f"[{tag}] " if tag else ""

    def __call__(self, event: dict[str, Any]) -> None:
        # Decision lines arrive pre-rendered (the hot path); everything else is formatted here.
        text = event.get("decision_line") or formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"
        level = event.get("log_level", LogLevel.info).name
        namespace = event.get("log_namespace", "-")
        if namespace == "log_legacy":
            namespace = "twisted"
        prefix = f"{self.tag}{level} {namespace}: "
        if self.timestamps:
            when = datetime.fromtimestamp(event.get("log_time", 0), UTC)
            prefix = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z " + prefix
        self.stream.write(prefix + text.replace("\n", "\n    ") + "\n")
        self.stream.flush()


class JsonObserver:
    """One JSON object per line: time (unless journald stamps it), level, namespace, message,
    worker (in worker processes), traceback (for failures) and a decision's fields."""

    def __init__(self, stream: IO[str], timestamps: bool, tag: str = "") -> None:
        self.stream = stream
        self.timestamps = timestamps
        self.tag = tag

    def __call__(self, event: dict[str, Any]) -> None:
        namespace = event.get("log_namespace", "-")
        record: dict[str, Any] = {}
        if self.timestamps:
            when = datetime.fromtimestamp(event.get("log_time", 0), UTC)
            record["time"] = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        record["level"] = event.get("log_level", LogLevel.info).name
        record["namespace"] = "twisted" if namespace == "log_legacy" else namespace
        record["message"] = event.get("decision_line") or formatEvent(event)
        if self.tag:
            record["worker"] = self.tag
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        decision = event.get("decision_fields")
        if isinstance(decision, dict):
            for key, value in decision.items():
                record.setdefault(key, value)
        self.stream.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()


def configure_logging(
    level: str = "info", stream: IO[str] | None = None, tag: str = "", fmt: str = "text"
) -> LogLevelFilterPredicate:
    """``tag`` marks every line of a worker process (``[w1]``) so their logs can be told apart;
    ``fmt`` is ``text`` or ``json``."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level, LogLevel.info))
    kind = JsonObserver if fmt == "json" else LineObserver
    observer = kind(stream or sys.stderr, timestamps="JOURNAL_STREAM" not in os.environ, tag=tag)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [predicate])], redirectStandardIO=False
    )
    return predicate


def set_level(predicate: LogLevelFilterPredicate, level: str) -> None:
    predicate.setLogLevelForNamespace("", _LEVELS.get(level, LogLevel.info))
