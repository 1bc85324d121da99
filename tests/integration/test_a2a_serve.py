"""``podium a2a serve``: a workflow as an A2A agent, with real processes on both sides.

Each test starts the real command (a subprocess on 127.0.0.1 and a free port, its
own SQLite file) and talks to it with a2a-sdk's own client, or with Podium itself
as the client (an ``a2a:`` agent in an agents file):

- a message starts a run whose id is the task's; the task completes with the run's
  output as its artifact; streaming shows it working, then completed; the card says
  the workflow's name, description, version and input schema;
- a long run is answered ``working`` (``--answer-within``), a message to it is kept in
  its history, and the task completes when the run does;
- an input the schema refuses makes the task ``rejected`` and starts no run;
- an approval makes the task ``input-required``; a wrong answer leaves it so, a
  rejection fails it, an approval completes it; no step runs twice;
- cancelling a working task (and one parked in input-required) cancels its run;
- ``kill -9`` of the server while one task waits for an approval and another works:
  a new server finds both tasks from their runs, the approval goes on, the working
  run is taken over; nothing that succeeded ran again;
- a bearer token guards every route but the card; Podium's client sends it;
- bad setup (an unknown agent, a bad URL, a port in use) exits 2 before listening;
- examples/a2a: a workflow that calls the served example workflow as an agent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

pytest.importorskip("a2a.server", reason="the a2a extra is not installed")
import httpx
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.helpers import get_data_parts, get_message_text, new_data_part, new_text_part
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    Task,
    TaskState,
)

from tests.integration.observe_tools import free_port
from tests.integration.podium_proc import Sandbox, wait_for

S = TaskState
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ECHO = {"name": "echo-flow", "version": 3, "description": "Records a text twice",
        "mode": "sequential",
        "input_schema": {"type": "object", "required": ["text"],
                         "properties": {"text": {"type": "string"}}},
        "steps": [{"id": "first", "agent": "record", "input": {"said": "${{ input.text }}"}},
                  {"id": "second", "agent": "record",
                   "input": {"before": "${{ steps.first.output.token }}"}}],
        "output": {"said": "${{ input.text }}", "second": "${{ steps.second.output.step }}"}}
APPROVAL = {"name": "order", "mode": "sequential", "steps": [
    {"id": "prep", "agent": "record"},
    {"id": "ok", "approval": {"prompt": "Ship it?"}},
    {"id": "ship", "agent": "record", "input": {"approval": "${{ steps.ok.output }}"}}],
    "output": "${{ steps.ship.output.input.approval }}"}
SLOW = {"name": "slow-flow", "steps": [
    {"id": "a", "agent": "record"},
    {"id": "b", "agent": "slow", "depends_on": ["a"], "input": {"seconds": 60}}]}


def serve(sb: Sandbox, wf: Path, *extra: str, env: dict[str, str] | None = None,
          ) -> tuple[Popen[bytes], str]:
    port = free_port()
    proc = sb.spawn("a2a", "serve", str(wf), "--port", str(port), *extra, agents=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, sb.stderr_of(proc)
        return _card_up(url)

    assert wait_for(up, 30, 0.05), sb.stderr_of(proc)
    return proc, url


@asynccontextmanager
async def a2a_client(url: str, token: str | None = None, *, streaming: bool = False
                     ) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        client = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http)).create(card)
        yield client


def message(*parts: Part, task_id: str = "") -> Message:
    return Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=list(parts),
                   task_id=task_id)


async def send(client: Client, msg: Message, *, now: bool = False) -> list[Any]:
    request = SendMessageRequest(
        message=msg, configuration=SendMessageConfiguration(return_immediately=now))
    return [event async for event in client.send_message(request)]


def last_task(events: list[Any]) -> Task:
    tasks = [e.task for e in events if e.WhichOneof("payload") == "task"]
    assert tasks, events
    task: Task = tasks[-1]
    return task


async def task_of(client: Client, task_id: str) -> Task:
    return await client.get_task(GetTaskRequest(id=task_id))


async def until(client: Client, task_id: str, *states: int, within: float = 20) -> Task:
    async with asyncio.timeout(within):
        while True:
            task = await task_of(client, task_id)
            if task.status.state in states:
                return task
            await asyncio.sleep(0.1)


def status_text(task: Task) -> str:
    return get_message_text(task.status.message)


def test_a_task_is_a_run_for_the_sdk_client_and_for_podium(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("echo", ECHO)
    _proc, url = serve(sb, wf)
    card = httpx.get(url + "/.well-known/agent-card.json").json()
    assert (card["name"], card["description"], card["version"]) == (
        "echo-flow", "Records a text twice", "3")
    assert [s["id"] for s in card["skills"]] == ["echo-flow"]
    (ext,) = card["capabilities"]["extensions"]
    assert ext["params"]["input_schema"] == ECHO["input_schema"]

    async def sdk() -> tuple[Task, list[int]]:
        async with a2a_client(url) as client:
            done = last_task(await send(client, message(new_text_part("hello"))))
        async with a2a_client(url, streaming=True) as client:
            events = await send(client, message(new_data_part({"text": "streamed"})))
        states = [e.status_update.status.state for e in events
                  if e.WhichOneof("payload") == "status_update"]
        return done, states

    done, states = asyncio.run(sdk())
    assert done.status.state == S.TASK_STATE_COMPLETED, status_text(done)
    (artifact,) = done.artifacts
    assert get_data_parts(artifact.parts) == [{"said": "hello", "second": "second"}]
    status = json.loads(sb.podium("status", done.id, "--json").stdout)
    assert (status["run_id"], status["status"], status["workflow"]) == (
        done.id, "succeeded", "echo-flow")
    assert states[0] == S.TASK_STATE_WORKING
    assert states[-1] == S.TASK_STATE_COMPLETED

    # Podium as the client: the served workflow is one more agent, by its skill.
    agents = sb.root / "remote.yaml"
    agents.write_text(f"agents:\n  - {{id: remote-echo, a2a: '{url}'}}\n")
    caller = sb.workflow("caller", {"name": "caller", "steps": [
        {"id": "ask", "agent": "echo-flow", "input": {"text": "from podium"}}],
        "output": "${{ steps.ask.output }}"})
    out = sb.podium("run", str(caller), "--agents", str(agents), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["output"] == {"said": "from podium", "second": "second"}
    assert len(sb.run_ids()) == 4  # two from the SDK, the caller, the run it asked for
    assert Counter(x.step_id for x in sb.executions()) == Counter({"first": 3, "second": 3})


def test_a_long_run_is_answered_working_then_followed_to_its_end(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("long", {"name": "long", "steps": [
        {"id": "a", "agent": "record"},
        {"id": "b", "agent": "slow", "depends_on": ["a"], "input": {"seconds": 1.5}}],
        "output": "${{ steps.b.output }}"})
    _proc, url = serve(sb, wf, "--answer-within", "0s")

    async def go() -> tuple[Task, Task, Task]:
        async with a2a_client(url) as client:
            first = last_task(await send(client, message(new_data_part({}))))
            nudged = last_task(await send(client, message(new_text_part("still there?"),
                                                          task_id=first.id)))
            done = await until(client, first.id, S.TASK_STATE_COMPLETED)
            return first, nudged, done

    first, nudged, done = asyncio.run(go())
    assert first.status.state == S.TASK_STATE_WORKING  # answered before the run ended
    assert nudged.id == first.id
    assert nudged.status.state == S.TASK_STATE_WORKING
    said = [get_message_text(m) for m in done.history if m.role == Role.ROLE_USER]
    assert said[-1] == "still there?"
    assert get_data_parts(done.artifacts[0].parts) == [{"step": "b"}]
    assert Counter(x.step_id for x in sb.executions()) == Counter({"a": 1, "b": 1})
    bad = sb.podium("a2a", "serve", str(wf), "--port", "1", "--answer-within", "2h",
                    agents=True)
    assert bad.returncode == 2
    assert "--answer-within 2h: from 0s to 1h" in bad.stderr


def test_input_the_schema_refuses_rejects_the_task_and_starts_no_run(sandbox: Sandbox) -> None:
    sb = sandbox
    _proc, url = serve(sb, sb.workflow("echo", ECHO))

    async def go() -> Task:
        async with a2a_client(url) as client:
            return last_task(await send(client, message(new_data_part({"txt": "typo"}))))

    task = asyncio.run(go())
    assert task.status.state == S.TASK_STATE_REJECTED
    assert "text" in status_text(task)
    assert "required" in status_text(task)
    assert sb.run_ids() == []


def test_an_approval_is_input_required_and_answered_by_a_message(sandbox: Sandbox) -> None:
    sb = sandbox
    _proc, url = serve(sb, sb.workflow("order", APPROVAL))

    async def go() -> tuple[Task, Task, Task, Task]:
        async with a2a_client(url) as client:
            asked = last_task(await send(client, message(new_data_part({}))))
            again = last_task(await send(client, message(new_text_part("perhaps"),
                                                         task_id=asked.id)))
            ok = last_task(await send(client, message(
                new_data_part({"approved": True, "data": {"note": "fine"}}), task_id=asked.id)))
            other = last_task(await send(client, message(new_data_part({}))))
            no = last_task(await send(client, message(new_text_part("reject too dear"),
                                                      task_id=other.id)))
            return asked, again, ok, no

    asked, again, ok, no = asyncio.run(go())
    assert asked.status.state == S.TASK_STATE_INPUT_REQUIRED
    assert "an approval of step 'ok'" in status_text(asked)
    assert again.status.state == S.TASK_STATE_INPUT_REQUIRED
    assert "neither approve nor reject" in status_text(again)
    assert ok.status.state == S.TASK_STATE_COMPLETED, status_text(ok)
    assert get_data_parts(ok.artifacts[0].parts) == [
        {"approved": True, "by": "a2a", "data": {"note": "fine"}}]
    assert no.status.state == S.TASK_STATE_FAILED
    assert "too dear" in status_text(no)
    assert sb.run_row(no.id)["status"] == "failed"
    assert Counter(x.step_id for x in sb.executions()) == Counter({"prep": 2, "ship": 1})


def test_cancelling_a_task_cancels_its_run(sandbox: Sandbox) -> None:
    sb = sandbox
    _proc, url = serve(sb, sb.workflow("slow", SLOW))
    _proc2, url2 = serve(sb, sb.workflow("order", APPROVAL))

    async def go() -> tuple[Task, Task]:
        async with a2a_client(url) as client:
            working = last_task(await send(client, message(new_data_part({})), now=True))
            await until(client, working.id, S.TASK_STATE_WORKING)
            assert wait_for(lambda: any(x.step_id == "b" for x in sb.executions()), 20)
            cancelled = await client.cancel_task(CancelTaskRequest(id=working.id))
        async with a2a_client(url2) as client:
            parked = last_task(await send(client, message(new_data_part({}))))
            assert parked.status.state == S.TASK_STATE_INPUT_REQUIRED
            parked_cancelled = await client.cancel_task(CancelTaskRequest(id=parked.id))
        return cancelled, parked_cancelled

    cancelled, parked = asyncio.run(go())
    assert cancelled.status.state == S.TASK_STATE_CANCELED
    assert parked.status.state == S.TASK_STATE_CANCELED
    assert wait_for(lambda: sb.run_row(cancelled.id)["status"] == "cancelled", 15, 0.1)
    assert wait_for(lambda: sb.run_row(parked.id)["status"] == "cancelled", 15, 0.1)


def test_tasks_outlive_a_killed_server(sandbox: Sandbox) -> None:
    sb = sandbox
    order = sb.workflow("order", APPROVAL)
    hang = sb.workflow("hang", {"name": "hang", "steps": [
        {"id": "a", "agent": "record"},
        {"id": "h", "agent": "hang-once", "depends_on": ["a"], "input": {"hang_s": 60}},
        {"id": "z", "agent": "record", "depends_on": ["h"]}]})
    proc, url = serve(sb, order)
    proc_h, url_h = serve(sb, hang)

    async def before() -> tuple[str, str]:
        async with a2a_client(url) as client:
            waiting = last_task(await send(client, message(new_data_part({}))))
            assert waiting.status.state == S.TASK_STATE_INPUT_REQUIRED
        async with a2a_client(url_h) as client:
            working = last_task(await send(client, message(new_data_part({})), now=True))
        return waiting.id, working.id

    waiting_id, working_id = asyncio.run(before())
    assert wait_for(lambda: any(x.step_id == "h" for x in sb.executions()), 20)
    sb.kill(proc)
    sb.kill(proc_h)
    _proc, url = serve(sb, order)
    _proc_h, url_h = serve(sb, hang)

    async def after() -> tuple[Task, Task, Task]:
        async with a2a_client(url) as client:
            found = await task_of(client, waiting_id)
            done = last_task(await send(client, message(new_text_part("approve"),
                                                        task_id=waiting_id)))
        async with a2a_client(url_h) as client:
            taken_over = await until(client, working_id, S.TASK_STATE_COMPLETED, within=40)
        return found, done, taken_over

    found, done, taken_over = asyncio.run(after())
    assert found.status.state == S.TASK_STATE_INPUT_REQUIRED
    assert (found.id, found.context_id) == (waiting_id, waiting_id)
    assert done.status.state == S.TASK_STATE_COMPLETED, status_text(done)
    assert taken_over.status.state == S.TASK_STATE_COMPLETED
    calls = Counter(x.step_id for x in sb.executions())
    assert calls == Counter({"prep": 1, "ship": 1, "a": 1, "h": 2, "z": 1})  # h was in flight


def test_a_token_guards_every_route_but_the_card(sandbox: Sandbox,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox
    token = "s3cret-" + uuid.uuid4().hex
    monkeypatch.setenv("ECHO_TOKEN", token)  # Sandbox.env() passes it on
    _proc, url = serve(sb, sb.workflow("echo", ECHO), "--token-env", "ECHO_TOKEN")
    card = httpx.get(url + "/.well-known/agent-card.json")
    assert card.status_code == 200
    assert "bearer" in card.json()["securitySchemes"]
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        denied = httpx.post(url + "/", json=body, headers={"A2A-Version": "1.0", **headers})
        assert denied.status_code == 401
        assert token not in denied.text

    async def go() -> Task:
        async with a2a_client(url, token) as client:
            return last_task(await send(client, message(new_text_part("hi"))))

    assert asyncio.run(go()).status.state == S.TASK_STATE_COMPLETED
    agents = sb.root / "remote.yaml"
    agents.write_text(f"agents:\n  - {{id: r, a2a: '{url}', token_env: ECHO_TOKEN}}\n")
    caller = sb.workflow("caller", {"name": "caller", "steps": [
        {"id": "ask", "agent": "echo-flow", "input": {"text": "t"}}]})
    out = sb.podium("run", str(caller), "--agents", str(agents))
    assert out.returncode == 0, out.stderr


def test_bad_setup_exits_2_before_listening(sandbox: Sandbox) -> None:
    sb = sandbox
    unknown = sb.workflow("odd", {"name": "odd", "steps": [{"id": "x", "agent": "no-such"}]})
    port = free_port()
    out = sb.podium("a2a", "serve", str(unknown), "--port", str(port), agents=True)
    assert out.returncode == 2
    assert "no registered agent provides capability 'no-such'" in out.stderr
    wf = sb.workflow("echo", ECHO)
    out = sb.podium("a2a", "serve", str(wf), "--port", str(port), "--public-url", "ftp://x",
                    agents=True)
    assert out.returncode == 2
    assert "--public-url ftp://x: not an http(s) URL" in out.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        out = sb.podium("a2a", "serve", str(wf), "--port", str(busy), agents=True)
    assert out.returncode == 2
    assert f"{busy}" in out.stderr
    out = sb.podium("a2a", "serve", str(wf), "--port", str(port), "--token-env", "NOPE_UNSET",
                    agents=True)
    assert out.returncode == 2
    assert "NOPE_UNSET" in out.stderr
    for res in (out,):
        assert "Traceback" not in res.stderr


def test_the_example_calls_a_served_workflow_over_a2a(sandbox: Sandbox) -> None:
    """examples/a2a: digest.yaml asks summarise-page.yaml, served by `podium a2a serve`."""
    sb = sandbox
    examples = sb.root / "examples"
    shutil.copytree(EXAMPLES, examples, ignore=shutil.ignore_patterns(".podium", "__pycache__"))
    port = free_port()
    agents = examples / "a2a" / "agents.yaml"
    agents.write_text(agents.read_text().replace("127.0.0.1:8095", f"127.0.0.1:{port}"))
    served = sb.spawn("a2a", "serve", str(examples / "summarise-page.yaml"), "--port",
                      str(port), "--agents", str(examples / "podium.yaml"))
    assert wait_for(lambda: _card_up(f"http://127.0.0.1:{port}"), 30, 0.05), \
        sb.stderr_of(served)
    out = sb.podium("run", str(examples / "a2a" / "digest.yaml"), "--agents", str(agents),
                    "--json")
    assert out.returncode == 0, out.stderr
    pages = json.loads(out.stdout)["output"]["pages"]
    assert [p["title"] for p in pages] == ["Podium in five minutes", "Retrying well"]
    assert pages[0]["words"] == 55  # an int again after the trip through protobuf
    listed = json.loads(sb.podium("runs", "--json").stdout)
    assert Counter(r["workflow"] for r in listed) == Counter(
        {"summarise-page": 2, "remote-digest": 1})


def _card_up(url: str) -> bool:
    try:
        return httpx.get(url + "/.well-known/agent-card.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_only_its_own_tasks_and_a_parked_task_follows_its_run(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("order", APPROVAL)
    _proc, url = serve(sb, wf)
    by_cli = sb.podium("run", str(wf), agents=True)  # the same workflow, not through A2A
    assert by_cli.returncode == 0, by_cli.stderr
    (cli_run,) = sb.run_ids()

    async def go() -> tuple[str, str, Task]:
        async with a2a_client(url) as client:
            with pytest.raises(Exception, match=r"(?i)not found") as not_mine:
                await task_of(client, cli_run)
            with pytest.raises(Exception, match=r"(?i)not found") as nor_this:
                await send(client, message(new_text_part("approve"), task_id=cli_run))
            parked = last_task(await send(client, message(new_data_part({}))))
            assert parked.status.state == S.TASK_STATE_INPUT_REQUIRED
            approved = sb.podium("approve", parked.id, "ok", "--wait", agents=True)
            assert approved.returncode == 0, approved.stderr
            return str(not_mine.value), str(nor_this.value), await task_of(client, parked.id)

    not_mine, nor_this, after = asyncio.run(go())
    assert "not found" in not_mine.lower()
    assert "not found" in nor_this.lower()
    assert sb.run_row(cli_run)["status"] == "waiting"  # untouched
    assert after.status.state == S.TASK_STATE_COMPLETED  # approved elsewhere: it says so
    assert get_data_parts(after.artifacts[0].parts)[0]["approved"] is True


def test_no_token_means_this_machine_only_and_bodies_are_bounded(sandbox: Sandbox) -> None:
    sb = sandbox
    wf = sb.workflow("echo", ECHO)
    out = sb.podium("a2a", "serve", str(wf), "--port", str(free_port()), "--host",
                    "0.0.0.0", agents=True)  # noqa: S104
    assert out.returncode == 2
    assert "no --token-env" in out.stderr
    _proc, url = serve(sb, wf)
    huge = httpx.post(url + "/", content=b"x" * (17 << 20),
                      headers={"content-type": "application/json", "A2A-Version": "1.0"},
                      timeout=30)
    assert huge.status_code == 413
    assert sb.run_ids() == []


def test_tasks_held_in_memory_are_bounded_and_read_back_from_their_runs(
        sandbox: Sandbox) -> None:
    """Every message a client sends is kept in its task's history: the SDK's store alone
    grew with each task and each message while the server lived. Now the newest
    ``--tasks-held`` tasks are held, each with its last 100 messages; an older task is
    made again from its run when asked (its state and output, not its messages)."""
    sb = sandbox
    wf = sb.workflow("echo", ECHO)
    slow = sb.workflow("long", {"name": "long", "steps": [
        {"id": "a", "agent": "slow", "input": {"seconds": 60}}]})
    _proc, url = serve(sb, wf, "--tasks-held", "2")

    async def many() -> tuple[list[Task], list[str], Task]:
        async with a2a_client(url) as client:
            done = [last_task(await send(client, message(new_data_part({"text": f"t{i}"}))))
                    for i in range(4)]
            listed = (await client.list_tasks(ListTasksRequest())).tasks
            first = await task_of(client, done[0].id)  # let go: made again from its run
            return done, [t.id for t in listed], first

    done, listed, first = asyncio.run(many())
    assert [t.status.state for t in done] == [S.TASK_STATE_COMPLETED] * 4
    assert sorted(listed) == sorted(t.id for t in done[2:])  # the two newest
    assert first.status.state == S.TASK_STATE_COMPLETED
    assert get_data_parts(first.artifacts[0].parts) == [{"said": "t0", "second": "second"}]
    assert not first.history

    _proc2, url2 = serve(sb, slow, "--answer-within", "0s")

    async def chatty() -> Task:
        async with a2a_client(url2) as client:
            task = last_task(await send(client, message(new_data_part({}))))
            for i in range(105):
                await send(client, message(new_text_part(f"n{i}"), task_id=task.id))
            return await task_of(client, task.id)

    held = asyncio.run(chatty())
    said = [get_message_text(m) for m in held.history if m.role == Role.ROLE_USER]
    assert len(held.history) <= 100
    assert said[-1] == "n104"
    assert "n0" not in said
    bad = sb.podium("a2a", "serve", str(wf), "--port", "1", "--tasks-held", "0", agents=True)
    assert bad.returncode == 2
    assert "--tasks-held 0: from 1 to 1000000" in bad.stderr
