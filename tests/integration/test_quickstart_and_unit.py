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


def installed_unit(tmp_path: Path) -> tuple[str, Path]:
    """The shipped unit, pointed at this environment's radmfa (it names /usr/local/bin)."""
    radmfa = Path(sys.executable).with_name("radmfa")
    unit = (ROOT / "systemd" / "radmfa.service").read_text()
    (tmp_path / "radmfa.service").write_text(unit.replace("/usr/local/bin/radmfa", str(radmfa)))
    return unit, tmp_path / "radmfa.service"


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of systemd on every Debian host"
    unit, _path = installed_unit(tmp_path)
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
                    "StateDirectory=radmfa", "ExecReload=/bin/kill -HUP $MAINPID",
                    "Type=notify\n", "NotifyAccess=main", "WatchdogSec=30s"):  # fmt: skip
        assert setting in unit
    # systemctl reload fails on a bad config before any signal is sent (systemd 252 has no
    # Type=notify-reload): the check comes first.
    reloads = re.findall(r"^ExecReload=(.*)$", unit, re.MULTILINE)
    assert reloads == [
        "/usr/local/bin/radmfa -c /etc/radmfa/radmfa.yaml check-config",
        "/bin/kill -HUP $MAINPID",
    ]


#: systemd-analyze security: 0 is fully locked down, 10 is "UNSAFE"; we keep it "OK" and low.
MAX_EXPOSURE = 2.0


def test_systemd_unit_exposure_score_is_low(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of systemd on every Debian host"
    _unit, path = installed_unit(tmp_path)
    done = subprocess.run(
        [analyze, "security", "--offline=yes", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for radmfa\.service: ([0-9.]+)", done.stdout)
    assert done.returncode == 0 and found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout
