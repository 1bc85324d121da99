"""Alert delivery to real HTTP endpoints: a local webhook server and a real Alertmanager.

The webhook server is ``http.server`` on 127.0.0.1 in a thread; it records
every POST (headers and exact body) and answers as a test scripts it (a 500
first, or a 5 s stall). Alertmanager is the Debian ``prometheus-alertmanager``
binary, started on a free loopback port with clustering disabled; it forwards
what it receives to the same kind of local webhook, which is how a resolved
alert's ``endsAt`` is seen (Alertmanager's own API stops listing an alert
once it has ended).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium import Engine, EngineConfig, FakeClock, SystemClock, Unavailable
from podium.clock import Clock
from podium.definition import workflow_from_dict
from podium.definition.alerts import AlertsFile
from podium.events import (
    ErrorInfo,
    RunFinished,
    RunStarted,
    StepAttemptFailed,
    StepSucceeded,
)
from podium.observe.alerts import AlertManager
from podium.observe.receivers import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from podium.runtime import StoreLedger
from podium.store import MemoryStore
from tests.conftest import registry_of
from tests.integration.observe_tools import free_port, get, require_tool, stop, wait_until

SECRET_ENV = "PODIUM_TEST_WEBHOOK_SECRET"  # noqa: S105 - the name of a variable
SECRET = "s3cr3t-for-the-test"  # noqa: S105 - a test key for a test server


class HookServer:
    """A local HTTP server that records POSTs; answers with ``statuses`` in order, then 200."""

    def __init__(self, statuses: tuple[int, ...] = (), stall_s: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.stall_s = stall_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._release = threading.Event()
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    with hook._lock:
                        hook.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                              body))
                        status = hook.statuses.pop(0) if hook.statuses else 200
                    if hook.stall_s:
                        hook._release.wait(hook.stall_s)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client gave up (a stalled answer): nothing to do

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def bodies(self) -> list[Any]:
        with self._lock:
            return [json.loads(b) for _h, b in self.requests]


def signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    """What Podium's scheme gives for this delivery: HMAC-SHA256 of "{timestamp}." + body."""
    signed = headers[TIMESTAMP_HEADER.lower()].encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def iso(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def alerts_config(receiver: dict[str, Any], *, rules: list[dict[str, Any]] | None = None,
                  severity: str = "critical") -> AlertsFile:
    return AlertsFile.model_validate({
        "rules": rules if rules is not None else [
            {"name": "load-failing", "kind": "consecutive_failures", "count": 1}],
        "receivers": [receiver],
        "escalation": {"page": {"levels": [
            {"after": 0, "severity": severity, "receivers": [receiver["name"]]}]}},
        "default_escalation": "page",
    })


def failure(clock: Clock, run_id: str = "r1", step: str = "load",
            message: str = "boom") -> StepAttemptFailed:
    return StepAttemptFailed(run_id=run_id, ts=clock.now(), step_id=step, attempt=1,
                             agent_id="loader", error=ErrorInfo("agent_error", message),
                             duration_s=0.01)


@pytest.fixture
async def managers() -> AsyncIterator[list[AlertManager]]:
    made: list[AlertManager] = []
    yield made
    for m in made:
        await m.aclose(timeout_s=0.5)


# --- webhook ------------------------------------------------------------------------


async def test_webhook_posts_the_alert_as_json_signed_with_the_secret_from_its_env_var(
    managers: list[AlertManager], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    clock = FakeClock()
    with HookServer() as hook:
        manager = AlertManager(alerts_config({
            "name": "hook", "type": "webhook", "url": hook.url + "/podium",
            "secret_env": SECRET_ENV, "headers": {"X-Team": "data"}}), StoreLedger(MemoryStore()),
            clock=clock)
        managers.append(manager)
        manager.start()
        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="etl", version=1))
        manager(failure(clock))
        await manager.dispatcher.drain()
        assert len(hook.requests) == 1
        headers, body = hook.requests[0]
        assert headers["content-type"] == "application/json"
        assert headers["x-team"] == "data"
        assert headers[TIMESTAMP_HEADER.lower()] == str(int(clock.now()))
        assert headers[SIGNATURE_HEADER.lower()] == signature(SECRET, headers, body)
        assert headers[SIGNATURE_HEADER.lower()] != signature("another secret", headers, body)

        doc = json.loads(body)
        assert doc["status"] == "firing"
        assert doc["severity"] == "critical"
        assert doc["level"] == 0
        alert = doc["alert"]
        assert alert["key"] == "load-failing:workflow=etl"
        assert alert["rule"] == "load-failing"
        assert alert["kind"] == "consecutive_failures"
        assert alert["workflow"] == "etl"
        assert alert["labels"] == {"workflow": "etl"}
        assert alert["status"] == "firing"
        assert alert["fired_at"] == clock.now()
        assert "1 consecutive failures" in alert["summary"]
        assert SECRET not in body.decode()

        clock.advance(30)
        manager(StepSucceeded(run_id="r1", ts=clock.now(), step_id="load", attempt=2,
                              agent_id="loader", output=None, duration_s=0.0))
        await manager.dispatcher.drain()
        assert [d["status"] for d in hook.bodies()] == ["firing", "resolved"]
        resolved = hook.bodies()[1]["alert"]
        assert resolved["resolved_at"] == clock.now()
        headers, body = hook.requests[1]
        assert headers[TIMESTAMP_HEADER.lower()] == str(int(clock.now()))
        assert headers[SIGNATURE_HEADER.lower()] == signature(SECRET, headers, body)
        # Two notifications, two event ids; each is also in its signed body.
        ids = [h[EVENT_ID_HEADER.lower()] for h, _b in hook.requests]
        assert ids == [d["id"] for d in hook.bodies()]
        assert len(set(ids)) == 2


async def test_webhook_without_a_secret_is_sent_unsigned(
    managers: list[AlertManager], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    clock = FakeClock()
    with HookServer() as hook:
        manager = AlertManager(alerts_config({"name": "hook", "type": "webhook",
                                              "url": hook.url, "secret_env": SECRET_ENV}),
                               None, clock=clock)
        managers.append(manager)
        manager.start()
        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="etl", version=1))
        manager(failure(clock))
        await manager.dispatcher.drain()
        assert len(hook.requests) == 1
        assert SIGNATURE_HEADER.lower() not in hook.requests[0][0]
        assert TIMESTAMP_HEADER.lower() not in hook.requests[0][0]
        assert hook.requests[0][0][EVENT_ID_HEADER.lower()] == hook.bodies()[0]["id"]


async def test_a_failed_webhook_delivery_is_retried_with_backoff_and_then_delivered(
    managers: list[AlertManager], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    clock = FakeClock()  # the dispatcher waits on the manager's clock: backoff takes no time
    with HookServer(statuses=(500, 503)) as hook:
        manager = AlertManager(alerts_config({"name": "hook", "type": "webhook",
                                              "url": hook.url, "secret_env": SECRET_ENV}),
                               None, clock=clock)
        managers.append(manager)
        manager.start()
        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="etl", version=1))
        manager(failure(clock))
        await manager.dispatcher.drain()
        assert len(hook.requests) == 3
        assert clock.sleeps == [0.5, 1.0]  # capped exponential backoff between tries
        assert len({body for _h, body in hook.requests}) == 1  # the same notification each time
        # One event id for every attempt (a receiver de-duplicates on it); each attempt
        # is signed with the time it was sent, so a retry after a backoff is still fresh.
        assert len({h[EVENT_ID_HEADER.lower()] for h, _b in hook.requests}) == 1
        assert [int(h[TIMESTAMP_HEADER.lower()]) - int(hook.requests[0][0][
            TIMESTAMP_HEADER.lower()]) for h, _b in hook.requests] == [0, 0, 1]
        for headers, body in hook.requests:
            assert headers[SIGNATURE_HEADER.lower()] == signature(SECRET, headers, body)
        assert manager.dispatcher.delivered == {"hook": 1}
        assert manager.dispatcher.failed == {}


def readme_verifier() -> Any:
    """The receiver-side check exactly as the README prints it (our own file, run as is)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("\n", 1)[1] for b in readme.split("```python")[1:]]
    code = next(b.split("```", 1)[0] for b in blocks if "def verify_podium_webhook" in b)
    assert len(code.strip().splitlines()) <= 12, "the README promises a short check"
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our README's snippet
    return namespace["verify_podium_webhook"]


async def deliver(clock: Clock, managers: list[AlertManager]) -> tuple[httpx.Headers, bytes]:
    """One real notification, signed by Podium at ``clock``'s time, as the receiver got it."""
    with HookServer() as hook:
        manager = AlertManager(alerts_config({"name": "hook", "type": "webhook",
                                              "url": hook.url, "secret_env": SECRET_ENV}),
                               None, clock=clock)
        managers.append(manager)
        manager.start()
        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="etl", version=1))
        manager(failure(clock))
        await manager.dispatcher.drain()
        assert len(hook.requests) == 1
        headers, body = hook.requests[0]
    return httpx.Headers(headers), body


async def test_the_readmes_receiver_check_accepts_a_fresh_notification_and_refuses_the_rest(
    managers: list[AlertManager], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    verify = readme_verifier()
    key = SECRET.encode()
    headers, body = await deliver(FakeClock(start=time.time()), managers)
    assert verify(key, headers, body) is True

    # Altered body, another secret, no signature, no timestamp.
    assert verify(key, headers, body.replace(b"firing", b"resolved")) is False
    assert verify(b"another secret", headers, body) is False
    assert verify(key, httpx.Headers({k: v for k, v in headers.items()
                                      if k != SIGNATURE_HEADER.lower()}), body) is False
    assert verify(key, httpx.Headers({k: v for k, v in headers.items()
                                      if k != TIMESTAMP_HEADER.lower()}), body) is False

    # A notification captured 6 minutes ago and sent again: genuine, but too old ...
    old_headers, old_body = await deliver(FakeClock(start=time.time() - 360), managers)
    assert verify(key, old_headers, old_body) is False
    # ... and a fresh timestamp pasted on it breaks the signature.
    pasted = httpx.Headers({**old_headers, TIMESTAMP_HEADER: str(int(time.time()))})
    assert verify(key, pasted, old_body) is False
    # Within the tolerance (4 minutes old) it is accepted: the event id de-duplicates.
    recent_headers, recent_body = await deliver(FakeClock(start=time.time() - 240), managers)
    assert verify(key, recent_headers, recent_body) is True


async def test_the_webhook_secret_stays_out_of_logs_errors_and_payloads(
    managers: list[AlertManager], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    with HookServer(statuses=(500,) * 10) as hook:
        manager = AlertManager(alerts_config({"name": "hook", "type": "webhook",
                                              "url": hook.url, "secret_env": SECRET_ENV,
                                              "max_retries": 2}), None, clock=clock)
        managers.append(manager)
        manager.start()
        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="etl", version=1))
        manager(failure(clock))
        await manager.dispatcher.drain()
    assert manager.dispatcher.failed == {"hook": 1}
    assert "gave up" in caplog.text
    assert SECRET not in caplog.text
    for headers, body in hook.requests:
        assert SECRET not in body.decode()
        assert all(SECRET not in value for value in headers.values())


async def test_a_webhook_that_keeps_failing_is_given_up_after_max_retries(
    managers: list[AlertManager],
) -> None:
    clock = FakeClock()
    with HookServer(statuses=(500,) * 10) as hook:
        manager = AlertManager(alerts_config({"name": "hook", "type": "webhook",
                                              "url": hook.url, "max_retries": 2}),
                               None, clock=clock)
        managers.append(manager)
        manager.start()
        manager(RunStarted(run_id="r1", ts=clock.now(), workflow="etl", version=1))
        manager(failure(clock))
        await manager.dispatcher.drain()
        assert len(hook.requests) == 3  # one try and two retries
        assert clock.sleeps == [0.5, 1.0]
        assert manager.dispatcher.failed == {"hook": 1}
        assert manager.dispatcher.delivered == {}


# --- a receiver never slows a run ------------------------------------------------------

WORKFLOW = {
    "name": "busy",
    "mode": "sequential",
    "steps": [
        {"id": "one", "agent": "ok"},
        {"id": "two", "agent": "flaky",
         "retry": {"max_attempts": 3, "initial_delay": "10ms", "jitter": "none"}},
        {"id": "three", "agent": "ok"},
        {"id": "four", "agent": "flaky",
         "retry": {"max_attempts": 3, "initial_delay": "10ms", "jitter": "none"}},
    ],
}


def ok(task: Any) -> Any:
    return {"step": task.step_id}


def flaky(task: Any) -> Any:
    if task.attempt < 3:
        raise Unavailable(f"busy ({task.attempt})")
    return {"attempt": task.attempt}


@pytest.fixture(params=["stalled server", "closed port"])
def dead_webhook(request: pytest.FixtureRequest) -> Iterator[tuple[str, HookServer | None]]:
    if request.param == "closed port":
        yield f"http://127.0.0.1:{free_port()}/hook", None
        return
    with HookServer(stall_s=5.0) as hook:
        yield hook.url + "/hook", hook


async def test_a_stalled_or_dead_webhook_never_delays_a_running_workflow(
    dead_webhook: tuple[str, HookServer | None],
) -> None:
    url, hook = dead_webhook
    config = alerts_config({"name": "hook", "type": "webhook", "url": url}, rules=[
        # fires at the first failed attempt of each step, resolves on its success
        {"name": "step-failing", "kind": "consecutive_failures", "count": 1, "scope": "step"},
        {"name": "slow-run", "kind": "sla", "after": "1ms"},
    ])
    engine = Engine(EngineConfig(registry=registry_of(ok=ok, flaky=flaky), store=MemoryStore(),
                                 clock=SystemClock()))
    manager = AlertManager(config, StoreLedger(engine.store), clock=engine.clock,
                           emit=engine.bus.emit,
                           tick_s=0.01)
    engine.bus.subscribe(manager)
    manager.start()
    try:
        async with engine:
            t0 = time.monotonic()
            run = await engine.run(workflow_from_dict(WORKFLOW))
            elapsed = time.monotonic() - t0
        assert run.status == "succeeded"
        # The server takes 5 s to answer each POST (or nobody listens, and each delivery is
        # retried with backoff): a run that waited on even one delivery would take 5 s.
        assert elapsed < 2.0, f"the run took {elapsed:.2f}s"
        if hook is not None:
            for _ in range(200):
                if hook.requests:
                    break
                await asyncio.sleep(0.02)
            assert hook.requests, "the webhook was never even called"
        # notifications were queued for delivery (firing and resolved for each flaky step)
        assert not manager.dispatcher.delivered
    finally:
        t1 = time.monotonic()
        await manager.aclose(timeout_s=0.2)
        assert time.monotonic() - t1 < 2.0  # closing gives up on the stuck delivery too


def test_podium_run_with_a_stalled_webhook_finishes_its_run_promptly(tmp_path: Path) -> None:
    """The CLI: a webhook that answers after 5 s does not hold the run (or the exit) for it."""
    (tmp_path / "hook_agents.py").write_text(
        "def flaky(task):\n"
        "    if task.attempt < 2:\n"
        "        raise RuntimeError('first try fails')\n"
        "    return 'ok'\n", encoding="utf-8")
    (tmp_path / "podium.yaml").write_text(
        "agents:\n  - {id: flake, capabilities: [flaky], python: 'hook_agents:flaky'}\n",
        encoding="utf-8")
    (tmp_path / "wf.yaml").write_text(
        "name: hooked\nsteps:\n  - id: a\n    agent: flaky\n"
        "    retry: {max_attempts: 2, initial_delay: 10ms}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    with HookServer(stall_s=5.0) as hook:
        (tmp_path / "alerts.yaml").write_text(
            "rules:\n  - {name: a-failing, kind: consecutive_failures, count: 1,"
            " escalation: hook}\n"
            f"receivers:\n  - {{name: hook, type: webhook, url: '{hook.url}/x'}}\n"
            "escalation:\n  hook:\n    levels: [{after: 0, receivers: [hook]}]\n",
            encoding="utf-8")
        t0 = time.monotonic()
        res = subprocess.run(
            [sys.executable, "-m", "podium", "run", "wf.yaml", "--alerts", "alerts.yaml",
             "--db", f"sqlite:///{tmp_path / 'p.db'}", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
        elapsed = time.monotonic() - t0
        assert res.returncode == 0, res
        doc = json.loads(res.stdout)
        assert doc["status"] == "succeeded"
        assert doc["steps"]["a"]["attempts"] == 2
        assert hook.requests, "the alert was never sent"
        # The run itself (first attempt to success) took no time waiting on the webhook.
        step = doc["steps"]["a"]
        run_s = (parse_iso(step["finished_at"]) - parse_iso(step["started_at"])).total_seconds()
        assert run_s < 2.0
        # The process gives its queued alerts a short grace period, never the 5 s stall
        # times every notification and retry.
        assert elapsed < 15.0


# --- Alertmanager -------------------------------------------------------------------

RESOLVE_TIMEOUT_S = 5  # Alertmanager ends an alert that is not re-sent within this
AM_CONFIG = """\
global:
  resolve_timeout: {resolve_timeout}
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {hook}/am
        send_resolved: true
"""


class Alertmanager:
    def __init__(self, url: str, hook: HookServer) -> None:
        self.url = url
        self.hook = hook

    def alerts(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in get(f"{self.url}/api/v2/alerts").json()
                if a["labels"].get("alertname") == alertname]

    def forwarded(self, alertname: str) -> list[dict[str, Any]]:
        """What Alertmanager sent on to its own webhook receiver, per alert, in order."""
        return [a for doc in self.hook.bodies() for a in doc.get("alerts", [])
                if a["labels"].get("alertname") == alertname]


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    binary = require_tool("prometheus-alertmanager")
    folder = tmp_path_factory.mktemp("alertmanager")
    with HookServer() as hook:
        config = folder / "alertmanager.yml"
        config.write_text(AM_CONFIG.format(resolve_timeout=f"{RESOLVE_TIMEOUT_S}s", hook=hook.url),
                          encoding="utf-8")
        port = free_port()
        with (folder / "alertmanager.log").open("w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                 f"--storage.path={folder / 'data'}", "--cluster.listen-address=",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_until(lambda: proc.poll() is not None or
                           get(f"{url}/-/ready").status_code == 200, 30)
                assert proc.poll() is None, (folder / "alertmanager.log").read_text()
                yield Alertmanager(url, hook)
            finally:
                stop(proc)


def am_manager(am: Alertmanager, clock: Clock, rules: list[dict[str, Any]]) -> AlertManager:
    manager = AlertManager(alerts_config({"name": "am", "type": "alertmanager", "url": am.url},
                                         rules=rules), StoreLedger(store := MemoryStore()),
                           clock=clock)
    STORES[id(manager)] = store  # the test reads the alert's history back from it
    return manager


STORES: dict[int, MemoryStore] = {}


async def test_alertmanager_receives_the_alert_with_its_labels_and_a_resolve_sets_ends_at(
    alertmanager: Alertmanager, managers: list[AlertManager],
) -> None:
    am = alertmanager
    clock = FakeClock(start=time.time() - 600)  # recent past, as Alertmanager expects
    manager = am_manager(am, clock, [{"name": "etl-slow", "kind": "sla", "after": "1m"}])
    managers.append(manager)
    manager.start()
    manager(RunStarted(run_id="run-am-1", ts=clock.now(), workflow="etl", version=1))
    clock.advance(61)
    await manager.tick()
    await manager.dispatcher.drain()
    assert manager.dispatcher.delivered == {"am": 1}
    fired_at = manager.active["etl-slow:run-am-1"].fired_at

    [alert] = await asyncio.to_thread(wait_until, lambda: am.alerts("etl-slow"), 10)
    assert alert["labels"] == {
        "alertname": "etl-slow", "severity": "critical", "workflow": "etl",
        "kind": "sla", "podium_key": "etl-slow:run-am-1"}
    assert "past its SLA of 1m" in alert["annotations"]["summary"]
    assert alert["annotations"]["escalation_level"] == "0"
    assert alert["status"]["state"] == "active"
    assert abs((parse_iso(alert["startsAt"]) - iso(fired_at)).total_seconds()) < 0.01
    # ...and Alertmanager routed it on to its own receiver
    firing = await asyncio.to_thread(wait_until, lambda: am.forwarded("etl-slow"), 10)
    assert firing[0]["status"] == "firing"
    assert firing[0]["labels"]["podium_key"] == "etl-slow:run-am-1"

    clock.advance(30)
    manager(RunFinished(run_id="run-am-1", ts=clock.now(), workflow="etl",
                        status="succeeded"))
    resolved_at = clock.now()
    await manager.dispatcher.drain()
    assert manager.dispatcher.delivered == {"am": 2}

    def ended() -> list[dict[str, Any]]:
        return [a for a in am.forwarded("etl-slow") if a["status"] == "resolved"]

    [done] = await asyncio.to_thread(wait_until, ended, 15)
    assert abs((parse_iso(done["endsAt"]) - iso(resolved_at)).total_seconds()) < 0.01
    assert done["labels"]["podium_key"] == "etl-slow:run-am-1"
    assert am.alerts("etl-slow") == []  # no longer active in Alertmanager


async def test_a_long_firing_alert_stays_active_in_alertmanager_past_its_resolve_timeout(
    alertmanager: Alertmanager, managers: list[AlertManager],
) -> None:
    """Alertmanager ends an alert nobody re-sends within resolve_timeout (5 s here)."""
    am = alertmanager
    manager = am_manager(am, SystemClock(), [
        {"name": "agent-streak", "kind": "consecutive_failures", "count": 1}])
    manager.tick_s = 0.1
    manager.dispatcher.receivers["am"].refresh_s = 0.5  # type: ignore[attr-defined]
    managers.append(manager)
    manager.start()
    clock = manager.clock
    manager(RunStarted(run_id="r-long", ts=clock.now(), workflow="etl", version=1))
    manager(failure(clock, run_id="r-long"))
    await asyncio.to_thread(wait_until, lambda: am.alerts("agent-streak"), 10)
    await asyncio.sleep(RESOLVE_TIMEOUT_S + 1.5)
    [alert] = am.alerts("agent-streak")
    assert alert["status"]["state"] == "active"
    assert parse_iso(alert["endsAt"]) > dt.datetime.now(tz=dt.UTC)
    assert not [a for a in am.forwarded("agent-streak") if a["status"] == "resolved"]
    assert manager.dispatcher.delivered["am"] >= 6  # re-sent, not re-notified to a person
    history = await STORES[id(manager)].alert_history("agent-streak:workflow=etl")
    assert [h["what"] for h in history] == ["fired", "notified"]
