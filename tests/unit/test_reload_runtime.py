"""What a reload rebuilds: the directory only when what it is built from changed, and a
replaced directory closed only once the requests that use it are done."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock

from radmfa.config import Config, load_config
from radmfa.directory.local import hash_password
from radmfa.service import RETIRE_CHECK_INTERVAL, Runtime, build_runtime, close_when_done
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import InlineRunner
from tests.support.certs import make_ca

CONFIG = """\
clients:
  - name: vpn
    address: 192.0.2.10
    secret: "{secret}"
ldap:
  servers: [ldaps://ldap.example.org]
  base_dn: "ou=people,dc=example,dc=org"
  timeout: {timeout}
{extra}
"""


def config(tmp_path: Path, secret: str = "a-long-enough-secret-123", timeout: float = 3,
           extra: str = "") -> Config:  # fmt: skip
    path = tmp_path / "radmfa.yaml"
    path.write_text(CONFIG.format(secret=secret, timeout=timeout, extra=extra))
    path.chmod(0o600)
    return load_config(path)


def build(cfg: Config, running: Runtime | None = None) -> Runtime:
    return build_runtime(
        cfg,
        store=AsyncStore(MemoryStore(), InlineRunner()),
        directory_runner=InlineRunner(),
        clock=Clock(),
        running=running,
    )


def test_a_reload_that_leaves_the_directory_settings_alone_keeps_the_running_directory(tmp_path):
    first = build(config(tmp_path))
    second = build(config(tmp_path, secret="another-long-enough-secret"), running=first)
    assert second.directory is first.directory  # its connections and cached entries stay
    assert second.authenticator is not first.authenticator
    assert second.clients is not first.clients
    third = build(config(tmp_path, timeout=5), running=second)
    assert third.directory is not second.directory


def test_a_renewed_ca_file_gets_a_new_directory(tmp_path):
    ca = make_ca(tmp_path / "ca")
    extra = f"  ca_file: {ca.cert_path}"
    first = build(config(tmp_path, extra=extra))
    assert build(config(tmp_path, extra=extra), running=first).directory is first.directory
    renewed = make_ca(tmp_path / "renewed")
    ca.cert_path.write_bytes(renewed.cert_path.read_bytes())
    stamp = os.stat(ca.cert_path)
    os.utime(ca.cert_path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    assert build(config(tmp_path, extra=extra), running=first).directory is not first.directory


def test_a_users_file_is_read_again_at_every_reload(tmp_path):
    users = tmp_path / "users"
    users.write_text(f"alice:{hash_password('alice-password')}\n")
    text = f"""\
clients:
  - name: vpn
    address: 192.0.2.10
    secret: "a-long-enough-secret-123"
local_users:
  path: {users}
"""
    path = tmp_path / "local.yaml"
    path.write_text(text)
    path.chmod(0o600)
    first = build(load_config(path))
    assert build(load_config(path), running=first).directory is not first.directory


class Requests:
    in_flight = 0


def test_a_replaced_directory_closes_once_its_requests_are_done():
    clock, requests, closed = Clock(), Requests(), []
    requests.in_flight = 2
    close_when_done(clock, requests, lambda: closed.append(clock.seconds()), earliest=11, latest=60)
    clock.advance(11)
    for _ in range(10):
        clock.advance(RETIRE_CHECK_INTERVAL)
    assert closed == []  # a request still uses it (one past its RADIUS deadline included)
    requests.in_flight = 0
    clock.advance(RETIRE_CHECK_INTERVAL)
    assert closed == [clock.seconds()]
    clock.advance(100)
    assert len(closed) == 1


def test_a_replaced_directory_stays_open_for_a_while_even_with_no_request_counted():
    """A portal sign-in is not counted: it gets the grace every user had before."""
    clock, requests, closed = Clock(), Requests(), []
    close_when_done(clock, requests, lambda: closed.append(clock.seconds()), earliest=11, latest=60)
    clock.advance(10.9)
    assert closed == []
    clock.advance(0.1)
    assert closed == [11]


def test_a_replaced_directory_closes_after_the_longest_a_request_can_take():
    clock, requests, closed = Clock(), Requests(), []
    requests.in_flight = 1  # a request that never ends (a bug elsewhere) holds nothing forever
    close_when_done(clock, requests, lambda: closed.append(clock.seconds()), earliest=11, latest=30)
    clock.advance(29.9)
    assert closed == []
    for _ in range(2):
        clock.advance(RETIRE_CHECK_INTERVAL)
    assert len(closed) == 1 and 30 <= closed[0] <= 30 + RETIRE_CHECK_INTERVAL
