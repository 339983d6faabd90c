"""By-hand checks that bench/freeradius_server.py really does radmfa's job (not in the main suite).

Run: ``cd /work/main && .venv/bin/python -m pytest bench/freeradius -q -p no:cacheprovider``

A throw-away slapd (tests/support/slapd.py) holds a few users whose base32 TOTP secret is in
``description``; FreeRADIUS 3.2 runs from a private raddb; requests go through ``radclient``, an
independent client, exactly as the brief's one-liner does. Some tests pin down what rlm_totp in
3.2.1 does (current step only, replays accepted) so the benchmark report can state it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from bench.freeradius_server import FreeRadiusServer
from tests.support.ports import free_port
from tests.support.slapd import (
    PEOPLE_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Slapd,
    ldif_entry,
    ssha,
)

pytestmark = pytest.mark.skipif(
    shutil.which("radclient") is None or not Path("/usr/sbin/freeradius").exists(),
    reason="needs freeradius, freeradius-ldap and freeradius-utils (radclient)",
)

SECRET = "bench-shared-secret"
STEP = 30

#: uid -> (password, base32 secret or None)
USERS: dict[str, tuple[str, str | None]] = {
    "u1": ("pw123456", pyotp.random_base32()),
    "u2": ("second-Password-2", pyotp.random_base32()),
    # quotes, a backslash, %{...} and spaces must reach the LDAP bind untouched
    "u3": ('we\'ird \\ %{User-Name} "pw"', pyotp.random_base32()),
    # the shortest password that works: 1 character + 6-digit code = 7
    "u4": ("p", pyotp.random_base32()),
    # hashed userPassword, like the fixture users
    "u5": ("hashed-Password-5", pyotp.random_base32()),
    # no secret in the directory: must be rejected even with the right password
    "nosecret": ("nosecret-pw", None),
}


def users_ldif() -> str:
    parts = []
    for uid, (password, secret) in USERS.items():
        attrs = [
            ("objectClass", "inetOrgPerson"),
            ("uid", uid),
            ("cn", uid),
            ("sn", uid),
            ("userPassword", ssha(password) if uid == "u5" else password),
        ]
        if secret is not None:
            attrs.append(("description", secret))
        parts.append(ldif_entry(f"uid={uid},{PEOPLE_DN}", attrs))
    return "".join(parts)


def wall_clock() -> float:
    """FreeRADIUS checks codes against the real clock, so these tests must read it too."""
    return time.time()


def fresh_code(secret: str) -> str:
    """The current code, taken far enough from a step boundary (rlm_totp 3.2.1 has no window)."""
    left = STEP - wall_clock() % STEP
    if left < 3:
        time.sleep(left + 0.05)
    return pyotp.TOTP(secret).now()


def code_at_offset(secret: str, steps: int) -> str:
    fresh_code(secret)  # move away from a boundary first
    return pyotp.TOTP(secret).at(wall_clock() + steps * STEP)


def radclient(port: int, user: str, password: str, secret: str = SECRET, wait: float = 5) -> str:
    """The reply code name ("Access-Accept", ...) radclient received, or "timeout"."""

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    request = (
        f"User-Name = {quoted(user)}\n"
        f"User-Password = {quoted(password)}\n"
        "Message-Authenticator = 0x00\n"
    )
    done = subprocess.run(
        ["radclient", "-x", "-r", "1", "-t", str(wait), f"127.0.0.1:{port}", "auth", secret],
        input=request,
        capture_output=True,
        text=True,
        timeout=20,
    )
    for line in done.stdout.splitlines():
        if line.startswith("Received "):
            return line.split()[1]
    return "timeout"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"), users=())
    server.add_ldif(users_ldif())
    server.start()
    try:
        yield server
    finally:
        server.kill()


def make_server(workdir: Path, slapd: Slapd, **kw: object) -> FreeRadiusServer:
    return FreeRadiusServer(
        workdir,
        port=free_port("udp"),
        secret=SECRET,
        ldap_url=slapd.url,
        base_dn=SUFFIX,
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def radius(tmp_path_factory: pytest.TempPathFactory, slapd: Slapd) -> Iterator[FreeRadiusServer]:
    # reject_delay=0 keeps the many reject cases fast; the default is checked on its own below.
    server = make_server(tmp_path_factory.mktemp("freeradius"), slapd, reject_delay=0)
    server.check_config()
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert "Error" not in server.log_text(), server.log_text()


def auth(radius: FreeRadiusServer, user: str, password: str) -> str:
    return radclient(radius.port, user, password)


@pytest.mark.parametrize("uid", ["u1", "u2", "u3", "u4", "u5"])
def test_right_password_and_current_code_accepts(radius: FreeRadiusServer, uid: str) -> None:
    password, secret = USERS[uid]
    assert secret is not None
    assert auth(radius, uid, password + fresh_code(secret)) == "Access-Accept", radius.log_text()


def test_wrong_code_rejects(radius: FreeRadiusServer) -> None:
    password, secret = USERS["u1"]
    assert secret is not None
    code = fresh_code(secret)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert auth(radius, "u1", password + wrong) == "Access-Reject"


def test_wrong_password_with_right_code_rejects(radius: FreeRadiusServer) -> None:
    password, secret = USERS["u1"]
    assert secret is not None
    assert auth(radius, "u1", password + "x" + fresh_code(secret)) == "Access-Reject"
    assert auth(radius, "u1", password[:-1] + fresh_code(secret)) == "Access-Reject"


def test_unknown_user_rejects(radius: FreeRadiusServer) -> None:
    password, secret = USERS["u1"]
    assert secret is not None
    assert auth(radius, "nobody", password + fresh_code(secret)) == "Access-Reject"


def test_filter_wildcard_is_escaped(radius: FreeRadiusServer) -> None:
    password, secret = USERS["u1"]
    assert secret is not None
    assert auth(radius, "u1*", password + fresh_code(secret)) == "Access-Reject"
    assert auth(radius, "*", password + fresh_code(secret)) == "Access-Reject"


def test_user_without_secret_rejects(radius: FreeRadiusServer) -> None:
    assert auth(radius, "nosecret", "nosecret-pw123456") == "Access-Reject"


@pytest.mark.parametrize("password", ["", "1", "12345", "123456"])
def test_passwords_shorter_than_seven_reject(radius: FreeRadiusServer, password: str) -> None:
    assert auth(radius, "u4", password) == "Access-Reject"


def test_code_only_without_password_rejects(radius: FreeRadiusServer) -> None:
    _, secret = USERS["u4"]
    assert secret is not None
    assert auth(radius, "u4", fresh_code(secret)) == "Access-Reject"


def test_rlm_totp_321_accepts_only_the_current_step(radius: FreeRadiusServer) -> None:
    """Observed, not wished for: radmfa accepts +-1 step, rlm_totp 3.2.1 has no window option."""
    password, secret = USERS["u2"]
    assert secret is not None
    seen = {
        offset: auth(radius, "u2", password + code_at_offset(secret, offset))
        for offset in (-1, 0, 1)
    }
    assert seen == {-1: "Access-Reject", 0: "Access-Accept", 1: "Access-Reject"}


def test_rlm_totp_321_accepts_a_replayed_code(radius: FreeRadiusServer) -> None:
    """Observed: rlm_totp keeps no state, so the same code works again within its step."""
    password, secret = USERS["u5"]
    assert secret is not None
    code = fresh_code(secret)
    first = auth(radius, "u5", password + code)
    second = auth(radius, "u5", password + code)
    assert (first, second) == ("Access-Accept", "Access-Accept")


def test_status_server_answers(radius: FreeRadiusServer) -> None:
    assert radius.probe()
    done = subprocess.run(
        ["radclient", "-x", "-r", "1", "-t", "3", f"127.0.0.1:{radius.port}", "status", SECRET],
        input="Message-Authenticator = 0x00\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "Received Access-Accept" in done.stdout, done.stdout + done.stderr


def test_wrong_shared_secret_gets_no_answer(radius: FreeRadiusServer) -> None:
    password, secret = USERS["u1"]
    assert secret is not None
    assert radclient(radius.port, "u1", password + fresh_code(secret), "not-it", 1) == "timeout"


def test_one_process_many_threads(radius: FreeRadiusServer) -> None:
    pid = radius.pid
    assert pid is not None
    assert Path(f"/proc/{pid}/exe").resolve().name == "freeradius"
    threads = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Threads:")
        )
    )
    assert threads > 1
    assert radius.settings()["thread_max_servers"] == 32
    assert radius.settings()["ldap_pool_max"] == 32


def test_default_reject_delay_is_one_second(tmp_path: Path, slapd: Slapd) -> None:
    server = make_server(tmp_path, slapd, threads=4, ldap_pool=2)
    assert "max_servers = 4" in (server.raddb / "radiusd.conf").read_text()
    assert "max = 2" in (server.raddb / "mods" / "ldap").read_text()
    with server:
        server.start()
        password, secret = USERS["u1"]
        assert secret is not None
        started = time.monotonic()
        assert radclient(server.port, "u1", password + fresh_code(secret)) == "Access-Accept"
        accept_time = time.monotonic() - started
        started = time.monotonic()
        assert radclient(server.port, "u1", "wrong-password-000000") == "Access-Reject"
        reject_time = time.monotonic() - started
    assert accept_time < 0.9
    assert 0.9 <= reject_time < 3


def test_bad_config_is_reported(tmp_path: Path, slapd: Slapd) -> None:
    server = make_server(tmp_path, slapd)
    (server.raddb / "site.conf").write_text("server broken {\n authorize {\n no_such_module\n")
    with pytest.raises(RuntimeError, match="freeradius -C failed"):
        server.check_config()


def test_unreachable_ldap_fails_start_quickly(tmp_path: Path) -> None:
    server = FreeRadiusServer(
        tmp_path,
        port=free_port("udp"),
        secret=SECRET,
        ldap_url=f"ldap://127.0.0.1:{free_port('tcp')}",
        base_dn=SUFFIX,
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
    )
    with pytest.raises(RuntimeError, match="exited"):
        server.start(timeout=15)
    assert server.pid is None
