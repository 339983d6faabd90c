"""bench on PostgreSQL: server names parse strictly, a PostgreSQL server's config is one radmfa
accepts (no SQLite path, the password in a file), two nodes share one database and one key
file and split the load, rounds collapse into medians, and the cluster's CPU keeps what its
departed processes spent."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.ab import Variant, parse_variant, summarize, uses_postgres
from bench.loadgen import Attempt, run_load, run_rate, spread
from bench.pgstore import BenchDatabase
from bench.procstat import cpu_seconds, process_tree
from bench.run import (
    CodeBook,
    RadmfaNodes,
    RadmfaServer,
    Row,
    ServerSpec,
    make_bench_users,
    medians,
    parse_server,
)
from radmfa.config import load_config

# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("freeradius", ServerSpec("freeradius", "freeradius")),
        ("radmfa-search", ServerSpec("radmfa-search", "radmfa", "search")),
        ("radmfa-cached-pg", ServerSpec("radmfa-cached-pg", "radmfa", "cached", "postgresql")),
        ("radmfa-search-pg2", ServerSpec("radmfa-search-pg2", "radmfa", "search", "postgresql", 2)),
    ],
)
def test_a_server_name_gives_mode_engine_and_nodes(name, spec):
    assert parse_server(name) == spec


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("radmfa", "expected freeradius or radmfa-MODE"),
        ("radmfa-fast", "expected freeradius or radmfa-MODE"),
        ("radmfa-search-sqlite", "expected freeradius or radmfa-MODE"),
        ("radmfa-search-pgx", "expected freeradius or radmfa-MODE"),
        ("radmfa-search-pg-2", "expected freeradius or radmfa-MODE"),
        ("radmfa-search-pg\u00b2", "expected freeradius or radmfa-MODE"),  # not an ASCII digit
        ("radmfa-search-pg0", "1 to 8 nodes"),
        ("radmfa-search-pg99", "1 to 8 nodes"),
        ("freeradius-pg", "expected freeradius or radmfa-MODE"),
    ],
)
def test_a_malformed_server_name_says_what_is_wrong(name, problem):
    with pytest.raises(ValueError, match=problem):
        parse_server(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pg:search:store.engine=postgresql", True),
        ("pg:search:store.engine=PostgreSQL;store.pool_size=4", True),
        ("lite:search:store.engine=sqlite", False),
        ("plain:search", False),
    ],
)
def test_an_ab_variant_is_on_postgres_when_its_engine_override_says_so(text, expected):
    assert uses_postgres(parse_variant(text)) is expected


# -- the config a PostgreSQL server writes ------------------------------------------------------


class _NoSlapd:
    url = "ldap://127.0.0.1:1"


#: Only its url is read when a config is written.
NO_SLAPD: Any = _NoSlapd()


def _database(tmp_path: Path) -> BenchDatabase:
    password_file = tmp_path / "pg-password"
    password_file.write_text("s3cret-Pw\n")
    password_file.chmod(0o600)
    return BenchDatabase(
        None,  # type: ignore[arg-type]  # the cluster is only asked for its CPU
        "host=127.0.0.1 port=5999 dbname=bench1 user=radmfa_test sslmode=disable",
        password_file,
        tmp_path / "bench1.key",
    )


def test_a_postgres_server_writes_a_store_section_radmfa_accepts(tmp_path):
    database = _database(tmp_path)
    server = RadmfaServer(
        tmp_path / "w",
        NO_SLAPD,
        [],
        mode="search",
        workers=1,
        database=database,
    )
    store = yaml.safe_load(server.config_path.read_text())["store"]
    assert store == {
        "engine": "postgresql",
        "dsn": database.dsn,
        "password_file": str(database.password_file),
        "key_file": str(database.key_file),
    }
    assert "s3cret-Pw" not in server.config_path.read_text()
    config = load_config(server.config_path)  # a SQLite path here would be refused
    assert config.store.engine == "postgresql" and config.store.password == "s3cret-Pw"


def test_overrides_land_on_top_of_the_postgres_store_section(tmp_path):
    server = RadmfaServer(
        tmp_path / "w",
        NO_SLAPD,
        [],
        mode="search",
        workers=1,
        database=_database(tmp_path),
        overrides={"store.pool_size": 4},
    )
    assert load_config(server.config_path).store.pool_size == 4


def test_two_nodes_share_one_database_and_key_file_on_ports_of_their_own(tmp_path):
    database = _database(tmp_path)
    nodes = RadmfaNodes(
        tmp_path / "pair",
        NO_SLAPD,
        [],
        database,
        nodes=2,
        mode="search",
        workers=1,
        label="radmfa-search-pg2-w1",
    )
    stores = [yaml.safe_load(n.config_path.read_text())["store"] for n in nodes.nodes]
    assert stores[0] == stores[1] == database.store_section()
    ports = [port for _host, port in nodes.targets]
    assert len(set(ports)) == 2 and ports == [n.port for n in nodes.nodes]
    assert nodes.label == "radmfa-search-pg2-w1" and nodes.database is database
    with pytest.raises(ValueError, match="two nodes or more"):
        RadmfaNodes(
            tmp_path / "one", NO_SLAPD, [], database, nodes=1, mode="search", workers=1, label="x"
        )


# -- the load spread over nodes ----------------------------------------------------------------


def test_sockets_take_turns_between_targets():
    a, b = ("127.0.0.1", 1), ("127.0.0.1", 2)
    assert spread([a, b], 5) == [a, b, a, b, a]
    assert spread([a], 3) == [a, a, a]
    with pytest.raises(ValueError, match="at least one target"):
        spread([], 3)


class _Acceptor:
    """A UDP peer on loopback that answers every packet with an Access-Accept header and
    counts what it got (the load generator checks only code and identifier)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            self.received += 1
            self.sock.sendto(bytes([2, data[1]]) + bytes(18), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.mark.parametrize("open_loop", [False, True])
def test_two_targets_each_get_half_of_the_requests(open_loop):
    peers = [_Acceptor(), _Acceptor()]
    try:
        attempts = [Attempt(f"u{i}", "pw123456", "accept") for i in range(40)]
        targets = [p.address for p in peers]
        result = (
            run_rate(targets, b"secret", attempts, rate=2000, sockets_count=8)
            if open_loop
            else run_load(targets, b"secret", attempts, concurrency=8)
        )
    finally:
        for p in peers:
            p.close()
    assert (result.accepts, result.lost, result.unexpected) == (40, 0, 0)
    assert [p.received for p in peers] == [20, 20]


# -- rounds and medians ------------------------------------------------------------------------


def _row(server: str, rate: float, cpu: float, db: float | None, scenario: str = "valid") -> Row:
    row = Row(server, scenario, 64, 100, rate, rate, 1.0, 2.0, 3.0, 0, 0, cpu, 0.1, 80.0, db)
    row.extra["users"] = 10_000
    return row


def test_medians_group_rounds_per_server_and_scenario_and_compare_with_freeradius():
    rows = [
        _row("freeradius", 4000, 0.1, None),
        _row("radmfa-search-w1", 2000, 0.4, None),
        _row("radmfa-search-pg-w1", 1000, 0.5, 0.2),
        _row("freeradius", 6000, 0.1, None),
        _row("radmfa-search-w1", 2400, 0.3, None),
        _row("radmfa-search-pg-w1", 1500, 0.6, 0.4),
        _row("freeradius", 5000, 0.1, None),
        _row("radmfa-search-w1", 2200, 0.5, None),
        _row("radmfa-search-pg-w1", 1250, 0.7, 0.3),
        _row("radmfa-search-pg-w1", 700, 0.9, 0.5, scenario="rate800"),
    ]
    lines = {(m["server"], m["scenario"]): m for m in medians(rows)}
    fr, lite, pg = (
        lines[(s, "valid")] for s in ("freeradius", "radmfa-search-w1", "radmfa-search-pg-w1")
    )
    assert (fr["rounds"], fr["answers_per_s"], fr["ratio"], fr["db_cpu_s_per_1000"]) == (
        3,
        5000,
        1.0,
        None,
    )
    assert (lite["answers_per_s"], lite["ratio"], lite["cpu_s_per_1000"]) == (2200, 0.44, 0.4)
    assert (pg["answers_per_s"], pg["cpu_s_per_1000"], pg["db_cpu_s_per_1000"]) == (1250, 0.6, 0.3)
    alone = lines[("radmfa-search-pg-w1", "rate800")]
    assert (alone["rounds"], alone["ratio"], alone["db_cpu_s_per_1000"]) == (1, None, 0.5)


def test_the_ab_summary_gives_the_database_cpu_median_when_there_is_one():
    variants = [Variant("lite", "search", {}), Variant("pg", "search", {"store.engine": "pg"})]
    rows = {
        "lite": [_row("lite", 2000, 0.4, None)] * 3,
        "pg": [_row("pg", 1000, 0.5, 0.2), _row("pg", 1000, 0.5, 0.6), _row("pg", 1000, 0.5, 0.3)],
    }
    lite, pg = summarize(variants, rows)
    assert lite["db_cpu_s_per_1000"] is None and pg["db_cpu_s_per_1000"] == 0.3


# -- an open-loop batch must fit in one code step ----------------------------------------------


def test_a_current_step_only_book_waits_for_room_for_the_whole_open_loop_batch():
    users = make_bench_users(3)
    strict = CodeBook(users, lookahead=0, min_left=8.0)
    assert strict.seconds_needed(1000) == 8.0  # closed loop: the fixed margin
    assert strict.seconds_needed(9000, rate=800) == 9000 / 800 + 1.0
    assert strict.seconds_needed(800, rate=800) == 8.0
    assert strict.seconds_needed(90_000, rate=800) == 29.0  # never more than a step holds
    assert CodeBook(users).seconds_needed(9000, rate=800) == 0.0  # accepts a step of skew


# -- CPU of a process tree whose members come and go -------------------------------------------


def _stat(pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    comm = "(postgres: autovacuum (x) )"  # a name with spaces and parentheses
    rest = ["S", ppid] + [0] * 9 + [utime, stime, cutime, cstime] + [0] * 30
    return f"{pid} {comm} " + " ".join(str(v) for v in rest)


def _fake_proc(tmp_path: Path, stats: dict[int, str]) -> Path:
    proc = tmp_path / "proc"
    for pid, text in stats.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(text)
    (proc / "self").mkdir(parents=True, exist_ok=True)
    return proc


def test_cpu_of_a_tree_keeps_what_a_reaped_child_spent(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    before = _fake_proc(
        tmp_path / "a",
        {
            100: _stat(100, 1, utime=10, stime=5),  # postmaster
            101: _stat(101, 100, utime=200, stime=50),  # backend
            102: _stat(102, 100, utime=30, stime=10),  # autovacuum worker, about to exit
            200: _stat(200, 1, utime=999, stime=999),  # not in the tree
        },
    )
    after = _fake_proc(
        tmp_path / "b",
        {
            100: _stat(100, 1, utime=10, stime=5, cutime=30, cstime=10),  # 102 reaped
            101: _stat(101, 100, utime=200, stime=50),
            200: _stat(200, 1, utime=999, stime=999),
        },
    )
    assert sorted(process_tree(100, before)) == [100, 101, 102]
    total = (10 + 5 + 200 + 50 + 30 + 10) / tick
    assert cpu_seconds(100, reaped=True, proc=before) == total
    assert cpu_seconds(100, reaped=True, proc=after) == total
    # Without reaped children the departed worker's CPU vanishes: a row's delta would shrink.
    assert cpu_seconds(100, proc=after) == (10 + 5 + 200 + 50) / tick
