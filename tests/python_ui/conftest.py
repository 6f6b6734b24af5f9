"""Fixtures for the web UI tests: the broker's addresses (from the Rust
harness, tests/web_ui.rs), a headless Chromium or Firefox driven by
Selenium, and a place for screenshots (target/ui-screenshots/BROWSER/)."""

import base64
import json
import os
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options as ChromeOptions
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.firefox.options import Options as FirefoxOptions
from selenium.webdriver.firefox.service import Service as FirefoxService

HOST = os.environ.get("WARREN_MGMT_HOST", "127.0.0.1")
PORT = int(os.environ.get("WARREN_MGMT_PORT", "15672"))
AMQP_PORT = int(os.environ.get("WARREN_AMQP_PORT", "5672"))
BASE = f"http://{HOST}:{PORT}"
BROWSER = os.environ.get("WARREN_BROWSER", "chromium")
# The narrowest screen the browser can show (see make_driver).
PHONE_WIDTH = 500 if BROWSER == "firefox" else 390
SHOTS = os.environ.get("WARREN_SCREENSHOTS", "target/ui-screenshots")


def api(method, path, body=None, user="guest", password="guest"):
    """Call the HTTP API directly (set-up and checks beside the UI)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else None


def make_driver(width=1280, height=800, phone=False):
    """Headless Chromium or Firefox (`WARREN_BROWSER`); `phone`: a phone
    screen, 390 px wide emulated in Chromium (whose desktop window cannot
    be made that narrow), a 500 px window in Firefox."""
    if BROWSER == "firefox":
        return make_firefox(width, height, phone)
    opts = ChromeOptions()
    if phone:
        opts.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2}})
    opts.binary_location = os.environ.get("WARREN_CHROMIUM", "/usr/bin/chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(a)
    service = ChromeService(executable_path=os.environ.get("WARREN_CHROMEDRIVER", "/usr/bin/chromedriver"))
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(30)
    return d


def make_firefox(width, height, phone):
    opts = FirefoxOptions()
    opts.binary_location = os.environ.get("WARREN_FIREFOX", "/usr/bin/firefox-esr")
    opts.add_argument("-headless")
    if phone:
        # Firefox keeps a window at least 500 CSS px wide (at any device
        # pixel ratio): the narrowest it can be, under the UI's 640 px
        # phone layout break.
        width, height = PHONE_WIDTH, 844
    opts.add_argument(f"--width={width}")
    opts.add_argument(f"--height={height}")
    service = FirefoxService(executable_path=os.environ.get("WARREN_GECKODRIVER", "geckodriver"),
                             log_output=os.devnull)
    d = webdriver.Firefox(service=service, options=opts)
    d.set_window_size(width, height)
    d.set_page_load_timeout(30)
    return d


@pytest.fixture
def driver():
    d = make_driver()
    yield d
    d.quit()


@pytest.fixture
def shot():
    os.makedirs(SHOTS, exist_ok=True)

    def take(d, name):
        d.save_screenshot(os.path.join(SHOTS, name + ".png"))

    return take
