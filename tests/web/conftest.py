"""The dashboard's test stacks and browser: the real service in front of the Proxmox-shaped test
server (the demo's scenario), its sessions in the test session's Redis, served by uvicorn over
HTTP; Debian's chromium driven headless by Debian's chromedriver through Selenium (no download:
the system binaries are named; the tests skip on a machine without them, `.ci/run` installs them)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from migration_guard.api.app import create_app
from migration_guard.demo.stack import start_demo
from migration_guard.service.guard import build_service
from tests.support.redis_server import redis_url
from tests.support.service_stack import flushed_redis, serving

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: screenshots of the browser tests (gitignored)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
#: the test Redis database of the dashboard's sessions
WEB_DB = 11


def demo_scenario() -> dict:
    text = resources.files("migration_guard").joinpath("data", "demo_scenario.json").read_text()
    return json.loads(text)


@dataclass
class Stack:
    url: str
    token: str
    app: Any

    def api(self, path: str) -> Any:
        """The JSON API's answer (bearer token): what the pages are compared with."""
        answer = httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert answer.status_code in (200, 503), answer.text
        return answer.json()


@contextmanager
def running_stack(scenario: dict | str = "demo") -> Iterator[Stack]:
    """``serve --demo``'s stack in this process: the test server with ``scenario``, the real service
    (proxmoxer over HTTPS) with its sessions in the test Redis, over real HTTP."""
    url = redis_url(WEB_DB)
    flushed_redis(url)
    demo = start_demo(None, scenario=scenario, redis_url=url)
    try:
        service = build_service(demo.settings)
        app = create_app(service, demo.settings.bearer_tokens(), refresh=True)
        with serving(app) as base:
            yield Stack(base, demo.token, app)
    finally:
        demo.stop()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack() as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
