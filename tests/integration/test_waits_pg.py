"""Waiting runs on PostgreSQL: a worker suspends a run at its approval (holding no lease),
`podium approve` makes it pending again, and a worker claims and finishes it; a durable
timer is woken by the one process that fires schedules."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tests.integration.podium_proc import Sandbox, wait_for

pytestmark = pytest.mark.postgres


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def _status(url: str, run_id: str) -> str | None:
    rows = _sql(url, "SELECT status FROM runs WHERE run_id = %s", run_id)
    return rows[0][0] if rows else None


@pytest.mark.timeout(120)
def test_a_worker_suspends_at_an_approval_and_another_look_finishes_it(
        sandbox: Sandbox, pg_url: str) -> None:
    sb, url = sandbox, pg_url
    wf = sb.workflow("order", {"name": "order", "mode": "sequential", "steps": [
        {"id": "prep", "agent": "record"},
        {"id": "ok", "approval": {}},
        {"id": "nap", "sleep": "2s"},
        {"id": "ship", "agent": "record"}]})
    out = sb.podium("submit", str(wf), "--json", db=url)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    worker = sb.spawn("worker", "--name", "w1", "--lease", "2s", agents=True, db=url)
    assert wait_for(lambda: _status(url, run_id) == "waiting", 30, 0.1), sb.stderr_of(worker)
    assert _sql(url, "SELECT owner FROM runs WHERE run_id = %s", run_id) == [(None,)]
    approved = sb.podium("approve", run_id, "ok", "--json", db=url)
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["woken"] is True
    assert wait_for(lambda: _status(url, run_id) == "succeeded", 30, 0.1), \
        sb.stderr_of(worker)
    worker.terminate()
    assert worker.wait(30) == 0, sb.stderr_of(worker)
    assert Counter(x.step_id for x in sb.executions()) == Counter({"prep": 1, "ship": 1})
