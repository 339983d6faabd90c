"""Challenge States: how long one login's exchange may last, the phase a later round is in, and
issuing a fresh single-use State for the next round.

Every round gets a new State (a State works once); ``carry`` keeps a pending out-of-band code
and its phase alive in the new one.

A changed email address or phone number is *pending*: it receives nothing until another,
already trusted factor has succeeded in the same exchange ("vouch" phase); only then is a code
sent to it ("confirm" phase), and that code both confirms the address and ends the login.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from twisted.internet.interfaces import IReactorTime

from radmfa.auth import prompts
from radmfa.auth.model import AccessRequest, Decision, Outcome, Reason
from radmfa.store.base import ChallengeRecord
from radmfa.store.facade import AsyncStore

STATE_BYTES = 16
#: One login, however many codes are asked for, lasts at most this long (O-09: 10 minutes
#: for out-of-band codes).
MAX_EXCHANGE_SECONDS = 600.0

PHASE_CODE = "code"
#: "vouch:<token id>": the pending address of that token waits for a trusted factor first.
PHASE_VOUCH = "vouch"
#: "address:<token id>:<factor>": <factor> vouched in this exchange; the code sent to the
#: pending address confirms it. (Spelled unlike the "confirm" of earlier versions, whose
#: States were issued before any vouching and so must not be read as this phase.)
PHASE_CONFIRM = "address"


@dataclass(frozen=True, slots=True)
class Phase:
    """A State's phase, parsed: its name, the pending token and the factor that vouched."""

    name: str
    pending: str | None = None
    vouched_by: str | None = None


def vouch_phase(token_id: str) -> str:
    return f"{PHASE_VOUCH}:{token_id}"


def confirm_phase(token_id: str, vouched_by: str) -> str:
    return f"{PHASE_CONFIRM}:{token_id}:{vouched_by}"


def parse_phase(text: str) -> Phase | None:
    """None for a phase this version does not issue (a State from an older one): refused."""
    name, _, rest = text.partition(":")
    if name == PHASE_CODE and not rest:
        return Phase(PHASE_CODE)
    if name == PHASE_VOUCH and rest:
        return Phase(PHASE_VOUCH, pending=rest)
    if name == PHASE_CONFIRM:
        token_id, _, vouched_by = rest.rpartition(":")
        if token_id and vouched_by:
            return Phase(PHASE_CONFIRM, pending=token_id, vouched_by=vouched_by)
    return None


def exchange_start(challenge: ChallengeRecord) -> float:
    """When the login this State belongs to began (records without it: when it was made)."""
    return challenge.started_at if challenge.started_at is not None else challenge.created_at


class ChallengeIssuer:
    """Stores new States and words the Access-Challenge that carries them."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        clock: IReactorTime,
        random_bytes: Callable[[int], bytes],
        timeout: float,
        max_open: int = 5,
    ) -> None:
        self.store = store
        self.clock = clock
        self.random_bytes = random_bytes
        #: otp.challenge_timeout: how long a State without a pending code stays good.
        self.timeout = timeout
        #: otp.max_open_challenges: a user's open States; a new one drops the oldest beyond.
        self.max_open = max_open

    async def put(self, record: ChallengeRecord) -> None:
        """Every State goes in through here, under the per-user cap (atomic in the store)."""
        await self.store.put_challenge(record, self.max_open)

    def new_state(self) -> bytes:
        return self.random_bytes(STATE_BYTES)

    async def issue(
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
        state = self.new_state()
        limit = started_at + MAX_EXCHANGE_SECONDS
        record = ChallengeRecord(
            state_id=state,
            user=key,
            client_name=request.client_name,
            client_address=request.client_address,
            expires_at=min(now + self.timeout, limit),
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
        await self.put(record)
        return Decision(
            Outcome.CHALLENGE,
            reason,
            user=user,
            reply_message=prompts.fit(message),
            state=state,
            method="challenge",
            factor=factor,
        )
