"""Throughput and CPU of one engine over a fleet of real HTTP and A2A agents.

Four agent processes on 127.0.0.1 each serve a function that takes 20 ms:
``podium agent serve`` for HTTP (``max_concurrency`` 16 on the servers too),
the a2a-sdk's own JSON-RPC server for A2A; the engine's registry gives each
agent 16 slots. One workflow of 1,000 parallel steps runs over them, in
memory, in an engine process of its own. The ideal makespan is
``steps × latency / total concurrency`` (1,000 × 20 ms / 64 = 0.3125 s):
what a scheduler with no overhead of its own would take.

For each kind it prints (medians, min, max over the repetitions):

- ``floor_client_cpu_ms_per_request``: the bare client (aiohttp, see
  bench/clients.py) sending the same payloads to the same agents with the
  same concurrency, in a process of its own: what a call costs at least;
- ``engine_cpu_ms_per_step``: the engine process's CPU over the measured run,
  per step, and its ratio to the floor;
- ``makespan_over_ideal``;
- ``agents_cpu_ms_per_step``: the agent processes' CPU over the same run
  (from /proc; on 2 cores the engine and the agents compete for them).

``in_process_baseline`` is the same workflow over four in-process agents with
the same latency and capacity: the difference is the cost of the network.
Each repetition is a fresh engine process (new connection pools); a warm-up
run in it is not measured, so connection set-up and plan compilation stay
out of the numbers, and so does agent start-up. The engine process tunes its
garbage collector (``podium.tuning.tune_gc``) as ``podium run`` does, and so
does each ``podium agent serve``.

    python bench/fleet.py                       # 5 repetitions of 1,000 steps, HTTP and A2A
    python bench/fleet.py --quick               # smoke: 1 repetition of 200 steps
    python bench/fleet.py --kinds http --compare /tmp/old/src   # before/after
    python bench/fleet.py --kinds http,a2a-stub   # A2A without the SDK server's CPU

``--compare DIR`` also runs every repetition with ``DIR`` first on
``PYTHONPATH`` (another checkout's ``src``), alternating the two (A B, B A,
...) against the same agent processes, and prints both.

This file is also the agents' code: ``fleet:work`` for ``podium agent serve``
and ``--a2a-serve PORT`` for an A2A server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KINDS = ("http", "a2a")  # and "a2a-stub": A2A agents on _StubA2A, not the SDK's server


async def work(task: Any) -> dict[str, Any]:
    """The agent: wait ``input.ms`` milliseconds (a remote call's latency), answer."""
    await asyncio.sleep(task.input["ms"] / 1000)
    return {"pid": os.getpid()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the agents -------------------------------------------------------------------
def a2a_serve(port: int) -> None:
    """An A2A agent on the SDK's own server stack that does what ``work`` does."""
    import uvicorn
    from a2a.helpers import get_data_parts, new_data_message
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
    from starlette.applications import Starlette

    class Work(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            assert context.message is not None
            [data] = get_data_parts(context.message.parts)
            await asyncio.sleep(data["ms"] / 1000)
            await event_queue.enqueue_event(
                new_data_message({"pid": os.getpid()}, context_id=context.context_id))

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    url = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name="work", description="Waits, then answers.", version="1.0.0",
        supported_interfaces=[AgentInterface(url=url + "/", protocol_binding="JSONRPC",
                                             protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["application/json"], default_output_modes=["application/json"],
        skills=[AgentSkill(id="work", name="Work", description="work", tags=["bench"])])
    handler = DefaultRequestHandler(agent_executor=Work(), task_store=InMemoryTaskStore(),
                                    agent_card=card)
    app = Starlette(routes=[*create_agent_card_routes(card),
                            *create_jsonrpc_routes(handler, rpc_url="/")])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none")


class _StubA2A(asyncio.Protocol):
    """A2A's JSON-RPC ``SendMessage`` answered with a data message after ``ms``, and the card.

    Raw asyncio, a few microseconds per request: with ``--a2a-server stub`` the
    engine's CPU per A2A step is measured without the SDK server's ~2 ms per
    request competing for the same 2 cores.
    """

    card = b""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].split(b"\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            if head[0].startswith(b"GET"):
                self._send(self.card)
                continue
            import orjson

            rpc = orjson.loads(body)
            message = rpc["params"]["message"]
            answer = orjson.dumps({"jsonrpc": "2.0", "id": rpc["id"], "result": {"message": {
                "messageId": message["messageId"] + "-answer", "contextId": message["contextId"],
                "role": "ROLE_AGENT", "parts": [{"data": {"pid": os.getpid()}}]}}})
            ms = message["parts"][0]["data"]["ms"]
            asyncio.get_running_loop().call_later(ms / 1000, self._send, answer)

    def _send(self, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


async def _a2a_stub(port: int) -> None:
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
    from google.protobuf.json_format import MessageToJson

    url = f"http://127.0.0.1:{port}"
    _StubA2A.card = MessageToJson(AgentCard(
        name="work", description="Waits, then answers.", version="1.0.0",
        supported_interfaces=[AgentInterface(url=url + "/", protocol_binding="JSONRPC",
                                             protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=False),
        skills=[AgentSkill(id="work", name="Work", description="work")])).encode()
    server = await asyncio.get_running_loop().create_server(_StubA2A, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def start_agents(kind: str, n: int, capacity: int, folder: Path
                 ) -> list[tuple[subprocess.Popen[bytes], str]]:
    procs = []
    for i in range(n):
        port = free_port()
        if kind == "http":
            argv = [sys.executable, "-m", "podium", "agent", "serve", "fleet:work",
                    "--capability", "work", "--port", str(port), "--max-concurrency",
                    str(capacity), "--log-level", "warning"]
            ready = "/health"
        else:
            argv = [sys.executable, str(HERE / "fleet.py"), "--a2a-serve", str(port)]
            if kind == "a2a-stub":
                argv.append("--stub")
            ready = "/.well-known/agent-card.json"
        log = (folder / f"{kind}-agent-{i}.log").open("wb")
        procs.append((subprocess.Popen(argv, cwd=HERE, stdout=log, stderr=subprocess.STDOUT),
                      f"http://127.0.0.1:{port}"))
        log.close()
    import httpx

    deadline = time.monotonic() + 60
    for proc, url in procs:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"agent at {url} exited with {proc.returncode}")
            try:
                httpx.get(url + ready, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"agent at {url} did not come up") from None
                time.sleep(0.05)
    return procs


def stop_agents(procs: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc, _ in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_of(pids: list[int]) -> float | None:
    """User + system CPU seconds of these processes so far (Linux /proc), else None."""
    if not pids:
        return None
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except OSError:
        return None
    return total / os.sysconf("SC_CLK_TCK")


# --- one engine run (in its own process) -------------------------------------------
async def one(kind: str, urls: list[str], capacity: int, steps: int, latency_ms: int,
              agent_pids: list[int]) -> dict[str, Any]:
    from podium import AgentRegistry, Engine, EngineConfig, MemoryStore, PythonAgent, Step, Workflow
    from podium.agents.base import Agent
    from podium.events import Event, StepStarted
    from podium.tuning import tune_gc

    tune_gc()  # as podium run, podium worker and podium serve do in their processes

    agents: list[Agent]
    if kind == "in_process":
        agents = [PythonAgent(work, id=f"agent-{i}", capabilities=["work"],
                              max_concurrency=capacity) for i in range(4)]
    elif kind == "http":
        from podium.agents.http import HttpAgent

        agents = [HttpAgent(url, id=f"agent-{i}", capabilities=["work"], max_concurrency=capacity)
                  for i, url in enumerate(urls)]
    else:  # a2a, a2a-stub
        from podium.agents.a2a import A2AAgent

        agents = [A2AAgent(url, id=f"agent-{i}", capabilities=["work"], max_concurrency=capacity)
                  for i, url in enumerate(urls)]
    registry = AgentRegistry(agents)
    wf = Workflow(name="fleet-bench", mode="parallel",
                  steps=[Step(id=f"s{i:04d}", agent="work", input={"ms": latency_ms})
                         for i in range(steps)])
    attempts = 0

    def count(event: Event) -> None:
        nonlocal attempts
        if isinstance(event, StepStarted):
            attempts += 1

    try:
        async with Engine(EngineConfig(registry=registry, store=MemoryStore())) as engine:
            warm = await engine.run(wf, {})  # connections, plan: not measured
            assert warm.status == "succeeded", warm.error
            engine.bus.subscribe(count)
            agents0 = cpu_of(agent_pids)
            cpu0, t0 = time.process_time(), time.perf_counter()
            run = await engine.run(wf, {})
            makespan, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            agents1 = cpu_of(agent_pids)
    finally:
        await registry.aclose()
    assert run.status == "succeeded", run.error
    per_agent = Counter(s.agent_id for s in run.steps.values())
    return {"makespan_s": makespan, "cpu_s": cpu, "attempts": attempts,
            "agents_cpu_s": (agents1 - agents0) if agents0 is not None and agents1 is not None
            else None,
            "per_agent": dict(sorted(per_agent.items()))}


def run_engine(kind: str, urls: list[str], pids: list[int], args: argparse.Namespace,
               steps: int, src: str | None = None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": src} if src else None
    out = subprocess.run(
        [sys.executable, str(HERE / "fleet.py"), "--engine", kind, "--urls", ",".join(urls),
         "--pids", ",".join(map(str, pids)), "--steps", str(steps),
         "--capacity", str(args.capacity), "--latency-ms", str(args.latency_ms)],
        capture_output=True, text=True, check=False, env=env, cwd=HERE)
    if out.returncode != 0:
        raise SystemExit(f"engine run ({kind}, {src or 'this checkout'}) failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def summary(values: list[float], digits: int = 4) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def figures(results: list[dict[str, Any]], steps: int, ideal: float,
            floor_ms: float | None) -> dict[str, Any]:
    makespans = [r["makespan_s"] for r in results]
    engine = [r["cpu_s"] * 1000 / steps for r in results]
    agents_cpu = [r["agents_cpu_s"] * 1000 / steps for r in results
                  if r["agents_cpu_s"] is not None]
    names = sorted({a for r in results for a in r["per_agent"]})
    out: dict[str, Any] = {
        "engine_cpu_ms_per_step": summary(engine, 3),
        "makespan_s": summary(makespans),
        "makespan_over_ideal": round(statistics.median(makespans) / ideal, 2),
        "throughput_steps_per_s": summary([steps / m for m in makespans], 1),
        "agents_cpu_ms_per_step": summary(agents_cpu, 3) if agents_cpu else None,
        "attempts_per_run": [r["attempts"] for r in results],
        "per_agent_median": {a: statistics.median(r["per_agent"].get(a, 0) for r in results)
                             for a in names},
    }
    if floor_ms:
        out["engine_cpu_over_floor"] = round(statistics.median(engine) / floor_ms, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one repetition of 200 steps")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--capacity", type=int, default=16, help="max_concurrency of each agent")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--kinds", default=",".join(KINDS), help="http, a2a or both")
    parser.add_argument("--compare", metavar="DIR", help="also run with DIR first on PYTHONPATH")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-client floor")
    parser.add_argument("--a2a-serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    parser.add_argument("--pids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.a2a_serve:
        if args.stub:
            asyncio.run(_a2a_stub(args.a2a_serve))
        else:
            a2a_serve(args.a2a_serve)
        return
    if args.engine:
        urls = args.urls.split(",") if args.urls else []
        pids = [int(p) for p in args.pids.split(",")] if args.pids else []
        print(json.dumps(asyncio.run(one(args.engine, urls, args.capacity, args.steps,
                                         args.latency_ms, pids))))
        return
    from clients import floor

    reps = 1 if args.quick else args.reps
    steps = args.steps or (200 if args.quick else 1000)
    total = args.agents * args.capacity
    ideal = steps * args.latency_ms / 1000 / total
    doc: dict[str, Any] = {
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2), "reps": reps, "steps": steps,
        "agents": args.agents, "latency_ms": args.latency_ms,
        "max_concurrency_each": args.capacity, "total_concurrency": total,
        "ideal_makespan_s": round(ideal, 4),
        "ideal_throughput_steps_per_s": round(steps / ideal, 1),
    }
    variants = [("new", None)] + ([("old", args.compare)] if args.compare else [])
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            procs = start_agents(kind, args.agents, args.capacity, Path(tmp))
            try:
                urls = [url for _, url in procs]
                pids = [p.pid for p, _ in procs]
                floor_ms = None
                section: dict[str, Any] = {}
                if not args.no_floor:
                    protocol = "http" if kind == "http" else "a2a"
                    fl = floor(urls, steps, total, args.latency_ms, protocol=protocol,
                               runs=max(3, reps) if not args.quick else 1)
                    floor_ms = fl["cpu_ms_per_request"]["median"]
                    section["floor_client_cpu_ms_per_request"] = fl["cpu_ms_per_request"]
                results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
                for rep in range(reps):
                    for name, src in (variants if rep % 2 == 0 else variants[::-1]):
                        results[name].append(run_engine(kind, urls, pids, args, steps, src))
                for name, _ in variants:
                    section[name if args.compare else "engine"] = figures(
                        results[name], steps, ideal, floor_ms)
                doc[kind] = section
            finally:
                stop_agents(procs)
    base = [run_engine("in_process", [], [], args, steps) for _ in range(reps)]
    doc["in_process_baseline"] = figures(base, steps, ideal, None)
    doc["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
