"""The A2A transport against a REAL a2a-sdk server (JSON-RPC, protocol 1.0).

Each test starts the SDK's own server stack (``DefaultRequestHandler`` over an
``AgentExecutor`` of ours, card + JSON-RPC routes in a Starlette app) under
uvicorn on 127.0.0.1 and a free port, in this test's event loop, and talks to
it through ``A2AAgent`` only. The executors read requests as an A2A agent
written for any client would: the content from the message's parts, nothing
Podium-specific but what they choose to read from its metadata.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import enum
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

pytest.importorskip("a2a.server", reason="the a2a extra is not installed")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from a2a.helpers import (  # noqa: E402
    get_data_parts,
    get_message_text,
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
from a2a.server.routes import (  # noqa: E402
    create_agent_card_routes,
    create_jsonrpc_routes,
)
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater  # noqa: E402
from a2a.types import (  # noqa: E402
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
)
from google.protobuf.json_format import MessageToDict  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

import podium  # noqa: E402
from podium.agents import Agent, Task  # noqa: E402
from podium.agents.a2a import A2AAgent, _skills_of  # noqa: E402
from podium.errors import (  # noqa: E402
    AgentError,
    ConfigError,
    InvalidInput,
    OutputTooLarge,
    RateLimited,
    Unavailable,
)

# --- the remote agent: a real a2a-sdk server ---------------------------------


@dataclass
class Seen:
    """What the remote side received, so tests can check what went over the wire."""

    context_id: str | None
    message_id: str
    kinds: list[str]  # the kind of each part: "text", "data", ...
    text: str
    data: Any
    metadata: dict[str, Any]  # the message's own metadata, where Podium's fields go


def seen(context: RequestContext) -> Seen:
    msg = context.message
    assert msg is not None
    data = get_data_parts(msg.parts)
    return Seen(context.context_id, msg.message_id,
                [str(p.WhichOneof("content")) for p in msg.parts],
                " ".join(get_text_parts(msg.parts)), data[0] if data else None,
                MessageToDict(msg.metadata))


class Adder(AgentExecutor):
    """Sums (skill ``sum``) or averages (``mean``) the request's ``numbers``.

    The skill asked for is read from Podium's metadata (an agent with several
    skills has nowhere else to learn it). ``mode`` in the request picks how it
    answers: ``task`` (default; a Task with a data artifact), ``message`` (a
    single data Message), ``text`` (a text artifact), ``fail`` (task FAILED
    with a reason), ``ask`` (task INPUT_REQUIRED), ``raise`` (the executor
    raises), ``slow`` (a task that takes ``seconds``).
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.cancelled: list[str] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        msg = context.message
        assert msg is not None
        got = seen(context)
        self.seen.append(got)
        inp = got.data
        skill = got.metadata["podium"]["capability"]
        mode = inp.get("mode", "task")
        numbers = inp.get("numbers", [])
        total = sum(numbers)
        value = total if skill == "sum" else total / len(numbers)
        result = {"value": value, "count": len(numbers), "capability": skill}
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


class WordCounter(AgentExecutor):
    """An A2A agent that knows nothing of Podium: it counts the words of the request.

    ``read="data"`` takes the ``text`` field of the first data part, as an
    agent taking JSON does; ``read="text"`` takes the message's text, as a
    chat agent does. It answers with one data message ``{"words": N}``.
    """

    def __init__(self, read: str) -> None:
        self.read = read
        self.seen: list[Seen] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        msg = context.message
        assert msg is not None
        self.seen.append(seen(context))
        if self.read == "data":
            data = get_data_parts(msg.parts)
            first = data[0] if data else {}
            text = first.get("text", "") if isinstance(first, dict) else ""
        else:
            text = get_message_text(msg, delimiter=" ")
        await event_queue.enqueue_event(
            new_data_message({"words": len(text.split())}, context_id=context.context_id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class Echo(AgentExecutor):
    """Answers with the content of the request's first part, as it came."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        msg = context.message
        assert msg is not None
        self.seen.append(seen(context))
        part = msg.parts[0]
        reply = (new_text_message(part.text, context_id=context.context_id)
                 if part.HasField("text") else
                 new_data_message(get_data_parts([part])[0], context_id=context.context_id))
        await event_queue.enqueue_event(reply)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def agent_card(url: str, *skills: str, binding: str = "JSONRPC") -> AgentCard:
    """The card of an agent at ``url`` offering ``skills`` (``sum`` and ``mean`` if none)."""
    path = "/" if binding == "JSONRPC" else ""
    return AgentCard(
        name="adder" if not skills else skills[0],
        description="Adds and averages numbers.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url + path, protocol_binding=binding, protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json", "text/plain"],
        skills=[AgentSkill(id=s, name=s.title(), description=s, tags=["test"])
                for s in skills] if skills else [
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
    executor: Any
    agents: list[A2AAgent] = field(default_factory=list)


@contextlib.asynccontextmanager
async def a2a_server(executor: AgentExecutor, *skills: str) -> AsyncIterator[RemoteAgent]:
    """The SDK's own JSON-RPC server over ``executor``; closes the agents made for it first."""
    handlers: list[DefaultRequestHandler] = []

    def make_app(url: str) -> Starlette:
        card = agent_card(url, *skills)
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


@pytest.fixture
async def remote() -> AsyncIterator[RemoteAgent]:
    async with a2a_server(Adder()) as state:
        yield state


async def connect(remote: RemoteAgent, **options: Any) -> A2AAgent:
    agent = await A2AAgent.from_url(remote.url, id="adder", **options)
    remote.agents.append(agent)
    return agent


def task_for(capability: str, input: Any, *, attempt: int = 1,
             key: str = "run-1:add") -> Task:
    return Task(run_id="run-1", step_id="add", attempt=attempt, idempotency_key=key,
                capability=capability, input=input)


async def failed_call(url: str, agent_id: str) -> AgentError:
    """The error of one call to the A2A agent at ``url`` (the call must fail)."""
    agent = await A2AAgent.from_url(url, id=agent_id)
    try:
        with pytest.raises(AgentError) as raised:
            await agent.invoke(task_for("sum", {"numbers": [1]}))
    finally:
        await agent.aclose()
    return raised.value


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
    # The message is the step's input, nothing else; Podium's fields are metadata.
    assert first.kinds == ["data"]
    assert first.data == {"numbers": [1, 2, 3]}
    assert first.metadata == {"podium": {
        "run_id": "run-1", "step_id": "add", "attempt": 2, "idempotency_key": "run-1:add",
        "capability": "sum"}}


async def test_invoke_reads_a_message_reply_and_a_text_artifact(remote: RemoteAgent) -> None:
    agent = await connect(remote)
    assert await agent.invoke(task_for("sum", {"numbers": [2, 2], "mode": "message"})) == {
        "value": 4, "count": 2, "capability": "sum"}
    assert await agent.invoke(task_for("sum", {"numbers": [2, 2], "mode": "text"})) == "4"


SENTENCE = "the quick brown fox jumps over the lazy dog"  # 9 words


@pytest.mark.parametrize(("read", "input"), [
    ("data", {"text": SENTENCE, "lang": "en"}),
    ("text", SENTENCE),
])
async def test_an_agent_that_knows_nothing_of_podium_reads_the_steps_input(
    read: str, input: Any,
) -> None:
    """A step's input object is the message's data part, a string its text part:
    an agent counting the words of what it was sent counts the input's 9 words
    (it counted 0 when the data part held Podium's envelope)."""
    async with a2a_server(WordCounter(read), "count-words") as remote:
        agent = await A2AAgent.from_url(remote.url, id="counter")
        remote.agents.append(agent)
        wf = podium.workflow_from_dict({
            "name": "count", "steps": [{"id": "count", "agent": "count-words",
                                        "input": "${{ input.payload }}"}],
            "output": "${{ steps.count.output.words }}"})
        async with podium.Engine(registry=podium.AgentRegistry([agent])) as engine:
            run = await engine.run(wf, {"payload": input})
    assert run.status == "succeeded", run.error
    assert run.output == 9
    (got,) = remote.executor.seen
    assert got.kinds == (["data"] if read == "data" else ["text"])
    assert got.metadata["podium"]["step_id"] == "count"
    assert got.metadata["podium"]["capability"] == "count-words"
    assert got.context_id == f"{run.run_id}/count"


@pytest.mark.parametrize("value", [
    [1, "two", {"three": 3}], 42, 2.5, True, None, "", "a line\nand another", {},
])
async def test_every_json_input_arrives_as_itself(value: Any) -> None:
    """Lists, numbers, booleans and null go as a data part (protocol 1.0's data
    part holds any JSON value), strings as a text part; an agent echoing its
    request gives back exactly the input."""
    async with a2a_server(Echo(), "echo") as remote:
        agent = await A2AAgent.from_url(remote.url, id="echo")
        remote.agents.append(agent)
        out = await agent.invoke(task_for("echo", value))
    assert out == value
    assert type(out) is type(value)
    (got,) = remote.executor.seen
    assert got.kinds == (["text"] if isinstance(value, str) else ["data"])


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


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@contextlib.asynccontextmanager
async def answering(status: int, headers: dict[str, str], *,
                    binding: str = "JSONRPC") -> AsyncIterator[str]:
    """A server with a real card; every call, and the card at ``/busy-card``, gets ``status``."""
    async def refuse(_request: Request) -> JSONResponse:
        return JSONResponse({"error": {"code": status, "message": "at capacity"}},
                            status_code=status, headers=headers)

    def make_app(url: str) -> Starlette:
        return Starlette(routes=[*create_agent_card_routes(agent_card(url, binding=binding)),
                                 Route("/busy-card", refuse, methods=["GET"]),
                                 Route("/{path:path}", refuse, methods=["POST"])])

    async with serving(make_app) as url:
        yield url


BUSY_CASES = [
    # status, headers, error class, busy, retry_after_s (None: not given; a pair: a range)
    (429, {"Retry-After": "7"}, RateLimited, True, 7.0),
    (429, {}, RateLimited, True, None),
    (503, {"Retry-After": "3"}, Unavailable, True, 3.0),
    (503, {"Retry-After": "HTTP-DATE+30"}, Unavailable, True, (20.0, 30.0)),
    (503, {}, Unavailable, False, None),
    (502, {"Retry-After": "3"}, Unavailable, False, None),
]


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
@pytest.mark.parametrize(("status", "headers", "kind", "busy", "retry_after"), BUSY_CASES)
async def test_an_agent_at_capacity_is_busy_not_failing(
    binding: str, status: int, headers: dict[str, str], kind: type[AgentError], busy: bool,
    retry_after: float | tuple[float, float] | None,
) -> None:
    """HTTP 429, and 503 with ``Retry-After``, on either binding: busy (back-pressure),
    with the delay the agent asked for (seconds or an HTTP date); a 503 without
    ``Retry-After`` or a 502 is an agent that is down, not busy."""
    if headers.get("Retry-After") == "HTTP-DATE+30":
        headers = {"Retry-After": http_date(30)}
    async with answering(status, headers, binding=binding) as url:
        err = await failed_call(url, "full")
    assert type(err) is kind, err
    assert err.busy is busy, err.message
    assert err.agent_id == "full"
    assert f"HTTP {status}" in err.message
    if isinstance(retry_after, tuple):
        assert err.retry_after_s is not None
        assert retry_after[0] <= err.retry_after_s <= retry_after[1]
    else:
        assert err.retry_after_s == retry_after


async def test_a_busy_agent_card_makes_the_agent_degraded_not_unhealthy() -> None:
    """A health check answered 503 ``Retry-After`` (or 429) finds a live agent at capacity:
    still usable, ranked below agents with room; no ``Retry-After`` is down."""
    for status, headers, level in ((503, {"Retry-After": "2"}, "degraded"),
                                   (429, {}, "degraded"), (503, {}, "unhealthy")):
        async with answering(status, headers) as url:
            agent = A2AAgent(url, id="full", capabilities=["sum"], card_path="busy-card")
            try:
                report = await agent.health()
            finally:
                await agent.aclose()
        assert report.status == level, (status, headers, report)
        assert report.detail is not None
        assert f"HTTP {status}" in report.detail


@contextlib.asynccontextmanager
async def rpc_answering(answer: dict[str, Any], **headers: str) -> AsyncIterator[str]:
    """A server with a real JSON-RPC card whose every call gets ``answer`` (HTTP 200)."""
    async def reply(_request: Request) -> JSONResponse:
        return JSONResponse(answer, headers=headers)

    def make_app(url: str) -> Starlette:
        return Starlette(routes=[*create_agent_card_routes(agent_card(url)),
                                 Route("/{path:path}", reply, methods=["POST"])])

    async with serving(make_app) as url:
        yield url


@pytest.mark.parametrize(
    ("code", "kind", "error_type"),
    [(-32602, InvalidInput, "invalid_input"), (-32004, InvalidInput, "invalid_input"),
     (-32603, AgentError, "agent_error"), (-32099, AgentError, "agent_error")],
)
async def test_a_json_rpc_error_keeps_its_meaning(
    code: int, kind: type[AgentError], error_type: str
) -> None:
    """The JSON-RPC error codes of A2A map as the SDK maps them (invalid params and
    unsupported operations are the caller's fault; an internal or unknown error is
    the agent's), with the server's message kept."""
    answer = {"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": "said the agent"}}
    async with rpc_answering(answer) as url:
        err = await failed_call(url, "rpc")
    assert type(err) is kind
    assert err.error_type == error_type
    assert "said the agent" in err.message


async def test_an_answer_over_max_response_bytes_is_output_too_large() -> None:
    """An A2A answer is bounded like an HTTP agent's: past ``max_response_bytes`` the
    read stops and the attempt fails as output_too_large, never the whole body kept."""
    big = {"jsonrpc": "2.0", "id": 1, "result": {"message": {
        "messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "x" * 200_000}]}}}
    async with rpc_answering(big) as url:
        small = await A2AAgent.from_url(url, id="big", max_response_bytes=50_000)
        roomy = await A2AAgent.from_url(url, id="roomy")
        try:
            with pytest.raises(OutputTooLarge) as raised:
                await small.invoke(task_for("sum", {"numbers": [1]}))
            assert await roomy.invoke(task_for("sum", {"numbers": [1]})) == "x" * 200_000
        finally:
            await small.aclose()
            await roomy.aclose()
    assert raised.value.error_type == "output_too_large"
    assert "max_response_bytes (50000)" in raised.value.message


def typed(value: Any) -> Any:
    """``value`` with every scalar's type beside it and keys sorted: ``6 == 6.0``, but an
    agent's output or a request that says ``6`` where protobuf says ``6.0`` is not the same."""
    if isinstance(value, dict):
        return sorted((k, typed(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [typed(v) for v in value]
    # The JSON type (a str subclass is a JSON string like any other).
    kind = next((t for t in (bool, int, float, str) if isinstance(value, t)), type(value))
    return (kind.__name__, value)


class Level(enum.IntEnum):
    HIGH = 3


class Name(str):
    __slots__ = ()


@pytest.mark.parametrize("blocking", [True, False])
@pytest.mark.parametrize("value", [
    "text ✓", None, 0, 1.5, True, 2**70, {}, [], {"a": (1, 2)},
    [1, "a", None, {"b": [2, 3.25]}], {"ms": 20, "n": {"deep": [False, "x"]}},
    {"k": Level.HIGH, "t": ((1, None), [True, "s"])}, Level.HIGH,
    collections.OrderedDict(b=1, a=[None, 2.5]), {Name("key"): Name("v"), "l": [Name("w")]},
    [[[[2**53 + 1]]]], {"f": -0.0, "big": 1e300, "neg": -7},
])
def test_the_request_made_directly_is_the_one_the_sdk_would_send(
    value: Any, blocking: bool
) -> None:
    """The JSON-RPC request is made without building the SDK's message first; it must be
    exactly what protobuf's ``MessageToDict`` makes of that message, types included
    (every number a double, as ``google.protobuf.Value`` holds it)."""
    agent = A2AAgent("http://127.0.0.1:1", id="x", capabilities=["sum"], blocking=blocking)
    task = task_for("sum", value, attempt=3)
    assert typed(agent._params_for(task)) == typed(MessageToDict(agent._request_for(task)))


@pytest.mark.parametrize("value", [{1: 2}, b"x", {"s": {1, 2}}, float("nan"), [float("inf")]])
def test_an_input_protobuf_cannot_carry_is_invalid_input(value: Any) -> None:
    agent = A2AAgent("http://127.0.0.1:1", id="x", capabilities=["sum"])
    with pytest.raises(InvalidInput, match="it is not JSON"):
        agent._params_for(task_for("sum", value))


PLAIN_ANSWERS = [
    {"message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"data": {"n": 6, "x": 2.5}}]}},
    {"message": {"messageId": "m", "role": "ROLE_AGENT",
                 "parts": [{"data": [1, 2**60, None, True, {"deep": [3.0]}]}, {"data": "s"}]}},
    {"message": {"messageId": "m", "parts": [{"text": "a", "mediaType": "text/plain"},
                                             {"text": ""}, {"text": "b"}]}},
    {"message": {"messageId": "m", "parts": [{"text": "t"}, {"data": None}]}},
    {"message": {"messageId": "m", "parts": []}},
    {"message": {"messageId": "m", "role": "ROLE_AGENT", "metadata": {"k": 1},
                 "parts": [{"data": 7, "metadata": {"m": 2}, "filename": "f.json"}]}},
]


@pytest.mark.parametrize("answer", PLAIN_ANSWERS)
def test_a_plain_message_answer_read_directly_is_what_the_sdk_reads(answer: Any) -> None:
    """A message answer is read from the JSON without protobuf; it must give the output
    the SDK's parsed ``SendMessageResponse`` gives (numbers through a double included)."""
    from podium.agents.a2a import _output_of_parts
    from podium.agents.a2a_jsonrpc import JsonRpcClient, plain_message_output

    parsed = JsonRpcClient.parse_send_result(answer)
    assert typed(plain_message_output(answer)) == typed(_output_of_parts(parsed.message.parts))


EDGE_NUMBERS: list[Any] = [
    0, 1, -1, 6, 2**53, -(2**53), 2**53 + 1, -(2**53) - 1, 2**60, 2**63 - 1, -(2**63),
    2**64 - 1, 0.0, -0.0, 6.0, 2.5, -7.25, 1e300, 2.0**60, 1e-300, True, False, None, "", "s",
    [], {}, [1, 2.0, None, True, "x"], {"a": [1, 2.0, {"b": 2**53 + 1, "c": None}], "d": True},
    [[[[1.0, 2**70]]]], {"n": {"m": {"k": [{"x": -(2**53) - 3}]}}},
]


@pytest.mark.parametrize("value", EDGE_NUMBERS)
def test_a_plain_answers_numbers_in_one_pass_are_the_two_step_numbers(value: Any) -> None:
    """A plain message's data goes through protobuf's double and back to ints in one pass;
    it must give exactly what the two steps give (ints past 2**53 become doubles, whole
    doubles become ints)."""
    from podium.agents.a2a_jsonrpc import _plain_numbers, _through_double, json_numbers

    assert typed(_plain_numbers(value)) == typed(json_numbers(_through_double(value)))
    from_wire = orjson.loads(orjson.dumps({"v": value}))["v"] if not _too_big(value) else value
    assert typed(_plain_numbers(from_wire)) == typed(json_numbers(_through_double(from_wire)))


def _too_big(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_too_big(v) for v in value.values())
    if isinstance(value, list):
        return any(_too_big(v) for v in value)
    return isinstance(value, int) and not -(2**63) <= value < 2**64


@pytest.mark.parametrize("answer", [
    {"task": {"id": "t", "status": {"state": "TASK_STATE_COMPLETED"}}},
    {"message": {"parts": [{"raw": "eA==", "mediaType": "application/octet-stream"}]}},
    {"message": {"parts": [{"url": "https://x.example/f"}]}},
    {"message": {"parts": "not a list"}},
    {"message": {"role": "ROLE_ROBOT", "parts": []}},
    {"message": {"parts": [{"text": 3}]}},
    {"message": {"parts": [{"text": "a", "data": 1}]}},
])
def test_anything_but_a_plain_message_goes_the_sdks_way(answer: Any) -> None:
    from podium.agents.a2a_jsonrpc import plain_message_output

    assert plain_message_output(answer) is None


@contextlib.asynccontextmanager
async def raw_answering(body: bytes) -> AsyncIterator[str]:
    """A server with a real JSON-RPC card whose every call gets ``body`` as it is (HTTP 200)."""
    async def reply(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    def make_app(url: str) -> Starlette:
        return Starlette(routes=[*create_agent_card_routes(agent_card(url)),
                                 Route("/{path:path}", reply, methods=["POST"])])

    async with serving(make_app) as url:
        yield url


async def test_a_plain_answer_over_the_wire_is_what_the_sdk_reads() -> None:
    """Through a real server: the numbers of a plain data answer come back as the SDK's
    parse gives them, types included."""
    from podium.agents.a2a import _output_of_parts
    from podium.agents.a2a_jsonrpc import JsonRpcClient

    data = {"edge": [n for n in EDGE_NUMBERS if not _too_big(n)], "ms": 20, "x": 2.5}
    answer = {"message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"data": data}]}}
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": answer})
    async with raw_answering(body) as url:
        agent = await A2AAgent.from_url(url, id="rpc")
        try:
            got = await agent.invoke(task_for("sum", {"numbers": [1]}))
        finally:
            await agent.aclose()
    parsed = JsonRpcClient.parse_send_result(orjson.loads(body)["result"])
    assert typed(got) == typed(_output_of_parts(parsed.message.parts)[1])


def _nested(depth: int) -> bytes:
    return (b'{"jsonrpc":"2.0","id":1,"result":{"message":{"parts":[{"data":'
            + b'{"d":' * depth + b"1" + b"}" * depth + b"}]}}}")


@pytest.mark.parametrize(("body", "said"), [
    (b"not json", "A2AClientError: Invalid JSON-RPC response: not a JSON object: b'not json'"),
    (b"", "Invalid JSON-RPC response: not a JSON object: b''"),
    (b"[1, 2]", "Invalid JSON-RPC response: not a JSON object: b'[1, 2]'"),
    (b'{"jsonrpc":"2.0","id":1}', "it has neither 'result' nor 'error'"),
    (b'{"jsonrpc":"2.0","id":1,"error":"boom"}', "error is not an object: 'boom'"),
    (b'{"jsonrpc":"2.0","id":1,"result":{}}', "answered with neither a task nor a message"),
    (b'{"jsonrpc":"2.0","id":1,"result":{"neither":1}}',
     "answered with neither a task nor a message"),
    (b'{"jsonrpc":"2.0","id":1,"result":{"message":{"parts":"x"}}}',
     "ParseError: Failed to parse parts field"),
    (b'{"jsonrpc":"2.0","id":1,"result":{"message":{"parts":[{"text":3}]}}}',
     "ParseError: Failed to parse parts field: Failed to parse text field"),
    (_nested(2000), "Invalid JSON-RPC response: not a JSON object"),  # past the parser's depth
    # States that settle nothing: failed at once, not polled until the attempt's timeout.
    (b'{"jsonrpc":"2.0","id":1,"result":{"task":{"id":"t1","status":'
     b'{"state":"TASK_STATE_UNSPECIFIED"}}}}', "task 't1' is in state TASK_STATE_UNSPECIFIED"),
    (b'{"jsonrpc":"2.0","id":1,"result":{"task":{"id":"t2","status":{"state":42}}}}',
     "task 't2' is in state number 42, neither going nor settled"),
])
async def test_a_malformed_answer_is_a_clear_agent_error(body: bytes, said: str) -> None:
    """What is not a JSON-RPC answer, or not an A2A result, fails the attempt as an
    ``agent_error`` that quotes what was wrong, whichever way (ours, the SDK's) read it."""
    async with raw_answering(body) as url:
        err = await failed_call(url, "rpc")
    assert type(err) is AgentError
    assert err.error_type == "agent_error"
    assert err.message.startswith(f"A2A agent 'rpc' at {url}")
    assert said in err.message


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
    assert all(s.metadata["podium"]["run_id"] == run.run_id for s in remote.executor.seen)
    assert [s.data["numbers"] for s in remote.executor.seen] == [[3, 4, 5, 8]] * 2
