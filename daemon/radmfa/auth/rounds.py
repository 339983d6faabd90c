"""Later rounds of a login: the answer to a challenge State.

The password was checked in round one; a round only takes the answer - a code, a keyword such
as ``email`` to have one sent, or nothing to see the prompt again. The State is taken from the
store first (it works once) and must belong to the same user and client; the user's standing
is read again, since locks and throttles may have changed since round one.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime

from radmfa.auth import prompts
from radmfa.auth.challenge import (
    MAX_EXCHANGE_SECONDS,
    PHASE_ANOTHER,
    PHASE_CODE,
    PHASE_CONFIRM,
    ChallengeIssuer,
    exchange_start,
)
from radmfa.auth.decisions import reject, ruled, tagged
from radmfa.auth.identity import store_key
from radmfa.auth.ledger import Ledger, UserView
from radmfa.auth.model import AccessRequest, Decision, Outcome, Reason
from radmfa.auth.outofband import OutOfBandCodes, can_finish, keyword_token
from radmfa.auth.policy import Policy, device_ref, subject_address
from radmfa.config import OtpConfig
from radmfa.factors.base import FactorRegistry, MatchKind
from radmfa.store.base import ChallengeRecord, Store, TokenRecord, UserSettings
from radmfa.threads import BlockingRunner


class ChallengeRounds:
    """Answers a State: prompts again, sends a code, or checks the code given."""

    def __init__(
        self,
        *,
        store: Store,
        db: BlockingRunner,
        clock: IReactorTime,
        factors: FactorRegistry,
        otp: OtpConfig,
        policy: Policy,
        ledger: Ledger,
        issuer: ChallengeIssuer,
        codes: OutOfBandCodes,
    ) -> None:
        self.store = store
        self.db = db
        self.clock = clock
        self.factors = factors
        self.otp = otp
        self.policy = policy
        self.ledger = ledger
        self.issuer = issuer
        self.codes = codes

    async def answer(self, request: AccessRequest, user: str, answer: str) -> Decision:
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
            return reject(Reason.BAD_STATE, user, method="challenge")
        device = device_ref(request.calling_station_id, request.client_name, request.nas_identifier)
        view = await self.ledger.begin(user, key, request, None, now)
        if isinstance(view, Decision):  # refused before any code check
            return tagged(view, method="challenge", rule=challenge.rule)
        decision = await self._round(request, user, key, answer, challenge, view)
        await self.ledger.release(view)  # no-op when the decision already counted the try
        decision = ruled(decision, challenge.rule)
        if (
            decision.outcome is Outcome.ACCEPT
            and decision.factor is not None
            and decision.reason is Reason.OK
        ):
            address = subject_address(request.calling_station_id, request.client_address)
            await self.ledger.remember_device(
                key, device, self.policy.verdict_of(challenge.rule, address)
            )
        return decision

    async def _round(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        answer: str,
        challenge: ChallengeRecord,
        view: UserView,
    ) -> Decision:
        """The answer to ``challenge`` (already taken: a State works once)."""
        now = self.clock.seconds()
        phase, _, excluded_type = challenge.phase.partition(":")
        excluded = excluded_type or None
        usable = [t for t in view.tokens if self.factors.usable(t, now)]
        started = exchange_start(challenge)
        text = answer.strip()
        fresh_round = now - started < MAX_EXCHANGE_SECONDS

        if not text and fresh_round:  # Enter alone: show the prompt again (and any notice)
            return await self._prompt_again(request, user, key, challenge, usable, view.settings)
        if phase == PHASE_ANOTHER:  # only what is already trusted may finish this login
            usable = [t for t in usable if can_finish(self.factors, t)]
        wanted = keyword_token(self.factors, usable, text.casefold(), exclude=excluded)
        if wanted is not None and fresh_round:
            next_phase = challenge.phase if phase == PHASE_ANOTHER else PHASE_CODE
            return await self.codes.send(
                request,
                user,
                key,
                wanted,
                usable,
                started_at=started,
                phase=next_phase,
                carry=challenge,
            )

        if challenge.code_hash is not None and challenge.factor is not None:
            decision = await self.codes.check_sent(request, user, key, challenge, text, view)
            if decision is not None:
                return decision

        candidates = [t for t in view.tokens if t.type != excluded]
        token, match = self.factors.verify(candidates, text, now)
        factor = token.type if token else None
        if token is None or match.kind is MatchKind.NO_MATCH:
            await self.ledger.fail(view)
            return reject(Reason.BAD_OTP, user, method="challenge")
        if match.kind is MatchKind.REPLAY or not await self.ledger.consume(token, match):
            await self.ledger.fail(view)
            return reject(Reason.OTP_REPLAY, user, method="challenge", factor=factor)
        await self.ledger.succeed(view)
        self.ledger.log_use(user, token)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="challenge", factor=factor)

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
        notice = await self.codes.notice(key, settings)
        phase, _, excluded = challenge.phase.partition(":")
        oob = self.factors.out_of_band(challenge.factor) if challenge.factor else None
        token = next((t for t in usable if t.token_id == challenge.token_id), None)
        destination = oob.destination(token) if oob is not None and token is not None else None
        if challenge.code_hash is not None and oob is not None and destination is not None:
            template = oob.confirm_prompt if phase == PHASE_CONFIRM else oob.prompt
            message = template.format(destination=destination.masked)
        else:
            message = prompts.menu(self.otp, self.factors, usable, exclude=excluded or None)
        return await self.issuer.issue(
            request,
            user,
            key,
            message=prompts.with_notice(notice, message),
            started_at=exchange_start(challenge),
            carry=challenge,
        )
