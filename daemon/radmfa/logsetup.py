"""Send Twisted's log events to stderr, one line each, filtered by level.

Under systemd (``$JOURNAL_STREAM`` set) lines carry no timestamp: journald adds its own.
"""

from __future__ import annotations

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


def configure_logging(
    level: str = "info", stream: IO[str] | None = None, tag: str = ""
) -> LogLevelFilterPredicate:
    """``tag`` marks every line of a worker process (``[w1]``) so their logs can be told apart."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level, LogLevel.info))
    observer = LineObserver(
        stream or sys.stderr, timestamps="JOURNAL_STREAM" not in os.environ, tag=tag
    )
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [predicate])], redirectStandardIO=False
    )
    return predicate


def set_level(predicate: LogLevelFilterPredicate, level: str) -> None:
    predicate.setLogLevelForNamespace("", _LEVELS.get(level, LogLevel.info))
