"""The authentication pipeline: one AccessRequest in, one Decision out.

Order of checks, each chosen so that a cheaper or safer check runs before a costlier one:

1. input rules (PAP only, a sane User-Name, a decodable non-empty password) - no I/O at all;
2. a State continues a challenge (:mod:`radmfa.auth.rounds`): the password was checked in
   round one, only the answer is (a code, a keyword such as ``email`` to have one sent, or
   nothing to see the prompt again);
3. one trip to the store (:mod:`radmfa.auth.ledger`): a disabled user, a lock, a user
   throttled after recent failures or a throttled station/source is refused here - none of
   them costs a directory bind;
4. the policy (:mod:`radmfa.auth.policy`), once, before any factor: deny and address lists
   refuse; groups are looked up only when a group rule could decide (search-then-bind reuses
   that user search for the bind);
5. no second factor needed (exempt, suspended by an admin, a remembered device, ``optional``
   without a factor, an enrolment grace period): the password alone, in one bind;
6. ``password,email``: a keyword after the last separator asks for a code (append, auto);
7. the code, when one is appended, before the password (O-08): a guesser without the token
   burns no directory bind, and a matched step is consumed whatever the password;
8. at most one directory bind (:mod:`radmfa.auth.password`); its attributes refresh
   directory-sourced addresses;
9. accept (remembering the device when the rule trusts devices), or issue an
   Access-Challenge with a single-use State (:mod:`radmfa.auth.challenge`) - after sending a
   code at once (:mod:`radmfa.auth.outofband`) when the keyword or the user's preferred factor
   asks for one.

Failures of a user's credential count towards lockout and the sliding-window throttles;
infrastructure failures and the directory's own account refusals never do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.auth import prompts
from radmfa.auth.challenge import MAX_EXCHANGE_SECONDS, PHASE_CODE, ChallengeIssuer
from radmfa.auth.decisionlog import DecisionLog, DecisionObserver, sanitize
from radmfa.auth.decisions import reject, ruled, tagged
from radmfa.auth.identity import NameProblem, check_user, decode_password, store_key
from radmfa.auth.ledger import AttemptEnds, Ledger, UserView
from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.auth.outofband import (
    AuditSink,
    OutOfBandCodes,
    can_prove,
    destination_of,
    keyword_token,
)
from radmfa.auth.password import PasswordCheck
from radmfa.auth.policy import Policy, Verdict, device_ref, grace_granted, grace_over
from radmfa.auth.rounds import ChallengeRounds
from radmfa.auth.verdicts import PolicyCheck, refusal
from radmfa.clocktrust import DriftWatch
from radmfa.config import (
    LockoutConfig,
    Mfa,
    OtpConfig,
    PolicyConfig,
    RateLimitsConfig,
    RuleOutcome,
    UsernamesConfig,
)
from radmfa.delivery.courier import Courier
from radmfa.directory.base import GroupResolver, PasswordChecker, UserEntry, resolves_groups
from radmfa.factors.base import CodeMatch, FactorRegistry, MatchKind
from radmfa.outage import Outage
from radmfa.store.base import ATTEMPT_LEASE, StoreError, TokenRecord
from radmfa.store.facade import AsyncStore

__all__ = [
    "MAX_EXCHANGE_SECONDS",
    "PAP_REQUIRED_MESSAGE",
    "AuditSink",
    "Authenticator",
    "PipelineSettings",
]

log = Logger(namespace="radmfa.auth")

PAP_REQUIRED_MESSAGE = "PAP is required."


@dataclass(frozen=True)
class PipelineSettings:
    otp: OtpConfig
    lockout: LockoutConfig
    #: Who must use a second factor. None: everyone (``optional`` for all with the deprecated
    #: ``otp.allow_password_only``).
    policy: Policy | None = None
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    usernames: UsernamesConfig = field(default_factory=UsernamesConfig)
    #: How long an attempt stays reserved at most (radmfa.auth.ledger.attempt_lease).
    attempt_lease: float = ATTEMPT_LEASE
    #: ``otp.mode`` per client name, for the clients that set their own.
    client_modes: Mapping[str, str] = field(default_factory=dict)


class Authenticator:
    """Composes a directory password checker and second factors under one policy."""

    def __init__(
        self,
        *,
        settings: PipelineSettings,
        directory: PasswordChecker,
        store: AsyncStore,
        factors: FactorRegistry,
        clock: IReactorTime,
        observers: Sequence[DecisionObserver] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        courier: Courier | None = None,
        groups: GroupResolver | None = None,
        audit: AuditSink | None = None,
        drift: DriftWatch | None = None,
        attempt_ends: AttemptEnds | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        if settings.policy is not None:
            self.policy = settings.policy
        else:
            mfa: Mfa = "optional" if settings.otp.allow_password_only else "required"
            self.policy = Policy(PolicyConfig(default=RuleOutcome(mfa=mfa)))
        #: Where group rules get their groups; the directory itself when it can tell.
        self.groups: GroupResolver | None = groups
        if groups is None and resolves_groups(directory):
            self.groups = directory
        if self.policy.needs_groups and self.groups is None:
            raise ValueError("the policy has group rules, but the directory cannot list groups")
        #: Whether any rule may trust devices (else their lookup is skipped).
        self._devices_on = (
            self.policy.trusted_device_ttl > 0
            or any((r.outcome.trusted_device_ttl or 0) > 0 for r in self.policy.rules)
            or (self.policy.config.default.trusted_device_ttl or 0) > 0
        )
        self.store = store
        self.clock = clock
        #: Told of every decision (the log line, metrics, audit): they see, never change it.
        self.observers: tuple[DecisionObserver, ...] = (
            tuple(observers) if observers is not None else (DecisionLog(),)
        )
        self.random_bytes = random_bytes
        #: Takes the changes the daemon makes itself (a new address from the directory).
        self.audit = audit
        #: Watches accepted TOTP codes for a server clock that drifts (kept across reloads).
        self.drift = drift
        #: Delivers out-of-band codes in the background.
        self.courier = courier if courier is not None else Courier(store)

        self.factors = factors
        #: The attempt ends' batch (the daemon's, shared across reloads), or a new one.
        self.attempt_ends = attempt_ends
        #: Requests being decided (a reload closes the directory it replaced at zero).
        self.in_flight = 0
        #: One log line when the store goes away and one when it is back.
        self.store_outage = Outage("the store", clock, log)
        self._build_parts()

    def _build_parts(self) -> None:
        """The pieces of the pipeline, each handed what it needs (no references back here)."""
        self.ledger = Ledger(
            store=self.store,
            clock=self.clock,
            factors=self.factors,
            lockout=self.settings.lockout,
            rate_limits=self.settings.rate_limits,
            devices_on=self._devices_on,
            lease=self.settings.attempt_lease,
            drift=self.drift,
            ends=self.attempt_ends,
        )
        self.password = PasswordCheck(self.directory, self.ledger)
        self.verdicts = PolicyCheck(policy=self.policy, groups=self.groups, ledger=self.ledger)
        self.issuer = ChallengeIssuer(
            store=self.store,
            clock=self.clock,
            random_bytes=self.random_bytes,
            timeout=self.settings.otp.challenge_timeout,
            max_open=self.settings.otp.max_open_challenges,
        )
        self.codes = OutOfBandCodes(
            store=self.store,
            clock=self.clock,
            factors=self.factors,
            otp=self.settings.otp,
            issuer=self.issuer,
            ledger=self.ledger,
            courier=self.courier,
            audit=self.audit,
        )
        self.rounds = ChallengeRounds(
            store=self.store,
            clock=self.clock,
            factors=self.factors,
            otp=self.settings.otp,
            ledger=self.ledger,
            issuer=self.issuer,
            codes=self.codes,
            verdicts=self.verdicts,
        )

    def handle(self, request: AccessRequest) -> Deferred[Decision]:
        started = self.clock.seconds()
        self.in_flight += 1
        d = Deferred.fromCoroutine(self._decide(request))

        def failed(failure: Failure) -> Decision:
            log.failure("authentication pipeline error", failure)
            return reject(Reason.INTERNAL_ERROR)

        d.addErrback(failed)

        def logged(decision: Decision) -> Decision:
            self.in_flight -= 1
            elapsed = self.clock.seconds() - started
            for observer in self.observers:
                try:
                    observer.record(request, decision, elapsed)
                except Exception:  # a broken observer must not turn an accept into a reject
                    log.failure("decision observer {o!r} failed", o=observer)
            return decision

        d.addCallback(logged)
        return d

    # -- the pipeline -----------------------------------------------------------------------

    async def _decide(self, request: AccessRequest) -> Decision:
        if request.method is not AuthMethod.PAP:
            return reject(Reason.UNSUPPORTED_METHOD, message=PAP_REQUIRED_MESSAGE)
        user = check_user(request.user_name, strip_realm=self.settings.usernames.strip_realm)
        if user is NameProblem.UNSAFE:
            log.info(
                "refused the user name {name}: it has a character without a one-to-one case "
                "folding, so no key can safely stand for every spelling the directory accepts",
                name=sanitize(request.user_name),
            )
            return reject(Reason.UNSAFE_USER_NAME)
        if isinstance(user, NameProblem):
            return reject(Reason.BAD_USER_NAME)
        password = decode_password(request.password)
        if password is None:
            return reject(Reason.BAD_PASSWORD_ENCODING, user)
        try:
            if request.state is not None:
                decision = await self.rounds.answer(request, user, password)
            else:
                decision = await self._first_round(request, user, password)
        except StoreError as e:
            # No answer at all: the NAS tries its next server, which may still reach the
            # store (a node cut off from a shared database); a Reject would be final.
            self.store_outage.failed(str(e))
            return Decision(Outcome.DROP, Reason.STORE_UNAVAILABLE, user=user)
        self.store_outage.ok()
        return decision

    async def _first_round(self, request: AccessRequest, user: str, password: str) -> Decision:
        key = store_key(user)
        if not password:
            return reject(Reason.EMPTY_PASSWORD, user)
        now = self.clock.seconds()
        device = device_ref(request.calling_station_id, request.client_name, request.nas_identifier)
        view = await self.ledger.begin(user, key, request, device, now)
        if isinstance(view, Decision):  # refused before any directory traffic
            return view
        try:
            verdict, entry = await self.verdicts.evaluate(request, user, key, view)
            if isinstance(verdict, Decision):
                return verdict
            decision = await self._decide_with(request, user, key, password, view, verdict, entry)
        finally:
            # Whatever happened, a store error included: a no-op when the decision already
            # counted the try.
            await self.ledger.release(view)
        decision = ruled(decision, verdict.rule, verdict.reply)
        if (
            decision.outcome is Outcome.ACCEPT
            and decision.factor is not None
            and decision.reason is Reason.OK
        ):
            await self.ledger.remember_device(key, device, verdict)
        return decision

    async def _decide_with(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        view: UserView,
        verdict: Verdict,
        entry: UserEntry | None,
    ) -> Decision:
        """Round one under the policy's verdict."""
        refused = refusal(verdict, user)
        if refused is not None:
            return refused
        now = self.clock.seconds()
        tokens = [t for t in view.tokens if self.factors.usable(t, now)]
        without = self._no_factor_needed(view, verdict, tokens, now)
        if without is not None:
            return await self._without_factor(
                request, user, key, password, view, tokens, without, entry
            )
        if not tokens:
            return await self._grace_login(request, user, key, password, view, verdict, entry)

        mode = self.settings.client_modes.get(request.client_name, self.settings.otp.mode)
        if mode in ("append", "auto"):
            keyword = self._split_keyword(tokens, password)
            if keyword is not None:
                head, wanted = keyword
                return await self._password_then_challenge(
                    request,
                    user,
                    key,
                    head,
                    view,
                    send_type=wanted,
                    rule=verdict.rule,
                    entry=entry,
                )
            split = self._split_appended(view.tokens, password, require_code=mode == "append")
            if split is not None:
                secret_part, token, match = split
                return await self._append(
                    request, user, key, secret_part, token, match, view, entry=entry
                )
            if mode == "append":
                await self.ledger.fail(view)
                return reject(Reason.BAD_OTP, user, method="append")
        return await self._password_then_challenge(
            request, user, key, password, view, rule=verdict.rule, entry=entry
        )

    def _no_factor_needed(
        self, view: UserView, verdict: Verdict, tokens: Sequence[TokenRecord], now: float
    ) -> Reason | None:
        """Why this login needs the password alone, or None when a second factor is due."""
        if verdict.mfa == "exempt":
            return Reason.EXEMPT
        if view.settings.mfa_suspended(now):
            return Reason.MFA_SUSPENDED
        device = view.device
        if (
            device is not None
            and verdict.trusted_device_ttl > 0
            and now < device.remembered_at + verdict.trusted_device_ttl
        ):
            return Reason.TRUSTED_DEVICE
        if not tokens and verdict.mfa == "optional":
            return Reason.PASSWORD_ONLY
        return None

    async def _without_factor(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        view: UserView,
        tokens: Sequence[TokenRecord],
        reason: Reason,
        entry: UserEntry | None,
    ) -> Decision:
        """The password alone. A code the user appended out of habit is taken off: a fresh one
        makes this a login with a second factor (which also re-remembers the device), a used
        one is just dropped; other text stays part of the password."""
        if tokens:
            keyword = self._split_keyword(tokens, password)
            if keyword is not None:
                password = keyword[0]
            else:
                split = self._split_appended(list(tokens), password, require_code=False)
                if split is not None and split[0]:
                    secret_part, token, match = split
                    if match.kind is MatchKind.MATCH:
                        return await self._append(
                            request, user, key, secret_part, token, match, view, entry=entry
                        )
                    password = secret_part
        verdict, _attributes = await self.password.check(view, user, password, entry=entry)
        if verdict is not None:
            return verdict
        if tokens and reason in (Reason.EXEMPT, Reason.TRUSTED_DEVICE):
            # The password alone proves nothing about the codes this user is asked for
            # elsewhere: clearing the counts here would let code guesses on another client
            # go on forever between such logins. A login with the code clears them.
            await self.ledger.release(view)
        else:
            await self.ledger.succeed(view)
        return Decision(
            Outcome.ACCEPT, reason, user=user, trusted_device=reason is Reason.TRUSTED_DEVICE
        )

    async def _grace_login(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        view: UserView,
        verdict: Verdict,
        entry: UserEntry | None,
    ) -> Decision:
        """No second factor under ``mfa: required``: rejected, unless inside the grace period
        (days from the first such login, or a number of logins), which the reply says."""
        grace, settings = verdict.grace, view.settings
        now = self.clock.seconds()
        if not grace_granted(grace):
            log.info(
                "{user} has no second-factor token; enroll one with 'radmfa token add'", user=user
            )
            return reject(Reason.NO_TOKEN, user)
        if grace_over(grace, settings, now):
            log.info(
                "{user} has no second factor and the enrolment grace period is over", user=user
            )
            return reject(Reason.GRACE_EXPIRED, user)
        verdict_pw, _attributes = await self.password.check(view, user, password, entry=entry)
        if verdict_pw is not None:
            return verdict_pw
        # Counted atomically in the store, and judged by the count this login got: logins in
        # flight together all saw the count read before any of them was counted.
        after = await self.store.note_grace_login(key, now)
        if grace.logins > 0 and after.grace_logins > grace.logins:
            log.info(
                "{user} has no second factor and the enrolment grace logins are used up",
                user=user,
            )
            return reject(Reason.GRACE_EXPIRED, user)
        await self.ledger.succeed(view)
        left = []
        if grace.seconds > 0:
            first = after.first_seen_at if after.first_seen_at is not None else now
            left.append(_time_left(first + grace.seconds - now))
        if grace.logins > 0:
            count = max(0, grace.logins - after.grace_logins)
            left.append(f"{count} login{'' if count == 1 else 's'}")
        message = grace.message.format(left=" or ".join(left))
        return Decision(
            Outcome.ACCEPT, Reason.GRACE_PERIOD, user=user, reply_message=prompts.fit(message)
        )

    def _split_keyword(
        self, tokens: Sequence[TokenRecord], password: str
    ) -> tuple[str, str] | None:
        """``password,email`` -> (``password``, ``email``) when the text after the *last*
        separator is the keyword of one of the user's out-of-band factors."""
        head, sep, tail = password.rpartition(self.settings.otp.keyword_separator)
        if not sep or not head:
            return None
        token = keyword_token(self.factors, tokens, tail.strip().casefold())
        return (head, token.type) if token is not None else None

    def _split_appended(
        self, tokens: list[TokenRecord], password: str, *, require_code: bool
    ) -> tuple[str, TokenRecord | None, CodeMatch] | None:
        """Find an appended code. In append mode any tail of code length is the code attempt;
        in auto mode only a tail that is right for one of the user's tokens counts as one."""
        now = self.clock.seconds()
        fallback: tuple[str, TokenRecord | None, CodeMatch] | None = None
        for length in self.factors.code_lengths(tokens):
            if len(password) <= length:
                continue
            head, tail = password[:-length], password[-length:]
            token, match = self.factors.verify(tokens, tail, now)
            if match.kind is not MatchKind.NO_MATCH:
                return head, token, match
            if require_code and fallback is None:
                fallback = (head, None, match)
        return fallback

    async def _append(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        secret_part: str,
        token: TokenRecord | None,
        match: CodeMatch,
        view: UserView,
        *,
        entry: UserEntry | None,
    ) -> Decision:
        """``password123456``: the code first (a guesser without the token costs no bind and a
        matched step is consumed whatever the password), then the password."""
        factor = token.type if token else None
        if token is None or match.kind is MatchKind.NO_MATCH:
            await self.ledger.fail(view)
            return reject(Reason.BAD_OTP, user, method="append")
        if match.kind is MatchKind.REPLAY or not await self.ledger.consume(token, match):
            await self.ledger.fail(view)
            return reject(Reason.OTP_REPLAY, user, method="append", factor=factor)
        if not secret_part:
            await self.ledger.fail(view)
            return reject(Reason.EMPTY_PASSWORD, user, method="append", factor=factor)
        verdict, _attributes = await self.password.check(view, user, secret_part, entry=entry)
        if verdict is not None:
            return tagged(verdict, method="append", factor=factor)
        await self.ledger.succeed(view)
        self.ledger.log_use(user, token)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="append", factor=factor)

    async def _password_then_challenge(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        view: UserView,
        *,
        send_type: str | None = None,
        rule: str | None = None,
        entry: UserEntry | None = None,
    ) -> Decision:
        """The password, then round two: a code sent at once, or the menu of factors."""
        verdict, attributes = await self.password.check(view, user, password, entry=entry)
        if verdict is not None:
            return tagged(verdict, method="challenge")
        now = self.clock.seconds()
        tokens = await self.codes.refresh(user, key, view.tokens, attributes)
        usable = [t for t in tokens if self.factors.usable(t, now)]
        # The typed keyword, else the preferred factor when it delivers codes: send at once.
        wanted = send_type or view.settings.preferred
        token = next(
            (t for t in usable if t.type == wanted and destination_of(self.factors, t) is not None),
            None,
        )
        if token is not None and self.factors.out_of_band(token.type) is not None:
            return await self.codes.send(
                request, user, key, token, usable, started_at=now, phase=PHASE_CODE, rule=rule
            )
        if not any(can_prove(self.factors, t) for t in usable):
            log.info("{user} has no usable second factor (no address known yet?)", user=user)
            return reject(Reason.NO_TOKEN, user, method="challenge")
        notice = await self.codes.notice(key, view.settings)
        message = prompts.menu(
            self.settings.otp, self.factors, usable, preferred=view.settings.preferred
        )
        return await self.issuer.issue(
            request,
            user,
            key,
            message=prompts.with_notice(notice, message),
            started_at=now,
            rule=rule,
        )


def _time_left(seconds: float) -> str:
    """``13 days``, ``1 day``, ``5 hours``, ``1 hour`` (rounded up) for grace messages."""
    if seconds >= 86400:
        days = math.ceil(seconds / 86400)
        return f"{days} day{'' if days == 1 else 's'}"
    hours = max(1, math.ceil(seconds / 3600))
    return f"{hours} hour{'' if hours == 1 else 's'}"
