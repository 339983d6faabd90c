"""Rough numbers for FreeRADIUS doing radmfa's job (not the benchmark itself; no asserts).

Run: ``cd /work/main && .venv/bin/python -m bench.freeradius.quick_measure [--sequential N]
[--parallel N] [--concurrency P] [--users U]``

1. one Python client on loopback, N sequential Access-Requests (valid password + current code,
   users round-robin; rlm_totp 3.2.1 accepts a code again, so codes are reused within a step),
   mean/median/p99 latency;
2. ``radclient -c 1 -p P -s`` over a file of N requests (all valid), wall time -> requests/s.

It also prints the FreeRADIUS process's CPU seconds and RSS after each phase.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyotp

from bench.freeradius_server import FreeRadiusServer
from tests.support.ports import free_port
from tests.support.radius_client import DICTIONARY, build_request
from tests.support.slapd import (
    PEOPLE_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Slapd,
    ldif_entry,
)

SECRET = "bench-shared-secret"
STEP = 30


def cpu_and_rss(pid: int) -> tuple[float, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return cpu, rss_kib


def wait_for_fresh_step(min_left: float) -> None:
    left = STEP - time.time() % STEP
    if left < min_left:
        time.sleep(left + 0.05)


def sequential(port: int, users: list[tuple[str, str, pyotp.TOTP]], count: int) -> list[float]:
    from pyrad import packet as rp

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    latencies = []
    rejects = 0
    try:
        for i in range(count):
            uid, password, totp = users[i % len(users)]
            pkt = build_request(SECRET.encode(), uid, password + totp.now(), identifier=i % 256)
            raw = pkt.RequestPacket()
            started = time.perf_counter()
            sock.sendto(raw, ("127.0.0.1", port))
            data = sock.recv(4096)
            latencies.append(time.perf_counter() - started)
            reply = rp.Packet(packet=data, secret=SECRET.encode(), dict=DICTIONARY)
            if not pkt.VerifyReply(reply, data):
                raise RuntimeError("reply failed verification")
            if reply.code != rp.AccessAccept:
                rejects += 1
    finally:
        sock.close()
    if rejects:
        print(f"  WARNING: {rejects} rejects (step boundary?)")
    return latencies


def parallel(
    port: int, users: list[tuple[str, str, pyotp.TOTP]], count: int, concurrency: int
) -> float:
    wait_for_fresh_step(20)
    with tempfile.NamedTemporaryFile("w", suffix=".req", delete=False) as handle:
        for i in range(count):
            uid, password, totp = users[i % len(users)]
            handle.write(
                f'User-Name = "{uid}"\nUser-Password = "{password}{totp.now()}"\n'
                "Message-Authenticator = 0x00\n\n"
            )
        path = handle.name
    try:
        started = time.perf_counter()
        done = subprocess.run(
            ["radclient", "-c", "1", "-p", str(concurrency), "-r", "1", "-t", "10", "-s",
             "-f", path, f"127.0.0.1:{port}", "auth", SECRET],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    finally:
        os.unlink(path)
    summary = [line.strip() for line in done.stdout.splitlines() if ":" in line][-6:]
    print("  radclient summary:", "; ".join(summary))
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ldap-pool", type=int, default=None)
    args = parser.parse_args()

    users = [
        (f"load{i:05d}", f"load{i:05d}-pw", pyotp.TOTP(pyotp.random_base32()))
        for i in range(args.users)
    ]
    ldif = "".join(
        ldif_entry(
            f"uid={uid},{PEOPLE_DN}",
            [
                ("objectClass", "inetOrgPerson"),
                ("uid", uid),
                ("cn", uid),
                ("sn", uid),
                ("userPassword", password),
                ("description", totp.secret),
            ],
        )
        for uid, password, totp in users
    )
    with tempfile.TemporaryDirectory(prefix="fr-measure-") as tmp:
        ldap = Slapd(Path(tmp) / "slapd", users=(), debug="0")
        ldap.add_ldif(ldif)
        ldap.start()
        try:
            server = FreeRadiusServer(
                Path(tmp) / "freeradius",
                port=free_port("udp"),
                secret=SECRET,
                ldap_url=ldap.url,
                base_dn=SUFFIX,
                bind_dn=SERVICE_DN,
                bind_password=SERVICE_PASSWORD,
                threads=args.threads,
                ldap_pool=args.ldap_pool,
            )
            server.check_config()
            with server:
                server.start()
                assert server.pid is not None
                print("settings:", server.settings())
                cpu, rss = cpu_and_rss(server.pid)
                print(f"idle: cpu {cpu:.2f}s rss {rss} KiB")
                if args.sequential:
                    lat = sequential(server.port, users, args.sequential)
                    lat_ms = sorted(x * 1000 for x in lat)
                    print(
                        f"sequential {len(lat)}: mean {statistics.fmean(lat_ms):.3f} ms, "
                        f"median {statistics.median(lat_ms):.3f} ms, "
                        f"p99 {lat_ms[int(len(lat_ms) * 0.99) - 1]:.3f} ms, "
                        f"max {lat_ms[-1]:.3f} ms"
                    )
                    cpu, rss = cpu_and_rss(server.pid)
                    print(f"  after: cpu {cpu:.2f}s rss {rss} KiB")
                if args.parallel:
                    before = cpu_and_rss(server.pid)[0]
                    elapsed = parallel(server.port, users, args.parallel, args.concurrency)
                    cpu, rss = cpu_and_rss(server.pid)
                    print(
                        f"parallel {args.parallel} x -p {args.concurrency}: {elapsed:.2f} s, "
                        f"{args.parallel / elapsed:.0f} req/s (includes radclient start-up), "
                        f"server cpu {cpu - before:.2f}s, rss {rss} KiB"
                    )
                errors = [line for line in server.log_text().splitlines() if "Error" in line]
                print("log errors:", errors[:5] or "none")
        finally:
            ldap.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
