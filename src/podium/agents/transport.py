"""The HTTP transport seam: how ``HttpAgent`` moves one request, whatever library does it.

``HttpAgent`` builds each request, reads the answer (capped, decompressed by
itself) and maps failures onto Podium's error types; a transport only moves
bytes. ``AiohttpTransport`` is the real one; ``MockTransport`` answers from a
function, for tests (as ``httpx.MockTransport`` does), and ``connector=``
lets the real one speak over a Unix socket or anything else aiohttp connects
through.

Why aiohttp: ``bench/clients.py`` (one process per client, 4,000 small JSON
POSTs, 16 at once, keep-alive) measured httpx at 1.21 ms of client CPU per
request and aiohttp at 0.089 ms on the same 2-core machine in the same
minutes; two thirds of httpx's time is httpcore's and anyio's per-request
machinery. The engine's CPU per HTTP step followed.

A transport raises only these errors (the agent says which Podium type each is)::

    TransportError          anything else that went wrong in the exchange
    ├── ConnectTimeout      no connection within the connect timeout
    ├── ResponseTimeout     the answer stalled longer than the read (or total) timeout
    └── NetworkError        refused, reset, closed mid-answer, not HTTP

aiohttp is imported when the first connection pool is made, on the running
loop: ``import podium.agents.http`` stays cheap for a process that only
builds a registry.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ssl
    from types import TracebackType

    import aiohttp

__all__ = [
    "AiohttpTransport",
    "ConnectTimeout",
    "MockResponse",
    "MockTransport",
    "NetworkError",
    "Request",
    "Response",
    "ResponseTimeout",
    "Timeouts",
    "Transport",
    "TransportError",
    "default_ssl",
]

# Idle pooled connections are closed after this long: under the 20 s of
# ``podium agent serve`` (and uvicorn's default 5 s is matched, not raced).
KEEPALIVE_S = 4.5
# An agent calls two URLs (/invoke, /health); a caller of many gets no unbounded cache.
_MAX_TARGETS = 64


class TransportError(Exception):
    """The exchange failed below HTTP, or in a way the transport cannot name better."""


class ConnectTimeout(TransportError):
    """No connection (TCP, TLS) within the connect timeout: the agent is unreachable."""


class ResponseTimeout(TransportError):
    """The answer did not come (or stopped coming) within the read or total timeout."""


class NetworkError(TransportError):
    """Refused, reset, closed mid-answer, or not an HTTP answer: the agent is down."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Bounds of one exchange; ``None`` is no bound (the engine's attempt timeout still is)."""

    connect_s: float | None = None  # to open a connection (TCP, TLS); not the pool wait
    read_s: float | None = None  # between two reads of the answer
    total_s: float | None = None  # the whole exchange, pool wait included


@runtime_checkable
class Response(Protocol):
    """An answer whose body is read as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Looked up by lower-case name."""
        ...

    def iter_raw(self) -> AsyncIterator[bytes]:
        """The body as sent: transfer encoding undone, content encoding (gzip) kept."""
        ...


class Transport(Protocol):
    """Sends requests; owns its connections."""

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
        timeouts: Timeouts | None = None,
    ) -> ExchangeContext:
        """An async context manager giving the ``Response`` (headers in, body not yet read).

        ``timeouts`` None: the transport's own. The connection is released on exit.
        """
        ...

    async def aclose(self) -> None: ...


class ExchangeContext(Protocol):
    async def __aenter__(self) -> Response: ...

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None: ...


def default_ssl(url: str) -> ssl.SSLContext | bool:
    """TLS verified with the CA bundle httpx would use, loaded only for an https URL.

    ``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi: the same choice as
    before the switch to aiohttp, and as the A2A SDK's httpx client. True
    (aiohttp's default context) for http, which never uses it.
    """
    return ca_context() if url.lower().startswith("https:") else True


@functools.cache
def ca_context() -> ssl.SSLContext:
    """One CA bundle load per process: it costs tens of ms per client or pool otherwise."""
    import httpx

    return httpx.create_ssl_context()


# --- aiohttp ---------------------------------------------------------------------


class AiohttpTransport:
    """One aiohttp connection pool, made on first use on the running loop.

    A pool belongs to the loop that made it: an agent built at import time or
    in a config loader must not pin a loop it will never run on, and one used
    under ``asyncio.run`` twice gets a new pool the second time. Cookies are
    neither kept nor sent, redirects are not followed (a redirect is not the
    protocol), answers are not decompressed (the agent does it under its size
    limit), and the proxy settings of the environment (``HTTP_PROXY``,
    ``HTTPS_PROXY``, ``NO_PROXY``) are read once per pool rather than per
    request (aiohttp's ``trust_env`` asks a thread for them on every call).
    """

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        timeouts: Timeouts = Timeouts(),
        ssl: ssl.SSLContext | bool = True,
        connector: Callable[[], aiohttp.BaseConnector] | None = None,
    ) -> None:
        self._limit = max_connections or 0  # aiohttp: 0 is unbounded
        self._timeouts = timeouts
        self._ssl = ssl
        self._connector = connector
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[str, tuple[Any, str | None]] = {}

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
        timeouts: Timeouts | None = None,
    ) -> _AiohttpExchange:
        return _AiohttpExchange(self, method, url, headers, body, timeouts)

    async def aclose(self) -> None:
        """Close pooled connections (idempotent; a later request opens a new pool)."""
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()

    async def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        stale, stale_loop = self._session, self._loop
        if stale is not None and stale_loop is not None:
            if stale_loop.is_closed():
                # Its sockets died with its loop; closing marks it so (no warning).
                await stale.close()
            else:  # alive in another thread: its sockets are not ours to touch here
                stale.detach()
        connector = (self._connector() if self._connector is not None else
                     aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ssl=self._ssl,
                                          keepalive_timeout=KEEPALIVE_S))
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=_client_timeout(self._timeouts),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
        )
        self._loop = loop
        return self._session

    def _target(self, url: str) -> tuple[Any, str | None]:
        """The parsed URL and the environment's proxy for it, worked out once per URL."""
        import yarl

        parts = urlsplit(url)
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(parts.scheme) or proxies.get("all") or None
        if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
            proxy = None
        if len(self._targets) < _MAX_TARGETS:
            self._targets[url] = (yarl.URL(url), proxy)
        return yarl.URL(url), proxy


def _client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    import aiohttp

    # connect=None: aiohttp's "connect" includes the wait for a pooled
    # connection, which the engine's attempt timeout bounds, not this.
    return aiohttp.ClientTimeout(total=t.total_s, connect=None, sock_connect=t.connect_s,
                                 sock_read=t.read_s)


class _AiohttpExchange:
    """One request and its response (one object per request)."""

    __slots__ = ("_body", "_cm", "_headers", "_method", "_response", "_timeouts", "_transport",
                 "_url")

    def __init__(self, transport: AiohttpTransport, method: str, url: str,
                 headers: Mapping[str, str], body: bytes | None, timeouts: Timeouts | None) -> None:
        self._transport, self._method, self._url = transport, method, url
        self._headers, self._body, self._timeouts = headers, body, timeouts
        self._cm: Any = None
        self._response: Any = None

    @property
    def status(self) -> int:
        status: int = self._response.status
        return status

    @property
    def headers(self) -> Mapping[str, str]:
        headers: Mapping[str, str] = self._response.headers
        return headers

    async def iter_raw(self) -> AsyncIterator[bytes]:
        stream = self._response.content
        try:
            while True:
                chunk: bytes = await stream.readany()
                if not chunk:
                    return
                yield chunk
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from None

    async def __aenter__(self) -> Self:
        t = self._transport
        session = t._session
        if session is None or t._loop is not asyncio.get_running_loop():
            session = await t._open()
        try:
            target, proxy = t._targets[self._url]
        except KeyError:
            target, proxy = t._target(self._url)
        kwargs: dict[str, Any] = {}
        if self._timeouts is not None:
            kwargs["timeout"] = _client_timeout(self._timeouts)
        if proxy is not None:
            kwargs["proxy"] = proxy
        self._cm = session.request(self._method, target, data=self._body, headers=self._headers,
                                   allow_redirects=False, **kwargs)
        try:
            self._response = await self._cm.__aenter__()
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is None:
                raise
            raise mapped from None
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._cm.__aexit__(et, exc, tb)


def _mapped(exc: Exception) -> TransportError | None:
    """Ours for aiohttp's error; None for anything else (a bug should show as itself)."""
    import aiohttp

    if not isinstance(exc, aiohttp.ClientError | TimeoutError):
        return None
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeout(text)
    if isinstance(exc, TimeoutError):  # a read timeout, or the total one
        return ResponseTimeout(text)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
                  | aiohttp.ClientResponseError):
        # Without raise_for_status, a ClientResponseError is an answer that is not HTTP.
        return NetworkError(text)
    return TransportError(text)


# --- a fake for tests -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """What a ``MockTransport`` handler is given."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    timeouts: Timeouts | None


@dataclass(slots=True)
class MockResponse:
    """What a ``MockTransport`` handler answers; ``body`` may come in several chunks."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""

    def __post_init__(self) -> None:
        self.headers = {k.lower(): v for k, v in self.headers.items()}

    def iter_raw(self) -> AsyncIterator[bytes]:
        return _chunks([self.body] if isinstance(self.body, bytes) else self.body)


async def _chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if chunk:
            yield chunk


Handler = Callable[[Request], "MockResponse | Awaitable[MockResponse]"]


class MockTransport:
    """A transport that answers from ``handler`` instead of the network.

    The handler gets each ``Request`` and returns a ``MockResponse`` (or
    raises a ``TransportError`` to play a network failure); it may be async.
    Every request is also kept in ``requests``.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[Request] = []

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
        timeouts: Timeouts | None = None,
    ) -> _MockExchange:
        request = Request(method, url, dict(headers), body, timeouts)
        self.requests.append(request)
        return _MockExchange(self._handler, request)

    async def aclose(self) -> None:
        return None


class _MockExchange:
    def __init__(self, handler: Handler, request: Request) -> None:
        self._handler, self._request = handler, request

    async def __aenter__(self) -> MockResponse:
        answer = self._handler(self._request)
        if not isinstance(answer, MockResponse):
            answer = await answer
        return answer

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None
