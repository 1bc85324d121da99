"""The dashboard in a real headless Chromium against a real ``podium serve``:

- a token logs in (a wrong one is refused), and the session cookie is HttpOnly,
  SameSite=Strict; a request the cookie authenticates that changes something without
  ``X-CSRF-Token`` is refused (403), with it accepted; a read session sees no cancel
  button and no submit form;
- a run submitted from the page has its steps turn green live (the page is never
  reloaded: the event stream moves the graph);
- a failed step's error opens with its traceback, and its retries are in the timeline;
- a running run is cancelled from its page and ends cancelled;
- a firing alert is acknowledged from the alerts page;
- every page renders (light and dark, 1280 px and a phone), screenshots saved under
  ``tests/browser/screenshots/``;
- a server with no token (loopback) shows the page without a login.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from tests.browser.conftest import Server, login, shot
from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for

GREEN = {"name": "green", "mode": "sequential", "steps": [
    {"id": "fetch", "agent": "record"},
    {"id": "think", "agent": "slow", "input": {"seconds": 1.2}},
    {"id": "write", "agent": "slow", "input": {"seconds": 1.2}},
    {"id": "report", "agent": "record"}]}
STEPS = ("fetch", "think", "write", "report")
FAILING = {"name": "failing", "steps": [
    {"id": "prepare", "agent": "record"},
    {"id": "explode", "agent": "always-fail", "depends_on": ["prepare"],
     "retry": {"max_attempts": 2, "initial_delay": 0.1}},
    {"id": "aside", "agent": "record", "depends_on": ["prepare"]}]}
HANG = {"name": "hang", "steps": [{"id": "wait", "agent": "slow", "input": {"seconds": 60}}]}
ALERTING = {"name": "alerting", "steps": [{"id": "long", "agent": "slow",
                                            "input": {"seconds": 60}}]}


def _status(page: Any, step: str) -> str:
    value: str = page.locator(f'#graph [data-step="{step}"]').get_attribute("data-status")
    return value


def test_a_wrong_token_is_refused_and_a_good_one_logs_in(page: Any, server: Server) -> None:
    page.goto("/")
    page.get_by_label("API token").fill("pdm_aaaaaaaaaaaa_" + "x" * 43)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("That token is unknown, expired or revoked.").wait_for()
    assert not [c for c in page.context.cookies() if c["name"] == "podium_session"]
    shot(page, "login")

    login(page, server.tokens["write"])
    assert page.locator("#who").text_content() == "write-user (write)"
    cookies = {c["name"]: c for c in page.context.cookies()}
    session, csrf = cookies["podium_session"], cookies["podium_csrf"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/"
    assert not csrf["httpOnly"]
    assert csrf["sameSite"] == "Strict"
    assert page.get_by_role("button", name="Submit run").is_visible()

    page.get_by_role("button", name="Log out").click()
    page.get_by_label("API token").wait_for()
    assert page.context.request.get(server.url + "/runs").status == 401  # the session ended


def test_a_run_submitted_from_the_page_turns_green_live(page: Any, server: Server) -> None:
    login(page, server.tokens["write"])
    shot(page, "runs-light")
    page.get_by_label("Definition (JSON)").fill(json.dumps(GREEN))
    page.get_by_role("button", name="Submit run").click()
    page.wait_for_url(re.compile(r"#/run/"))
    url = page.url
    # The steps turn green one after the other, each seen on the page while the next is
    # not yet done: the stream moves the graph, a step at a time.
    seen = []
    for done in range(1, 5):
        page.locator(f'#graph [data-step="{STEPS[done - 1]}"][data-status="succeeded"]'
                     ).wait_for()
        seen.append([_status(page, s) for s in STEPS])
        if done == 2:
            shot(page, "run-live")
    assert seen[0][1:] != ["succeeded"] * 3, seen  # the first green while the others ran
    assert seen[1][2:] != ["succeeded"] * 2, seen
    assert seen[3] == ["succeeded"] * 4, seen
    page.locator("h1 .badge.s-succeeded").wait_for()
    assert page.url == url  # one page throughout: the stream moved it, not a reload
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    shot(page, "run-light")
    page.get_by_role("button", name="Switch to dark theme").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    shot(page, "run-dark")
    page.get_by_role("link", name="Runs", exact=True).click()
    page.locator("#runs").wait_for()
    shot(page, "runs-dark")  # the choice is kept across pages


def test_a_failed_steps_error_opens_with_its_traceback(page: Any, server: Server) -> None:
    run_id = server.submit(FAILING)
    server.until(run_id, "failed")
    login(page, server.tokens["read"])
    page.get_by_label("Search runs by id or workflow").fill(run_id)
    page.get_by_role("link", name=run_id).click()
    page.get_by_role("button", name=re.compile(r"^Step explode: failed")).click()
    detail = page.locator("#step-detail")
    detail.get_by_text("RuntimeError: explode always fails").first.wait_for()
    traceback = detail.locator(".traceback pre").text_content()
    assert traceback.startswith("Traceback (most recent call last)")
    assert "crash_agents.py" in traceback
    timeline = page.locator("#timeline").text_content()
    assert "step retry scheduled" in timeline
    assert "retry in" in timeline
    assert timeline.count("step attempt failed") == 2
    assert _status(page, "aside") == "succeeded"
    shot(page, "run-failed")


def test_a_running_run_is_cancelled_from_its_page(page: Any, server: Server) -> None:
    run_id = server.submit(HANG)
    login(page, server.tokens["write"])
    page.goto(f"/#/run/{run_id}")
    page.locator("h1 .badge.s-running").wait_for()
    page.get_by_role("button", name=f"Cancel run {run_id}").click()
    page.locator("h1 .badge.s-cancelled").wait_for()
    assert server.until(run_id, "cancelled")["status"] == "cancelled"


def test_a_firing_alert_is_acknowledged(page: Any, server: Server) -> None:
    run_id = server.submit(ALERTING)
    login(page, server.tokens["write"])
    page.get_by_role("link", name="Alerts").click()
    ack = page.get_by_role("button", name="Acknowledge alert slow-run")
    ack.wait_for(timeout=20_000)
    shot(page, "alerts")
    ack.click()
    page.get_by_text("write-user at").wait_for()
    alerts = server.api("GET", "/alerts").json()
    mine = [a for a in alerts if a["run_id"] == run_id]
    assert [a["acked_by"] for a in mine] == ["write-user"], alerts
    server.api("POST", f"/runs/{run_id}/cancel")


def test_a_read_session_has_no_cancel_and_csrf_guards_the_cookie(page: Any,
                                                                  server: Server) -> None:
    run_id = server.submit(HANG)
    login(page, server.tokens["read"])
    assert page.get_by_role("button", name="Submit run").count() == 0
    page.goto(f"/#/run/{run_id}")
    page.locator("h1 .badge.s-running").wait_for()
    page.locator('#graph [data-step="wait"]').wait_for()
    assert page.get_by_role("button", name=re.compile("^Cancel")).count() == 0
    # The read session may not cancel even with the CSRF header: its scope is too small.
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "podium_csrf")
    r = page.context.request.post(f"{server.url}/runs/{run_id}/cancel",
                                  headers={"X-CSRF-Token": csrf})
    assert r.status == 403
    assert r.json()["error"]["type"] == "forbidden"

    login(page, server.tokens["write"])
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "podium_csrf")
    forged = page.context.request.post(f"{server.url}/runs/{run_id}/cancel")
    assert forged.status == 403
    assert forged.json()["error"]["type"] == "csrf"
    wrong = page.context.request.post(f"{server.url}/runs/{run_id}/cancel",
                                      headers={"X-CSRF-Token": csrf[:-2] + "xx"})
    assert wrong.status == 403
    assert server.api("GET", f"/runs/{run_id}").json()["status"] == "running"
    ok = page.context.request.post(f"{server.url}/runs/{run_id}/cancel",
                                   headers={"X-CSRF-Token": csrf})
    assert ok.status == 202, ok.text()
    server.until(run_id, "cancelled")


def test_every_page_renders_in_both_themes_and_on_a_phone(browser: Any,
                                                          server: Server) -> None:
    run_id = server.submit(FAILING)
    server.until(run_id, "failed")
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      color_scheme=scheme, base_url=server.url)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        login(page, server.tokens["admin"])
        page.get_by_role("link", name="Agents").click()
        page.locator('#agents [data-agent="record"]').wait_for()
        shot(page, f"agents-{scheme}")
        page.get_by_role("link", name="Failures").click()
        page.locator("#top-errors").get_by_text("RuntimeError: explode always fails").wait_for()
        shot(page, f"failures-{scheme}")
        page.get_by_role("link", name="Alerts").click()
        page.locator("#alerts, main p.muted").first.wait_for()
        shot(page, f"alerts-{scheme}")
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert (bg == "rgb(17, 20, 24)") == (scheme == "dark"), bg
        assert not errors, errors
        context.close()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True, base_url=server.url)
    page = phone.new_page()
    login(page, server.tokens["write"])
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "runs-phone")
    page.goto(f"/#/run/{run_id}")
    page.locator('#graph [data-step="explode"][data-status="failed"]').wait_for()
    shot(page, "run-phone")
    phone.close()


def test_the_page_is_served_with_its_guards(server: Server) -> None:
    r = httpx.get(server.url + "/", timeout=10)
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert httpx.get(server.url + "/ui/app.js", timeout=10).headers[
        "content-type"].startswith("text/javascript")
    for bad in ("/ui/..%2Fapi.py", "/ui/.env", "/ui/nothing.js"):
        assert httpx.get(server.url + bad, timeout=10).status_code == 404, bad
    assert httpx.get(server.url + "/runs", timeout=10).status_code == 401
    assert httpx.get(server.url + "/session", timeout=10).json() == {"open": False,
                                                                    "user": None}
    r = httpx.post(server.url + "/session", json={"token": "nope"}, timeout=10)
    assert r.status_code == 401
    assert "set-cookie" not in r.headers
    # A bearer request is judged by its header alone: no CSRF header is asked of it.
    run_id = server.submit(HANG)
    assert server.api("POST", f"/runs/{run_id}/cancel").status_code == 202


def test_an_open_server_needs_no_login(browser: Any, tmp_path: Path) -> None:
    """No token exists and the bind is loopback: the page works without logging in."""
    sb = Sandbox(tmp_path)
    try:
        port = free_port()
        proc = sb.spawn("serve", "--port", str(port), agents=True)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, sb.stderr_of(proc)
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, 30, 0.05), sb.stderr_of(proc)
        context = browser.new_context(base_url=url)
        page = context.new_page()
        page.goto("/")
        page.locator("#runs").wait_for()
        assert page.locator("#who").text_content() == "open server (no tokens)"
        assert page.get_by_label("API token").is_hidden()
        assert page.get_by_role("button", name="Submit run").is_visible()
        context.close()
    finally:
        sb.cleanup()
