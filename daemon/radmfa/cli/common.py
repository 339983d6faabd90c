"""What several commands need: the loaded config, the store, a canonical user argument."""

from __future__ import annotations

import argparse
import sys
import time

from radmfa.auth.identity import canonical_user, store_key
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.config import Config, ConfigError, load_config
from radmfa.store import open_store
from radmfa.store.base import Store, StoreError


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


def user_arg(text: str) -> str:
    """The store key for a user named on the command line, validated like RADIUS input."""
    user = canonical_user(text.encode("utf-8", errors="surrogateescape"))
    if user is None:
        raise UsageError(f"invalid user name {text!r}")
    return store_key(user)


def now() -> float:
    """Wall-clock time for CLI records (the daemon uses its reactor's clock)."""
    return time.time()  # noqa: TID251 - the CLI has no reactor
