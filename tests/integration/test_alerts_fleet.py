"""Alert rules for a fleet on PostgreSQL: evaluated by one process at a time, on everyone's events.

- the feed every leader reads gives each committed event once, in commit order, and
  never moves past a transaction still open (a later one that committed first waits
  for it): a reader that moves on misses nothing;
- only the holder of the role reads it; a holder whose session is gone (killed by an
  administrator, ended by the server's idle limit after a freeze) cannot, and another
  process takes the role;
- real ``podium worker`` processes and a local webhook: a streak of failures spread
  over two workers fires one alert, once; the leader is killed with ``kill -9``, the
  other takes over from the saved position, resolves the alert it inherited when a
  call succeeds, and fires the next streak once. Notifications are counted: none lost,
  none twice (once the first is recorded as sent: delivery is at least once, and a
  leader killed between sending and recording would have it sent again).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from podium.agents.registry import AgentRegistry
from podium.alert_leader import AlertLeader
from podium.definition.alerts import AlertsFile
from podium.definition.loader import load_workflow
from podium.errors import StoreError
from podium.events import StepSucceeded
from podium.observe.alerts import AlertManager
from podium.runtime import Runtime, RuntimeConfig, StoreLedger
from podium.store.base import FeedPosition
from podium.store.postgres import PostgresStore
from tests.integration.podium_proc import Sandbox, wait_for
from tests.integration.test_receivers import HookServer

pytestmark = pytest.mark.postgres


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


async def _store(url: str) -> PostgresStore:
    store = PostgresStore.from_url(url)
    await store.open()
    return store


def _event(run_id: str, seq: int, step: str) -> tuple[str, int, str, float, str]:
    data = json.dumps({"step_id": step, "attempt": 1, "agent_id": "a", "duration_s": 0.0})
    return run_id, seq, StepSucceeded.type, 1.0, data


_INSERT = "INSERT INTO events (run_id, seq, type, ts, data) VALUES (%s, %s, %s, %s, %s)"


async def _drain(store: PostgresStore, after: FeedPosition) -> tuple[list[str], FeedPosition]:
    seen: list[str] = []
    while True:
        events, after = await store.feed("alerts", after, holder="t", limit=2)
        seen += [f"{e.run_id}/{getattr(e, 'step_id', '')}" for e in events]
        if not events:
            return seen, after


async def test_the_feed_waits_for_an_open_transaction_and_then_gives_everything_once(
        pg_url: str) -> None:
    store = await _store(pg_url)
    try:
        assert await store.lead("alerts")
        start = await store.feed_head()
        assert start == FeedPosition()  # nothing committed yet
        with psycopg.connect(pg_url, autocommit=True) as w1, \
                psycopg.connect(pg_url, autocommit=True) as w2:
            w1.execute(_INSERT, _event("r1", 1, "first"))  # committed
            with w1.transaction():  # begun first, so its transaction id is the lower
                w1.execute(_INSERT, _event("r2", 1, "slow"))
                w2.execute(_INSERT, _event("r3", 1, "fast"))  # committed first
                seen, position = await _drain(store, start)
                # r3 committed, but behind a transaction still open: not yet.
                assert seen == ["r1/first"]
            seen2, position = await _drain(store, position)
            assert seen2 == ["r2/slow", "r3/fast"]  # commit order would lose r2
            w2.execute(_INSERT, _event("r3", 2, "later"))
            seen3, position = await _drain(store, position)
            assert seen3 == ["r3/later"]
        assert await store.feed_head() == position
        # Each read saved the position it read after, with who read it.
        saved = await store.feed_position("alerts")
        assert saved is not None
        assert saved[0] == position
        assert saved[1] < 60
        assert _sql(pg_url, "SELECT holder FROM feed_positions") == [("t",)]
        # Many rows of one transaction come out whole across pages, in order.
        with psycopg.connect(pg_url, autocommit=True) as w1, w1.transaction():
            for seq in range(1, 8):
                w1.execute(_INSERT, _event("r4", seq, f"s{seq}"))
        seen4, _ = await _drain(store, position)
        assert seen4 == [f"r4/s{seq}" for seq in range(1, 8)]
    finally:
        await store.close()


async def test_only_the_holder_reads_and_a_lost_session_hands_the_role_over(
        pg_url: str) -> None:
    a, b = await _store(pg_url), await _store(pg_url)
    try:
        with pytest.raises(StoreError, match="not held"):
            await a.feed("alerts", FeedPosition(), holder="a")
        assert await a.lead("alerts")
        assert not await b.lead("alerts")
        with pytest.raises(StoreError, match="not held"):
            await b.feed("alerts", FeedPosition(), holder="b")
        await a.feed("alerts", FeedPosition(), holder="a")
        # The server ends a leader's session that stays idle (a frozen process): its
        # lock goes with it. The limit is set on that session only.
        rows = _sql(pg_url, "SELECT pid, query FROM pg_stat_activity"
                            " WHERE query LIKE '%%FROM events%%' AND pid <> pg_backend_pid()")
        assert len(rows) == 1, rows
        pid = rows[0][0]
        assert _sql(pg_url, "SELECT setting FROM pg_settings WHERE name ="
                            " 'idle_session_timeout'") == [("0",)]
        _sql(pg_url, "SELECT pg_terminate_backend(%s)", pid)
        assert wait_for(lambda: _sql(pg_url, "SELECT count(*) FROM pg_stat_activity"
                                             " WHERE pid = %s", pid) == [(0,)], 10)
        assert await b.lead("alerts")
        with pytest.raises(StoreError):
            await a.feed("alerts", FeedPosition(), holder="a")
        assert not await a.lead("alerts")  # reconnected, but b holds it now
    finally:
        await a.close()
        await b.close()


async def test_the_lead_session_has_an_idle_limit(pg_url: str) -> None:
    store = await _store(pg_url)
    try:
        assert await store.lead("alerts")
        # Read from that very session: the feed statement runs on it.
        events, _ = await store.feed("alerts", FeedPosition(), holder="x")
        assert events == []
        limit = _sql(pg_url, "SELECT a.pid FROM pg_stat_activity a"
                             " WHERE a.query LIKE '%%FROM events%%'"
                             " AND a.pid <> pg_backend_pid()")
        assert len(limit) == 1
        # pg_stat_activity cannot show a session's settings: ask it through the store's
        # own connection instead, as its next statement.
        conn = store._lead_conn  # the test looks at the session itself
        assert conn is not None
        cur = await conn.execute("SHOW idle_session_timeout")
        assert await cur.fetchone() == ("20s",)
    finally:
        await store.close()


async def test_a_new_leader_counts_an_sla_from_the_runs_start_and_resolves_it_at_its_end(
        pg_url: str, tmp_path: Path) -> None:
    """A run already going when a process takes the lead: its workflow's rules are read
    from its stored definition, its SLA counts from when it started (long before)."""
    wf = tmp_path / "slow.yaml"
    wf.write_text(yaml.safe_dump({"name": "slow", "sla": "30s",
                                  "steps": [{"id": "a", "agent": "record"}]}))
    async with Runtime(RuntimeConfig(db=pg_url, registry=AgentRegistry(), alerts=False)) as rt:
        run_id = (await rt.engine.submit(load_workflow(wf), {})).run_id
    _sql(pg_url, "UPDATE runs SET status = 'running', started_at ="
                 " extract(epoch FROM now()) - 100 WHERE run_id = %s", run_id)
    store = await _store(pg_url)
    manager = AlertManager(AlertsFile(), StoreLedger(store))
    leader = AlertLeader(store, store, manager, holder="me")
    try:
        await leader.round()
        assert leader.leading
        firing = await store.list_alerts(status="firing")
        assert [a.key for a in firing] == [f"slow-sla:{run_id}"]
        assert "running for 1m4" in firing[0].summary, firing[0].summary
        finished = json.dumps({"workflow": "slow", "status": "succeeded", "duration_s": 100.0})
        _sql(pg_url, _INSERT, run_id, 99, "run_finished", 2.0, finished)
        await leader.round()
        assert await store.list_alerts(status="firing") == []
        assert (await store.get_alert(f"slow-sla:{run_id}")).status == "resolved"  # type: ignore[union-attr]
    finally:
        await leader.aclose()
        await manager.aclose()
        await store.close()


# --- a fleet of real workers ----------------------------------------------------------------

def _alerts_file(sb: Sandbox, hook: HookServer) -> Path:
    path = sb.root / "fleet-alerts.yaml"
    path.write_text(yaml.safe_dump({
        "rules": [{"name": "work-failing", "kind": "consecutive_failures", "count": 3,
                   "scope": "step"}],
        "receivers": [{"name": "hook", "type": "webhook", "url": hook.url + "/alerts"}],
        "escalation": {"page": {"levels": [{"after": 0, "severity": "critical",
                                            "receivers": ["hook"]}]}},
        "default_escalation": "page",
    }))
    return path


def _workflow(sb: Sandbox, agent: str, version: int) -> Path:
    """Two versions of one workflow: the step fails with one agent, succeeds with the other
    (the rule's subject is the step, so both count towards one streak)."""
    return sb.workflow(f"alerting-{agent}", {
        "name": "alerting", "version": version,
        "steps": [{"id": "work", "agent": agent, "input": {"tag": "x"},
                   "retry": {"max_attempts": 1}}]})


def _submit(url: str, wf: Path, n: int) -> list[str]:
    workflow = load_workflow(wf)

    async def go() -> list[str]:
        async with Runtime(RuntimeConfig(db=url, registry=AgentRegistry(), alerts=False)) as rt:
            return [(await rt.engine.submit(workflow, {})).run_id for _ in range(n)]

    return asyncio.run(go())


def _finished(url: str, run_ids: list[str]) -> bool:
    rows = _sql(url, "SELECT status FROM runs WHERE run_id = ANY(%s)", run_ids)
    return len(rows) == len(run_ids) and all(s in ("succeeded", "failed") for (s,) in rows)


def _notifications(hook: HookServer) -> Counter[str]:
    return Counter(body["status"] for body in hook.bodies())


def _leaders(sb: Sandbox, url: str) -> list[str]:
    out = sb.podium("workers", "--json", db=url)
    assert out.returncode == 0, out.stderr
    return [w["id"] for w in json.loads(out.stdout)["workers"] if "alerts" in w["leads"]]


@pytest.mark.timeout(240)
def test_one_worker_evaluates_the_fleets_rules_and_another_takes_over_when_it_dies(
        sandbox: Sandbox, pg_url: str) -> None:
    sb, url = sandbox, pg_url
    with HookServer() as hook:
        alerts = _alerts_file(sb, hook)
        failing, passing = _workflow(sb, "always-fail", 1), _workflow(sb, "record", 2)
        _submit(url, passing, 1)  # makes the schema before the workers race to
        workers = {name: sb.spawn("worker", "--name", name, "--lease", "2s", "--alerts",
                                  str(alerts), "--concurrency", "2", agents=True, db=url)
                   for name in ("w1", "w2")}
        assert wait_for(lambda: len(_leaders(sb, url)) == 1, 30, 0.5), \
            sb.stderr_of(workers["w1"])
        leader = _leaders(sb, url)[0]
        other = next(n for n in workers if n != leader)

        # Three failures, on whichever worker: one streak of the fleet, one alert, once.
        runs = _submit(url, failing, 3)
        assert wait_for(lambda: _finished(url, runs), 60)
        owners = {o for (o,) in _sql(url, "SELECT owner FROM runs WHERE run_id = ANY(%s)",
                                     runs)}
        assert owners <= {"w1", "w2"}
        assert wait_for(lambda: _notifications(hook)["firing"] == 1, 20), hook.bodies()
        # Delivery is at least once: a notification sent but not yet recorded as sent
        # when its leader dies is sent again by the next. Settled here first, so the
        # count below is exact.
        assert wait_for(lambda: _sql(url, "SELECT key, status, level FROM alerts") == [
            ("work-failing:step=alerting/work", "firing", 0)], 10)

        # The leader dies; the other worker leads, and takes up the firing alert.
        sb.kill(workers[leader])
        assert wait_for(lambda: _leaders(sb, url) == [other], 30, 0.5), \
            sb.stderr_of(workers[other])
        assert "evaluating the fleet's alert rules" in sb.stderr_of(workers[other])
        ok = _submit(url, passing, 1)
        assert wait_for(lambda: _finished(url, ok), 60)
        assert wait_for(lambda: _notifications(hook)["resolved"] == 1, 20), hook.bodies()

        # A new streak after the handover fires once more.
        runs = _submit(url, failing, 3)
        assert wait_for(lambda: _finished(url, runs), 60)
        assert wait_for(lambda: _notifications(hook)["firing"] == 2, 20), hook.bodies()
        # Settled: nothing more arrives (no duplicate from a replayed position).
        wait_for(lambda: False, 3)
        assert _notifications(hook) == Counter({"firing": 2, "resolved": 1}), hook.bodies()
        history = [w for (w,) in _sql(url, "SELECT what FROM alert_history ORDER BY id")]
        assert (history.count("fired"), history.count("resolved")) == (2, 1), history
        workers[other].terminate()
        assert workers[other].wait(30) == 0, sb.stderr_of(workers[other])



@pytest.mark.timeout(240)
def test_a_frozen_leader_loses_the_lead_and_on_waking_evaluates_nothing(
        sandbox: Sandbox, pg_url: str) -> None:
    """SIGSTOP keeps the leader's socket open: the server's idle limit on its session
    (20 s) frees the role; woken, the old leader finds its session gone and steps down."""
    sb, url = sandbox, pg_url
    with HookServer() as hook:
        alerts = _alerts_file(sb, hook)
        failing, passing = _workflow(sb, "always-fail", 1), _workflow(sb, "record", 2)
        _submit(url, passing, 1)
        workers = {name: sb.spawn("worker", "--name", name, "--lease", "2s", "--alerts",
                                  str(alerts), "--concurrency", "2", agents=True, db=url)
                   for name in ("w1", "w2")}
        assert wait_for(lambda: len(_leaders(sb, url)) == 1, 30, 0.5), \
            sb.stderr_of(workers["w1"])
        leader = _leaders(sb, url)[0]
        other = next(n for n in workers if n != leader)
        os.kill(workers[leader].pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            assert wait_for(lambda: "evaluating the fleet's alert rules"
                            in sb.stderr_of(workers[other]), 60, 0.5)
            took = time.monotonic() - frozen_at
            assert 15 <= took <= 20 + 10 + 5, took  # the idle limit, then a retry
            runs = _submit(url, failing, 3)  # all on the live worker
            assert wait_for(lambda: _finished(url, runs), 60)
            assert wait_for(lambda: _notifications(hook)["firing"] == 1, 20), hook.bodies()
        finally:
            os.kill(workers[leader].pid, signal.SIGCONT)
        assert wait_for(lambda: "lost the lead of alert evaluation"
                        in sb.stderr_of(workers[leader]), 20, 0.5), \
            sb.stderr_of(workers[leader])
        wait_for(lambda: False, 3)
        assert _notifications(hook) == Counter({"firing": 1}), hook.bodies()
        assert _leaders(sb, url) == [other]
        for w in workers.values():
            w.terminate()
        for w in workers.values():
            assert w.wait(30) == 0, sb.stderr_of(w)
