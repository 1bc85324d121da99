"""Expose a Python function as an HTTP agent (``podium agent serve``).

The other half of ``podium.agents.http``: the same protocol seen from the
server. ``POST /invoke`` runs the function on the task and answers
``200 {"output": ...}``; a failure answers ``{"error": {"type", "message",
"retryable"}}`` with the status code an HTTP client expects for that type, so
any client (not only Podium) can act on it. ``GET /health`` reports the
function's load. Tracebacks stay in the server's log, never in an answer.

The web stack (starlette, uvicorn) is the optional ``server`` extra, so it is
imported only when an app is actually built: ``import podium`` must stay
light for people who only run in-process agents.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from podium.agents.base import HealthReport, Task
from podium.agents.python import PythonAgent, load_callable
from podium.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["STATUS_FOR_TYPE", "ASGIApp", "make_app", "serve"]

log = logging.getLogger("podium.agents.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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
) -> ASGIApp:
    """Build the ASGI app serving ``func`` (sync or async, taking a ``Task``).

    ``max_concurrency`` bounds calls in flight: one more is refused with
    ``429 rate_limited`` (``Retry-After: 1``) rather than queued, so the
    caller's registry can send it to another agent. ``health`` (sync or
    async) may return a ``HealthReport``, a status string or a
    ``{"status", "load"}`` dict; without it the agent reports ``healthy``.
    """
    if not capability or not capability.strip():
        raise ConfigError("an HTTP agent needs a capability (fix: pass --capability NAME)")
    if max_concurrency is not None and max_concurrency < 1:
        raise ConfigError("max_concurrency must be at least 1 (fix: omit it for no limit)")
    try:
        from starlette.applications import Starlette
        from starlette.routing import Route
    except ImportError:
        raise ConfigError(f"serving an HTTP agent needs starlette {_SERVER_EXTRA}") from None
    endpoint = _AgentEndpoint(func, capability, max_concurrency, health)
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
) -> None:
    """Load ``MODULE:FUNC`` and serve it until SIGINT/SIGTERM (graceful stop).

    Binds to 127.0.0.1 unless told otherwise: the endpoint has no
    authentication, so exposing it to the network must be a decision.
    Every setup problem (bad target, port taken, web stack missing) is a
    ``ConfigError`` raised before anything listens.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"port {port} is out of range (fix: choose a port in 1..65535, or 0 for any free one)"
        )
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(f"`podium agent serve` needs uvicorn {_SERVER_EXTRA}") from None
    cwd = Path.cwd()
    func = load_callable(target, base_dir=cwd)
    health_fn = load_callable(health, base_dir=cwd, where="--health: ") if health else None
    app = make_app(func, capability=capability, max_concurrency=max_concurrency, health=health_fn)
    # uvicorn's own logging setup, plus Podium's loggers on the same handler so
    # the banner and a failing agent's traceback show up in the server log.
    levels = uvicorn.config.LOG_LEVELS
    if log_level not in levels:
        raise ConfigError(f"unknown log level {log_level!r} (fix: use one of {', '.join(levels)})")
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["podium"] = {"handlers": ["default"], "level": levels[log_level],
                                       "propagate": False}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=log_config,
        log_level=log_level,
        lifespan="off",
        ws="none",
        server_header=False,
        proxy_headers=False,
    )
    sock = _bind(host, port)
    try:
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - warning about it, not binding by default
            log.warning("listening on every interface (%s): the agent has no authentication", host)
        log.info(
            "serving %s as capability '%s' on %s (POST /invoke, GET /health)",
            target, capability, _url_of(sock),
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


class _AgentEndpoint:
    """The two routes plus the in-flight count they share (one event loop, no lock)."""

    def __init__(
        self,
        func: Callable[[Task], Any],
        capability: str,
        max_concurrency: int | None,
        health: Callable[[], Any] | None,
    ) -> None:
        # PythonAgent already knows how to call sync (in a thread) and async
        # functions; reusing it keeps the two transports behaving the same.
        self._agent = PythonAgent(func, id=capability, capabilities=[capability])
        self._capability = capability
        self._max = max_concurrency
        self._health = health
        self._inflight = 0

    @property
    def load(self) -> float:
        return min(1.0, self._inflight / self._max) if self._max else 0.0

    async def invoke(self, request: Request) -> Response:
        raw = await request.body()
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

    async def health(self, request: Request) -> Response:
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
        body: dict[str, Any] = {
            "status": status,
            "load": load,
            "capability": self._capability,
            "inflight": self._inflight,
            "max_concurrency": self._max,
        }
        if detail:
            body["detail"] = detail
        # 503 lets plain load balancers and probes act on it too; Podium reads the body.
        return _json(503 if status == "unhealthy" else 200, orjson.dumps(body))


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
    body = orjson.dumps({"error": {"type": error_type, "message": message, "retryable": retryable}})
    response = _json(status, body)
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


def _bind(host: str, port: int) -> socket.socket:
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


def _url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
