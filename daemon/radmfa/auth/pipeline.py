"""The authentication pipeline: one AccessRequest in, one Decision out.

Order of checks, each chosen so that a cheaper or safer check runs before a costlier one:

1. input rules (PAP only, a sane User-Name, a decodable non-empty password) - no I/O at all;
2. a State continues a challenge: the password was checked in round one, only the answer is
   (a code, a keyword such as ``email`` to have one sent, or nothing to see the prompt again);
3. lockout - a locked user costs no directory bind (protects AD lockout counters);
4. the user's tokens; none means reject (or password-only when allowed);
5. ``password,email``: a keyword after the last separator asks for a code (append, auto);
6. the code, when one is appended, before the password (O-08): a guesser without the token
   burns no directory bind, and a matched step is consumed whatever the password;
7. at most one directory bind; its attributes refresh directory-sourced addresses;
8. accept, or issue an Access-Challenge with a single-use State - after sending a code at once
   when the keyword or the user's preferred factor asks for one.

Every challenge round gets a fresh State (a State works once); an out-of-band code is hashed
into the State it was sent for and nowhere else. Sending never delays the reply: the courier
delivers in the background and a failure shows up at the user's next prompt.

Failures of a user's credential count towards lockout; infrastructure failures never do.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

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
from radmfa.config import LockoutConfig, OtpConfig
from radmfa.delivery.courier import Courier
from radmfa.directory.base import DirectoryOutcome, PasswordChecker
from radmfa.factors.base import (
    CodeMatch,
    Destination,
    FactorRegistry,
    MatchKind,
    OutOfBandFactor,
    SendContext,
)
from radmfa.store.base import (
    ChallengeRecord,
    LockState,
    Store,
    StoreError,
    TokenRecord,
    UserSettings,
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


@dataclass(frozen=True)
class _UserView:
    """What one trip to the store thread tells about a user."""

    lock: LockState
    #: Tokens of the factors that are loaded (others cannot prove anything here).
    tokens: list[TokenRecord]
    settings: UserSettings


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
        view = await self.db.run(self._user_view, key)
        now = self.clock.seconds()
        if view.lock.is_locked(now):
            return _reject(Reason.LOCKED, user)
        tokens = [t for t in view.tokens if self.factors.usable(t, now)]
        if not tokens:
            return await self._password_only(user, key, password, failures=view.lock.failures)

        mode = self.settings.otp.mode
        if mode in ("append", "auto"):
            keyword = self._split_keyword(tokens, password)
            if keyword is not None:
                head, wanted = keyword
                return await self._password_then_challenge(
                    request, user, key, head, view, send_type=wanted
                )
            split = self._split_appended(view.tokens, password, require_code=mode == "append")
            if split is not None:
                secret_part, token, match = split
                return await self._append(user, key, secret_part, token, match, view.lock.failures)
            if mode == "append":
                await self._fail(key)
                return _reject(Reason.BAD_OTP, user, method="append")
        return await self._password_then_challenge(request, user, key, password, view)

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
        verdict, _attributes = await self._check_password(user, key, secret_part)
        if verdict is not None:
            return _with(verdict, method="append", factor=factor)
        await self._succeed(key, failures)
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
    ) -> Decision:
        verdict, attributes = await self._check_password(user, key, password)
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
                request, user, key, token, usable, started_at=now, phase=PHASE_CODE
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
        view = await self.db.run(self._user_view, key)
        if view.lock.is_locked(now):
            return _reject(Reason.LOCKED, user, method="challenge")
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
            await self._fail(key)
            return _reject(Reason.BAD_OTP, user, method="challenge")
        if match.kind is MatchKind.REPLAY or not await self._consume(token, match):
            await self._fail(key)
            return _reject(Reason.OTP_REPLAY, user, method="challenge", factor=factor)
        await self._succeed(key, view.lock.failures)
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
            await self._fail(key)
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
                )
        await self._succeed(key, view.lock.failures)
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
    ) -> Decision:
        """Generate a code, bind its hash to a fresh State, start delivery, ask for it."""
        oob = self.factors.out_of_band(token.type)
        destination = oob.destination(token) if oob is not None else None
        assert oob is not None and destination is not None
        now = self.clock.seconds()
        grant = await self.db.run(
            self.store.reserve_send, key, token.type, now, oob.cooldown, oob.max_per_hour
        )
        if not grant.granted:
            return await self._send_refused(
                request, user, key, oob, usable, grant.retry_after, started_at, phase, carry
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
    ) -> Decision:
        """Store a new State (``carry``: keep that State's pending code and phase) and ask."""
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

    async def _password_only(
        self, user: str, key: str, password: str, *, failures: int
    ) -> Decision:
        if not self.settings.otp.allow_password_only:
            log.info(
                "{user} has no second-factor token; enroll one with 'radmfa token add'", user=user
            )
            return _reject(Reason.NO_TOKEN, user)
        verdict, _attributes = await self._check_password(user, key, password)
        if verdict is not None:
            return verdict
        await self._succeed(key, failures)
        return Decision(Outcome.ACCEPT, Reason.PASSWORD_ONLY, user=user)

    # -- steps ------------------------------------------------------------------------------

    def _user_view(self, key: str) -> _UserView:
        """Lock state, tokens and settings in one trip to the store thread (off the reactor)."""
        tokens = [t for t in self.store.list_tokens(key) if t.type in self.factors]
        return _UserView(self.store.lock_state(key), tokens, self.store.user_settings(key))

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
            await self.db.run(self.store.replace_tokens, key, new.type, [new])
            result[index] = new
            log.info(
                "{user}: the directory gives a new {factor} address{what}",
                user=user,
                factor=new.type,
                what="" if new.last_step is not None else "; it must be confirmed with a code",
            )
        return result

    async def _notice(self, key: str, settings: UserSettings) -> str | None:
        if settings.notice is None:
            return None
        return await self.db.run(self.store.take_notice, key)

    async def _check_password(
        self, user: str, key: str, password: str
    ) -> tuple[Decision | None, Mapping[str, Sequence[str]]]:
        """The one directory bind: (None, attributes) when the password is right, else the
        reject."""
        result = await self.directory.check_password(user, password)
        if result.outcome is DirectoryOutcome.OK:
            return None, result.attributes
        if result.outcome is DirectoryOutcome.UNAVAILABLE:
            log.warn("directory unavailable: {detail}", detail=result.detail)
            return _reject(Reason.DIRECTORY_UNAVAILABLE, user), {}
        await self._fail(key)
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
