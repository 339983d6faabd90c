"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium,
for the portal's browser tests, and screenshots kept as test artifacts.

Nothing is downloaded: the driver is ``/usr/bin/chromedriver`` (Selenium Manager is not
asked), the browser ``/usr/bin/chromium``, with a fresh profile per browser. Flags keep it
off the network (no background requests, component updates, sync or QUIC) and working as
root (``--no-sandbox``, which CI needs). Tests must only open loopback URLs.

Screenshots go to ``$RADMFA_TEST_ARTIFACTS/portal/`` (default ``test-artifacts/portal/`` at
the top of the repository, which git ignores), one PNG per page, named by the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ZBARIMG = "/usr/bin/zbarimg"

#: A phone's viewport (CSS pixels): the portal must be readable there.
PHONE = (412, 915)
DESKTOP = (1280, 900)

_REPOSITORY = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RADMFA_TEST_ARTIFACTS") or _REPOSITORY / "test-artifacts")

_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--no-proxy-server",
    "--password-store=basic",
    "--hide-scrollbars",
)


def require_browser() -> None:
    """Fail (never skip: CI must run every integration test) unless Debian's chromium, its
    driver and zbarimg are installed; scripts/install-deps.sh installs them."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER, ZBARIMG) if not Path(p).exists()]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (run scripts/install-deps.sh)")


@contextmanager
def chromium(size: tuple[int, int] = PHONE) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, closed (and its profile removed) after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="radmfa-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Screenshots:
    """Saves one PNG per page of a test under the artifacts directory."""

    def __init__(self, test_name: str) -> None:
        self.directory = ARTIFACTS / "portal"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.test_name = test_name
        self.count = 0

    def take(self, driver: WebDriver, page: str) -> Path:
        self.count += 1
        path = self.directory / f"{self.test_name}-{self.count:02d}-{page}.png"
        full_page(driver)
        driver.save_screenshot(str(path))
        return path


def full_page(driver: WebDriver) -> None:
    """Grow the window to the page's height, so a screenshot shows all of it."""
    width = driver.get_window_size()["width"]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(int(height), 600))
    driver.execute_script("window.scrollTo(0, 0)")


def read_qr(png: Path) -> str:
    """The text of the one QR code in ``png``, read by zbarimg."""
    done = subprocess.run(
        [ZBARIMG, "--quiet", "--raw", str(png)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"zbarimg found no QR code in {png}: {done.stderr}"
    lines = [line for line in done.stdout.splitlines() if line]
    assert len(lines) == 1, lines
    return lines[0]
