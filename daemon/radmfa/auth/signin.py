"""Signing in outside RADIUS (the self-service portal): the same checks, in two steps.

A browser sign-in is a login like any other: the same user-name rules, the same reservation
that checks lock, throttles and disable flag and counts the try in one store transaction
(:meth:`radmfa.auth.ledger.Ledger.reserve`, with the browser's address as the source), the
same policy, the same one directory bind, the same decision observers (log line, metrics,
audit trail, with the channel as the client name). Only the shape differs: the password
first, then, when the user has a code factor, the code in a second request.

A right password does not clear the failure counts while a code is still due (it proves
nothing about the codes an attacker may be guessing); the code step does. An email or SMS
code is sent only when asked for (:meth:`SignIn.send`, under the same send limits as
RADIUS); the caller keeps the :class:`SentCode` (its hash, never the code) and hands it to
the code step, as a challenge State would. A user without a
factor is signed in on the password alone only while the policy grants an enrolment grace
period or with an enrolment link of their own, and then only to enroll one; otherwise the
password step ends with :attr:`Step.HELP_DESK`, after the password was checked (so the page
says nothing about the account to someone without the password).
"""

from __future__ import annotations

import enum
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from radmfa.auth.decisionlog import DecisionObserver
from radmfa.auth.decisions import reject, ruled, tagged
from radmfa.auth.identity import NameProblem, check_user, store_key
from radmfa.auth.ledger import Ledger, UserView, fresh_attempt
from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.auth.outofband import can_finish, code_hash_matches, destination_of, hash_code
from radmfa.auth.password import PasswordCheck
from radmfa.auth.policy import Subject, Verdict, grace_granted, grace_over, subject_address
from radmfa.auth.verdicts import PolicyCheck, refusal
from radmfa.config import DEFAULT_SENDS_PER_HOUR_TOTAL
from radmfa.delivery.courier import Courier
from radmfa.factors.base import Destination, FactorRegistry, MatchKind, SendContext
from radmfa.store.base import StoreError, TokenRecord, UserSettings
from radmfa.store.facade import AsyncStore

__all__ = [
    "CHANNEL_PORTAL",
    "SendOutcome",
    "SentCode",
    "SignIn",
    "SignInParts",
    "SignInResult",
    "Step",
    "code_tokens",
    "sendable_tokens",
]

log = Logger(namespace="radmfa.auth")

#: The client name a portal sign-in is logged, counted and audited under.
CHANNEL_PORTAL = "portal"
#: ``Decision.method`` of the steps of a sign-in outside RADIUS.
METHOD_FORM = "form"


class Step(enum.Enum):
    """Where a sign-in stands after a step."""

    #: Refused (wrong password or code, locked, throttled, denied...): the reason is logged.
    REFUSED = "refused"
    #: The password was right; a code from one of the user's factors is due.
    CODE_DUE = "code_due"
    #: Signed in with the password and a second factor.
    SIGNED_IN = "signed_in"
    #: Signed in on the password alone, inside the enrolment grace period: may enroll.
    ENROLL_ONLY = "enroll_only"
    #: The password was right, but nothing may be done here: no factor, no grace period (or
    #: only factors the portal cannot check yet). The page sends the user to the help desk.
    HELP_DESK = "help_desk"
    #: The store could not be reached: nothing was decided.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class SignInResult:
    step: Step
    #: The canonical name (for pages) and the store key (for everything else); None when
    #: the name itself was refused.
    user: str | None = None
    key: str | None = None
    decision: Decision | None = None
    #: When the enrolment grace period ends (None: not started, or counted in logins only).
    grace_ends_at: float | None = None
    #: The enrolment link that let a user without a factor in (:attr:`Step.ENROLL_ONLY`).
    link: bytes | None = None


@dataclass(frozen=True)
class SentCode:
    """A code sent out of band: only its hash, where it went, until when it counts. For a
    sign-in it names the user's token; for a new address (not stored yet) ``token_id`` is
    None and ``address`` is the one to store once the code comes back."""

    factor: str
    token_id: str | None
    address: str
    masked: str
    code_hash: bytes
    expires_at: float
    #: Wrong answers so far (the caller bounds them).
    tries: int = 0


@dataclass(frozen=True)
class SendOutcome:
    """What :meth:`SignIn.send` did: ``sent``, or refused by the send limits for
    ``retry_after`` seconds (None and 0: the user has no such factor to send to)."""

    sent: SentCode | None
    retry_after: float = 0.0


class SignInParts(Protocol):
    """What a sign-in uses of the running pipeline
    (:class:`~radmfa.auth.pipeline.Authenticator` has every one of these)."""

    ledger: Ledger
    password: PasswordCheck
    verdicts: PolicyCheck
    factors: FactorRegistry
    observers: tuple[DecisionObserver, ...]
    store: AsyncStore
    courier: Courier


def code_tokens(
    factors: FactorRegistry, tokens: Sequence[TokenRecord], now: float
) -> list[TokenRecord]:
    """The tokens a typed code can prove (TOTP, HOTP, backup and emergency codes): usable and
    not delivered out of band."""
    return [t for t in tokens if factors.usable(t, now) and factors.out_of_band(t.type) is None]


def sendable_tokens(
    factors: FactorRegistry, tokens: Sequence[TokenRecord], now: float
) -> list[TokenRecord]:
    """The email and SMS tokens a code may be sent to for a sign-in: usable, with a confirmed
    address (a changed one must be confirmed first, never by itself)."""
    return [
        t
        for t in tokens
        if factors.out_of_band(t.type) is not None
        and factors.usable(t, now)
        and destination_of(factors, t) is not None
        and can_finish(factors, t)
    ]


class SignIn:
    """The two steps of a sign-in on one channel, against the running pipeline's parts."""

    def __init__(
        self, parts: SignInParts, clock: IReactorTime, *, strip_realm: bool, channel: str
    ) -> None:
        self.parts = parts
        self.clock = clock
        self.strip_realm = strip_realm
        self.channel = channel

    def _now(self) -> float:
        return self.clock.seconds()

    async def password(
        self, name: str, password: str, address: str, *, link: bytes | None = None
    ) -> SignInResult:
        """Step one: the user name and password typed into the form, from ``address``.
        ``link``: the hash of an enrolment link the browser came with; it lets this user
        enroll without a grace period when it is theirs, unused and unexpired, and the user
        has no factor."""
        started = self._now()
        result = await self._step(self._password(name, password, address, link))
        self._observe(name, address, result, started)
        return result

    async def code(
        self, user: str, code: str, address: str, sent: SentCode | None = None
    ) -> SignInResult:
        """Step two, for the user whose password step said :attr:`Step.CODE_DUE` (the caller
        keeps that user; nothing typed names it). ``sent``: the code sent on request for
        this sign-in, which the typed code may be."""
        started = self._now()
        result = await self._step(self._code(user, code, address, sent))
        self._observe(user, address, result, started)
        return result

    async def send(self, key: str, user: str, token_type: str) -> SendOutcome:
        """Send a code to the user's confirmed ``token_type`` address (asked for on the code
        page), under the factor's cooldown and hourly caps shared with RADIUS."""
        tokens = await self.parts.store.list_tokens(key)
        token = next(
            (
                t
                for t in sendable_tokens(self.parts.factors, tokens, self._now())
                if t.type == token_type
            ),
            None,
        )
        destination = destination_of(self.parts.factors, token) if token is not None else None
        if token is None or destination is None:
            return SendOutcome(None)
        return await self.send_to(key, user, token_type, destination, token.token_id)

    async def send_to(
        self,
        key: str,
        user: str,
        token_type: str,
        destination: Destination,
        token_id: str | None = None,
    ) -> SendOutcome:
        """Send a fresh code to ``destination`` (a new address to confirm, when ``token_id``
        is None), in the background; the :class:`SentCode` to check the answer against."""
        oob = self.parts.factors.out_of_band(token_type)
        if oob is None:
            return SendOutcome(None)
        now = self._now()
        total = getattr(oob, "max_per_hour_total", DEFAULT_SENDS_PER_HOUR_TOTAL)
        grant = await self.parts.store.reserve_send(
            key, token_type, now, oob.cooldown, oob.max_per_hour, total
        )
        if not grant.granted:
            log.info(
                "{user}: {factor} code not sent from the {channel}, rate limit "
                "(retry in {secs:.0f}s)",
                user=user,
                factor=token_type,
                channel=self.channel,
                secs=grant.retry_after,
            )
            return SendOutcome(None, max(grant.retry_after, 1.0))
        code = oob.new_code()
        expires_at = now + oob.code_ttl
        context = SendContext(
            user=user,
            client=self.channel,
            service=self.channel,
            expires_at=expires_at,
            ttl=oob.code_ttl,
        )
        self.parts.courier.dispatch(key, oob, destination, code, context)
        sent = SentCode(
            factor=token_type,
            token_id=token_id,
            address=destination.address,
            masked=destination.masked,
            code_hash=hash_code(code),
            expires_at=expires_at,
        )
        return SendOutcome(sent)

    async def _step(self, work: Coroutine[Any, Any, SignInResult]) -> SignInResult:
        try:
            return await work
        except StoreError as e:
            log.warn("sign-in: the store is unavailable ({err})", err=str(e))
            decision = Decision(Outcome.DROP, Reason.STORE_UNAVAILABLE)
            return SignInResult(Step.UNAVAILABLE, decision=decision)

    def _observe(self, name: str, address: str, result: SignInResult, started: float) -> None:
        """Tell the observers, as the pipeline does for RADIUS: the channel is the client."""
        decision = result.decision
        if decision is None:
            return
        request = AccessRequest(
            user_name=name.encode("utf-8", "surrogateescape"),
            password=None,
            method=AuthMethod.NONE,
            state=None,
            client_name=self.channel,
            client_address=address,
        )
        elapsed = self._now() - started
        for observer in self.parts.observers:
            try:
                observer.record(request, decision, elapsed)
            except Exception:  # a broken observer must not change the outcome
                log.failure("decision observer {o!r} failed", o=observer)

    def _subject(self, key: str, address: str) -> Subject:
        policy = self.parts.verdicts.policy
        where = subject_address(None, address) if policy.needs_address else None
        return Subject(key, self.channel, None, where)

    async def _begin(self, name: str, address: str) -> tuple[str, str, UserView] | SignInResult:
        user = check_user(name.encode("utf-8", "surrogateescape"), strip_realm=self.strip_realm)
        if isinstance(user, NameProblem):
            reason = Reason.UNSAFE_USER_NAME if user is NameProblem.UNSAFE else Reason.BAD_USER_NAME
            return SignInResult(Step.REFUSED, decision=reject(reason, method=METHOD_FORM))
        key = store_key(user)
        view = await self.parts.ledger.reserve(user, fresh_attempt(key, address), None, self._now())
        if isinstance(view, Decision):  # disabled, locked, throttled: no directory traffic
            return SignInResult(Step.REFUSED, user, key, tagged(view, method=METHOD_FORM))
        return user, key, view

    async def _verdict(
        self, user: str, key: str, address: str, view: UserView
    ) -> Verdict | Decision:
        verdict, _entry = await self.parts.verdicts.evaluate_subject(
            self._subject(key, address), user, view
        )
        if isinstance(verdict, Decision):
            return verdict
        refused = refusal(verdict, user)
        return ruled(refused, verdict.rule) if refused is not None else verdict

    async def _password(
        self, name: str, password: str, address: str, link: bytes | None = None
    ) -> SignInResult:
        if not password:
            return SignInResult(
                Step.REFUSED, decision=reject(Reason.EMPTY_PASSWORD, method=METHOD_FORM)
            )
        begun = await self._begin(name, address)
        if isinstance(begun, SignInResult):
            return begun
        user, key, view = begun
        ledger = self.parts.ledger
        try:
            verdict = await self._verdict(user, key, address, view)
            if isinstance(verdict, Decision):
                return SignInResult(Step.REFUSED, user, key, tagged(verdict, method=METHOD_FORM))
            now = self._now()
            usable = [t for t in view.tokens if self.parts.factors.usable(t, now)]
            wrong, _attributes = await self.parts.password.check(view, user, password)
            if wrong is not None:
                return SignInResult(
                    Step.REFUSED, user, key, ruled(tagged(wrong, method=METHOD_FORM), verdict.rule)
                )
            if usable:
                # Not a success yet: the counts are cleared by the code step.
                provable = code_tokens(self.parts.factors, usable, now) or sendable_tokens(
                    self.parts.factors, usable, now
                )
                step = Step.CODE_DUE if provable else Step.HELP_DESK
                outcome, reason = (
                    (Outcome.CHALLENGE, Reason.CHALLENGE_ISSUED)
                    if step is Step.CODE_DUE
                    else (Outcome.REJECT, Reason.NO_TOKEN)
                )
                decision = Decision(
                    outcome, reason, user=user, method=METHOD_FORM, rule=verdict.rule
                )
                return SignInResult(step, user, key, decision)
            if link is not None:
                found = await self.parts.store.enrol_link(link)
                if found is not None and found.usable(key, now):
                    await ledger.succeed(view)
                    decision = Decision(
                        Outcome.ACCEPT,
                        Reason.ENROLL_LINK,
                        user=user,
                        method=METHOD_FORM,
                        rule=verdict.rule,
                    )
                    return SignInResult(Step.ENROLL_ONLY, user, key, decision, link=link)
            if grace_granted(verdict.grace) and not grace_over(verdict.grace, view.settings, now):
                await ledger.succeed(view)
                decision = Decision(
                    Outcome.ACCEPT,
                    Reason.GRACE_PERIOD,
                    user=user,
                    method=METHOD_FORM,
                    rule=verdict.rule,
                )
                ends = _grace_ends(verdict, view.settings)
                return SignInResult(Step.ENROLL_ONLY, user, key, decision, grace_ends_at=ends)
            reason = Reason.GRACE_EXPIRED if grace_granted(verdict.grace) else Reason.NO_TOKEN
            log.info(
                "{user} signed in without a factor and may not enroll one: {why}",
                user=user,
                why=reason.value,
            )
            return SignInResult(
                Step.HELP_DESK,
                user,
                key,
                ruled(reject(reason, user, method=METHOD_FORM), verdict.rule),
            )
        finally:
            await ledger.release(view)  # a no-op when the step already ended it

    def _sent_token(
        self, sent: SentCode | None, code: str, tokens: Sequence[TokenRecord], now: float
    ) -> TokenRecord | None:
        """The token a code sent for this sign-in went to, when ``code`` is that code, it is
        still in time, and the token still has the address it went to, confirmed."""
        if sent is None or sent.token_id is None or now >= sent.expires_at:
            return None
        oob = self.parts.factors.out_of_band(sent.factor)
        typed = oob.normalize(code) if oob is not None else None
        if typed is None or not code_hash_matches(sent.code_hash, typed):
            return None
        token = next((t for t in tokens if t.token_id == sent.token_id), None)
        if token is None or token not in sendable_tokens(self.parts.factors, [token], now):
            return None
        destination = destination_of(self.parts.factors, token)
        return token if destination is not None and destination.address == sent.address else None

    async def _code(
        self, user: str, code: str, address: str, sent: SentCode | None = None
    ) -> SignInResult:
        begun = await self._begin(user, address)
        if isinstance(begun, SignInResult):
            return begun
        user, key, view = begun
        ledger, factors = self.parts.ledger, self.parts.factors
        try:
            # The policy as it stands now: a deny or an address list ends the sign-in.
            verdict = await self._verdict(user, key, address, view)
            if isinstance(verdict, Decision):
                return SignInResult(Step.REFUSED, user, key, tagged(verdict, method=METHOD_FORM))
            now = self._now()
            by_send = self._sent_token(sent, code, view.tokens, now)
            if by_send is not None:
                await ledger.succeed(view)
                decision = Decision(
                    Outcome.ACCEPT,
                    Reason.OK,
                    user=user,
                    method=METHOD_FORM,
                    factor=by_send.type,
                    rule=verdict.rule,
                )
                return SignInResult(Step.SIGNED_IN, user, key, decision)
            candidates = code_tokens(factors, view.tokens, now)
            token, match = factors.verify(candidates, code.strip(), now)
            factor = token.type if token is not None else None
            if token is None or match.kind is MatchKind.NO_MATCH:
                await ledger.fail(view)
                reason = Reason.BAD_OTP
            elif match.kind is MatchKind.REPLAY or not await ledger.consume(token, match):
                await ledger.fail(view)
                reason = Reason.OTP_REPLAY
            else:
                await ledger.succeed(view)
                ledger.log_use(user, token)
                decision = Decision(
                    Outcome.ACCEPT,
                    Reason.OK,
                    user=user,
                    method=METHOD_FORM,
                    factor=factor,
                    rule=verdict.rule,
                )
                return SignInResult(Step.SIGNED_IN, user, key, decision)
            decision = ruled(reject(reason, user, method=METHOD_FORM, factor=factor), verdict.rule)
            return SignInResult(Step.REFUSED, user, key, decision)
        finally:
            await ledger.release(view)


def _grace_ends(verdict: Verdict, settings: UserSettings) -> float | None:
    if verdict.grace.seconds > 0 and settings.first_seen_at is not None:
        return settings.first_seen_at + verdict.grace.seconds
    return None
