"""Side-by-side benchmark: radmfa and FreeRADIUS 3.2 on the same slapd, in one run.

    .venv/bin/python -m bench.run                 # the full table (a few minutes)
    .venv/bin/python -m bench.run --quick         # a smoke run

It loads slapd with N users (indexed on objectClass and uid), enrolls a TOTP token for every
user in radmfa through ``radmfa token import`` (FreeRADIUS reads the same secret from the
user's ``description``), then drives each server in turn with the same load generator at
several concurrency levels. Every accepted request carries a fresh valid code, so every
request does the full work: LDAP search, LDAP bind as the user, TOTP check (and for radmfa the
replay-safe store update and the decision log line).

A radmfa server named ``radmfa-MODE-pg`` keeps its store in PostgreSQL instead of SQLite: one
throwaway cluster for the run (``bench/pgstore.py``), a database each, and the cluster's CPU
per 1,000 logins in the table next to slapd's. ``radmfa-MODE-pgN`` is N radmfa processes
(nodes: own ports, one database, one key file) sharing the load: the load generator's sockets
take turns between their ports, and the row is their combined throughput and CPU.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import yaml

from bench.loadgen import Address, Attempt, LoadResult, run_load, run_rate
from bench.pgstore import BenchDatabase, BenchPostgres
from bench.procstat import peak_rss_mb, total_cpu_seconds
from tests.support.daemon import READY_LINE, deadline_poll
from tests.support.ports import free_port
from tests.support.processes import terminate
from tests.support.slapd import (
    PEOPLE_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    ldif_entry,
    ssha,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-shared-secret-0123456789"
#: ``ldap.user_cache`` of the radmfa-cached server (search-then-bind with the entry cache).
USER_CACHE = "5m"
#: FreeRADIUS batches start with at least this long left in the step (rows take 1-3 s).
FR_MIN_LEFT = 8.0
#: Warm-up logins sent per batch (a few seconds at FreeRADIUS's speed).
WARMUP_CHUNK = 10_000
STEP = 30
#: radmfa's LDAP modes (``ldap`` section shapes) the benchmark knows.
MODES = ("search", "cached", "direct")
#: Most radmfa nodes one row may run (each is a whole process competing for the cores).
MAX_NODES = 8


@dataclass
class BenchUser:
    uid: str
    password: str
    totp_secret: str  # base32


def make_bench_users(count: int, seed: int = 7) -> list[BenchUser]:
    rng = random.Random(seed)
    return [
        BenchUser(
            f"bench{i:06d}",
            f"Pw-{i:06d}-{rng.randrange(10**8):08d}",
            base64.b32encode(rng.randbytes(20)).decode(),
        )
        for i in range(count)
    ]


def users_ldif(users: list[BenchUser]) -> str:
    parts = []
    for u in users:
        parts.append(
            ldif_entry(
                f"uid={u.uid},{PEOPLE_DN}",
                [
                    ("objectClass", "inetOrgPerson"),
                    ("uid", u.uid),
                    ("cn", u.uid),
                    ("sn", u.uid),
                    ("userPassword", ssha(u.password)),
                    ("description", u.totp_secret),
                ],
            )
        )
    return "".join(parts)


class CodeBook:
    """Hands out (user, code) pairs no server has seen: each user's steps only move forward.

    A code for the current step or the next one is valid at every server in this run (both
    accept one step of skew); when every user has used both, we wait for the next step.
    """

    def __init__(self, users: list[BenchUser], lookahead: int = 1, min_left: float = 0.0) -> None:
        self.users = users
        self.lookahead = lookahead
        #: Seconds a batch needs before the step ends: a server that accepts the current step
        #: only would reject codes that arrive after the step turned over.
        self.min_left = min_left
        self.totps = {u.uid: pyotp.TOTP(u.totp_secret) for u in users}
        self.next_step = {u.uid: 0 for u in users}
        self.cursor = 0

    def seconds_needed(self, count: int, rate: float | None = None) -> float:
        """How long a batch needs left in the step: ``min_left``, or at ``rate`` requests/s
        the time to send it and a second more (a step is the most there is)."""
        if not self.min_left:
            return 0.0
        needed = self.min_left if rate is None else max(self.min_left, count / rate + 1.0)
        return min(needed, STEP - 1.0)

    def take(self, count: int, rate: float | None = None) -> Iterator[tuple[BenchUser, str]]:
        """``count`` fresh codes; ``rate``: the batch goes out at that many per second (open
        loop), so a book with ``min_left`` waits until the whole batch fits in the step."""
        if self.min_left:
            self._wait_for_room(count, self.seconds_needed(count, rate))
        given = 0
        while given < count:
            now_step = int(time.time()) // STEP
            progressed = False
            for _ in range(len(self.users)):
                user = self.users[self.cursor]
                self.cursor = (self.cursor + 1) % len(self.users)
                step = max(self.next_step[user.uid], now_step)
                if step > now_step + self.lookahead:
                    continue
                self.next_step[user.uid] = step + 1
                yield user, self.totps[user.uid].at(step * STEP)
                given += 1
                progressed = True
                if given >= count:
                    return
            if not progressed:
                wait = STEP - time.time() % STEP + 0.05
                print(f"  (every user used its codes; waiting {wait:.0f}s for the next step)")
                time.sleep(wait)

    def _wait_for_room(self, count: int, min_left: float) -> None:
        """Until this step has ``count`` unused codes and ``min_left`` seconds to run, so a
        whole batch is sent within one step."""
        if count > len(self.users) * (self.lookahead + 1):
            return
        while True:
            now = time.time()
            step, left = int(now) // STEP, STEP - now % STEP
            last = step + self.lookahead
            fresh = sum(1 for u in self.users if self.next_step[u.uid] <= last)
            if left >= min_left and fresh >= count:
                return
            print(f"  (waiting {left:.0f}s for a fresh step)")
            time.sleep(left + 0.05)


def attempts_for(
    book: CodeBook, count: int, *, wrong_share: float = 0.0, rate: float | None = None
) -> list[Attempt]:
    rng = random.Random(count)
    attempts = []
    for user, code in book.take(count, rate):
        roll = rng.random()
        if roll < wrong_share / 2:
            bad = f"{(int(code) + 1) % 10**6:06d}"
            attempts.append(Attempt(user.uid, user.password + bad, "reject"))
        elif roll < wrong_share:
            attempts.append(Attempt(user.uid, "x" + user.password + code, "reject"))
        else:
            attempts.append(Attempt(user.uid, user.password + code, "accept"))
    return attempts


# -- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """What a ``--servers`` name asks for."""

    name: str
    kind: str  # "freeradius" | "radmfa"
    mode: str = ""
    engine: str = "sqlite"
    nodes: int = 1


def parse_server(name: str) -> ServerSpec:
    """``freeradius`` or ``radmfa-MODE[-pg[N]]`` -> ServerSpec (ValueError says what is wrong).

    ``-pg`` keeps the store in PostgreSQL; ``-pgN``: N nodes on that one database."""
    if name == "freeradius":
        return ServerSpec(name, "freeradius")
    expected = f"{name!r}: expected freeradius or radmfa-MODE[-pg[N]], MODE one of " + ", ".join(
        MODES
    )
    rest = name.removeprefix("radmfa-")
    if rest == name:
        raise ValueError(expected)
    mode, sep, store = rest.partition("-")
    if mode not in MODES:
        raise ValueError(expected)
    if not sep:
        return ServerSpec(name, "radmfa", mode)
    count = store.removeprefix("pg")
    if count == store or not (count == "" or (count.isascii() and count.isdigit())):
        raise ValueError(expected)
    nodes = int(count) if count else 1
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"{name!r}: 1 to {MAX_NODES} nodes")
    return ServerSpec(name, "radmfa", mode, "postgresql", nodes)


def apply_overrides(config: dict[str, Any], overrides: Mapping[str, object]) -> None:
    """Set dotted keys (``audit.flush_interval``) in a config dict, creating sections."""
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value


class RadmfaServer:
    """A radmfa daemon for the benchmark. ``overrides``: dotted config keys set on top of the
    mode's config; ``source``: a ``daemon/`` directory to run instead of the installed
    package (another revision, for A/B runs); ``database``: the store in that PostgreSQL
    database instead of a SQLite file in ``workdir``."""

    label = "radmfa"

    def __init__(
        self,
        workdir: Path,
        slapd: Slapd,
        users: list[BenchUser],
        *,
        mode: str,
        workers: int,
        label: str | None = None,
        overrides: Mapping[str, object] | None = None,
        source: Path | None = None,
        database: BenchDatabase | None = None,
    ) -> None:
        self.workdir = workdir
        self.database = database
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("udp")
        self.mode = mode
        self.workers = workers
        self.label = label or f"radmfa-{mode}-w{workers}"
        self.env = dict(os.environ)
        if source is not None:  # the supervisor's workers inherit it too
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(source), self.env.get("PYTHONPATH", "")) if p
            )
        ldap: dict[str, object] = {"servers": [slapd.url], "timeout": 3}
        if mode == "direct":
            ldap["user_dn"] = f"uid={{username}},{PEOPLE_DN}"
        else:
            ldap.update(
                base_dn=PEOPLE_DN,
                user_filter="(uid={username})",
                bind_dn=SERVICE_DN,
                bind_password=SERVICE_PASSWORD,
            )
        if mode == "cached":  # search-then-bind, a repeat login skips the search
            ldap["user_cache"] = USER_CACHE
        config: dict[str, object] = {
            "listen": [f"127.0.0.1:{self.port}"],
            "clients": [{"name": "bench", "address": "127.0.0.1/32", "secret": SECRET}],
            "ldap": ldap,
            "store": database.store_section()
            if database is not None
            else {
                "path": str(workdir / "radmfa.sqlite3"),
                "key_file": str(workdir / "secret.key"),
            },
            "otp": {"mode": "append"},
            "lockout": {"max_failures": 10, "duration": "1m"},
        }
        if workers > 1:
            config["radius"] = {"workers": workers}
        apply_overrides(config, overrides or {})
        self.config_path = workdir / "radmfa.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "radmfa.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.users = users

    def enroll(self) -> float:
        csv = self.workdir / "tokens.csv"
        csv.write_text(
            "user,type,secret,digits,algorithm,period\n"
            + "".join(f"{u.uid},totp,{u.totp_secret},6,SHA1,30\n" for u in self.users)
        )
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "radmfa", "-c", str(self.config_path), "token", "import",
             str(csv)],
            check=True, capture_output=True, env=self.env,
        )  # fmt: skip
        return time.perf_counter() - started

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "radmfa", "-c", str(self.config_path), "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline_poll(
            lambda: READY_LINE in self.log_path.read_text(errors="replace"),
            30,
            what=f"{self.label} ready",
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    @property
    def targets(self) -> list[Address]:
        return [("127.0.0.1", self.port)]

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 30)
            self.process = None


class RadmfaNodes:
    """Several radmfa processes (nodes) on one PostgreSQL database and one key file, measured
    as one service: the load is spread over their ports, their CPU and memory added up."""

    def __init__(
        self,
        workdir: Path,
        slapd: Slapd,
        users: list[BenchUser],
        database: BenchDatabase,
        *,
        nodes: int,
        mode: str,
        workers: int,
        label: str,
        overrides: Mapping[str, object] | None = None,
        source: Path | None = None,
    ) -> None:
        if nodes < 2:
            raise ValueError("RadmfaNodes is for two nodes or more; use RadmfaServer")
        self.label = label
        self.database = database
        self.nodes = [
            RadmfaServer(
                workdir / f"node{index}",
                slapd,
                users,
                mode=mode,
                workers=workers,
                label=f"{label}#{index}",
                overrides=overrides,
                source=source,
                database=database,
            )
            for index in range(1, nodes + 1)
        ]

    def enroll(self) -> float:
        """Tokens go into the shared database once, through the first node's config."""
        return self.nodes[0].enroll()

    def start(self) -> None:
        for node in self.nodes:  # the first creates the schema and the key check alone
            node.start()

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    @property
    def targets(self) -> list[Address]:
        return [target for node in self.nodes for target in node.targets]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class FreeRadius:
    def __init__(self, workdir: Path, slapd: Slapd) -> None:
        from bench.freeradius_server import FreeRadiusServer

        self.port = free_port("udp")
        self.label = "freeradius"
        self.database: BenchDatabase | None = None
        self.server = FreeRadiusServer(
            workdir,
            port=self.port,
            secret=SECRET,
            ldap_url=slapd.url,
            base_dn=PEOPLE_DN,
            bind_dn=SERVICE_DN,
            bind_password=SERVICE_PASSWORD,
        )

    def start(self) -> None:
        self.server.start()

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    @property
    def targets(self) -> list[Address]:
        return [("127.0.0.1", self.port)]

    def stop(self) -> None:
        self.server.stop()


Server = RadmfaServer | RadmfaNodes | FreeRadius


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Row:
    server: str
    scenario: str
    concurrency: int
    requests: int
    accepts_per_s: float
    answers_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    lost: int
    unexpected: int
    cpu_s_per_1000: float
    slapd_cpu_s_per_1000: float
    peak_rss_mb: float
    #: The PostgreSQL cluster's CPU (servers with their store there; None for the others).
    db_cpu_s_per_1000: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def measure(
    server: Server,
    slapd: Slapd,
    attempts: list[Attempt],
    concurrency: int,
    scenario: str,
    rate: float | None = None,
) -> Row:
    """One row. With ``rate``: open loop at that many requests/s (``concurrency`` is 0).
    The server's CPU and memory are its processes' (every node's); its database's CPU is
    counted when it has one."""
    assert slapd.pid is not None
    database = server.database
    cpu0, scpu0 = total_cpu_seconds(server.pids), total_cpu_seconds([slapd.pid])
    dcpu0 = database.cpu_seconds() if database is not None else 0.0
    result: LoadResult = (
        run_rate(server.targets, SECRET.encode(), attempts, rate)
        if rate is not None
        else run_load(server.targets, SECRET.encode(), attempts, concurrency)
    )
    cpu1, scpu1 = total_cpu_seconds(server.pids), total_cpu_seconds([slapd.pid])
    dcpu1 = database.cpu_seconds() if database is not None else 0.0
    n = max(1, result.answered)
    return Row(
        server=server.label,
        scenario=scenario,
        concurrency=concurrency,
        requests=result.sent,
        accepts_per_s=round(result.accepts_per_second, 1),
        answers_per_s=round(result.answers_per_second, 1),
        p50_ms=round(result.percentile(50) * 1000, 2),
        p95_ms=round(result.percentile(95) * 1000, 2),
        p99_ms=round(result.percentile(99) * 1000, 2),
        lost=result.lost,
        unexpected=result.unexpected,
        cpu_s_per_1000=round((cpu1 - cpu0) / n * 1000, 3),
        slapd_cpu_s_per_1000=round((scpu1 - scpu0) / n * 1000, 3),
        peak_rss_mb=round(sum(peak_rss_mb(pid) for pid in server.pids), 1),
        db_cpu_s_per_1000=round((dcpu1 - dcpu0) / n * 1000, 3) if database is not None else None,
    )


def _cell(value: float | None, width: int) -> str:
    return f"{value:>{width}.3f}" if value is not None else f"{'':>{width}}"


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'server':<22} {'users':>6} {'scenario':<8} {'conc':>4} {'req':>6} {'acc/s':>8} "
        f"{'p50ms':>7} {'p95ms':>7} {'p99ms':>8} {'lost':>4} {'bad':>4} {'cpu/1k':>7} "
        f"{'slapd/1k':>8} {'pg/1k':>7} "
        f"{'rssMB':>6} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    reference = {
        (r.extra.get("users"), r.scenario, r.concurrency): r
        for r in rows
        if r.server == "freeradius"
    }
    for r in rows:
        ref = reference.get((r.extra.get("users"), r.scenario, r.concurrency))
        ratio = (
            f"{r.answers_per_s / ref.answers_per_s:.2f}"
            if ref and ref.answers_per_s and r.server != "freeradius"
            else ""
        )
        print(
            f"{r.server:<22} {r.extra.get('users', ''):>6} {r.scenario:<8} {r.concurrency:>4} "
            f"{r.requests:>6} "
            f"{r.accepts_per_s:>8.0f} {r.p50_ms:>7.2f} {r.p95_ms:>7.2f} {r.p99_ms:>8.2f} "
            f"{r.lost:>4} {r.unexpected:>4} {r.cpu_s_per_1000:>7.3f} "
            f"{r.slapd_cpu_s_per_1000:>8.3f} {_cell(r.db_cpu_s_per_1000, 7)} "
            f"{r.peak_rss_mb:>6.1f} {ratio:>6}"
        )


def _middle(rows: list[Row], name: str, digits: int) -> float:
    return round(statistics.median(getattr(r, name) for r in rows), digits)


def medians(rows: list[Row]) -> list[dict[str, Any]]:
    """One line per (users, server, scenario, concurrency) over the rounds: medians of the
    rates, latencies and CPU, lost and unexpected answers summed, and the throughput's ratio
    to FreeRADIUS's median in the same scenario (when it ran)."""
    groups: dict[tuple[object, str, str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.extra.get("users"), r.server, r.scenario, r.concurrency), []).append(r)
    lines = []
    for (users, server, scenario, concurrency), mine in groups.items():
        db = [r.db_cpu_s_per_1000 for r in mine if r.db_cpu_s_per_1000 is not None]
        lines.append(
            {
                "users": users,
                "server": server,
                "scenario": scenario,
                "concurrency": concurrency,
                "rounds": len(mine),
                "answers_per_s": _middle(mine, "answers_per_s", 1),
                "p50_ms": _middle(mine, "p50_ms", 2),
                "p99_ms": _middle(mine, "p99_ms", 2),
                "cpu_s_per_1000": _middle(mine, "cpu_s_per_1000", 3),
                "slapd_cpu_s_per_1000": _middle(mine, "slapd_cpu_s_per_1000", 3),
                "db_cpu_s_per_1000": round(statistics.median(db), 3) if db else None,
                "lost": sum(r.lost for r in mine),
                "unexpected": sum(r.unexpected for r in mine),
            }
        )
    reference = {
        (line["users"], line["scenario"], line["concurrency"]): line["answers_per_s"]
        for line in lines
        if line["server"] == "freeradius"
    }
    for line in lines:
        ref = reference.get((line["users"], line["scenario"], line["concurrency"]))
        line["ratio"] = round(line["answers_per_s"] / ref, 3) if ref else None
    return lines


def print_medians(lines: list[dict[str, Any]]) -> None:
    print(f"\nmedians over {max(line['rounds'] for line in lines)} rounds:")
    for m in lines:
        ratio = f"{m['ratio']:.2f}" if m["ratio"] is not None else ""
        print(
            f"  {m['server']:<22} {m['scenario']:<8} c={m['concurrency']:<4} "
            f"{m['answers_per_s']:8.0f}/s p50 {m['p50_ms']:6.2f} p99 {m['p99_ms']:7.2f} ms "
            f"cpu/1k {m['cpu_s_per_1000']:.3f} slapd/1k {m['slapd_cpu_s_per_1000']:.3f} "
            f"pg/1k {_cell(m['db_cpu_s_per_1000'], 5)} lost {m['lost']} {ratio}"
        )


def warm_up(server: Server, slapd: Slapd, book: CodeBook, n_users: int) -> None:
    """One login per user, not measured: slapd's entry cache and radmfa's user cache start
    warm, as on a server that has been running. In chunks: a server that takes the current
    step only must get each chunk's codes within one step."""
    for start in range(0, n_users, WARMUP_CHUNK):
        count = min(WARMUP_CHUNK, n_users - start)
        row = measure(server, slapd, attempts_for(book, count), 64, "warmup")
        print(
            f"  {row.server:<22} warm-up: {count} logins, {row.answers_per_s:.0f}/s, "
            f"lost {row.lost}, unexpected {row.unexpected}",
            flush=True,
        )


def build_servers(
    tmp: Path,
    slapd: Slapd,
    users: list[BenchUser],
    specs: list[ServerSpec],
    workers: list[int],
    postgres: BenchPostgres | None,
) -> list[Server]:
    """The servers the specs ask for (radmfa once per worker count), tokens enrolled."""
    servers: list[Server] = []
    for spec in specs:
        if spec.kind == "freeradius":
            servers.append(FreeRadius(tmp / "freeradius", slapd))
            continue
        for count in workers:
            label = f"{spec.name}-w{count}"
            database = None
            if spec.engine == "postgresql":
                assert postgres is not None, "run_one_size starts PostgreSQL for these"
                database = postgres.database()
            server: Server
            if spec.nodes > 1:
                assert database is not None
                server = RadmfaNodes(
                    tmp / label, slapd, users, database, nodes=spec.nodes, mode=spec.mode,
                    workers=count, label=label,
                )  # fmt: skip
            else:
                server = RadmfaServer(
                    tmp / label, slapd, users, mode=spec.mode, workers=count, label=label,
                    database=database,
                )  # fmt: skip
            took = server.enroll()
            print(f"{server.label}: imported {len(users)} tokens in {took:.1f}s", flush=True)
            servers.append(server)
    return servers


def run_one_size(
    tmp: Path, n_users: int, specs: list[ServerSpec], workers: list[int], levels: list[int], args
) -> list[Row]:
    """Everything for one directory size: slapd, PostgreSQL when a server keeps its store
    there, enrolment, servers, every scenario ``args.rounds`` times, rows alternating."""
    rows: list[Row] = []
    users = make_bench_users(n_users)
    slapd = Slapd(tmp / "slapd", debug="0")
    started = time.perf_counter()
    slapd.add_ldif(users_ldif(users))
    slapd.start()
    print(f"slapd: {n_users} users loaded in {time.perf_counter() - started:.1f}s")
    postgres: BenchPostgres | None = None
    servers: list[Server] = []
    try:
        if any(spec.engine == "postgresql" for spec in specs):
            postgres = BenchPostgres(tmp / "postgres")
            print(f"postgres: pid {postgres.pid}, port {postgres.server.port}")
        servers = build_servers(tmp, slapd, users, specs, workers, postgres)
        # rlm_totp 3.2.1 accepts the current step only; radmfa one step either way.
        books = {
            s.label: CodeBook(users, lookahead=0, min_left=FR_MIN_LEFT)
            if s.label == "freeradius"
            else CodeBook(users)
            for s in servers
        }
        for server in servers:
            server.start()
        if args.warmup:
            for server in servers:
                warm_up(server, slapd, books[server.label], n_users)
        scenarios: list[tuple[str, int, float, float | None]] = [
            ("valid", level, 0.0, None) for level in levels
        ]
        if args.mix:
            scenarios.append(("mix20", 64, 0.2, None))
        for rate in args.rates:
            scenarios.append((f"rate{rate:g}", 0, 0.0, rate))
        for round_number in range(1, args.rounds + 1):
            for scenario, level, wrong, rate in scenarios:
                count = args.requests if level != 1 else max(100, args.requests // 6)
                for server in servers:  # alternate servers row by row
                    book = books[server.label]
                    attempts = attempts_for(book, count, wrong_share=wrong, rate=rate)
                    row = measure(server, slapd, attempts, level, scenario, rate)
                    row.extra["users"] = n_users
                    row.extra["round"] = round_number
                    rows.append(row)
                    pg = (
                        f" pg/1k {row.db_cpu_s_per_1000:.3f}"
                        if row.db_cpu_s_per_1000 is not None
                        else ""
                    )
                    print(
                        f"  r{round_number} {row.server:<22} {scenario:<8} c={level:<4} "
                        f"{row.answers_per_s:8.0f}/s p50 {row.p50_ms:.2f} p99 {row.p99_ms:.1f} ms "
                        f"cpu/1k {row.cpu_s_per_1000:.3f}{pg} lost {row.lost} "
                        f"bad {row.unexpected}",
                        flush=True,
                    )
    finally:
        for server in servers:
            server.stop()
        slapd.kill()
        if postgres is not None:
            postgres.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="10000", help="comma list: one run per size")
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--requests", type=int, default=3000, help="per row (c=1: a sixth)")
    parser.add_argument(
        "--servers",
        default="freeradius,radmfa-search,radmfa-cached,radmfa-direct",
        help="comma list of freeradius, radmfa-search, radmfa-cached (search-then-bind with "
        f"ldap.user_cache: {USER_CACHE}), radmfa-direct; a radmfa name ending in -pg keeps "
        "the store in PostgreSQL (a throwaway cluster), in -pgN runs N nodes on that database "
        "(radmfa-search-pg2)",
    )
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one unmeasured login per user and server first (default on)",
    )
    parser.add_argument("--workers", default="1", help="comma list of radmfa worker counts")
    parser.add_argument("--mix", action="store_true", default=True)
    parser.add_argument("--no-mix", dest="mix", action="store_false")
    parser.add_argument(
        "--rate",
        dest="rates",
        type=float,
        action="append",
        default=[],
        help="also an open-loop row at this many requests/s (repeatable): same offered load",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="every scenario this many times, servers alternating; medians printed and saved",
    )
    parser.add_argument("--quick", action="store_true", help="1,000 users, 600 requests, c=1,64")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.requests, args.concurrency = "1000", 600, "1,64"
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    levels = [int(c) for c in args.concurrency.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    try:
        specs = [parse_server(name) for name in args.servers.split(",")]
    except ValueError as e:
        parser.error(str(e))
    sizes = [int(n) for n in args.users.split(",")]

    rows: list[Row] = []
    for n_users in sizes:
        with tempfile.TemporaryDirectory(prefix="radmfa-bench-") as tmp_name:
            rows += run_one_size(Path(tmp_name), n_users, specs, workers, levels, args)

    print()
    print_table(rows)
    summary = medians(rows)
    if args.rounds > 1:
        print_medians(summary)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv[1:] if argv is None else argv,
        "users": sizes,
        "cpus": os.cpu_count(),
        "workers": workers,
        "rounds": args.rounds,
        "python": sys.version.split()[0],
    }
    payload = {"meta": meta, "medians": summary, "rows": [asdict(r) for r in rows]}
    args.json.write_text(json.dumps(payload, indent=1))
    print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
