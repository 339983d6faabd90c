"""Challenge States: stored (at most so many open per user), taken exactly once."""

from __future__ import annotations

from radmfa.store.engines.base import Row, Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import ChallengeRecord
from radmfa.store.queries.base import Queries

__all__ = ["ChallengeQueries"]

# Statements spelled out in full (no string building), so every query is a reviewable literal.
INSERT_CHALLENGE = Statement(
    "INSERT INTO challenges (state_id, username, client_name, client_address, expires_at, "
    "created_at, factor, token_id, code_hash, phase, started_at, rule) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: A user's challenges beyond the newest ``max_open`` (by created_at, then the order stored).
DROP_OLDEST_CHALLENGES = Statement(
    "DELETE FROM challenges WHERE state_id IN (SELECT state_id FROM challenges "
    "WHERE username = ? ORDER BY created_at DESC, {stored_order} DESC "
    "LIMIT {all_rows} OFFSET ?)"
)
#: Of two concurrent takers, the second finds the row gone.
TAKE_CHALLENGE = Statement(
    "DELETE FROM challenges WHERE state_id = ? "
    "RETURNING state_id, username, client_name, client_address, expires_at, created_at, "
    "factor, token_id, code_hash, phase, started_at, rule"
)
#: Without RETURNING (SQLite < 3.35): read, then delete, in one write transaction.
SELECT_CHALLENGE = Statement(
    "SELECT state_id, username, client_name, client_address, expires_at, created_at, "
    "factor, token_id, code_hash, phase, started_at, rule FROM challenges WHERE state_id = ?"
)
DELETE_CHALLENGE = Statement("DELETE FROM challenges WHERE state_id = ?")


class ChallengeQueries(Queries):
    def put_challenge(self, challenge: ChallengeRecord, max_open: int | None = None) -> None:
        values = (
            challenge.state_id,
            challenge.user,
            challenge.client_name,
            challenge.client_address,
            challenge.expires_at,
            challenge.created_at,
            challenge.factor,
            challenge.token_id,
            challenge.code_hash,
            challenge.phase,
            challenge.started_at,
            challenge.rule,
        )

        def work(tx: Transaction) -> None:
            if max_open is not None:
                # One user's new States take turns, so each sees the others' when it trims.
                tx.lock(("challenges", challenge.user))
            tx.execute(INSERT_CHALLENGE, values)
            if max_open is not None:
                tx.execute(DROP_OLDEST_CHALLENGES, (challenge.user, max(1, max_open)))

        what = f"storing a challenge for {challenge.user!r}"
        self._inserting(what, work, "a challenge with this state id already exists")

    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        if self._use_returning:
            rows = self._engine.write_returning("taking a challenge", TAKE_CHALLENGE, (state_id,))
        else:

            def work(tx: Transaction) -> list[Row]:
                rows = tx.all(SELECT_CHALLENGE, (state_id,))
                if rows:
                    tx.execute(DELETE_CHALLENGE, (state_id,))
                return rows

            rows = self._engine.transaction("taking a challenge", work)
        if not rows:
            return None
        state, user, client_name, client_address, expires_at, created_at = rows[0][:6]
        factor, token_id, code_hash, phase, started_at, rule = rows[0][6:]
        return ChallengeRecord(
            bytes(state),
            user,
            client_name,
            client_address,
            expires_at,
            created_at,
            factor=factor,
            token_id=token_id,
            code_hash=bytes(code_hash) if code_hash is not None else None,
            phase=phase,
            started_at=started_at,
            rule=rule,
        )
