"""radmfa token add | list | remove."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import segno

from radmfa.admin.actor import cli_actor
from radmfa.admin.factors import (
    ADDRESS_TYPES,
    FactorAdminError,
    address_of,
    change_address,
    check_type,
    generic_token,
)
from radmfa.admin.importer import ImportError_, build_rows, read_rows, skipped_rows
from radmfa.admin.tokens import (
    TOKEN_TYPES,
    DuplicateSecret,
    TokenError,
    TokenSpec,
    build_token,
    enroll_token,
    parse_base32_secret,
    provisioning_uri,
    remove_tokens,
    secret_base32,
)
from radmfa.audit import admin_event
from radmfa.cli.common import (
    config_from,
    now,
    secret_arg,
    secret_file,
    store_from,
    user_arg,
)
from radmfa.cli.main import CommandFailed, UsageError
from radmfa.config import Config
from radmfa.factors.hotp import next_counter
from radmfa.factors.outofband import read_info
from radmfa.store.base import StoreError, TokenRecord


def run_add(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    try:
        check_type(args.type)
    except FactorAdminError as e:
        raise UsageError(str(e)) from None
    if args.type in ADDRESS_TYPES:
        return _add_address(args, config, user)
    if args.type not in TOKEN_TYPES:
        return _add_plugin_token(args, config, user)
    if args.address is not None:
        raise UsageError("--address is for email and sms tokens")
    if args.counter is not None and args.type != "hotp":
        raise UsageError("--counter is for hotp tokens")
    try:
        spec = TokenSpec.from_defaults(
            config.otp.totp,
            type=args.type,
            digits=args.digits or (config.otp.hotp.digits if args.type == "hotp" else None),
            algorithm=args.algorithm,
            period=args.period,
            description=args.description,
            counter=args.counter,
        )
        secret = _given_secret(args)
        token = build_token(user, spec, now(), secret)
    except TokenError as e:
        raise UsageError(str(e)) from None
    _store_new_token(config, token, args.reason)
    uri = provisioning_uri(token, config.otp.totp.issuer)
    if args.json:
        print(json.dumps({**token_summary(token), "secret": secret_base32(token), "uri": uri}))
        return 0
    print(f"Token {token.token_id} added for {user} ({token_description(token)}).")
    if secret is None:
        if token.type == "hotp":
            print("Codes count up from", 0 if token.last_step is None else token.last_step + 1)
        if not args.no_qr:
            print("Scan this QR code with the authenticator app:\n")
            segno.make_qr(uri, error="m").terminal(out=sys.stdout, compact=True)
        print(f"\nOr enter this secret by hand: {secret_base32(token)}")
        print(f"URI: {uri}")
    return 0


def _given_secret(args: argparse.Namespace) -> bytes | None:
    """The secret of ``--secret VALUE|-`` or ``--secret-file F``; None: generate one."""
    if args.secret_file is not None:
        return parse_base32_secret(secret_file(args.secret_file, "--secret-file"))
    if args.secret is not None:
        return parse_base32_secret(secret_arg(args.secret, "--secret"))
    return None


def _store_new_token(config: Config, token: TokenRecord, reason: str | None) -> None:
    """Add the token with its audit row; refused (exit 1) when the user already has its
    secret: a second token with one secret would accept every code twice."""
    store = store_from(config)
    try:
        enroll_token(store, cli_actor(reason), token, now=now())
    except DuplicateSecret as e:
        raise CommandFailed(str(e)) from None
    finally:
        store.close()


def _add_address(args: argparse.Namespace, config: Config, user: str) -> int:
    store = store_from(config)
    try:
        change = change_address(
            store, cli_actor(args.reason), config, args.type, user, args.address, now=now()
        )
    except FactorAdminError as e:
        raise UsageError(str(e)) from None
    finally:
        store.close()
    token = change.token
    if args.json:
        print(json.dumps(token_summary(token)))
        return 0
    print(f"{args.type} factor of {user}: {address_of(token)}")
    if change.needs_confirmation:
        print(
            "This replaces an earlier address: codes in flight for it no longer work, and the "
            "new one gets nothing until it is confirmed at a login: after a code from another "
            "factor, with a code sent to it (a user with no other factor needs an emergency "
            "code, or the email/sms token removed and added again)."
        )
    if change.devices_revoked:
        print(f"{change.devices_revoked} trusted device(s) of {user} forgotten.")
    return 0


def _add_plugin_token(args: argparse.Namespace, config: Config, user: str) -> int:
    try:
        secret = _given_secret(args)
    except TokenError as e:
        raise UsageError(str(e)) from None
    token = generic_token(args.type, user, secret, args.digits or 6, now(), args.description)
    _store_new_token(config, token, args.reason)
    if args.json:
        print(json.dumps({**token_summary(token), "secret": secret_base32(token)}))
        return 0
    print(f"Token {token.token_id} ({args.type}) added for {user}.")
    if secret is None:
        print(f"Secret (base32): {secret_base32(token)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config) if args.user else None
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
    print(f"{'USER':<24} {'TOKEN':<14} {'TYPE':<9} {'DETAILS':<32} CREATED")
    for t in tokens:
        print(
            f"{t.user:<24} {t.token_id:<14} {t.type:<9} {token_description(t):<32} "
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
        built = build_rows(
            read_rows(text, source),
            config.otp.totp,
            now(),
            strip_realm=config.usernames.strip_realm,
        )
    except ImportError_ as e:
        raise UsageError("nothing imported:\n" + "\n".join(e.problems)) from None
    tokens = [t for _, t in built]
    store = store_from(config)
    try:
        skipped = store.add_tokens(tokens)
        gone = {t.token_id for t in skipped}
        added = [t for t in tokens if t.token_id not in gone]
        by_user: dict[str, list[TokenRecord]] = {}
        for t in added:
            by_user.setdefault(t.user, []).append(t)
        at, why = now(), args.reason or f"imported from {source}"
        store.append_audit(  # one transaction for the whole import
            [
                admin_event(
                    at,
                    name,
                    "token-import",
                    after=", ".join(f"{t.type} {t.token_id}" for t in mine),
                    reason=why,
                )
                for name, mine in sorted(by_user.items())
            ]
        )
    except StoreError as e:
        raise CommandFailed(f"nothing imported: {e}") from None
    finally:
        store.close()
    for line in skipped_rows(built, skipped):
        print(line)
    print(
        f"imported {len(added)} token(s) for {len(by_user)} user(s)"
        + (f"; {len(skipped)} skipped (secret already enrolled)" if skipped else "")
    )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    store = store_from(config)
    try:
        removed = len(remove_tokens(store, cli_actor(args.reason), user, args.token_id, now=now()))
    finally:
        store.close()
    if removed == 0:
        what = f"token {args.token_id}" if args.token_id else "any token"
        raise CommandFailed(f"{user} has no {what}")
    print(f"removed {removed} token(s) of {user}")
    return 0


def token_description(t: TokenRecord) -> str:
    if t.type == "totp":
        return f"{t.digits} digits, {t.algorithm}, {t.period}s{_drift(t)}"
    if t.type == "hotp":
        return f"{t.digits} digits, {t.algorithm}, next counter {next_counter(t)}"
    if t.type in ADDRESS_TYPES:
        return address_of(t)
    if t.type == "backup":
        return "used" if t.last_step is not None else "unused"
    if t.type == "emergency":
        state = "used" if t.last_step is not None else f"until {_iso(t.created_at + t.period)}"
        return f"{t.description}, {state}"
    return t.description or t.type


def _drift(t: TokenRecord) -> str:
    """The last accepted code's offset from the server's clock, when one was seen off it."""
    if not t.drift:
        return ""
    seconds = abs(t.drift) * t.period
    way = "ahead of" if t.drift > 0 else "behind"
    return f", last code {t.drift:+d} step ({seconds} s {way} this server's clock)"


def token_summary(t: TokenRecord) -> dict[str, object]:
    summary: dict[str, object] = {
        "user": t.user,
        "token_id": t.token_id,
        "type": t.type,
        "digits": t.digits,
        "algorithm": t.algorithm,
        "period": t.period,
        "created_at": _iso(t.created_at),
        "last_used_at": None,
        "description": t.description,
    }
    if t.type == "totp":
        # The step a code matched, less the drift it showed: when it was typed.
        if t.last_step is not None:
            summary["last_used_at"] = _iso((t.last_step - (t.drift or 0)) * t.period)
        summary["drift_steps"] = t.drift
    elif t.type == "hotp":
        summary["counter"] = next_counter(t)
    elif t.type in ADDRESS_TYPES:
        info = read_info(t)
        summary.update(address=info.address, source=info.source, confirmed=t.last_step is not None)
    elif t.type in ("backup", "emergency"):
        summary["used"] = t.last_step is not None
    return summary


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
