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

import datetime
import email.utils
import math
import ssl
import time
import zlib
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from podium.agents.base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AgentBase,
    HealthReport,
    Task,
    trace_headers,
)
from podium.agents.transport import (
    AiohttpTransport,
    ConnectTimeout,
    MockResponse,
    MockTransport,
    NetworkError,
    Response,
    ResponseTimeout,
    Timeouts,
    Transport,
    TransportError,
    default_ssl,
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

__all__ = ["HttpAgent", "MockResponse", "MockTransport", "Transport", "error_from_response",
           "parse_retry_after", "read_capped", "too_large"]

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
# Headers the protocol sets; a configured header of the same name gives way.
_PROTOCOL_HEADERS: Final = frozenset({"content-type", "accept", "accept-encoding",
                                      "idempotency-key", "content-length"})


class HttpAgent(AgentBase):
    """An ``Agent`` reached over HTTP (the agents file's ``url:`` entries).

    One connection pool per agent (``AiohttpTransport``) serves every attempt
    and health check; it is made on first use, inside the running loop,
    because a pool belongs to the loop that made it: an agent built at import
    time or in a config loader must not pin a loop it will never run on.

    ``timeout_s`` bounds each network phase of a call (connecting, then each
    wait for the answer's next bytes; the engine's step timeout bounds the
    whole attempt anyway); ``health_timeout_s`` bounds a whole health check.
    ``headers`` are sent on every request — the place for ``Authorization:
    Bearer ...``, which is why they never appear in logs, errors or ``repr``.
    ``verify`` is an ``ssl.SSLContext`` for a private CA, or ``False`` to skip
    TLS verification. ``transport`` replaces the network (``MockTransport`` in
    tests, an ``AiohttpTransport`` with a Unix socket connector...). The
    environment's proxy (``HTTPS_PROXY``, ``NO_PROXY``) and CA settings
    (``SSL_CERT_FILE``, ``SSL_CERT_DIR``) apply, as with any HTTP client.
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
        transport: Transport | None = None,
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
        self._invoke_url = f"{self._url}/invoke"
        self._health_url = f"{self._url}/health"
        # Credentials may live here (Authorization: Bearer ...): they are sent,
        # never logged, never put in an error message or repr. Built once: a
        # request adds only its Idempotency-Key. The protocol's own headers win.
        user = {k: v for k, v in (headers or {}).items() if k.lower() not in _PROTOCOL_HEADERS}
        self._invoke_headers = {
            **user,
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Only what read_capped unpacks step by step, under the answer's size limit.
            "Accept-Encoding": "gzip, deflate",
        }
        self._health_headers = {**user, "Accept": "application/json",
                                "Accept-Encoding": "gzip, deflate"}
        self._health_timeouts = Timeouts(total_s=health_timeout_s)
        if transport is None:
            connect = _DEFAULT_CONNECT_TIMEOUT_S
            if timeout_s is not None:
                connect = min(connect, timeout_s)
            size = (None if max_concurrency is None
                    else max_concurrency + _HEALTH_HEADROOM)
            transport = AiohttpTransport(
                max_connections=size,
                timeouts=Timeouts(connect_s=connect, read_s=timeout_s),
                ssl=default_ssl(self._url) if verify is True else verify,
            )
        self._transport: Transport = transport

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
        headers = self._invoke_headers.copy()
        # The key is the same on every attempt, so the agent (or a proxy in
        # front of it) can drop a duplicate delivery.
        headers["Idempotency-Key"] = task.idempotency_key
        traced = trace_headers(task)
        if traced:
            headers.update(traced)
        try:
            async with self._transport.request("POST", self._invoke_url, headers=headers,
                                               body=body) as response:
                status = response.status
                content = await read_capped(response, self.max_response_bytes, self._id)
        except ConnectTimeout:
            raise Unavailable(
                f"agent '{self._id}' at {self._url} did not accept a connection in time",
                agent_id=self._id,
            ) from None
        except ResponseTimeout as exc:
            raise AttemptTimeout(
                f"agent '{self._id}' at {self._url} did not answer in time ({exc})",
                agent_id=self._id,
            ) from None
        except NetworkError as exc:
            # Refused, reset, or closed mid-answer: the service is down or
            # restarting, which is exactly what ``unavailable`` retries cover.
            raise Unavailable(
                f"cannot reach agent '{self._id}' at {self._url}: {exc}", agent_id=self._id,
            ) from None
        except TransportError as exc:
            raise AgentError(
                f"HTTP call to agent '{self._id}' at {self._invoke_url} failed: {exc}",
                agent_id=self._id,
            ) from None
        if 200 <= status < 300:
            return self._output_of(status, content)
        raise error_from_response(status, response.headers, content, agent_id=self._id,
                                  endpoint=self._invoke_url)

    async def health(self) -> HealthReport:
        """Ask ``GET {url}/health``; anything but a clear answer reads as unhealthy.

        Never raises for network trouble: the health monitor wants a verdict,
        and "cannot reach it" is one.
        """
        try:
            async with self._transport.request("GET", self._health_url,
                                               headers=self._health_headers,
                                               timeouts=self._health_timeouts) as response:
                status = response.status
                content = await read_capped(response, _HEALTH_MAX_BYTES, self._id)
        except OutputTooLarge:
            return HealthReport("unhealthy", detail=f"health answer over {_HEALTH_MAX_BYTES} bytes")
        except (ConnectTimeout, ResponseTimeout):
            return HealthReport(
                "unhealthy", detail=f"no health answer within {self.health_timeout_s:g}s"
            )
        except (TransportError, AgentError) as exc:
            why = exc.message if isinstance(exc, AgentError) else str(exc)
            return HealthReport("unhealthy", detail=f"cannot reach {self._url}: {why}")
        data = _json_or_none(content)
        level = data.get("status") if isinstance(data, dict) else None
        if isinstance(level, str) and level in _HEALTH_LEVELS:
            assert isinstance(data, dict)
            detail = data.get("detail")
            return HealthReport(
                level,  # type: ignore[arg-type]  # checked against _HEALTH_LEVELS
                load=_load(data.get("load")),
                detail=detail if isinstance(detail, str) else None,
            )
        if not 200 <= status < 300:
            return HealthReport("unhealthy", detail=f"health answered HTTP {status}")
        return HealthReport(
            "unhealthy",
            detail="health answer is not {\"status\": \"healthy\"|\"degraded\"|\"unhealthy\"}: "
            + _snippet(content),
        )

    async def aclose(self) -> None:
        """Close pooled connections (idempotent; a later call opens a new pool)."""
        await self._transport.aclose()

    async def __aenter__(self) -> HttpAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"HttpAgent({self._id!r}, {self._url!r}, {sorted(self._capabilities)})"

    # --- internals ------------------------------------------------------------
    def _output_of(self, status: int, content: bytes) -> Any:
        data = _json_or_none(content)
        if not isinstance(data, dict):
            raise AgentError(
                f"agent '{self._id}' answered HTTP {status} from {self._invoke_url} but the"
                f" body is not a JSON object (expected {{\"output\": ...}}): "
                + _snippet(content),
                agent_id=self._id,
            )
        if "output" not in data:
            raise AgentError(
                f"agent '{self._id}' answered HTTP {status} from {self._invoke_url} without"
                f" an \"output\" key (got keys: {', '.join(sorted(map(str, data))) or 'none'})",
                agent_id=self._id,
            )
        return data["output"]


def error_from_response(
    status: int, headers: Mapping[str, str], content: bytes, *, agent_id: str | None = None,
    endpoint: str = "the agent",
) -> AgentError:
    """The Podium error for a non-2xx answer (``headers`` looked up by lower-case name).

    The status code picks the default type; a protocol error body
    ``{"error": {"type", "message", "retryable"}}`` overrides type, message
    and retryable, so an agent's custom types (``quota_exceeded``...) reach
    ``retry_on`` unchanged.
    """
    retry_after = parse_retry_after(headers.get("retry-after"))
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
    where = endpoint
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
async def read_capped(response: Response, limit: int, agent_id: str) -> bytes:
    """The whole body, decompressed, refusing more than ``limit`` bytes as it reads.

    Decompressed here, in steps of at most what is left of ``limit``: a gzip bomb
    (1 MB that unpacks into 1 GiB) stops at ``limit``, and never more than that is
    held in memory (a library's own decoder unpacks a whole read at once: 64 KiB
    of a bomb is ~64 MB).
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
        raise too_large(agent_id, limit, f"it announced {int(declared)} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for raw in response.iter_raw():
            data = raw
            while data:
                piece = data if unpack is None else unpack.decompress(data, limit - size + 1)
                size += len(piece)
                if size > limit:
                    raise too_large(agent_id, limit, f"more than {limit} bytes arrived")
                chunks.append(piece)
                data = b"" if unpack is None else unpack.unconsumed_tail
        if unpack is not None:
            chunks.append(unpack.flush())
    except zlib.error as exc:
        raise AgentError(f"agent '{agent_id}' sent a damaged {encoding} body: {exc}",
                         agent_id=agent_id) from None
    return b"".join(chunks)


def too_large(agent_id: str, limit: int, how: str) -> OutputTooLarge:
    return OutputTooLarge(
        f"agent '{agent_id}' answered more than its max_response_bytes ({limit}): {how}"
        " (fix: make the agent answer less, e.g. a reference to the data, or raise"
        " max_response_bytes in the agents file)", agent_id=agent_id)


# --- helpers -----------------------------------------------------------------
def _base_url(url: str, agent_id: str) -> str:
    try:
        parsed = urlsplit(url)
        _ = parsed.port  # a port that is not a number raises here
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"agent '{agent_id}': {url!r} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
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
