"""radmfa token resync | backup-codes | emergency-code | user prefer."""

from __future__ import annotations

import argparse
import json
import sys
import syslog

from radmfa.admin.factors import (
    FactorAdminError,
    issue_emergency_code,
    new_backup_codes,
    resync_hotp,
    set_preferred,
)
from radmfa.audit import operator
from radmfa.cli.common import config_from, now, record_change, store_from, user_arg
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.cli.tokens import _iso
from radmfa.config import parse_duration


def run_resync(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    try:
        token, counter = resync_hotp(store, config, user, args.code1, args.code2, args.token_id)
        record_change(
            store,
            user,
            "hotp-resync",
            after=f"hotp {token.token_id} at counter {counter + 1}",
            reason=args.reason,
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
        left = sum(t.type == "backup" and t.last_step is None for t in store.list_tokens(user))
        codes = new_backup_codes(store, config, user, now())
        record_change(
            store,
            user,
            "backup-codes",
            before=f"{left} unused code(s)",
            after=f"{len(codes)} new code(s)",
            reason=args.reason,
        )
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
    issuer = _operator()
    store = store_from(config)
    try:
        code, token = issue_emergency_code(store, config, user, ttl, issuer, now())
        record_change(
            store,
            user,
            "emergency-code",
            after=f"valid until {_iso(token.created_at + token.period)}",
            reason=args.reason,
        )
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
        before = store.user_settings(user).preferred
        chosen = set_preferred(store, user, args.factor)
        record_change(
            store,
            user,
            "prefer",
            before=before or "none",
            after=chosen or "none",
            reason=args.reason,
        )
    except FactorAdminError as e:
        raise CommandFailed(str(e)) from None
    finally:
        store.close()
    print(f"{user} prefers {chosen}" if chosen else f"{user} has no preferred factor")
    return 0


def _operator() -> str:
    """Who runs the command: the account behind sudo when there is one."""
    return operator()


def _audit(line: str) -> None:
    """On stderr and in the system log (auth facility), so the issue is on record."""
    print(f"radmfa: {line}", file=sys.stderr)
    try:
        syslog.openlog("radmfa", 0, syslog.LOG_AUTH)
        syslog.syslog(syslog.LOG_NOTICE, line)
        syslog.closelog()
    except OSError:
        pass
