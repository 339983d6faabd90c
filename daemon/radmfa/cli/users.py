"""radmfa user show | unlock | enable | disable | suspend | resume | reset."""

from __future__ import annotations

import argparse
import json

from radmfa.admin.actor import cli_actor
from radmfa.admin.factors import backup_codes_left
from radmfa.admin.users import (
    UserAdminError,
    change_status,
    describe_status,
    device_place,
    reset_user,
    unlock_user,
)
from radmfa.cli.common import config_from, now, parse_time, store_from, user_arg
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.cli.tokens import _iso, token_description, token_summary


def run_show(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    at = now()
    try:
        tokens = store.list_tokens(user)
        lock = store.lock_state(user)
        settings = store.user_settings(user)
        devices = store.list_devices(user, at)
    finally:
        store.close()
    if (
        not tokens
        and lock.failures == 0
        and lock.total_failures == 0
        and lock.locked_until is None
        and settings == type(settings)(user)
    ):
        raise CommandFailed(f"no record of user {user} (no tokens, no failures)")
    locked = lock.is_locked(at)
    backup_left, backup_total = backup_codes_left(tokens)
    listed = [t for t in tokens if t.type != "backup"]
    status = describe_status(settings, at)
    if args.json:
        print(
            json.dumps(
                {
                    "user": user,
                    "status": settings.status,
                    "status_until": _iso(settings.status_until) if settings.status_until else None,
                    "status_reason": settings.status_reason,
                    "mfa_suspended": settings.mfa_suspended(at),
                    "tokens": [token_summary(t) for t in listed],
                    "backup_codes_left": backup_left,
                    "backup_codes_total": backup_total,
                    "preferred": settings.preferred,
                    "trusted_devices": [
                        {
                            "device": d.device,
                            "client": d.client,
                            "nas_identifier": d.nas_id or None,
                            "expires": _iso(d.expires_at),
                        }
                        for d in devices
                    ],
                    "grace_first_seen": _iso(settings.first_seen_at)
                    if settings.first_seen_at
                    else None,
                    "grace_logins": settings.grace_logins,
                    "failures": lock.failures,
                    "locked": locked,
                    "locked_until": (
                        "until unlocked" if lock.locked_for_good else _iso(lock.locked_until)
                    )
                    if locked and lock.locked_until
                    else None,
                }
            )
        )
        return 0
    print(f"user:      {user}")
    why = f" ({settings.status_reason})" if settings.status_reason else ""
    print(f"status:    {status}{why}")
    print(f"tokens:    {len(listed)}")
    for t in listed:
        print(f"  {t.token_id}  {t.type}  {token_description(t)}")
    print(f"backup:    {backup_left} of {backup_total} codes left")
    print(f"prefers:   {settings.preferred or '-'}")
    print(f"devices:   {len(devices)}")
    for d in devices:
        print(f"  {d.device}  via {device_place(d)}  until {_iso(d.expires_at)}")
    if settings.first_seen_at is not None:
        print(
            f"grace:     {settings.grace_logins} login(s) without a second factor since "
            f"{_iso(settings.first_seen_at)}"
        )
    print(f"failures:  {lock.failures} ({lock.total_failures} since the last success)")
    if locked and lock.locked_for_good:
        print("locked:    yes, until an admin unlocks (lockout.max_total_failures reached)")
    elif locked and lock.locked_until:
        print(f"locked:    yes, until {_iso(lock.locked_until)}")
    else:
        print("locked:    no")
    return 0


def run_status(args: argparse.Namespace) -> int:
    """enable | disable | suspend [--until] | resume, recorded with who and why."""
    config = config_from(args)
    user = user_arg(args.user, config)
    at = now()
    until_text = getattr(args, "until", None)
    until = parse_time(until_text, "--until", now=at, direction=1) if until_text else None
    store = store_from(config)
    try:
        before, after, revoked = change_status(
            store, cli_actor(args.reason), user, args.action, now=at, until=until
        )
    except UserAdminError as e:
        raise UsageError(str(e)) from None
    finally:
        store.close()
    was, now_is = describe_status(before, at), describe_status(after, at)
    change = f"{was} -> {now_is}" if was != now_is else f"already {now_is}"
    print(f"{user}: {change}" + (f"; {revoked} trusted device(s) revoked" if revoked else ""))
    return 0


def run_reset(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    try:
        tokens, devices = reset_user(store, cli_actor(args.reason), user, now=now())
    finally:
        store.close()
    print(
        f"{user}: {tokens} token(s) and {devices} trusted device(s) removed; the next login "
        "enrolls afresh"
    )
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    try:
        changed = unlock_user(store, cli_actor(args.reason), user, now=now())
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
