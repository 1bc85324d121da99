"""The dashboard's browser tests: a real ``podium serve`` and a headless Chromium.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright (the ``dev``
extra) through ``executable_path``: no browser is downloaded. Without either, a test
is skipped with the install line, except in CI (``CI=true``) or with
``PODIUM_REQUIRE_BROWSER=1`` (``.ci/run`` sets it): then it fails.

Screenshots go to ``tests/browser/screenshots/`` (git-ignored; the README names it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for

REQUIRE_ENV = "PODIUM_REQUIRE_BROWSER"
INSTALL = "apt-get install chromium && pip install playwright (or: pip install -e '.[dev]')"
SHOTS = Path(__file__).resolve().parent / "screenshots"
ALERTS = """\
rules:
  - {name: slow-run, kind: sla, workflow: alerting, after: 1s, severity: warning}
"""


def _missing(why: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1" or os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why}; CI or {REQUIRE_ENV}=1 requires the browser tests to run")
    pytest.skip(f"{why} (fix: {INSTALL})")


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    _missing("no chromium on PATH")
    raise AssertionError("unreachable")


class Server:
    """A ``podium serve`` on 127.0.0.1 over a SQLite file, with the test agents."""

    def __init__(self, sb: Sandbox, url: str, tokens: dict[str, str]) -> None:
        self.sb, self.url, self.tokens = sb, url, tokens

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.url + path, json=body, timeout=30,
                             headers={"Authorization": f"Bearer {self.tokens['admin']}"})

    def submit(self, definition: dict[str, Any]) -> str:
        r = self.api("POST", "/runs", {"definition": definition})
        assert r.status_code == 202, r.text
        run_id: str = r.json()["run_id"]
        return run_id

    def until(self, run_id: str, *statuses: str, within: float = 30) -> dict[str, Any]:
        doc: dict[str, Any] = {}

        def done() -> bool:
            nonlocal doc
            doc = self.api("GET", f"/runs/{run_id}").json()
            return doc.get("status") in statuses

        assert wait_for(done, within, 0.1), doc
        return doc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sb = Sandbox(tmp_path_factory.mktemp("dash"))
    try:
        tokens = {}
        for scope in ("admin", "write", "read"):
            out = sb.podium("token", "create", "--scope", scope, "--name", f"{scope}-user")
            assert out.returncode == 0, out.stderr
            tokens[scope] = out.stdout.strip()
        alerts = sb.root / "alerts.yaml"
        alerts.write_text(ALERTS)
        port = free_port()
        proc = sb.spawn("serve", "--port", str(port), "--alerts", str(alerts), agents=True)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, sb.stderr_of(proc)
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, 30, 0.05), sb.stderr_of(proc)
        yield Server(sb, url, tokens)
    finally:
        sb.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280 px, light theme."""
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  color_scheme="light", base_url=server.url)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
        assert not errors, errors  # no script error on any page a test went through
    finally:
        context.close()


def login(page: Any, token: str) -> None:
    """Log in afresh (cookies of an earlier login dropped) and wait for the runs page."""
    page.context.clear_cookies()
    page.goto("/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.locator("#runs").wait_for()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
