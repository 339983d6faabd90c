"""The authentication pipeline: one AccessRequest in, one Decision out.

Order of checks, each chosen so that a cheaper or safer check runs before a costlier one:

1. input rules (PAP only, a sane User-Name, a decodable non-empty password) - no I/O at all;
2. a State continues a challenge: the password was checked in round one, only the answer is
   (a code, a keyword such as ``email`` to have one sent, or nothing to see the prompt again);
3. one trip to the store: a disabled user, a lock, a user throttled after recent failures or
   a throttled station/source is refused here - none of them costs a directory bind;
4. the policy (:mod:`radmfa.auth.policy`), once, before any factor: deny and address lists
   refuse; groups are looked up only when a group rule could decide (search-then-bind reuses
   that user search for the bind);
5. no second factor needed (exempt, suspended by an admin, a remembered device, ``optional``
   without a factor, an enrolment grace period): the password alone, in one bind;
6. ``password,email``: a keyword after the last separator asks for a code (append, auto);
7. the code, when one is appended, before the password (O-08): a guesser without the token
   burns no directory bind, and a matched step is consumed whatever the password;
8. at most one directory bind; its attributes refresh directory-sourced addresses;
9. accept (remembering the device when the rule trusts devices), or issue an
   Access-Challenge with a single-use State - after sending a code at once when the keyword
   or the user's preferred factor asks for one.

Every challenge round gets a fresh State (a State works once); an out-of-band code is hashed
into the State it was sent for and nowhere else. Sending never delays the reply: the courier
delivers in the background and a failure shows up at the user's next prompt.

Failures of a user's credential count towards lockout and the sliding-window throttles;
infrastructure failures and the directory's own account refusals never do.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from radmfa.auth import prompts
from radmfa.auth.decisionlog import DecisionLog, DecisionObserver
from radmfa.auth.identity import canonical_user, decode_password, store_key
from radmfa.auth.model import (
    GENERIC_REJECT_MESSAGE,
    AccessRequest,
    AuthMethod,
    Decision,
    Outcome,
    Reason,
)
from radmfa.auth.policy import (
    IP_DENIED,
    NEEDS_GROUPS,
    GroupSet,
    Policy,
    Subject,
    Verdict,
    device_key,
    subject_address,
)
from radmfa.config import LockoutConfig, OtpConfig
from radmfa.delivery.courier import Courier
from radmfa.directory.base import (
    ACCOUNT_STATES,
    DirectoryOutcome,
    GroupResolver,
    PasswordChecker,
    UserEntry,
)
from radmfa.factors.base import (
    CodeMatch,
    Destination,
    FactorRegistry,
    MatchKind,
    OutOfBandFactor,
    SendContext,
)
from radmfa.policyconfig import PolicyConfig, RateLimitsConfig, RuleOutcome
from radmfa.store.base import (
    AUDIT_ADMIN,
    AuditEvent,
    ChallengeRecord,
    FailureWindow,
    LockState,
    Store,
    StoreError,
    TokenRecord,
    TrustedDevice,
    UserSettings,
    source_failures_key,
    user_failures_key,
)
from radmfa.threads import BlockingRunner

log = Logger(namespace="radmfa.auth")

STATE_BYTES = 16
PAP_REQUIRED_MESSAGE = "PAP is required."
#: One login, however many codes are asked for, lasts at most this long (O-09: 10 minutes
#: for out-of-band codes).
MAX_EXCHANGE_SECONDS = 600.0
_CODE_SALT_BYTES = 16

PHASE_CODE = "code"
PHASE_CONFIRM = "confirm"
#: "another:<type>": an address of <type> was just confirmed; any factor but <type> finishes.
PHASE_ANOTHER = "another"


@dataclass(frozen=True)
class PipelineSettings:
    otp: OtpConfig
    lockout: LockoutConfig
    #: Who must use a second factor. None: everyone (``optional`` for all with the deprecated
    #: ``otp.allow_password_only``).
    policy: Policy | None = None
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)


class AuditSink(Protocol):
    """Where the pipeline reports changes it makes to a user's MFA settings."""

    def add(self, event: AuditEvent) -> None: ...


@dataclass(frozen=True)
class _UserView:
    """What one trip to the store thread tells about a user."""

    lock: LockState
    #: Tokens of the factors that are loaded (others cannot prove anything here).
    tokens: list[TokenRecord]
    settings: UserSettings
    #: Recent failures of the user (rate_limits.user) and from the station/source.
    user_window: FailureWindow = field(default_factory=FailureWindow)
    source_window: FailureWindow = field(default_factory=FailureWindow)
    #: The request's device, when it is remembered for this user.
    device: TrustedDevice | None = None


#: Directory account refusals (DirectoryResult.detail) and the reason each is logged with.
_ACCOUNT_REASONS = {
    "account_disabled": Reason.ACCOUNT_DISABLED,
    "account_locked": Reason.ACCOUNT_LOCKED,
    "account_expired": Reason.ACCOUNT_EXPIRED,
    "password_expired": Reason.PASSWORD_EXPIRED,
    "password_must_change": Reason.PASSWORD_MUST_CHANGE,
    "logon_hours_restricted": Reason.ACCOUNT_RESTRICTED,
    "workstation_restricted": Reason.ACCOUNT_RESTRICTED,
}
assert set(_ACCOUNT_REASONS) == ACCOUNT_STATES


def _hash_code(code: str, salt: bytes | None = None) -> bytes:
    salt = salt if salt is not None else os.urandom(_CODE_SALT_BYTES)
    digest = hmac.new(salt, b"radmfa/oob-code/v1:" + code.encode("utf-8"), hashlib.sha256)
    return salt + digest.digest()


def _code_hash_matches(stored: bytes, code: str) -> bool:
    return hmac.compare_digest(_hash_code(code, stored[:_CODE_SALT_BYTES]), stored)


class Authenticator:
    """Composes a directory password checker and second factors under one policy."""

    def __init__(
        self,
        *,
        settings: PipelineSettings,
        directory: PasswordChecker,
        store: Store,
        db: BlockingRunner,
        factors: FactorRegistry,
        clock: IReactorTime,
        observers: Sequence[DecisionObserver] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        courier: Courier | None = None,
        groups: GroupResolver | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        if settings.policy is not None:
            self.policy = settings.policy
        else:
            mfa = "optional" if settings.otp.allow_password_only else "required"
            self.policy = Policy(PolicyConfig(default=RuleOutcome(mfa=mfa)))  # type: ignore[arg-type]
        #: Where group rules get their groups; the directory itself when it can tell.
        self.groups: GroupResolver | None = groups
        if groups is None and hasattr(directory, "user_groups"):
            self.groups = directory  # type: ignore[assignment]
        if self.policy.needs_groups and self.groups is None:
            raise ValueError("the policy has group rules, but the directory cannot list groups")
        #: Whether any rule may trust devices (else their lookup is skipped).
        self._devices_on = (
            self.policy.trusted_device_ttl > 0
            or any((r.outcome.trusted_device_ttl or 0) > 0 for r in self.policy.rules)
            or (self.policy.config.default.trusted_device_ttl or 0) > 0
        )
        self.store = store
        self.db = db
        self.factors = factors
        self.clock = clock
        #: Told of every decision (the log line, metrics, audit): they see, never change it.
        self.observers: tuple[DecisionObserver, ...] = (
            tuple(observers) if observers is not None else (DecisionLog(),)
        )
        self.random_bytes = random_bytes
        #: Takes the changes the daemon makes itself (a new address from the directory).
        self.audit = audit
        #: Delivers out-of-band codes in the background.
        self.courier = courier if courier is not None else Courier(store, db)

    def handle(self, request: AccessRequest) -> Deferred[Decision]:
        started = self.clock.seconds()
        d = Deferred.fromCoroutine(self._decide(request))

        def failed(failure: object) -> Decision:
            log.failure("authentication pipeline error", failure)  # type: ignore[arg-type]
            return _reject(Reason.INTERNAL_ERROR)

        d.addErrback(failed)

        def logged(decision: Decision) -> Decision:
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
            return _reject(Reason.UNSUPPORTED_METHOD, message=PAP_REQUIRED_MESSAGE)
        user = canonical_user(request.user_name)
        if user is None:
            return _reject(Reason.BAD_USER_NAME)
        password = decode_password(request.password)
        if password is None:
            return _reject(Reason.BAD_PASSWORD_ENCODING, user)
        try:
            if request.state is not None:
                return await self._answer_challenge(request, user, password)
            return await self._first_round(request, user, password)
        except StoreError as e:
            log.error("store error while authenticating {user}: {err}", user=user, err=str(e))
            return _reject(Reason.STORE_UNAVAILABLE, user)

    async def _first_round(self, request: AccessRequest, user: str, password: str) -> Decision:
        key = store_key(user)
        if not password:
            return _reject(Reason.EMPTY_PASSWORD, user)
        now = self.clock.seconds()
        device = device_key(request.calling_station_id)
        view = await self.db.run(self._user_view, key, self._source_key(request), device, now)
        refused = self._refusal(user, view, now)
        if refused is not None:
            return refused
        verdict, entry = await self._evaluate(request, user, key)
        if isinstance(verdict, Decision):
            return verdict
        decision = await self._decide_with(request, user, key, password, view, verdict, entry)
        decision = _ruled(decision, verdict.rule)
        if (
            decision.outcome is Outcome.ACCEPT
            and decision.factor is not None
            and decision.reason is Reason.OK
        ):
            await self._remember_device(key, device, verdict)
        return decision

    async def _decide_with(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        view: _UserView,
        verdict: Verdict,
        entry: UserEntry | None,
    ) -> Decision:
        """Round one under the policy's verdict."""
        if verdict.deny:
            return _reject(Reason.POLICY_DENY, user)
        if verdict.address_refusal is not None:
            refusal = verdict.address_refusal
            return _reject(
                Reason.IP_DENIED if refusal == IP_DENIED else Reason.IP_NOT_ALLOWED, user
            )
        now = self.clock.seconds()
        tokens = [t for t in view.tokens if self.factors.usable(t, now)]
        without = self._no_factor_needed(view, verdict, tokens, now)
        if without is not None:
            return await self._without_factor(
                request, user, key, password, view, tokens, without, entry
            )
        if not tokens:
            return await self._grace_login(request, user, key, password, view, verdict, entry)

        mode = self.settings.otp.mode
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
                await self._fail(key, request)
                return _reject(Reason.BAD_OTP, user, method="append")
        return await self._password_then_challenge(
            request, user, key, password, view, rule=verdict.rule, entry=entry
        )

    def _refusal(self, user: str, view: _UserView, now: float) -> Decision | None:
        """Disabled, locked or throttled: refused before any directory traffic."""
        if view.settings.disabled:
            return _reject(Reason.USER_DISABLED, user)
        if view.lock.is_locked(now):
            return _reject(Reason.LOCKED, user)
        limits = self.settings.rate_limits
        window = view.user_window
        wait = limits.user.wait(window.count)
        if wait and window.last_at is not None and now < window.last_at + wait:
            return _reject(Reason.THROTTLED, user)
        source_max = limits.source.max_failures
        if source_max and view.source_window.count >= source_max:
            return _reject(Reason.SOURCE_THROTTLED, user)
        return None

    async def _evaluate(
        self, request: AccessRequest, user: str, key: str
    ) -> tuple[Verdict | Decision, UserEntry | None]:
        """The policy's verdict; groups are looked up only when a group rule could decide.
        A failed lookup is the reject to send."""
        address = None
        if self.policy.needs_address:
            address = subject_address(request.calling_station_id, request.client_address)
        subject = Subject(key, request.client_name, request.nas_identifier, address)
        verdict = self.policy.evaluate(subject)
        if verdict is not NEEDS_GROUPS:
            assert isinstance(verdict, Verdict)
            return verdict, None
        assert self.groups is not None
        found = await self.groups.user_groups(user)
        if found.outcome is DirectoryOutcome.UNAVAILABLE:
            log.warn(
                "directory unavailable (groups of {user}): {detail}",
                user=user,
                detail=found.detail,
            )
            return _reject(Reason.DIRECTORY_UNAVAILABLE, user), None
        if found.outcome is not DirectoryOutcome.OK:
            await self._fail(key, request)
            reason = (
                Reason.AMBIGUOUS_USER
                if found.outcome is DirectoryOutcome.AMBIGUOUS_USER
                else Reason.NO_SUCH_USER
            )
            return _reject(reason, user), None
        verdict = self.policy.evaluate(replace(subject, groups=GroupSet.of(found.groups)))
        assert isinstance(verdict, Verdict)
        return verdict, found.entry

    def _no_factor_needed(
        self, view: _UserView, verdict: Verdict, tokens: Sequence[TokenRecord], now: float
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
        view: _UserView,
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
        verdict, _attributes = await self._check_password(request, user, key, password, entry=entry)
        if verdict is not None:
            return verdict
        await self._succeed(key, view)
        return Decision(
            Outcome.ACCEPT, reason, user=user, trusted_device=reason is Reason.TRUSTED_DEVICE
        )

    async def _grace_login(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        view: _UserView,
        verdict: Verdict,
        entry: UserEntry | None,
    ) -> Decision:
        """No second factor under ``mfa: required``: rejected, unless inside the grace period
        (days from the first such login, or a number of logins), which the reply says."""
        grace, settings = verdict.grace, view.settings
        now = self.clock.seconds()
        if grace.seconds <= 0 and grace.logins <= 0:
            log.info(
                "{user} has no second-factor token; enroll one with 'radmfa token add'", user=user
            )
            return _reject(Reason.NO_TOKEN, user)
        started = settings.first_seen_at
        if (grace.seconds > 0 and started is not None and now >= started + grace.seconds) or (
            grace.logins > 0 and settings.grace_logins >= grace.logins
        ):
            log.info(
                "{user} has no second factor and the enrolment grace period is over", user=user
            )
            return _reject(Reason.GRACE_EXPIRED, user)
        verdict_pw, _attributes = await self._check_password(
            request, user, key, password, entry=entry
        )
        if verdict_pw is not None:
            return verdict_pw
        await self._succeed(key, view)
        after = await self.db.run(self.store.note_grace_login, key, now)
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

    async def _remember_device(self, key: str, device: str | None, verdict: Verdict) -> None:
        """After a login with a second factor: this user on this device needs only the
        password for a while (each pair has its own timer)."""
        ttl = verdict.trusted_device_ttl
        if device is None or ttl <= 0:
            return
        now = self.clock.seconds()
        await self.db.run(self.store.remember_device, key, device, now, now + ttl)

    def _split_keyword(
        self, tokens: Sequence[TokenRecord], password: str
    ) -> tuple[str, str] | None:
        """``password,email`` -> (``password``, ``email``) when the text after the *last*
        separator is the keyword of one of the user's out-of-band factors."""
        head, sep, tail = password.rpartition(self.settings.otp.keyword_separator)
        if not sep or not head:
            return None
        token = self._keyword_token(tokens, tail.strip().casefold())
        return (head, token.type) if token is not None else None

    def _keyword_token(
        self, tokens: Sequence[TokenRecord], word: str, *, exclude: str | None = None
    ) -> TokenRecord | None:
        if not word:
            return None
        for token in tokens:
            oob = self.factors.out_of_band(token.type)
            if oob is not None and oob.keyword == word and token.type != exclude:
                return token
        return None

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
        view: _UserView,
        *,
        entry: UserEntry | None = None,
    ) -> Decision:
        factor = token.type if token else None
        if token is None or match.kind is MatchKind.NO_MATCH:
            await self._fail(key, request)
            return _reject(Reason.BAD_OTP, user, method="append")
        if match.kind is MatchKind.REPLAY or not await self._consume(token, match):
            await self._fail(key, request)
            return _reject(Reason.OTP_REPLAY, user, method="append", factor=factor)
        if not secret_part:
            await self._fail(key, request)
            return _reject(Reason.EMPTY_PASSWORD, user, method="append", factor=factor)
        verdict, _attributes = await self._check_password(
            request, user, key, secret_part, entry=entry
        )
        if verdict is not None:
            return _with(verdict, method="append", factor=factor)
        await self._succeed(key, view)
        self._audit(user, token)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="append", factor=factor)

    async def _password_then_challenge(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        view: _UserView,
        *,
        send_type: str | None = None,
        rule: str | None = None,
        entry: UserEntry | None = None,
    ) -> Decision:
        verdict, attributes = await self._check_password(request, user, key, password, entry=entry)
        if verdict is not None:
            return _with(verdict, method="challenge")
        now = self.clock.seconds()
        tokens = await self._refresh(user, key, view.tokens, attributes)
        usable = [t for t in tokens if self.factors.usable(t, now)]
        # The typed keyword, else the preferred factor when it delivers codes: send at once.
        wanted = send_type or view.settings.preferred
        token = next(
            (t for t in usable if t.type == wanted and self._destination_of(t) is not None),
            None,
        )
        if token is not None and self.factors.out_of_band(token.type) is not None:
            return await self._send_code(
                request, user, key, token, usable, started_at=now, phase=PHASE_CODE, rule=rule
            )
        if not any(self._can_prove(t) for t in usable):
            log.info("{user} has no usable second factor (no address known yet?)", user=user)
            return _reject(Reason.NO_TOKEN, user, method="challenge")
        notice = await self._notice(key, view.settings)
        message = prompts.menu(
            self.settings.otp, self.factors, usable, preferred=view.settings.preferred
        )
        return await self._issue_challenge(
            request,
            user,
            key,
            message=prompts.with_notice(notice, message),
            started_at=now,
            rule=rule,
        )

    async def _answer_challenge(self, request: AccessRequest, user: str, answer: str) -> Decision:
        assert request.state is not None
        key = store_key(user)
        challenge = await self.db.run(self.store.take_challenge, request.state)
        now = self.clock.seconds()
        if (
            challenge is None
            or challenge.user != key
            or challenge.client_name != request.client_name
            or challenge.client_address != request.client_address
            or now >= challenge.expires_at
        ):
            return _reject(Reason.BAD_STATE, user, method="challenge")
        device = device_key(request.calling_station_id)
        view = await self.db.run(self._user_view, key, self._source_key(request), None, now)
        refused = self._refusal(user, view, now)
        if refused is not None:
            return _with(refused, method="challenge", rule=challenge.rule)
        decision = await self._answer(request, user, key, answer, challenge, view)
        decision = _ruled(decision, challenge.rule)
        if (
            decision.outcome is Outcome.ACCEPT
            and decision.factor is not None
            and decision.reason is Reason.OK
        ):
            address = subject_address(request.calling_station_id, request.client_address)
            await self._remember_device(
                key, device, self.policy.verdict_of(challenge.rule, address)
            )
        return decision

    async def _answer(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        answer: str,
        challenge: ChallengeRecord,
        view: _UserView,
    ) -> Decision:
        """A later round: the answer to ``challenge`` (already taken: a State works once)."""
        now = self.clock.seconds()
        phase, _, excluded_type = challenge.phase.partition(":")
        excluded = excluded_type or None
        usable = [t for t in view.tokens if self.factors.usable(t, now)]
        started = challenge.started_at if challenge.started_at is not None else challenge.created_at
        text = answer.strip()
        fresh_round = now - started < MAX_EXCHANGE_SECONDS

        if not text and fresh_round:  # Enter alone: show the prompt again (and any notice)
            return await self._prompt_again(request, user, key, challenge, usable, view.settings)
        if phase == PHASE_ANOTHER:  # only what is already trusted may finish this login
            usable = [t for t in usable if self._can_finish(t)]
        keyword_token = self._keyword_token(usable, text.casefold(), exclude=excluded)
        if keyword_token is not None and fresh_round:
            next_phase = challenge.phase if phase == PHASE_ANOTHER else PHASE_CODE
            return await self._send_code(
                request,
                user,
                key,
                keyword_token,
                usable,
                started_at=started,
                phase=next_phase,
                carry=challenge,
            )

        if challenge.code_hash is not None and challenge.factor is not None:
            decision = await self._check_sent_code(request, user, key, challenge, text, view)
            if decision is not None:
                return decision

        candidates = [t for t in view.tokens if t.type != excluded]
        token, match = self.factors.verify(candidates, text, now)
        factor = token.type if token else None
        if token is None or match.kind is MatchKind.NO_MATCH:
            await self._fail(key, request)
            return _reject(Reason.BAD_OTP, user, method="challenge")
        if match.kind is MatchKind.REPLAY or not await self._consume(token, match):
            await self._fail(key, request)
            return _reject(Reason.OTP_REPLAY, user, method="challenge", factor=factor)
        await self._succeed(key, view)
        self._audit(user, token)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="challenge", factor=factor)

    async def _check_sent_code(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        challenge: ChallengeRecord,
        text: str,
        view: _UserView,
    ) -> Decision | None:
        """The answer against the code this State was sent with; None when it is not that code
        (other factors get their turn), else the decision."""
        assert challenge.code_hash is not None and challenge.factor is not None
        oob = self.factors.out_of_band(challenge.factor)
        typed = oob.normalize(text) if oob is not None else None
        if oob is None or typed is None or not _code_hash_matches(challenge.code_hash, typed):
            return None
        token = next((t for t in view.tokens if t.token_id == challenge.token_id), None)
        if token is None or oob.destination(token) is None:
            # The address changed after the code was sent: that code died with the old one.
            log.info("{user}: a {factor} code for a replaced address was refused", user=user,
                     factor=oob.type)  # fmt: skip
            await self._fail(key, request)
            return _reject(Reason.BAD_OTP, user, method="challenge", factor=oob.type)
        now = self.clock.seconds()
        if challenge.phase == PHASE_CONFIRM:
            await self.db.run(self.store.advance_step, token.token_id, 1)
            destination = oob.destination(token)
            log.info(
                "{user} confirmed the new {factor} address {destination}",
                user=user,
                factor=oob.type,
                destination=destination.masked if destination else "-",
            )
            # Another factor must follow, and only a trusted one: an address that is itself
            # new cannot vouch for this one (two changed addresses confirming each other).
            others = [
                t
                for t in view.tokens
                if t.type != oob.type and self.factors.usable(t, now) and self._can_finish(t)
            ]
            if others:
                label = self.factors.label(oob.type)
                menu = prompts.menu(self.settings.otp, self.factors, others)
                started = challenge.started_at or challenge.created_at
                return await self._issue_challenge(
                    request,
                    user,
                    key,
                    message=prompts.fit(f"Your new {label} address is confirmed. {menu}"),
                    started_at=started,
                    phase=f"{PHASE_ANOTHER}:{oob.type}",
                    reason=Reason.ADDRESS_CONFIRMED,
                    factor=oob.type,
                    rule=challenge.rule,
                )
        await self._succeed(key, view)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="challenge", factor=oob.type)

    async def _send_code(
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
        """Generate a code, bind its hash to a fresh State, start delivery, ask for it."""
        rule = rule if rule is not None else (carry.rule if carry is not None else None)
        oob = self.factors.out_of_band(token.type)
        destination = oob.destination(token) if oob is not None else None
        assert oob is not None and destination is not None
        now = self.clock.seconds()
        grant = await self.db.run(
            self.store.reserve_send, key, token.type, now, oob.cooldown, oob.max_per_hour
        )
        if not grant.granted:
            return await self._send_refused(
                request, user, key, oob, usable, grant.retry_after, started_at, phase, carry, rule
            )
        confirming = not destination.confirmed
        code = oob.new_code()
        expires_at = min(now + oob.code_ttl, started_at + MAX_EXCHANGE_SECONDS)
        state = self.random_bytes(STATE_BYTES)
        await self.db.run(
            self.store.put_challenge,
            ChallengeRecord(
                state_id=state,
                user=key,
                client_name=request.client_name,
                client_address=request.client_address,
                expires_at=expires_at,
                created_at=now,
                factor=token.type,
                token_id=token.token_id,
                code_hash=_hash_code(code),
                phase=PHASE_CONFIRM if confirming else phase,
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
        wait = f"Please wait {math.ceil(retry_after)}s before asking for another {oob.label} code."
        log.info(
            "{user}: {factor} code not sent, rate limit (retry in {secs:.0f}s)",
            user=user,
            factor=oob.type,
            secs=retry_after,
        )
        # A code already on its way for this factor stays good in the new State.
        if carry is not None and carry.factor == oob.type and carry.code_hash is not None:
            return await self._issue_challenge(
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
        menu = prompts.menu(self.settings.otp, self.factors, usable, exclude=oob.type)
        return await self._issue_challenge(
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

    async def _prompt_again(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        challenge: ChallengeRecord,
        usable: Sequence[TokenRecord],
        settings: UserSettings,
    ) -> Decision:
        """An empty answer: the same question under a new State, with any delivery notice."""
        notice = await self._notice(key, settings)
        phase, _, excluded = challenge.phase.partition(":")
        oob = self.factors.out_of_band(challenge.factor) if challenge.factor else None
        token = next((t for t in usable if t.token_id == challenge.token_id), None)
        destination = oob.destination(token) if oob is not None and token is not None else None
        if challenge.code_hash is not None and oob is not None and destination is not None:
            template = oob.confirm_prompt if phase == PHASE_CONFIRM else oob.prompt
            message = template.format(destination=destination.masked)
        else:
            message = prompts.menu(
                self.settings.otp, self.factors, usable, exclude=excluded or None
            )
        started = challenge.started_at if challenge.started_at is not None else challenge.created_at
        return await self._issue_challenge(
            request,
            user,
            key,
            message=prompts.with_notice(notice, message),
            started_at=started,
            carry=challenge,
        )

    async def _issue_challenge(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        *,
        message: str,
        started_at: float,
        phase: str = PHASE_CODE,
        carry: ChallengeRecord | None = None,
        reason: Reason = Reason.CHALLENGE_ISSUED,
        factor: str | None = None,
        rule: str | None = None,
    ) -> Decision:
        """Store a new State (``carry``: keep that State's pending code and phase) and ask."""
        rule = rule if rule is not None else (carry.rule if carry is not None else None)
        now = self.clock.seconds()
        state = self.random_bytes(STATE_BYTES)
        limit = started_at + MAX_EXCHANGE_SECONDS
        record = ChallengeRecord(
            state_id=state,
            user=key,
            client_name=request.client_name,
            client_address=request.client_address,
            expires_at=min(now + self.settings.otp.challenge_timeout, limit),
            created_at=now,
            phase=phase,
            started_at=started_at,
            rule=rule,
        )
        if carry is not None:
            record = replace(
                record,
                factor=carry.factor,
                token_id=carry.token_id,
                code_hash=carry.code_hash,
                phase=carry.phase,
                expires_at=carry.expires_at if carry.code_hash is not None else record.expires_at,
            )
        await self.db.run(self.store.put_challenge, record)
        return Decision(
            Outcome.CHALLENGE,
            reason,
            user=user,
            reply_message=prompts.fit(message),
            state=state,
            method="challenge",
            factor=factor,
        )

    # -- steps ------------------------------------------------------------------------------

    def _user_view(self, key: str, source: str | None, device: str | None, now: float) -> _UserView:
        """Tokens, then lock, settings, recent failures and the remembered device in one
        statement: one trip to the store thread (off the reactor); parts that cannot matter
        under this configuration are not asked for."""
        store, limits = self.store, self.settings.rate_limits
        tokens = [t for t in store.list_tokens(key) if t.type in self.factors]
        watch_source = source is not None and limits.source.max_failures > 0
        state = store.login_state(
            key,
            now,
            user_since=now - limits.user.window if limits.user.delay > 0 else None,
            source=source if watch_source else None,
            source_since=now - limits.source.window if watch_source else None,
            device=device if self._devices_on else None,
        )
        return _UserView(
            state.lock,
            tokens,
            state.settings,
            state.user_window,
            state.source_window,
            state.device,
        )

    @staticmethod
    def _source_key(request: AccessRequest) -> str | None:
        """Where password spraying comes from: the station (Calling-Station-Id).

        Without one there is no per-source budget: the packet source is then the NAS, and
        throttling it would let anyone lock out every user behind that NAS with a few wrong
        passwords. The per-user window and the lockout still apply.
        """
        station = device_key(request.calling_station_id)
        return source_failures_key(station) if station is not None else None

    def _destination_of(self, token: TokenRecord) -> Destination | None:
        oob = self.factors.out_of_band(token.type)
        return oob.destination(token) if oob is not None else None

    def _can_prove(self, token: TokenRecord) -> bool:
        """A code factor, or an out-of-band one with an address to send to."""
        return (
            self.factors.out_of_band(token.type) is None or self._destination_of(token) is not None
        )

    def _can_finish(self, token: TokenRecord) -> bool:
        """A code factor, or an out-of-band one with a confirmed address."""
        oob = self.factors.out_of_band(token.type)
        if oob is None:
            return True
        destination = oob.destination(token)
        return destination is not None and destination.confirmed

    async def _refresh(
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
            revoked = await self.db.run(self._replace_address, key, new)
            result[index] = new
            log.info(
                "{user}: the directory gives a new {factor} address{what}{devices}",
                user=user,
                factor=new.type,
                what="" if new.last_step is not None else "; it must be confirmed with a code",
                devices=f"; {revoked} trusted device(s) forgotten" if revoked else "",
            )
            if self.audit is not None:
                before, after = (self._destination_of(t) for t in (token, new))
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

    def _replace_address(self, key: str, token: TokenRecord) -> int:
        """A new address replaces the old token; the user's remembered devices are forgotten
        (whoever changed the address must prove the new one before skipping codes again)."""
        self.store.replace_tokens(key, token.type, [token])
        return self.store.revoke_devices(key)

    async def _notice(self, key: str, settings: UserSettings) -> str | None:
        if settings.notice is None:
            return None
        return await self.db.run(self.store.take_notice, key)

    async def _check_password(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        password: str,
        *,
        entry: UserEntry | None = None,
    ) -> tuple[Decision | None, Mapping[str, Sequence[str]]]:
        """The one directory bind: (None, attributes) when the password is right, else the
        reject. ``entry``: the user search a group lookup already made."""
        if entry is not None:
            result = await self.directory.check_password(user, password, entry=entry)
        else:
            result = await self.directory.check_password(user, password)
        if result.outcome is DirectoryOutcome.OK:
            return None, result.attributes
        if result.outcome is DirectoryOutcome.UNAVAILABLE:
            log.warn("directory unavailable: {detail}", detail=result.detail)
            return _reject(Reason.DIRECTORY_UNAVAILABLE, user), {}
        account = _ACCOUNT_REASONS.get(result.detail)
        if account is not None:  # the directory's own verdict on the account: not a guess
            log.info(
                "the directory refuses the account of {user} ({detail})",
                user=user,
                detail=result.detail,
            )
            return _reject(account, user), {}
        await self._fail(key, request)
        reason = {
            DirectoryOutcome.NO_SUCH_USER: Reason.NO_SUCH_USER,
            DirectoryOutcome.AMBIGUOUS_USER: Reason.AMBIGUOUS_USER,
        }.get(result.outcome, Reason.BAD_PASSWORD)
        if result.outcome is DirectoryOutcome.AMBIGUOUS_USER:
            log.error("directory search found several entries for {user}", user=user)
        return _reject(reason, user), {}

    async def _consume(self, token: TokenRecord, match: CodeMatch) -> bool:
        if match.step is None:  # a factor whose codes are not single-use
            return True
        return await self.db.run(self.store.advance_step, token.token_id, match.step)

    def _audit(self, user: str, token: TokenRecord) -> None:
        line = self.factors.audit(token)
        if line:
            log.info("{user}: {line}", user=user, line=line)

    async def _fail(self, key: str, request: AccessRequest) -> None:
        """A failed credential: the lockout counter and the sliding windows, in one trip."""
        now = self.clock.seconds()
        state = await self.db.run(self._record_failure, key, self._source_key(request), now)
        lockout = self.settings.lockout
        if state.locked_until == now + lockout.duration:  # this failure set the lock
            log.warn(
                "{user} locked for {secs:.0f}s after {n} consecutive failures",
                user=key,
                secs=lockout.duration,
                n=state.failures,
            )

    def _record_failure(self, key: str, source: str | None, now: float) -> LockState:
        lockout, limits = self.settings.lockout, self.settings.rate_limits
        state = self.store.record_failure(key, now, lockout.max_failures, lockout.duration)
        keys = []
        if limits.user.delay > 0:
            keys.append(user_failures_key(key))
        if limits.source.max_failures and source is not None:
            keys.append(source)
        if keys:
            self.store.note_failures(keys, now)
        return state

    async def _succeed(self, key: str, view: _UserView) -> None:
        """Clear the failure count and the user's window, when there is anything to clear."""
        if view.lock.failures or view.user_window.count:
            await self.db.run(self._record_success, key, self.clock.seconds())

    def _record_success(self, key: str, now: float) -> None:
        self.store.record_success(key, now)
        self.store.clear_failures(user_failures_key(key))


def _reject(
    reason: Reason,
    user: str | None = None,
    *,
    message: str = GENERIC_REJECT_MESSAGE,
    method: str | None = None,
    factor: str | None = None,
) -> Decision:
    return Decision(
        Outcome.REJECT, reason, user=user, reply_message=message, method=method, factor=factor
    )


def _ruled(decision: Decision, rule: str | None) -> Decision:
    """``decision`` naming the rule that decided (a plain constructor call: dataclasses.replace
    is several times slower, and this runs on every request)."""
    d = decision
    return Decision(
        d.outcome,
        d.reason,
        d.user,
        d.reply_message,
        d.state,
        d.method,
        d.factor,
        rule,
        d.trusted_device,
    )


def _with(
    decision: Decision,
    *,
    method: str | None,
    factor: str | None = None,
    rule: str | None = None,
) -> Decision:
    return replace(
        decision,
        method=method,
        factor=factor or decision.factor,
        rule=rule or decision.rule,
    )


def _time_left(seconds: float) -> str:
    """``13 days``, ``1 day``, ``5 hours``, ``1 hour`` (rounded up) for grace messages."""
    if seconds >= 86400:
        days = math.ceil(seconds / 86400)
        return f"{days} day{'' if days == 1 else 's'}"
    hours = max(1, math.ceil(seconds / 3600))
    return f"{hours} hour{'' if hours == 1 else 's'}"
