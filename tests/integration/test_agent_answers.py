"""What an agent sends back is bounded: size, error types and messages, metric labels.

A real ``podium run`` process calls a hostile HTTP agent (``hostile_agent.py``)
on 127.0.0.1: a 100 MB answer, a gzip bomb (1 MB that unpacks into 1 GiB), an
endless chunked stream, an error with a 100,000-character type and a 1 MB
message. Each attempt fails cleanly (``output_too_large``, not retried; a short
type; a cut message), the run ends with its status stored, and the engine's
peak memory and the database stay small. Python agents' outputs have the same
limit when they are stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from podium.engine.attempt import MAX_ERROR_MESSAGE_CHARS
from tests.conftest import run_workflow
from tests.integration.observe_tools import free_port

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024


@pytest.fixture(scope="module")
def hostile() -> Any:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "hostile_agent.py"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _peak_rss_of(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``argv`` to its end; its own peak resident memory in bytes (wait4's rusage)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    with (cwd / "out.txt").open("wb") as out, (cwd / "err.txt").open("wb") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    return (subprocess.CompletedProcess(argv, code, (cwd / "out.txt").read_text(),
                                        (cwd / "err.txt").read_text()),
            usage.ru_maxrss * 1024)


def _setup(tmp: Path, base: str, modes: list[str]) -> list[str]:
    (tmp / "agents.yaml").write_text(yaml.safe_dump({
        "health": {"interval": "60s"},
        "agents": [{"id": m, "capabilities": [m], "url": f"{base}/{m}"} for m in modes]}))
    (tmp / "wf.yaml").write_text(yaml.safe_dump({
        "name": "hostile", "mode": "parallel", "on_failure": "continue",
        "steps": [{"id": m, "agent": m, "timeout": "60s",
                   "retry": {"max_attempts": 3, "initial_delay": "10ms"}} for m in modes]}))
    return [sys.executable, "-m", "podium", "run", "wf.yaml", "--agents", "agents.yaml",
            "--json", "--db", f"sqlite:///{tmp}/p.db"]


@pytest.mark.timeout(180)
def test_oversize_answers_fail_cleanly_in_bounded_memory(hostile: str, tmp_path: Path) -> None:
    """100 MB, a gzip bomb, an endless stream, 100 MB chunked: each attempt fails as
    output_too_large (not retried), the run ends failed and stored, the engine's peak
    memory stays within 200 MB of a run of one small step, the database stays small."""
    modes = ["big", "bomb", "endless", "chunked", "gzipped", "ok"]
    base = tmp_path / "base"
    base.mkdir()
    baseline, base_rss = _peak_rss_of(_setup(base, hostile, ["ok"]), base)
    assert baseline.returncode == 0, baseline.stderr
    done, rss = _peak_rss_of(_setup(tmp_path, hostile, modes), tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "failed"
    steps = doc["steps"]
    assert steps["ok"]["status"] == "succeeded"
    assert steps["gzipped"]["output"] == "z" * (2 * MB)  # a fair compressed answer is fine
    for mode in ("big", "bomb", "endless", "chunked"):
        step = steps[mode]
        assert step["status"] == "failed", mode
        assert step["error"]["type"] == "output_too_large", (mode, step["error"])
        assert step["attempts"] == 1, mode  # not retried by default
        assert "max_response_bytes" in step["error"]["message"]
    assert rss - base_rss < 200 * MB, f"peak RSS {rss / MB:.0f} MB vs {base_rss / MB:.0f} MB"
    assert (tmp_path / "p.db").stat().st_size < 5 * MB
    out = subprocess.run([sys.executable, "-m", "podium", "status", doc["run_id"], "--json",
                          "--db", f"sqlite:///{tmp_path}/p.db"], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert json.loads(out.stdout)["status"] == "failed"


def test_a_hostile_error_type_and_message_are_bounded(hostile: str, tmp_path: Path) -> None:
    done, _rss = _peak_rss_of(_setup(tmp_path, hostile, ["longtype"]), tmp_path)
    doc = json.loads(done.stdout)
    error = doc["steps"]["longtype"]["error"]
    assert error["type"] == "agent_error"  # 100,000 characters is not an error type
    assert len(error["message"]) < MAX_ERROR_MESSAGE_CHARS + 100
    assert error["message"].endswith(f"[cut: {MAX_ERROR_MESSAGE_CHARS} characters kept]")
    assert (tmp_path / "p.db").stat().st_size < MB


async def test_a_python_agents_output_has_the_same_limit_when_stored() -> None:
    from podium import AgentRegistry, Engine, PythonAgent
    from podium.definition import workflow_from_dict

    async def huge(task: Any) -> Any:
        return "y" * (2 * MB)

    registry = AgentRegistry([PythonAgent(huge, id="huge", capabilities=["huge"],
                                          max_response_bytes=MB)])
    wf = workflow_from_dict({"name": "h", "steps": [{"id": "s", "agent": "huge",
                                                     "retry": {"max_attempts": 3}}]})
    async with Engine(registry=registry) as engine:
        run = await engine.run(wf)
    assert run.status == "failed"
    step = run.steps["s"]
    assert (step.attempts, step.error.type if step.error else None) == (1, "output_too_large")
    # A default-sized agent takes the same output.
    ok = await run_workflow({"name": "h2", "steps": [{"id": "s", "agent": "huge"}]}, huge=huge)
    assert ok.status == "succeeded"


TOKEN = "tok-4f9c2b7e1d-echo-me"  # noqa: S105 - a test credential, the point of the test


def test_an_echoed_agent_token_is_nowhere_afterwards(hostile: str, tmp_path: Path) -> None:
    """Two agents authenticate with a token_env token; one answers `credential rejected:
    <token>`, the other puts the header in its output. Afterwards the token is
    in no file of the database, no CLI output (run, status --verbose, runs, failures, all
    --json and not) and not in /metrics scraped while the run was going."""
    import time

    import httpx

    (tmp_path / "agents.yaml").write_text(yaml.safe_dump({
        "health": {"interval": "60s"},
        "agents": [{"id": m, "capabilities": [m], "url": f"{hostile}/{m}", "token_env": "AGT"}
                   for m in ("echo", "echoout", "slow")]}))
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump({
        "name": "echo", "mode": "parallel", "on_failure": "continue",
        "steps": [{"id": m, "agent": m} for m in ("echo", "echoout", "slow")]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")} | {"AGT": TOKEN}
    db = f"sqlite:///{tmp_path}/p.db"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", "run", "wf.yaml", "--agents", "agents.yaml", "--json",
         "--db", db, "--metrics-port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scraped = ""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            if 'outcome="other"' in scraped:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert 'outcome="other"' in scraped  # scraped after the echoing call ended (auth_failed)
    doc = json.loads(out)
    assert doc["steps"]["echo"]["error"]["message"].startswith("credential rejected")
    assert doc["steps"]["echoout"]["output"] == {"seen": "Bearer ***"}
    texts = {"run": out + err, "metrics": scraped}
    for args in (("status", doc["run_id"], "--verbose"), ("status", doc["run_id"], "--json",
                 "--verbose"), ("runs",), ("runs", "--json"), ("failures", "--json"),
                 ("failures", "--by", "agent")):
        done = subprocess.run([sys.executable, "-m", "podium", *args, "--db", db], cwd=tmp_path,
                              env=env, capture_output=True, text=True, check=False)
        texts[" ".join(args)] = done.stdout + done.stderr
    for path in tmp_path.iterdir():
        if path.name.startswith("p.db"):
            texts[path.name] = path.read_bytes().decode("latin-1")
    leaked = [where for where, text in texts.items() if TOKEN in text]
    assert not leaked, f"the token leaked into: {leaked}"
    assert "credential rejected" in texts["status " + doc["run_id"] + " --verbose"]


def test_a_database_url_password_is_masked_in_messages(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "podium", "runs", "--json", "--db",
                           "mysql://admin:Sup3rS3cret@db.example/podium"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "Sup3rS3cret" not in done.stdout + done.stderr
    assert "admin:***@db.example" in done.stderr
