"""The store calls of every login, timed on their own: SQLite and PostgreSQL, two code trees.

    python -m bench.store_calls OLD_DAEMON_DIR NEW_DAEMON_DIR [--calls N] [--rounds R]

Each round runs every tree once per engine, alternating (old, new, old, new...), each in a
fresh process on a fresh store (a new SQLite file, a new database of one throwaway PostgreSQL
cluster: the tests' ``tests/support/postgres.py``), and prints the best of the rounds per
call group in microseconds per call. The groups are the hot path of a login: ``attempt``
(``begin_attempt`` then ``end_attempts`` of one success), ``advance_step`` (a new step each
time), ``login_state``, ``challenge`` (``put_challenge`` then ``take_challenge``) and
``audit`` (``append_audit`` of one row). Only public store API is used, so any tree that
has ``SqliteStore`` and ``PostgresStore`` can be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("attempt", "advance_step", "login_state", "challenge", "audit")

#: Run in a child process whose PYTHONPATH starts with the measured tree.
WORKER = r"""
import json, sys, time
from radmfa.store.base import AttemptEnd, AuditEvent, ChallengeRecord, TokenRecord
from radmfa.store.crypto import SecretBox

engine, where, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
box = SecretBox(bytes(range(32)))
if engine == "sqlite":
    from radmfa.store.sqlite import SqliteStore
    store = SqliteStore(where, box)
else:
    from radmfa.store.postgres import PostgresStore
    store = PostgresStore(where, box, pool_size=2)
NOW = 1_800_000_000.0
USERS = [f"user{i}" for i in range(100)]
store.add_tokens([TokenRecord(f"t-{u}", u, "totp", b"k" * 20, 6, "SHA1", 30, NOW) for u in USERS])
timings = {}

def timed(name, body):
    start = time.perf_counter()
    body()
    timings[name] = (time.perf_counter() - start) / calls * 1e6

def attempt():
    for i in range(calls):
        user = USERS[i % 100]
        attempt_id = i.to_bytes(16, "big")
        store.begin_attempt(
            attempt_id, user, NOW, lambda state: None,
            user_since=NOW - 600, source=f"source:10.0.{i % 7}.1", source_since=NOW - 600,
        )
        store.end_attempts([AttemptEnd(attempt_id, user, succeeded=True)], NOW)

def advance():
    for i in range(calls):
        store.advance_step(f"t-{USERS[i % 100]}", i)

def login_state():
    for i in range(calls):
        store.login_state(USERS[i % 100], NOW, user_since=NOW - 600,
                          source="source:10.0.0.1", source_since=NOW - 600)

def challenge():
    for i in range(calls):
        state = i.to_bytes(16, "big")
        store.put_challenge(ChallengeRecord(state, USERS[i % 100], "vpn", "192.0.2.1",
                                            NOW + 60, NOW), max_open=5)
        store.take_challenge(state)

def audit():
    for i in range(calls):
        store.append_audit([AuditEvent(NOW, "auth", USERS[i % 100], "ok", outcome="accept",
                                       client="vpn", src="192.0.2.1", latency_ms=1.0)])

for name, body in (("attempt", attempt), ("advance_step", advance),
                   ("login_state", login_state), ("challenge", challenge), ("audit", audit)):
    timed(name, body)
store.close()
print(json.dumps(timings))
"""


def run_once(tree: str, engine: str, where: str, calls: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, engine, where, str(calls)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree} on {engine} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the daemon/ directory of the tree measured first")
    parser.add_argument("new", help="the daemon/ directory of the tree measured second")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    engines = args.engines.split(",")
    best: dict[tuple[str, str], dict[str, float]] = {}
    cluster = None
    if "postgresql" in engines:
        from tests.support.postgres import Postgres

        cluster = Postgres()
        cluster.start()
    try:
        with tempfile.TemporaryDirectory(prefix="radmfa-bench-store-") as tmp:
            for round_ in range(args.rounds):
                for engine in engines:
                    for label, tree in (("old", args.old), ("new", args.new)):
                        if engine == "sqlite":
                            where = str(Path(tmp) / f"{label}-{round_}.sqlite3")
                        else:
                            assert cluster is not None
                            where = cluster.new_database()
                        got = run_once(tree, engine, where, args.calls)
                        mine = best.setdefault((engine, label), got)
                        for group, us in got.items():
                            mine[group] = min(mine[group], us)
                        print(f"round {round_ + 1} {engine} {label}: {json.dumps(got)}", flush=True)
    finally:
        if cluster is not None:
            cluster.cleanup()
    print(f"\nbest of {args.rounds}, microseconds per call ({args.calls} calls each)")
    print(f"{'engine':<11} {'group':<13} {'old':>9} {'new':>9} {'new/old':>8}")
    for engine in engines:
        for group in GROUPS:
            old = best[(engine, "old")][group]
            new = best[(engine, "new")][group]
            print(f"{engine:<11} {group:<13} {old:9.1f} {new:9.1f} {new / old:8.3f}")


if __name__ == "__main__":
    main()
