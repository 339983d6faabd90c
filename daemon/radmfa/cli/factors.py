"""radmfa token resync | backup-codes | emergency-code | user prefer."""

from __future__ import annotations

import argparse
import json
import sys
import syslog

from radmfa.admin.actor import cli_actor
from radmfa.admin.factors import (
    FactorAdminError,
    issue_emergency,
    prefer_factor,
    regenerate_backup_codes,
    resync,
)
from radmfa.cli.common import config_from, now, store_from, user_arg
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.cli.tokens import _iso
from radmfa.config import parse_duration


def run_resync(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    try:
        token, counter = resync(
            store,
            cli_actor(args.reason),
            config,
            user,
            args.code1,
            args.code2,
            args.token_id,
            now=now(),
        )
    except FactorAdminError as e:
        raise CommandFailed(str(e)) from None
    finally:
        store.close()
    print(f"token {token.token_id} of {user} resynchronised: the next code is number {counter + 1}")
    return 0


def run_backup_codes(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    try:
        codes = regenerate_backup_codes(store, cli_actor(args.reason), config, user, now=now())
    finally:
        store.close()
    if args.json:
        print(json.dumps({"user": user, "codes": codes}))
        return 0
    print(f"New backup codes for {user} (any earlier ones no longer work).")
    print("Each works once, wherever a code is asked for. They are shown only now:\n")
    for code in codes:
        print(f"    {code}")
    print()
    return 0


def run_emergency_code(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    try:
        ttl = parse_duration(args.ttl) if args.ttl is not None else None
    except ValueError as e:
        raise UsageError(f"--ttl: {e}") from None
    actor = cli_actor(args.reason)
    issuer = actor.name
    store = store_from(config)
    try:
        code, token = issue_emergency(store, actor, config, user, ttl, now=now())
    except FactorAdminError as e:
        raise UsageError(str(e)) from None
    finally:
        store.close()
    expires = _iso(token.created_at + token.period)
    _audit(f"emergency code for {user} issued by {issuer}, valid until {expires}")
    if args.json:
        print(json.dumps({"user": user, "code": code, "expires": expires, "issuer": issuer}))
        return 0
    print(f"Emergency code for {user}: {code}")
    print(f"It works once, until {expires} ({token.period}s). Issued by {issuer}; logged.")
    return 0


def run_prefer(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    try:
        _before, chosen = prefer_factor(store, cli_actor(args.reason), user, args.factor, now=now())
    except FactorAdminError as e:
        raise CommandFailed(str(e)) from None
    finally:
        store.close()
    print(f"{user} prefers {chosen}" if chosen else f"{user} has no preferred factor")
    return 0


def _audit(line: str) -> None:
    """On stderr and in the system log (auth facility), so the issue is on record."""
    print(f"radmfa: {line}", file=sys.stderr)
    try:
        syslog.openlog("radmfa", 0, syslog.LOG_AUTH)
        syslog.syslog(syslog.LOG_NOTICE, line)
        syslog.closelog()
    except OSError:
        pass
