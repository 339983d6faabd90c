"""Send Twisted's log events to stderr, one line each, filtered by level.

Two formats: ``text`` (readable) and ``json`` (one object per line for log collectors, with the
decision fields as keys). Under systemd (``$JOURNAL_STREAM`` set) lines carry no timestamp:
journald adds its own. Only the rendered message and the decision fields are written, never the
other fields of an event, so nothing a caller passed along by mistake can leak.

Every value substituted into a message is escaped here (:func:`render_message`), whatever the
call site: a user name, NAS-Identifier, directory answer or SMTP error with a newline, an ANSI
escape or a bidi override stays one inert line. Decision lines arrive escaped already.

Libraries that log through the standard library's ``logging`` (psycopg's connection pool) are
routed here too (:class:`StdlibBridge`, warnings and up): without it Python prints their records
raw on stderr, unescaped and outside the JSON format.

Every line is written and flushed at once, except decision lines in a serving daemon: there
(:func:`buffer_decision_lines`) they are collected and written together, one write for many
lines instead of one per request. See :class:`_Output` for when they are written.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import string
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

from radmfa.textescape import escape_unprintable

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}

#: Seconds a buffered decision line may wait before it is written.
FLUSH_INTERVAL = 0.05
#: Buffered characters that make the buffer be written at once.
FLUSH_SIZE = 64 * 1024
#: Only lines below warn may wait; a warning or an error is written at once.
_HELD_LEVELS = frozenset({LogLevel.debug, LogLevel.info})
#: A timestamp up to the seconds; the milliseconds are appended per line.
_SECOND = "%Y-%m-%dT%H:%M:%S."


class _EscapingFormatter(string.Formatter):
    """Twisted's message syntax (``{name}``, ``{name!r}``, ``{name:.0f}``, ``{name()}``), with
    every substituted value made printable (:func:`~radmfa.textescape.escape_unprintable`)."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if field_name.endswith("()"):  # Twisted calls a field written as a call
            value, used = super().get_field(field_name[:-2], args, kwargs)
            return value(), used
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> str:
        return escape_unprintable(format(value, format_spec))


_FORMATTER = _EscapingFormatter()


def render_message(event: dict[str, Any]) -> str:
    """The event's message with every field escaped; like Twisted's ``formatEvent``, it never
    raises (an unformattable event is described instead, escaped too)."""
    fmt = event.get("log_format")
    if "log_flattened" in event or not isinstance(fmt, str | bytes):
        return escape_unprintable(formatEvent(event))
    try:
        return _FORMATTER.vformat(fmt.decode() if isinstance(fmt, bytes) else fmt, (), event)
    except Exception:  # a missing field, a value that cannot be formatted: Twisted says which
        return escape_unprintable(formatEvent(event))


def _traceback(failure: Any) -> str:
    """A failure's traceback, its lines kept, control characters in them escaped."""
    return "\n".join(escape_unprintable(line) for line in failure.getTraceback().splitlines())


class _Timestamps:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for an event's ``log_time``, the same text as
    ``datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"``, but the
    (slow) date formatting runs once per second, not once per line."""

    def __init__(self) -> None:
        # One tuple, replaced whole, so a thread never sees one second with another's text.
        self._last: tuple[int, str] = (0, datetime.fromtimestamp(0, UTC).strftime(_SECOND))

    def __call__(self, when: float) -> str:
        # The rounding datetime.fromtimestamp does: to the microsecond, half to even, which
        # may carry into the next second; the milliseconds are then truncated like %f[:-3].
        frac, whole = math.modf(when)
        micros = round(frac * 1e6)
        second = int(whole)
        if micros >= 1_000_000:
            second += 1
            micros -= 1_000_000
        elif micros < 0:
            second -= 1
            micros += 1_000_000
        cached, text = self._last
        if cached != second:
            text = datetime.fromtimestamp(second, UTC).strftime(_SECOND)
            self._last = (second, text)
        return f"{text}{micros // 1000:03d}Z"


class _Output:
    """Writes an observer's lines to its stream.

    By default every line is written and flushed at once. With :meth:`start_buffering`,
    decision lines (info, the one line per request) are held and written together:

    * at once when this observer had no decision line for ``interval`` seconds (a quiet
      server writes each line as it comes, as before);
    * before any other line (warnings, errors, start/stop/reload messages), which itself is
      written at once, so the order of lines is kept;
    * when ``size`` characters are held;
    * by :meth:`flush`, which the daemon calls every ``interval`` seconds and at shutdown
      (see :func:`buffer_decision_lines`), so none waits longer than that.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.interval = FLUSH_INTERVAL
        self.size = FLUSH_SIZE
        self.buffering = False
        self._held: list[str] = []
        self._held_size = 0
        self._last_held = -math.inf  # log_time of the last decision line
        # Events may come from any thread (store and directory pools log too).
        self._lock = threading.RLock()

    def _emit(self, line: str, event: dict[str, Any]) -> None:
        if not self.buffering:
            self.stream.write(line)
            self.stream.flush()
        elif "decision_line" in event and event.get("log_level", LogLevel.info) in _HELD_LEVELS:
            self._hold(line, event.get("log_time", 0))
        else:
            with self._lock:
                self._write(line)

    def _hold(self, line: str, when: float) -> None:
        with self._lock:
            if not self.buffering:  # stop_buffering ran in another thread meanwhile
                self._write(line)
                return
            quiet = when - self._last_held >= self.interval
            self._last_held = when
            self._held.append(line)
            self._held_size += len(line)
            if quiet or self._held_size >= self.size:
                self._write("")

    def _write(self, line: str) -> None:
        """The held lines and then ``line``, in one write (call with the lock held)."""
        if self._held:
            held, self._held, self._held_size = self._held, [], 0
            held.append(line)
            line = "".join(held)
        if line:
            self.stream.write(line)
            self.stream.flush()

    def flush(self) -> None:
        """Write the held lines now. Never raises: it runs from a timer and at exit, where
        a stream that cannot be written to has nobody left to tell."""
        with self._lock:
            try:
                self._write("")
            except (OSError, ValueError):  # a closed pipe or a closed file: the lines are lost
                pass

    def start_buffering(self) -> None:
        self.buffering = True

    def stop_buffering(self) -> None:
        """Write what is held and go back to one write per line (under the lock, so a line
        from another thread cannot overtake the held ones)."""
        with self._lock:
            self.flush()
            self.buffering = False


@implementer(ILogObserver)
class LineObserver(_Output):
    def __init__(self, stream: IO[str], timestamps: bool, tag: str = "") -> None:
        super().__init__(stream)
        self.timestamps = timestamps
        self.tag = f"[{tag}] " if tag else ""
        self._stamp = _Timestamps()

    def __call__(self, event: dict[str, Any]) -> None:
        # Decision lines arrive pre-rendered (the hot path); everything else is formatted here.
        text = event.get("decision_line") or render_message(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{_traceback(failure)}"
        level = event.get("log_level", LogLevel.info).name
        namespace = event.get("log_namespace", "-")
        if namespace == "log_legacy":
            namespace = "twisted"
        prefix = f"{self.tag}{level} {namespace}: "
        if self.timestamps:
            prefix = self._stamp(event.get("log_time", 0)) + " " + prefix
        self._emit(prefix + text.replace("\n", "\n    ") + "\n", event)


@implementer(ILogObserver)
class JsonObserver(_Output):
    """One JSON object per line: time (unless journald stamps it), level, namespace, message,
    worker (in worker processes), traceback (for failures) and a decision's fields."""

    def __init__(self, stream: IO[str], timestamps: bool, tag: str = "") -> None:
        super().__init__(stream)
        self.timestamps = timestamps
        self.tag = tag
        self._stamp = _Timestamps()

    def __call__(self, event: dict[str, Any]) -> None:
        namespace = event.get("log_namespace", "-")
        record: dict[str, Any] = {}
        if self.timestamps:
            record["time"] = self._stamp(event.get("log_time", 0))
        record["level"] = event.get("log_level", LogLevel.info).name
        record["namespace"] = "twisted" if namespace == "log_legacy" else namespace
        record["message"] = event.get("decision_line") or render_message(event)
        if self.tag:
            record["worker"] = self.tag
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = _traceback(failure)
        decision = event.get("decision_fields")
        if isinstance(decision, dict):
            for key, value in decision.items():
                record.setdefault(key, value)
        self._emit(json.dumps(record, ensure_ascii=False, default=str) + "\n", event)


class StdlibBridge(logging.Handler):
    """A standard-library log record as a Twisted event in the logger's name: formatted,
    escaped, level-filtered and written like every other line."""

    _LEVELS = (
        (logging.CRITICAL, LogLevel.critical),
        (logging.ERROR, LogLevel.error),
        (logging.WARNING, LogLevel.warn),
        (logging.INFO, LogLevel.info),
    )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format arguments must not lose the line
            message = str(record.msg)
        level = next((to for at, to in self._LEVELS if record.levelno >= at), LogLevel.debug)
        Logger(namespace=record.name).emit(level, "{message}", message=message)


def route_stdlib_logging() -> None:
    """Send the standard library's records of warning and up through :class:`StdlibBridge`
    (once: a second call replaces the first bridge). Libraries' info chatter stays out."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StdlibBridge)]:
        root.removeHandler(handler)
    root.addHandler(StdlibBridge())
    root.setLevel(logging.WARNING)


#: The observer configure_logging installed, for buffer_decision_lines.
_observer: _Output | None = None


def configure_logging(
    level: str = "info", stream: IO[str] | None = None, tag: str = "", fmt: str = "text"
) -> LogLevelFilterPredicate:
    """``tag`` marks every line of a worker process (``[w1]``) so their logs can be told apart;
    ``fmt`` is ``text`` or ``json``."""
    global _observer
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS.get(level, LogLevel.info))
    kind = JsonObserver if fmt == "json" else LineObserver
    observer = kind(stream or sys.stderr, timestamps="JOURNAL_STREAM" not in os.environ, tag=tag)
    _observer = observer
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(observer, [predicate])], redirectStandardIO=False
    )
    route_stdlib_logging()
    return predicate


def buffer_decision_lines(reactor: Any, interval: float = FLUSH_INTERVAL) -> None:
    """From now on write decision lines in batches (see :class:`_Output`); for ``serve``.

    Only decision lines wait: every other line (the ready line tests and operators wait for,
    reload and stop messages, warnings) is still written at once, after the held ones. The
    held lines are written every ``interval`` seconds from the reactor, after the shutdown
    drain (which logs the last decisions) and at exit if the process leaves some other way.
    Commands that do not call this keep one write per line.
    """
    observer = _observer
    if observer is None:
        return
    observer.interval = interval
    observer.start_buffering()
    ticker = LoopingCall(observer.flush)
    ticker.clock = reactor
    ticker.start(interval, now=False)

    def stop() -> None:
        if ticker.running:
            ticker.stop()
        observer.stop_buffering()
        atexit.unregister(observer.flush)

    reactor.addSystemEventTrigger("after", "shutdown", stop)
    atexit.register(observer.flush)


def set_level(predicate: LogLevelFilterPredicate, level: str) -> None:
    predicate.setLogLevelForNamespace("", _LEVELS.get(level, LogLevel.info))
