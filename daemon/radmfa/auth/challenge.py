"""Challenge States: how long one login's exchange may last, the phase a later round is in, and
issuing a fresh single-use State for the next round.

Every round gets a new State (a State works once); ``carry`` keeps a pending out-of-band code
and its phase alive in the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.internet.interfaces import IReactorTime

from radmfa.auth import prompts
from radmfa.auth.model import AccessRequest, Decision, Outcome, Reason
from radmfa.store.base import ChallengeRecord, Store
from radmfa.threads import BlockingRunner

STATE_BYTES = 16
#: One login, however many codes are asked for, lasts at most this long (O-09: 10 minutes
#: for out-of-band codes).
MAX_EXCHANGE_SECONDS = 600.0

PHASE_CODE = "code"
PHASE_CONFIRM = "confirm"
#: "another:<type>": an address of <type> was just confirmed; any factor but <type> finishes.
PHASE_ANOTHER = "another"


def exchange_start(challenge: ChallengeRecord) -> float:
    """When the login this State belongs to began (records without it: when it was made)."""
    return challenge.started_at if challenge.started_at is not None else challenge.created_at


class ChallengeIssuer:
    """Stores new States and words the Access-Challenge that carries them."""

    def __init__(
        self,
        *,
        store: Store,
        db: BlockingRunner,
        clock: IReactorTime,
        random_bytes: Callable[[int], bytes],
        timeout: float,
    ) -> None:
        self.store = store
        self.db = db
        self.clock = clock
        self.random_bytes = random_bytes
        #: otp.challenge_timeout: how long a State without a pending code stays good.
        self.timeout = timeout

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
