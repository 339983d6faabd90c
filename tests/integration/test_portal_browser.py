"""The portal in a real headless Chromium against the real daemon and a real slapd: a user in
the enrolment grace period signs in, enrolls an authenticator app by the QR code (read back
from a screenshot by zbarimg, so the code itself is proven), confirms it, logs in over
RADIUS with radclient using the new token, and signs out.

Screenshots of every page: see tests/support/browser.py (``test-artifacts/portal/``).
"""

from __future__ import annotations

import itertools
import random
import re
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest

from tests.support.browser import DESKTOP, PHONE, Screenshots, chromium, read_qr, require_browser
from tests.support.daemon import RadmfaDaemon
from tests.support.ports import free_port
from tests.support.slapd import PEOPLE_DN, LdapUser, Slapd

pytestmark = pytest.mark.integration

SECRET = "portal-browser-secret-0123"
_counter = itertools.count()


@pytest.fixture(scope="module")
def portal_daemon(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadmfaDaemon]:
    require_browser()
    config = {
        "clients": [{"name": "local", "address": "127.0.0.0/8", "secret": SECRET}],
        "ldap": {"servers": [slapd.url], "user_dn": f"uid={{username}},{PEOPLE_DN}", "timeout": 5},
        "otp": {"mode": "auto", "totp": {"issuer": "Example Corp VPN"}},
        "lockout": {"max_failures": 5, "duration": "5m"},
        "radius": {"reject_delay": 0},
        "policy": {"default": "required", "unenrolled": {"grace_days": 14}},
        "portal": {"listen": f"127.0.0.1:{free_port('tcp')}"},
    }
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-portal"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def portal_url(daemon: RadmfaDaemon) -> str:
    return f"http://{daemon.config['portal']['listen']}"


def radclient(port: int, user: str, password: str) -> str | None:
    """The real radclient, signing its request; the reply type or None."""
    text = f'User-Name = "{user}"\nUser-Password = "{password}"\nMessage-Authenticator = 0x00\n'
    done = subprocess.run(
        ["radclient", "-x", "-r", "1", "-t", "3", f"127.0.0.1:{port}", "auth", SECRET],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    found = re.search(r"Received (Access-\w+)", done.stdout)
    return found.group(1) if found else None


def fill(driver, selector: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.clear()
    field.send_keys(text)


def submit(driver, selector: str = "button[type=submit].primary") -> None:
    from selenium.webdriver.common.by import By

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, selector).click()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the next page replaced this one
        try:
            old.tag_name  # noqa: B018
        except Exception:
            return
        time.sleep(0.05)
    raise AssertionError("the form did not lead to a new page")


def test_sign_in_during_grace_enroll_by_qr_log_in_over_radius_sign_out(
    portal_daemon: RadmfaDaemon, slapd: Slapd
) -> None:
    from selenium.webdriver.common.by import By

    name = f"portal{next(_counter)}x{random.randrange(10**6)}"
    password = f"pw-{name}-Secret"
    slapd.add_users([LdapUser(name, password)])
    shots = Screenshots("enroll")
    base = portal_url(portal_daemon)
    with chromium(PHONE) as driver:
        driver.get(f"{base}/")
        assert driver.current_url == f"{base}/signin"
        shots.take(driver, "signin")
        username = driver.find_element(By.CSS_SELECTOR, 'input[autocomplete="username"]')
        assert username.get_attribute("required") is not None
        fill(driver, 'input[autocomplete="username"]', name)
        fill(driver, 'input[autocomplete="current-password"]', password)
        submit(driver)
        assert driver.current_url == f"{base}/"
        assert "Set up two-factor sign-in" in driver.page_source
        shots.take(driver, "grace-home")

        driver.find_element(By.CSS_SELECTOR, 'a[href="/enroll/app"]').click()
        assert driver.current_url == f"{base}/enroll/app"
        driver.find_element(By.TAG_NAME, "summary").click()  # show the key as text too
        enroll_png = shots.take(driver, "enroll")
        uri = read_qr(enroll_png)
        parts = urlsplit(uri)
        assert parts.scheme == "otpauth" and parts.netloc == "totp"
        assert unquote(parts.path) == f"/Example Corp VPN:{name}"
        query = parse_qs(parts.query)
        assert query["issuer"] == ["Example Corp VPN"]
        secret = query["secret"][0]
        shown = driver.find_element(By.CSS_SELECTOR, "code.secret").text.replace(" ", "")
        assert shown == secret  # the key typed by hand is the one in the QR code
        code_field = driver.find_element(By.CSS_SELECTOR, 'input[autocomplete="one-time-code"]')
        assert code_field.get_attribute("inputmode") == "numeric"

        # Before confirmation the token does not exist: the app's code is no second factor.
        totp = pyotp.TOTP(secret)
        assert radclient(portal_daemon.port, name, password + totp.now()) == "Access-Reject"

        fill(driver, 'input[autocomplete="one-time-code"]', totp.now())
        submit(driver)
        assert driver.current_url == f"{base}/"
        assert "Authenticator app added." in driver.page_source
        assert "Your sign-in methods" in driver.page_source
        shots.take(driver, "home")

        # RADIUS now takes the password followed by a code of the new token (the next step:
        # the confirming code is spent, and the window allows one step of drift).
        reply = radclient(portal_daemon.port, name, password + totp.at(time.time() + 30))
        assert reply == "Access-Accept"

        submit(driver, "form.signout button")
        assert "You are signed out" in driver.page_source
        shots.take(driver, "signed-out")
        driver.get(f"{base}/")
        assert driver.current_url == f"{base}/signin"

        # Signing in again asks for the code now.
        fill(driver, 'input[autocomplete="username"]', name)
        fill(driver, 'input[autocomplete="current-password"]', password)
        submit(driver)
        assert driver.current_url == f"{base}/signin/code"
        shots.take(driver, "signin-code")

    with chromium(DESKTOP) as driver:  # the same pages on a wide screen
        driver.get(f"{base}/signin")
        shots.take(driver, "signin-desktop")

    log = portal_daemon.log()
    assert f'decision=accept reason=grace_period user="{name}" client=portal' in log
    assert secret not in log and password not in log
    audit = portal_daemon.cli("audit", "--user", name, "--format", "json")
    assert audit.returncode == 0, audit.stderr
    assert '"actor": "' + name + ' (portal)"' in audit.stdout
    assert '"action": "token-add"' in audit.stdout
