"""The second-factor contract.

A factor verifies a submitted code against one stored token and says which step (time step or
counter) it matched. It is pure: the pipeline makes the match stick with the store's atomic
``advance_step``, which is what refuses replays across threads, processes and daemons.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from radmfa.store.base import TokenRecord


class MatchKind(enum.Enum):
    MATCH = "match"
    #: The code is right for a step that was already used.
    REPLAY = "replay"
    NO_MATCH = "no_match"


@dataclass(frozen=True, slots=True)
class CodeMatch:
    kind: MatchKind
    step: int | None = None


NO_MATCH = CodeMatch(MatchKind.NO_MATCH)


class SecondFactor(Protocol):
    #: The token type this factor verifies ("totp", ...).
    type: str

    def code_lengths(self, token: TokenRecord) -> tuple[int, ...]:
        """How many characters a code for this token has (for splitting appended codes)."""
        ...

    def verify(self, token: TokenRecord, code: str, now: float) -> CodeMatch: ...


class FactorRegistry:
    """Maps token types to factors; a new factor registers here, the pipeline does not change."""

    def __init__(self, factors: list[SecondFactor]) -> None:
        self._by_type = {f.type: f for f in factors}

    def get(self, token_type: str) -> SecondFactor | None:
        return self._by_type.get(token_type)

    def verify(
        self, tokens: list[TokenRecord], code: str, now: float
    ) -> tuple[TokenRecord | None, CodeMatch]:
        """First token the code matches; a replayed match is reported only if nothing matches."""
        replay: tuple[TokenRecord, CodeMatch] | None = None
        for token in tokens:
            factor = self.get(token.type)
            if factor is None:
                continue
            match = factor.verify(token, code, now)
            if match.kind is MatchKind.MATCH:
                return token, match
            if match.kind is MatchKind.REPLAY and replay is None:
                replay = (token, match)
        if replay is not None:
            return replay
        return None, NO_MATCH

    def code_lengths(self, tokens: list[TokenRecord]) -> list[int]:
        lengths: set[int] = set()
        for token in tokens:
            factor = self.get(token.type)
            if factor is not None:
                lengths.update(factor.code_lengths(token))
        return sorted(lengths, reverse=True)
