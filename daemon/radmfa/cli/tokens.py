"""radmfa token add | list | remove."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import segno

from radmfa.admin.importer import ImportError_, build_tokens, read_rows
from radmfa.admin.tokens import (
    TokenError,
    TokenSpec,
    build_token,
    parse_base32_secret,
    provisioning_uri,
    secret_base32,
)
from radmfa.cli.common import config_from, now, store_from, user_arg
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.store.base import StoreError, TokenRecord


def run_add(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user)
    try:
        spec = TokenSpec.from_defaults(
            config.otp.totp,
            type=args.type,
            digits=args.digits,
            algorithm=args.algorithm,
            period=args.period,
            description=args.description,
        )
        secret = parse_base32_secret(args.secret) if args.secret is not None else None
        token = build_token(user, spec, now(), secret)
    except TokenError as e:
        raise UsageError(str(e)) from None
    store = store_from(config)
    try:
        store.add_token(token)
    finally:
        store.close()
    uri = provisioning_uri(token, config.otp.totp.issuer)
    if args.json:
        print(json.dumps({**token_summary(token), "secret": secret_base32(token), "uri": uri}))
        return 0
    print(f"Token {token.token_id} added for {user} ({token_description(token)}).")
    if secret is None:
        if not args.no_qr:
            print("Scan this QR code with the authenticator app:\n")
            segno.make_qr(uri, error="m").terminal(out=sys.stdout, compact=True)
        print(f"\nOr enter this secret by hand: {secret_base32(token)}")
        print(f"URI: {uri}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user) if args.user else None
    store = store_from(config)
    try:
        tokens = store.list_tokens(user)
    finally:
        store.close()
    if args.json:
        print(json.dumps([token_summary(t) for t in tokens]))
        return 0
    if not tokens:
        print("no tokens" + (f" for {user}" if user else ""))
        return 0
    print(f"{'USER':<24} {'TOKEN':<12} {'TYPE':<5} {'DETAILS':<24} CREATED")
    for t in tokens:
        print(
            f"{t.user:<24} {t.token_id:<12} {t.type:<5} {token_description(t):<24} "
            f"{_iso(t.created_at)}"
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    config = config_from(args)
    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CommandFailed(f"cannot read {source}: {e}") from None
    try:
        tokens = build_tokens(read_rows(text, source), config.otp.totp, now())
    except ImportError_ as e:
        raise UsageError("nothing imported:\n" + "\n".join(e.problems)) from None
    store = store_from(config)
    try:
        store.add_tokens(tokens)
    except StoreError as e:
        raise CommandFailed(f"nothing imported: {e}") from None
    finally:
        store.close()
    users = len({t.user for t in tokens})
    print(f"imported {len(tokens)} token(s) for {users} user(s)")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user)
    store = store_from(config)
    try:
        removed = store.remove_tokens(user, args.token_id)
    finally:
        store.close()
    if removed == 0:
        what = f"token {args.token_id}" if args.token_id else "any token"
        raise CommandFailed(f"{user} has no {what}")
    print(f"removed {removed} token(s) of {user}")
    return 0


def token_description(t: TokenRecord) -> str:
    return f"{t.digits} digits, {t.algorithm}, {t.period}s"


def token_summary(t: TokenRecord) -> dict[str, object]:
    return {
        "user": t.user,
        "token_id": t.token_id,
        "type": t.type,
        "digits": t.digits,
        "algorithm": t.algorithm,
        "period": t.period,
        "created_at": _iso(t.created_at),
        "last_used_at": _iso(t.last_step * t.period) if t.last_step is not None else None,
        "description": t.description,
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
