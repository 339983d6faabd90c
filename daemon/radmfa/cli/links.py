"""``radmfa enroll-link USER [--ttl 7d] [--email]``: a one-time link to the portal that lets a
user without a factor enroll after signing in with the directory password.

With ``--email`` the link goes to the user's address in the directory (the attribute
``otp.email.address_attribute``, read with the user search of ``ldap.base_dn``) through the
SMTP server of ``otp.email``; it is printed only without ``--email`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from radmfa.admin.actor import cli_actor
from radmfa.admin.links import LinkError, create_enrol_link, link_url
from radmfa.cli.common import (
    CommandFailed,
    UsageError,
    config_from,
    now,
    store_from,
    user_arg,
)
from radmfa.config import Config, parse_duration
from radmfa.delivery.smtp import SmtpTransport, build_message
from radmfa.factors.base import FactorRegistry

__all__ = ["run_enroll_link"]

SUBJECT = "Set up two-factor authentication"
BODY = """\
Hello {user},

please set up two-factor authentication for your account. Open this link, sign in with
your network account and follow the steps (it takes two minutes and your phone):

{url}

The link works once, for you only, until {until}. If you did not expect this message,
tell your IT help desk.
"""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def run_enroll_link(args: argparse.Namespace) -> int:
    config = config_from(args)
    user = user_arg(args.user, config)
    if config.portal is None or config.portal.public_url is None:
        raise UsageError("enrollment links need the portal section with public_url")
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as e:
        raise UsageError(f"--ttl: {e}") from None
    address = None
    if args.email:
        if config.otp.email is None:
            raise UsageError("--email needs otp.email (the SMTP server and sender)")
        address = directory_address(config, user)
    store = store_from(config)
    try:
        factors = _factors(config)
        at = now()
        has_factor = any(factors.usable(t, at) for t in store.list_tokens(user))
        made = create_enrol_link(
            store, cli_actor(args.reason), user, now=at, ttl=ttl, has_factor=has_factor
        )
    except LinkError as e:
        raise CommandFailed(str(e)) from None
    finally:
        store.close()
    url = link_url(config.portal.public_url, made.secret)
    until = _iso(made.record.expires_at)
    if address is not None:
        _mail(config, address, user, url, until)
        print(f"Enrollment link for {user} mailed to {address}; it works once, until {until}.")
        return 0
    if args.json:
        print(json.dumps({"user": user, "url": url, "expires": until}))
        return 0
    print(f"Enrollment link for {user} (works once, until {until}):")
    print(url)
    return 0


def _factors(config: Config) -> FactorRegistry:
    from radmfa.factors.plugins import build_factors

    return build_factors(config, None)


def _mail(config: Config, address: str, user: str, url: str, until: str) -> None:
    email = config.otp.email
    assert email is not None
    message = build_message(
        email.sender, address, SUBJECT, BODY.format(user=user, url=url, until=until), now=now()
    )
    try:
        SmtpTransport(email.smtp, None)._send_now(message)
    except Exception as e:
        raise CommandFailed(
            f"the link was made but could not be mailed ({e}); run without --email to print it"
        ) from None


def directory_address(config: Config, user: str) -> str:
    """The user's email address in the directory (the user search, on a reactor of its own
    for this one question)."""
    email = config.otp.email
    attribute = email.address_attribute if email is not None else None
    if config.ldap is None or config.ldap.base_dn is None or not attribute:
        raise UsageError(
            "--email reads the address from the directory: it needs ldap.base_dn (a user "
            "search) and otp.email.address_attribute"
        )
    from twisted.internet.selectreactor import SelectReactor

    from radmfa.directory.base import DirectoryOutcome
    from radmfa.directory.ldap import LdapPasswordChecker
    from radmfa.directory.ldap_libldap import LibldapPasswordChecker
    from radmfa.threads import ThreadPoolRunner

    reactor: Any = SelectReactor()  # a reactor of this question's own, never installed
    runner = ThreadPoolRunner(reactor, "radmfa-cli-ldap", 2)
    runner.start()
    ldap = config.ldap
    if ldap.engine == "libldap":
        checker: Any = LibldapPasswordChecker(
            ldap, reactor, runner, attributes=(attribute,), groups=ldap.groups
        )
    else:
        checker = LdapPasswordChecker(
            ldap, runner, reactor, attributes=(attribute,), groups=ldap.groups
        )
    found: list[Any] = []

    def ask() -> None:
        d = checker.user_groups(user)
        d.addBoth(found.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(ask)
    reactor.run(installSignalHandlers=False)
    checker.close()
    runner.stop()
    result = found[0] if found else None
    if result is None or getattr(result, "outcome", None) is not DirectoryOutcome.OK:
        detail = getattr(result, "detail", "") or "no answer"
        raise CommandFailed(f"cannot read {user}'s entry from the directory: {detail}")
    entry = result.entry
    values = entry.attributes.get(attribute, []) if entry is not None else []
    if not values:
        raise CommandFailed(f"{user} has no {attribute} in the directory: nowhere to mail")
    return str(values[0])
