"""radmfa audit: the stored history of logins and admin changes, filtered, as a table, JSON or
CSV. Failed attempts are always there (the daemon records every decision)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence

from radmfa.cli.common import config_from, now, parse_time, store_from, user_arg
from radmfa.cli.main import UsageError
from radmfa.cli.tokens import _iso
from radmfa.store.base import AUDIT_AUTH, AuditEvent, AuditQuery
from radmfa.textescape import escape_unprintable

#: Every field, in the order JSON and CSV give them.
FIELDS = (
    "time",
    "kind",
    "user",
    "outcome",
    "reason",
    "factor",
    "method",
    "trusted_device",
    "rule",
    "client",
    "src",
    "nas_id",
    "station",
    "latency_ms",
    "actor",
    "action",
    "before",
    "after",
)


def run_audit(args: argparse.Namespace) -> int:
    config = config_from(args)
    at = now()
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    query = AuditQuery(
        user=user_arg(args.user, config) if args.user else None,
        since=parse_time(args.since, "--since", now=at, direction=-1) if args.since else None,
        until=parse_time(args.until, "--until", now=at, direction=-1) if args.until else None,
        outcome=args.outcome,
        reason=args.reason,
        kind=args.kind,
        limit=args.limit,
    )
    store = store_from(config)
    try:
        events = store.query_audit(query)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps([as_dict(e) for e in events], indent=None))
    elif args.format == "csv":
        writer = csv.DictWriter(
            sys.stdout, fieldnames=FIELDS, lineterminator="\n", quoting=csv.QUOTE_ALL
        )
        writer.writeheader()
        for event in events:
            writer.writerow({k: csv_cell(v) for k, v in as_dict(event).items()})
    else:
        print_table(events)
    return 0


#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: user names, NAS-Identifiers and admin reasons
    are untrusted, and ``=HYPERLINK(...)`` or ``@SUM(...)`` would run as a formula. Such a
    cell gets a leading ``'`` (OWASP's advice; also after leading blanks, which some
    spreadsheets skip), and control characters become backslash escapes."""
    if value is None:
        return ""
    text = str(value)
    if text.lstrip(" ").startswith(_FORMULA_START):
        text = "'" + text
    return escape_unprintable(text)


def as_dict(event: AuditEvent) -> dict[str, object]:
    return {
        "time": _iso(event.at),
        "kind": event.kind,
        "user": event.user,
        "outcome": event.outcome,
        "reason": event.reason,
        "factor": event.factor,
        "method": event.method,
        "trusted_device": event.trusted_device,
        "rule": event.rule,
        "client": event.client,
        "src": event.src,
        "nas_id": event.nas_id,
        "station": event.station,
        "latency_ms": event.latency_ms,
        "actor": event.actor,
        "action": event.action,
        "before": event.before,
        "after": event.after,
    }


def row(event: AuditEvent) -> tuple[str, str, str, str, str]:
    """TIME, USER, EVENT, REASON, DETAILS of one line of the table."""
    if event.kind == AUDIT_AUTH:
        details = [
            f"{name}={value}"
            for name, value in (
                ("factor", event.factor),
                ("method", event.method),
                ("rule", event.rule),
                ("client", event.client),
                ("src", event.src),
                ("nas_id", event.nas_id),
                ("station", event.station),
            )
            if value
        ]
        if event.trusted_device:
            details.append("trusted_device")
        if event.latency_ms is not None:
            details.append(f"ms={event.latency_ms:.1f}")
        return (
            _iso(event.at),
            event.user or "-",
            event.outcome or "-",
            event.reason or "-",
            " ".join(details),
        )
    details = [f"by={event.actor or '-'}"]
    if event.before is not None:
        details.append(f'before="{event.before}"')
    if event.after is not None:
        details.append(f'after="{event.after}"')
    return (
        _iso(event.at),
        event.user or "-",
        f"admin:{event.action or '-'}",
        event.reason or "-",
        " ".join(details),
    )


def print_table(events: Sequence[AuditEvent]) -> None:
    if not events:
        print("no matching audit records")
        return
    header = ("TIME", "USER", "EVENT", "REASON", "DETAILS")
    # One line per row, and no terminal control sequences from the stored text.
    rows = [tuple(escape_unprintable(cell) for cell in row(e)) for e in events]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    for line in (header, *rows):
        text = "  ".join(f"{line[i]:<{widths[i]}}" for i in range(4)) + "  " + line[4]
        print(text.rstrip())
