"""Agents that join the fleet by themselves: ``podium agent serve --register URL`` on a
real ``podium serve`` (SQLite file, tokens), real HTTP agent processes on 127.0.0.1.

- an agent registers with an ``agent`` token, the server calls it for a run's step,
  and the run succeeds with its answer;
- killed with SIGKILL, it leaves the fleet once its time to live passes (no heartbeat);
  stopped with SIGTERM, it leaves at once (``DELETE``);
- scopes: a read token may not register (403, and the agent exits 2 saying so); an id
  another token holds is refused (409) while it lives; a body that names Python or an
  environment variable, or a URL that is not http(s), is refused (422); an admin may
  remove any joined agent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for
from tests.integration.test_api import Api, _token, start

HERE = Path(__file__).parent
ECHO = {"name": "joined", "steps": [{"id": "e", "agent": "echo", "input": {"n": 1}}],
        "output": {"by": "${{ steps.e.output.by }}"}}


def agent(sb: Sandbox, api: Api, name: str, token: str | None, *extra: str,
          ttl: str = "2s") -> tuple[subprocess.Popen[bytes], Path]:
    port = free_port()
    log = sb.root / f"agent-{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(PYTHONUNBUFFERED="1", AGENT_NAME=name, JOIN_TOKEN=token or "")
    args = [sys.executable, "-m", "podium", "agent", "serve", "join_agents:echo",
            "--capability", "echo", "--port", str(port), "--register", api.url,
            "--ttl", ttl, "--id", name, "--region", "eu", *extra]
    if token is not None:
        args += ["--register-token-env", "JOIN_TOKEN"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    sb.procs.append(proc)
    return proc, log


def fleet(api: Api) -> dict[str, Any]:
    doc = api.get("/agents").json()
    return {a["id"]: a for a in doc["agents"]}


def test_an_agent_joins_is_called_and_leaves_when_killed_or_stopped(sandbox: Sandbox) -> None:
    sb = sandbox
    join_token, read = _token(sb, "agent"), _token(sb, "read")
    write = _token(sb, "write")
    api = start(sb)
    api.token = read
    one, log_one = agent(sb, api, "far-1", join_token)
    assert wait_for(lambda: "far-1" in fleet(api), 30, 0.1), log_one.read_text()
    entry = fleet(api)["far-1"]
    assert (entry["region"], entry["capabilities"]) == ("eu", ["echo"]), entry
    run = api.post("/runs", {"definition": ECHO}, token=write).json()["run_id"]
    done = api.until_status(run, "succeeded", "failed")
    assert (done["status"], done["output"]) == ("succeeded", {"by": "far-1"}), done

    # Heartbeats keep it in: still there after several times its time to live.
    time.sleep(5)
    assert "far-1" in fleet(api)
    one.send_signal(signal.SIGKILL)
    one.wait(10)
    t0 = time.monotonic()
    assert wait_for(lambda: "far-1" not in fleet(api), 30, 0.1)
    gone_after = time.monotonic() - t0
    assert gone_after >= 0.5  # by expiry, not at once (nothing told the server)

    two, log_two = agent(sb, api, "far-2", join_token)
    assert wait_for(lambda: "far-2" in fleet(api), 30, 0.1), log_two.read_text()
    two.send_signal(signal.SIGTERM)
    assert two.wait(15) == 0, log_two.read_text()
    assert "far-2" not in fleet(api)  # it said goodbye before it exited
    assert "Traceback" not in log_two.read_text()
    for secret in (join_token, read, write):
        assert secret not in log_one.read_text() + log_two.read_text()
        assert secret not in sb.stderr_of(api.proc)


def test_who_may_register_what(sandbox: Sandbox) -> None:
    sb = sandbox
    a, b, admin, read = (_token(sb, s) for s in ("agent", "agent", "admin", "read"))
    api = start(sb)
    body = {"id": "mine", "url": "http://127.0.0.1:9/", "capabilities": ["echo"]}
    assert api.post("/agents", body).status_code == 401
    assert api.post("/agents", body, token=read).status_code == 403
    first = api.post("/agents", body, token=a)
    assert first.status_code == 201, first.text
    assert first.json()["created"] is True
    assert first.json()["heartbeat_s"] == 10
    again = api.post("/agents", {**body, "region": "us"}, token=a)
    assert again.status_code == 200
    assert again.json()["created"] is False
    taken = api.post("/agents", body, token=b)
    assert taken.status_code == 409
    assert "another token" in taken.json()["error"]["message"]
    assert api.post("/agents/mine/heartbeat", token=b).status_code == 404
    assert api.post("/agents/mine/heartbeat", token=a).status_code == 200
    for bad in ({**body, "python": "os:system"}, {**body, "token_env": "HOME"},
                {**body, "url": "file:///etc/passwd"}, {**body, "capabilities": []},
                {**body, "id": "../x"}, {**body, "ttl_s": 0}):
        refused = api.post("/agents", bad, token=a)
        assert refused.status_code == 422, (bad, refused.text)
    assert httpx.delete(api.url + "/agents/mine", headers=api.headers(b),
                        timeout=10).status_code == 404
    assert httpx.delete(api.url + "/agents/mine", headers=api.headers(admin),
                        timeout=10).status_code == 204

    # An agent whose token may not register stops at once, saying why (exit 2).
    proc, log = agent(sb, api, "nope", read)
    assert proc.wait(30) == 2, log.read_text()
    text = log.read_text()
    assert "refused" in text, text
    assert "needs agent" in text, text
    assert "Traceback" not in text
    assert read not in text
