"""A/B runs of radmfa builds and settings: one slapd, variants measured in alternating rows.

    .venv/bin/python -m bench.ab base@HEAD~1:cached new:cached
    .venv/bin/python -m bench.ab on:cached off:cached:audit.enabled=false --rate 1500 --workers 2

A VARIANT is ``LABEL[@REV]:MODE[:KEY=VALUE;KEY=VALUE...]``: MODE is search, cached or direct
(as in ``bench.run``), the dotted KEY=VALUE pairs (YAML values) are set on top of that
mode's config, and ``@REV`` runs the variant from a git worktree of that revision instead of
this checkout (its supervisor and workers alike). A variant with ``store.engine=postgresql``
gets a database of its own in one throwaway PostgreSQL cluster started for the run (its dsn,
password file and key file filled in), and its rows count the cluster's CPU too:

    .venv/bin/python -m bench.ab sqlite:search pg:search:store.engine=postgresql

Every variant gets the same users and the same load; rows alternate variant by variant, so
slow drifts of a shared machine hit them all alike, and the summary gives each variant's
medians and their ratio to the first.

On a noisy machine one round proves nothing: run five or more and look at how often one
variant beats the other, not only at the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.pgstore import BenchPostgres
from bench.run import (
    MODES,
    ROOT,
    CodeBook,
    RadmfaServer,
    Row,
    attempts_for,
    make_bench_users,
    measure,
    users_ldif,
    warm_up,
)
from tests.support.slapd import Slapd


@dataclass(frozen=True)
class Variant:
    label: str
    mode: str
    overrides: dict[str, Any]
    revision: str | None = None


def parse_variant(text: str) -> Variant:
    """``LABEL[@REV]:MODE[:KEY=VALUE;...]`` -> Variant (ValueError says what is wrong)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0]:
        raise ValueError(f"{text!r}: expected LABEL[@REV]:MODE[:KEY=VALUE;...]")
    label, _, revision = parts[0].partition("@")
    mode = parts[1]
    if mode not in MODES:
        raise ValueError(f"{text!r}: mode must be one of {', '.join(MODES)}")
    overrides: dict[str, Any] = {}
    for item in filter(None, (parts[2] if len(parts) == 3 else "").split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{text!r}: {item!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return Variant(label or text, mode, overrides, revision or None)


def uses_postgres(variant: Variant) -> bool:
    """Whether the variant keeps its store in PostgreSQL (the engine name in any case, as
    the config reads it)."""
    return str(variant.overrides.get("store.engine", "")).lower() == "postgresql"


def checkout(revision: str, where: Path) -> Path:
    """A detached worktree of ``revision``; returns its ``daemon/`` directory."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(where), revision],
        check=True,
        capture_output=True,
    )
    return where / "daemon"


def remove_checkout(where: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
        check=False,
        capture_output=True,
    )


def summarize(variants: list[Variant], rows: dict[str, list[Row]]) -> list[dict[str, Any]]:
    """Medians per variant, and the ratio of its median throughput to the first variant's."""
    summary = []
    first = statistics.median(r.answers_per_s for r in rows[variants[0].label])
    for v in variants:
        mine = rows[v.label]
        rate = statistics.median(r.answers_per_s for r in mine)
        db = [r.db_cpu_s_per_1000 for r in mine if r.db_cpu_s_per_1000 is not None]
        summary.append(
            {
                "variant": v.label,
                "answers_per_s": round(rate, 1),
                "ratio": round(rate / first, 3) if first else None,
                "p50_ms": round(statistics.median(r.p50_ms for r in mine), 2),
                "p99_ms": round(statistics.median(r.p99_ms for r in mine), 2),
                "cpu_s_per_1000": round(statistics.median(r.cpu_s_per_1000 for r in mine), 3),
                "db_cpu_s_per_1000": round(statistics.median(db), 3) if db else None,
                "lost": sum(r.lost for r in mine),
            }
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", metavar="VARIANT")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=9000, help="per row")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=64, help="closed loop (default)")
    load.add_argument("--rate", type=float, help="open loop at this many requests/s instead")
    parser.add_argument("--json", type=Path, help="write the rows and the summary here")
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(v) for v in args.variants]
    except ValueError as e:
        parser.error(str(e))
    if len({v.label for v in variants}) != len(variants):
        parser.error("variant labels must differ")

    rows: dict[str, list[Row]] = {v.label: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="radmfa-ab-") as tmp_name:
        tmp = Path(tmp_name)
        trees: list[Path] = []
        servers: list[RadmfaServer] = []
        users = make_bench_users(args.users)
        slapd = Slapd(tmp / "slapd", debug="0")
        slapd.add_ldif(users_ldif(users))
        slapd.start()
        postgres: BenchPostgres | None = None
        try:
            if any(uses_postgres(v) for v in variants):
                postgres = BenchPostgres(tmp / "postgres")
            for v in variants:
                source = None
                if v.revision is not None:
                    tree = tmp / f"tree-{len(trees)}"
                    source = checkout(v.revision, tree)
                    trees.append(tree)
                server = RadmfaServer(
                    tmp / f"v{len(servers)}",
                    slapd,
                    users,
                    mode=v.mode,
                    workers=args.workers,
                    label=v.label,
                    overrides=v.overrides,
                    source=source,
                    database=postgres.database()
                    if postgres is not None and uses_postgres(v)
                    else None,
                )
                server.enroll()
                server.start()
                servers.append(server)
            books = {s.label: CodeBook(users) for s in servers}
            for server in servers:
                warm_up(server, slapd, books[server.label], args.users)
            level = 0 if args.rate is not None else args.concurrency
            for round_number in range(1, args.rounds + 1):
                for server in servers:
                    attempts = attempts_for(books[server.label], args.requests)
                    row = measure(server, slapd, attempts, level, "ab", args.rate)
                    rows[server.label].append(row)
                    pg = (
                        f" pg/1k {row.db_cpu_s_per_1000:.3f}"
                        if row.db_cpu_s_per_1000 is not None
                        else ""
                    )
                    print(
                        f"  round {round_number} {row.server:<16} {row.answers_per_s:8.0f}/s "
                        f"p50 {row.p50_ms:6.2f} p99 {row.p99_ms:7.2f} ms "
                        f"cpu/1k {row.cpu_s_per_1000:.3f}{pg} lost {row.lost}",
                        flush=True,
                    )
        finally:
            for server in servers:
                server.stop()
            slapd.kill()
            if postgres is not None:
                postgres.stop()
            for tree in trees:
                remove_checkout(tree)

    summary = summarize(variants, rows)
    print(f"\nmedians of {args.rounds} rounds:")
    for s in summary:
        pg = f" pg/1k {s['db_cpu_s_per_1000']:.3f}" if s["db_cpu_s_per_1000"] is not None else ""
        print(
            f"  {s['variant']:<16} {s['answers_per_s']:8.0f}/s ({s['ratio']:.2f}) "
            f"p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} ms cpu/1k {s['cpu_s_per_1000']:.3f}"
            f"{pg} lost {s['lost']}"
        )
    if args.json is not None:
        meta = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "argv": sys.argv[1:] if argv is None else argv,
            "variants": [asdict(v) for v in variants],
        }
        every = [asdict(r) for v in variants for r in rows[v.label]]
        payload = {"meta": meta, "summary": summary, "rows": every}
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
