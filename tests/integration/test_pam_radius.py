"""Linux host logins through the real pam_radius_auth module, driven by pamtester.

Debian 12's pam_radius_auth 2.0 never sends Message-Authenticator, so its client entry has
``require_message_authenticator: false``: this file proves both that the switch makes it work
and that without it the host is (rightly) refused.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_daemon import LEGACY_SECRET, Enrolled, base_config
from tests.support.daemon import RadmfaDaemon
from tests.support.slapd import Slapd

pytestmark = pytest.mark.integration

PAM_DIR = Path("/etc/pam.d")


@pytest.fixture(scope="module")
def daemon(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadmfaDaemon]:
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-pam"), base_config(slapd))
    d.start()
    try:
        yield d
    finally:
        d.stop()


def pam_service(tmp_path: Path, port: int, secret: str, name_hint: str) -> Iterator[str]:
    """A private PAM service whose only auth module is pam_radius_auth pointed at ``port``."""
    if os.geteuid() != 0:
        pytest.fail("pam_radius tests need root to write a service file into /etc/pam.d")
    conf = tmp_path / f"pam_radius_{name_hint}.conf"
    conf.write_text(f"127.0.0.1:{port} {secret} 3\n")
    conf.chmod(0o600)
    service = f"radmfa-test-{name_hint}-{secrets.token_hex(4)}"
    (PAM_DIR / service).write_text(
        f"auth required pam_radius_auth.so conf={conf}\naccount required pam_permit.so\n"
    )
    try:
        yield service
    finally:
        (PAM_DIR / service).unlink(missing_ok=True)


@pytest.fixture
def legacy_service(daemon: RadmfaDaemon, tmp_path: Path) -> Iterator[str]:
    yield from pam_service(tmp_path, daemon.port, LEGACY_SECRET, "legacy")


def pamtester(service: str, user: str, answers: list[str]) -> subprocess.CompletedProcess[str]:
    """Authenticate ``user``; ``answers`` are typed at the successive prompts."""
    return subprocess.run(
        ["pamtester", "-v", service, user, "authenticate"],
        input="".join(a + "\n" for a in answers),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_challenge_round_trip_password_then_code(daemon, slapd, legacy_service):
    user = Enrolled(daemon, slapd)
    done = pamtester(legacy_service, user.name, [user.password, user.code()])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Enter your verification code" in done.stdout + done.stderr
    assert "successfully authenticated" in done.stdout + done.stderr
    daemon.wait_for_log(f'decision=accept reason=ok user="{user.name}" client=legacy')


def test_password_and_code_in_one_field(daemon, slapd, legacy_service):
    user = Enrolled(daemon, slapd)
    done = pamtester(legacy_service, user.name, [user.password + user.code()])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verification code" not in done.stdout + done.stderr


def test_wrong_code_at_the_prompt_fails(daemon, slapd, legacy_service):
    user = Enrolled(daemon, slapd)
    wrong = f"{(int(user.code()) + 7) % 10**6:06d}"
    done = pamtester(legacy_service, user.name, [user.password, wrong])
    assert done.returncode != 0
    assert "successfully authenticated" not in done.stdout + done.stderr
    daemon.wait_for_log(f'decision=reject reason=bad_otp user="{user.name}"')


def test_wrong_password_gets_no_challenge(daemon, slapd, legacy_service):
    user = Enrolled(daemon, slapd)
    done = pamtester(legacy_service, user.name, ["not-" + user.password])
    assert done.returncode != 0
    assert "verification code" not in done.stdout + done.stderr


def test_pam_radius_2_is_refused_where_message_authenticator_is_required(slapd, tmp_path: Path):
    config = base_config(slapd)
    config["clients"] = [{"name": "strict", "address": "127.0.0.1/32", "secret": LEGACY_SECRET}]
    d = RadmfaDaemon(tmp_path / "radmfa", config)
    d.start()
    try:
        user = Enrolled(d, slapd)
        for service in pam_service(tmp_path, d.port, LEGACY_SECRET, "strict"):
            done = pamtester(service, user.name, [user.password + user.code()])
            assert done.returncode != 0
        d.wait_for_log("no Message-Authenticator and the client requires one")
    finally:
        d.stop()
