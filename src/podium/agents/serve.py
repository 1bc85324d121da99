"""Expose a Python function as an HTTP agent (``podium agent serve``).

The other half of ``podium.agents.http``: the same protocol seen from the
server. ``POST /invoke`` runs the function on the task and answers
``200 {"output": ...}``; a failure answers ``{"error": {"type", "message",
"retryable"}}`` with the status code an HTTP client expects for that type, so
any client (not only Podium) can act on it. ``GET /health`` reports the
function's load. Tracebacks stay in the server's log, never in an answer.

Hostile or careless callers are refused before the function runs, cheaply
(one pass over the headers): a wrong ``Host`` or another site's page
(``podium.httpd.HostGuard``), a missing or wrong bearer token (401 with
``WWW-Authenticate: Bearer``, compared in constant time), a body that is
not ``application/json`` (415) or is larger than ``max_body_bytes`` (413,
decided from ``Content-Length`` before reading, else while reading, so an
oversize body is never held whole). With a token, ``/health`` stays open
for probes but tells a caller without the token only the protocol's
``status`` and ``load``.

The web stack (starlette, uvicorn) is the optional ``server`` extra, so it is
imported only when an app is actually built: ``import podium`` must stay
light for people who only run in-process agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from podium.agents.base import HealthReport, Task
from podium.agents.python import PythonAgent, load_callable
from podium.errors import AgentError, ConfigError
from podium.httpd import (
    DEFAULT_MAX_BODY_BYTES,
    AllowedHosts,
    ASGIApp,
    HostGuard,
    HttpLimits,
    bind,
    check_allowed_hosts,
    check_host,
    check_log_level,
    check_port,
    error_body,
    url_of,
    uvicorn_config,
)
from podium.redact import register_secret

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["DEFAULT_MAX_BODY_BYTES", "STATUS_FOR_TYPE", "ASGIApp", "JoinSettings", "make_app",
           "serve", "token_from"]

log = logging.getLogger("podium.agents.serve")

#: The HTTP status an error type is answered with (anything else: 500).
STATUS_FOR_TYPE: Final[dict[str, int]] = {
    "invalid_input": 400,
    "rate_limited": 429,
    "agent_error": 500,
    "unavailable": 503,
    "timeout": 504,
}
# Types a caller should not retry unless the agent says otherwise.
_NOT_RETRYABLE: Final = frozenset({"invalid_input", "cancelled"})
_HEALTH_LEVELS: Final = frozenset({"healthy", "degraded", "unhealthy"})
_TASK_FIELDS: Final = ("run_id", "step_id", "attempt", "idempotency_key", "capability", "input")
_SERVER_EXTRA: Final = "(fix: pip install 'podium[server]')"


def make_app(
    func: Callable[[Task], Any],
    *,
    capability: str,
    max_concurrency: int | None = None,
    health: Callable[[], Any] | None = None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> ASGIApp:
    """Build the ASGI app serving ``func`` (sync or async, taking a ``Task``).

    ``max_concurrency`` bounds calls in flight: one more is refused with
    ``429 rate_limited`` (``Retry-After: 1``) rather than queued, so the
    caller's registry can send it to another agent. ``health`` (sync or
    async) may return a ``HealthReport``, a status string or a
    ``{"status", "load"}`` dict; without it the agent reports ``healthy``.
    ``token``, when given, is the bearer token every ``/invoke`` must carry.
    The ``Host`` and origin checks need the bound address, so ``serve`` adds
    them around this app.
    """
    if not capability or not capability.strip():
        raise ConfigError("an HTTP agent needs a capability (fix: pass --capability NAME)")
    if max_concurrency is not None and max_concurrency < 1:
        raise ConfigError("max_concurrency must be at least 1 (fix: omit it for no limit)")
    if token is not None and not token:
        raise ConfigError("the bearer token is empty (fix: give a token, or none)")
    HttpLimits(max_body_bytes=max_body_bytes)  # validates it
    try:
        from starlette.applications import Starlette
        from starlette.routing import Route
    except ImportError:
        raise ConfigError(f"serving an HTTP agent needs starlette {_SERVER_EXTRA}") from None
    endpoint = _AgentEndpoint(func, capability, max_concurrency, health, token, max_body_bytes)
    return Starlette(
        routes=[
            Route("/invoke", endpoint.invoke, methods=["POST"]),
            Route("/health", endpoint.health, methods=["GET"]),
        ]
    )


def serve(
    target: str,
    *,
    capability: str,
    host: str = "127.0.0.1",
    port: int,
    max_concurrency: int | None = None,
    health: str | None = None,
    log_level: str = "info",
    token_env: str | None = None,
    allowed_hosts: Iterable[str] = (),
    limits: HttpLimits | None = None,
    join: JoinSettings | None = None,
) -> None:
    """Load ``MODULE:FUNC`` and serve it until SIGINT/SIGTERM (graceful stop).

    Binds to 127.0.0.1 unless told otherwise. ``token_env`` names the
    environment variable holding the bearer token callers must send (the
    agents file's ``token_env`` on the engine's side); without one, anyone
    who can reach the port may call the function, which the log says at
    start-up. ``allowed_hosts`` are names (besides the bound address) that
    callers may put in ``Host``; ``port=0`` takes any free port. Every setup
    problem (bad address, bad target, port taken, web stack missing) is a
    ``ConfigError`` raised before anything listens. ``join``: register with a ``podium
    serve`` once listening, heartbeat, and leave at the end (``podium.agents.joining``);
    a refusal stops the agent with a ``ConfigError``.
    """
    check_port(port, allow_zero=True)
    check_host(host)
    check_log_level(log_level)  # also: is uvicorn installed
    limits = limits or HttpLimits()
    allowed_hosts = check_allowed_hosts(allowed_hosts)
    token = token_from(token_env)
    cwd = Path.cwd()
    func = load_callable(target, base_dir=cwd)
    health_fn = load_callable(health, base_dir=cwd, where="--health: ") if health else None
    app = make_app(func, capability=capability, max_concurrency=max_concurrency,
                   health=health_fn, token=token, max_body_bytes=limits.max_body_bytes)
    sock = bind(host, port)
    try:
        guarded = HostGuard(app, AllowedHosts(host, sock, allowed_hosts))
        config = uvicorn_config(guarded, limits, log_level=log_level)
        url = url_of(sock)
        if token is None:
            log.warning(
                "no --token-env, so any program that can reach %s may call this agent"
                " (fix: --token-env NAME here, and the same NAME as this agent's"
                " token_env in the engine's agents file)", url,
            )
        if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - a warning about it, not a bind
            log.warning("listening on every interface (%s)%s", host,
                        "" if token else " without authentication")
        log.info(
            "serving %s as capability '%s' on %s (POST /invoke, GET /health)",
            target, capability, url,
        )
        import uvicorn

        server = uvicorn.Server(config)
        if join is None:
            server.run(sockets=[sock])
            return
        refused = asyncio.run(_serve_joined(server, sock, join.joining(
            url, capability, max_concurrency, token, sock.getsockname()[1])))
        if refused is not None:
            raise ConfigError(refused)
    finally:
        sock.close()


@dataclass(frozen=True)
class JoinSettings:
    """``--register`` and its companions."""

    server: str
    token: str | None
    ttl_s: float = 30.0
    agent_id: str | None = None
    public_url: str | None = None
    region: str | None = None

    def joining(self, url: str, capability: str, max_concurrency: int | None,
                token: str | None, port: int) -> Any:
        from podium.agents.joining import Joining, default_agent_id

        entry: dict[str, Any] = {
            "id": self.agent_id or default_agent_id(capability, port),
            "url": self.public_url or url, "capabilities": [capability]}
        if self.region:
            entry["region"] = self.region
        if max_concurrency is not None:
            entry["max_concurrency"] = max_concurrency
        if token is not None:
            entry["token"] = token  # what the engine must send this agent
        return Joining(self.server, self.token, entry, self.ttl_s)


async def _serve_joined(server: Any, sock: Any, joining: Any) -> str | None:
    """Serve; once listening, keep the agent joined; leave when the server stops.

    uvicorn raises the signal that stopped it again once it has stopped, to whatever
    handler was there before it: a handler that only records it lets the agent say
    goodbye to the fleet, then end with 0 rather than die by the signal."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not serving.done():  # noqa: ASYNC110 - a flag, no event
        await asyncio.sleep(0.05)
    keeper = asyncio.ensure_future(joining.keep())
    await asyncio.wait({serving, keeper}, return_when=asyncio.FIRST_COMPLETED)
    if keeper.done() and joining.refused is not None:
        server.should_exit = True  # refused for good: stop serving
    await serving
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    if joining.refused is None:
        await joining.leave()
    refused: str | None = joining.refused
    return refused


def token_from(token_env: str | None) -> str | None:
    """The bearer token from the environment; its value is never shown, only the name."""
    if token_env is None:
        return None
    token = os.environ.get(token_env, "")
    if not token.strip():
        raise ConfigError(
            f"--token-env {token_env}: the environment variable is not set or empty"
            f" (fix: export {token_env}=<token>, the token the engine sends with"
            " token_env in its agents file)"
        )
    # Header values lose surrounding whitespace on the way (HTTP's optional
    # whitespace), so a token kept with a trailing newline could never match.
    register_secret(token.strip())  # never in an error, log or answer of this server
    return token.strip()


class _AgentEndpoint:
    """The two routes plus the in-flight count they share (one event loop, no lock)."""

    def __init__(
        self,
        func: Callable[[Task], Any],
        capability: str,
        max_concurrency: int | None,
        health: Callable[[], Any] | None,
        token: str | None,
        max_body_bytes: int,
    ) -> None:
        # PythonAgent already knows how to call sync (in a thread) and async
        # functions; reusing it keeps the two transports behaving the same.
        self._agent = PythonAgent(func, id=capability, capabilities=[capability])
        self._capability = capability
        self._max = max_concurrency
        self._health = health
        self._inflight = 0
        self._token = token.encode() if token is not None else None
        self._max_body = max_body_bytes

    @property
    def load(self) -> float:
        return min(1.0, self._inflight / self._max) if self._max else 0.0

    async def invoke(self, request: Request) -> Response:
        authorization = content_type = length = None
        for name, value in request.scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        # Each refusal below answers before the body is read; uvicorn then reads
        # and drops what the client still sends, so it gets the answer.
        if self._token is not None and not self._authorized(authorization):
            return _unauthorized()
        if content_type is None or not _is_json(content_type):
            shown = content_type.decode("latin-1")[:100] if content_type else "none"
            return _error(415, "invalid_input", "POST /invoke takes Content-Type:"
                          f" application/json (got {shown!r})", False)
        if length is not None and (len(length) > 18 or int(length) > self._max_body):
            return self._too_large()
        raw = await self._body(request)
        if raw is None:
            return self._too_large()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, "invalid_input", f"the request body is not JSON: {exc}", False)
        task, problem = _task_from(data)
        if task is None:
            return _error(400, "invalid_input", f"the request is not a task: {problem}", False)
        if self._max is not None and self._inflight >= self._max:
            return _error(
                429, "rate_limited", f"agent at capacity ({self._max} calls in flight)", True,
                retry_after=1,
            )
        self._inflight += 1
        try:
            output = await self._agent.invoke(task)
        except AgentError as exc:
            return _error_for(exc)
        except TimeoutError as exc:
            return _error(504, "timeout", _describe(exc), True)
        except Exception as exc:
            # The operator gets the traceback; the caller gets type and message.
            log.exception("agent failed on %s/%s attempt %d", task.run_id, task.step_id,
                          task.attempt)
            return _error(500, "agent_error", _describe(exc), True)
        finally:
            self._inflight -= 1
        try:
            body = orjson.dumps({"output": output})
        except TypeError as exc:
            return _error(500, "agent_error", f"output is not JSON: {exc}", False)
        return _json(200, body)

    def _authorized(self, authorization: bytes | None) -> bool:
        if authorization is None:
            return False
        scheme, _, credentials = authorization.partition(b" ")
        assert self._token is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(),
                                                                    self._token)

    def _too_large(self) -> Response:
        return _error(413, "invalid_input", f"the request body is larger than {self._max_body}"
                      " bytes (fix: send a smaller input, or start the agent with a larger"
                      " --max-body-bytes)", False)

    async def _body(self, request: Request) -> bytes | None:
        """The whole body, or None once it passes the limit (a chunked body has no length)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] != "http.request":
                # The client went away (or missed its body deadline): nobody
                # reads an answer, and an empty body reads as "not JSON".
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return None
            if not message.get("more_body", False):
                if not chunks:
                    return bytes(chunk)
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)

    async def health(self, request: Request) -> Response:
        status, load, detail = await self._health_report()
        body: dict[str, Any] = {"status": status, "load": load}
        if self._token is None or self._authorized(_header(request, b"authorization")):
            # A probe without the token (they rarely carry one) gets the protocol's
            # two fields; what the agent is and its health function's words stay private.
            body.update(capability=self._capability, inflight=self._inflight,
                        max_concurrency=self._max)
            if detail:
                body["detail"] = detail
        # 503 lets plain load balancers and probes act on it too; Podium reads the body.
        return _json(503 if status == "unhealthy" else 200, orjson.dumps(body))

    async def _health_report(self) -> tuple[str, float, str | None]:
        status: str = "healthy"
        load: float = self.load
        detail: str | None = None
        if self._health is not None:
            try:
                if inspect.iscoroutinefunction(self._health):
                    result = await self._health()
                else:
                    result = await asyncio.to_thread(self._health)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:
                log.exception("health check failed")
                status, detail = "unhealthy", f"health check raised {_describe(exc)}"
            else:
                status, user_load, detail = _health_of(result)
                if user_load is not None:
                    load = user_load
        return status, load, detail


def _task_from(data: Any) -> tuple[Task | None, str]:
    if not isinstance(data, dict):
        return None, f"expected a JSON object with {', '.join(_TASK_FIELDS)}"
    problems: list[str] = []
    missing = [k for k in _TASK_FIELDS if k not in data]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    for key in ("run_id", "step_id", "idempotency_key", "capability"):
        if key in data and not isinstance(data[key], str):
            problems.append(f"{key} must be a string")
    attempt = data.get("attempt")
    if "attempt" in data and (
        isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1
    ):
        problems.append("attempt must be an integer >= 1")
    if problems:
        return None, "; ".join(problems)
    return Task(
        run_id=data["run_id"],
        step_id=data["step_id"],
        attempt=data["attempt"],
        idempotency_key=data["idempotency_key"],
        capability=data["capability"],
        input=data["input"],
    ), ""


def _header(request: Request, name: bytes) -> bytes | None:
    for key, value in request.scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]  # ASGI header values are bytes
    return None


def _is_json(content_type: bytes) -> bool:
    """``application/json``, parameters (``; charset=utf-8``) allowed."""
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


def _unauthorized() -> Response:
    response = _error(401, "invalid_input", "missing or wrong bearer token (fix: give the"
                      " token in the engine's agents file with token_env: NAME for this"
                      " agent)", False)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _health_of(result: Any) -> tuple[str, float | None, str | None]:
    """Read what a user's health callable returned: report, status string or dict."""
    status: Any
    load: Any = None
    detail: Any = None
    if isinstance(result, HealthReport):
        status, load, detail = result.status, result.load, result.detail
    elif isinstance(result, dict):
        status, load, detail = result.get("status"), result.get("load"), result.get("detail")
    elif result is None or result is True:
        status = "healthy"
    elif result is False:
        status = "unhealthy"
    else:
        status = result
    if status not in _HEALTH_LEVELS:
        detail = f"health check returned {status!r}, not healthy/degraded/unhealthy"
        return "unhealthy", None, detail
    if isinstance(load, bool) or not isinstance(load, int | float):
        load = None
    else:
        load = min(1.0, max(0.0, float(load)))
    return status, load, detail if isinstance(detail, str) else None


def _error_for(exc: AgentError) -> Response:
    error_type = exc.error_type
    retryable = exc.retryable if exc.retryable is not None else error_type not in _NOT_RETRYABLE
    retry_after = exc.retry_after_s if error_type in ("rate_limited", "unavailable") else None
    return _error(STATUS_FOR_TYPE.get(error_type, 500), error_type, exc.message, retryable,
                  retry_after=retry_after)


def _error(
    status: int, error_type: str, message: str, retryable: bool, *, retry_after: float | None = None
) -> Response:
    response = _json(status, error_body(message, error_type, retryable))
    if retry_after is not None:
        # Retry-After is whole seconds; round up so the caller never comes back early.
        response.headers["Retry-After"] = str(max(0, int(-(-retry_after // 1))))
    return response


def _json(status: int, body: bytes) -> Response:
    from starlette.responses import Response

    return Response(body, status_code=status, media_type="application/json")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
