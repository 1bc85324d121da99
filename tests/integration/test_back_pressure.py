"""Two engines share one fleet: an agent's "busy" is back-pressure, not a failure.

Each engine caps its own calls per agent (``max_concurrency`` in its agents
file), but an agent's capacity is its own: two engines at once send it twice
what it can take, and it answers 429 ``Retry-After: 1`` (``podium agent serve
--max-concurrency``). Those answers used to fail attempts (a run failed with
"agent at capacity" after 4 of them) and to open healthy agents' circuits.
Now the attempt goes to another agent with room or waits, no attempt is used
up, and no breaker opens: both runs succeed with one attempt per step.

Real processes: three ``podium agent serve`` agents on 127.0.0.1 and two
``podium run`` processes with their own databases; each engine's /metrics is
scraped while it runs to see every circuit's state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.integration.observe_tools import free_port

HERE = Path(__file__).resolve().parent


def _serve(tmp: Path, name: str, port: int) -> subprocess.Popen[bytes]:
    control = tmp / name
    control.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    env.update(FLEET_NAME=name, FLEET_CONTROL=str(control), FLEET_DELAY_MS="250")
    return subprocess.Popen(
        [sys.executable, "-m", "podium", "agent", "serve", "fleet_workers:work",
         "--capability", "work", "--port", str(port), "--max-concurrency", "8",
         "--log-level", "warning"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _up(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def _metric_lines(port: int) -> list[str]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return []
    return [ln for ln in text.splitlines() if not ln.startswith("#")]


def test_two_engines_share_three_busy_agents_without_failing_or_opening_a_breaker(
    tmp_path: Path,
) -> None:
    ports = [free_port() for _ in range(3)]
    agents = [_serve(tmp_path, f"a{i}", p) for i, p in enumerate(ports)]
    engines: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 30
        while not all(_up(p) for p in ports):
            assert time.monotonic() < deadline, "the agents did not come up"
            time.sleep(0.05)
        (tmp_path / "agents.yaml").write_text(yaml.safe_dump({
            "health": {"interval": "1s"},
            "agents": [{"id": f"a{i}", "capabilities": ["work"], "url": f"http://127.0.0.1:{p}",
                        "max_concurrency": 8} for i, p in enumerate(ports)]}))
        (tmp_path / "wf.yaml").write_text(yaml.safe_dump({
            "name": "shared", "mode": "parallel",
            "steps": [{"id": f"s{i:03d}", "agent": "work"} for i in range(120)]}))
        metrics = [free_port(), free_port()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        for n, mport in enumerate(metrics):
            engines.append(subprocess.Popen(
                [sys.executable, "-m", "podium", "run", "wf.yaml", "--json",
                 "--agents", "agents.yaml", "--db", f"sqlite:///{tmp_path}/e{n}.db",
                 "--metrics-port", str(mport)],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        circuits: set[str] = set()
        busy = 0.0
        while any(e.poll() is None for e in engines):
            for mport in metrics:
                for line in _metric_lines(mport):
                    if line.startswith("podium_agent_circuit{") and line.endswith(" 1.0"):
                        circuits.add(line.split('podium_agent_circuit="')[1].split('"')[0])
                    if 'outcome="busy"' in line and line.startswith("podium_agent_calls_total"):
                        busy = max(busy, float(line.rsplit(" ", 1)[1]))
            time.sleep(0.02)
        results = [e.communicate(timeout=60) for e in engines]
    finally:
        for p in [*agents, *engines]:
            if p.poll() is None:
                p.kill()
                p.wait()
    for e, (out, err) in zip(engines, results, strict=True):
        assert e.returncode == 0, err
        doc = json.loads(out)
        assert doc["status"] == "succeeded"
        assert {s["attempts"] for s in doc["steps"].values()} == {1}
        assert all(s["error"] is None for s in doc["steps"].values())
    assert circuits == {"closed"}, f"a breaker left the closed state: {circuits}"
    assert busy > 0, "the agents never pushed back: the test did not test anything"
