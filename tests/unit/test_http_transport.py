"""The transport seam under ``HttpAgent``: what a transport's failures and answers become.

``MockTransport`` stands in for the network where a real one cannot show the
case on demand (a connect timeout, a stall past the read timeout, a gzip
answer cut into chosen pieces); the real exchanges are in
tests/integration/test_http_agents.py and test_agent_answers.py.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from podium import AgentError, AttemptTimeout, Task, Unavailable
from podium.agents.http import HttpAgent, MockResponse, MockTransport
from podium.agents.transport import (
    ConnectTimeout,
    NetworkError,
    Request,
    ResponseTimeout,
    TransportError,
)
from podium.errors import OutputTooLarge

TASK = Task("run-1", "collect", 2, "run-1:collect", "echo", {"n": 1})


def agent_with(handler: Any, **kwargs: Any) -> HttpAgent:
    return HttpAgent("http://agent.test:8101/", id="remote", capabilities=["echo"],
                     transport=MockTransport(handler), **kwargs)


async def test_a_request_carries_the_task_its_key_and_the_configured_headers() -> None:
    transport = MockTransport(lambda r: MockResponse(200, body=b'{"output": 7}'))
    agent = HttpAgent("http://agent.test:8101/", id="remote", capabilities=["echo"],
                      transport=transport,
                      headers={"Authorization": "Bearer s3cret", "content-type": "text/plain"})
    assert await agent.invoke(TASK) == 7
    [sent] = transport.requests
    assert (sent.method, sent.url) == ("POST", "http://agent.test:8101/invoke")
    assert sent.headers["Idempotency-Key"] == "run-1:collect"
    assert sent.headers["Authorization"] == "Bearer s3cret"
    # The protocol's own headers win over a configured one of the same name.
    assert sent.headers["Content-Type"] == "application/json"
    assert "content-type" not in sent.headers
    assert sent.headers["Accept-Encoding"] == "gzip, deflate"
    assert sent.body == b'{"run_id":"run-1","step_id":"collect","attempt":2,' \
                        b'"idempotency_key":"run-1:collect","capability":"echo","input":{"n":1}}'


@pytest.mark.parametrize(
    ("failure", "cls", "said"),
    [
        (ConnectTimeout("no SYN-ACK"), Unavailable, "did not accept a connection in time"),
        (ResponseTimeout("SocketTimeoutError"), AttemptTimeout, "did not answer in time"),
        (NetworkError("ServerDisconnectedError"), Unavailable, "cannot reach agent 'remote'"),
        (TransportError("InvalidURL"), AgentError, "HTTP call to agent 'remote'"),
    ],
)
async def test_a_transport_failure_becomes_its_podium_type(
    failure: TransportError, cls: type[AgentError], said: str
) -> None:
    def handler(request: Request) -> MockResponse:
        raise failure

    with pytest.raises(AgentError) as info:
        await agent_with(handler).invoke(TASK)
    assert type(info.value) is cls
    assert said in info.value.message
    assert info.value.agent_id == "remote"


async def test_a_health_check_reads_a_transport_failure_as_unhealthy() -> None:
    def stalled(request: Request) -> MockResponse:
        raise ResponseTimeout("total timeout")

    def refused(request: Request) -> MockResponse:
        raise NetworkError("ClientConnectorError: refused")

    transport = MockTransport(stalled)
    agent = HttpAgent("http://agent.test:8101", id="remote", transport=transport,
                      health_timeout_s=1.5)
    report = await agent.health()
    assert (report.status, report.detail) == ("unhealthy", "no health answer within 1.5s")
    [sent] = transport.requests
    assert (sent.method, sent.url) == ("GET", "http://agent.test:8101/health")
    assert sent.timeouts is not None
    assert sent.timeouts.total_s == 1.5  # the whole check, bounded on its own
    report = await agent_with(refused).health()
    assert report.status == "unhealthy"
    assert report.detail is not None
    assert "refused" in report.detail


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


async def test_gzip_and_deflate_answers_are_unpacked_in_pieces() -> None:
    body = b'{"output": "' + b"z" * 300_000 + b'"}'
    gz = MockResponse(200, {"Content-Encoding": "gzip"}, _pieces(gzip.compress(body), 1000))
    df = MockResponse(200, {"Content-Encoding": "deflate"}, [zlib.compress(body)])
    assert await agent_with(lambda r: gz).invoke(TASK) == "z" * 300_000
    assert await agent_with(lambda r: df).invoke(TASK) == "z" * 300_000


async def test_a_compressed_answer_over_the_limit_stops_at_the_limit() -> None:
    """A bomb in small pieces: OutputTooLarge, never the whole of it unpacked."""
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024))
    seen: list[int] = []

    def pieces() -> Any:
        for piece in _pieces(bomb, 4096):
            seen.append(len(piece))
            yield piece

    answer = MockResponse(200, {"Content-Encoding": "gzip"}, pieces())
    with pytest.raises(OutputTooLarge) as info:
        await agent_with(lambda r: answer, max_response_bytes=1024 * 1024).invoke(TASK)
    assert "max_response_bytes (1048576)" in info.value.message
    assert sum(seen) < len(bomb)  # stopped reading once past the limit


async def test_an_encoding_that_was_not_asked_for_is_refused() -> None:
    answer = MockResponse(200, {"Content-Encoding": "br"}, b"...")
    with pytest.raises(AgentError, match="encoding Podium did not ask for: 'br'"):
        await agent_with(lambda r: answer).invoke(TASK)


async def test_an_announced_length_over_the_limit_is_refused_before_reading() -> None:
    def never() -> Any:
        raise AssertionError("the body was read")
        yield b""  # pragma: no cover

    answer = MockResponse(200, {"Content-Length": str(10 * 1024 * 1024)}, never())
    with pytest.raises(OutputTooLarge, match="it announced 10485760 bytes"):
        await agent_with(lambda r: answer, max_response_bytes=1024).invoke(TASK)


async def test_a_busy_answer_through_the_seam_keeps_retry_after() -> None:
    answer = MockResponse(503, {"Retry-After": "3"}, b"maintenance")
    with pytest.raises(Unavailable) as info:
        await agent_with(lambda r: answer).invoke(TASK)
    assert (info.value.busy, info.value.retry_after_s) == (True, 3)
    assert info.value.message == "HTTP 503 from http://agent.test:8101/invoke: maintenance"
