"""Client CPU per request of HTTP client libraries, side by side.

A minimal asyncio HTTP/1.1 server (its own process, raw ``asyncio.Protocol``,
keep-alive, a fixed small JSON answer) is called by one client process per
library: N POSTs of the small JSON body an HTTP agent step sends, C at once,
on kept-alive connections. Each client process measures its own CPU time
(``resource.getrusage``: user + system, every thread) over the measured
requests only; a warm-up of C x 4 requests (connections, first-call imports)
is not counted. Runs alternate between the libraries (A B A B ...), so a
noisy neighbour on a small machine hits all of them alike. Prints one JSON
document: client CPU per request and requests per second, medians with min
and max.

    python bench/clients.py                     # httpx, aiohttp, podium: 3 runs of 4,000
    python bench/clients.py --clients aiohttp --runs 5
    python bench/clients.py --clients podium,podium@/tmp/old/src   # before/after

``podium@DIR`` is the ``podium`` client with ``DIR`` first on ``PYTHONPATH``:
another checkout's ``src``, measured in the same alternation.

``podium`` is ``HttpAgent.invoke`` itself (whatever client it is built on):
the library plus what the agent adds (headers, capped read, JSON, errors).

``floor()`` is the same measurement against other servers (``bench/fleet.py``
uses it against the fleet's agents: the bare client's cost at the fleet's
payload and concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from itertools import cycle
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ANSWER = b'{"output":{"pid":1234}}'
CLIENTS = ("httpx", "aiohttp", "podium")


def task_body(i: int, ms: int = 20) -> dict[str, Any]:
    """What an HTTP agent step sends (``Task.to_dict()`` of a fleet step)."""
    return {"run_id": "0f3c1a9e2b7d4c5e8f6a0b1c2d3e4f5a", "step_id": f"s{i:04d}", "attempt": 1,
            "idempotency_key": f"0f3c1a9e2b7d4c5e8f6a0b1c2d3e4f5a:s{i:04d}",
            "capability": "work", "input": {"ms": ms}}


def a2a_body(i: int, ms: int = 20) -> dict[str, Any]:
    """What an A2A agent step sends: the JSON-RPC ``SendMessage`` of ``A2AAgent``."""
    t = task_body(i, ms)
    return {"jsonrpc": "2.0", "method": "SendMessage", "id": f"{i}", "params": {
        "message": {"messageId": f"{t['idempotency_key']}#1", "contextId": t["idempotency_key"],
                    "role": "ROLE_USER",
                    "parts": [{"data": t["input"], "mediaType": "application/json"}],
                    "metadata": {"podium": {k: t[k] for k in (
                        "run_id", "step_id", "attempt", "idempotency_key", "capability")}}},
        "configuration": {"historyLength": 0}}}


# --- the server ------------------------------------------------------------------
class _Server(asyncio.Protocol):
    """Just enough HTTP/1.1: Content-Length bodies, keep-alive, one fixed answer."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


# --- the clients ------------------------------------------------------------------
def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _drive(call: Any, urls: list[str], n: int, concurrency: int, ms: int,
                 a2a: bool = False) -> None:
    """``n`` calls, ``concurrency`` at once, each caller keeping to one of ``urls``.

    So each server has ``concurrency / len(urls)`` calls in flight, never more
    (an agent with that many slots refuses one more with 429).
    """
    import orjson

    make = a2a_body if a2a else task_body
    bodies = [orjson.dumps(make(i, ms)) for i in range(n)]
    it = iter(range(n))

    async def worker(url: str) -> None:
        for i in it:
            await call(url, bodies[i], i)

    await asyncio.gather(*(worker(urls[j % len(urls)]) for j in range(concurrency)))


async def _measure(kind: str, urls: list[str], n: int, concurrency: int, ms: int
                   ) -> dict[str, float]:
    import orjson

    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "Accept-Encoding": "gzip, deflate"}
    if os.environ.get("BENCH_AUTHORIZATION"):  # bench/serve.py's server with a token
        headers["Authorization"] = os.environ["BENCH_AUTHORIZATION"]
    closers: list[Any] = []
    if kind == "httpx":
        import httpx

        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency,
                                                       max_keepalive_connections=concurrency))
        closers.append(client.aclose)

        async def call(url: str, body: bytes, i: int) -> None:
            r = await client.post(url + "/invoke", content=body,
                                  headers={**headers, "Idempotency-Key": str(i)})
            assert r.status_code == 200, r.status_code
            orjson.loads(r.content)
    elif kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        closers.append(session.close)

        async def call(url: str, body: bytes, i: int) -> None:
            async with session.post(url + "/invoke", data=body,
                                    headers={**headers, "Idempotency-Key": str(i)}) as r:
                assert r.status == 200, r.status
                orjson.loads(await r.read())
    elif kind == "aiohttp-a2a":  # the bare client speaking A2A's JSON-RPC binding
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        closers.append(session.close)
        rpc = {"Content-Type": "application/json", "Accept": "application/json",
               "A2A-Version": "1.0"}

        async def call(url: str, body: bytes, i: int) -> None:
            async with session.post(url + "/", data=body, headers=rpc) as r:
                assert r.status == 200, r.status
                answer = orjson.loads(await r.read())
                assert "result" in answer, answer
    elif kind == "podium":
        from podium.agents.base import Task
        from podium.agents.http import HttpAgent

        per_agent = max(1, concurrency // len(urls))
        agents = {u: HttpAgent(u, id=f"a{j}", capabilities=["work"], max_concurrency=per_agent)
                  for j, u in enumerate(urls)}
        closers.extend(a.aclose for a in agents.values())

        async def call(url: str, body: bytes, i: int) -> None:
            t = task_body(i, ms)
            await agents[url].invoke(Task(t["run_id"], t["step_id"], 1, t["idempotency_key"],
                                          "work", t["input"]))
    else:
        raise SystemExit(f"unknown client {kind!r} (choose from {', '.join(CLIENTS)})")
    try:
        a2a = kind == "aiohttp-a2a"
        await _drive(call, urls, concurrency * 4, concurrency, ms, a2a)  # warm-up
        cpu0, t0 = _cpu(), time.perf_counter()
        await _drive(call, urls, n, concurrency, ms, a2a)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
    finally:
        for close in closers:
            await close()
    return {"cpu_ms_per_request": cpu * 1000 / n, "requests_per_s": n / wall}


def run_client(kind: str, urls: list[str], n: int, concurrency: int, ms: int = 20,
               env: dict[str, str] | None = None) -> dict[str, float]:
    """One measurement in a fresh process (its own CPU clock, nothing else in it)."""
    out = subprocess.run(
        [sys.executable, str(HERE / "clients.py"), "--client", kind, "--urls", ",".join(urls),
         "--requests", str(n), "--concurrency", str(concurrency), "--ms", str(ms)],
        capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise SystemExit(f"client {kind} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def floor(urls: list[str], n: int, concurrency: int, ms: int, *, protocol: str = "http",
          runs: int = 3) -> dict[str, dict[str, float]]:
    """The bare client (aiohttp) against ``urls``: CPU per request, medians of ``runs``.

    ``protocol`` "a2a" sends A2A's JSON-RPC ``SendMessage`` to ``{url}/`` instead
    of a task to ``{url}/invoke``.
    """
    kind = "aiohttp-a2a" if protocol == "a2a" else "aiohttp"
    results = [run_client(kind, urls, n, concurrency, ms) for _ in range(runs)]
    return {k: summary([r[k] for r in results]) for k in results[0]}


def summary(values: list[float], digits: int = 3) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ms", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve))
        return
    if args.client:
        result = asyncio.run(_measure(args.client, args.urls.split(","), args.requests,
                                      args.concurrency, args.ms))
        print(json.dumps(result))
        return
    from fleet import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "clients.py"), "--serve", str(port)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    try:
        assert server.stdout.readline().strip() == "ready"
        kinds = args.clients.split(",")
        results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        order = cycle([kinds, kinds[::-1]])  # A B, B A, ...: neither always goes first
        for _ in range(args.runs):
            for kind in next(order):
                name, _, src = kind.partition("@")
                env = {**os.environ, "PYTHONPATH": src} if src else None
                results[kind].append(run_client(name, [f"http://127.0.0.1:{port}"],
                                                args.requests, args.concurrency, env=env))
    finally:
        server.terminate()
        server.wait(10)
        server.stdout.close()
    print(json.dumps({
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "requests": args.requests, "concurrency": args.concurrency, "runs": args.runs,
        "clients": {k: {m: summary([r[m] for r in v]) for m in v[0]}
                    for k, v in results.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
