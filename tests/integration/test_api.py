"""``podium serve``'s HTTP API, against a real server process on 127.0.0.1 and a real
SQLite file, with httpx as the client:

- submit → run → events → result; the same ``Idempotency-Key`` never starts a second
  run (and with another input is refused);
- a stream dropped half-way and resumed with ``Last-Event-ID`` misses nothing and
  repeats nothing;
- cancel of a running run; pages of runs walked with the cursor, each run once;
- workflows registered (checked as ``podium validate`` checks them), listed, drawn,
  and run by name;
- bad input answers in the one error shape: a malformed definition (422 with the
  problems), an input the schema refuses, an unknown run (404), an oversize body (413);
- tokens: none → 401, a scope too small → 403, expired or revoked → 401; health and
  readiness stay open; ``--host 0.0.0.0`` with no token is refused at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from subprocess import Popen
from typing import Any

import httpx
import pytest

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for

RECORD = {"name": "rec", "version": 1, "mode": "sequential",
          "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
          "steps": [{"id": "a", "agent": "record", "input": {"n": "${{ input.n }}"}},
                    {"id": "b", "agent": "record"}],
          "output": {"n": "${{ steps.a.output.input.n }}"}}
SLOW = {"name": "slow", "mode": "sequential", "steps": [
    {"id": "a", "agent": "record"},
    {"id": "b", "agent": "slow", "input": {"seconds": 0.6}},
    {"id": "c", "agent": "record"},
    {"id": "d", "agent": "slow", "input": {"seconds": 0.6}},
    {"id": "e", "agent": "record"}]}
HANG = {"name": "hang", "steps": [{"id": "h", "agent": "slow", "input": {"seconds": 60}}]}


@dataclass
class Api:
    url: str
    proc: Popen[bytes]
    token: str | None = None

    def headers(self, token: str | None = None) -> dict[str, str]:
        t = token or self.token
        return {"Authorization": f"Bearer {t}"} if t else {}

    def get(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers(token), timeout=30, **kw)

    def post(self, path: str, body: Any = None, token: str | None = None,
             headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body,
                          headers={**self.headers(token), **(headers or {})}, timeout=30, **kw)

    def until_status(self, run_id: str, *statuses: str, within: float = 30) -> dict[str, Any]:
        doc: dict[str, Any] = {}

        def done() -> bool:
            nonlocal doc
            doc = self.get(f"/runs/{run_id}").json()
            return doc.get("status") in statuses

        assert wait_for(done, within, 0.05), doc
        return doc


def start(sb: Sandbox, *extra: str, db: str | None = None) -> Api:
    port = free_port()
    proc = sb.spawn("serve", "--port", str(port), *extra, agents=True, db=db)
    return ready(sb, proc, port)


def ready(sb: Sandbox, proc: subprocess.Popen[bytes], port: int) -> Api:
    """The server ``proc`` on ``port``, once it answers /readyz."""
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, sb.stderr_of(proc)
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(up, 30, 0.05), sb.stderr_of(proc)
    return Api(url, proc)


@pytest.fixture
def api(sandbox: Sandbox) -> Api:
    return start(sandbox)  # the sandbox kills it after the test


def sse(api: Api, run_id: str, last: int | None = None, stop_after: int | None = None,
        ) -> list[tuple[int | None, str, dict[str, Any]]]:
    """Read a run's stream: (id, event, data) until ``end`` or ``stop_after`` events."""
    headers = {**api.headers(), **({"Last-Event-ID": str(last)} if last is not None else {})}
    out: list[tuple[int | None, str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{api.url}/runs/{run_id}/events", headers=headers,
                      timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if not fields:
                continue
            eid = int(fields["id"]) if "id" in fields else None
            out.append((eid, fields.get("event", ""), json.loads(fields.get("data", "{}"))))
            fields = {}
            if out[-1][1] == "end" or (stop_after is not None and len(out) >= stop_after):
                break
    return out


def test_submit_then_events_then_result_and_idempotent_submits(api: Api,
                                                               sandbox: Sandbox) -> None:
    r = api.post("/runs", {"definition": RECORD, "input": {"n": 7}},
                 headers={"Idempotency-Key": "order-7"})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert r.json()["created"] is True
    assert r.headers["location"] == f"/runs/{run_id}"
    events = sse(api, run_id)
    assert events[-1][1:] == ("end", {"status": "succeeded"})
    ids = [e[0] for e in events[:-1]]
    assert ids == list(range(1, len(ids) + 1))
    types = [e[1] for e in events]
    assert types[0] == "run_started", types
    assert "step_succeeded" in types
    doc = api.get(f"/runs/{run_id}").json()
    assert (doc["status"], doc["output"]) == ("succeeded", {"n": 7})
    assert [e["type"] for e in doc["timeline"]] == types[:-1]

    again = api.post("/runs", {"definition": RECORD, "input": {"n": 7}},
                     headers={"Idempotency-Key": "order-7"})
    assert again.status_code == 200, again.text
    assert (again.json()["run_id"], again.json()["created"]) == (run_id, False)
    other = api.post("/runs", {"definition": RECORD, "input": {"n": 8}},
                     headers={"Idempotency-Key": "order-7"})
    assert other.status_code == 409
    assert other.json()["error"]["type"] == "idempotency_conflict"
    assert Counter(x.step_id for x in sandbox.executions()) == Counter({"a": 1, "b": 1})
    assert len(sandbox.run_ids()) == 1


def test_a_dropped_stream_resumes_without_a_gap_or_a_repeat(api: Api) -> None:
    run_id = api.post("/runs", {"definition": SLOW}).json()["run_id"]
    first = sse(api, run_id, stop_after=3)
    assert [e[0] for e in first] == [1, 2, 3]
    rest = sse(api, run_id, last=first[-1][0])
    assert rest[-1][1] == "end"
    ids = [e[0] for e in first + rest[:-1]]
    assert ids == list(range(1, len(ids) + 1))  # each once, in order
    timeline = api.get(f"/runs/{run_id}").json()["timeline"]
    assert [e[1] for e in first + rest[:-1]] == [e["type"] for e in timeline]
    tail = sse(api, run_id, last=len(timeline))  # a finished run: only the end
    assert [e[1] for e in tail] == ["end"]


def test_cancel_a_running_run_and_walk_pages_of_runs(api: Api, sandbox: Sandbox) -> None:
    run_id = api.post("/runs", {"definition": HANG}).json()["run_id"]
    assert wait_for(lambda: any(x.step_id == "h" for x in sandbox.executions()), 20)
    r = api.post(f"/runs/{run_id}/cancel")
    assert r.status_code == 202, r.text
    api.until_status(run_id, "cancelled")
    again = api.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert "nothing to cancel" in again.json()["error"]["message"]

    made = [api.post("/runs", {"definition": RECORD, "input": {"n": i}}).json()["run_id"]
            for i in range(5)]
    for rid in made:
        api.until_status(rid, "succeeded")
    seen: list[str] = []
    cursor = None
    while True:
        page = api.get("/runs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [r["run_id"] for r in page.json()["runs"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([*made, run_id])  # every run, once
    only = api.get("/runs", params={"status": "cancelled"}).json()["runs"]
    assert [r["run_id"] for r in only] == [run_id]


def test_workflows_registered_listed_drawn_and_run_by_name(api: Api) -> None:
    r = api.post("/workflows", RECORD)
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["version"], r.json()["new"]) == ("rec", "1", True)
    assert api.post("/workflows", RECORD).status_code == 200  # the same again: nothing new
    changed = api.post("/workflows", {**RECORD, "description": "changed"})
    assert changed.status_code == 409
    assert "bump" in changed.json()["error"]["message"]
    listed = api.get("/workflows").json()
    assert [(w["name"], [v["version"] for v in w["versions"]]) for w in listed] == [
        ("rec", ["1"])]
    graph = api.get("/workflows/rec", params={"format": "mermaid"})
    assert graph.status_code == 200
    assert graph.text.startswith("flowchart")
    run = api.post("/runs", {"workflow": "rec", "input": {"n": 3}})
    assert run.status_code == 202, run.text
    assert api.until_status(run.json()["run_id"], "succeeded")["output"] == {"n": 3}
    missing = api.post("/runs", {"workflow": "nope"})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "workflow_not_found"


def test_bad_input_answers_in_the_one_error_shape(api: Api, sandbox: Sandbox) -> None:
    bad = api.post("/runs", {"definition": {"name": "x", "steps": [{"id": "a"}]}})
    assert bad.status_code == 422
    err = bad.json()["error"]
    assert err["type"] == "definition_error"
    assert err["problems"]
    assert all({"message", "field", "step"} <= p.keys() for p in err["problems"])
    refused = api.post("/runs", {"definition": RECORD, "input": {"n": "seven"}})
    assert refused.status_code == 422
    assert refused.json()["error"]["type"] == "input_error"
    both = api.post("/runs", {"definition": RECORD, "workflow": "rec"})
    assert both.status_code == 422
    assert api.get("/runs/zzzz-none").status_code == 404
    assert api.get("/runs/zzzz-none").json()["error"]["type"] == "run_not_found"
    huge = httpx.post(api.url + "/runs", content=b'{"input": "' + b"x" * (17 << 20) + b'"}',
                      headers={"content-type": "application/json"}, timeout=30)
    assert huge.status_code == 413
    assert api.get("/runs", params={"cursor": "garbage"}).status_code == 400
    assert api.get("/runs", params={"status": "nope"}).status_code == 422
    assert sandbox.run_ids() == []  # nothing refused left a run behind


def _token(sb: Sandbox, scope: str, *extra: str) -> str:
    out = sb.podium("token", "create", "--scope", scope, "--name", f"t-{scope}", *extra)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("pdm_")
    return token



def _answer_to_a_head(api: Api, head: bytes) -> bytes:
    """Send a request's head only (its body never comes); what the server answers within
    5 s (the body's deadline is longer: an answer means the body was not waited for)."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head.replace(b"HOST", f"{host}:{port}".encode()))
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while not _whole(answer):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    return answer


def _whole(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    length = [line.split(b":", 1)[1] for line in head.lower().split(b"\r\n")
              if line.startswith(b"content-length:")]
    return bool(sep) and len(body) >= int(length[0]) if length else bool(sep)


def test_a_body_is_read_only_once_its_sender_is_identified(sandbox: Sandbox) -> None:
    """FastAPI parses a body before the route's guard runs: an unknown sender must hear
    401 before the server reads (and parses) what it sends, and the dashboard's login,
    whose body is its token, takes a small body only."""
    write = _token(sandbox, "write")
    api = start(sandbox)
    post = (b"POST %s HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n%s\r\n")
    anonymous = _answer_to_a_head(api, post % (b"/runs", b""))
    unknown = _answer_to_a_head(api, post % (b"/runs", b"Authorization: Bearer pdm_x_y\r\n"))
    stranger_joins = _answer_to_a_head(api, post % (b"/agents", b""))
    forged_session = _answer_to_a_head(api, post % (b"/runs", b"Cookie: podium_session=x\r\n"))
    big_login = _answer_to_a_head(api, post % (b"/session", b""))
    assert anonymous.startswith(b"HTTP/1.1 401"), anonymous[:200]
    assert b'"unauthorized"' in anonymous
    assert b"--scope write" in anonymous
    assert unknown.startswith(b"HTTP/1.1 401"), unknown[:200]
    assert stranger_joins.startswith(b"HTTP/1.1 401"), stranger_joins[:200]
    assert b"--scope agent" in stranger_joins
    assert forged_session.startswith(b"HTTP/1.1 401"), forged_session[:200]
    assert big_login.startswith(b"HTTP/1.1 413"), big_login[:200]
    # Identified senders are served as before, the login too.
    ok = api.post("/runs", {"definition": RECORD}, token=write)
    assert ok.status_code == 202, ok.text
    login = httpx.post(api.url + "/session", json={"token": write}, timeout=10)
    assert login.status_code == 200, login.text
    assert api.get("/runs").status_code == 401  # nothing was opened by the refusals


async def _expired_token(sb: Sandbox) -> str:
    """A read token that expired an hour ago (the command line makes none of those)."""
    from podium.auth import Scope, create_token
    from podium.store.factory import open_store

    store = open_store(sb.url)
    await store.open()
    try:
        token, _record = await create_token(store, Scope.READ, "old", 60.0, time.time() - 3600)
    finally:
        await store.close()
    return token


def test_tokens_guard_every_route_by_scope(sandbox: Sandbox,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox
    monkeypatch.setenv("PODIUM_TOKEN_CACHE", "1s")  # a revocation honoured within 1 s
    admin, write, read = (_token(sb, s) for s in ("admin", "write", "read"))
    gone = _token(sb, "write")
    expired = asyncio.run(_expired_token(sb))
    api = start(sb)
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200
    no = api.get("/runs")
    assert no.status_code == 401
    assert no.json()["error"]["type"] == "unauthorized"
    assert no.headers["www-authenticate"] == "Bearer"
    assert api.get("/runs", token="pdm_nope_nope").status_code == 401  # noqa: S106
    assert api.get("/runs", token=expired).status_code == 401
    assert api.get("/metrics").status_code == 401
    assert api.get("/metrics", token=read).status_code == 200
    assert api.get("/runs", token=read).status_code == 200
    stream = httpx.get(api.url + "/runs/x/events", timeout=10)
    assert stream.status_code == 401
    denied = api.post("/runs", {"definition": RECORD}, token=read)
    assert denied.status_code == 403
    assert "needs write" in denied.json()["error"]["message"]
    ok = api.post("/runs", {"definition": RECORD}, token=write)
    assert ok.status_code == 202, ok.text
    assert api.post(f"/runs/{ok.json()['run_id']}/cancel", token=read).status_code == 403
    assert api.post("/workflows", RECORD, token=write).status_code == 403
    assert api.post("/workflows", RECORD, token=admin).status_code == 201
    assert api.get("/runs", token=gone).status_code == 200
    revoked = sb.podium("token", "revoke", gone.split("_")[1])
    assert revoked.returncode == 0, revoked.stderr
    assert wait_for(lambda: api.get("/runs", token=gone).status_code == 401, 10, 0.2)
    logs = sb.stderr_of(api.proc)
    for secret in (admin, write, read, gone, expired):
        assert secret not in logs


def test_no_token_means_this_machine_only(sandbox: Sandbox) -> None:
    out = sandbox.podium("serve", "--port", str(free_port()), "--host", "0.0.0.0",  # noqa: S104
                         agents=True, timeout=30)
    assert out.returncode == 2
    assert "no API token exists" in out.stderr
    assert "Traceback" not in out.stderr
    api = start(sandbox)
    assert "there is no API token, so the API is open to every program on this machine" in \
        sandbox.stderr_of(api.proc)
    assert api.get("/runs").status_code == 200  # open, on loopback


def test_a_server_killed_mid_run_loses_nothing_and_the_stream_resumes(
        sandbox: Sandbox) -> None:
    sb = sandbox
    api = start(sb)
    run_id = api.post("/runs", {"definition": SLOW}).json()["run_id"]
    first = sse(api, run_id, stop_after=4)
    assert [e[0] for e in first] == [1, 2, 3, 4]
    sb.kill(api.proc)  # kill -9, mid-run
    again = start(sb)  # takes over the run its dead owner left
    rest = sse(again, run_id, last=first[-1][0])
    assert rest[-1][1:] == ("end", {"status": "succeeded"})
    ids = [e[0] for e in first + rest[:-1]]
    assert ids == list(range(1, len(ids) + 1))
    done = again.get(f"/runs/{run_id}").json()
    assert [e["type"] for e in done["timeline"]] == [e[1] for e in first + rest[:-1]]
    calls = Counter(x.step_id for x in sb.executions())
    assert set(calls) == {"a", "b", "c", "d", "e"}
    assert calls["a"] == 1  # succeeded before the kill: never again


def test_status_follow_prints_a_run_as_it_goes_from_a_server_or_the_database(
        api: Api, sandbox: Sandbox) -> None:
    sb = sandbox
    first = api.post("/runs", {"definition": SLOW}).json()["run_id"]
    via_server = sb.podium("status", first, "--follow", "--server", api.url)
    assert via_server.returncode == 0, via_server.stderr
    lines = via_server.stdout.splitlines()
    assert lines[0] == f"run {first} started: slow v1"
    assert sum("▶ " in ln for ln in lines) == 5  # each step once
    assert lines[-1] == f"run {first} succeeded"
    second = api.post("/runs", {"definition": {"name": "bad", "steps": [
        {"id": "x", "agent": "always-fail"}]}}).json()["run_id"]
    via_db = sb.podium("status", second, "--follow")
    assert via_db.returncode == 1, via_db.stderr
    assert via_db.stdout.splitlines()[-1].startswith(f"run {second} failed: ")
    as_json = sb.podium("status", second, "--follow", "--json")
    assert json.loads(as_json.stdout)["status"] == "failed"
    stray = sb.podium("status", second, "--server", api.url)
    assert stray.returncode == 2
    assert "go with --follow" in stray.stderr


def test_hostile_submits_refused_cleanly_and_concurrent_same_key_starts_one_run(
        api: Api, sandbox: Sandbox) -> None:
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    refused = api.post("/runs", {"definition": RECORD, "input": {"n": 1, "x": deep}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["type"] == "input_error"
    deeper = "[" * 5000 + "]" * 5000
    r = httpx.post(api.url + "/runs", content=deeper,
                   headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= r.status_code < 500, r.text
    assert api.get("/readyz").status_code == 200
    ok = api.post("/runs", {"definition": RECORD, "input": {"n": 2}})
    assert api.until_status(ok.json()["run_id"], "succeeded")["output"] == {"n": 2}

    from concurrent.futures import ThreadPoolExecutor

    def same_key(_i: int) -> httpx.Response:
        return api.post("/runs", {"definition": RECORD, "input": {"n": 9}},
                        headers={"Idempotency-Key": "together"})

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(same_key, range(6)))
    assert sorted(a.status_code for a in answers) == [200] * 5 + [202], [
        a.text for a in answers]
    assert len({a.json()["run_id"] for a in answers}) == 1
    changed = api.post("/runs", {"definition": {**RECORD, "version": 2}, "input": {"n": 9}},
                       headers={"Idempotency-Key": "together"})
    assert changed.status_code == 409  # same key, another version: refused, not replayed
    assert len(sandbox.run_ids()) == 2


def test_log_level_quiets_the_server_as_the_other_servers(sandbox: Sandbox) -> None:
    """``podium serve --log-level``, as ``podium agent serve`` and ``podium a2a serve``
    take it: at warning, none of the start-up's information lines."""
    chatty, quiet = start(sandbox), start(sandbox, "--log-level", "warning")
    for api in (chatty, quiet):
        assert api.get("/runs").status_code == 200
    said = sandbox.stderr_of(chatty.proc)
    assert "INFO:     podium serve on http://127.0.0.1:" in said
    assert "Application startup complete" in said
    logs = sandbox.stderr_of(quiet.proc)
    assert "podium serve on" not in logs
    assert "Application startup complete" not in logs
    bad = sandbox.podium("serve", "--port", str(free_port()), "--log-level", "loud",
                         agents=True, timeout=30)
    assert bad.returncode == 2
    assert "--log-level 'loud' is unknown" in bad.stderr
    assert "Traceback" not in bad.stderr
