"""Tokens: adding (never a secret twice), listing with the sealed secrets opened, removing,
and the replay check (``advance_step``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from radmfa.store.crypto import SecretBoxError, token_secret_aad
from radmfa.store.engines.base import Row, Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import (
    KNOWN_SECRET,
    LINK_GONE,
    StoreError,
    TokenChange,
    TokenChanged,
    TokenRecord,
)
from radmfa.store.queries.base import Queries
from radmfa.store.queries.portal import SPEND_LINK
from radmfa.store.rules import split_known_secrets

__all__ = ["DELETE_USER_TOKENS", "TokenQueries", "token_record"]

# Statements spelled out in full (no string building), so every query is a reviewable literal.
INSERT_TOKEN = Statement(
    "INSERT INTO tokens (token_id, username, type, secret_blob, digits, algorithm, period, "
    "created_at, last_step, description, drift) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_ALL_TOKENS = Statement(
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description, drift FROM tokens ORDER BY username, created_at, token_id"
)
SELECT_USER_TOKENS = Statement(
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description, drift FROM tokens WHERE username = ? ORDER BY created_at, token_id"
)
SELECT_USER_TYPE_TOKENS = Statement(
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description, drift FROM tokens WHERE username = ? AND type = ?"
)
DELETE_USER_TOKENS = Statement("DELETE FROM tokens WHERE username = ?")
DELETE_TOKEN = Statement("DELETE FROM tokens WHERE username = ? AND token_id = ?")
DELETE_USER_TYPE_TOKENS = Statement("DELETE FROM tokens WHERE username = ? AND type = ?")
#: The replay check: one conditional statement, atomic on its own. Of two concurrent updates
#: the second waits for the first and then finds last_step no longer below ``step``. The
#: observed drift rides along (kept when none is given).
ADVANCE_STEP = Statement(
    "UPDATE tokens SET last_step = ?, drift = coalesce(?, drift) "
    "WHERE token_id = ? AND (last_step IS NULL OR last_step < ?)"
)

#: Decrypted secrets kept at most, for the users seen most recently (~300 bytes each with the
#: key), so memory does not grow with the number of enrolled users.
_MAX_OPENED = 10_000


def token_record(row: Row, secret: bytes) -> TokenRecord:
    """A row of the tokens table (the columns of SELECT_ALL_TOKENS) with its secret opened."""
    token_id, user, type_, _, digits, algorithm, period, created_at, last_step, desc, drift = row
    return TokenRecord(
        token_id=token_id,
        user=user,
        type=type_,
        secret=secret,
        digits=digits,
        algorithm=algorithm,
        period=period,
        created_at=created_at,
        last_step=last_step,
        description=desc,
        drift=drift,
    )


class TokenQueries(Queries):
    #: Decrypted token secrets by (token id, user, sealed blob): a login reads the sealed
    #: secret every time, and an unchanged row need not be opened again (a changed one is,
    #: so tampering is still caught by the AEAD check).
    _opened: dict[tuple[str, str, bytes], bytes]

    def add_token(self, token: TokenRecord) -> bool:
        return not self.add_tokens([token])

    def _token_rows(self, tokens: Sequence[TokenRecord]) -> list[tuple[object, ...]]:
        """Tokens as rows, each secret sealed for its user and token id."""
        return [
            (
                token.token_id,
                token.user,
                token.type,
                self._box.seal(token.secret, token_secret_aad(token.user, token.token_id)),
                token.digits,
                token.algorithm,
                token.period,
                token.created_at,
                token.last_step,
                token.description,
                token.drift,
            )
            for token in tokens
        ]

    def add_tokens(self, tokens: Sequence[TokenRecord]) -> list[TokenRecord]:
        what = f"adding {len(tokens)} token(s)"
        pairs = sorted({(t.user, t.type) for t in tokens})

        def work(tx: Transaction) -> list[TokenRecord]:
            # Secrets are sealed with random nonces: they are compared opened, with every
            # user of the batch locked, so a concurrent import cannot add one meanwhile.
            tx.lock(*[("tokens", user) for user, _ in pairs])
            mine = [
                self._token_from_row(row)
                for user, type_ in pairs
                for row in tx.all(SELECT_USER_TYPE_TOKENS, (user, type_))
            ]
            new, skipped = split_known_secrets(mine, tokens)
            if new:
                tx.many(INSERT_TOKEN, self._token_rows(new))
            return skipped

        return self._inserting(what, work, f"{what}: a token id already exists")

    def change_tokens(
        self,
        change: TokenChange,
        judge: Callable[[list[TokenRecord], list[TokenRecord]], object | None],
    ) -> TokenChanged:
        user = change.user
        rows = self._token_rows(change.add)
        what = f"changing the tokens of {user!r}"

        def work(tx: Transaction) -> TokenChanged:
            # The user's changes take turns (the same lock as add_tokens and replace_tokens),
            # so the judge sees a set no one else changes until this one commits.
            tx.lock(("tokens", user))
            mine = self._user_tokens(tx, user)
            doomed = [
                t for t in mine if t.token_id in change.remove_ids or t.type in change.remove_types
            ]
            refusal = judge(mine, doomed)
            if refusal is not None:
                return TokenChanged(refusal)
            kept = [t for t in mine if t not in doomed]
            if split_known_secrets(kept, change.add)[1]:
                return TokenChanged(KNOWN_SECRET)
            if change.link is not None and not tx.rowcount(
                SPEND_LINK, {"now": change.now, "link": change.link, "user": user}
            ):
                return TokenChanged(LINK_GONE)
            for token in doomed:
                tx.execute(DELETE_TOKEN, (user, token.token_id))
            if rows:
                tx.many(INSERT_TOKEN, rows)
            return TokenChanged(None, tuple(doomed))

        return self._inserting(what, work, f"{what}: a token id already exists")

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        if user is None:
            rows = self._engine.read("listing tokens", SELECT_ALL_TOKENS)
        else:
            rows = self._engine.read("listing tokens", SELECT_USER_TOKENS, (user,))
        return [self._token_from_row(row) for row in rows]

    def _user_tokens(self, tx: Transaction, user: str) -> list[TokenRecord]:
        """``user``'s tokens, read inside ``tx`` (as :meth:`list_tokens` orders them)."""
        return [self._token_from_row(row) for row in tx.all(SELECT_USER_TOKENS, (user,))]

    def _token_from_row(self, row: Row) -> TokenRecord:
        token_id, user, blob = row[0], row[1], row[3]
        sealed = bytes(blob)
        secret = self._opened.get((token_id, user, sealed))
        if secret is None:
            try:
                secret = self._box.open(sealed, token_secret_aad(user, token_id))
            except SecretBoxError as e:
                raise StoreError(
                    f"cannot decrypt the secret of token {token_id!r} of user {user!r} in "
                    f"{self._engine.name}: {e}"
                ) from e
            if len(self._opened) >= _MAX_OPENED:
                with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # other threads
                    del self._opened[next(iter(self._opened))]  # the oldest insertion
            self._opened[(token_id, user, sealed)] = secret
        return token_record(row, secret)

    def remove_tokens(self, user: str, token_id: str | None = None) -> int:
        what = f"removing tokens of {user!r}"
        if token_id is None:
            return self._engine.write(what, DELETE_USER_TOKENS, (user,))
        return self._engine.write(what, DELETE_TOKEN, (user, token_id))

    def advance_step(self, token_id: str, step: int, drift: int | None = None) -> bool:
        # Retrying it after a lost connection can only answer False (fail closed), never
        # accept twice.
        what = f"advancing the step of token {token_id!r}"
        return self._engine.write(what, ADVANCE_STEP, (step, drift, token_id, step)) == 1

    def replace_tokens(self, user: str, type: str, tokens: Sequence[TokenRecord]) -> int:
        rows = self._token_rows(tokens)
        what = f"replacing the {type} tokens of {user!r}"

        def work(tx: Transaction) -> int:
            tx.lock(("tokens", user))
            removed = tx.rowcount(DELETE_USER_TYPE_TOKENS, (user, type))
            if rows:
                tx.many(INSERT_TOKEN, rows)
            return removed

        return self._inserting(what, work, f"{what}: a token id already exists")
