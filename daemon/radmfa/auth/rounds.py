"""Later rounds of a login: the answer to a challenge State.

The password was checked in round one; a round only takes the answer - a code, a keyword such
as ``email`` to have one sent, or nothing to see the prompt again. The State is taken from the
store first (it works once) and must belong to the same user and client; the user's standing
is read again, since locks and throttles may have changed since round one, and so is the
policy, since a reload may have changed it.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from radmfa.auth import prompts
from radmfa.auth.challenge import (
    MAX_EXCHANGE_SECONDS,
    PHASE_CODE,
    PHASE_CONFIRM,
    PHASE_VOUCH,
    ChallengeIssuer,
    Phase,
    exchange_start,
    parse_phase,
)
from radmfa.auth.decisions import reject, ruled, tagged
from radmfa.auth.identity import store_key
from radmfa.auth.ledger import Ledger, UserView
from radmfa.auth.model import AccessRequest, Decision, Outcome, Reason
from radmfa.auth.outofband import OutOfBandCodes, can_finish, is_pending, keyword_token
from radmfa.auth.policy import Verdict, device_ref
from radmfa.auth.verdicts import PolicyCheck, refusal
from radmfa.config import OtpConfig
from radmfa.factors.base import FactorRegistry, MatchKind
from radmfa.store.base import ChallengeRecord, TokenRecord
from radmfa.store.facade import AsyncStore

log = Logger(namespace="radmfa.auth")


class ChallengeRounds:
    """Answers a State: prompts again, sends a code, or checks the code given."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        clock: IReactorTime,
        factors: FactorRegistry,
        otp: OtpConfig,
        ledger: Ledger,
        issuer: ChallengeIssuer,
        codes: OutOfBandCodes,
        verdicts: PolicyCheck,
    ) -> None:
        self.store = store
        self.clock = clock
        self.factors = factors
        self.otp = otp
        self.ledger = ledger
        self.issuer = issuer
        self.codes = codes
        self.verdicts = verdicts

    async def answer(self, request: AccessRequest, user: str, answer: str) -> Decision:
        assert request.state is not None
        key = store_key(user)
        challenge = await self.store.take_challenge(request.state)
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
        try:
            verdict = await self._policy_now(request, user, key, challenge, view)
            if isinstance(verdict, Decision):
                return verdict
            decision = await self._round(request, user, key, answer, challenge, view)
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

    async def _policy_now(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        challenge: ChallengeRecord,
        view: UserView,
    ) -> Verdict | Decision:
        """The policy as it stands now (a reload may have come since round one): a deny or
        an address list refuses the answer; otherwise the exchange goes on as asked (an
        exempt or optional verdict does not turn a code prompt into a pass), and the fresh
        verdict names the rule and says how long a device is trusted. The rule named in the
        State is only history: it may be gone, or decide differently now."""
        verdict, _entry = await self.verdicts.evaluate(request, user, key, view)
        if isinstance(verdict, Verdict):
            refused = refusal(verdict, user)
            if refused is None:
                return verdict
            log.info(
                "{user}: the policy now refuses this login (rule {rule}, was {was}); its "
                "challenge ends",
                user=user,
                rule=verdict.rule,
                was=challenge.rule or "-",
            )
            return tagged(refused, method="challenge", rule=verdict.rule)
        return tagged(verdict, method="challenge", rule=challenge.rule)

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
        phase = parse_phase(challenge.phase)
        if phase is None:
            return reject(Reason.BAD_STATE, user, method="challenge")
        usable = [t for t in view.tokens if self.factors.usable(t, now)]
        if phase.name != PHASE_CODE:  # vouching for a new address: only what is trusted counts
            usable = [t for t in usable if can_finish(self.factors, t)]
        started = exchange_start(challenge)
        text = answer.strip()
        fresh_round = now - started < MAX_EXCHANGE_SECONDS

        if not text and fresh_round:  # Enter alone: show the prompt again (and any notice)
            return await self._prompt_again(request, user, key, challenge, phase, usable, view)
        if fresh_round:
            sent = await self._send_on_keyword(
                request, user, key, text.casefold(), challenge, phase, usable, view
            )
            if sent is not None:
                return sent

        if challenge.code_hash is not None and challenge.factor is not None:
            checked = await self.codes.check_sent(request, user, key, challenge, text, view)
            if isinstance(checked, Decision):
                return checked
            if checked is not None:
                return await self._proven(
                    request, user, key, challenge, phase, usable, view, checked
                )

        candidates = view.tokens if phase.name == PHASE_CODE else usable
        token, match = self.factors.verify(candidates, text, now)
        factor = token.type if token else None
        if token is None or match.kind is MatchKind.NO_MATCH:
            await self.ledger.fail(view)
            return reject(Reason.BAD_OTP, user, method="challenge")
        if match.kind is MatchKind.REPLAY or not await self.ledger.consume(token, match):
            await self.ledger.fail(view)
            return reject(Reason.OTP_REPLAY, user, method="challenge", factor=factor)
        return await self._proven(request, user, key, challenge, phase, usable, view, token)

    async def _send_on_keyword(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        word: str,
        challenge: ChallengeRecord,
        phase: Phase,
        usable: Sequence[TokenRecord],
        view: UserView,
    ) -> Decision | None:
        """A keyword (``email``) asks for a code: sent, or the prompt that says why not. In the
        confirm phase the pending address's own keyword sends its confirmation code again."""
        pending = self._pending(view, phase)
        if phase.name == PHASE_CONFIRM and pending is not None and phase.vouched_by:
            oob = self.factors.out_of_band(pending.type)
            if oob is not None and oob.keyword == word:
                return await self.codes.send_confirmation(
                    request,
                    user,
                    key,
                    pending,
                    usable,
                    started_at=exchange_start(challenge),
                    vouched_by=phase.vouched_by,
                    carry=challenge,
                )
        wanted = keyword_token(self.factors, usable, word)
        if wanted is None:
            return None
        next_phase = challenge.phase if phase.name == PHASE_VOUCH else PHASE_CODE
        return await self.codes.send(
            request,
            user,
            key,
            wanted,
            usable,
            started_at=exchange_start(challenge),
            phase=next_phase,
            carry=challenge,
        )

    async def _proven(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        challenge: ChallengeRecord,
        phase: Phase,
        usable: Sequence[TokenRecord],
        view: UserView,
        token: TokenRecord,
    ) -> Decision:
        """``token`` just proved possession. The login is done, unless this exchange vouches
        for a pending address: then that address gets its confirmation code now; the code
        typed back confirms it and finishes the login in the name of the vouching factor."""
        factor = token.type
        pending = self._pending(view, phase)
        if phase.name == PHASE_VOUCH and pending is not None:
            return await self.codes.send_confirmation(
                request,
                user,
                key,
                pending,
                usable,
                started_at=exchange_start(challenge),
                vouched_by=token.type,
                rule=challenge.rule,
            )
        if phase.name == PHASE_CONFIRM and phase.vouched_by and token.token_id == phase.pending:
            await self.codes.confirm(user, token, phase.vouched_by)
            factor = phase.vouched_by
        await self.ledger.succeed(view)
        self.ledger.log_use(user, token)
        return Decision(Outcome.ACCEPT, Reason.OK, user=user, method="challenge", factor=factor)

    def _pending(self, view: UserView, phase: Phase) -> TokenRecord | None:
        """The token whose new address this exchange is about, while it is still pending (a
        replaced token is gone: its exchange ends like any other)."""
        if phase.pending is None:
            return None
        token = next((t for t in view.tokens if t.token_id == phase.pending), None)
        return token if token is not None and is_pending(self.factors, token) else None

    async def _prompt_again(
        self,
        request: AccessRequest,
        user: str,
        key: str,
        challenge: ChallengeRecord,
        phase: Phase,
        usable: Sequence[TokenRecord],
        view: UserView,
    ) -> Decision:
        """An empty answer: the same question under a new State, with any delivery notice."""
        notice = await self.codes.notice(key, view.settings)
        oob = self.factors.out_of_band(challenge.factor) if challenge.factor else None
        token = next((t for t in view.tokens if t.token_id == challenge.token_id), None)
        destination = oob.destination(token) if oob is not None and token is not None else None
        pending = self._pending(view, phase)
        if challenge.code_hash is not None and oob is not None and destination is not None:
            template = oob.confirm_prompt if phase.name == PHASE_CONFIRM else oob.prompt
            message = template.format(destination=destination.masked)
        elif phase.name == PHASE_VOUCH and pending is not None:
            message = self.codes.vouch_prompt(pending, usable)
        else:
            message = prompts.menu(self.otp, self.factors, usable)
        return await self.issuer.issue(
            request,
            user,
            key,
            message=prompts.with_notice(notice, message),
            started_at=exchange_start(challenge),
            carry=challenge,
        )
