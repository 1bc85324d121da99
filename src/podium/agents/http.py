"""HTTP agents: a remote service that speaks Podium's small JSON protocol.

``POST {url}/invoke`` with the task as JSON returns ``200 {"output": ...}``;
any other answer is an error, ideally ``{"error": {"type", "message",
"retryable"}}``. ``GET {url}/health`` returns ``{"status", "load"}``.

Every failure is turned into a Podium error type so retry policies
(``retry_on: [unavailable, timeout]``) mean the same thing whether an agent
runs in-process or across the network: an agent we cannot reach is
``unavailable``, a 429 is ``rate_limited`` with the server's ``Retry-After``
(it and a 503 with ``Retry-After`` are "busy": back-pressure, not failures),
a 4xx is ``invalid_input``, a 5xx ``agent_error``, and an answer that does
not come in time is ``timeout``. A typed error body from the agent wins over
the status code, so an agent's own error types survive the trip.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import functools
import math
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import httpx
import orjson

from podium.agents.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AgentBase,
    HealthLevel,
    HealthReport,
    Task,
)
from podium.errors import (
    AgentError,
    AttemptTimeout,
    ConfigError,
    InvalidInput,
    OutputTooLarge,
    RateLimited,
    Unavailable,
)

__all__ = ["CappedTransport", "HttpAgent", "error_from_response", "parse_retry_after",
           "read_capped"]

# Connections kept beyond ``max_concurrency`` so a health check never queues
# behind a full pool of slow invocations.
_HEALTH_HEADROOM: Final = 2
# When the agent is unbounded, how many idle connections to keep warm.
_DEFAULT_KEEPALIVE: Final = 20
# How long to wait for a TCP connection when no attempt timeout bounds it: a
# dead host should read as "unavailable" soon, not after the OS gives up.
_DEFAULT_CONNECT_TIMEOUT_S: Final = 10.0
# How much of an unexpected body to quote in an error message.
_SNIPPET: Final = 200
# A health answer is a few bytes of JSON; anything much longer is not one.
_HEALTH_MAX_BYTES: Final = 64 * 1024

_ERROR_CLASSES: Final[dict[str, type[AgentError]]] = {
    "invalid_input": InvalidInput,
    "unavailable": Unavailable,
    "rate_limited": RateLimited,
    "timeout": AttemptTimeout,
}
_HEALTH_LEVELS: Final = frozenset({"healthy", "degraded", "unhealthy"})


class HttpAgent(AgentBase):
    """An ``Agent`` reached over HTTP (the agents file's ``url:`` entries).

    One ``httpx.AsyncClient`` per agent pools connections across attempts.
    It is created on first use, inside the running loop, because a client
    belongs to the loop that created it: an agent built at import time or in
    a config loader must not pin a loop it will never run on.

    ``timeout_s`` bounds each network phase of a call (the engine's step
    timeout bounds the whole attempt anyway); ``health_timeout_s`` bounds a
    health check. ``headers`` are sent on every request — the place for
    ``Authorization: Bearer ...``, which is why they never appear in logs,
    errors or ``repr``. ``verify`` is an ``ssl.SSLContext`` for a private CA,
    or ``False`` to skip TLS verification. ``transport`` replaces the network
    (``httpx.MockTransport`` in tests, a Unix socket transport...).
    Environment proxy and CA settings (``HTTPS_PROXY``, ``SSL_CERT_FILE``)
    apply, as with any HTTP client.
    """

    # The engine starts active health checks only for remote transports.
    transport = "http"

    def __init__(
        self,
        url: str,
        *,
        id: str,  # the agents file calls it id
        capabilities: frozenset[str] | set[str] | list[str] | tuple[str, ...] = (),
        max_concurrency: int | None = None,
        weight: float = 1.0,
        region: str | None = None,
        labels: dict[str, str] | None = None,
        timeout_s: float | None = None,
        health_timeout_s: float = 2.0,
        headers: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(id=id, capabilities=capabilities, max_concurrency=max_concurrency,
                         weight=weight, region=region, labels=labels,
                         max_response_bytes=max_response_bytes)
        self._url = _base_url(url, id)
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError(f"agent '{id}': timeout_s must be positive")
        self.timeout_s = timeout_s
        self.health_timeout_s = health_timeout_s
        # Credentials may live here (Authorization: Bearer ...): they are sent,
        # never logged, never put in an error message or repr.
        self._headers = dict(headers or {})
        self._verify = verify
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # --- the Agent protocol ---------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL (no trailing slash); ``/invoke`` and ``/health`` hang off it."""
        return self._url

    async def invoke(self, task: Task) -> Any:
        """Send one attempt; return the output or raise a typed ``AgentError``.

        The engine bounds the attempt with ``asyncio.timeout``; ``timeout_s``
        additionally bounds each network phase so a stalled socket reads as
        ``timeout`` even when the step has no timeout of its own.
        """
        try:
            body = orjson.dumps(task.to_dict())
        except TypeError as exc:
            raise InvalidInput(
                f"the task input cannot be sent as JSON: {exc}", retryable=False, agent_id=self._id
            ) from None
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Only what read_capped unpacks step by step, under the answer's size limit.
            "Accept-Encoding": "gzip, deflate",
            # The key is the same on every attempt, so the agent (or a proxy
            # in front of it) can drop a duplicate delivery.
            "Idempotency-Key": task.idempotency_key,
        }
        endpoint = f"{self._url}/invoke"
        client = self._get_client()
        try:
            async with client.stream("POST", endpoint, content=body, headers=headers) as response:
                content = await read_capped(response, self.max_response_bytes, self._id)
        except httpx.ConnectTimeout:
            raise Unavailable(
                f"agent '{self._id}' at {self._url} did not accept a connection in time",
                agent_id=self._id,
            ) from None
        except httpx.TimeoutException as exc:
            raise AttemptTimeout(
                f"agent '{self._id}' at {self._url} did not answer in time"
                f" ({_describe(exc)})",
                agent_id=self._id,
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # Refused, reset, or closed mid-answer: the service is down or
            # restarting, which is exactly what ``unavailable`` retries cover.
            raise Unavailable(
                f"cannot reach agent '{self._id}' at {self._url}: {_describe(exc)}",
                agent_id=self._id,
            ) from None
        except httpx.HTTPError as exc:
            raise AgentError(
                f"HTTP call to agent '{self._id}' at {endpoint} failed: {_describe(exc)}",
                agent_id=self._id,
            ) from None
        if response.is_success:
            return self._output_of(response.status_code, content, endpoint)
        raise error_from_response(response, agent_id=self._id, endpoint=endpoint, content=content)

    async def health(self) -> HealthReport:
        """Ask ``GET {url}/health``; anything but a clear answer reads as unhealthy.

        Never raises for network trouble: the health monitor wants a verdict,
        and "cannot reach it" is one.
        """
        client = self._get_client()
        try:
            async with client.stream(
                "GET", f"{self._url}/health", headers={"Accept": "application/json"},
                timeout=self.health_timeout_s,
            ) as response:
                content = await read_capped(response, _HEALTH_MAX_BYTES, self._id)
        except OutputTooLarge:
            return HealthReport("unhealthy", detail=f"health answer over {_HEALTH_MAX_BYTES} bytes")
        except httpx.TimeoutException:
            return HealthReport(
                "unhealthy", detail=f"no health answer within {self.health_timeout_s:g}s"
            )
        except httpx.HTTPError as exc:
            return HealthReport("unhealthy", detail=f"cannot reach {self._url}: {_describe(exc)}")
        data = _json_or_none(content)
        status = data.get("status") if isinstance(data, dict) else None
        if isinstance(status, str) and status in _HEALTH_LEVELS:
            assert isinstance(data, dict)
            detail = data.get("detail")
            level: HealthLevel = status  # type: ignore[assignment]
            return HealthReport(
                level,
                load=_load(data.get("load")),
                detail=detail if isinstance(detail, str) else None,
            )
        if not response.is_success:
            return HealthReport("unhealthy", detail=f"health answered HTTP {response.status_code}")
        return HealthReport(
            "unhealthy",
            detail="health answer is not {\"status\": \"healthy\"|\"degraded\"|\"unhealthy\"}: "
            + _snippet(content),
        )

    async def aclose(self) -> None:
        """Close pooled connections (idempotent; a later call opens a new client)."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> HttpAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"HttpAgent({self._id!r}, {self._url!r}, {sorted(self._capabilities)})"

    # --- internals ------------------------------------------------------------
    def _get_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is loop:
            return self._client
        # First use, or a new loop (a client cannot outlive its loop; the old
        # loop's connections died with it, so there is nothing to close here).
        if self._max_concurrency is None:
            limits = httpx.Limits(
                max_connections=None, max_keepalive_connections=_DEFAULT_KEEPALIVE
            )
        else:
            size = self._max_concurrency + _HEALTH_HEADROOM
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        connect = _DEFAULT_CONNECT_TIMEOUT_S
        if self.timeout_s is not None:
            connect = min(connect, self.timeout_s)
        # pool=None: waiting for a pooled connection is bounded by the
        # engine's attempt timeout, not failed early as a fake "timeout".
        timeout = httpx.Timeout(self.timeout_s, connect=connect, pool=None)
        self._client = httpx.AsyncClient(
            headers=self._headers,
            limits=limits,
            timeout=timeout,
            verify=_default_ssl_context() if self._verify is True else self._verify,
            transport=self._transport,
            # A redirect is not the protocol: surface it rather than re-POST.
            follow_redirects=False,
        )
        self._client_loop = loop
        return self._client

    def _output_of(self, status: int, content: bytes, endpoint: str) -> Any:
        data = _json_or_none(content)
        if not isinstance(data, dict):
            raise AgentError(
                f"agent '{self._id}' answered HTTP {status} from {endpoint} but the"
                f" body is not a JSON object (expected {{\"output\": ...}}): "
                + _snippet(content),
                agent_id=self._id,
            )
        if "output" not in data:
            raise AgentError(
                f"agent '{self._id}' answered HTTP {status} from {endpoint} without"
                f" an \"output\" key (got keys: {', '.join(sorted(map(str, data))) or 'none'})",
                agent_id=self._id,
            )
        return data["output"]


def error_from_response(
    response: httpx.Response, *, agent_id: str | None = None, endpoint: str | None = None,
    content: bytes | None = None,
) -> AgentError:
    """The Podium error for a non-2xx answer (``content``: its body, when it was streamed).

    The status code picks the default type; a protocol error body
    ``{"error": {"type", "message", "retryable"}}`` overrides type, message
    and retryable, so an agent's custom types (``quota_exceeded``...) reach
    ``retry_on`` unchanged.
    """
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        cls: type[AgentError] = RateLimited
    elif status in (502, 503):
        cls = Unavailable  # the service (or the one behind a proxy) is down
    elif status in (408, 504):
        cls = AttemptTimeout
    elif 400 <= status < 500:
        cls = InvalidInput
    else:
        cls = AgentError
    where = endpoint or str(response.request.url)
    if content is None:
        content = response.content
    message = f"HTTP {status} from {where}"
    text = _snippet(content)
    if text:
        message += f": {text}"
    error_type: str | None = None
    retryable: bool | None = None
    data = _json_or_none(content)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        body_type = err.get("type")
        if isinstance(body_type, str) and body_type:
            error_type = body_type
            cls = _ERROR_CLASSES.get(body_type, AgentError)
        body_message = err.get("message")
        if isinstance(body_message, str) and body_message:
            message = body_message
        body_retryable = err.get("retryable")
        if isinstance(body_retryable, bool):
            retryable = body_retryable
    elif isinstance(err, str) and err:
        message = f"HTTP {status} from {where}: {err}"
    # At capacity, not failing: a 429 (whatever type its body names), or a 503 that
    # says when to come back. The engine treats these as back-pressure.
    busy = status == 429 or (status == 503 and retry_after is not None)
    return cls(
        message,
        type=error_type if cls is AgentError else None,
        retryable=retryable,
        retry_after_s=retry_after,
        busy=busy,
        agent_id=agent_id,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


# --- bounded answers -----------------------------------------------------------
async def read_capped(response: httpx.Response, limit: int, agent_id: str) -> bytes:
    """The whole body, decompressed, refusing more than ``limit`` bytes as it reads.

    Decompressed here, in steps of at most what is left of ``limit``: a gzip bomb
    (1 MB that unpacks into 1 GiB) stops at ``limit``, and never more than that is
    held in memory (httpx's own decoder unpacks a whole 64 KiB read at once: ~64 MB).
    """
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        unpack = None
    elif encoding in ("gzip", "x-gzip"):
        unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        unpack = zlib.decompressobj()
    else:  # we ask for gzip or deflate only (see invoke)
        raise AgentError(f"agent '{agent_id}' answered in an encoding Podium did not ask for:"
                         f" {encoding[:40]!r}", agent_id=agent_id)
    declared = response.headers.get("content-length")
    if unpack is None and declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(agent_id, limit, f"it announced {int(declared)} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for raw in response.aiter_raw():
            data = raw
            while data:
                piece = data if unpack is None else unpack.decompress(data, limit - size + 1)
                size += len(piece)
                if size > limit:
                    raise _too_large(agent_id, limit, f"more than {limit} bytes arrived")
                chunks.append(piece)
                data = b"" if unpack is None else unpack.unconsumed_tail
        if unpack is not None:
            chunks.append(unpack.flush())
    except zlib.error as exc:
        raise AgentError(f"agent '{agent_id}' sent a damaged {encoding} body: {exc}",
                         agent_id=agent_id) from None
    return b"".join(chunks)


def _too_large(agent_id: str, limit: int, how: str) -> OutputTooLarge:
    return OutputTooLarge(
        f"agent '{agent_id}' answered more than its max_response_bytes ({limit}): {how}"
        " (fix: make the agent answer less, e.g. a reference to the data, or raise"
        " max_response_bytes in the agents file)", agent_id=agent_id)


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int, agent_id: str) -> None:
        self._inner, self._limit, self._agent_id = inner, limit, agent_id

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                raise _too_large(self._agent_id, self._limit, f"more than {self._limit} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CappedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose answers may be at most ``limit`` bytes.

    For clients whose reading is not ours (the A2A SDK reads its answers itself):
    it asks for uncompressed answers, so the bytes it counts are the bytes that
    will be decoded, and fails the read past ``limit`` with ``OutputTooLarge``.
    """

    def __init__(self, limit: int, agent_id: str) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._limit, self._agent_id = limit, agent_id

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "identity"
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._limit, self._agent_id)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- helpers -----------------------------------------------------------------
@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """One CA bundle load for every agent: it costs tens of ms per client otherwise."""
    return httpx.create_ssl_context()


def _base_url(url: str, agent_id: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"agent '{agent_id}': {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"agent '{agent_id}': {url!r} is not an http(s) URL"
            " (fix: write e.g. url: http://127.0.0.1:8101)"
        )
    if parsed.query or parsed.fragment:
        raise ConfigError(
            f"agent '{agent_id}': {url!r} has a query or fragment"
            " (fix: give the base URL; /invoke and /health are added to it)"
        )
    return url.rstrip("/")


def _json_or_none(content: bytes) -> Any:
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _load(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))


def _snippet(content: bytes) -> str:
    text = content.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "…"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
