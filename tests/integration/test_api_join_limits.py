"""``POST /agents`` is bounded: against real ``podium serve`` processes (SQLite file, and
PostgreSQL), real tokens, httpx as the client.

Every process that executes runs on the database registers each live joined agent,
health-checks it and keeps an HTTP client for it, so one ``agent`` token must not add
agents without end:

- a token joins up to ``--max-joined-agents``; one more is 409 ``too_many_agents``,
  naming the limit, the flag and the fix; renewing an id it holds (a heartbeat-style
  re-register, a changed spec) still works at the limit; a leave makes room;
- ``--max-joined-agents-total`` counts every token, admin ones included; expired
  registrations count for nothing;
- joins at once by one token through two servers on one database (two processes on a
  SQLite file; two servers on PostgreSQL) land exactly the limit, never more.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.integration.podium_proc import Sandbox, wait_for
from tests.integration.test_agents_join import fleet
from tests.integration.test_api import Api, start


def _body(agent_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": agent_id, "url": "http://127.0.0.1:9/", "capabilities": ["echo"], **extra}


def _token(sb: Sandbox, scope: str, db: str | None = None) -> str:
    out = sb.podium("token", "create", "--scope", scope, "--name", f"t-{scope}", db=db)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_token_joins_up_to_its_limit_and_the_database_up_to_its_total(
        sandbox: Sandbox) -> None:
    sb = sandbox
    a, b, admin = (_token(sb, s) for s in ("agent", "agent", "admin"))
    api = start(sb, "--max-joined-agents", "3", "--max-joined-agents-total", "5")
    for n in range(3):
        joined = api.post("/agents", _body(f"a{n}"), token=a)
        assert joined.status_code == 201, joined.text
    over = api.post("/agents", _body("a3"), token=a)
    assert over.status_code == 409, over.text
    error = over.json()["error"]
    assert (error["type"], error["exit_code"]) == ("too_many_agents", 2), error
    for said in ("'a3'", "limit of 3", "--max-joined-agents)", "DELETE /agents/{id}"):
        assert said in error["message"], error["message"]
    assert "a3" not in fleet(Api(api.url, api.proc, admin))  # nothing written

    # At the limit, the token's own ids are renewed: the same body again, a new spec.
    again = api.post("/agents", _body("a1"), token=a)
    assert (again.status_code, again.json()["created"]) == (200, False), again.text
    changed = api.post("/agents", _body("a2", region="us"), token=a)
    assert changed.status_code == 200, changed.text
    assert api.post("/agents/a2/heartbeat", token=a).status_code == 200

    # The total counts every token: b has room of its own until the database is full.
    for n in range(2):
        assert api.post("/agents", _body(f"b{n}", ttl_s=2), token=b).status_code == 201
    for who, agent_id in ((b, "b2"), (admin, "admin0")):
        full = api.post("/agents", _body(agent_id), token=who)
        assert full.status_code == 409, full.text
        assert full.json()["error"]["type"] == "too_many_agents"
        assert "--max-joined-agents-total" in full.json()["error"]["message"]

    # b's registrations expire (ttl_s 2, no heartbeat): they count no more.
    time.sleep(2.5)
    assert api.post("/agents", _body("admin0"), token=admin).status_code == 201
    # A leave makes room for the token.
    assert httpx.delete(api.url + "/agents/a0", headers=api.headers(a),
                        timeout=10).status_code == 204
    assert api.post("/agents", _body("a3"), token=a).status_code == 201
    ids = set(fleet(Api(api.url, api.proc, admin)))
    assert {"a1", "a2", "a3", "admin0"} <= ids, ids
    assert not ids & {"a0", "b0", "b1", "b2"}, ids


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_joins_at_once_through_two_servers_land_exactly_the_limit(
        sandbox: Sandbox, kind: str, request: pytest.FixtureRequest) -> None:
    sb = sandbox
    db = str(request.getfixturevalue("pg_url")) if kind == "postgres" else None
    token, read = _token(sb, "agent", db), _token(sb, "read", db)
    limit, tries = 8, 40
    servers = [start(sb, "--max-joined-agents", str(limit), db=db) for _ in range(2)]

    async def join_all() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=60, headers=headers) as client:
            return await asyncio.gather(*(
                client.post(servers[n % 2].url + "/agents", json=_body(f"x{n}"))
                for n in range(tries)))

    answers = asyncio.run(join_all())
    codes = Counter(r.status_code for r in answers)
    assert codes == {201: limit, 409: tries - limit}, [r.text for r in answers]
    assert {r.json()["error"]["type"] for r in answers if r.status_code == 409} == {
        "too_many_agents"}
    landed = {r.json()["id"] for r in answers if r.status_code == 201}
    for api in servers:  # each server's fleet: exactly those (its loop reads them back)
        api.token = read
        assert wait_for(lambda api=api: {i for i in fleet(api) if i.startswith("x")}
                        == landed, 30, 0.2), (landed, fleet(api))
