"""First-time set-up and packaging: radmfa init, test-auth, show-unit/show-config, the wheel."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_daemon import LEGACY_SECRET, Enrolled, base_config
from tests.support.daemon import RadmfaDaemon
from tests.support.ports import free_port
from tests.support.slapd import Slapd

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def radmfa(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radmfa", *args],
        capture_output=True, text=True, input=input, timeout=60,
    )  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- init -------------------------------------------------------------------------------------


def test_init_in_an_empty_directory_writes_a_config_check_config_accepts(tmp_path: Path):
    target = tmp_path / "new"
    done = radmfa("init", "--dir", str(target))
    assert done.returncode == 0, done.stderr
    assert "Next steps" in done.stdout and "test-auth" in done.stdout
    config = target / "radmfa.yaml"
    checked = radmfa("-c", str(config), "check-config")
    assert checked.returncode == 0, checked.stderr
    # not even a warning (but the machine's own clock, which the kernel may call unsynchronised)
    assert [line for line in checked.stderr.splitlines() if "system clock" not in line] == []
    assert mode(target) == 0o700 and mode(config) == 0o600
    assert mode(target / "localhost.secret") == 0o600
    assert len((target / "localhost.secret").read_text().strip()) >= 32
    state = target / "state"
    assert mode(state) == 0o700
    assert mode(state / "secret.key") == 0o600 and mode(state / "radmfa.sqlite3") == 0o600
    # The store it made is the one the config names, and it works.
    listed = radmfa("-c", str(config), "token", "list", "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr
    # Never overwrites.
    again = radmfa("init", "--dir", str(target))
    assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_init_as_root_gives_the_files_to_the_service_user(tmp_path: Path):
    nobody = pwd.getpwnam("nobody")
    target = tmp_path / "etc"
    state = tmp_path / "lib"
    done = radmfa("init", "--dir", str(target), "--state-dir", str(state), "--user", "nobody")
    assert done.returncode == 0, done.stderr
    config = target / "radmfa.yaml"
    assert (config.stat().st_uid, config.stat().st_gid) == (0, nobody.pw_gid)
    assert mode(config) == 0o640 and mode(target) == 0o750
    for path in (state, state / "secret.key", state / "radmfa.sqlite3"):
        assert path.stat().st_uid == nobody.pw_uid, path
    assert mode(state / "secret.key") == 0o600
    unknown = radmfa("init", "--dir", str(tmp_path / "x"), "--user", "no-such-user-here")
    assert unknown.returncode == 2 and "adduser --system" in unknown.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_init_never_chowns_through_a_link_planted_in_the_service_users_state_dir(tmp_path: Path):
    """The state directory belongs to the service user, who may have planted links named like
    the store's files: root running init must not hand their targets over, now or re-run."""
    nobody = pwd.getpwnam("nobody")
    target, state = tmp_path / "etc", tmp_path / "lib"
    state.mkdir(mode=0o700)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    victim = tmp_path / "shadow-like"
    victim.write_text("root's file\n")
    for name in ("radmfa.sqlite3.bak", "secret.key.old"):
        (state / name).symlink_to(victim)

    done = radmfa("init", "--dir", str(target), "--state-dir", str(state), "--user", "nobody")

    assert done.returncode == 0, done.stderr
    assert victim.stat().st_uid == 0
    for name in ("radmfa.sqlite3.bak", "secret.key.old"):
        assert (state / name).lstat().st_uid == 0  # not even the link itself
    for name in ("radmfa.sqlite3", "secret.key"):
        assert (state / name).lstat().st_uid == nobody.pw_uid, name

    # Re-run (a fresh config, the same state): the store is there already, nothing is chowned.
    (state / "radmfa.sqlite3-backup").symlink_to(victim)
    for name in ("radmfa.yaml", "localhost.secret"):
        (target / name).unlink()
    again = radmfa("init", "--dir", str(target), "--state-dir", str(state), "--user", "nobody")
    assert again.returncode == 0, again.stderr
    assert victim.stat().st_uid == 0
    assert victim.read_text() == "root's file\n"


# -- test-auth --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadmfaDaemon]:
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa"), base_config(slapd))
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_test_auth_accepts_password_and_code_from_stdin(daemon, slapd):
    user = Enrolled(daemon, slapd)
    # No --server or --secret: both come from the config (127.0.0.1 is the legacy client).
    done = daemon.cli("test-auth", user.name, input=user.password + user.code() + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "Access-Accept"
    assert user.password not in done.stdout + done.stderr


def test_test_auth_answers_the_challenge(daemon, slapd):
    user = Enrolled(daemon, slapd)
    done = daemon.cli(
        "test-auth", user.name, "--server", f"127.0.0.1:{daemon.port}",
        "--secret", LEGACY_SECRET, input=f"{user.password}\n{user.code()}\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Enter your verification code" in done.stderr
    assert done.stdout.strip() == "Access-Accept"


def test_test_auth_reject_and_no_answer_exit_1(daemon, slapd, tmp_path):
    user = Enrolled(daemon, slapd)
    done = daemon.cli("test-auth", user.name, input="wrong-password\n")
    assert done.returncode == 1
    assert done.stdout.strip() == "Access-Reject: Authentication failed."
    secret_file = tmp_path / "secret"
    secret_file.write_text("not-the-secret-at-all\n")
    silent = radmfa(
        "test-auth", user.name, "--server", f"127.0.0.1:{daemon.port}",
        "--secret-file", str(secret_file), "--timeout", "0.3", "--retries", "1",
        input="x\n",
    )  # fmt: skip
    assert silent.returncode == 1
    assert "no reply from 127.0.0.1" in silent.stderr and "after 2 tries" in silent.stderr
    nobody = radmfa(
        "test-auth", "u", "--server", f"127.0.0.1:{free_port('udp')}", "--secret", "s",
        "--timeout", "0.3", "--retries", "0", input="x\n",
    )  # fmt: skip
    assert nobody.returncode == 1


# -- shipped files and the wheel --------------------------------------------------------------


def test_show_unit_and_show_config_print_the_shipped_files():
    unit = (ROOT / "systemd" / "radmfa.service").read_text()
    shown = radmfa("show-unit", "--command-path", "/opt/radmfa/bin/radmfa")
    assert shown.returncode == 0
    assert shown.stdout == unit.replace("/usr/local/bin/radmfa", "/opt/radmfa/bin/radmfa")
    default = radmfa("show-unit")
    assert f"ExecStart={Path(sys.executable).with_name('radmfa')} -c" in default.stdout
    example = radmfa("show-config")
    assert example.stdout == (ROOT / "config" / "radmfa.yaml").read_text()


def test_wheel_carries_the_command_unit_example_config_and_dictionary(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("daemon", "config", "systemd"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "out"),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "out").glob("radmfa-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert (
            z.read("radmfa/data/radmfa.service") == (ROOT / "systemd/radmfa.service").read_bytes()
        )
        assert z.read("radmfa/data/radmfa.yaml") == (ROOT / "config/radmfa.yaml").read_bytes()
        assert "radmfa/radius/dictionary" in names
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "radmfa = radmfa.cli.main:main" in z.read(entry_points).decode()
