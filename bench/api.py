"""The HTTP API's figures: submit → first step started, and what one event stream delivers.

Starts a real ``podium serve`` on 127.0.0.1 (SQLite in a temporary folder, an
in-process no-op agent, an admin token) and measures, from a client in this
process (httpx, one connection):

- **submit → first step started**: ``POST /runs`` of a one-step run, one after the
  other; the time from just before the request to the ``step_started`` event's
  timestamp (same machine, same clock). p50 / p99 / max over ``--runs``.
- **events per second of one stream**: a fan-out run of ``--steps`` steps, finished,
  read whole from ``GET /runs/{id}/events`` (parsing every event); and every run's
  events from the feed (``GET /events?after=0``) up to that run's end.

    python bench/api.py              # 200 submits, a 2,000-step stream
    python bench/api.py --quick      # 50 submits, 500 steps (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

AGENT = '''
async def noop(task):
    return {"ok": True}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def podium(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "podium", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def percentile(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    runs, steps = (50, 500) if a.quick else (a.runs, a.steps)
    with tempfile.TemporaryDirectory(prefix="podium-bench-api-") as tmp:
        root = Path(tmp)
        (root / "bench_api_agents.py").write_text(AGENT)
        (root / "podium.yaml").write_text(
            "agents:\n  - {id: noop, capabilities: [noop], python: 'bench_api_agents:noop',"
            " max_concurrency: 10000}\n")
        env = {**os.environ, "PODIUM_DB": str(root / "podium.db")}
        env.pop("PODIUM_AGENTS", None)
        token = podium("token", "create", "--scope", "write", cwd=root, env=env).strip()
        port = free_port()
        log = (root / "serve.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "podium", "serve", "--port",
                                   str(port)], cwd=root, env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as client:
                for _ in range(600):
                    if server.poll() is not None:
                        sys.exit(f"podium serve ended: {(root / 'serve.log').read_text()}")
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)
                out = measure(client, runs, steps)
        finally:
            server.terminate()
            server.wait(30)
            log.close()
    if a.json:
        print(json.dumps(out))
        return
    lat = out["submit_to_first_step_ms"]
    print(f"submit -> first step started ({runs} runs, one after another): p50"
          f" {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms")
    s = out["stream"]
    print(f"one stream: {s['events']} events of a {steps}-step run in {s['seconds']:.2f} s:"
          f" {s['events_per_s']:,.0f} events/s")
    f = out["feed"]
    print(f"every run's events (GET /events from the start): {f['events']} events in"
          f" {f['seconds']:.2f} s: {f['events_per_s']:,.0f} events/s")


def measure(client: httpx.Client, runs: int, steps: int) -> dict[str, Any]:
    one = {"name": "one", "steps": [{"id": "a", "agent": "noop"}]}
    lat: list[float] = []
    for _ in range(runs):
        t0 = time.time()
        r = client.post("/runs", json={"definition": one})
        r.raise_for_status()
        run_id = r.json()["run_id"]
        while True:
            doc = client.get(f"/runs/{run_id}").json()
            if doc["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.005)
        started = next(e for e in doc["timeline"] if e["type"] == "step_started")
        from datetime import datetime

        ts = datetime.fromisoformat(started["ts"].replace("Z", "+00:00")).timestamp()
        lat.append((ts - t0) * 1000)
    fan = {"name": "fan", "mode": "parallel",
           "steps": [{"id": f"s{i}", "agent": "noop"} for i in range(steps)]}
    run_id = client.post("/runs", json={"definition": fan}).json()["run_id"]
    while client.get(f"/runs/{run_id}").json()["status"] not in ("succeeded", "failed"):
        time.sleep(0.05)
    t0 = time.perf_counter()
    n = 0
    with client.stream("GET", f"/runs/{run_id}/events") as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                json.loads(line[6:])
                n += 1
    took = time.perf_counter() - t0
    # Every run's events from the feed (GET /events from the start), read until the
    # fan-out's last one: the submits' runs, then the fan-out's.
    t1 = time.perf_counter()
    m = 0
    with client.stream("GET", "/events", params={"after": "0"}) as r:
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                doc = json.loads(line[6:])
                m += 1
                if kind == "run_finished" and doc["run_id"] == run_id:
                    break
    feed_took = time.perf_counter() - t1
    return {"submit_to_first_step_ms": {"p50": statistics.median(lat),
                                        "p99": percentile(lat, 99), "max": max(lat)},
            "stream": {"events": n - 1, "seconds": took, "events_per_s": (n - 1) / took},
            "feed": {"events": m, "seconds": feed_took, "events_per_s": m / feed_took}}


if __name__ == "__main__":
    main()
