"""HTTP agents against real servers on 127.0.0.1: the protocol, both sides.

In-process uvicorn servers (on the test's loop) cover the error mapping and
health; subprocesses cover ``serve()`` and ``podium agent serve`` the way a
user starts them. Every server and client is closed, so ResourceWarnings
(errors here) would show a leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from podium import (
    AgentError,
    AgentRegistry,
    AttemptTimeout,
    Engine,
    EngineConfig,
    InvalidInput,
    MemoryStore,
    RateLimited,
    Task,
    Unavailable,
)
from podium.agents.base import HealthReport
from podium.agents.http import HttpAgent, parse_retry_after
from podium.agents.serve import make_app
from podium.definition import workflow_from_dict

KEY = "run-1:collect"


def task(attempt: int = 1, input: Any = None) -> Task:
    return Task("run-1", "collect", attempt, KEY, "echo", {"n": 1} if input is None else input)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a fresh 127.0.0.1 port in this loop; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="off", ws="none", access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


@contextlib.asynccontextmanager
async def agent_for(url: str, **kwargs: Any) -> AsyncIterator[HttpAgent]:
    agent = HttpAgent(url, id=kwargs.pop("id", "remote"), capabilities=["echo"], **kwargs)
    try:
        yield agent
    finally:
        await agent.aclose()


def raw_app(handler: Callable[[Request], Any], health: Callable[[Request], Any] | None = None
            ) -> Starlette:
    """A hand-made server, to answer exactly what a test needs (any status, any body)."""

    async def invoke(request: Request) -> Response:
        result = handler(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, Response)
        return result

    async def health_route(request: Request) -> Response:
        assert health is not None
        result = health(request)
        assert isinstance(result, Response)
        return result

    routes = [Route("/invoke", invoke, methods=["POST"])]
    if health is not None:
        routes.append(Route("/health", health_route, methods=["GET"]))
    return Starlette(routes=routes)


# --- the happy path ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_invoke_round_trips_every_task_field(kind: str) -> None:
    async def async_echo(t: Task) -> Any:
        return {"task": t.to_dict()}

    def sync_echo(t: Task) -> Any:
        return {"task": t.to_dict()}

    func = async_echo if kind == "async" else sync_echo
    payload = {"nested": [1, 2.5, "three", None, True, {"k": "v"}], "unicode": "héllo ✓"}
    async with running(make_app(func, capability="echo")) as url, agent_for(url) as agent:
        out = await agent.invoke(Task("run-9", "step-x", 4, "run-9:step-x", "echo", payload))
    assert out == {"task": {"run_id": "run-9", "step_id": "step-x", "attempt": 4,
                            "idempotency_key": "run-9:step-x", "capability": "echo",
                            "input": payload}}


async def test_any_json_value_is_an_output_including_null() -> None:
    outputs = iter([None, 0, "text", [1, 2]])
    async with running(make_app(lambda t: next(outputs), capability="echo")) as url, \
            agent_for(url) as agent:
        assert [await agent.invoke(task()) for _ in range(4)] == [None, 0, "text", [1, 2]]


async def test_headers_idempotency_key_and_bearer_token_are_sent_and_never_shown() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(request: Request) -> Response:
        seen.append({"headers": dict(request.headers), "body": await request.json()})
        return JSONResponse({"output": "ok"})

    async with running(raw_app(handler)) as url, \
            agent_for(url + "/", headers={"Authorization": "Bearer s3cret"}) as agent:
        assert await agent.invoke(task()) == "ok"
        assert "s3cret" not in repr(agent)
        assert agent.url == url
    headers = seen[0]["headers"]
    assert headers["idempotency-key"] == KEY
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["content-type"] == "application/json"
    assert seen[0]["body"] == task().to_dict()


async def test_the_same_idempotency_key_is_sent_on_every_attempt_through_the_engine() -> None:
    """Two 503s, then success: three deliveries, one key, attempts 1, 2, 3."""
    seen: list[tuple[str, str, int]] = []

    async def handler(request: Request) -> Response:
        body = await request.json()
        seen.append((request.headers["idempotency-key"], body["idempotency_key"], body["attempt"]))
        if len(seen) < 3:
            return Response("try later", status_code=503)
        return JSONResponse({"output": {"attempts": len(seen)}})

    wf = workflow_from_dict({"name": "idem", "steps": [{
        "id": "collect", "agent": "echo",
        "retry": {"max_attempts": 3, "initial_delay": 0, "retry_on": ["unavailable"]}}]})
    async with running(raw_app(handler)) as url, agent_for(url) as agent, \
            Engine(EngineConfig(registry=AgentRegistry([agent]), store=MemoryStore())) as engine:
        run = await engine.run(wf, {})
    assert run.status == "succeeded", run.error
    assert run.steps["collect"].output == {"attempts": 3}
    assert run.steps["collect"].attempts == 3
    keys = {k for k, _, _ in seen} | {k for _, k, _ in seen}
    assert len(keys) == 1
    assert next(iter(keys)).startswith(run.run_id)
    assert [a for _, _, a in seen] == [1, 2, 3]


# --- error mapping: what the status code and body become ---------------------


async def test_connection_refused_on_a_closed_port_is_unavailable() -> None:
    async with agent_for(f"http://127.0.0.1:{free_port()}") as agent:
        with pytest.raises(Unavailable) as info:
            await agent.invoke(task())
    assert info.value.error_type == "unavailable"
    assert info.value.agent_id == "remote"
    assert "cannot reach agent 'remote'" in info.value.message


def _reply(status: int, body: Any = None, headers: dict[str, str] | None = None,
           text: str | None = None) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        if text is not None:
            return Response(text, status_code=status, headers=headers)
        if body is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("reply", "cls", "error_type", "in_message"),
    [
        (_reply(503), Unavailable, "unavailable", "HTTP 503"),
        (_reply(502, text="bad gateway"), Unavailable, "unavailable", "bad gateway"),
        (_reply(400, text="no such field"), InvalidInput, "invalid_input", "no such field"),
        (_reply(404, text="Not Found"), InvalidInput, "invalid_input", "HTTP 404"),
        (_reply(422, {"detail": "x"}), InvalidInput, "invalid_input", "HTTP 422"),
        (_reply(500, text="Internal Server Error"), AgentError, "agent_error", "HTTP 500"),
        (_reply(504), AttemptTimeout, "timeout", "HTTP 504"),
    ],
)
async def test_status_codes_map_to_podium_error_types(
    reply: Callable[[Request], Response], cls: type[AgentError], error_type: str, in_message: str
) -> None:
    async with running(raw_app(reply)) as url, agent_for(url) as agent:
        with pytest.raises(AgentError) as info:
            await agent.invoke(task())
    assert type(info.value) is cls
    assert info.value.error_type == error_type
    assert in_message in info.value.message
    assert info.value.retryable is None  # the policy decides
    assert info.value.agent_id == "remote"


async def test_429_with_retry_after_seconds_is_rate_limited_with_retry_after() -> None:
    reply = _reply(429, {"error": {"type": "rate_limited", "message": "slow down",
                                   "retryable": True}}, headers={"Retry-After": "2"})
    async with running(raw_app(reply)) as url, agent_for(url) as agent:
        with pytest.raises(RateLimited) as info:
            await agent.invoke(task())
    assert info.value.retry_after_s == 2
    assert info.value.error_type == "rate_limited"
    assert info.value.message == "slow down"


async def test_429_with_an_http_date_and_without_body_is_rate_limited() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    async with running(raw_app(_reply(429, headers={"Retry-After": when}))) as url, \
            agent_for(url) as agent:
        with pytest.raises(RateLimited) as info:
            await agent.invoke(task())
    assert info.value.retry_after_s is not None
    assert 25 <= info.value.retry_after_s <= 31


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("2") == 2
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now=now) == 10
    assert parse_retry_after(email.utils.formatdate(now - 10, usegmt=True), now=now) == 0
    for bad in (None, "", "soon", "-3", "nan", "inf"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (500, {"type": "quota_exceeded", "message": "monthly quota used", "retryable": False},
         AgentError),
        (400, {"type": "schema_mismatch", "message": "rows must be a list", "retryable": False},
         AgentError),
        (500, {"type": "unavailable", "message": "db down", "retryable": True}, Unavailable),
        (418, {"type": "timeout", "message": "upstream slow", "retryable": True},
         AttemptTimeout),
        (503, {"type": "unavailable", "message": "maintenance", "retryable": False},
         Unavailable),
    ],
)
async def test_a_typed_error_body_wins_over_the_status_code(
    status: int, error: dict[str, Any], cls: type[AgentError]
) -> None:
    async with running(raw_app(_reply(status, {"error": error}))) as url, \
            agent_for(url) as agent:
        with pytest.raises(AgentError) as info:
            await agent.invoke(task())
    assert type(info.value) is cls
    assert info.value.error_type == error["type"]
    assert info.value.message == error["message"]
    assert info.value.retryable is error["retryable"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_reply(200, text="<html>hello</html>"), "not a JSON object"),
        (_reply(200, [1, 2]), "not a JSON object"),
        (_reply(200, {"result": 1}), 'without an "output" key (got keys: result)'),
        (_reply(200), "not a JSON object"),
    ],
)
async def test_a_200_that_is_not_the_protocol_is_an_agent_error(
    reply: Callable[[Request], Response], expected: str
) -> None:
    async with running(raw_app(reply)) as url, agent_for(url) as agent:
        with pytest.raises(AgentError) as info:
            await agent.invoke(task())
    assert type(info.value) is AgentError
    assert info.value.error_type == "agent_error"
    assert expected in info.value.message


# --- error mapping through `make_app`: the server side of the protocol ------


class Boom(Exception):
    pass


def _raiser(exc: BaseException) -> Callable[[Task], Any]:
    def func(t: Task) -> Any:
        raise exc

    return func


@pytest.mark.parametrize(
    ("exc", "status", "cls", "error_type", "retryable"),
    [
        (InvalidInput("rows must be a list"), 400, InvalidInput, "invalid_input", False),
        (Unavailable("database down"), 503, Unavailable, "unavailable", True),
        (AttemptTimeout("upstream slow"), 504, AttemptTimeout, "timeout", True),
        (AgentError("monthly quota used", type="quota_exceeded", retryable=False), 500,
         AgentError, "quota_exceeded", False),
        (AgentError("plain"), 500, AgentError, "agent_error", True),
        (Boom("kaput"), 500, AgentError, "agent_error", True),
        (TimeoutError("model did not answer"), 504, AttemptTimeout, "timeout", True),
    ],
)
async def test_errors_raised_by_a_served_function_round_trip(
    exc: BaseException, status: int, cls: type[AgentError], error_type: str, retryable: bool
) -> None:
    async with running(make_app(_raiser(exc), capability="echo")) as url:
        async with httpx.AsyncClient() as client:
            raw = await client.post(f"{url}/invoke", json=task().to_dict())
        async with agent_for(url) as agent:
            with pytest.raises(AgentError) as info:
                await agent.invoke(task())
    assert raw.status_code == status
    body = raw.json()
    assert set(body["error"]) == {"type", "message", "retryable"}
    assert "Traceback" not in raw.text
    assert type(info.value) is cls
    assert info.value.error_type == error_type
    assert info.value.retryable is retryable
    assert str(exc) in info.value.message


async def test_rate_limited_from_a_served_function_carries_retry_after() -> None:
    func = _raiser(RateLimited("slow down", retry_after_s=1.2))
    async with running(make_app(func, capability="echo")) as url, agent_for(url) as agent:
        with pytest.raises(RateLimited) as info:
            await agent.invoke(task())
    assert info.value.retry_after_s == 2  # whole seconds, rounded up
    assert info.value.message == "slow down"


async def test_an_invalid_request_body_is_400_invalid_input() -> None:
    app = make_app(lambda t: "never", capability="echo")
    async with running(app) as url, httpx.AsyncClient() as client:
        not_json = await client.post(f"{url}/invoke", content=b"{nope",
                                     headers={"Content-Type": "application/json"})
        not_task = await client.post(f"{url}/invoke", json={"run_id": 1, "attempt": 0})
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_input"
    assert not_json.json()["error"]["retryable"] is False
    assert not_task.status_code == 400
    message = not_task.json()["error"]["message"]
    assert "missing step_id" in message
    assert "run_id must be a string" in message
    assert "attempt must be an integer >= 1" in message


async def test_an_output_that_is_not_json_is_a_non_retryable_agent_error() -> None:
    async with running(make_app(lambda t: {1, 2}, capability="echo")) as url, \
            agent_for(url) as agent:
        with pytest.raises(AgentError) as info:
            await agent.invoke(task())
    assert info.value.error_type == "agent_error"
    assert "output is not JSON" in info.value.message
    assert info.value.retryable is False


# --- timeouts -------------------------------------------------------------------


async def test_a_slow_answer_surfaces_as_attempt_timeout() -> None:
    release = asyncio.Event()

    async def slow(t: Task) -> Any:
        await asyncio.wait_for(release.wait(), 10)
        return "late"

    async with running(make_app(slow, capability="echo")) as url:
        try:
            async with agent_for(url, timeout_s=0.2) as agent:
                t0 = time.monotonic()
                with pytest.raises(AttemptTimeout) as info:
                    await agent.invoke(task())
                assert time.monotonic() - t0 < 2
        finally:
            release.set()
    assert info.value.error_type == "timeout"
    assert "did not answer in time" in info.value.message


async def test_the_engines_step_timeout_cuts_an_http_call() -> None:
    release = asyncio.Event()

    async def slow(t: Task) -> Any:
        await asyncio.wait_for(release.wait(), 10)
        return "late"

    wf = workflow_from_dict({"name": "slow", "steps": [
        {"id": "collect", "agent": "echo", "timeout": "200ms"}]})
    async with running(make_app(slow, capability="echo")) as url:
        try:
            async with agent_for(url) as agent, Engine(EngineConfig(
                    registry=AgentRegistry([agent]), store=MemoryStore())) as engine:
                run = await engine.run(wf, {})
        finally:
            release.set()
    assert run.status == "failed"
    assert run.steps["collect"].error is not None
    assert run.steps["collect"].error.type == "timeout"


# --- health ---------------------------------------------------------------------


async def test_health_is_healthy_with_load_from_calls_in_flight() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(t: Task) -> Any:
        started.set()
        await asyncio.wait_for(release.wait(), 10)
        return t.attempt

    async with running(make_app(slow, capability="echo", max_concurrency=2)) as url, \
            agent_for(url, max_concurrency=2) as agent:
        assert await agent.health() == HealthReport("healthy", load=0.0)
        call = asyncio.create_task(agent.invoke(task()))
        await asyncio.wait_for(started.wait(), 5)
        assert await agent.health() == HealthReport("healthy", load=0.5)
        release.set()
        assert await call == 1
        assert (await agent.health()).load == 0.0


async def test_a_served_agent_at_capacity_answers_rate_limited() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(t: Task) -> Any:
        started.set()
        await asyncio.wait_for(release.wait(), 10)
        return "done"

    async with running(make_app(slow, capability="echo", max_concurrency=1)) as url, \
            agent_for(url) as agent:
        first = asyncio.create_task(agent.invoke(task()))
        await asyncio.wait_for(started.wait(), 5)
        with pytest.raises(RateLimited) as info:
            await agent.invoke(task(attempt=2))
        assert info.value.retry_after_s == 1
        assert (await agent.health()).load == 1.0
        release.set()
        assert await first == "done"


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        (lambda: "degraded", HealthReport("degraded", load=0.0)),
        (lambda: HealthReport("degraded", load=0.7, detail="gpu busy"),
         HealthReport("degraded", load=0.7, detail="gpu busy")),
        (lambda: {"status": "unhealthy", "detail": "db down"},
         HealthReport("unhealthy", load=0.0, detail="db down")),
        (lambda: "sideways", HealthReport(
            "unhealthy", load=0.0,
            detail="health check returned 'sideways', not healthy/degraded/unhealthy")),
    ],
)
async def test_a_user_health_function_decides_the_status(
    health: Callable[[], Any], expected: HealthReport
) -> None:
    async with running(make_app(lambda t: 1, capability="echo", health=health)) as url, \
            agent_for(url) as agent:
        assert await agent.health() == expected


async def test_an_async_health_function_that_raises_reads_as_unhealthy() -> None:
    async def health() -> Any:
        raise RuntimeError("cannot reach the model")

    async with running(make_app(lambda t: 1, capability="echo", health=health)) as url, \
            agent_for(url) as agent:
        report = await agent.health()
    assert report.status == "unhealthy"
    assert report.detail is not None
    assert "cannot reach the model" in report.detail


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_reply(200, {"status": "degraded", "load": 0.9}), HealthReport("degraded", load=0.9)),
        (_reply(200, {"status": "healthy", "load": 7}), HealthReport("healthy", load=1.0)),
        (_reply(200, {"status": "healthy"}), HealthReport("healthy")),
        (_reply(503, {"status": "unhealthy", "load": 1.0}), HealthReport("unhealthy", load=1.0)),
        (_reply(500, text="oops"), HealthReport("unhealthy", detail="health answered HTTP 500")),
    ],
)
async def test_health_reads_any_server_answer(
    reply: Callable[[Request], Response], expected: HealthReport
) -> None:
    async with running(raw_app(_reply(200, {"output": 1}), health=reply)) as url, \
            agent_for(url) as agent:
        assert await agent.health() == expected


async def test_a_health_answer_that_is_not_the_protocol_is_unhealthy() -> None:
    async with running(raw_app(_reply(200, {"output": 1}),
                               health=_reply(200, text="OK"))) as url, agent_for(url) as agent:
        report = await agent.health()
    assert report.status == "unhealthy"
    assert report.detail is not None
    assert "OK" in report.detail


async def test_an_unreachable_agent_is_unhealthy_not_an_exception() -> None:
    async with agent_for(f"http://127.0.0.1:{free_port()}") as agent:
        report = await agent.health()
    assert report.status == "unhealthy"
    assert report.detail is not None
    assert "cannot reach" in report.detail


# --- the client's life cycle ----------------------------------------------------


def test_an_agent_is_built_without_a_running_loop_and_used_in_several() -> None:
    agent = HttpAgent("http://127.0.0.1:1", id="lazy", capabilities=["echo"])

    async def check() -> str:
        report = await agent.health()
        await agent.aclose()
        await agent.aclose()  # idempotent
        return report.status

    assert asyncio.run(check()) == "unhealthy"
    assert asyncio.run(check()) == "unhealthy"


def test_an_agent_used_under_two_loops_without_closing_makes_a_new_pool_quietly() -> None:
    """Connections of a finished loop are dropped without a ResourceWarning (errors here),
    and the agent works on the next loop."""
    port = free_port()
    agent = HttpAgent(f"http://127.0.0.1:{port}", id="lazy", capabilities=["echo"])

    async def call_once() -> Any:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # the same address on each loop
        server = uvicorn.Server(uvicorn.Config(make_app(lambda t: t.attempt, capability="echo"),
                                               log_config=None, lifespan="off", ws="none"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            return await agent.invoke(task(attempt=7))
        finally:
            server.should_exit = True
            await serving
            sock.close()

    assert asyncio.run(call_once()) == 7
    assert asyncio.run(call_once()) == 7  # no aclose() in between
    asyncio.run(agent.aclose())


@pytest.mark.parametrize("url", ["127.0.0.1:8101", "ftp://host", "http://h:1/?a=1", "http://"])
def test_a_bad_url_is_a_config_error(url: str) -> None:
    from podium.errors import ConfigError

    with pytest.raises(ConfigError, match="lazy"):
        HttpAgent(url, id="lazy", capabilities=["echo"])


async def test_many_concurrent_calls_share_the_pool() -> None:
    async def echo(t: Task) -> Any:
        await asyncio.sleep(0.01)
        return t.attempt

    async with running(make_app(echo, capability="echo")) as url, \
            agent_for(url, max_concurrency=4) as agent:
        results = await asyncio.gather(*(agent.invoke(task(attempt=i)) for i in range(1, 41)))
    assert results == list(range(1, 41))


# --- `serve()` and `podium agent serve`, as users start them ----------------------

AGENTS_MODULE = '''
from podium.errors import InvalidInput


async def collect(task):
    if not isinstance(task.input, dict) or "source" not in task.input:
        raise InvalidInput("input needs a source")
    return {"rows": [1, 2, 3], "source": task.input["source"], "run": task.run_id}


def total(task):
    return {"total": sum(task.input["rows"]), "step": task.step_id,
            "key": task.idempotency_key, "capability": task.capability}
'''


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    (tmp_path / "http_e2e_agents.py").write_text(textwrap.dedent(AGENTS_MODULE))
    return tmp_path


@contextlib.contextmanager
def server_process(args: list[str], cwd: Path, port: int) -> Iterator[str]:
    """Start a server subprocess, wait for /health, stop it with SIGTERM."""
    log_path = cwd / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not come up:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # A graceful stop: uvicorn finishes, then re-raises the SIGTERM it captured.
    assert proc.returncode in (0, -15), log_path.read_text()
    assert "Finished server process" in log_path.read_text()


def serve_args(target: str, capability: str, port: int, **more: Any) -> list[str]:
    extra = "".join(f", {k}={v!r}" for k, v in more.items())
    return ["-c", "from podium.agents.serve import serve; "
                  f"serve({target!r}, capability={capability!r}, port={port}{extra})"]


async def test_end_to_end_a_workflow_runs_through_http_agents_served_by_serve(
    agents_dir: Path,
) -> None:
    p1, p2 = free_port(), free_port()
    with server_process(serve_args("http_e2e_agents:collect", "data-collection", p1),
                        agents_dir, p1) as url1, \
            server_process(serve_args("http_e2e_agents:total", "data-processing", p2,
                                      max_concurrency=4), agents_dir, p2) as url2:
        registry = AgentRegistry([
            HttpAgent(url1, id="collector", capabilities=["data-collection"], timeout_s=10),
            HttpAgent(url2, id="processor", capabilities=["data-processing"],
                      max_concurrency=4, headers={"Authorization": "Bearer t0ken"}),
        ])
        wf = workflow_from_dict({
            "name": "http-e2e",
            "steps": [
                {"id": "collect", "agent": "data-collection",
                 "input": {"source": "${{ input.source }}"}},
                {"id": "process", "agent": "data-processing", "depends_on": ["collect"],
                 "input": {"rows": "${{ steps.collect.output.rows }}"}},
            ],
            "output": {"sum": "${{ steps.process.output.total }}",
                       "from": "${{ steps.collect.output.source }}",
                       "detail": "${{ steps.process.output }}"},
        })
        try:
            async with Engine(EngineConfig(registry=registry, store=MemoryStore())) as engine:
                run = await engine.run(wf, {"source": "sales.csv"})
        finally:
            await registry.aclose()
    assert run.status == "succeeded", run.error
    assert run.steps["collect"].output == {"rows": [1, 2, 3], "source": "sales.csv",
                                           "run": run.run_id}
    assert run.steps["collect"].agent_id == "collector"
    assert run.steps["process"].agent_id == "processor"
    assert run.output["sum"] == 6
    assert run.output["from"] == "sales.csv"
    assert run.output["detail"]["step"] == "process"
    assert run.output["detail"]["capability"] == "data-processing"
    assert run.output["detail"]["key"].startswith(run.run_id)


async def test_an_invalid_input_raised_remotely_fails_the_run_with_its_type(
    agents_dir: Path,
) -> None:
    port = free_port()
    with server_process(serve_args("http_e2e_agents:collect", "data-collection", port),
                        agents_dir, port) as url:
        agent = HttpAgent(url, id="collector", capabilities=["data-collection"])
        wf = workflow_from_dict({"name": "http-bad", "steps": [
            {"id": "collect", "agent": "data-collection", "input": {"nothing": 1},
             "retry": {"max_attempts": 3, "initial_delay": 0}}]})
        try:
            async with Engine(EngineConfig(registry=AgentRegistry([agent]),
                                           store=MemoryStore())) as engine:
                run = await engine.run(wf, {})
        finally:
            await agent.aclose()
    assert run.status == "failed"
    err = run.steps["collect"].error
    assert err is not None
    assert err.type == "invalid_input"
    assert err.message == "input needs a source"
    assert run.steps["collect"].attempts == 1  # retryable: false came back over the wire


CLI = ("import sys, typer; from podium.cli.agent_cmd import agent_app; "
       "app = typer.Typer(); app.add_typer(agent_app, name='agent'); "
       "sys.argv[0] = 'podium'; app()")


async def test_podium_agent_serve_command_serves_a_function(agents_dir: Path) -> None:
    port = free_port()
    args = ["-c", CLI, "agent", "serve", "http_e2e_agents:total", "--capability", "sum",
            "--port", str(port), "--max-concurrency", "3"]
    with server_process(args, agents_dir, port) as url:
        async with agent_for(url, id="sum") as agent:
            out = await agent.invoke(Task("r", "s", 1, "r:s", "sum", {"rows": [4, 5]}))
            report = await agent.health()
    assert out == {"total": 9, "step": "s", "key": "r:s", "capability": "sum"}
    assert report == HealthReport("healthy", load=0.0)
    log = (agents_dir / f"server-{port}.log").read_text()
    assert "serving http_e2e_agents:total as capability 'sum'" in log
    assert f"http://127.0.0.1:{port}" in log


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30, check=False)


def test_podium_agent_serve_reports_a_bad_target_with_exit_2(agents_dir: Path) -> None:
    port = str(free_port())
    for target, expected in [
        ("http_e2e_agents:nope", "has no attribute 'nope'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("just_a_module", "is not MODULE:FUNCTION"),
    ]:
        result = _cli(["agent", "serve", target, "--capability", "x", "--port", port], agents_dir)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_podium_agent_serve_reports_a_taken_port_with_exit_2(agents_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = _cli(["agent", "serve", "http_e2e_agents:total", "--capability", "x",
                       "--port", port], agents_dir)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_podium_agent_serve_requires_capability_and_port(agents_dir: Path) -> None:
    result = _cli(["agent", "serve", "http_e2e_agents:total"], agents_dir)
    assert result.returncode == 2
    assert "--capability" in result.stderr or "--port" in result.stderr
