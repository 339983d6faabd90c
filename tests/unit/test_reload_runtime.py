"""What a reload rebuilds: the directory only when what it is built from changed, and a
replaced directory closed only once the requests that use it are done."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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


def _same_size(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    """Two PEM files padded to one length (trailing newlines: still the same certificates)."""
    size = max(len(a), len(b))
    return a + b"\n" * (size - len(a)), b + b"\n" * (size - len(b))


def test_a_ca_file_replaced_with_the_same_size_and_mtime_gets_a_new_directory(tmp_path):
    """``cp -p``, ``rsync -a``, ``tar x``, a package or an image with normalised times (Nix:
    every mtime is 1) can put a new CA in place with the old file's mtime; a renewed CA of the
    same key type often has the same size. The trust it changes must not wait for a restart:
    the ldap3 engine builds its SSLContext once, libldap's open connections stay."""
    ca, renewed = make_ca(tmp_path / "ca"), make_ca(tmp_path / "renewed")
    old_pem, new_pem = _same_size(ca.cert_path.read_bytes(), renewed.cert_path.read_bytes())
    ca.cert_path.write_bytes(old_pem)
    before = os.stat(ca.cert_path)
    extra = f"  ca_file: {ca.cert_path}"
    first = build(config(tmp_path, extra=extra))
    ca.cert_path.write_bytes(new_pem)
    os.utime(ca.cert_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(ca.cert_path)
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert build(config(tmp_path, extra=extra), running=first).directory is not first.directory


def test_a_ca_file_swapped_by_its_symlink_gets_a_new_directory(tmp_path):
    """The atomic way to replace a file (a Kubernetes secret, a deploy tool): a symlink
    pointed at another target, here one with the same size and mtime as the old."""
    ca, renewed = make_ca(tmp_path / "ca"), make_ca(tmp_path / "renewed")
    old_pem, new_pem = _same_size(ca.cert_path.read_bytes(), renewed.cert_path.read_bytes())
    old_target, new_target = tmp_path / "ca-1.pem", tmp_path / "ca-2.pem"
    old_target.write_bytes(old_pem)
    new_target.write_bytes(new_pem)
    stamp = os.stat(old_target)
    os.utime(new_target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    link = tmp_path / "ca.pem"
    link.symlink_to(old_target)
    extra = f"  ca_file: {link}"
    first = build(config(tmp_path, extra=extra))
    assert build(config(tmp_path, extra=extra), running=first).directory is first.directory
    swap = tmp_path / "ca.pem.new"
    swap.symlink_to(new_target)
    swap.replace(link)
    assert build(config(tmp_path, extra=extra), running=first).directory is not first.directory


def test_a_changed_bind_password_file_gets_a_new_directory(tmp_path):
    secret = tmp_path / "bind.secret"
    secret.write_text("first-password\n")
    secret.chmod(0o600)
    extra = f'  bind_dn: "cn=svc,dc=example,dc=org"\n  bind_password_file: {secret}'
    first = build(config(tmp_path, extra=extra))
    assert build(config(tmp_path, extra=extra), running=first).directory is first.directory
    secret.write_text("other-password\n")
    assert build(config(tmp_path, extra=extra), running=first).directory is not first.directory


@pytest.mark.parametrize(
    "extra",
    [
        "  servers: [ldaps://other.example.org]",
        '  user_filter: "(mail={username})"',
        "  start_tls: true\n  servers: [ldap://ldap.example.org]",
        "  account_state: false",
        "  groups:\n    membership: memberof",
    ],
)
def test_a_changed_directory_setting_gets_a_new_directory(tmp_path, extra):
    first = build(config(tmp_path))
    text = CONFIG.replace("  servers: [ldaps://ldap.example.org]\n", "")
    if "servers" not in extra:
        extra += "\n  servers: [ldaps://ldap.example.org]"
    path = tmp_path / "changed.yaml"
    path.write_text(text.format(secret="a-long-enough-secret-123", timeout=3, extra=extra))
    path.chmod(0o600)
    assert build(load_config(path), running=first).directory is not first.directory


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
