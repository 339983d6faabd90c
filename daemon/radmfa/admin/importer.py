"""Bulk token import (CSV or JSON), as admins migrating from another OTP server need.

Rows are checked completely before anything is written, and then written in one transaction:
a file with one bad row changes nothing, and the error names the row. A row whose user already
has that secret (for that token type) is skipped and named, so an import can be run again.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from radmfa.admin.tokens import TokenError, TokenSpec, build_token, parse_base32_secret
from radmfa.auth.identity import canonical_user, store_key
from radmfa.config import TotpConfig
from radmfa.store.base import TokenRecord

FIELDS = ("user", "type", "secret", "digits", "algorithm", "period", "description")
REQUIRED = ("user", "secret")


class ImportError_(ValueError):
    """One or more rows are wrong; ``problems`` lists them as ``WHERE: what``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_rows(text: str, source: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(where, row) pairs from JSON (a list of objects) or CSV with a header line."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ImportError_([f"{source}:{e.lineno}: invalid JSON: {e.msg}"]) from None
        if not isinstance(data, list):
            raise ImportError_([f"{source}: expected a JSON list of objects"])
        return [(f"{source}: entry {i}", row) for i, row in enumerate(data, start=1)]
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [f for f in header if f not in FIELDS]
    missing = [f for f in REQUIRED if f not in header]
    if unknown or missing:
        detail = []
        if missing:
            detail.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            detail.append(f"unknown column(s) {', '.join(unknown)}")
        raise ImportError_([f"{source}:1: {'; '.join(detail)} (columns: {', '.join(FIELDS)})"])
    return [(f"{source}:{reader.line_num}", row) for row in reader]


def build_tokens(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    defaults: TotpConfig,
    now: float,
    *,
    strip_realm: bool = False,
) -> list[TokenRecord]:
    return [token for _, token in build_rows(rows, defaults, now, strip_realm=strip_realm)]


def build_rows(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    defaults: TotpConfig,
    now: float,
    *,
    strip_realm: bool = False,
) -> list[tuple[str, TokenRecord]]:
    """(where, token) per row, so what the store skips can be named by line."""
    built: list[tuple[str, TokenRecord]] = []
    problems: list[str] = []
    for where, row in rows:
        try:
            built.append((where, _token_from_row(row, defaults, now, strip_realm)))
        except (TokenError, ValueError, TypeError) as e:
            problems.append(f"{where}: {e}")
    if problems:
        raise ImportError_(problems)
    return built


def skipped_rows(
    built: Sequence[tuple[str, TokenRecord]], skipped: Sequence[TokenRecord]
) -> list[str]:
    """``WHERE: alice already has this totp secret, skipped`` for each row the store skipped
    (:meth:`~radmfa.store.base.Store.add_tokens`), in file order."""
    ids = {t.token_id for t in skipped}
    return [
        f"{where}: {t.user} already has this {t.type} secret, skipped"
        for where, t in built
        if t.token_id in ids
    ]


def _token_from_row(
    row: Mapping[str, Any], defaults: TotpConfig, now: float, strip_realm: bool
) -> TokenRecord:
    if not isinstance(row, Mapping):
        raise ValueError("expected an object with user, secret, ...")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    values = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
    values = {k: v for k, v in values.items() if v not in (None, "")}
    for name in REQUIRED:
        if name not in values:
            raise ValueError(f"{name} is required")
    raw = str(values["user"]).encode("utf-8", errors="surrogateescape")
    user = canonical_user(raw, strip_realm=strip_realm)
    if user is None:
        raise ValueError(f"invalid user name {values['user']!r}")
    spec = TokenSpec.from_defaults(
        defaults,
        type=str(values.get("type", "totp")).lower(),
        digits=_int(values.get("digits"), "digits"),
        algorithm=str(values["algorithm"]).upper() if "algorithm" in values else None,
        period=_int(values.get("period"), "period"),
        description=str(values.get("description", "")),
    )
    return build_token(store_key(user), spec, now, parse_base32_secret(str(values["secret"])))


def _int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number")
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
