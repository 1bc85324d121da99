"""``podium serve``'s API on PostgreSQL: it submits, workers execute.

- a run submitted through the API is executed by a `podium worker`, and cancelled
  through the API while that worker executes it;
- with the database down, ``/readyz`` and a read answer 503 at once (never a hang),
  and both recover when it is back.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.podium_proc import Sandbox, wait_for
from tests.integration.test_api import HANG, RECORD, start
from tests.pg import PgCluster

pytestmark = pytest.mark.postgres


def test_the_api_submits_a_worker_executes_and_the_api_cancels(sandbox: Sandbox,
                                                                pg_url: str) -> None:
    sb = sandbox
    api = start(sb, db=pg_url)
    worker = sb.spawn("worker", "--name", "w1", agents=True, db=pg_url)
    done = api.post("/runs", {"definition": RECORD, "input": {"n": 4}})
    assert done.status_code == 202, done.text
    assert done.json()["status"] == "pending"  # stored for the workers
    assert api.until_status(done.json()["run_id"], "succeeded")["output"] == {"n": 4}
    run_id = api.post("/runs", {"definition": HANG}).json()["run_id"]
    assert wait_for(lambda: any(x.step_id == "h" for x in sb.executions()), 30), \
        sb.stderr_of(worker)
    assert api.post(f"/runs/{run_id}/cancel").status_code == 202
    doc = api.until_status(run_id, "cancelled", within=20)
    assert doc["steps"]["h"]["status"] == "cancelled"
    assert worker.poll() is None  # the worker goes on


def test_readyz_says_503_while_the_database_is_down(sandbox: Sandbox) -> None:
    cluster = PgCluster.start()
    try:
        url = cluster.url(cluster.create_database("api_down"))
        api = start(sandbox, db=url)
        assert api.get("/readyz").status_code == 200
        cluster.down()
        t0 = time.monotonic()
        ready = httpx.get(api.url + "/readyz", timeout=30)
        assert ready.status_code == 503
        assert time.monotonic() - t0 < 15  # answered, not hung
        listing = api.get("/runs")
        assert listing.status_code == 503
        assert listing.json()["error"]["type"] == "store_error"
        cluster.up()
        assert wait_for(lambda: api.get("/readyz").status_code == 200, 30, 0.5)
        assert api.get("/runs").status_code == 200
    finally:
        cluster.stop()



def test_a_joined_agent_serves_the_workers_and_every_event_streams_from_the_feed(
        sandbox: Sandbox, pg_url: str) -> None:
    """On PostgreSQL the server only submits: the worker (with no agents file naming
    it) calls the agent that joined through the API, and ``GET /events`` streams the
    worker's events from the database's feed."""
    import threading

    from tests.integration.test_agents_join import ECHO, agent, fleet
    from tests.integration.test_api_feed import _finished, feed

    sb = sandbox
    api = start(sb, db=pg_url)
    worker = sb.spawn("worker", "--name", "w1", agents=True, db=pg_url)
    got: list[tuple[str, str, dict[str, object]]] = []
    opened = threading.Event()
    reader = threading.Thread(target=lambda: got.extend(feed(api, opened=opened,
                                                             stop=_finished(1))))
    reader.start()
    assert opened.wait(10)
    _proc, log = agent(sb, api, "far-pg", None)  # a server open to this machine
    assert wait_for(lambda: "far-pg" in fleet(api), 30, 0.1), log.read_text()
    run_id = api.post("/runs", {"definition": ECHO}).json()["run_id"]
    done = api.until_status(run_id, "succeeded", "failed", within=60)
    assert (done["status"], done["output"]) == ("succeeded", {"by": "far-pg"}), (
        done, sb.stderr_of(worker))
    reader.join(30)
    assert not reader.is_alive()
    mine = [(eid, kind) for eid, kind, data in got if data["run_id"] == run_id]
    assert [k for _, k in mine] == [e["type"] for e in done["timeline"]]
    assert [int(eid.split("-")[1]) for eid, _ in mine] == list(range(1, len(mine) + 1))


def test_one_idempotency_key_sent_to_two_servers_at_once_starts_one_run(
        sandbox: Sandbox, pg_url: str) -> None:
    """Two ``podium serve`` on one database, 16 submits of one key at once across them:
    one run is stored, each answer names it, and none is an error (a race lost on the
    database is answered with the run that won it, as a replay)."""
    from concurrent.futures import ThreadPoolExecutor

    sb = sandbox
    first, second = start(sb, db=pg_url), start(sb, db=pg_url)

    def submit(i: int) -> httpx.Response:
        api = (first, second)[i % 2]
        key = "race-1" if i % 4 < 2 else f"other-{i}"
        return api.post("/runs", {"definition": RECORD, "input": {"n": 1}},
                        headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(32) as pool:
        both = list(pool.map(submit, range(32)))
    answers = [a for i, a in enumerate(both) if i % 4 < 2]
    others = [a for i, a in enumerate(both) if i % 4 >= 2]
    assert [a.status_code for a in others] == [202] * 16, [a.text for a in others]
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 15 + [202], [a.text for a in answers if a.status_code >= 300]
    assert len({a.json()["run_id"] for a in answers}) == 1
    assert [a.json()["created"] for a in answers].count(True) == 1
    worker = sb.spawn("worker", "--name", "w1", agents=True, db=pg_url)
    assert first.until_status(answers[0].json()["run_id"], "succeeded", within=30), \
        sb.stderr_of(worker)
