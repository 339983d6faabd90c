"""Token administration shared by the CLI, the portal and anything else that manages
enrolments. Nothing here reads the clock or prints; the store functions are blocking (the
daemon runs them through its store runner)."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pyotp

from radmfa.admin.actor import Actor
from radmfa.auth.outofband import can_finish
from radmfa.config import TotpConfig
from radmfa.factors.base import FactorRegistry, MatchKind
from radmfa.factors.hotp import last_step_for, make_hotp, next_counter
from radmfa.factors.totp import make_otp
from radmfa.store.base import Store, TokenChange, TokenChanged, TokenRecord

#: RFC 4226 asks for 160-bit secrets; pyotp refuses fewer than 112 bits.
SECRET_BYTES = 20
MIN_SECRET_BYTES = 14
ALGORITHMS = ("SHA1", "SHA256", "SHA512")
#: Token types enrolled with a shared secret (``radmfa token add``).
TOKEN_TYPES = ("totp", "hotp")


class TokenError(ValueError):
    """A token request an admin can fix (bad secret, unsupported option)."""


class DuplicateSecret(TokenError):
    """The user already has a token with this secret: a second one would accept each code
    twice."""


def parse_base32_secret(text: str) -> bytes:
    """Base32 as apps show it: any case, spaces and dashes allowed, padding optional."""
    cleaned = "".join(ch for ch in text if ch not in " -\t").upper().rstrip("=")
    if not cleaned:
        raise TokenError("the secret is empty")
    try:
        raw = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError) as e:
        raise TokenError(f"the secret is not valid base32 ({e})") from None
    if len(raw) < MIN_SECRET_BYTES:
        raise TokenError(
            f"the secret has {len(raw) * 8} bits; at least {MIN_SECRET_BYTES * 8} are required"
        )
    return raw


def new_token_id() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True)
class TokenSpec:
    type: str = "totp"
    digits: int = 6
    algorithm: str = "SHA1"
    period: int = 30
    description: str = ""
    #: HOTP: the counter of the first code the token will show.
    counter: int = 0

    @classmethod
    def from_defaults(cls, totp: TotpConfig, **overrides: object) -> TokenSpec:
        values: dict[str, object] = {
            "digits": totp.digits,
            "algorithm": totp.algorithm,
            "period": totp.period,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        # Overrides are this class's field names with values of any type (the CLI, an import
        # row, the portal): validate() below is what checks them, not the type checker.
        spec = cls(**values)  # type: ignore[arg-type]
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.type not in TOKEN_TYPES:
            raise TokenError(f"unsupported token type {self.type!r} (supported: totp, hotp)")
        if self.counter < 0:
            raise TokenError("the counter cannot be negative")
        if self.digits not in (6, 7, 8, 9, 10):
            raise TokenError("digits must be 6 to 10 (6 or 8 for most apps)")
        if self.algorithm not in ALGORITHMS:
            raise TokenError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if not 1 <= self.period <= 120:
            raise TokenError("period must be 1 to 120 seconds")


def build_token(user: str, spec: TokenSpec, now: float, secret: bytes | None = None) -> TokenRecord:
    hotp = spec.type == "hotp"
    token = TokenRecord(
        token_id=new_token_id(),
        user=user,
        type=spec.type,
        secret=secret if secret is not None else os.urandom(SECRET_BYTES),
        digits=spec.digits,
        algorithm=spec.algorithm,
        period=0 if hotp else spec.period,
        created_at=now,
        # HOTP: last_step is the last counter used, so the first code is at spec.counter.
        last_step=last_step_for(spec.counter) if hotp else None,
        description=spec.description,
    )
    # pyotp's own checks, so a bad token never reaches the store
    make_hotp(token) if hotp else make_otp(token)
    return token


def provisioning_uri(token: TokenRecord, issuer: str) -> str:
    """The otpauth:// URI an authenticator app scans. It contains the secret: never log it."""
    if token.type == "hotp":
        hotp: pyotp.HOTP = make_hotp(token)
        return hotp.provisioning_uri(
            name=token.user, initial_count=next_counter(token), issuer_name=issuer
        )
    otp: pyotp.TOTP = make_otp(token)
    return otp.provisioning_uri(name=token.user, issuer_name=issuer)


def secret_base32(token: TokenRecord) -> str:
    return base64.b32encode(token.secret).decode("ascii").rstrip("=")


def enroll_token(store: Store, actor: Actor, token: TokenRecord, *, now: float) -> None:
    """Add ``token`` and its admin row (``token-add``, by ``actor``) to the audit trail.
    Raises :class:`DuplicateSecret` (nothing written) when the user already has its secret."""
    if not store.add_token(token):
        raise DuplicateSecret(
            f"{token.user} already has a {token.type} token with this secret; nothing added"
        )
    store.append_audit(
        [actor.event(now, token.user, "token-add", after=f"{token.type} {token.token_id}")]
    )


class LastFactor(TokenError):
    """Removing it would leave the user without a second factor (while the policy asks for
    one): add another first, or replace it in one step."""


#: Fallbacks, not factors to stand on: one-time backup codes, a help-desk emergency code.
FALLBACK_TYPES = ("backup", "emergency")


def standing_factors(
    tokens: Sequence[TokenRecord], factors: FactorRegistry, now: float
) -> list[TokenRecord]:
    """The factors a user signs in with on their own: usable now, not a fallback, and not an
    address still waiting for its confirmation."""
    return [
        t
        for t in tokens
        if t.type not in FALLBACK_TYPES and factors.usable(t, now) and can_finish(factors, t)
    ]


#: What a judge of :meth:`~radmfa.store.base.Store.change_tokens` sees and answers.
Judge = Callable[[list[TokenRecord], list[TokenRecord]], object | None]
#: Refusals of the judges below.
HAS_FACTOR = "has_factor"
LAST = "last"
GONE = "gone"


def leaves_none(
    tokens: Sequence[TokenRecord],
    doomed: Sequence[TokenRecord],
    factors: FactorRegistry,
    now: float,
) -> bool:
    """Whether removing ``doomed`` leaves the user without a standing factor (removing only
    fallbacks while no standing factor is left counts too: a user with backup codes alone
    keeps them)."""
    remaining = [t for t in tokens if t not in doomed]
    if standing_factors(remaining, factors, now):
        return False
    return bool(standing_factors(doomed, factors, now)) or not any(
        factors.usable(t, now) for t in remaining
    )


def only_first_factor(factors: FactorRegistry, now: float) -> Judge:
    """ "Add this factor only while the user has none that works": the rule for a session
    that proved no factor (a password alone must not add one next to the user's own)."""

    def judge(tokens: list[TokenRecord], doomed: list[TokenRecord]) -> object | None:
        return HAS_FACTOR if any(factors.usable(t, now) for t in tokens) else None

    return judge


def keeping_one(factors: FactorRegistry | None, now: float) -> Judge:
    """ "Remove this factor only if another standing factor remains" (``factors`` None: any
    removal); :data:`GONE` when nothing matched."""

    def judge(tokens: list[TokenRecord], doomed: list[TokenRecord]) -> object | None:
        if not doomed:
            return GONE
        if factors is not None and leaves_none(tokens, doomed, factors, now):
            return LAST
        return None

    return judge


def remove_tokens(
    store: Store,
    actor: Actor,
    user: str,
    token_id: str | None,
    *,
    now: float,
    keep_one: FactorRegistry | None = None,
) -> list[TokenRecord]:
    """Remove one token of ``user`` (or all with ``token_id`` None) with its admin row; the
    tokens removed (none: nothing matched). ``keep_one``: refuse (:class:`LastFactor`,
    nothing removed) when the user would be left without a standing factor, judged in the
    same transaction as the removal (two removals at once cannot both pass)."""
    if token_id is None:
        change = TokenChange(user, remove_types=tuple({t.type for t in store.list_tokens(user)}))
    else:
        change = TokenChange(user, remove_ids=(token_id,))
    result = store.change_tokens(change, keeping_one(keep_one, now))
    if result.refusal == LAST:
        raise LastFactor("this is your last sign-in method: add another one first, or replace it")
    if not result.done or not result.removed:
        return []
    removed = list(result.removed)
    store.append_audit(
        [
            actor.event(
                now,
                user,
                "token-remove",
                before=", ".join(f"{t.type} {t.token_id}" for t in removed),
                after="removed",
            )
        ]
    )
    return removed


def enroll_judged(
    store: Store,
    actor: Actor,
    token: TokenRecord,
    *,
    now: float,
    judge: Judge | None = None,
    replacing: str | None = None,
    link: bytes | None = None,
) -> TokenChanged:
    """Add ``token`` (in place of the user's token ``replacing``: :data:`GONE` when it is
    not there) if ``judge`` approves, spending the enrolment ``link`` with it, in one
    transaction; then the admin rows (``token-add``, ``token-remove``,
    ``enroll-link-use``). Nothing is written on a refusal."""

    def rule(tokens: list[TokenRecord], doomed: list[TokenRecord]) -> object | None:
        if replacing is not None and not doomed:
            return GONE
        return judge(tokens, doomed) if judge is not None else None

    change = TokenChange(
        token.user,
        add=(token,),
        remove_ids=(replacing,) if replacing is not None else (),
        link=link,
        now=now,
    )
    result = store.change_tokens(change, rule)
    if not result.done:
        return result
    rows = [actor.event(now, token.user, "token-add", after=f"{token.type} {token.token_id}")]
    rows += [
        actor.event(
            now,
            token.user,
            "token-remove",
            before=f"{old.type} {old.token_id}",
            after=f"replaced by {token.type} {token.token_id}",
        )
        for old in result.removed
    ]
    if link is not None:
        rows.append(actor.event(now, token.user, "enroll-link-use", after="spent"))
    store.append_audit(rows)
    return result


def replace_token(
    store: Store, actor: Actor, token: TokenRecord, old_id: str, *, now: float
) -> bool:
    """Add ``token`` and remove the user's token ``old_id`` in one step (a new phone for the
    old one), each with its admin row: the user is never without the factor. False (nothing
    changed) when ``old_id`` is not the user's; :class:`DuplicateSecret` as for enrolment."""
    result = enroll_judged(store, actor, token, now=now, replacing=old_id)
    if result.refusal == GONE:
        return False
    if not result.done:
        raise DuplicateSecret(
            f"{token.user} already has a {token.type} token with this secret; nothing added"
        )
    return True


def confirm_token(
    token: TokenRecord, code: str, now: float, factors: FactorRegistry
) -> TokenRecord | None:
    """``token`` ready to be stored when ``code`` is a fresh code of it, else None.

    A token is stored only once its user showed a code from it (no half-enrolled token that
    works over RADIUS while the app never got it); the step of that code is spent, so the
    same code cannot then log in.
    """
    factor = factors.get(token.type)
    if factor is None:
        return None
    match = factor.verify(token, code.strip(), now)
    if match.kind is not MatchKind.MATCH:
        return None
    return replace(token, last_step=match.step) if match.step is not None else token
