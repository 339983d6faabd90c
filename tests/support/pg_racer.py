"""A process that races others for one piece of state in a shared PostgreSQL store.

``python -m tests.support.pg_racer OP`` (the DSN in ``$RADMFA_TEST_DSN``) opens a store, prints
``ready``, then for every ``go`` line on stdin does OP once for the next round and prints ``1``
when it won, ``0`` when it lost. Started several times, it is several radmfa processes (or
nodes) asking for the same thing at the same moment:

- ``step``: ``advance_step("t1", 1000 + round)``, the replay check of one code;
- ``attempt``: ``begin_attempt`` for user ``racer<round>`` with a judge that allows one
  attempt in flight;
- ``state``: ``take_challenge`` of the State ``bytes([round]) * 16``;
- ``first``: ``change_tokens`` adding a token of its own to user ``first<round>`` only while
  that user has none (a first enrolment, as a password-only portal session makes it).
"""

from __future__ import annotations

import os
import sys

from radmfa.store.base import LoginState, TokenChange, TokenRecord
from radmfa.store.crypto import SecretBox
from radmfa.store.postgres import PostgresStore

NOW = 1_800_000_000.0
KEY = bytes(range(32))


def one_at_a_time(state: LoginState) -> object | None:
    return "busy" if state.pending_user >= 1 else None


def main(op: str) -> int:
    store = PostgresStore(os.environ["RADMFA_TEST_DSN"], SecretBox(KEY), pool_size=2)
    try:
        print("ready", flush=True)
        for round_no, _ in enumerate(sys.stdin):
            if op == "step":
                won = store.advance_step("t1", 1000 + round_no)
            elif op == "attempt":
                attempt_id = f"{os.getpid()}-{round_no}".encode()
                won = store.begin_attempt(
                    attempt_id, f"racer{round_no}", NOW, one_at_a_time
                ).reserved
            elif op == "state":
                won = store.take_challenge(bytes([round_no]) * 16) is not None
            elif op == "first":
                user = f"first{round_no}"
                token = TokenRecord(
                    f"{os.getpid()}-{round_no}", user, "totp", os.urandom(20), 6, "SHA1", 30, NOW
                )
                won = store.change_tokens(
                    TokenChange(user, add=(token,)), lambda mine, _doomed: "has" if mine else None
                ).done
            else:
                raise SystemExit(f"unknown race {op!r}")
            print(int(won), flush=True)
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
