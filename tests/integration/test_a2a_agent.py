"""The A2A transport against a REAL a2a-sdk server (JSON-RPC, protocol 1.0).

Each test starts the SDK's own server stack (``DefaultRequestHandler`` over an
``AgentExecutor`` of ours, card + JSON-RPC routes in a Starlette app) under
uvicorn on 127.0.0.1 and a free port, in this test's event loop, and talks to
it through ``A2AAgent`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("a2a.server", reason="the a2a extra is not installed")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from a2a.helpers import (  # noqa: E402
    get_data_parts,
    get_text_parts,
    new_data_message,
    new_data_part,
    new_task_from_user_message,
    new_text_message,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext  # noqa: E402
from a2a.server.events import EventQueue  # noqa: E402
from a2a.server.request_handlers import DefaultRequestHandler  # noqa: E402
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes  # noqa: E402
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater  # noqa: E402
from a2a.types import (  # noqa: E402
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
)
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

import podium  # noqa: E402
from podium.agents import Agent, Task  # noqa: E402
from podium.agents.a2a import A2AAgent, _skills_of  # noqa: E402
from podium.errors import (  # noqa: E402
    AgentError,
    ConfigError,
    InvalidInput,
    RateLimited,
    Unavailable,
)

# --- the remote agent: a real a2a-sdk server ---------------------------------


@dataclass
class Seen:
    """What the remote side received, so tests can check what went over the wire."""

    context_id: str | None
    message_id: str
    text: str
    data: Any


class Adder(AgentExecutor):
    """Sums (capability ``sum``) or averages (``mean``) ``input.numbers``.

    ``input.mode`` picks how it answers: ``task`` (default; a Task with a data
    artifact), ``message`` (a single data Message), ``text`` (a text
    artifact), ``fail`` (task FAILED with a reason), ``ask`` (task
    INPUT_REQUIRED), ``raise`` (the executor raises), ``slow`` (a task that
    takes ``input.seconds``).
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.cancelled: list[str] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        msg = context.message
        assert msg is not None
        task = get_data_parts(msg.parts)[0]
        self.seen.append(Seen(context.context_id, msg.message_id,
                              " ".join(get_text_parts(msg.parts)), task))
        inp = task["input"]
        mode = inp.get("mode", "task")
        numbers = inp.get("numbers", [])
        total = sum(numbers)
        value = total if task["capability"] == "sum" else total / len(numbers)
        result = {"value": value, "count": len(numbers), "capability": task["capability"]}
        if mode == "raise":
            raise RuntimeError("the adder broke")
        if mode == "message":
            await event_queue.enqueue_event(new_data_message(result, context_id=context.context_id))
            return
        await event_queue.enqueue_event(new_task_from_user_message(msg))
        updater = TaskUpdater(event_queue, str(context.task_id), str(context.context_id))
        await updater.start_work()
        if mode == "fail":
            await updater.failed(new_text_message("cannot add negative numbers",
                                                  context_id=context.context_id,
                                                  task_id=context.task_id))
            return
        if mode == "ask":
            await updater.requires_input(new_text_message("which numbers?",
                                                          context_id=context.context_id,
                                                          task_id=context.task_id))
            return
        if mode == "slow":
            await asyncio.sleep(inp.get("seconds", 0.3))
        if mode == "text":
            await updater.add_artifact([new_text_part(f"{value:g}")], name="result")
        else:
            await updater.add_artifact([new_data_part(result)], name="result")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        self.cancelled.append(str(context.task_id))
        await TaskUpdater(event_queue, str(context.task_id), str(context.context_id)).cancel()


def agent_card(url: str) -> AgentCard:
    return AgentCard(
        name="adder",
        description="Adds and averages numbers.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url + "/", protocol_binding="JSONRPC", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json", "text/plain"],
        skills=[
            AgentSkill(id="sum", name="Sum", description="Sum of numbers", tags=["math"]),
            AgentSkill(id="mean", name="Mean", description="Mean of numbers", tags=["math"]),
        ],
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(make_app: Callable[[str], Any]) -> AsyncIterator[str]:
    """Serve ``make_app(base_url)`` with uvicorn in this loop; yield the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(make_app(url), log_level="warning", lifespan="off", ws="none",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class RemoteAgent:
    url: str
    executor: Adder
    agents: list[A2AAgent] = field(default_factory=list)


@pytest.fixture
async def remote() -> AsyncIterator[RemoteAgent]:
    executor = Adder()
    handlers: list[DefaultRequestHandler] = []

    def make_app(url: str) -> Starlette:
        card = agent_card(url)
        handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(),
                                        agent_card=card)
        handlers.append(handler)
        return Starlette(routes=[*create_agent_card_routes(card),
                                 *create_jsonrpc_routes(handler, rpc_url="/")])

    async with serving(make_app) as url:
        state = RemoteAgent(url, executor)
        try:
            yield state
        finally:
            for a in state.agents:  # clients first, then the server
                await a.aclose()
    for h in handlers:
        await h.aclose()


async def connect(remote: RemoteAgent, **options: Any) -> A2AAgent:
    agent = await A2AAgent.from_url(remote.url, id="adder", **options)
    remote.agents.append(agent)
    return agent


def task_for(capability: str, input: Any, *, attempt: int = 1,
             key: str = "run-1:add") -> Task:
    return Task(run_id="run-1", step_id="add", attempt=attempt, idempotency_key=key,
                capability=capability, input=input)


# --- discovery and health ---------------------------------------------------------


async def test_card_discovery_gives_skills_as_capabilities(remote: RemoteAgent) -> None:
    agent = await connect(remote, weight=2.0, region="eu-west", labels={"team": "math"})
    assert isinstance(agent, Agent)
    assert agent.id == "adder"
    assert agent.capabilities == frozenset({"sum", "mean"})
    assert agent.card is not None
    assert agent.card.name == "adder"
    assert (agent.weight, agent.region, agent.labels) == (2.0, "eu-west", {"team": "math"})
    # Configured capabilities are kept next to the discovered ones.
    extra = A2AAgent(remote.url, id="adder-2", capabilities=["add"])
    remote.agents.append(extra)
    assert await extra.discover() == frozenset({"sum", "mean", "add"})


def test_skill_name_or_tags_stand_in_for_a_missing_id() -> None:
    card = AgentCard(name="x", skills=[AgentSkill(id="", name="Summarize", tags=["text"]),
                                       AgentSkill(id="", name="", tags=["ocr", "vision"]),
                                       AgentSkill(id="translate", name="Translate")])
    assert _skills_of(card) == frozenset({"Summarize", "ocr", "vision", "translate"})


async def test_health_is_healthy_with_latency(remote: RemoteAgent) -> None:
    agent = A2AAgent(remote.url, id="adder", capabilities=["sum"])
    remote.agents.append(agent)
    report = await agent.health()
    assert report.status == "healthy"
    assert report.detail is not None
    assert "ms" in report.detail


def test_construction_needs_no_event_loop() -> None:
    agent = A2AAgent("http://127.0.0.1:9/.well-known/agent-card.json", capabilities=["x"])
    assert agent.url == "http://127.0.0.1:9"
    assert agent.id == "127.0.0.1:9"
    assert agent.capabilities == frozenset({"x"})


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="http"):
        A2AAgent("127.0.0.1:9999")


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "a2a.client", None)  # import a2a.client -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'podium\[a2a\]'"):
        A2AAgent("http://127.0.0.1:9999")


# --- invoke ------------------------------------------------------------------------


async def test_invoke_returns_the_structured_result(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    out = await agent.invoke(task_for("sum", {"numbers": [1, 2, 3]}, attempt=2))
    assert out == {"value": 6, "count": 3, "capability": "sum"}
    assert type(out["value"]) is int  # protobuf made it 6.0 on the wire; JSON says 6
    assert await agent.invoke(task_for("mean", {"numbers": [1, 2]})) == {
        "value": 1.5, "count": 2, "capability": "mean"}
    # The idempotency key names the conversation; the message id adds the attempt.
    first = remote.executor.seen[0]
    assert first.context_id == "run-1:add"
    assert first.message_id == "run-1:add#2"
    assert "'sum'" in first.text
    assert first.data["run_id"] == "run-1"
    assert first.data["step_id"] == "add"
    assert first.data["input"] == {"numbers": [1, 2, 3]}


async def test_invoke_reads_a_message_reply_and_a_text_artifact(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    assert await agent.invoke(task_for("sum", {"numbers": [2, 2], "mode": "message"})) == {
        "value": 4, "count": 2, "capability": "sum"}
    assert await agent.invoke(task_for("sum", {"numbers": [2, 2], "mode": "text"})) == "4"


async def test_non_blocking_send_polls_the_task_to_its_end(remote: RemoteAgent) -> None:
    agent = await connect(remote, blocking=False, poll_interval_s=0.05)
    out = await agent.invoke(task_for("sum", {"numbers": [1, 2], "mode": "slow", "seconds": 0.3}))
    assert out == {"value": 3, "count": 2, "capability": "sum"}


async def test_a_cancelled_call_cancels_the_remote_task(remote: RemoteAgent) -> None:
    agent = await connect(remote, blocking=False, poll_interval_s=0.05)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):  # what the engine does for a step timeout
            await agent.invoke(task_for("sum", {"numbers": [1], "mode": "slow", "seconds": 30}))
    async with asyncio.timeout(5):
        while not remote.executor.cancelled:
            await asyncio.sleep(0.01)


async def test_executor_failure_is_an_agent_error(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    with pytest.raises(AgentError, match="the adder broke") as raised:
        await agent.invoke(task_for("sum", {"numbers": [1], "mode": "raise"}))
    assert raised.value.error_type == "agent_error"
    assert raised.value.agent_id == "adder"


async def test_failed_task_is_an_agent_error_with_its_status_message(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    with pytest.raises(AgentError, match="task failed: cannot add negative numbers") as raised:
        await agent.invoke(task_for("sum", {"numbers": [-1], "mode": "fail"}))
    assert raised.value.error_type == "agent_error"


async def test_input_required_is_invalid_input(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    with pytest.raises(InvalidInput, match="which numbers") as raised:
        await agent.invoke(task_for("sum", {"mode": "ask"}))
    assert raised.value.error_type == "invalid_input"
    # Nobody will answer the question: the parked remote task is cancelled.
    async with asyncio.timeout(5):
        while not remote.executor.cancelled:
            await asyncio.sleep(0.01)


async def test_input_that_is_not_json_is_invalid_input(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    with pytest.raises(InvalidInput, match="not JSON"):
        await agent.invoke(task_for("sum", {"numbers": {1, 2}}))
    assert remote.executor.seen == []


async def test_unreachable_agent_is_unavailable_and_unhealthy() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(Unavailable, match="cannot reach"):
        await A2AAgent.from_url(url)
    agent = A2AAgent(url, id="ghost", capabilities=["sum"])
    try:
        with pytest.raises(Unavailable) as raised:
            await agent.invoke(task_for("sum", {"numbers": [1]}))
        assert raised.value.error_type == "unavailable"
        report = await agent.health()
        assert report.status == "unhealthy"
        assert report.detail is not None
        assert "cannot reach" in report.detail
    finally:
        await agent.aclose()


async def test_http_429_is_rate_limited_with_retry_after() -> None:
    async def busy(_request: Request) -> JSONResponse:
        return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "7"})

    def make_app(url: str) -> Starlette:
        return Starlette(routes=[*create_agent_card_routes(agent_card(url)),
                                 Route("/", busy, methods=["POST"])])

    async with serving(make_app) as url:
        agent = await A2AAgent.from_url(url, id="busy")
        try:
            with pytest.raises(RateLimited) as raised:
                await agent.invoke(task_for("sum", {"numbers": [1]}))
            assert raised.value.error_type == "rate_limited"
            assert raised.value.retry_after_s == 7.0
        finally:
            await agent.aclose()


# --- end to end through the engine ---------------------------------------------------


async def test_workflow_step_runs_on_the_a2a_agent(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    workflow = podium.workflow_from_dict({
        "name": "a2a-stats",
        "mode": "dag",
        "steps": [
            {"id": "total", "agent": "sum", "input": {"numbers": "${{ input.numbers }}"}},
            {"id": "average", "agent": "mean", "depends_on": ["total"],
             "input": {"numbers": "${{ input.numbers }}",
                       "mode": "message"}},
        ],
        "output": {"total": "${{ steps.total.output.value }}",
                   "average": "${{ steps.average.output.value }}"},
    })
    async with podium.Engine(registry=podium.AgentRegistry([agent])) as engine:
        run = await engine.run(workflow, {"numbers": [3, 4, 5, 8]})
    assert run.status == "succeeded", run.error
    assert run.output == {"total": 20, "average": 5}
    assert run.steps["total"].output == {"value": 20, "count": 4, "capability": "sum"}
    assert run.steps["total"].agent_id == "adder"
    assert run.steps["average"].agent_id == "adder"
    # Each step's idempotency key reached the remote agent as the context id.
    assert len({s.context_id for s in remote.executor.seen}) == 2
    assert all(s.data["run_id"] == run.run_id for s in remote.executor.seen)
