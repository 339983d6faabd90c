"""The README's quick start and the shipped systemd unit, exercised for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest

from tests.integration.test_daemon import quoted, radclient
from tests.support.daemon import READY_LINE, deadline_poll
from tests.support.ports import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_setup_authenticates_alice_with_password_and_code(tmp_path: Path):
    port = free_port("udp")
    demo = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "radmfa", "demo", "--dir", str(demo), "--port", str(port),
         "--no-serve"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    secret = re.search(r"enter this secret by hand: ([A-Z2-7]+)", done.stdout).group(1)
    radius_secret = re.search(r"RADIUS secret: (\S+)", done.stdout).group(1)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "radmfa", "-c", str(demo / "radmfa.yaml"), "serve"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline_poll(lambda: READY_LINE in log.read_text(), 15, what="demo daemon")
        reply, out = radclient(
            port,
            radius_secret,
            {
                "User-Name": '"alice"',
                "User-Password": quoted("wonderland" + pyotp.TOTP(secret).now()),
                "Message-Authenticator": "0x00",
            },
        )
        assert reply == "Access-Accept", out + log.read_text()
    finally:
        server.terminate()
        assert server.wait(15) == 0


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of systemd on every Debian host"
    radmfa = Path(sys.executable).with_name("radmfa")
    unit = (ROOT / "systemd" / "radmfa.service").read_text()
    # The unit names the path pip installs to; point it at this environment's command.
    (tmp_path / "radmfa.service").write_text(unit.replace("/usr/local/bin/radmfa", str(radmfa)))
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "radmfa.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [
        line for line in (done.stdout + done.stderr).splitlines()
        if "radmfa.service" in line
    ]  # fmt: skip
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
    for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "DynamicUser=yes",
                    "StateDirectory=radmfa", "ExecReload=/bin/kill -HUP $MAINPID"):  # fmt: skip
        assert setting in unit
