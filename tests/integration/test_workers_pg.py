"""Many ``podium worker`` processes on one PostgreSQL database: nothing lost, nothing twice.

Real workers (the CLI in subprocesses) share a throwaway PostgreSQL cluster
and the durability tests' logging agents (every call appends a line to one
file before doing anything). What is checked is what the database holds and
what the agents were asked:

- three workers and fifty submitted runs, one worker ``kill -9``-ed mid-way:
  every run succeeds, every step has exactly one committed success, a step
  runs again only if it was in flight on the killed worker, and those runs
  continue on another worker within the lease plus a second;
- SIGTERM hands runs back: they continue on another worker well before the
  lease would have let anyone take them;
- a worker frozen past its lease (SIGSTOP) and woken (SIGCONT) commits nothing
  for the runs others took over;
- ``podium cancel`` of a run executing on a worker ends it within a second,
  with the request in its timeline;
- two ``podium resume`` of one stale run: exactly one executes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from podium.agents.registry import AgentRegistry
from podium.definition.loader import load_workflow
from podium.runtime import Runtime, RuntimeConfig
from tests.integration.podium_proc import Sandbox, chain, wait_for

pytestmark = pytest.mark.postgres

LEASE_S = 2.0


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def _submit(url: str, wf: Path, n: int) -> list[str]:
    workflow = load_workflow(wf)

    async def go() -> list[str]:
        async with Runtime(RuntimeConfig(db=url, registry=AgentRegistry(), alerts=False)) as rt:
            return [(await rt.engine.submit(workflow, {"i": i})).run_id for i in range(n)]

    return asyncio.run(go())


def _worker(sb: Sandbox, url: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
    return sb.spawn("worker", "--name", name, "--lease", f"{LEASE_S:g}s", *extra,
                    agents=True, db=url)


def _registered(url: str, worker_id: str) -> bool:
    import psycopg

    try:
        return _sql(url, "SELECT 1 FROM workers WHERE id = %s", worker_id) != []
    except psycopg.errors.UndefinedTable:  # the worker has not made the schema yet
        return False


def _statuses(url: str) -> Counter[str]:
    return Counter(s for (s,) in _sql(url, "SELECT status FROM runs"))


def _events(url: str, run_id: str) -> list[tuple[int, str, dict[str, Any], float]]:
    rows = _sql(url, "SELECT seq, type, data, ts FROM events WHERE run_id = %s ORDER BY seq",
                run_id)
    return [(seq, kind, json.loads(data), ts) for seq, kind, data, ts in rows]


def _stop(sb: Sandbox, *workers: subprocess.Popen[bytes]) -> None:
    """SIGTERM to those still running: each hands its runs back and exits 0."""
    alive = [w for w in workers if w.poll() is None]
    for w in alive:
        w.send_signal(signal.SIGTERM)
    for w in alive:
        try:
            code = w.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"a worker did not stop on SIGTERM: {sb.stderr_of(w)}") from None
        assert code == 0, sb.stderr_of(w)


def _one_success_per_step(url: str, run_id: str, steps: int) -> None:
    events = _events(url, run_id)
    assert [e[0] for e in events] == list(range(1, len(events) + 1)), "gaps in the log"
    successes = Counter(e[2]["step_id"] for e in events if e[1] == "step_succeeded")
    assert successes == Counter({f"s{i:02d}": 1 for i in range(steps)}), run_id


@pytest.mark.timeout(300)
def test_three_workers_one_killed_lose_nothing_and_run_no_success_twice(
        sandbox: Sandbox, pg_url: str) -> None:
    sb, url, steps = sandbox, pg_url, 3
    wf = sb.workflow("fleet", chain(steps, (100, 300), name="fleet"))
    runs = _submit(url, wf, 50)
    workers = [_worker(sb, url, f"w{i}", "--concurrency", "6") for i in range(3)]
    assert wait_for(lambda: _statuses(url)["succeeded"] >= 10, 90), sb.stderr_of(workers[0])
    # Frozen first, so that nothing it calls or commits falls between what is read here
    # and its death (its agents run in its own process).
    os.kill(workers[0].pid, signal.SIGSTOP)
    killed_at = time.time()
    held = {r for (r,) in _sql(url, "SELECT run_id FROM runs WHERE owner = 'w0'"
                                    " AND status IN ('pending', 'running')")}
    calls_at_kill = len(sb.executions())
    sb.kill(workers[0])
    assert wait_for(lambda: _statuses(url)["succeeded"] == 50, 180), (
        _statuses(url), sb.stderr_of(workers[1]))
    for r in runs:
        _one_success_per_step(url, r, steps)
    calls = Counter((x.run_id, x.step_id) for x in sb.executions())
    twice = {k for k, n in calls.items() if n > 1}
    assert all(n <= 2 for n in calls.values()), calls.most_common(3)
    assert {r for r, _ in twice} <= held, "a step ran twice in a run the kill did not touch"
    # Every step called twice was in flight at the kill: its first call came before it.
    first_calls = sb.executions()[:calls_at_kill]
    assert twice <= {(x.run_id, x.step_id) for x in first_calls}
    # The killed worker's runs went on elsewhere within the lease plus a second (the
    # heartbeat may be up to a third of a lease old at the kill: measured from it),
    # measured by what the taker wrote first: the run's start (it writes nothing else
    # before; ``resumed`` false for a run the killed worker had claimed but not begun).
    # Not a step's start: a run whose last success was committed but not yet its end (a
    # batch of its own) is taken over with every step done, and ends starting no step.
    for r in held:
        events = _events(url, r)
        after = [(kind, data, ts) for _, kind, data, ts in events if ts > killed_at]
        ((recoveries,),) = _sql(url, "SELECT recoveries FROM runs WHERE run_id = %s", r)
        said = (f"run {r} held by the killed worker never went on ({recoveries} takeovers;"
                " its events, s after the kill:"
                f" {[(k, round(t - killed_at, 3)) for _, k, _, t in events]})")
        assert after, said
        assert recoveries >= 1, said
        kind, _, ts = after[0]
        assert kind == "run_started", (r, after)
        assert ts - killed_at <= LEASE_S + 1.0 + 0.5, (r, ts - killed_at)
    _stop(sb, *workers[1:])


@pytest.mark.timeout(180)
def test_sigterm_hands_runs_back_to_another_worker_before_the_lease(
        sandbox: Sandbox, pg_url: str) -> None:
    sb, url = sandbox, pg_url
    wf = sb.workflow("slow", chain(4, (700, 700), name="slow"))
    runs = _submit(url, wf, 4)
    first = sb.spawn("worker", "--name", "first", "--lease", "60s", "--grace", "5s",
                     agents=True, db=url)
    assert wait_for(lambda: len(_sql(url, "SELECT 1 FROM runs WHERE owner = 'first'")) == 4,
                    30), sb.stderr_of(first)
    second = sb.spawn("worker", "--name", "second", "--lease", "60s", agents=True, db=url)
    assert wait_for(lambda: _registered(url, "second"), 30), sb.stderr_of(second)
    first.send_signal(signal.SIGTERM)
    stopped_at = time.time()
    assert first.wait(30) == 0, sb.stderr_of(first)
    assert "handed back" in sb.stderr_of(first)
    # Well before the 60 s lease: handed back, not taken over.
    assert wait_for(lambda: _statuses(url)["succeeded"] == 4, 40), sb.stderr_of(second)
    assert time.time() - stopped_at < 30
    for r in runs:
        _one_success_per_step(url, r, 4)
        assert _sql(url, "SELECT recoveries FROM runs WHERE run_id = %s", r) == [(0,)]
    calls = Counter((x.run_id, x.step_id) for x in sb.executions())
    assert max(calls.values()) == 1, "an attempt that finished in the grace ran again"
    _stop(sb, second)


@pytest.mark.timeout(180)
def test_a_frozen_worker_commits_nothing_for_the_runs_taken_from_it(
        sandbox: Sandbox, pg_url: str) -> None:
    sb, url = sandbox, pg_url
    wf = sb.workflow("zz", {"name": "zz", "mode": "sequential", "steps": [
        {"id": "s00", "agent": "record", "input": {"sleep_ms": [0, 0]}},
        {"id": "s01", "agent": "record", "input": {"sleep_ms": [3000, 3000]}},
        {"id": "s02", "agent": "record", "input": {"sleep_ms": [0, 0]}}]})
    runs = _submit(url, wf, 3)
    zombie = _worker(sb, url, "zombie")
    assert wait_for(lambda: sum(x.step_id == "s01" for x in sb.executions()) == 3, 30), \
        sb.stderr_of(zombie)
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        taker = _worker(sb, url, "taker")
        assert wait_for(lambda: sum(x.step_id == "s01" for x in sb.executions()) == 6, 30), \
            sb.stderr_of(taker)
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    assert wait_for(lambda: _statuses(url)["succeeded"] == 3, 60), sb.stderr_of(taker)
    time.sleep(1.0)  # the zombie's late commits, if any, would land now
    for r in runs:
        _one_success_per_step(url, r, 3)
        owner = _sql(url, "SELECT owner FROM runs WHERE run_id = %s", r)
        assert owner != [("zombie",)]
    calls = Counter(x.step_id for x in sb.executions())
    assert calls == Counter({"s00": 3, "s01": 6, "s02": 3}), "the zombie went on executing"
    _stop(sb, zombie, taker)


@pytest.mark.timeout(120)
def test_cancel_reaches_the_worker_executing_the_run_within_a_second(
        sandbox: Sandbox, pg_url: str) -> None:
    sb, url = sandbox, pg_url
    wf = sb.workflow("long", chain(3, (20000, 20000), name="long"))
    (run,) = _submit(url, wf, 1)
    w = _worker(sb, url, "runner")
    assert wait_for(lambda: len(sb.executions()) == 1, 30), sb.stderr_of(w)
    asked = time.time()
    out = sb.podium("cancel", run, db=url)
    assert out.returncode == 0, out.stderr
    assert wait_for(lambda: _sql(url, "SELECT status FROM runs WHERE run_id = %s", run)
                    == [("cancelled",)], 10), sb.stderr_of(w)
    ended = [ts for _, kind, _, ts in _events(url, run) if kind == "run_finished"]
    assert ended[0] - asked < 1.0
    assert "run_cancel_requested" in {kind for _, kind, _, _ in _events(url, run)}
    _stop(sb, w)


@pytest.mark.timeout(120)
def test_two_resumes_of_one_stale_run_on_postgresql_execute_it_once(
        sandbox: Sandbox, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_LEASE", "2s")
    sb, url = sandbox, pg_url
    wf = sb.workflow("race", chain(6, (100, 200), name="race"))
    proc = sb.spawn("run", str(wf), agents=True, db=url)
    assert wait_for(lambda: len(sb.executions()) >= 2, 30), sb.stderr_of(proc)
    sb.kill(proc)
    ((run,),) = _sql(url, "SELECT run_id FROM runs")
    before = len(sb.executions())
    time.sleep(LEASE_S + 0.2)
    a = sb.spawn("resume", run, "--json", agents=True, db=url)
    b = sb.spawn("resume", run, "--json", agents=True, db=url)
    codes = sorted([a.wait(60), b.wait(60)])
    assert codes == [0, 2], (sb.stderr_of(a), sb.stderr_of(b))
    _one_success_per_step(url, run, 6)
    after = Counter(x.step_id for x in sb.executions()[before:])
    assert all(n == 1 for n in after.values()), after


@pytest.mark.timeout(240)
def test_a_run_that_kills_every_worker_ends_worker_lost_after_its_recovery_max(
        sandbox: Sandbox, pg_url: str) -> None:
    """A poison run: each worker that claims it dies; the takeovers are counted (with a
    growing wait between them) and after ``recovery.max`` the next claimer ends it
    ``failed`` with ``worker_lost``, calling no agent."""
    sb, url, most = sandbox, pg_url, 2
    wf = sb.workflow("poison", {
        "name": "poison", "mode": "sequential", "recovery": {"max": most},
        "steps": [{"id": "first", "agent": "record", "input": {"sleep_ms": [0, 0]}},
                  {"id": "boom", "agent": "suicide"}]})
    (run,) = _submit(url, wf, 1)
    workers: list[subprocess.Popen[bytes]] = []
    # A supervisor (systemd, a container runtime) restarts each worker that dies.
    while _sql(url, "SELECT status FROM runs WHERE run_id = %s", run) != [("failed",)]:
        assert len(workers) <= most + 2, "taken over more often than its limit"
        w = _worker(sb, url, f"w{len(workers)}", "--lease", "1s")
        workers.append(w)
        wait_for(lambda w=w: w.poll() is not None or _sql(
            url, "SELECT status FROM runs WHERE run_id = %s", run) == [("failed",)], 60, 0.02)
    assert [w.returncode for w in workers[:most + 1]] == [-9] * (most + 1)
    ((recoveries, error),) = _sql(url, "SELECT recoveries, error FROM runs WHERE run_id = %s",
                                  run)
    assert recoveries == most + 1
    assert json.loads(error)["type"] == "worker_lost"
    assert "'boom'" in json.loads(error)["message"]
    assert Counter(x.step_id for x in sb.executions()) == Counter({"first": 1,
                                                                  "boom": most + 1})
    _stop(sb, *workers)


@pytest.mark.timeout(120)
def test_workers_without_notifications_find_runs_by_polling(
        sandbox: Sandbox, pg_url: str) -> None:
    """``?notify=off`` (behind PgBouncer in transaction mode): polling alone suffices."""
    sb, url = sandbox, pg_url
    quiet = url + ("&" if "?" in url else "?") + "notify=off"
    wf = sb.workflow("polled", chain(2, (0, 10), name="polled"))
    w = _worker(sb, quiet, "poller")
    assert wait_for(lambda: _registered(url, "poller"), 30), sb.stderr_of(w)
    runs = _submit(quiet, wf, 5)
    assert wait_for(lambda: _statuses(url)["succeeded"] == 5, 30), sb.stderr_of(w)
    for r in runs:
        _one_success_per_step(url, r, 2)
    _stop(sb, w)


@pytest.mark.timeout(240)
def test_three_workers_share_three_busy_agents_without_failing_or_opening_a_breaker(
        sandbox: Sandbox, pg_url: str, tmp_path: Path) -> None:
    """An agent's capacity is its own: three workers each allowed 8 calls per agent send
    it three times what it takes; its 429s are back-pressure (another agent, or a wait),
    never a failed attempt nor an open circuit."""
    import yaml

    from tests.integration.observe_tools import free_port
    from tests.integration.test_back_pressure import _metric_lines, _serve, _up

    sb, url = sandbox, pg_url
    ports = [free_port() for _ in range(3)]
    agents = [_serve(tmp_path, f"a{i}", p) for i, p in enumerate(ports)]
    try:
        assert wait_for(lambda: all(_up(p) for p in ports), 30), "the agents did not come up"
        agents_file = sb.root / "fleet.yaml"
        agents_file.write_text(yaml.safe_dump({
            "health": {"interval": "1s"},
            "agents": [{"id": f"a{i}", "capabilities": ["work"], "url": f"http://127.0.0.1:{p}",
                        "max_concurrency": 8} for i, p in enumerate(ports)]}))
        wf = sb.workflow("shared", {"name": "shared", "mode": "parallel",
                                    "steps": [{"id": f"s{i}", "agent": "work"}
                                              for i in range(6)]})
        metrics = [free_port() for _ in range(3)]
        workers = [sb.spawn("worker", "--name", f"w{i}", "--agents", str(agents_file),
                            "--concurrency", "8", "--metrics-port", str(m), db=url)
                   for i, m in enumerate(metrics)]
        assert wait_for(lambda: all(_registered(url, f"w{i}") for i in range(3)), 30)
        runs = _submit(url, wf, 60)  # all three workers take runs from the start
        circuits: set[str] = set()
        busy = 0.0
        while _statuses(url)["succeeded"] < 60:
            assert all(w.poll() is None for w in workers), sb.stderr_of(workers[0])
            for m in metrics:
                for line in _metric_lines(m):
                    if line.startswith("podium_agent_circuit{") and line.endswith(" 1.0"):
                        circuits.add(line.split('podium_agent_circuit="')[1].split('"')[0])
                    if 'outcome="busy"' in line and line.startswith("podium_agent_calls_total"):
                        busy = max(busy, float(line.rsplit(" ", 1)[1]))
            time.sleep(0.05)
        _stop(sb, *workers)
    finally:
        for p in agents:
            p.kill()
            p.wait()
    for r in runs:
        attempts = _sql(url, "SELECT attempts, status FROM steps WHERE run_id = %s", r)
        assert attempts == [(1, "succeeded")] * 6, (r, attempts)
    assert circuits == {"closed"}, f"a breaker left the closed state: {circuits}"
    assert busy > 0, "the agents never pushed back: the test did not test anything"


@pytest.mark.timeout(120)
def test_a_worker_frozen_past_its_lease_with_nobody_to_take_over_finishes_its_runs(
        sandbox: Sandbox, pg_url: str) -> None:
    """It stops its runs on waking (it cannot know whether others took them), hands
    back those still its own, and claims them again: nothing stays stuck."""
    sb, url = sandbox, pg_url
    wf = sb.workflow("alone", chain(3, (400, 400), name="alone"))
    runs = _submit(url, wf, 3)
    w = _worker(sb, url, "alone")
    assert wait_for(lambda: len(sb.executions()) >= 3, 30), sb.stderr_of(w)
    os.kill(w.pid, signal.SIGSTOP)
    time.sleep(LEASE_S + 1.0)
    os.kill(w.pid, signal.SIGCONT)
    assert wait_for(lambda: _statuses(url)["succeeded"] == 3, 60), sb.stderr_of(w)
    assert "handed back" in sb.stderr_of(w)
    for r in runs:
        _one_success_per_step(url, r, 3)
    _stop(sb, w)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("lease", ["2s", "20s"])
def test_a_postgresql_crash_under_two_workers_loses_nothing_and_reruns_no_success(
        sandbox: Sandbox, tmp_path: Path, lease: str) -> None:
    """The server dies (immediate stop: clients cut mid-commit) and comes back 2 s later.
    With a 2 s lease the workers fence themselves (two thirds of it pass without a
    renewal), reconnect, hand back and claim again; with 20 s they wait it out, reading
    back the commits that were cut off. Either way every run ends, every step has one
    committed success, and no step whose success was committed before the crash is
    called again."""
    from tests.pg import PgCluster

    sb = sandbox
    with PgCluster.start() as cluster:
        url = cluster.url(cluster.create_database("crash"))
        wf = sb.workflow("crash", chain(4, (100, 250), name="crash"))
        runs = _submit(url, wf, 20)
        workers = [_worker(sb, url, f"w{i}", "--concurrency", "5", "--lease", lease)
                   for i in range(2)]
        assert wait_for(lambda: _statuses(url)["succeeded"] >= 4, 60), sb.stderr_of(workers[0])
        committed = set(_sql(url, "SELECT run_id, step_id FROM steps"
                                  " WHERE status = 'succeeded'"))
        cluster.crash_and_restart(down_s=2.0)
        assert wait_for(lambda: _statuses(url)["succeeded"] == 20, 150), (
            sb.stderr_of(workers[0])[-3000:], sb.stderr_of(workers[1])[-3000:])
        for r in runs:
            _one_success_per_step(url, r, 4)
        calls = Counter((x.run_id, x.step_id) for x in sb.executions())
        assert all(calls[k] == 1 for k in committed), "a committed success ran again"
        assert max(calls.values()) <= 3
        assert all(w.poll() is None for w in workers), "a worker died with the database"
        for w in workers:  # each met the outage (else this tested nothing)
            said = sb.stderr_of(w)
            assert "Connection refused" in said or "closed the connection" in said, said
        if lease == "2s":
            assert any("stopping all" in sb.stderr_of(w) for w in workers)
        else:
            assert not any("stopping all" in sb.stderr_of(w) for w in workers)
        _stop(sb, *workers)


@pytest.mark.timeout(120)
def test_podium_serve_on_postgresql_takes_over_a_dead_run_and_leaves_submitted_ones(
        sandbox: Sandbox, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``podium serve`` finds a dead owner's runs with the workers' claim; runs queued by
    ``podium submit`` are for ``podium worker`` and stay pending."""
    from tests.integration.observe_tools import free_port

    monkeypatch.setenv("PODIUM_LEASE", "2s")
    sb, url = sandbox, pg_url
    wf = sb.workflow("left", chain(5, (100, 200), name="left"))
    proc = sb.spawn("run", str(wf), agents=True, db=url)
    assert wait_for(lambda: len(sb.executions()) >= 2, 30), sb.stderr_of(proc)
    sb.kill(proc)
    ((left,),) = _sql(url, "SELECT run_id FROM runs")
    (queued,) = _submit(url, sb.workflow("queued", chain(1, (0, 0), name="queued")), 1)
    server = sb.spawn("serve", "--port", str(free_port()), agents=True, db=url)
    assert wait_for(lambda: _sql(url, "SELECT status FROM runs WHERE run_id = %s", left)
                    == [("succeeded",)], 60), sb.stderr_of(server)
    _one_success_per_step(url, left, 5)
    assert _sql(url, "SELECT recoveries FROM runs WHERE run_id = %s", left) == [(1,)]
    assert _sql(url, "SELECT status, owner FROM runs WHERE run_id = %s", queued) == [
        ("pending", None)]
    server.send_signal(signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
    assert server.wait(30) in (0, -signal.SIGTERM), sb.stderr_of(server)
    assert "stopped; 0 runs handed back" in sb.stderr_of(server)


@pytest.mark.timeout(120)
def test_max_runs_holds_across_workers_and_slots_are_given_back(
        sandbox: Sandbox, pg_url: str) -> None:
    """``max_runs: 2`` with two workers of four slots each: never more than two runs of
    the workflow execute at once (slots under a unique index, taken in the claim), the
    other workflow's runs are not held up behind them, and every slot is given back."""
    sb, url = sandbox, pg_url
    limited = sb.workflow("limited", chain(2, (300, 300), name="limited") | {"max_runs": 2})
    free = sb.workflow("free", chain(1, (0, 0), name="free"))
    runs = _submit(url, limited, 6)
    others = _submit(url, free, 3)
    workers = [_worker(sb, url, f"w{i}", "--concurrency", "4") for i in range(2)]
    assert wait_for(lambda: _statuses(url)["succeeded"] == 9, 60), sb.stderr_of(workers[0])
    spans = []
    for r in runs:
        _one_success_per_step(url, r, 2)
        ts = [t for _, kind, _, t in _events(url, r) if kind in ("run_started", "run_finished")]
        spans.append((min(ts), max(ts)))
    at_once = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert at_once == 2, spans
    first_limited_end = min(e for _, e in spans)
    for r in others:  # queued after the limited ones, yet not stuck behind them
        (started,) = [t for _, kind, _, t in _events(url, r) if kind == "run_started"]
        assert started < first_limited_end
    assert _sql(url, "SELECT count(*) FROM run_slots") == [(0,)]
    _stop(sb, *workers)
