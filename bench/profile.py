"""Where one login's CPU goes: radmfa (one process) under cProfile at a fixed, moderate load.

    .venv/bin/python -m bench.profile                      # search-then-bind, 500/s
    .venv/bin/python -m bench.profile --rate 1000 --top 40 --mode cached

It starts slapd with the benchmark's users, enrolls their TOTP tokens, starts ``radmfa serve``
(one worker) under ``python -m cProfile``, sends unmeasured warm-up logins, then ``--requests``
valid logins at ``--rate`` per second, stops the daemon (cProfile writes its file on the clean
exit) and prints the functions with the most own time, in microseconds per login. The
profile covers the whole run (start-up and warm-up too), so the per-login figures are upper
bounds; compare two trees with the same settings rather than reading absolute numbers.
cProfile slows Python code down about twofold: the shares matter, not the totals.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
import time
from pathlib import Path

from bench.run import (
    MODES,
    CodeBook,
    RadmfaServer,
    attempts_for,
    make_bench_users,
    measure,
    users_ldif,
)
from tests.support.daemon import READY_LINE, deadline_poll
from tests.support.slapd import Slapd


class ProfiledServer(RadmfaServer):
    """A benchmark radmfa whose one process runs under cProfile, writing ``profile_path``."""

    profile_path: Path

    def start(self) -> None:
        import subprocess

        self.profile_path = self.workdir / "radmfa.prof"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cProfile", "-o", str(self.profile_path),
                 "-m", "radmfa", "-c", str(self.config_path), "serve"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        deadline_poll(
            lambda: READY_LINE in self.log_path.read_text(errors="replace"), 60, what="ready"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--mode", choices=MODES, default="search")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--save", type=Path, help="keep the profile file here")
    args = parser.parse_args(argv)

    users = make_bench_users(args.users)
    with tempfile.TemporaryDirectory(prefix="radmfa-profile-") as tmp_name:
        tmp = Path(tmp_name)
        slapd = Slapd(tmp / "slapd", debug="0")
        slapd.add_ldif(users_ldif(users))
        slapd.start()
        server = ProfiledServer(tmp / "radmfa", slapd, users, mode=args.mode, workers=1)
        try:
            server.enroll()
            server.start()
            book = CodeBook(users)
            measure(server, slapd, attempts_for(book, args.warmup), 16, "warmup")
            row = measure(
                server, slapd, attempts_for(book, args.requests, rate=args.rate), 0, "p", args.rate
            )
            print(
                f"{row.answers_per_s:.0f}/s p50 {row.p50_ms:.2f} p99 {row.p99_ms:.1f} ms "
                f"cpu/1k {row.cpu_s_per_1000:.3f} (under cProfile) lost {row.lost} "
                f"bad {row.unexpected}"
            )
        finally:
            server.stop()
            slapd.kill()
        time.sleep(0.2)
        logins = args.requests + args.warmup
        stats = pstats.Stats(str(server.profile_path))
        if args.save is not None:
            stats.dump_stats(str(args.save))
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"profiled CPU {total:.2f} s, {total / logins * 1e6:.0f} us per login (all logins)")
        print(f"{'own us/login':>12} {'cum us/login':>12} {'calls/login':>11}  function")
        entries = stats.stats  # type: ignore[attr-defined]
        ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)
        for (file, line, name), (_cc, calls, tt, ct, _callers) in ranked[: args.top]:
            where = f"{Path(file).name}:{line}" if line else file
            print(
                f"{tt / logins * 1e6:12.1f} {ct / logins * 1e6:12.1f} {calls / logins:11.2f}  "
                f"{name} ({where})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
