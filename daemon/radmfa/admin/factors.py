"""Enrolment and help-desk operations for the factors beyond TOTP, shared by the CLI, the
portal and its help-desk pages.

Everything here takes the store and an explicit ``now``; nothing reads the clock or prints.
The use cases (:func:`change_address`, :func:`regenerate_backup_codes`,
:func:`issue_emergency`, :func:`prefer_factor`, :func:`resync`) also take the
:class:`~radmfa.admin.actor.Actor` and write their admin row; the functions they build on
(:func:`enroll_address`, :func:`new_backup_codes`, ...) write no row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from radmfa.admin.actor import Actor
from radmfa.admin.tokens import Judge, TokenError, new_token_id
from radmfa.config import Config
from radmfa.factors import backup, emergency
from radmfa.factors.email import clean_email
from radmfa.factors.hotp import HotpFactor
from radmfa.factors.outofband import SOURCE_CLI, SOURCE_DIRECTORY, address_token, read_info
from radmfa.factors.plugins import directory_attributes, factor_entry_points
from radmfa.factors.sms import clean_number
from radmfa.store.base import Store, TokenChange, TokenRecord

ADDRESS_TYPES = ("email", "sms")
#: Types with their own commands instead of ``token add``.
ISSUED_TYPES = {"backup": "radmfa backup-codes USER", "emergency": "radmfa emergency-code USER"}


class ChangeRefused(Exception):
    """A judged change was refused (``refusal``: what the judge or the store said);
    nothing was written."""

    def __init__(self, refusal: object) -> None:
        super().__init__(f"refused: {refusal}")
        self.refusal = refusal


class FactorAdminError(ValueError):
    """Something an admin can fix; the message says what."""


def installed_types() -> list[str]:
    return sorted(factor_entry_points())


def check_type(token_type: str) -> None:
    types = installed_types()
    if token_type in ISSUED_TYPES:
        raise FactorAdminError(
            f"{token_type} codes are not enrolled with 'token add'; use {ISSUED_TYPES[token_type]}"
        )
    if token_type not in types:
        raise FactorAdminError(f"unknown token type {token_type!r}; installed: {', '.join(types)}")


# -- email / sms ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressChange:
    token: TokenRecord
    #: The address replaced one that was there before: it must be confirmed at the next login.
    needs_confirmation: bool
    #: The earlier address (None: there was none), for the audit trail.
    previous: str | None = None
    #: A changed address forgets the user's trusted devices.
    devices_revoked: int = 0


def clean_address(token_type: str, address: str) -> str:
    """The address in canonical form; :class:`FactorAdminError` when it is not one."""
    cleaned = clean_email(address) if token_type == "email" else clean_number(address)
    if cleaned is None:
        what = "email address" if token_type == "email" else "phone number (+4912345678)"
        raise FactorAdminError(f"{address!r} is not a valid {what}")
    return cleaned


def enroll_address(
    store: Store,
    config: Config,
    token_type: str,
    user: str,
    address: str | None,
    now: float,
    *,
    confirmed: bool = False,
    judge: Judge | None = None,
    link: bytes | None = None,
) -> AddressChange:
    """Give ``user`` the email or SMS factor, replacing their earlier one of that type.

    Without ``address`` it comes from the LDAP attribute, which needs search-then-bind.
    ``confirmed``: a code sent to the address came back already (the portal asks for it
    before storing anything), so it is trusted at once. ``judge`` and ``link``: the change
    is judged and the enrolment link spent in its transaction
    (:meth:`~radmfa.store.base.Store.change_tokens`); :class:`ChangeRefused` when refused.
    """
    if address is not None:
        source, value = SOURCE_CLI, clean_address(token_type, address)
    else:
        email, sms = config.otp.email, config.otp.sms
        if token_type == "email":
            attribute = email.address_attribute if email is not None else None
        else:
            attribute = sms.number_attribute if sms is not None else None
        if attribute is None or attribute not in directory_attributes(config):
            raise FactorAdminError(
                f"give --address: {token_type} addresses come from LDAP only with "
                "search-then-bind (ldap.base_dn) and the attribute configured in "
                f"otp.{token_type}; a direct bind (ldap.user_dn) reads no attributes"
            )
        source, value = SOURCE_DIRECTORY, None
    previous = next((t for t in store.list_tokens(user) if t.type == token_type), None)
    token = address_token(token_type, user, value, source, now, previous)
    pending = value is not None and token.last_step is None
    if confirmed and value is not None:
        token = replace(token, last_step=1)
    if judge is None and link is None:
        store.replace_tokens(user, token_type, [token])
    else:
        change = TokenChange(user, add=(token,), remove_types=(token_type,), link=link, now=now)
        result = store.change_tokens(change, judge or (lambda _tokens, _doomed: None))
        if not result.done:
            raise ChangeRefused(result.refusal)
    # Whoever changed the phone number or address must prove it before skipping codes again.
    revoked = store.revoke_devices(user) if pending else 0
    before = address_of(previous) if previous is not None else None
    return AddressChange(token, pending and not confirmed, before, revoked)


def address_of(token: TokenRecord) -> str:
    info = read_info(token)
    if info.address is None:
        return "(from the directory, not seen yet)"
    state = "confirmed" if token.last_step is not None else "NOT confirmed"
    return f"{info.address} ({info.source}, {state})"


def change_address(
    store: Store,
    actor: Actor,
    config: Config,
    token_type: str,
    user: str,
    address: str | None,
    *,
    now: float,
    confirmed: bool = False,
    judge: Judge | None = None,
    link: bytes | None = None,
) -> AddressChange:
    """:func:`enroll_address` with its admin row (``email-address``, ``sms-address``; and
    ``enroll-link-use`` when it spent an enrolment link)."""
    change = enroll_address(
        store, config, token_type, user, address, now, confirmed=confirmed, judge=judge, link=link
    )
    revoked = change.devices_revoked
    rows = [
        actor.event(
            now,
            user,
            f"{token_type}-address",
            before=change.previous,
            after=address_of(change.token)
            + (f"; {revoked} trusted device(s) revoked" if revoked else ""),
        )
    ]
    if link is not None:
        rows.append(actor.event(now, user, "enroll-link-use", after="spent"))
    store.append_audit(rows)
    return change


# -- backup codes, emergency codes ---------------------------------------------------------------


def new_backup_codes(store: Store, config: Config, user: str, now: float) -> list[str]:
    """A new set (shown once); the previous set stops working in the same transaction."""
    codes, tokens = backup.generate(user, config.otp.backup_codes.count, now)
    store.replace_tokens(user, "backup", tokens)
    return codes


def backup_codes_left(tokens: Sequence[TokenRecord]) -> tuple[int, int]:
    """(unused, total) of the user's current set."""
    mine = [t for t in tokens if t.type == "backup"]
    return sum(t.last_step is None for t in mine), len(mine)


def regenerate_backup_codes(
    store: Store, actor: Actor, config: Config, user: str, *, now: float
) -> list[str]:
    """:func:`new_backup_codes` with its admin row (how many were left, how many are new)."""
    left, _total = backup_codes_left(store.list_tokens(user))
    codes = new_backup_codes(store, config, user, now)
    store.append_audit(
        [
            actor.event(
                now,
                user,
                "backup-codes",
                before=f"{left} unused code(s)",
                after=f"{len(codes)} new code(s)",
            )
        ]
    )
    return codes


def issue_emergency(
    store: Store, actor: Actor, config: Config, user: str, ttl: float | None, *, now: float
) -> tuple[str, TokenRecord]:
    """:func:`issue_emergency_code` by ``actor`` (the code names them as its issuer), with
    its admin row. The code is for showing once; only its hash is stored."""
    code, token = issue_emergency_code(store, config, user, ttl, actor.name, now)
    expires = datetime.fromtimestamp(token.created_at + token.period, UTC)
    store.append_audit(
        [
            actor.event(
                now,
                user,
                "emergency-code",
                after=f"valid until {expires.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            )
        ]
    )
    return code, token


def issue_emergency_code(
    store: Store, config: Config, user: str, ttl: float | None, issuer: str, now: float
) -> tuple[str, TokenRecord]:
    limits = config.otp.emergency
    ttl = limits.ttl if ttl is None else ttl
    if not 30 <= ttl <= limits.max_ttl:
        raise FactorAdminError(
            f"--ttl must be between 30s and {limits.max_ttl:g}s (otp.emergency.max_ttl)"
        )
    code, token = emergency.issue(user, ttl, issuer, now)
    store.replace_tokens(user, "emergency", [token])
    return code, token


# -- hotp resync, preferences --------------------------------------------------------------------


def resync_hotp(
    store: Store, config: Config, user: str, code1: str, code2: str, token_id: str | None
) -> tuple[TokenRecord, int]:
    """Find ``code1``, ``code2`` as consecutive counters and move the token there (forward
    only: the store refuses to go back). Returns the token and its new last counter."""
    factor = HotpFactor(config.otp.hotp.window, config.otp.hotp.resync_window)
    tokens = [
        t
        for t in store.list_tokens(user)
        if t.type == "hotp" and (token_id is None or t.token_id == token_id)
    ]
    if not tokens:
        raise FactorAdminError(f"{user} has no HOTP token" + (f" {token_id}" if token_id else ""))
    for token in tokens:
        counter = factor.find_consecutive(token, code1.strip(), code2.strip())
        if counter is not None and store.advance_step(token.token_id, counter):
            return token, counter
    raise FactorAdminError(
        "the two codes are not consecutive codes within "
        f"{config.otp.hotp.resync_window} counters after the current one; press the button "
        "twice more and try again with the two newest codes"
    )


def resync(
    store: Store,
    actor: Actor,
    config: Config,
    user: str,
    code1: str,
    code2: str,
    token_id: str | None,
    *,
    now: float,
) -> tuple[TokenRecord, int]:
    """:func:`resync_hotp` with its admin row."""
    token, counter = resync_hotp(store, config, user, code1, code2, token_id)
    store.append_audit(
        [
            actor.event(
                now, user, "hotp-resync", after=f"hotp {token.token_id} at counter {counter + 1}"
            )
        ]
    )
    return token, counter


def prefer_factor(
    store: Store, actor: Actor, user: str, factor: str, *, now: float
) -> tuple[str | None, str | None]:
    """:func:`set_preferred` with its admin row; (before, after)."""
    before = store.user_settings(user).preferred
    chosen = set_preferred(store, user, factor)
    store.append_audit(
        [actor.event(now, user, "prefer", before=before or "none", after=chosen or "none")]
    )
    return before, chosen


def set_preferred(store: Store, user: str, factor: str) -> str | None:
    if factor.lower() in ("none", "-", ""):
        store.set_preferred(user, None)
        return None
    factor = factor.lower()
    have = {t.type for t in store.list_tokens(user)}
    if factor not in have:
        raise FactorAdminError(
            f"{user} has no {factor} factor (has: {', '.join(sorted(have)) or 'none'})"
        )
    store.set_preferred(user, factor)
    return factor


def generic_token(
    token_type: str, user: str, secret: bytes | None, digits: int, now: float, description: str
) -> TokenRecord:
    """A token for a plugin factor: a random (or given) secret; the plugin gives it meaning."""
    return TokenRecord(
        token_id=new_token_id(),
        user=user,
        type=token_type,
        secret=secret if secret is not None else os.urandom(20),
        digits=digits,
        algorithm="SHA1",
        period=0,
        created_at=now,
        description=description,
    )


__all__ = [
    "ADDRESS_TYPES",
    "AddressChange",
    "FactorAdminError",
    "TokenError",
    "address_of",
    "backup_codes_left",
    "change_address",
    "check_type",
    "clean_address",
    "enroll_address",
    "generic_token",
    "installed_types",
    "issue_emergency",
    "issue_emergency_code",
    "new_backup_codes",
    "prefer_factor",
    "regenerate_backup_codes",
    "resync",
    "resync_hotp",
    "set_preferred",
]
