"""The agent fleet against real HTTP agents: several processes per capability on 127.0.0.1.

Every agent here is a real ``python -m podium agent serve`` subprocess serving
a function of ``fleet_workers.py``; instances are made slow through their
environment, sick or well through files in their control folder, and are
killed with SIGKILL by PID (then restarted on the same port) while real
workflows run through ``podium.Engine``. Registries come from an agents file
(``build_registry``) or are built directly from ``HttpAgent``s and a
``RegistryConfig``; tests that need exact times drive the engine and registry
with a ``FakeClock``.

Nothing here asserts speed: bounds on counts are generous and every wait is
for a condition, with a deadline, so a busy two-core machine only makes the
file slower, never red.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml

from podium import AgentRegistry, Engine, EngineConfig, FakeClock, MemoryStore, PythonAgent
from podium.agents.base import Task
from podium.agents.breaker import BreakerConfig
from podium.agents.config import build_registry, load_agents_file
from podium.agents.health import HealthConfig
from podium.agents.http import HttpAgent
from podium.agents.registry import RegistryConfig
from podium.definition import load_workflow, workflow_from_dict
from podium.events import (
    AgentHealthChanged,
    CircuitStateChanged,
    Event,
    StepAttemptFailed,
    StepBackPressure,
    StepFailed,
    StepReady,
    StepRetryScheduled,
    StepStarted,
    StepSucceeded,
)
from podium.store import RunRecord

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


# --- the fleet: agent processes a test starts, kills and restarts ------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Instance:
    """One agent process (and, after a restart, its successor on the same port)."""

    name: str
    port: int
    control: Path
    target: str
    capability: str
    max_concurrency: int | None
    delay_ms: int
    generation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_health(self, status: str) -> None:
        (self.control / "health").write_text(status, encoding="utf-8")

    def set_failing(self, failing: bool) -> None:
        flag = self.control / "fail"
        if failing:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def calls(self) -> int:
        path = self.control / "calls"
        return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


@dataclass
class Fleet:
    root: Path
    instances: dict[str, Instance] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    async def start(self, name: str, *, target: str = "fleet_workers:work",
                    capability: str = "work", max_concurrency: int | None = None,
                    delay_ms: int = 50) -> Instance:
        control = self.root / name
        control.mkdir()
        inst = Instance(name, free_port(), control, target, capability, max_concurrency,
                        delay_ms)
        self.instances[name] = inst
        self._launch(inst)
        await self._wait_up(inst)
        return inst

    async def start_many(self, *specs: tuple[str, dict[str, Any]]) -> list[Instance]:
        """Start several instances at once (each takes most of a second to import)."""
        return list(await asyncio.gather(*(self.start(n, **kw) for n, kw in specs)))

    def _launch(self, inst: Instance) -> None:
        inst.generation += 1
        args = [sys.executable, "-m", "podium", "agent", "serve", inst.target,
                "--capability", inst.capability, "--port", str(inst.port),
                "--health", "fleet_workers:health", "--log-level", "warning"]
        if inst.max_concurrency is not None:
            args += ["--max-concurrency", str(inst.max_concurrency)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        env.update(PYTHONUNBUFFERED="1", FLEET_NAME=inst.name, FLEET_GEN=str(inst.generation),
                   FLEET_CONTROL=str(inst.control), FLEET_DELAY_MS=str(inst.delay_ms))
        inst.log = self.root / f"{inst.name}.{inst.generation}.log"
        log = inst.log.open("wb")
        self._logs.append(log)
        inst.proc = subprocess.Popen(args, cwd=HERE, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        self._procs.append(inst.proc)

    async def _wait_up(self, inst: Instance) -> None:
        assert inst.proc is not None
        assert inst.log is not None
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                if inst.proc.poll() is not None:
                    pytest.fail(f"{inst.name} exited with {inst.proc.returncode}:\n"
                                + inst.log.read_text())
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(f"{inst.url}/health", timeout=1)
                    return  # any answer, even 503 "unhealthy", means it listens
                if time.monotonic() > deadline:
                    pytest.fail(f"{inst.name} did not come up:\n{inst.log.read_text()}")
                await asyncio.sleep(0.05)

    def kill(self, name: str) -> int:
        """SIGKILL the instance's process by its PID (no graceful anything); return the PID."""
        proc = self.instances[name].proc
        assert proc is not None
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return proc.pid

    async def restart(self, name: str) -> Instance:
        """A new process of the same instance on the same port (generation + 1)."""
        inst = self.instances[name]
        assert inst.proc is not None
        assert inst.proc.poll() is not None, "kill it first"
        self._launch(inst)
        await self._wait_up(inst)
        return inst

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()  # by PID; SIGKILL below if it does not stop
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self._logs:
            log.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.close()


def agents_file(path: Path, agents: list[dict[str, Any]], **settings: Any) -> Path:
    path.write_text(yaml.safe_dump({**settings, "agents": agents}, sort_keys=False),
                    encoding="utf-8")
    return path


def http_spec(inst: Instance, **more: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"id": inst.name, "capabilities": [inst.capability], "url": inst.url}
    if inst.max_concurrency is not None:
        spec["max_concurrency"] = inst.max_concurrency
    return {**spec, **more}


@contextlib.asynccontextmanager
async def engine_for(registry: AgentRegistry, *, clock: FakeClock | None = None,
                     seed: int = 3) -> AsyncIterator[tuple[Engine, list[Event]]]:
    """An in-memory engine over ``registry`` and the list of every event it emits."""
    cfg = EngineConfig(registry=registry, store=MemoryStore(), rng=random.Random(seed))
    if clock is not None:
        cfg.clock = clock
    events: list[Event] = []
    try:
        async with Engine(cfg) as engine:
            engine.bus.subscribe(events.append)
            yield engine, events
    finally:
        await registry.aclose()


async def until(cond: Callable[[], bool], what: str, limit_s: float = 15.0) -> None:
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit_s:g}s waiting for {what}")
        await asyncio.sleep(0.01)


def fan_out(name: str, n: int, *, prefix: str = "s", agent: str = "work",
            **more: Any) -> dict[str, Any]:
    return {"name": name, **more,
            "steps": [{"id": f"{prefix}{i:03d}", "agent": agent} for i in range(n)]}


def served(run: RunRecord) -> Counter[str]:
    """Which agent the registry chose for each succeeded step."""
    return Counter(s.agent_id for s in run.steps.values() if s.status == "succeeded"
                   and s.agent_id is not None)


def transitions(events: list[Event], kind: type[Event], agent_id: str) -> list[tuple[str, str]]:
    return [(e.old, e.new) for e in events  # type: ignore[attr-defined]
            if isinstance(e, kind) and e.agent_id == agent_id]  # type: ignore[attr-defined]


def assert_every_step_succeeded(run: RunRecord) -> None:
    failed = {sid: (s.status, s.error) for sid, s in run.steps.items() if s.status != "succeeded"}
    assert not failed, (run.error, failed)
    assert run.status == "succeeded", run.error


# --- failover: an instance SIGKILLed mid-run, restarted on its port -----------


async def test_a_fan_out_loses_no_step_while_an_instance_is_killed_and_restarted(
    fleet: Fleet, tmp_path: Path
) -> None:
    """60 steps of ~50 ms over three instances; one is SIGKILLed mid-run, then restarted.

    The kill lands while the victim is serving: the instant the registry hands
    it a call after a few steps are done, so that call (and any in flight
    there) dies with the process. Those attempts fail as ``unavailable`` and
    are retried on a *different* instance (the registry avoids the one that
    just failed); active health checks (100 ms) and passive ejection stop
    sending it new calls. A gate step holds the second wave of 30 until the
    victim is back on the same port and checked healthy again, so the run
    also shows the restarted process taking work again (its outputs carry
    generation 2). No step fails, none needs a third attempt.
    """
    a, b, c = await fleet.start_many(*((n, {"max_concurrency": 4}) for n in
                                       ("worker-a", "worker-b", "worker-c")))
    path = agents_file(
        tmp_path / "agents.yaml", [http_spec(a), http_spec(b), http_spec(c)],
        strategy="least_loaded", acquire_timeout="20s",
        health={"interval": "100ms", "timeout": "1s", "unhealthy_after": 2, "healthy_after": 2},
        circuit_breaker={"failure_threshold": 3, "reset_timeout": "500ms"},
    )
    registry, config, _ = build_registry(path, entry_points_too=False, decorated_too=False)
    assert config is not None
    assert config.health.interval == 0.1
    gate_open = asyncio.Event()

    async def gate(task: Task) -> str:
        await gate_open.wait()
        return "open"

    registry.register(PythonAgent(gate, id="gate", capabilities=["gate"]))
    wave1 = [{"id": f"w1-{i:02d}", "agent": "work"} for i in range(30)]
    wave2 = [{"id": f"w2-{i:02d}", "agent": "work", "depends_on": ["gate"]} for i in range(30)]
    wf = workflow_from_dict({
        "name": "fleet-failover",
        "defaults": {"timeout": "10s",
                     "retry": {"max_attempts": 3, "initial_delay": "50ms", "jitter": "none"}},
        "steps": [*wave1, {"id": "gate", "agent": "gate"}, *wave2],
    })
    victim = c.name
    kill: dict[str, Any] = {}

    async with engine_for(registry) as (engine, events):
        successes = 0

        def kill_mid_run(event: Event) -> None:
            nonlocal successes
            if isinstance(event, StepSucceeded) and event.step_id.startswith("w1-"):
                successes += 1
            # StepStarted is emitted just before the call goes out: killing now
            # guarantees at least this attempt meets a dead process.
            if (not kill and isinstance(event, StepStarted) and event.agent_id == victim
                    and successes >= 3):
                kill.update(pid=fleet.kill(victim), inflight=registry.inflight(victim),
                            at=len(events))

        engine.bus.subscribe(kill_mid_run)
        handle = await engine.start(wf, {})
        await until(lambda: bool(kill), "the victim to be killed during wave 1")
        await until(lambda: registry.health_of(victim).level == "unhealthy",
                    "the dead instance to be marked unhealthy")
        await fleet.restart(victim)
        await until(lambda: registry.health_of(victim).level == "healthy",
                    "the restarted instance to be checked healthy again")
        gate_open.set()
        run = await asyncio.wait_for(handle.result(), 40)

    assert_every_step_succeeded(run)
    work_steps = {sid: s for sid, s in run.steps.items() if sid != "gate"}
    assert len(work_steps) == 60
    # The registry's choice is the process that answered (same name; generation
    # 1 before the kill, 2 after the restart).
    by_process: Counter[str] = Counter()
    for s in work_steps.values():
        assert s.output["served_by"].split("#")[0] == s.agent_id
        by_process[s.output["served_by"]] += 1
    assert set(served(run)) <= {"worker-a", "worker-b", "worker-c", "gate"}
    wave2_processes = Counter(s.output["served_by"] for sid, s in work_steps.items()
                              if sid.startswith("w2-"))
    assert wave2_processes[f"{victim}#2"] >= 1, wave2_processes  # back in the rotation
    assert f"{victim}#2" not in {s.output["served_by"] for sid, s in work_steps.items()
                                 if sid.startswith("w1-")}
    # Every lost attempt was on the killed instance, typed unavailable, and was
    # retried once, elsewhere.
    lost = [e for e in events if isinstance(e, StepAttemptFailed)]
    assert lost, "the call handed to the victim at the kill must have failed"
    assert {(e.agent_id, e.error.type) for e in lost} == {(victim, "unavailable")}
    for e in lost:
        step = run.steps[e.step_id]
        assert step.attempts == 2, (e.step_id, step)
        assert step.agent_id != victim, (e.step_id, step)
    assert max(s.attempts for s in work_steps.values()) <= 2
    # Health: dead → unhealthy; back → healthy only after healthy_after good checks.
    assert transitions(events, AgentHealthChanged, victim) == [
        ("unknown", "healthy"), ("healthy", "unhealthy"), ("unhealthy", "healthy")]
    for other in ("worker-a", "worker-b"):
        assert transitions(events, AgentHealthChanged, other) == [("unknown", "healthy")]
    print(f"\nkilled pid {kill['pid']} with {kill['inflight']} call(s) in flight;"
          f" served by process: {dict(sorted(by_process.items()))};"
          f" failed attempts: {len(lost)};"
          f" victim circuit: {transitions(events, CircuitStateChanged, victim)}")


# --- load spreading: capacity and weight -------------------------------------


async def test_load_spreads_in_proportion_to_capacity(fleet: Fleet, tmp_path: Path) -> None:
    """Instances with max_concurrency 2, 4 and 8 serve about 1/7, 2/7 and 4/7 of a fan-out.

    84 steps of 50 ms keep all 14 slots busy; each instance then serves at a
    rate of capacity / latency, so the counts follow capacity. No call ever
    exceeds an instance's own limit (it would answer 429, a failed attempt).
    """
    specs = [("cap-2", {"max_concurrency": 2}), ("cap-4", {"max_concurrency": 4}),
             ("cap-8", {"max_concurrency": 8})]
    instances = await fleet.start_many(*specs)
    path = agents_file(tmp_path / "agents.yaml", [http_spec(i) for i in instances],
                       strategy="least_loaded", health={"interval": "200ms"})
    registry, _, _ = build_registry(path, entry_points_too=False, decorated_too=False)
    async with engine_for(registry) as (engine, events):
        run = await engine.run(workflow_from_dict(fan_out("spread-capacity", 84)), {})
    assert_every_step_succeeded(run)
    assert not [e for e in events if isinstance(e, StepAttemptFailed)]
    counts = served(run)
    assert sum(counts.values()) == 84
    print(f"\ncounts by capacity 2/4/8: {dict(counts)}")
    assert counts["cap-8"] > counts["cap-4"] > counts["cap-2"] > 0, counts
    for name, expected in (("cap-2", 12), ("cap-4", 24), ("cap-8", 48)):
        assert 0.4 * expected <= counts[name] <= 1.8 * expected, counts


@pytest.mark.parametrize("strategy", ["least_loaded", "round_robin"])
async def test_load_spreads_in_proportion_to_weight(
    fleet: Fleet, tmp_path: Path, strategy: str
) -> None:
    """Two instances of weight 1 and 3 without a capacity cap: about 1/4 and 3/4 of the calls.

    ``max_parallel: 8`` keeps eight calls in flight, so the choice is made
    among free instances every time and only the weights decide.
    """
    light, heavy = await fleet.start_many(("light", {}), ("heavy", {}))
    path = agents_file(tmp_path / "agents.yaml",
                       [http_spec(light, weight=1), http_spec(heavy, weight=3)],
                       strategy=strategy, health={"interval": "200ms"})
    registry, _, _ = build_registry(path, entry_points_too=False, decorated_too=False)
    async with engine_for(registry) as (engine, _events):
        run = await engine.run(workflow_from_dict(fan_out("spread-weight", 80, max_parallel=8)),
                               {})
    assert_every_step_succeeded(run)
    counts = served(run)
    print(f"\n{strategy} counts by weight 1/3: {dict(counts)}")
    assert counts["light"] > 0
    assert 1.8 <= counts["heavy"] / counts["light"] <= 5.0, counts


# --- regions: own region first, then the fastest other one -------------------


async def test_the_own_region_serves_while_healthy_and_fails_over_to_the_fastest_region(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Engine region eu: the eu instance takes everything it can; when it is full
    the overflow goes to us (20 ms), not ap (150 ms, listed first); when it is
    SIGKILLed everything goes to us; once restarted it is preferred again.

    The remote latencies are given to the registry as the outcome of one call
    each, the way the engine reports a call, and the engine runs on a
    FakeClock, so the test's real calls all measure 0 s and cannot reorder the
    regions. Measured for real, the order was the machine's: on a loaded two-core
    machine the 20 ms agent once came out slower than the 150 ms one and the
    burst went to ap."""
    eu, ap, us = await fleet.start_many(("eu-1", {"max_concurrency": 2}),
                                        ("ap-1", {"delay_ms": 150}), ("us-1", {"delay_ms": 20}))
    path = agents_file(
        tmp_path / "agents.yaml",
        [http_spec(eu, region="eu"), http_spec(ap, region="ap"), http_spec(us, region="us")],
        region="eu", health={"interval": "100ms", "unhealthy_after": 2, "healthy_after": 2},
    )
    registry, _, _ = build_registry(path, entry_points_too=False, decorated_too=False)
    async with engine_for(registry, clock=FakeClock()) as (engine, events):
        # 1. Local and not full: the eu instance serves every step.
        run = await engine.run(workflow_from_dict(fan_out("local", 10, max_parallel=2)), {})
        assert_every_step_succeeded(run)
        assert served(run) == {"eu-1": 10}
        # 2. Full: one call to each remote teaches the registry their latency,
        #    then a burst overflows to the fastest other region only.
        for agent_id, latency_s in (("ap-1", 0.150), ("us-1", 0.020)):
            lease = await registry.acquire(f"@{agent_id}")
            lease.release(True, None, latency_s)
        run = await engine.run(workflow_from_dict(fan_out("burst", 20)), {})
        assert_every_step_succeeded(run)
        burst = served(run)
        print(f"\nburst with eu full: {dict(burst)}")
        assert burst["eu-1"] >= 2, burst
        assert burst["us-1"] >= 1, burst
        assert burst["ap-1"] == 0, burst
        # 3. Down: SIGKILL eu; once health checks see it, us takes everything.
        fleet.kill("eu-1")
        await until(lambda: registry.health_of("eu-1").level == "unhealthy", "eu-1 unhealthy")
        mark = len(events)
        run = await engine.run(workflow_from_dict(fan_out("eu-down", 10, max_parallel=2)), {})
        assert_every_step_succeeded(run)
        assert served(run) == {"us-1": 10}
        assert not [e for e in events[mark:] if isinstance(e, StepAttemptFailed)]
        # 4. Back: restarted on its port and checked healthy, eu is preferred again.
        await fleet.restart("eu-1")
        await until(lambda: registry.health_of("eu-1").level == "healthy", "eu-1 healthy")
        run = await engine.run(workflow_from_dict(fan_out("eu-back", 10, max_parallel=2)), {})
        assert_every_step_succeeded(run)
        assert served(run) == {"eu-1": 10}
    assert transitions(events, AgentHealthChanged, "eu-1") == [
        ("unknown", "healthy"), ("healthy", "unhealthy"), ("unhealthy", "healthy")]
    assert registry.report()["region"] == "eu"


# --- 429 and Retry-After ------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "low", "high"), [(2, 2.0, 2.2), (0, 0.025, 0.1)])
async def test_a_429_is_back_pressure_waited_out_without_using_an_attempt(
    fleet: Fleet, retry_after: int, low: float, high: float
) -> None:
    """With a FakeClock: an agent at capacity answers 429 twice. The same attempt is
    sent again once its ``Retry-After`` has passed (+ at most 10% jitter), or after a
    short back-off without one; no attempt is used up, nothing is a failure, and the
    agent's breaker never hears of it."""
    inst = await fleet.start("throttled", target="fleet_workers:throttled",
                             capability="quota")
    clock = FakeClock()
    registry = AgentRegistry(
        [HttpAgent(inst.url, id="throttled", capabilities=["quota"])],
        RegistryConfig(health=HealthConfig(interval_s=0),
                       breaker=BreakerConfig(failure_threshold=1)), clock=clock)
    wf = workflow_from_dict({"name": "throttled", "steps": [{
        "id": "call", "agent": "quota",
        "input": {"retry_after": retry_after, "busy_calls": 2}}]})  # no retry policy at all
    async with engine_for(registry, clock=clock) as (engine, events):
        run = await engine.run(wf, {})
    assert_every_step_succeeded(run)
    assert run.steps["call"].attempts == 1
    busy = [e for e in events if isinstance(e, StepBackPressure)]
    assert [(e.attempt, e.agent_id, e.retry_after_s) for e in busy] == [
        (1, "throttled", retry_after)] * 2
    assert not [e for e in events if isinstance(e, StepAttemptFailed | StepRetryScheduled)]
    assert not [e for e in events if isinstance(e, CircuitStateChanged)]
    assert len(clock.sleeps) == 2
    assert all(low <= s <= high for s in clock.sleeps), clock.sleeps
    starts = [e.ts for e in events if isinstance(e, StepStarted)]
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx(clock.sleeps, abs=1e-6)
    assert registry.breaker_of("throttled").state == "closed"
    assert inst.calls() == 3


async def test_a_429_from_a_full_instance_is_waited_out_no_sooner_than_retry_after(
    fleet: Fleet,
) -> None:
    """Real time: an instance serving one call at a time answers a second with
    429 ``Retry-After: 1``; the engine sends that same attempt again no sooner than
    a second later, and it succeeds: one attempt each, no failure."""
    inst = await fleet.start("single", max_concurrency=1, delay_ms=300)
    # The registry is not told about the limit: the agent itself pushes back.
    registry = AgentRegistry([HttpAgent(inst.url, id="single", capabilities=["work"])],
                             RegistryConfig(health=HealthConfig(interval_s=0)))
    wf = workflow_from_dict(fan_out("pushback", 2))
    async with engine_for(registry) as (engine, events):
        run = await engine.run(wf, {})
    assert_every_step_succeeded(run)
    assert {s.attempts for s in run.steps.values()} == {1}
    (busy,) = [e for e in events if isinstance(e, StepBackPressure)]
    assert busy.retry_after_s == 1
    assert not [e for e in events if isinstance(e, StepAttemptFailed)]
    again = [e for e in events if isinstance(e, StepStarted) and e.step_id == busy.step_id][-1]
    assert again.ts - busy.ts >= 1.0


# --- health: detection and recovery with hysteresis ---------------------------


async def test_health_checks_flip_an_agent_only_after_consecutive_results(
    fleet: Fleet,
) -> None:
    """Against real ``/health`` endpoints whose answer a file flips.

    Checked round by round: unhealthy only after ``unhealthy_after`` (3) bad
    checks in a row, healthy again only after ``healthy_after`` (2) good ones,
    an alternating agent never flips, ``degraded`` is taken at once but ranks
    below healthy. Then the live monitor (every 100 ms) under an engine: the
    sick instance is routed around, and used again once it recovers.
    """
    primary, standby = await fleet.start_many(("primary", {}), ("standby", {}))
    interval = 0.1
    registry = AgentRegistry(
        [HttpAgent(i.url, id=i.name, capabilities=["work"]) for i in (primary, standby)],
        RegistryConfig(health=HealthConfig(interval_s=interval, timeout_s=1.0,
                                           unhealthy_after=3, healthy_after=2)),
    )
    events: list[Event] = []
    registry.attach(events.append)

    async def check(times: int = 1) -> str:
        for _ in range(times):
            await registry.check_health()
        return registry.health_of("primary").level

    try:
        assert await check() == "healthy"
        primary.set_health("unhealthy")
        assert await check(2) == "healthy"      # two bad checks are not enough
        assert await check() == "unhealthy"     # the third is
        primary.set_health("healthy")
        assert await check() == "unhealthy"     # one good check is not enough
        assert await check() == "healthy"
        for _ in range(3):                      # flapping never crosses either threshold
            primary.set_health("unhealthy")
            assert await check(2) == "healthy"
            primary.set_health("healthy")
            assert await check() == "healthy"
        primary.set_health("degraded")
        assert await check() == "degraded"      # still usable, so no hysteresis
        leases = [await registry.acquire("work") for _ in range(10)]
        assert {lease.agent.id for lease in leases} == {"standby"}  # healthy ranks first
        for lease in leases:
            lease.release()
        primary.set_health("healthy")
        assert await check() == "healthy"
    except BaseException:
        await registry.aclose()
        raise
    assert transitions(events, AgentHealthChanged, "primary") == [
        ("unknown", "healthy"), ("healthy", "unhealthy"), ("unhealthy", "healthy"),
        ("healthy", "degraded"), ("degraded", "healthy")]
    assert transitions(events, AgentHealthChanged, "standby") == [("unknown", "healthy")]

    async with engine_for(registry) as (engine, live):
        def changes() -> list[AgentHealthChanged]:
            return [e for e in live if isinstance(e, AgentHealthChanged)]

        flipped = time.time()
        primary.set_health("unhealthy")
        await until(lambda: len(changes()) >= 1, "the monitor to mark primary unhealthy")
        # Three checks in a row, 100 ms apart: at least two intervals after the flip.
        assert changes()[0].ts - flipped >= 2 * interval * 0.95
        run = await engine.run(workflow_from_dict(fan_out("sick", 8, max_parallel=2)), {})
        assert served(run) == {"standby": 8}
        primary.set_health("healthy")
        await until(lambda: len(changes()) >= 2, "the monitor to mark primary healthy")
        run = await engine.run(workflow_from_dict(fan_out("well", 8, max_parallel=2)), {})
        assert_every_step_succeeded(run)
        assert served(run)["primary"] >= 1
    assert [(e.agent_id, e.old, e.new) for e in changes()] == [
        ("primary", "healthy", "unhealthy"), ("primary", "unhealthy", "healthy")]
    assert changes()[0].reason == "health check: unhealthy"


async def test_the_agents_file_health_timeout_is_what_a_slow_health_check_gets(
    fleet: Fleet, tmp_path: Path
) -> None:
    """``health: {timeout: 5s}`` lets a /health that takes 2.2 s pass; the HTTP agent's
    own 2 s default used to cut it first and call the agent unhealthy."""
    inst = await fleet.start("deliberate")
    (inst.control / "health_delay").write_text("2.2", encoding="utf-8")
    path = agents_file(tmp_path / "agents.yaml", [http_spec(inst)],
                       health={"interval": "1h", "timeout": "5s", "unhealthy_after": 1})
    registry, _, _ = build_registry(path, entry_points_too=False, decorated_too=False)
    try:
        await registry.check_health()
        state = registry.health_of("deliberate")
        assert state.level == "healthy", state.detail
        assert state.check_latency_s is not None
        assert state.check_latency_s >= 2.2
    finally:
        await registry.aclose()


# --- circuit breakers ---------------------------------------------------------


async def test_breaker_states_follow_a_real_failing_agent_and_refusals_cost_no_attempt(
    fleet: Fleet,
) -> None:
    """closed → open → half_open → open → half_open → closed, with a FakeClock.

    Two failures open ``shaky``'s breaker; while it is open, steps with no
    retry policy (one attempt each) all succeed on ``steady`` and ``shaky``
    receives nothing: a refusal is a failover, not a spent attempt. After the
    reset timeout (30 s, skipped on the clock) one trial call is let through:
    it fails (open again), then, once the agent is fixed, succeeds (closed),
    and ``shaky`` takes its share again.
    """
    shaky, steady = await fleet.start_many(("shaky", {}), ("steady", {}))
    shaky.set_failing(True)
    clock = FakeClock()
    registry = AgentRegistry(
        [HttpAgent(i.url, id=i.name, capabilities=["work"]) for i in (shaky, steady)],
        RegistryConfig(
            health=HealthConfig(interval_s=0, eject_consecutive_failures=100,
                                eject_min_calls=100),
            breaker=BreakerConfig(failure_threshold=2, reset_timeout_s=30, failure_rate=None),
        ),
        clock=clock,
    )

    def at_shaky(name: str, n: int = 1) -> Any:
        return workflow_from_dict({"name": name, "steps": [
            {"id": f"s{i}", "agent": "@shaky", "optional": True} for i in range(n)]})

    async with engine_for(registry, clock=clock) as (engine, events):
        run = await engine.run(at_shaky("trip", 2), {})
        assert [s.error.type for s in run.steps.values() if s.error] == ["agent_error"] * 2
        assert registry.breaker_of("shaky").state == "open"
        calls_when_open = shaky.calls()

        run = await engine.run(workflow_from_dict(fan_out("while-open", 12)), {})
        assert_every_step_succeeded(run)
        assert served(run) == {"steady": 12}
        assert {s.attempts for s in run.steps.values()} == {1}
        assert shaky.calls() == calls_when_open

        clock.advance(30)
        run = await engine.run(at_shaky("trial-fails"), {})
        assert run.steps["s0"].status == "failed"
        assert registry.breaker_of("shaky").state == "open"

        shaky.set_failing(False)
        clock.advance(30)
        run = await engine.run(at_shaky("trial-passes"), {})
        assert_every_step_succeeded(run)
        assert registry.breaker_of("shaky").state == "closed"

        run = await engine.run(workflow_from_dict(fan_out("closed-again", 12)), {})
        assert_every_step_succeeded(run)
        assert served(run)["shaky"] >= 1
    changes = [e for e in events if isinstance(e, CircuitStateChanged)]
    assert [(e.agent_id, e.old, e.new) for e in changes] == [
        ("shaky", "closed", "open"), ("shaky", "open", "half_open"),
        ("shaky", "half_open", "open"), ("shaky", "open", "half_open"),
        ("shaky", "half_open", "closed")]
    # Each probe came exactly when the reset timeout ran out on the clock.
    assert changes[1].ts - changes[0].ts == 30
    assert changes[3].ts - changes[2].ts == 30


# --- acquire timeout vs. attempt timeout --------------------------------------


async def test_acquire_timeout_bounds_the_wait_for_a_slot_not_the_call(
    fleet: Fleet, tmp_path: Path
) -> None:
    """One slot, held for 1.5 s by ``hold``. ``impatient`` (acquire_timeout 200 ms)
    and ``by-default`` (the agents file's acquire_timeout, 700 ms) fail as
    ``no_capacity`` while still waiting; ``patient`` (acquire_timeout 5 s,
    timeout 800 ms) waits 1.5 s for the slot and succeeds, because its
    timeout only starts when its call does. Every two moments compared are
    half a second apart or more, so a loaded machine cannot swap them."""
    inst = await fleet.start("slowpoke", max_concurrency=1)
    path = agents_file(tmp_path / "agents.yaml", [http_spec(inst)], acquire_timeout="700ms",
                       health={"interval": "200ms"})
    registry, _, _ = build_registry(path, entry_points_too=False, decorated_too=False)
    wf = workflow_from_dict({"name": "slots", "on_failure": "continue", "steps": [
        {"id": "hold", "agent": "work", "input": {"ms": 1500}},
        {"id": "patient", "agent": "work", "input": {"ms": 100}, "acquire_timeout": "5s",
         "timeout": "800ms"},
        {"id": "impatient", "agent": "work", "input": {"ms": 100}, "acquire_timeout": "200ms",
         "timeout": "10s"},
        {"id": "by-default", "agent": "work", "input": {"ms": 100}},
    ]})
    async with engine_for(registry) as (engine, events):
        run = await engine.run(wf, {})
    steps = run.steps
    assert steps["hold"].status == "succeeded"
    assert steps["patient"].status == "succeeded"
    assert steps["patient"].attempts == 1
    for sid, limit in (("impatient", "0.2s"), ("by-default", "0.7s")):
        err = steps[sid].error
        assert steps[sid].status == "failed"
        assert err is not None
        assert err.type == "no_capacity"
        assert f"stayed at capacity for {limit}" in err.message
    first_start = next(e for e in events if isinstance(e, StepStarted))
    assert first_start.step_id == "hold"
    order = [e.step_id for e in events if isinstance(e, StepFailed | StepSucceeded)]
    assert order == ["impatient", "by-default", "hold", "patient"]
    ready = next(e.ts for e in events if isinstance(e, StepReady) and e.step_id == "patient")
    done = next(e.ts for e in events if isinstance(e, StepSucceeded) and e.step_id == "patient")
    assert done - ready > 0.8  # longer than its timeout, all of it spent waiting for the slot
    assert inst.calls() == 2


# --- the example fleet --------------------------------------------------------


def test_the_fleet_example_files_agree() -> None:
    """examples/fleet: the agents file loads, the workflow validates, its fan-out
    capability is served by several HTTP agents in two regions, and the start
    script serves each of them on the port the agents file names."""
    folder = ROOT / "examples" / "fleet"
    agents = load_agents_file(folder / "fleet.yaml")
    wf = load_workflow(folder / "workflow.yaml")
    fan_out_steps = [s for s in wf.steps if not s.depends_on]
    assert len(fan_out_steps) >= 30
    (capability,) = {s.agent for s in fan_out_steps}
    remote = [a for a in agents.agents if capability in a.capabilities]
    assert len(remote) >= 3
    regions = {a.region for a in remote}
    assert len(regions) == 2
    assert agents.region in regions
    provided = {c for a in agents.agents for c in a.capabilities}
    assert {s.agent for s in wf.steps} <= provided
    script = (folder / "start-fleet.sh").read_text(encoding="utf-8")
    for a in remote:
        assert a.url is not None
        assert f"{a.id} {a.url.rsplit(':', 1)[1]} " in script, a.id
