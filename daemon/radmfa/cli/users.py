"""radmfa user show | unlock."""

from __future__ import annotations

import argparse
import json

from radmfa.admin.factors import backup_codes_left
from radmfa.cli.common import config_from, now, store_from, user_arg
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.cli.tokens import _iso, token_description, token_summary


def run_show(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user)
    store = store_from(config)
    try:
        tokens = store.list_tokens(user)
        lock = store.lock_state(user)
        settings = store.user_settings(user)
    finally:
        store.close()
    if not tokens and lock.failures == 0 and lock.locked_until is None:
        raise CommandFailed(f"no record of user {user} (no tokens, no failures)")
    locked = lock.is_locked(now())
    backup_left, backup_total = backup_codes_left(tokens)
    listed = [t for t in tokens if t.type != "backup"]
    if args.json:
        print(
            json.dumps(
                {
                    "user": user,
                    "tokens": [token_summary(t) for t in listed],
                    "backup_codes_left": backup_left,
                    "backup_codes_total": backup_total,
                    "preferred": settings.preferred,
                    "failures": lock.failures,
                    "locked": locked,
                    "locked_until": _iso(lock.locked_until)
                    if locked and lock.locked_until
                    else None,
                }
            )
        )
        return 0
    print(f"user:      {user}")
    print(f"tokens:    {len(listed)}")
    for t in listed:
        print(f"  {t.token_id}  {t.type}  {token_description(t)}")
    print(f"backup:    {backup_left} of {backup_total} codes left")
    print(f"prefers:   {settings.preferred or '-'}")
    print(f"failures:  {lock.failures}")
    if locked and lock.locked_until:
        print(f"locked:    yes, until {_iso(lock.locked_until)}")
    else:
        print("locked:    no")
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user)
    store = store_from(config)
    try:
        changed = store.unlock(user)
    finally:
        store.close()
    print(f"{user} unlocked" if changed else f"{user} was not locked")
    return 0


def run_hash_password(args: argparse.Namespace) -> int:
    """Reads the password from the terminal (not echoed) or from stdin, never from argv."""
    import getpass
    import sys

    from radmfa.directory.local import hash_password

    user = args.user
    if not user or ":" in user or any(c.isspace() for c in user):
        raise UsageError("the user name must be non-empty, without ':' or blanks")
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {user}: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise UsageError("empty passwords are not allowed")
    print(f"{user}:{hash_password(password)}")
    return 0
