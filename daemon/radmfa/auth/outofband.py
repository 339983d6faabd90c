"""Out-of-band codes, the pipeline's half: sending a code bound to a fresh State, checking the
answer against it, confirming a new address, and taking new addresses from the directory.
(The factor's half - addresses, code shape, delivery - is :mod:`radmfa.factors.outofband`.)

A code is hashed into the State it was sent for and nowhere else. Sending never delays the
reply: the courier delivers in the background and a failure becomes a notice shown at the
user's next prompt. An address that changed (in the directory or through the CLI) is pending:
nothing is sent to it until another, trusted factor succeeded in the same exchange; then the
code sent to it confirms it and ends the login. Pending, it can never finish a login alone.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from radmfa.auth import prompts
from radmfa.auth.challenge import (
    MAX_EXCHANGE_SECONDS,
    PHASE_CONFIRM,
    ChallengeIssuer,
    confirm_phase,
    vouch_phase,
)
from radmfa.auth.decisions import reject
from radmfa.auth.ledger import Ledger, UserView
from radmfa.auth.model import AccessRequest, Decision, Outcome, Reason
from radmfa.config import DEFAULT_SENDS_PER_HOUR_TOTAL, OtpConfig
from radmfa.delivery.courier import Courier
from radmfa.factors.base import Destination, FactorRegistry, OutOfBandFactor, SendContext
from radmfa.store.base import (
    AUDIT_ADMIN,
    AuditEvent,
    ChallengeRecord,
    Store,
    TokenRecord,
    UserSettings,
)
from radmfa.store.facade import AsyncStore

log = Logger(namespace="radmfa.auth")

_CODE_SALT_BYTES = 16


class AuditSink(Protocol):
    """Where the pipeline reports changes it makes to a user's MFA settings."""

    def add(self, event: AuditEvent) -> None: ...


def hash_code(code: str, salt: bytes | None = None) -> bytes:
    salt = salt if salt is not None else os.urandom(_CODE_SALT_BYTES)
    digest = hmac.new(salt, b"radmfa/oob-code/v1:" + code.encode("utf-8"), hashlib.sha256)
    return salt + digest.digest()


def code_hash_matches(stored: bytes, code: str) -> bool:
    return hmac.compare_digest(hash_code(code, stored[:_CODE_SALT_BYTES]), stored)


def destination_of(factors: FactorRegistry, token: TokenRecord) -> Destination | None:
    oob = factors.out_of_band(token.type)
    return oob.destination(token) if oob is not None else None


def can_prove(factors: FactorRegistry, token: TokenRecord) -> bool:
    """A code factor, or an out-of-band one with an address to send to."""
    return factors.out_of_band(token.type) is None or destination_of(factors, token) is not None


def can_finish(factors: FactorRegistry, token: TokenRecord) -> bool:
    """A code factor, or an out-of-band one with a confirmed address."""
    oob = factors.out_of_band(token.type)
    if oob is None:
        return True
    destination = oob.destination(token)
    return destination is not None and destination.confirmed


def is_pending(factors: FactorRegistry, token: TokenRecord) -> bool:
    """An out-of-band token whose address changed and is not trusted yet."""
    destination = destination_of(factors, token)
    return destination is not None and not destination.confirmed


def trusted_others(
    factors: FactorRegistry, tokens: Sequence[TokenRecord], pending: TokenRecord, now: float
) -> list[TokenRecord]:
    """The tokens that may vouch for ``pending``: usable, trusted, of another factor (an
    address that is itself new cannot vouch: two changed addresses confirming each other)."""
    return [
        t
        for t in tokens
        if t.type != pending.type and factors.usable(t, now) and can_finish(factors, t)
    ]


def keyword_token(
    factors: FactorRegistry,
    tokens: Sequence[TokenRecord],
    word: str,
    *,
    exclude: str | None = None,
) -> TokenRecord | None:
    """The user's token whose out-of-band factor has ``word`` as its keyword (``email``)."""
    if not word:
        return None
    for token in tokens:
        oob = factors.out_of_band(token.type)
        if oob is not None and oob.keyword == word and token.type != exclude:
            return token
    return None


class OutOfBandCodes:
    """Sends codes, checks answers against the sent code, keeps addresses current."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        clock: IReactorTime,
        factors: FactorRegistry,
        otp: OtpConfig,
        issuer: ChallengeIssuer,
        ledger: Ledger,
        courier: Courier,
        audit: AuditSink | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.factors = factors
        self.otp = otp
        self.issuer = issuer
        self.ledger = ledger
        self.courier = courier
        self.audit = audit

    async def send(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        token: TokenRecord,
        usable: Sequence[TokenRecord],
        *,
        started_at: float,
        phase: str,
        carry: ChallengeRecord | None = None,
        rule: str | None = None,
    ) -> Decision:
        """Generate a code, bind its hash to a fresh State, start delivery, ask for it.

        A pending (changed, unconfirmed) address gets nothing here: another trusted factor
        must vouch for it first (:meth:`send_confirmation` follows that)."""
        rule = rule if rule is not None else (carry.rule if carry is not None else None)
        destination = destination_of(self.factors, token)
        assert destination is not None
        if not destination.confirmed:
            return await self._vouch_first(
                request, user, key, token, usable, started_at=started_at, rule=rule
            )
        return await self._deliver(
            request,
            user,
            key,
            token,
            usable,
            started_at=started_at,
            phase=phase,
            carry=carry,
            rule=rule,
        )

    async def send_confirmation(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        pending: TokenRecord,
        usable: Sequence[TokenRecord],
        *,
        started_at: float,
        vouched_by: str,
        carry: ChallengeRecord | None = None,
        rule: str | None = None,
    ) -> Decision:
        """``vouched_by`` (a trusted factor) just succeeded in this exchange: now the pending
        address may get the code that confirms it."""
        rule = rule if rule is not None else (carry.rule if carry is not None else None)
        return await self._deliver(
            request,
            user,
            key,
            pending,
            usable,
            started_at=started_at,
            phase=confirm_phase(pending.token_id, vouched_by),
            carry=carry,
            rule=rule,
        )

    async def _vouch_first(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        pending: TokenRecord,
        usable: Sequence[TokenRecord],
        *,
        started_at: float,
        rule: str | None,
    ) -> Decision:
        """Asked for a pending address: a trusted factor first, then the confirmation code.
        With no trusted factor left the login fails (not counted: the password was right);
        the help desk re-enrolls the address or issues an emergency code to vouch with."""
        now = self.clock.seconds()
        others = trusted_others(self.factors, usable, pending, now)
        destination = destination_of(self.factors, pending)
        masked = destination.masked if destination is not None else "-"
        if not others:
            log.info(
                "{user}: the new {factor} address {destination} must be confirmed after "
                "another factor, and the user has no other; re-enroll it (radmfa token "
                "remove, then token add) or issue an emergency code (radmfa emergency-code)",
                user=user,
                factor=pending.type,
                destination=masked,
            )
            return reject(Reason.NO_TOKEN, user, method="challenge", factor=pending.type)
        log.info(
            "{user}: nothing sent to the new {factor} address {destination} before another "
            "factor vouches for it",
            user=user,
            factor=pending.type,
            destination=masked,
        )
        return await self.issuer.issue(
            request,
            user,
            key,
            message=self.vouch_prompt(pending, others),
            started_at=started_at,
            phase=vouch_phase(pending.token_id),
            reason=Reason.ADDRESS_PENDING,
            factor=pending.type,
            rule=rule,
        )

    def vouch_prompt(self, pending: TokenRecord, others: Sequence[TokenRecord]) -> str:
        """What a user asked for a pending address is told: which trusted factor to use."""
        destination = destination_of(self.factors, pending)
        label = self.factors.label(pending.type)
        menu = prompts.menu(self.otp, self.factors, others)
        masked = destination.masked if destination is not None else ""
        return prompts.fit(f"To confirm your new {label} address {masked}, first: {menu}")

    async def _deliver(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        token: TokenRecord,
        usable: Sequence[TokenRecord],
        *,
        started_at: float,
        phase: str,
        carry: ChallengeRecord | None,
        rule: str | None,
    ) -> Decision:
        """The send itself, under the send limits; the State names the token the code went to."""
        oob = self.factors.out_of_band(token.type)
        destination = oob.destination(token) if oob is not None else None
        assert oob is not None and destination is not None
        now = self.clock.seconds()
        total = getattr(oob, "max_per_hour_total", DEFAULT_SENDS_PER_HOUR_TOTAL)
        grant = await self.store.reserve_send(
            key, token.type, now, oob.cooldown, oob.max_per_hour, total
        )
        if not grant.granted:
            if grant.limit == "total_cap":
                log.warn(
                    "{factor} code for {user} not sent: the {total} an hour for all users "
                    "(otp.{factor}.max_per_hour_total) are used up",
                    factor=token.type,
                    user=user,
                    total=total,
                )
            return await self._send_refused(
                request, user, key, oob, usable, grant.retry_after, started_at, phase, carry, rule
            )
        confirming = phase.startswith(f"{PHASE_CONFIRM}:")
        code = oob.new_code()
        expires_at = min(now + oob.code_ttl, started_at + MAX_EXCHANGE_SECONDS)
        state = self.issuer.new_state()
        await self.issuer.put(
            ChallengeRecord(
                state_id=state,
                user=key,
                client_name=request.client_name,
                client_address=request.client_address,
                expires_at=expires_at,
                created_at=now,
                factor=token.type,
                token_id=token.token_id,
                code_hash=hash_code(code),
                phase=phase,
                started_at=started_at,
                rule=rule,
            ),
        )
        context = SendContext(
            user=user,
            client=request.client_name,
            service=request.nas_identifier or request.client_name,
            expires_at=expires_at,
            ttl=expires_at - now,
        )
        self.courier.dispatch(key, oob, destination, code, context)
        template = oob.confirm_prompt if confirming else oob.prompt
        return Decision(
            Outcome.CHALLENGE,
            Reason.CODE_SENT,
            user=user,
            reply_message=prompts.fit(template.format(destination=destination.masked)),
            state=state,
            method="challenge",
            factor=token.type,
        )

    async def _send_refused(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        oob: OutOfBandFactor,
        usable: Sequence[TokenRecord],
        retry_after: float,
        started_at: float,
        phase: str,
        carry: ChallengeRecord | None,
        rule: str | None,
    ) -> Decision:
        """The send limit says wait: ask again, for the code already sent or another factor."""
        wait = f"Please wait {math.ceil(retry_after)}s before asking for another {oob.label} code."
        log.info(
            "{user}: {factor} code not sent, rate limit (retry in {secs:.0f}s)",
            user=user,
            factor=oob.type,
            secs=retry_after,
        )
        # A code already on its way for this factor stays good in the new State.
        if carry is not None and carry.factor == oob.type and carry.code_hash is not None:
            return await self.issuer.issue(
                request,
                user,
                key,
                message=prompts.fit(f"{wait} Enter the code already sent: "),
                started_at=started_at,
                carry=carry,
                reason=Reason.SEND_LIMITED,
                factor=oob.type,
                rule=rule,
            )
        menu = prompts.menu(self.otp, self.factors, usable, exclude=oob.type)
        return await self.issuer.issue(
            request,
            user,
            key,
            message=prompts.with_notice(wait, menu),
            started_at=started_at,
            phase=phase,
            reason=Reason.SEND_LIMITED,
            factor=oob.type,
            rule=rule,
        )

    async def check_sent(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        challenge: ChallengeRecord,
        text: str,
        view: UserView,
    ) -> TokenRecord | Decision | None:
        """The answer against the code this State was sent with: None when it is not that
        code (other factors get their turn), the token it went to when it is, or the reject
        when that token has been replaced since. Finishing the login is the caller's part."""
        assert challenge.code_hash is not None and challenge.factor is not None
        oob = self.factors.out_of_band(challenge.factor)
        typed = oob.normalize(text) if oob is not None else None
        if oob is None or typed is None or not code_hash_matches(challenge.code_hash, typed):
            return None
        token = next((t for t in view.tokens if t.token_id == challenge.token_id), None)
        if token is None or oob.destination(token) is None:
            # The address changed after the code was sent: that code died with the old one.
            log.info("{user}: a {factor} code for a replaced address was refused", user=user,
                     factor=oob.type)  # fmt: skip
            await self.ledger.fail(view)
            return reject(Reason.BAD_OTP, user, method="challenge", factor=oob.type)
        return token

    async def confirm(self, user: str, token: TokenRecord, vouched_by: str) -> None:
        """The pending address of ``token`` proved, after ``vouched_by`` in the same exchange:
        trusted from now on (a no-op if the token was replaced meanwhile)."""
        confirmed = await self.store.advance_step(token.token_id, 1)
        destination = destination_of(self.factors, token)
        if confirmed:
            log.info(
                "{user} confirmed the new {factor} address {destination} (after {vouched_by})",
                user=user,
                factor=token.type,
                destination=destination.masked if destination is not None else "-",
                vouched_by=vouched_by,
            )

    async def refresh(
        self,
        user: str,
        key: str,
        tokens: list[TokenRecord],
        attributes: Mapping[str, Sequence[str]],
    ) -> list[TokenRecord]:
        """Store the addresses the directory now gives (a change must be confirmed)."""
        now = self.clock.seconds()
        result = list(tokens)
        for index, token in enumerate(tokens):
            oob = self.factors.out_of_band(token.type)
            new = oob.refresh(token, attributes, now) if oob is not None else None
            if new is None:
                continue
            revoked = await self.store.interaction(_replace_address, key, new)
            result[index] = new
            log.info(
                "{user}: the directory gives a new {factor} address{what}{devices}",
                user=user,
                factor=new.type,
                what="" if new.last_step is not None else "; it must be confirmed with a code",
                devices=f"; {revoked} trusted device(s) forgotten" if revoked else "",
            )
            if self.audit is not None:
                before, after = (destination_of(self.factors, t) for t in (token, new))
                self.audit.add(
                    AuditEvent(
                        at=now,
                        kind=AUDIT_ADMIN,
                        user=key,
                        actor="directory",
                        action=f"{new.type}-address",
                        before=before.masked if before is not None else None,
                        after=after.masked if after is not None else None,
                        reason=f"changed in the directory; {revoked} trusted device(s) revoked",
                    )
                )
        return result

    async def notice(self, key: str, settings: UserSettings) -> str | None:
        """A delivery failure the courier left for the user's next prompt, taken once."""
        if settings.notice is None:
            return None
        return await self.store.take_notice(key)


def _replace_address(store: Store, key: str, token: TokenRecord) -> int:
    """A new address replaces the old token; the user's remembered devices are forgotten
    (whoever changed the address must prove the new one before skipping codes again)."""
    store.replace_tokens(key, token.type, [token])
    return store.revoke_devices(key)
