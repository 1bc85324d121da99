"""Server CPU per request of ``podium agent serve``, against a minimal ASGI app.

Both servers run in processes of their own on uvicorn with httptools (the protocol
``podium agent serve`` uses): ``podium agent serve serve:noop`` (a no-op
function, with its guards: Host, Origin, content type, body limit, and a
bearer token with ``--token``), and ``minimal``, an ASGI app of a few lines
that reads the body and answers ``{"output": null}``. One aiohttp client
process (bench/clients.py) sends them the POSTs an engine sends, C at once,
on kept-alive connections; the server's CPU (from /proc) over those requests
is divided by their number. Servers alternate (A B, B A, ...). Prints one JSON
document: medians with min and max.

    python bench/serve.py                    # 3 runs of 4,000 requests each
    python bench/serve.py --compare /tmp/old/src   # also podium agent serve of DIR

This file is also the servers' code (``serve:noop``, ``serve:minimal``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token-0123456789"  # noqa: S105 - a bench credential


async def noop(task: Any) -> Any:
    return None


async def minimal(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do for the same exchange: read the body, answer JSON."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"output":null}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def start(kind: str, port: int, src: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PODIUM_BENCH_TOKEN": TOKEN}
    if src:
        env["PYTHONPATH"] = src
    if kind == "minimal":
        argv = [sys.executable, "-m", "uvicorn", "serve:minimal", "--port", str(port),
                "--http", "httptools", "--lifespan", "off", "--log-level", "warning",
                "--no-access-log"]
    else:
        argv = [sys.executable, "-m", "podium", "agent", "serve", "serve:noop",
                "--capability", "work", "--port", str(port), "--log-level", "warning"]
        if kind.endswith("+token"):
            argv += ["--token-env", "PODIUM_BENCH_TOKEN"]
    return subprocess.Popen(argv, cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server at {url} exited with {proc.returncode}")
        try:
            httpx.post(url + "/invoke", content=b"{}", timeout=1,
                       headers={"Content-Type": "application/json"})
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SystemExit(f"server at {url} did not come up") from None
            time.sleep(0.05)


def measure(kind: str, n: int, concurrency: int, src: str | None) -> dict[str, float]:
    from clients import run_client
    from fleet import cpu_of, free_port

    port = free_port()
    proc = start(kind, port, src)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BENCH_AUTHORIZATION": f"Bearer {TOKEN}"}
    try:
        wait_up(url, proc)
        run_client("aiohttp", [url], 500, concurrency, env=env)  # warm-up
        before = cpu_of([proc.pid])
        client = run_client("aiohttp", [url], n, concurrency, env=env)
        after = cpu_of([proc.pid])
    finally:
        proc.terminate()
        proc.wait(10)
    if before is None or after is None:
        raise SystemExit("bench/serve.py reads server CPU from /proc (Linux only)")
    return {"server_cpu_ms_per_request": (after - before) * 1000 / n,
            "requests_per_s": client["requests_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--compare", metavar="DIR", help="also podium agent serve of DIR")
    parser.add_argument("--servers", default="minimal,podium,podium+token")
    args = parser.parse_args()
    variants: list[tuple[str, str, str | None]] = [
        (k, k, None) for k in args.servers.split(",")]
    if args.compare:
        variants += [(f"{k}@old", k, args.compare) for k in args.servers.split(",")
                     if k.startswith("podium")]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    for run in range(args.runs):
        for name, kind, src in (variants if run % 2 == 0 else variants[::-1]):
            results[name].append(measure(kind, args.requests, args.concurrency, src))

    def summary(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 3),
                "min": round(min(values), 3), "max": round(max(values), 3)}

    print(json.dumps({
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "requests": args.requests,
        "concurrency": args.concurrency, "runs": args.runs,
        "servers": {k: {m: summary([r[m] for r in v]) for m in v[0]} for k, v in results.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
