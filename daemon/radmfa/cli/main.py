"""Argument parsing only: every command calls into the same services the daemon uses.

Exit codes: 0 ok, 1 the operation failed (unknown user, ...), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from radmfa import __version__
from radmfa.config import DEFAULT_CONFIG_PATH

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandFailed(Exception):
    """The operation could not be done; the message says why (exit 1)."""


class UsageError(Exception):
    """The command line or configuration is wrong (exit 2)."""


class VersionAction(argparse.Action):
    """``--version``: the release and whether this build runs compiled (mypyc) or pure Python;
    imported only when asked, so other commands do not pay for the check."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from radmfa.native import describe

        print(f"radmfa {__version__}, {describe()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radmfa", description="RADIUS server with LDAP passwords and second factors."
    )
    parser.add_argument(
        "--version", action=VersionAction, nargs=0, help="print the version and build"
    )
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("RADMFA_CONFIG", DEFAULT_CONFIG_PATH),
        help="configuration file (default: $RADMFA_CONFIG or %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon in the foreground, logging to stderr")
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text lines or one JSON object per line (default: logging.format, text)",
    )
    serve.set_defaults(run="radmfa.cli.serve:run_serve")

    check = sub.add_parser("check-config", help="validate the configuration file")
    check.set_defaults(run="radmfa.cli.serve:run_check_config")

    init = sub.add_parser(
        "init", help="first-time set-up: starter config, RADIUS secret, store and key file"
    )
    init.add_argument(
        "--dir",
        help="write everything into this directory (default: the config's directory, "
        "/etc/radmfa, with the store in /var/lib/radmfa)",
    )
    init.add_argument("--state-dir", help="where the store and key go (default: DIR/state)")
    init.add_argument("--user", help="the service user to give the files to (as root)")
    init.set_defaults(run="radmfa.cli.init:run_init")

    test_auth = sub.add_parser(
        "test-auth", help="log in to a running server once (like radtest); exit 0 on accept"
    )
    test_auth.add_argument("user")
    test_auth.add_argument(
        "--server", help="HOST:PORT (default: the first listen address of the config)"
    )
    secret = test_auth.add_mutually_exclusive_group()
    secret.add_argument(
        "--secret",
        help="shared secret, or - to read it from standard input (default: from the config; "
        "a value here is visible to other local users)",
    )
    secret.add_argument("--secret-file", help="file holding the shared secret")
    test_auth.add_argument("--timeout", type=float, default=3.0, help="seconds per try")
    test_auth.add_argument("--retries", type=int, default=2, help="retransmissions")
    test_auth.set_defaults(run="radmfa.cli.testauth:run_test_auth")

    unit = sub.add_parser(
        "show-unit", help="print the systemd unit, with ExecStart= naming this radmfa"
    )
    unit.add_argument("--command-path", help="the radmfa command the unit should run")
    unit.set_defaults(run="radmfa.cli.init:run_show_unit")
    example = sub.add_parser("show-config", help="print the annotated example configuration")
    example.set_defaults(run="radmfa.cli.init:run_show_config")

    demo = sub.add_parser(
        "demo", help="write a self-contained demo setup (users file, token) and serve it"
    )
    demo.add_argument("--dir", default="radmfa-demo", help="directory for the demo files")
    demo.add_argument("--port", type=int, default=1812, help="UDP port on 127.0.0.1")
    demo.add_argument("--no-serve", action="store_true", help="only write the files")
    demo.set_defaults(run="radmfa.cli.demo:run_demo")

    hashpw = sub.add_parser(
        "hash-password", help="print a users-file line (name:scrypt-hash) for local_users"
    )
    hashpw.add_argument("user")
    hashpw.set_defaults(run="radmfa.cli.users:run_hash_password")

    token = sub.add_parser("token", help="manage second-factor tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    add = tsub.add_parser("add", help="enroll a token (prints a QR code to scan)")
    add.add_argument("user")
    add.add_argument(
        "--type",
        default="totp",
        type=str.lower,
        metavar="TYPE",
        help="totp (default), hotp, email, sms, or an installed plugin's type",
    )
    add.add_argument("--counter", type=int, help="hotp: the counter of the next code (default 0)")
    add.add_argument(
        "--address",
        "--number",
        dest="address",
        help="email/sms: the address or phone number (default: from the LDAP attribute); "
        "a changed one must be confirmed at a login, after a code from another factor",
    )
    given = add.add_mutually_exclusive_group()
    given.add_argument(
        "--secret",
        help="import an existing base32 secret instead of generating one; - reads it from "
        "standard input (a value here is visible to other local users)",
    )
    given.add_argument("--secret-file", help="read the base32 secret from this file")
    add.add_argument("--digits", type=int, choices=[6, 7, 8, 9, 10])
    add.add_argument("--algorithm", type=str.upper, choices=["SHA1", "SHA256", "SHA512"])
    add.add_argument("--period", type=int, help="seconds per code (default from the config)")
    add.add_argument("--description", default="")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    add.add_argument("--no-qr", action="store_true", help="print the URI but no QR code")
    _reason(add)
    add.set_defaults(run="radmfa.cli.tokens:run_add")
    lst = tsub.add_parser("list", help="list tokens")
    lst.add_argument("user", nargs="?")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(run="radmfa.cli.tokens:run_list")
    imp = tsub.add_parser(
        "import", help="bulk-import tokens from CSV or JSON (user,type,secret,digits,...)"
    )
    imp.add_argument("file", help="CSV with a header line, or a JSON list; - for stdin")
    _reason(imp)
    imp.set_defaults(run="radmfa.cli.tokens:run_import")
    rm = tsub.add_parser("remove", help="remove a user's tokens (all, or one by id)")
    rm.add_argument("user")
    rm.add_argument("token_id", nargs="?")
    _reason(rm)
    rm.set_defaults(run="radmfa.cli.tokens:run_remove")
    resync = tsub.add_parser(
        "resync", help="bring a drifted HOTP token back with two consecutive codes"
    )
    resync.add_argument("user")
    resync.add_argument("code1")
    resync.add_argument("code2")
    resync.add_argument("--token", dest="token_id", help="which HOTP token (default: any)")
    _reason(resync)
    resync.set_defaults(run="radmfa.cli.factors:run_resync")

    backup = sub.add_parser(
        "backup-codes", help="generate a new set of one-time backup codes (the old set dies)"
    )
    backup.add_argument("user")
    backup.add_argument("--json", action="store_true")
    _reason(backup)
    backup.set_defaults(run="radmfa.cli.factors:run_backup_codes")

    emergency = sub.add_parser(
        "emergency-code", help="issue a short-lived single-use code for the help desk"
    )
    emergency.add_argument("user")
    emergency.add_argument("--ttl", help="lifetime, e.g. 2m (default: otp.emergency.ttl)")
    emergency.add_argument("--json", action="store_true")
    _reason(emergency)
    emergency.set_defaults(run="radmfa.cli.factors:run_emergency_code")

    link = sub.add_parser(
        "enroll-link",
        help="a one-time portal link for a user without a factor to enroll (--email: mail it)",
    )
    link.add_argument("user")
    link.add_argument("--ttl", default="7d", help="how long it works, e.g. 2d (default: 7d)")
    link.add_argument(
        "--email",
        action="store_true",
        help="mail it to the user's directory address (otp.email.address_attribute)",
    )
    link.add_argument("--json", action="store_true")
    _reason(link)
    link.set_defaults(run="radmfa.cli.links:run_enroll_link")

    user = sub.add_parser("user", help="inspect, unlock, enable, disable, suspend, reset users")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    show = usub.add_parser("show", help="tokens, status, devices, failure count and lock state")
    show.add_argument("user")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run="radmfa.cli.users:run_show")
    unlock = usub.add_parser("unlock", help="clear failures, lock and throttle")
    unlock.add_argument("user")
    _reason(unlock)
    unlock.set_defaults(run="radmfa.cli.users:run_unlock")
    for action, text in (
        ("enable", "allow logins again after disable (also ends a suspension)"),
        ("disable", "refuse every login at once, without LDAP traffic; forgets trusted devices"),
        ("suspend", "no second factor until --until (or resume): for a lost phone"),
        ("resume", "end a suspension: the second factor is needed again"),
    ):
        status = usub.add_parser(action, help=text)
        status.add_argument("user")
        if action == "suspend":
            status.add_argument(
                "--until",
                help="when it ends: 2030-01-31[T12:00][Z] (UTC) or a duration (8h, 2d); "
                "default: until 'radmfa user resume'",
            )
        _reason(status)
        status.set_defaults(run="radmfa.cli.users:run_status", action=action)
    reset = usub.add_parser(
        "reset", help="remove every token and trusted device: the next login enrolls afresh"
    )
    reset.add_argument("user")
    _reason(reset)
    reset.set_defaults(run="radmfa.cli.users:run_reset")
    prefer = usub.add_parser(
        "prefer", help="the factor to use first (email/sms: sent as soon as the password is right)"
    )
    prefer.add_argument("user")
    prefer.add_argument("factor", help="a factor type the user has, or 'none'")
    _reason(prefer)
    prefer.set_defaults(run="radmfa.cli.factors:run_prefer")

    device = sub.add_parser("device", help="trusted devices (user, Calling-Station-Id)")
    dsub = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    dlist = dsub.add_parser("list", help="remembered devices and when they expire")
    dlist.add_argument("user", nargs="?")
    dlist.add_argument("--json", action="store_true")
    dlist.set_defaults(run="radmfa.cli.devices:run_list")
    revoke = dsub.add_parser("revoke", help="forget one device of a user, or all (--all)")
    revoke.add_argument("user")
    revoke.add_argument("device", nargs="?", help="the Calling-Station-Id as listed")
    revoke.add_argument("--all", action="store_true", help="every device of the user")
    _reason(revoke)
    revoke.set_defaults(run="radmfa.cli.devices:run_revoke")

    store = sub.add_parser(
        "store", help="the store itself: its schema, moving a SQLite store into PostgreSQL"
    )
    ssub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    migrate = ssub.add_parser(
        "migrate",
        help="bring the configured store's schema up to date (nodes starting meanwhile "
        "wait); prints the version before and after",
    )
    migrate.set_defaults(run="radmfa.cli.store:run_migrate")
    copy = ssub.add_parser(
        "copy",
        help="copy a SQLite store (tokens, users, devices, audit trail) into the configured "
        "PostgreSQL store, which must be empty: all or nothing",
    )
    copy.add_argument(
        "--from", dest="source", required=True, metavar="PATH", help="the SQLite store file"
    )
    copy.add_argument(
        "--key-file",
        help="the key file of that store (default: store.key_file; every node shares one)",
    )
    _reason(copy)
    copy.set_defaults(run="radmfa.cli.store:run_copy")

    trail = sub.add_parser(
        "audit", help="who logged in with what, from where, who failed and why, admin changes"
    )
    trail.add_argument("--user", help="one user's logins and the changes made to them")
    trail.add_argument("--since", help="from: 2030-01-31[T12:00][Z] (UTC) or 2h / 7d ago")
    trail.add_argument("--until", help="before: a time as for --since")
    trail.add_argument("--outcome", choices=["accept", "reject", "challenge"])
    trail.add_argument(
        "--reason", help="a reason code (bad_otp, locked, ...) or a word of an admin's reason"
    )
    trail.add_argument(
        "--kind", choices=["auth", "admin"], help="only logins, or only admin changes"
    )
    trail.add_argument("--limit", type=int, help="the newest N rows (still oldest first)")
    trail.add_argument("--format", choices=["table", "json", "csv"], default="table")
    trail.set_defaults(run="radmfa.cli.audit:run_audit")
    return parser


def _reason(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", help="why (kept in the audit trail)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, _, func_name = args.run.partition(":")
    import importlib

    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(args) or EXIT_OK)
    except UsageError as e:
        print(f"radmfa: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as e:
        print(f"radmfa: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
