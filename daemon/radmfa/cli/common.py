"""What several commands need: the loaded config, the store, a canonical user argument."""

from __future__ import annotations

import argparse
import getpass
import re
import secrets
import string
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from radmfa.auth.identity import NameProblem, check_user, store_key
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.config import Config, ConfigError, load_config
from radmfa.store import open_store
from radmfa.store.base import Store, StoreError

#: Letters and digits only: a secret starting with "-" is read as an option by radclient and
#: many NAS command lines, and "_" or "-" trip up some web UIs.
_SECRET_ALPHABET = string.ascii_letters + string.digits


def new_radius_secret(length: int = 32) -> str:
    """A random RADIUS shared secret (32 characters: ~190 bits) that pastes anywhere."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(length))


def config_from(args: argparse.Namespace) -> Config:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        raise UsageError("invalid configuration:\n" + "\n".join(e.problems)) from None
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def store_from(config: Config) -> Store:
    try:
        return open_store(config.store)
    except (StoreError, OSError, ValueError) as e:
        raise CommandFailed(f"cannot open the store: {e}") from None


def user_arg(text: str, config: Config) -> str:
    """The store key for a user named on the command line, validated and normalised exactly
    like RADIUS input (so ``CORP\\alice`` names alice when ``usernames.strip_realm`` is on)."""
    raw = text.encode("utf-8", errors="surrogateescape")
    user = check_user(raw, strip_realm=config.usernames.strip_realm)
    if user is NameProblem.UNSAFE:
        raise UsageError(
            f"user name {text!r} has a character without a one-to-one case folding "
            "(such as ß or İ): radmfa refuses such names, as it does at login"
        )
    if isinstance(user, NameProblem):
        raise UsageError(f"invalid user name {text!r}")
    return store_key(user)


def secret_arg(value: str, option: str) -> str:
    """The secret given as ``OPTION VALUE``, or read from standard input for ``OPTION -``
    (unechoed from a terminal, else one line). A value on the command line still works, with a
    warning: every local user can read command lines (``ps``, ``/proc/PID/cmdline``)."""
    if value != "-":
        print(
            f"warning: {option} on the command line is visible to other local users (ps); "
            f"use {option}-file FILE or {option} - (standard input) instead",
            file=sys.stderr,
        )
        return value
    if sys.stdin.isatty():
        return getpass.getpass(f"{option.lstrip('-')}: ")
    line = sys.stdin.readline()
    if not line:
        raise UsageError(f"{option} -: standard input ended before the secret")
    return line.rstrip("\r\n")


def secret_file(path: str, option: str) -> str:
    """The first line of the file ``path`` (a secret kept out of the command line)."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{option} {path}: {getattr(e, 'strerror', None) or e}") from None
    return text.splitlines()[0] if text else ""


def now() -> float:
    """Wall-clock time for CLI records (the daemon uses its reactor's clock)."""
    return time.time()  # noqa: TID251 - the CLI has no reactor


_RELATIVE = re.compile(r"[0-9]+(?:\.[0-9]+)?\s*[smhd]", re.IGNORECASE)


def parse_time(text: str, option: str, *, now: float, direction: int) -> float:
    """A point in time for ``--until`` / ``--since``: ISO 8601 (``2030-01-31``,
    ``2030-01-31T12:00``, ``...Z`` or ``+01:00``; without a zone it is UTC, as radmfa prints
    times), or a duration from now (``2h``, ``3d``) forward (``direction=1``) or back (-1)."""
    from radmfa.config import parse_duration

    value = text.strip()
    if _RELATIVE.fullmatch(value):
        return now + direction * parse_duration(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: give a time (2030-01-31, 2030-01-31T12:00, ...Z, UTC when no "
            "zone is given) or a duration such as 2h or 3d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
