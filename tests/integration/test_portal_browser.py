"""The portal in a real headless Chromium against the real daemon and a real slapd: a user in
the enrolment grace period signs in, enrolls an authenticator app by the QR code (read back
from a screenshot by zbarimg, so the code itself is proven), confirms it, logs in over
RADIUS with radclient using the new token, and signs out. A user with a factor makes backup
codes, forgets a trusted device (RADIUS then asks for the code again) and reads their recent
sign-ins, and is refused the help-desk pages; a help-desk member (an LDAP group) resets that
user, who is then back to enrolling over RADIUS, and issues an emergency code that works.
A user without a grace period gets an enrolment link by mail (``radmfa enroll-link --email``
through a real SMTP server), opens it in the browser, signs in and enrolls; the link then
works no more. Past a short ``portal.reauth_after`` (a daemon of its own), making backup
codes asks to confirm with a code first, then works.

The daemon runs two workers (``radius.workers: 2``) sharing the portal's port: sessions live
in the store, so every page works whichever worker a connection reaches.

Screenshots of every page: see tests/support/browser.py (``test-artifacts/portal/``).
"""

from __future__ import annotations

import base64
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
from tests.support.slapd import (
    GROUPS_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    LdapUser,
    Slapd,
    group_ldif,
    ou_ldif,
)
from tests.support.smtpd import SmtpServer

pytestmark = pytest.mark.integration

SECRET = "portal-browser-secret-0123"
_counter = itertools.count()
HELPDESK_GROUP = "mfa-helpdesk"
HANK = LdapUser("hank", "hank-Helpdesk-9")
STATION = "02-00-00-00-00-01"
#: As radmfa keeps and shows it.
DEVICE = "02:00:00:00:00:01"


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    server = SmtpServer(tmp_path_factory.mktemp("smtp"), security="starttls").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def portal_daemon(
    slapd: Slapd, smtp: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RadmfaDaemon]:
    require_browser()
    slapd.add_users([HANK])
    slapd.add_ldif(ou_ldif(GROUPS_DN) + group_ldif(HELPDESK_GROUP, [HANK.dn]))
    listen = f"127.0.0.1:{free_port('tcp')}"
    config = {
        "clients": [{"name": "local", "address": "127.0.0.0/8", "secret": SECRET}],
        "ldap": {
            "servers": [slapd.url],
            "base_dn": SUFFIX,
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "timeout": 5,
        },
        "otp": {
            "mode": "auto",
            "totp": {"issuer": "Example Corp VPN"},
            "email": {
                "smtp": smtp.config(),
                "from": "radmfa <mfa@example.org>",
                "address_attribute": "mail",
            },
        },
        "lockout": {"max_failures": 5, "duration": "5m"},
        "radius": {"reject_delay": 0, "workers": 2},
        "policy": {
            "default": "required",
            "unenrolled": {"grace_days": 14},
            "rules": [{"name": "no-grace", "users": ["link*"], "mfa": "required", "grace_days": 0}],
        },
        "trusted_devices": {"days": 1},
        "portal": {
            "listen": listen,
            "public_url": f"http://{listen}/",
            "helpdesk_groups": [HELPDESK_GROUP],
        },
    }
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-portal"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


#: ``portal.reauth_after`` of the step-up daemon: short, for the test to wait past it, and
#: long enough for the browser to submit a form again after confirming.
REAUTH_AFTER = 8  # seconds: a loaded CI machine still submits within it


@pytest.fixture(scope="module")
def stepup_daemon(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadmfaDaemon]:
    require_browser()
    listen = f"127.0.0.1:{free_port('tcp')}"
    config = {
        "clients": [{"name": "local", "address": "127.0.0.0/8", "secret": SECRET}],
        "ldap": {
            "servers": [slapd.url],
            "base_dn": SUFFIX,
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "timeout": 5,
        },
        "radius": {"reject_delay": 0},
        "portal": {"listen": listen, "reauth_after": f"{REAUTH_AFTER}s"},
    }
    d = RadmfaDaemon(tmp_path_factory.mktemp("radmfa-stepup"), config)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def portal_url(daemon: RadmfaDaemon) -> str:
    return f"http://{daemon.config['portal']['listen']}"


def radclient(port: int, user: str, password: str, station: str | None = None) -> str | None:
    """The real radclient, signing its request; the reply type or None."""
    text = f'User-Name = "{user}"\nUser-Password = "{password}"\nMessage-Authenticator = 0x00\n'
    if station is not None:
        text += f'Calling-Station-Id = "{station}"\n'
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


def enroll_by_cli(daemon: RadmfaDaemon, user: str) -> pyotp.TOTP:
    """A TOTP token for ``user`` through the admin CLI (its secret read from stdin)."""
    secret = base64.b32encode(random.randbytes(20)).decode()
    done = daemon.cli("token", "add", user, "--secret", "-", input=secret + "\n")
    assert done.returncode == 0, done.stderr
    return pyotp.TOTP(secret)


def sign_in(driver, base: str, name: str, password: str, code: str) -> None:
    driver.get(f"{base}/signin")
    fill(driver, 'input[autocomplete="username"]', name)
    fill(driver, 'input[autocomplete="current-password"]', password)
    submit(driver)
    assert driver.current_url == f"{base}/signin/code"
    fill(driver, 'input[autocomplete="one-time-code"]', code)
    submit(driver)
    assert driver.current_url == f"{base}/", driver.page_source


def test_backup_codes_a_forgotten_device_sign_ins_and_a_help_desk_reset_seen_over_radius(
    portal_daemon: RadmfaDaemon, slapd: Slapd
) -> None:
    from selenium.webdriver.common.by import By

    name = f"self{next(_counter)}x{random.randrange(10**6)}"
    password = f"pw-{name}-Secret"
    slapd.add_users([LdapUser(name, password)])
    totp = enroll_by_cli(portal_daemon, name)
    hank_totp = enroll_by_cli(portal_daemon, HANK.uid)
    port = portal_daemon.port
    # a login with the code from a device remembers it: the password alone works there now
    assert radclient(port, name, password + totp.now(), STATION) == "Access-Accept"
    assert radclient(port, name, password, STATION) == "Access-Accept"
    shots = Screenshots("self-service")
    base = portal_url(portal_daemon)
    with chromium(PHONE) as driver:
        sign_in(driver, base, name, password, totp.at(time.time() + 30))
        shots.take(driver, "home")

        driver.find_element(By.CSS_SELECTOR, 'a[href="/backup"]').click()
        shots.take(driver, "backup")
        submit(driver)
        codes = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "ol.codes code")]
        assert len(codes) == 10 and "shown only this once" in driver.page_source
        shots.take(driver, "backup-codes")
        driver.get(f"{base}/backup")  # shown once: a second look shows only the count
        assert codes[0] not in driver.page_source and "10 of 10 codes left" in driver.page_source

        driver.get(f"{base}/devices")
        assert DEVICE in driver.page_source
        shots.take(driver, "devices")
        submit(driver, "form[action='/devices/forget'] button")
        assert "Device forgotten" in driver.page_source and DEVICE not in driver.page_source
        shots.take(driver, "devices-forgotten")
        # the forgotten device must give the code again
        assert radclient(port, name, password, STATION) == "Access-Challenge"

        driver.get(f"{base}/activity")
        page = driver.page_source
        assert (STATION in page or DEVICE in page) and "signed in" in page and "portal" in page
        shots.take(driver, "activity")

        driver.get(f"{base}/address/email")
        shots.take(driver, "address")

        driver.get(f"{base}/helpdesk")  # not a member
        assert "Not allowed" in driver.page_source and "Find a user" not in driver.page_source
        shots.take(driver, "helpdesk-refused")
        driver.get(f"{base}/")
        submit(driver, "form.signout button")

    shots = Screenshots("helpdesk")
    with chromium(PHONE) as driver:
        sign_in(driver, base, HANK.uid, HANK.password, hank_totp.now())
        driver.find_element(By.CSS_SELECTOR, 'a[href="/helpdesk"]').click()
        shots.take(driver, "find")
        fill(driver, "input[name=q]", name)
        submit(driver)
        submit(driver, "ul.found button")
        page = driver.page_source
        assert "Recent sign-ins" in page and (STATION in page or DEVICE in page)
        shots.take(driver, "user")
        reset = "form.act:has(input[name=action][value=reset])"
        fill(driver, f"{reset} input[name=reason]", "lost phone, ticket 4711")
        submit(driver, f"{reset} button")
        assert "the next sign-in enrolls afresh" in driver.page_source
        shots.take(driver, "reset")

        # the old code is gone: RADIUS takes the password alone again, in a new grace period
        assert radclient(port, name, password + totp.at(time.time() + 60)) == "Access-Reject"
        assert radclient(port, name, password) == "Access-Accept"

        emergency = "form[action='/helpdesk/emergency']"
        fill(driver, f"{emergency} input[name=reason]", "no phone until Monday")
        submit(driver, f"{emergency} button")
        code = driver.find_element(By.CSS_SELECTOR, ".secret-box code.secret").text
        shots.take(driver, "emergency-code")
        assert radclient(port, name, password + code) == "Access-Accept"
        assert radclient(port, name, password + code) != "Access-Accept"  # once

    with chromium(DESKTOP) as driver:
        sign_in(driver, base, HANK.uid, HANK.password, hank_totp.at(time.time() + 30))
        driver.get(f"{base}/helpdesk")
        fill(driver, "input[name=q]", name)
        submit(driver)
        submit(driver, "ul.found button")
        shots.take(driver, "user-desktop")

    audit = portal_daemon.cli("audit", "--user", name, "--kind", "admin", "--format", "json")
    assert audit.returncode == 0, audit.stderr
    assert f'"actor": "{HANK.uid} (portal)"' in audit.stdout
    for action in ("backup-codes", "device-revoke", "reset", "emergency-code"):
        assert f'"action": "{action}"' in audit.stdout, action
    assert "ticket 4711" in audit.stdout
    log = portal_daemon.log()
    assert code not in log and password not in log and codes[0] not in log


def test_two_workers_serve_every_connection_of_a_session(portal_daemon: RadmfaDaemon) -> None:
    """Signed in once, then many fresh connections (new source ports: the kernel spreads them
    over both workers' sockets): every one finds the session."""
    import http.client

    log = portal_daemon.log()
    assert set(re.findall(r"radmfa worker (\d) ready", log)) == {"0", "1"}
    assert log.count("portal: serving") == 2
    host, port = portal_daemon.config["portal"]["listen"].rsplit(":", 1)

    def request(method: str, path: str, cookies: dict[str, str], body: str = "") -> tuple:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)  # a new connection
        try:
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
            if body:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            for value in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = value.partition("=")
                cookies[name] = rest.split(";", 1)[0]
            return response.status, response.getheader("Location"), response.read()
        finally:
            conn.close()

    cookies: dict[str, str] = {}
    status, _, page = request("GET", "/signin", cookies)
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()  # type: ignore[union-attr]
    from urllib.parse import urlencode

    form = urlencode({"csrf": csrf, "username": HANK.uid, "password": HANK.password})
    status, location, _ = request("POST", "/signin", cookies, form)
    assert (status, location) == (303, "/signin/code") and "radmfa-session" in cookies
    for _ in range(40):
        status, location, page = request("GET", "/signin/code", cookies)
        assert status == 200 and b'autocomplete="one-time-code"' in page, (status, location)


def test_an_enrolment_link_by_mail_opened_in_the_browser_enrolls_once(
    portal_daemon: RadmfaDaemon, slapd: Slapd, smtp: SmtpServer
) -> None:

    name = f"link{next(_counter)}x{random.randrange(10**6)}"
    password = f"pw-{name}-Secret"
    address = f"{name}@example.org"
    slapd.add_users([LdapUser(name, password, mail=address)])
    port = portal_daemon.port
    # no grace period for this user: the password alone does nothing
    assert radclient(port, name, password) == "Access-Reject"
    made = portal_daemon.cli("enroll-link", name, "--email", "--reason", "new starter")
    assert made.returncode == 0, made.stderr
    assert address in made.stdout and "/link/" not in made.stdout  # mailed, not printed
    mail = smtp.wait_for(address)
    body = mail.get_content()
    found = re.search(r"http://\S+/link/[A-Za-z0-9_-]{43}", body)
    assert found is not None, body
    link = found.group(0)
    base = portal_url(portal_daemon)
    assert link.startswith(f"{base}/link/")
    shots = Screenshots("link")
    with chromium(PHONE) as driver:
        driver.get(link)
        assert "set up two-factor authentication" in driver.page_source
        shots.take(driver, "signin")
        fill(driver, 'input[autocomplete="username"]', name)
        fill(driver, 'input[autocomplete="current-password"]', password)
        submit(driver)
        assert driver.current_url == f"{base}/", driver.page_source
        driver.get(f"{base}/enroll/app")
        uri = read_qr(shots.take(driver, "enroll"))
        totp = pyotp.TOTP(parse_qs(urlsplit(uri).query)["secret"][0])
        fill(driver, 'input[autocomplete="one-time-code"]', totp.now())
        submit(driver)
        assert "Authenticator app added." in driver.page_source
        shots.take(driver, "home")
        assert radclient(port, name, password + totp.at(time.time() + 30)) == "Access-Accept"
        driver.get(link)  # spent
        assert "does not work any more" in driver.page_source
        shots.take(driver, "spent")
    audit = portal_daemon.cli("audit", "--user", name, "--kind", "admin", "--format", "json")
    assert audit.returncode == 0, audit.stderr
    for action in ("enroll-link", "token-add", "enroll-link-use"):
        assert f'"action": "{action}"' in audit.stdout, action
    assert "new starter" in audit.stdout
    assert link.rsplit("/", 1)[1] not in portal_daemon.log()


def test_after_reauth_after_new_backup_codes_ask_to_confirm_with_a_code_first(
    stepup_daemon: RadmfaDaemon, slapd: Slapd
) -> None:
    from selenium.webdriver.common.by import By

    name = f"stepup{next(_counter)}x{random.randrange(10**6)}"
    password = f"pw-{name}-Secret"
    slapd.add_users([LdapUser(name, password)])
    totp = enroll_by_cli(stepup_daemon, name)
    base = portal_url(stepup_daemon)
    shots = Screenshots("step-up")
    with chromium(PHONE) as driver:
        sign_in(driver, base, name, password, totp.now())
        time.sleep(REAUTH_AFTER + 1)  # the factor proven at sign-in is too old now
        driver.get(f"{base}/backup")
        submit(driver)
        assert driver.current_url == f"{base}/confirm/backup"
        assert "Confirm it is you" in driver.page_source
        assert driver.find_elements(By.CSS_SELECTOR, "ol.codes code") == []
        shots.take(driver, "confirm")
        # the next step's code: the sign-in's is spent (the window allows one step of drift)
        fill(driver, 'input[autocomplete="one-time-code"]', totp.at(time.time() + 30))
        submit(driver)
        assert driver.current_url == f"{base}/backup"
        assert "Confirmed." in driver.page_source
        submit(driver)  # the same form, submitted again
        codes = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "ol.codes code")]
        assert len(codes) == 10, driver.page_source
        shots.take(driver, "backup-codes")
    audit = stepup_daemon.cli("audit", "--user", name, "--format", "json")
    assert audit.returncode == 0, audit.stderr
    assert audit.stdout.count('"action": "backup-codes"') == 1
    assert f"{name} confirmed a second factor in the portal" in stepup_daemon.log()
