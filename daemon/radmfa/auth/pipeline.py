"""The authentication pipeline: one AccessRequest in, one Decision out.

Order of checks, each chosen so that a cheaper or safer check runs before a costlier one:

1. input rules (PAP only, a sane User-Name, a decodable non-empty password) - no I/O at all;
2. a State continues a challenge: the password was checked in round one, only the code is;
3. lockout - a locked user costs no directory bind (protects AD lockout counters);
4. the user's tokens; none means reject (or password-only when allowed);
5. the code, when one is appended, before the password (O-08): a guesser without the token
   burns no directory bind, and a matched step is consumed whatever the password;
6. at most one directory bind;
7. accept, or issue an Access-Challenge with a single-use State.

Failures of a user's credential count towards lockout; infrastructure failures never do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

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
from radmfa.config import LockoutConfig, OtpConfig
from radmfa.directory.base import DirectoryOutcome, PasswordChecker
from radmfa.factors.base import CodeMatch, FactorRegistry, MatchKind
from radmfa.store.base import ChallengeRecord, LockState, Store, StoreError, TokenRecord
from radmfa.threads import BlockingRunner

log = Logger(namespace="radmfa.auth")

STATE_BYTES = 16
PAP_REQUIRED_MESSAGE = "PAP is required."


@dataclass(frozen=True)
class PipelineSettings:
    otp: OtpConfig
    lockout: LockoutConfig


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
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.store = store
        self.db = db
        self.factors = factors
        self.clock = clock
        #: Told of every decision (the log line, metrics, audit): they see, never change it.
        self.observers: tuple[DecisionObserver, ...] = (
            tuple(observers) if observers is not None else (DecisionLog(),)
        )
        self.random_bytes = random_bytes

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
        lock, tokens = await self.db.run(self._user_state, key)
        if lock.is_locked(self.clock.seconds()):
            return _reject(Reason.LOCKED, user)
        if not tokens:
            return await self._password_only(user, key, password, failures=lock.failures)

        mode = self.settings.otp.mode
        if mode in ("append", "auto"):
            split = self._split_appended(tokens, password, require_code=mode == "append")
            if split is not None:
                secret_part, token, match = split
                return await self._append(user, key, secret_part, token, match, lock.failures)
            if mode == "append":
                await self._fail(key)
                return _reject(Reason.BAD_OTP, user, method="append")
        return await self._password_then_challenge(request, user, key, password, lock.failures)

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
        user: str,
        key: str,
        secret_part: str,
        token: TokenRecord | None,
        match: CodeMatch,
        failures: int,
    ) -> Decision:
        factor = token.type if token else None
        if token is None or match.kind is MatchKind.NO_MATCH:
            await self._fail(key)
            return _reject(Reason.BAD_OTP, user, method="append")
        if match.kind is MatchKind.REPLAY or not await self._consume(token, match):
            await self._fail(key)
            return _reject(Reason.OTP_REPLAY, user, method="append", factor=factor)
        if not secret_part:
            await self._fail(key)
            return _reject(Reason.EMPTY_PASSWORD, user, method="append", factor=factor)
        verdict = await self._check_password(user, key, secret_part)
        if verdict is not None:
            return _with(verdict, method="append", factor=factor)
        await self._succeed(key, failures)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="append", factor=factor)

    async def _password_then_challenge(
        self, request: AccessRequest, user: str, key: str, password: str, failures: int
    ) -> Decision:
        verdict = await self._check_password(user, key, password)
        if verdict is not None:
            return _with(verdict, method="challenge")
        now = self.clock.seconds()
        state = self.random_bytes(STATE_BYTES)
        await self.db.run(
            self.store.put_challenge,
            ChallengeRecord(
                state_id=state,
                user=key,
                client_name=request.client_name,
                client_address=request.client_address,
                expires_at=now + self.settings.otp.challenge_timeout,
                created_at=now,
            ),
        )
        return Decision(
            Outcome.CHALLENGE,
            Reason.CHALLENGE_ISSUED,
            user=user,
            reply_message=self.settings.otp.challenge_prompt,
            state=state,
            method="challenge",
        )

    async def _answer_challenge(self, request: AccessRequest, user: str, code: str) -> Decision:
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
        lock, tokens = await self.db.run(self._user_state, key)
        if lock.is_locked(now):
            return _reject(Reason.LOCKED, user, method="challenge")
        token, match = self.factors.verify(tokens, code.strip(), now)
        factor = token.type if token else None
        if token is None or match.kind is MatchKind.NO_MATCH:
            await self._fail(key)
            return _reject(Reason.BAD_OTP, user, method="challenge")
        if match.kind is MatchKind.REPLAY or not await self._consume(token, match):
            await self._fail(key)
            return _reject(Reason.OTP_REPLAY, user, method="challenge", factor=factor)
        await self._succeed(key, lock.failures)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="challenge", factor=factor)

    async def _password_only(
        self, user: str, key: str, password: str, *, failures: int
    ) -> Decision:
        if not self.settings.otp.allow_password_only:
            log.info(
                "{user} has no second-factor token; enroll one with 'radmfa token add'", user=user
            )
            return _reject(Reason.NO_TOKEN, user)
        verdict = await self._check_password(user, key, password)
        if verdict is not None:
            return verdict
        await self._succeed(key, failures)
        return Decision(Outcome.ACCEPT, Reason.PASSWORD_ONLY, user=user)

    # -- steps ------------------------------------------------------------------------------

    def _user_state(self, key: str) -> tuple[LockState, list[TokenRecord]]:
        """Lock state and usable tokens in one trip to the store thread (runs off the reactor)."""
        tokens = [t for t in self.store.list_tokens(key) if self.factors.get(t.type) is not None]
        return self.store.lock_state(key), tokens

    async def _check_password(self, user: str, key: str, password: str) -> Decision | None:
        """The one directory bind. None when the password is right, else the reject."""
        result = await self.directory.check_password(user, password)
        if result.outcome is DirectoryOutcome.OK:
            return None
        if result.outcome is DirectoryOutcome.UNAVAILABLE:
            log.warn("directory unavailable: {detail}", detail=result.detail)
            return _reject(Reason.DIRECTORY_UNAVAILABLE, user)
        await self._fail(key)
        reason = {
            DirectoryOutcome.NO_SUCH_USER: Reason.NO_SUCH_USER,
            DirectoryOutcome.AMBIGUOUS_USER: Reason.AMBIGUOUS_USER,
        }.get(result.outcome, Reason.BAD_PASSWORD)
        if result.outcome is DirectoryOutcome.AMBIGUOUS_USER:
            log.error("directory search found several entries for {user}", user=user)
        return _reject(reason, user)

    async def _consume(self, token: TokenRecord, match: CodeMatch) -> bool:
        assert match.step is not None
        return await self.db.run(self.store.advance_step, token.token_id, match.step)

    async def _fail(self, key: str) -> None:
        lockout = self.settings.lockout
        now = self.clock.seconds()
        state = await self.db.run(
            self.store.record_failure, key, now, lockout.max_failures, lockout.duration
        )
        if state.locked_until == now + lockout.duration:  # this failure set the lock
            log.warn(
                "{user} locked for {secs:.0f}s after {n} consecutive failures",
                user=key,
                secs=lockout.duration,
                n=state.failures,
            )

    async def _succeed(self, key: str, failures: int) -> None:
        if failures:
            await self.db.run(self.store.record_success, key, self.clock.seconds())


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


def _with(decision: Decision, *, method: str | None, factor: str | None = None) -> Decision:
    return Decision(
        decision.outcome,
        decision.reason,
        user=decision.user,
        reply_message=decision.reply_message,
        state=decision.state,
        method=method,
        factor=factor or decision.factor,
    )
