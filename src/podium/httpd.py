"""What Podium's two HTTP servers share: a checked address, bounded connections, browser guards.

``podium agent serve`` (a Python function as an HTTP agent) and ``podium
serve`` (the engine's ``/metrics`` and ``/healthz``) listen on a local port.
Both must be safe to leave running on a laptop with a browser open, and a
few idle sockets must not hold memory or file descriptors for ever:

- The address is checked (a port out of range, a host such as
  ``999.1.1.1``) and the socket bound before the application starts, so a
  mistake is a ``ConfigError`` (exit 2) before anything runs, never a
  traceback after start-up.
- ``HostGuard`` refuses a request whose ``Host`` is not the bound address or
  a configured name (421): that defeats DNS rebinding, where a web page's
  own name is pointed at 127.0.0.1 and the browser then treats the server as
  part of the page's site. It refuses cross-origin requests (403): a page may
  POST a ``text/plain`` body to any address without a CORS preflight, but the
  browser names the page's origin in ``Origin`` and ``Sec-Fetch-Site``.
- Every connection has deadlines (``HttpLimits``): ``idle_timeout_s`` without
  a byte of a next request (also on a fresh connection: uvicorn's own
  keep-alive timer starts only after a first answer), the request headers
  within ``header_timeout_s`` of their first byte, the body within
  ``body_timeout_s`` more. A slowloris client, sending its headers a byte a
  second, is dropped at its header deadline; a request's head (request line
  and headers) is at most ``max_header_bytes``.

uvicorn is imported only by the functions that start a server: ``import
podium`` stays light for people who only run in-process agents.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson

from podium.errors import ConfigError

if TYPE_CHECKING:
    import uvicorn

# The ASGI scope extension (a callable) that drops a request's connection at once,
# with whatever it still had to send (asyncio's close() would wait for the client).
ABORT_EXTENSION: Final = "podium.abort"

__all__ = [
    "ABORT_EXTENSION",
    "DEFAULT_MAX_BODY_BYTES",
    "ASGIApp",
    "AllowedHosts",
    "BodyLimit",
    "HostGuard",
    "HttpLimits",
    "bind",
    "check_allowed_hosts",
    "check_host",
    "check_log_level",
    "check_port",
    "error_body",
    "log_config",
    "uvicorn_config",
]

log = logging.getLogger("podium.httpd")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: A request body larger than this is refused with 413 (``--max-body-bytes``).
DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
_SERVER_EXTRA: Final = "(fix: pip install 'podium[server]')"
_HOSTNAME: Final = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"\.?",
    re.IGNORECASE | re.ASCII,
)
# Browsers say where a request comes from; these two values mean "another site's page".
_FOREIGN_FETCH_SITES: Final = frozenset({b"cross-site", b"same-site"})
_SHOWN: Final = 100  # characters of a client's header echoed in an error message


@dataclass(frozen=True)
class HttpLimits:
    """How much a client may send, and how slowly, before the server gives up on it.

    ``idle_timeout_s`` is longer than the keep-alive expiry of httpx (5 s) and
    aiohttp (15 s) clients, so the client closes an idle connection first and
    never reuses one the server is closing at that instant. ``max_connections``
    is uvicorn's ``limit_concurrency``: beyond it a request gets 503 (an
    ``unavailable`` the caller retries elsewhere) instead of a socket and a task.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: int = 20
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_header_bytes", "idle_timeout_s", "max_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"HttpLimits.{name} must be a whole number >= 1, not {value!r}")
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"HttpLimits.{name} must be a positive number, not {value!r}")


# --- the address --------------------------------------------------------------


def check_port(port: object, flag: str = "--port", *, allow_zero: bool = False) -> int:
    """``port`` if it is one a socket can bind, else a ``ConfigError`` naming it."""
    low = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        any_free = ", or 0 for any free one" if allow_zero else ""
        raise ConfigError(
            f"{flag} {port!r} is not a port (fix: choose a port in {low}..65535{any_free})"
        )
    return port


def check_host(host: str, flag: str = "--host") -> str:
    """``host`` without brackets if it is an IP address or a host name, else a ``ConfigError``.

    Checked by its form, before any lookup: ``999.1.1.1`` is a mistyped
    address, not a name to send to DNS.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return bare
    numeric = bool(bare) and all(part.isdigit() for part in bare.rstrip(".").split("."))
    if numeric or ":" in bare or not _HOSTNAME.fullmatch(bare):
        what = "an IPv4 address" if numeric else "an IP address or host name"
        fix = ("127.0.0.1 for this machine only, 0.0.0.0 for every interface, or the name"
               " or address of one interface") if flag == "--host" else (
               "a host name such as agents.internal, or an IP address")
        raise ConfigError(f"{flag} {host!r} is not {what} (fix: {fix})")
    return bare


def check_allowed_hosts(names: Iterable[str]) -> tuple[str, ...]:
    """The ``--allowed-host`` values, each a host name, an IP address or ``*``."""
    names = tuple(names)
    for name in names:
        if name != "*":
            check_host(name, "--allowed-host")
    return names


def bind(host: str, port: int) -> socket.socket:
    """Listen now, so a taken port is a clear error instead of a server log line and exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot resolve host {host!r}: {exc.strerror} (fix: check --host)"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            " (fix: choose another --port, or stop what is using it)"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# --- which Host a request may name --------------------------------------------


class AllowedHosts:
    """The ``Host`` values a server answers to.

    The bound address with its port (``127.0.0.1:8101``), ``localhost`` when
    bound to a loopback address, and the names given with ``--allowed-host``
    (any port: a proxy in front may use its own). Bound to every interface
    (``0.0.0.0``), any IP address with the right port is accepted too: DNS
    rebinding needs a *name*, and a page cannot make the browser send another
    address's literal as Host. ``*`` accepts every Host (behind a proxy that
    checks it). The common values are precomputed, so a request costs a set
    lookup.
    """

    def __init__(self, host: str, sock: socket.socket, names: Iterable[str] = ()) -> None:
        bound, self.port = sock.getsockname()[:2]
        ip = ipaddress.ip_address(bound.split("%", 1)[0])
        self._any_ip = ip.is_unspecified
        self._any = False
        self._names: set[str] = set()
        for name in names:
            if name == "*":
                self._any = True
            else:
                self._names.add(check_host(name, "--allowed-host").lower().rstrip("."))
        hosts = {check_host(host).lower().rstrip("."), str(ip)}
        if ip.is_loopback or ip.is_unspecified:
            hosts.add("localhost")
        self.canonical = _host_port(str(ip) if not ip.is_unspecified else "localhost", self.port)
        self._exact: set[bytes] = set()
        for h in hosts | self._names:
            self._exact.add(_host_port(h, self.port).encode())
            if self.port == 80:
                self._exact.add((f"[{h}]" if ":" in h else h).encode())

    def allows(self, value: bytes) -> bool:
        if self._any or value in self._exact:
            return True
        value = value.lower()  # names are case-insensitive; the common spelling is checked first
        if value in self._exact:
            return True
        parsed = _split_host(value.decode("latin-1"))
        if parsed is None:
            return False
        name, port = parsed
        if name.rstrip(".") in self._names:
            return True
        if not self._any_ip or (port if port is not None else 80) != self.port:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``name[:port]`` or ``[v6][:port]`` as (name, port); None if it is neither."""
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if not rest:
        return name, None
    digits = rest[1:]
    if rest[0] != ":" or not (digits.isascii() and digits.isdigit()) or len(digits) > 5:
        return None
    return name, int(digits)


class HostGuard:
    """ASGI middleware: only requests naming this server, and not from another site's page.

    One pass over the headers and a set lookup: it sits in front of every
    request of ``podium agent serve``, whose cost per call is measured.
    """

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host: bytes | None = None
        origin: bytes | None = None
        site: bytes | None = None
        hosts = 0
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                hosts += 1
            elif name == b"origin":
                origin = value
            elif name == b"sec-fetch-site":
                site = value
        if host is None or hosts > 1:
            await send_error(send, 400, "the request needs exactly one Host header")
            return
        if not self.allowed.allows(host):
            shown = host.decode("latin-1")[:_SHOWN]
            await send_error(
                send, 421,
                f"this server does not answer to Host {shown!r} (fix: call it as"
                f" http://{self.allowed.canonical}, or start it with --allowed-host NAME)",
            )
            return
        if origin is not None and not _same_origin(origin, host):
            shown = origin.decode("latin-1")[:_SHOWN]
            await send_error(send, 403, f"cross-origin request from {shown!r} refused")
            return
        if site in _FOREIGN_FETCH_SITES:
            await send_error(send, 403, "request from another site's page refused")
            return
        await self.app(scope, receive, send)


def _same_origin(origin: bytes, host: bytes) -> bool:
    # The scheme is not compared: a TLS proxy in front makes the page's origin https.
    scheme, sep, rest = origin.lower().partition(b"://")
    return bool(sep) and scheme in (b"http", b"https") and rest == host.lower()


def error_body(message: str, error_type: str = "invalid_input", retryable: bool = False) -> bytes:
    """The HTTP agent protocol's error shape; Podium's client maps it to a typed error."""
    return orjson.dumps({"error": {"type": error_type, "message": message,
                                   "retryable": retryable}})


async def send_error(
    send: Send,
    status: int,
    message: str,
    *,
    error_type: str = "invalid_input",
    retryable: bool = False,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    body = error_body(message, error_type, retryable)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413, before the app reads it.

    A declared ``Content-Length`` is judged at once; a chunked body is read here up
    to the limit (never held beyond it) and handed on whole, so the app never
    starts on a body it could not finish.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 shape: Callable[[str], bytes] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # The error document, in the served app's own shape (else the agent protocol's).
        self.shape = shape or (lambda m: error_body(m, "payload_too_large"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = self.shape(f"the request body is larger than {self.max_bytes:,} bytes (fix:"
                          " send less, e.g. a reference to the data)")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# --- uvicorn with deadlines -----------------------------------------------------


def check_log_level(level: str) -> int:
    """The logging level of a ``--log-level`` name; a ``ConfigError`` naming the choices."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(f"serving HTTP needs uvicorn {_SERVER_EXTRA}") from None
    levels = uvicorn.config.LOG_LEVELS
    if level not in levels:
        raise ConfigError(f"--log-level {level!r} is unknown (fix: use one of"
                          f" {', '.join(levels)})")
    return levels[level]


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging set-up with Podium's loggers on the same handler (stderr)."""
    import uvicorn

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["podium"] = {"handlers": ["default"], "level": check_log_level(level),
                                   "propagate": False}
    # Every line either handler writes is scrubbed of secrets (by value and pattern).
    config.setdefault("filters", {})["redact"] = {"()": "podium.redact.RedactingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config


def uvicorn_config(
    app: ASGIApp,
    limits: HttpLimits,
    *,
    log_level: str = "info",
    lifespan: Literal["on", "off"] = "off",
) -> uvicorn.Config:
    """A uvicorn ``Config`` for a socket we bound: httptools with deadlines, no proxy headers.

    httptools (llhttp, in C) rather than h11: an agent server spent ~0.38 ms
    of CPU per request on h11's pure-Python parsing and framing, and 0.15 ms
    on httptools (bench/fleet.py), which on a small machine is CPU the engine
    and the agents share. The deadlines and the header size limit are ours
    (``_deadline_protocol``): uvicorn's httptools protocol has neither.
    Proxy headers are off: the client address is the socket's peer, which is
    what a local-only check can trust. Call ``check_log_level`` first: it also
    says when uvicorn is missing.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        http=_deadline_protocol(limits),
        ws="none",
        lifespan=lifespan,
        log_config=log_config(log_level),
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.idle_timeout_s,
    )


def _deadline_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    from uvicorn.server import ServerState

    header_s, body_s = limits.header_timeout_s, limits.body_timeout_s
    max_head = limits.max_header_bytes

    class DeadlineHttpToolsProtocol(HttpToolsProtocol):
        """httptools whose every request phase has a deadline and whose head is bounded.

        One timer per request at most: armed by the first byte of a request,
        moved on to the body's deadline if the headers are in but the body is
        not, cancelled by the answer. A request the server is working on (the
        whole body received) is never cut: that is the application's time.

        The head (request line and headers) is at most ``max_head`` bytes: the
        parser keeps an unfinished header line in memory, so the bytes that
        arrive while a head is unfinished are counted, and so are the finished
        parts the parser hands over. Over the limit the request gets a 400 and
        the connection is closed, as h11 did. A read that ends one pipelined
        request and starts the next counts wholly towards the next one's head:
        the limit can only come early for a client that pipelines big bodies.

        A chunked body's trailers (header lines after its last chunk) are held
        the same way until each line ends, so they are bounded too: the reads
        that arrive while a chunk's header is in and none of its data has come
        count towards ``max_head``, and over it the connection is closed. The
        read in which that chunk header arrived is not counted, since its
        bytes before the header are body: one read more than the limit, at worst.
        """

        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._deadline: asyncio.TimerHandle | None = None
            self._body_of: RequestResponseCycle | None = None
            self._in_head = False
            self._head_read = 0  # bytes read while this request's head is unfinished
            self._head_parts = 0  # bytes of the head the parser has handed over
            self._chunk_open = False  # a chunk's header is in, none of its data yet
            self._chunk_events = 0  # chunk headers, data and ends seen: did a read move on?
            self._tail_read = 0  # bytes read while a chunk stayed open (its trailers)

        def connection_made(  # type: ignore[override]  # uvicorn narrows it so
            self, transport: asyncio.Transport
        ) -> None:
            super().connection_made(transport)
            # uvicorn arms its idle timer after a first answer only: a client
            # that connects and sends nothing would keep its socket for ever.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._deadline = self.loop.call_later(header_s, self._deadline_passed)
            events, was_open = self._chunk_events, self._chunk_open
            super().data_received(data)
            # Not once the parser's own error has answered and closed the connection.
            if self.transport.is_closing():
                return
            if self._in_head:
                self._head_read += len(data)
                if self._head_read > max_head:
                    self._head_too_big()
            elif was_open and self._chunk_open and events == self._chunk_events:
                self._tail_read += len(data)
                if self._tail_read > max_head:
                    log.debug("dropping %s: chunk trailers over %d bytes", self.client,
                              max_head)
                    self.transport.close()

        def on_chunk_header(self) -> None:
            self._chunk_open = True
            self._chunk_events += 1
            self._tail_read = 0

        def on_body(self, body: bytes) -> None:
            if self._chunk_open:
                self._chunk_open = False
                self._chunk_events += 1
            super().on_body(body)

        def on_chunk_complete(self) -> None:
            self._chunk_open = False
            self._chunk_events += 1

        def on_message_begin(self) -> None:
            self._in_head = True
            self._head_read = self._head_parts = self._tail_read = 0
            self._chunk_open = False
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            # How an answer that streams (GET /events) drops a client that stopped
            # reading: its last bytes wait for room that never comes, so nothing the
            # application can send ends the response.
            extensions: dict[str, Any] = dict(self.scope.get("extensions") or {})
            extensions[ABORT_EXTENSION] = self.transport.abort
            self.scope["extensions"] = extensions
            super().on_headers_complete()

        def _count(self, n: int) -> None:
            self._head_parts += n
            if self._head_parts > max_head:
                # Raised inside the parser's callback: httptools hands it back from
                # feed_data as a parse error, which uvicorn answers with a 400 and a close.
                raise ValueError("request head too large")

        def _head_too_big(self) -> None:
            self._in_head = False
            log.debug("dropping %s: request head over %d bytes", self.client, max_head)
            self.send_400_response("Invalid HTTP request received.")

        def on_response_complete(self) -> None:
            done = self.cycle
            self._cancel_deadline()
            super().on_response_complete()
            # A pipelined request already read starts here, not in data_received.
            if self.cycle is not done and not self.cycle.response_complete:
                self._deadline = self.loop.call_later(header_s, self._deadline_passed)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _deadline_passed(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if not cycle.more_body:
                    return  # the whole request is in: the answer takes what it takes
                if self._body_of is not cycle:
                    self._body_of = cycle
                    self._deadline = self.loop.call_later(body_s, self._deadline_passed)
                    return
                phase = "body"
            else:
                phase = "headers"
            log.debug("dropping %s: request %s too slow", self.client, phase)
            self.transport.close()

    return DeadlineHttpToolsProtocol
