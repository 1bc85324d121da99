"""The HTTP API of ``podium serve``: runs, workflows, agents, alerts and failures, with
bearer tokens from the first line.

FastAPI (OpenAPI at ``/openapi.json``, a docs page at ``/docs``) over the same
engine and store as the CLI: a submitted run is started in this process on the
embedded database (SQLite) and stored for the workers on a shared one
(PostgreSQL). Every answer that is not a success has one shape, the CLI's
``--json`` error document: ``{"error": {"type", "message", "exit_code"[,
"problems"]}}``, with the HTTP status its type calls for (404 unknown run, 422 a
definition or an input refused, 409 a conflict, 503 the database unusable).

**Authentication.** Every route but ``/healthz``, ``/readyz`` and the docs needs
``Authorization: Bearer <token>`` (``podium token create``) with a scope that
allows it: ``read`` for what reads and streams, ``write`` for submit, cancel,
resume, rollback and acknowledgements, ``admin`` for workflow registration.
401 without a token or with one unknown, expired or revoked; 403 with a scope
too small. While no usable token exists, a server bound to a loopback address
is open (anyone on this machine may use it; ``podium serve`` says so at
start-up); a server bound elsewhere is never open (``--insecure-no-auth``
excepted).

**The dashboard** (``podium.server.dashboard``) is the page at ``/``. It logs in
with a token once (``POST /session``) and then sends a session cookie instead of
the header; a request so authenticated that changes something must also carry
``X-CSRF-Token`` (``podium.server.session``). A request with an ``Authorization``
header is judged by that header alone.

**Submitting twice.** ``Idempotency-Key`` (up to 200 printable characters) makes
the run's id from the key (and the token's id): the same key again returns the
run it started (200, ``"created": false``), never a second one; the same key
with another workflow or input is refused (409).

**Live events.** ``GET /runs/{id}/events`` is a Server-Sent Events stream of the
run's committed events, each with its number as ``id``; a client that reconnects
with ``Last-Event-ID`` (or ``?after=N``) gets what it missed and nothing twice.
It ends after the run's last event, with an ``end`` event. ``GET /events`` is
every run's events in commit order (the store's feed), ids ``<commit>-<number>-<run
id>``, resumable the same way; it goes on until the client leaves. Both are fed by
one reader of the feed per process (``podium.server.feed_hub``), so open streams
cost the database nothing each. A stream whose client falls more than 10,000 events
(or 16 MiB) behind is closed, after a comment line saying so (if the client still
reads); reconnecting with ``Last-Event-ID`` goes on from there, nothing missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from podium.docs import alert_doc, error_doc, event_doc, run_doc, with_times
from podium.errors import (
    ConfigError,
    DefinitionError,
    InputError,
    PodiumError,
    RunExists,
    RunHeld,
    RunNotFound,
    StoreError,
    TooManyAgents,
)
from podium.server.feed_hub import feed_text, frames_of
from podium.server.session import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, Sessions
from podium.state import TERMINAL_RUN_STATUSES, RunStatus
from podium.store.base import JoinLimits

if TYPE_CHECKING:
    from podium.auth import Authenticator, Principal
    from podium.definition.models import Workflow
    from podium.engine import Engine
    from podium.server.app import PodiumServer

__all__ = ["ApiConfig", "ApiError", "build_api", "local_client"]

MAX_PAGE = 500
_KEY_MAX = 200
_POLL_S = 0.25  # a stream reads the store at least this often while its run goes on
_RESTING = frozenset({*TERMINAL_RUN_STATUSES, RunStatus.WAITING})
_FEED_PAGE = 500  # events read from the feed at a time
_KEEPALIVE_S = 15.0  # a comment on a quiet stream this often
# What a stream the feed's reader cut off (too far behind, or the server stops) says
# last, to a client that still reads: what it missed stays in the store.
_CUT_NOTE = (b": podium: this stream is closed (it fell too far behind, or the server"
             b" stops); reconnect with Last-Event-ID to go on\n\n")
_OPEN_CHECK_S = 5.0  # whether any token exists is looked up at most this often
_SESSION_BODY_MAX = 4096  # the dashboard's login: a token in a small JSON document
# The scope a change to a path's first segment needs, to name it in a 401's fix.
_SCOPE_HINTS = {"agents": "agent", "workflows": "admin"}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # need no CSRF header


class ApiError(Exception):
    """An answer that is not a success, in the one error shape."""

    def __init__(self, status: int, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.extra = status, kind, message, extra

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"type": self.kind, "message": self.message,
                                       "exit_code": 2 if self.status < 500 else 3,
                                       **self.extra}},
                            status_code=self.status,
                            headers={"WWW-Authenticate": "Bearer"} if self.status == 401
                            else None)


def _status_of(exc: PodiumError) -> int:
    if isinstance(exc, RunNotFound):
        return 404
    if isinstance(exc, DefinitionError | InputError):
        return 422
    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, ConfigError):
        return 409  # the request is understood; the state of things refuses it
    return 400


class ApiConfig(BaseModel):
    """How the API guards itself (from ``podium serve``'s flags)."""

    open_without_tokens: bool = True  # a loopback bind, or --insecure-no-auth
    # Open to clients on this machine only (a loopback bind): a request a proxy relays
    # here (Forwarded, X-Forwarded-For) is someone else's and needs a token.
    local_only: bool = True
    # How many agents may be joined at once (POST /agents), by one token and in all:
    # each is registered, health-checked and given an HTTP client by every process
    # that executes runs on the database.
    join_limits: JoinLimits = Field(default_factory=JoinLimits)


# --- request bodies ----------------------------------------------------------------

class RunSubmit(BaseModel):
    """A run to start: an inline definition, or a registered workflow by name."""

    definition: dict[str, Any] | None = Field(
        None, description="A workflow definition (the workflow file as JSON)")
    workflow: str | None = Field(None, max_length=128,
                                 description="A registered workflow's name")
    version: str | int | None = Field(None, description="Its version (default: the newest)")
    input: Any = Field(None, description="The run's input")
    queue: str | None = Field(None, max_length=64,
                              description="The queue workers take it from (PostgreSQL)")


class AgentJoin(BaseModel):
    """An HTTP agent joining the fleet (``POST /agents``), as its agents-file entry says
    it, plus how long it lives without a heartbeat."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    url: str = Field(min_length=1, max_length=2048, description="Its http(s) base URL")
    capabilities: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=64)
    region: str | None = Field(None, max_length=64)
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=32)
    weight: float = Field(1.0, gt=0, le=1000)
    max_concurrency: int | None = Field(None, ge=1, le=100_000)
    timeout: float | None = Field(None, gt=0, le=3600, description="Seconds per call")
    token: str | None = Field(None, min_length=16, max_length=512,
                              description="A bearer token Podium must send it (16-512)")
    ttl_s: float = Field(30.0, ge=1, le=3600, description=(
        "Seconds it stays without a heartbeat (send one every third of it)"))


class AckBody(BaseModel):
    by: str | None = Field(None, max_length=128)


class ErrorBody(BaseModel):
    type: str = Field(description="A stable word: run_not_found, definition_error, ...")
    message: str
    exit_code: int = Field(description="What the command line would exit with")
    problems: list[dict[str, Any]] | None = Field(
        None, description="A definition's problems, as podium validate lists them")


class ErrorDoc(BaseModel):
    """Every answer that is not a success."""

    error: ErrorBody


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorDoc, "description": what} for code, what in (
        (400, "A malformed parameter or header"),
        (401, "No token, or one unknown, expired or revoked"),
        (403, "The token's scope does not allow this"),
        (404, "No such run, workflow or alert"),
        (409, "The state of things refuses it (a finished run, a taken key or version,"
              " too many joined agents)"),
        (413, "The body is over the limit"),
        (422, "The request (or the definition, or the input) is not valid"),
        (503, "The database cannot be used"),
    )}


# --- authentication ------------------------------------------------------------------

class _Guard:
    """Who a request is, and whether its scope allows the route: a bearer token, or the
    dashboard's session cookie (``podium.server.session``) with its CSRF header on
    whatever changes something."""

    def __init__(self, auth: Callable[[], Authenticator | None], config: ApiConfig) -> None:
        self._auth = auth
        self.config = config
        self._open_until = 0.0
        self._open = False
        self._sessions: Sessions | None = None

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:
            auth = self._auth()
            self._sessions = Sessions(auth.store if auth is not None else None,
                                      auth.clock if auth is not None else None)
        return self._sessions

    async def is_open(self, request: Request) -> bool:
        """No token is needed: none exists, and the server may be open (a loopback bind:
        then only to clients on this machine, not what a proxy relays here)."""
        auth = self._auth()
        if auth is None or not self.config.open_without_tokens:
            return False  # not started yet: nobody in
        now = time.monotonic()
        if now >= self._open_until:
            self._open = not await auth.any_tokens()
            self._open_until = now + _OPEN_CHECK_S
        return self._open and (not self.config.local_only or local_client(request))

    async def identify(self, request: Request, authorization: str | None,
                       scope: str) -> Principal | None:
        """Who sent ``request`` (None: no token is needed); ``ApiError`` 401 for nobody.
        ``scope`` only names the token to make in the error's fix."""
        if await self.is_open(request):
            return None
        fix = "send Authorization: Bearer TOKEN (make one: podium token create --scope"
        principal: Principal | None = None
        if not authorization and SESSION_COOKIE in request.cookies:
            principal = await self._by_session(request, scope)
        elif not authorization:
            raise ApiError(401, "unauthorized", f"no bearer token ({fix} {scope})")
        else:
            kind, _, presented = authorization.partition(" ")
            auth = self._auth()
            if kind.lower() == "bearer" and presented.strip() and auth is not None:
                principal = await auth.authenticate(presented.strip())
        if principal is None:
            raise ApiError(401, "unauthorized", "the bearer token is unknown,"
                           f" expired or revoked ({fix} {scope})")
        return principal

    def need(self, scope: str) -> Callable[..., Coroutine[Any, Any, Principal | None]]:
        async def check(request: Request,
                        authorization: str | None = Header(None, include_in_schema=False),
                        ) -> Principal | None:
            principal = await self.identify(request, authorization, scope)
            if principal is None:
                return None
            from podium.auth import Scope, allows

            if not allows(principal.scope, Scope(scope)):
                raise ApiError(403, "forbidden", f"token '{principal.name}' has scope"
                               f" {principal.scope}; this needs {scope} (fix: a token made"
                               f" with --scope {scope})")
            return principal

        return check

    async def _by_session(self, request: Request, scope: str) -> Principal:
        session = await self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise ApiError(401, "unauthorized", "the session ended (fix: log in again with"
                           f" a token: podium token create --scope {scope})")
        if request.method not in _SAFE_METHODS and not Sessions.csrf_ok(
                session, request.headers.get(CSRF_HEADER)):
            raise ApiError(403, "csrf", f"a request made with the session cookie must echo"
                           f" the {CSRF_COOKIE} cookie in {CSRF_HEADER}")
        return session.principal


class _IdentifyFirst:
    """A request that may carry a body is identified before its body is read.

    FastAPI reads and parses a route's body before it solves the route's
    dependencies, the guard among them: without this, anyone who reaches the
    server could have it read and parse a body up to ``max_body_bytes``
    (a 1 MB definition: tens of milliseconds of CPU) before hearing 401. The
    credentials (a bearer token, or the session cookie with its CSRF header)
    are checked here first, as the guard checks them; the route's dependency
    then checks their scope (a cached verification: no second hash). The
    dashboard's login and logout (``/session``) are the exceptions, since the
    login's token is its body: that body is bounded to ``_SESSION_BODY_MAX``.
    """

    def __init__(self, app: Any, guard: _Guard) -> None:
        from podium.httpd import BodyLimit

        self.app, self.guard = app, guard
        self.session = BodyLimit(app, _SESSION_BODY_MAX, shape=lambda m: bytes(
            ApiError(413, "payload_too_large", m).response().body))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/session":
            await self.session(scope, receive, send)
            return
        request = Request(scope)
        try:
            await self.guard.identify(request, request.headers.get("authorization"),
                                      _SCOPE_HINTS.get(scope["path"].split("/", 2)[1], "write"))
        except ApiError as exc:
            await exc.response()(scope, receive, send)
            return
        except PodiumError as exc:  # the store cannot be read: neither allowed nor refused
            await JSONResponse(error_doc(exc), status_code=_status_of(exc))(
                scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- the app -------------------------------------------------------------------------

def build_api(server: PodiumServer, config: ApiConfig | None = None, *, version: str = "",
              lifespan: Any = None) -> FastAPI:
    """The API over ``server``'s engine and authenticator (both made by ``lifespan``,
    which starts the server)."""
    guard = _Guard(lambda: server.auth, config or ApiConfig())
    read, write, admin, agent = (Depends(guard.need(s))
                                 for s in ("read", "write", "admin", "agent"))
    app = FastAPI(title="Podium", version=version or "0", lifespan=lifespan,
                  description="Durable orchestration for multi-agent workflows.",
                  responses=_ERRORS)
    app.add_middleware(_IdentifyFirst, guard=guard)
    # One lock per Idempotency-Key in use, with the number of requests holding or
    # awaiting it: the last one out removes it.
    keys: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def engine() -> Engine:
        e: Engine = server.engine
        return e

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(PodiumError)
    async def _podium_error(_r: Request, exc: PodiumError) -> JSONResponse:
        return JSONResponse(error_doc(exc), status_code=_status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_r: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                     "message": e.get("msg", "")} for e in exc.errors()]
        text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return ApiError(422, "usage", f"the request is not valid: {text}",
                        problems=problems).response()

    @app.exception_handler(RecursionError)
    async def _too_deep(_r: Request, _exc: RecursionError) -> JSONResponse:
        return ApiError(422, "usage", "the request body is nested too deep (fix: plain JSON"
                        " values, nested at most 255 deep)").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "usage")
        return ApiError(exc.status_code, kind, str(exc.detail)).response()

    # --- health ---------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> JSONResponse:
        """Liveness: the process answers. Open, and says nothing more; ``?verbose`` adds
        the database, owner, runs and agents for a client on this machine only."""
        if "verbose" not in request.query_params:
            return JSONResponse({"status": "ok"})
        if not local_client(request):
            raise ApiError(403, "forbidden", "/healthz?verbose answers clients on this"
                           " machine only (fix: ask /healthz for liveness)")
        return JSONResponse(server.health())

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Readiness: the database answers (and its schema is this code's). Open."""
        try:
            await asyncio.wait_for(engine().store.now(), 5.0)
        except (PodiumError, OSError, TimeoutError) as exc:
            message = exc.message if isinstance(exc, PodiumError) else str(exc) or "timed out"
            return JSONResponse({"status": "unready", "reason": message}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse,
             dependencies=[read])
    async def metrics() -> Response:
        """Prometheus exposition (a read token: Prometheus's authorization.credentials_file)."""
        from podium.observe.metrics import CONTENT_TYPE

        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE)

    # --- runs -----------------------------------------------------------------
    @app.post("/runs", tags=["runs"], status_code=202)
    async def submit(body: RunSubmit, request: Request,
                     idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
                     traceparent: str | None = Header(None, max_length=128),
                     who: Principal | None = write) -> JSONResponse:
        """Start a run (SQLite: here; PostgreSQL: stored for the workers)."""
        wf = await _workflow_of(body)
        run_id = None
        if idempotency_key is not None:
            if not 0 < len(idempotency_key) <= _KEY_MAX or not idempotency_key.isprintable():
                raise ApiError(400, "usage", f"Idempotency-Key: 1 to {_KEY_MAX} printable"
                               " characters (fix: e.g. a UUID)")
            scope = who.token_id if who is not None else ""
            digest = hashlib.sha256(f"{scope}\n{idempotency_key}".encode()).hexdigest()
            run_id = f"api-{digest[:24]}"
        users: list[int] = [0]
        lock: Any = contextlib.nullcontext()
        if run_id is not None:
            lock, users = keys.setdefault(run_id, (asyncio.Lock(), [0]))
            users[0] += 1
        try:
            async with lock:
                if run_id is not None:
                    replay = await _replay(run_id, wf, body)
                    if replay is not None:
                        return replay
                try:
                    run = await _start(wf, body, run_id, traceparent)
                except (RunExists, StoreError):
                    # Another server took the same key a moment before (its row won):
                    # the answer is the run it started, not an outage.
                    replay = await _replay(run_id, wf, body) if run_id else None
                    if replay is None:
                        raise
                    return replay
        finally:
            if run_id is not None:
                users[0] -= 1
                if users[0] == 0:
                    keys.pop(run_id, None)
        return JSONResponse({"run_id": run.run_id, "status": run.status,
                             "workflow": run.workflow, "version": run.version,
                             "created": True}, status_code=202,
                            headers={"Location": f"/runs/{run.run_id}"})

    async def _workflow_of(body: RunSubmit) -> Workflow:
        from podium.definition.loader import workflow_from_dict

        if (body.definition is None) == (body.workflow is None):
            raise ApiError(422, "usage", "give either definition (a workflow) or workflow (a"
                           " registered one's name)")
        if body.definition is not None:
            definition = await _with_registered(dict(body.definition))
            return workflow_from_dict(definition, source="definition")
        found = await engine().store.registered_workflow(
            str(body.workflow), None if body.version is None else str(body.version))
        if found is None:
            what = f"workflow '{body.workflow}'" + (
                "" if body.version is None else f" version {body.version}")
            raise ApiError(404, "workflow_not_found", f"no registered {what} (fix: register"
                           " it: POST /workflows, or podium workflow register FILE)")
        return workflow_from_dict(found.definition, source=f"registered {found.name}")

    async def _with_registered(definition: dict[str, Any]) -> dict[str, Any]:
        """An inline definition's sub-workflows that it does not define, from the registry
        (a registered definition has its own embedded already)."""
        steps = definition.get("steps")
        defined = definition.get("workflows")
        if not isinstance(steps, list) or not isinstance(defined or {}, dict):
            return definition
        defined = dict(defined or {})
        for step in steps:
            name = step.get("workflow") if isinstance(step, dict) else None
            if not isinstance(name, str) or name in defined or name == definition.get("name"):
                continue
            version = step.get("version")
            found = await engine().store.registered_workflow(
                name, None if version is None else str(version))
            if found is not None:
                defined[name] = found.definition
        if defined:
            definition["workflows"] = defined
        return definition

    async def _replay(run_id: str, wf: Workflow, body: RunSubmit) -> JSONResponse | None:
        try:
            run = await engine().store.get_run(run_id)
        except RunNotFound:
            return None
        same = (run.workflow == wf.name and str(run.version) == str(wf.version)
                and _canon(run.definition) == _canon(wf.to_dict())
                and _canon(run.input) == _canon(_input_with_defaults(wf, body.input)))
        if not same:
            raise ApiError(409, "idempotency_conflict", "this Idempotency-Key started run"
                           f" {run.run_id} of another workflow, version or input (fix: a new"
                           " key for a new run)", run_id=run.run_id)
        return JSONResponse({"run_id": run.run_id, "status": run.status,
                             "workflow": run.workflow, "version": run.version,
                             "created": False}, status_code=200,
                            headers={"Location": f"/runs/{run.run_id}"})

    async def _start(wf: Workflow, body: RunSubmit, run_id: str | None,
                     traceparent: str | None) -> Any:
        from podium.store.base import WorkerStore

        e = engine()
        # The submitter's trace (W3C traceparent) is the run's parent when tracing is on;
        # a worker executing a stored run finds it in the store.
        if isinstance(e.store, WorkerStore):
            return await e.submit(wf, body.input, queue=body.queue, run_id=run_id,
                                  agents_source=server.runtime.agents_source,
                                  traceparent=traceparent)
        handle = await e.start(wf, body.input, run_id=run_id,
                               agents_source=server.runtime.agents_source,
                               traceparent=traceparent)
        return handle.record

    @app.get("/runs", tags=["runs"], dependencies=[read])
    async def list_runs(
        status: str | None = Query(None, description="Only runs with this status"),
        workflow: str | None = Query(None, max_length=128),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        cursor: str | None = Query(None, max_length=256,
                                   description="next_cursor of the page before"),
    ) -> dict[str, Any]:
        """Runs, newest first, a page at a time (``next_cursor`` until the last page)."""
        from podium.state import RUN_STATUSES

        if status is not None and status not in RUN_STATUSES:
            raise ApiError(422, "usage", f"status {status!r} is not a run status (fix: one of"
                           f" {', '.join(RUN_STATUSES)})")
        before = _cursor(cursor) if cursor else None
        runs = await engine().store.list_runs(status=status, workflow=workflow,
                                              limit=limit + 1, before=before)
        page, more = runs[:limit], len(runs) > limit
        docs = [with_times({"run_id": r.run_id, "parent": r.parent, "workflow": r.workflow,
                            "version": r.version, "status": r.status,
                            "created_at": r.created_at, "started_at": r.started_at,
                            "finished_at": r.finished_at, "duration_s": r.duration_s,
                            "error": None if r.error is None else r.error.public()},
                           ("created_at", "started_at", "finished_at")) for r in page]
        last = page[-1] if page else None
        return {"runs": docs,
                "next_cursor": f"{last.created_at!r}|{last.run_id}" if more and last else None}

    @app.get("/runs/{run_id}", tags=["runs"], dependencies=[read])
    async def get_run(run_id: str, verbose: bool = False) -> dict[str, Any]:
        """One run with its steps and its timeline (tracebacks with ``verbose``)."""
        store = engine().store
        run = await store.get_run(_id(run_id))
        doc = run_doc(run, verbose=verbose)
        doc["timeline"] = [event_doc(e, verbose=verbose)
                           for e in await store.get_events(run.run_id)]
        return doc

    @app.post("/runs/{run_id}/cancel", tags=["runs"], status_code=202, dependencies=[write])
    async def cancel(run_id: str) -> dict[str, Any]:
        """Cancel a run, here or in whichever process executes it."""
        e = engine()
        run = await e.store.get_run(_id(run_id))
        if run.status in TERMINAL_RUN_STATUSES:
            raise ApiError(409, "config_error", f"run {run.run_id} is {run.status}: nothing"
                           " to cancel", run_id=run.run_id)
        return {"run_id": run.run_id,
                "cancel_requested": await e.cancel(run.run_id, "cancelled through the API")}

    @app.post("/runs/{run_id}/resume", tags=["runs"], status_code=202, dependencies=[write])
    async def resume(run_id: str) -> dict[str, Any]:
        """Continue a run a dead process left, or redrive a failed or cancelled one, here."""
        e = engine()
        try:
            handle = await e.resume(_id(run_id))
        except RunHeld as exc:
            raise ApiError(409, "config_error", exc.message) from None
        return {"run_id": handle.run_id, "status": handle.record.status}

    @app.post("/runs/{run_id}/rollback", tags=["runs"], status_code=202,
              dependencies=[write])
    async def rollback(run_id: str) -> dict[str, Any]:
        """Run the compensations of a run's succeeded steps, newest first, here."""
        e = engine()
        run = await e.store.get_run(_id(run_id))
        e.check_compensable(run)
        handle = await e.rollback(run.run_id)
        return {"run_id": handle.run_id, "status": handle.record.status}

    @app.get("/runs/{run_id}/events", tags=["runs"], dependencies=[read],
             response_class=StreamingResponse)
    async def run_events(run_id: str, request: Request,
                         last_event_id: str | None = Header(None, alias="Last-Event-ID"),
                         after: int | None = Query(None, ge=0)) -> StreamingResponse:
        """The run's committed events as Server-Sent Events, resumable (see above)."""
        store = engine().store
        run = await store.get_run(_id(run_id))
        start = after or 0
        if last_event_id is not None:
            if not last_event_id.isdigit() or len(last_event_id) > 12:
                raise ApiError(400, "usage", "Last-Event-ID: the number of an event this"
                               " stream sent")
            start = int(last_event_id)
        return StreamingResponse(_stream(run.run_id, start, request),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def _stream(run_id: str, sent: int, request: Request) -> AsyncIterator[bytes]:
        """The run's events from the store, then from the process's one reader of the
        feed (``podium.server.feed_hub``); the store again only when the run may have
        come to rest (an event of the run itself) or the feed shows a gap."""
        from podium.httpd import ABORT_EXTENSION

        store = engine().store
        hub = server.feed_hub
        sub = None
        try:
            yield b": podium\n\n"  # the stream is open: headers and a first byte go out
            if hub is not None:
                # Joined before the store is read: what commits after that read comes
                # through the hub (and what both give is sent once, by number).
                sub = await hub.join_now(run_id)
                sub.close = request.scope.get("extensions", {}).get(ABORT_EXTENSION)
            while True:
                events = await store.get_events(run_id)
                if events[sent:]:
                    yield b"".join(_run_frame(n, e)
                                   for n, e in enumerate(events[sent:], start=sent + 1))
                sent = max(sent, len(events))
                run = await store.get_run(run_id)
                # A waiting run has nothing more to say until someone answers it: the
                # stream ends there too (a client reconnects after the answer).
                if run.status in _RESTING and sent >= len(await store.get_events(run_id)):
                    yield f"event: end\ndata: {json.dumps({'status': run.status})}\n\n".encode()
                    return
                if sub is None:  # (no hub: an app not started by PodiumServer.start)
                    await asyncio.sleep(_POLL_S)
                    continue
                while True:
                    if sub.cut:
                        yield _CUT_NOTE
                        return
                    frames = sub.take(_FEED_PAGE)
                    if not frames:
                        if await request.is_disconnected():
                            return
                        sub.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(sub.wake.wait(), _KEEPALIVE_S)
                        continue
                    out, look = [], False
                    for frame in frames:
                        n = frame.position.seq
                        if n <= sent:
                            continue  # sent from the store already
                        if n != sent + 1 or frame.event is None:
                            look = True  # a gap, or an event of a newer Podium: the store
                            break
                        out.append(_run_frame(n, frame.event))
                        sent = n
                        look = look or frame.event.type.startswith(("run_", "rollback_"))
                    if out:
                        yield b"".join(out)
                    if look:
                        break
                await asyncio.sleep(0.01)  # (as before: the store's view to settle)
        finally:
            if sub is not None and hub is not None:
                hub.leave(sub)

    @app.get("/events", tags=["runs"], dependencies=[read],
             response_class=StreamingResponse)
    async def all_events(
            request: Request,
            last_event_id: str | None = Header(None, alias="Last-Event-ID"),
            after: str | None = Query(None, max_length=300, description=(
                "Go on after this event id (as the stream sent it); 0: from the first"
                " event the feed holds. Without it (and without Last-Event-ID): only what"
                " is committed from now on.")),
            types: str | None = Query(None, max_length=2000, description=(
                "Only these event types, comma separated (e.g. run_started,run_finished)."
            ))) -> StreamingResponse:
        """Every run's committed events as Server-Sent Events, in commit order, resumable
        with ``Last-Event-ID``. The stream goes on until the client leaves."""
        from podium.store.base import FeedPosition

        store = server.runtime.store
        wanted = None if types is None else frozenset(
            t.strip() for t in types.split(",") if t.strip())
        mark = last_event_id if last_event_id is not None else after
        if mark is None:
            start = await store.feed_head()
        elif mark == "0":
            start = FeedPosition()
        else:
            start = _feed_id(mark, "Last-Event-ID" if last_event_id is not None else "after")
        return StreamingResponse(_feed_stream(start, wanted, request),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def _feed_stream(position: Any, wanted: frozenset[str] | None,
                           request: Request) -> AsyncIterator[bytes]:
        """Read from the store for this stream alone until the process's one reader of
        the feed (``podium.server.feed_hub``) holds its position, then take that
        reader's frames: a stream costs the database nothing once it has caught up."""
        from podium.httpd import ABORT_EXTENSION

        hub = server.feed_hub
        store = server.runtime.store
        sub = None
        quiet_since = time.monotonic()
        try:
            yield b": podium\n\n"
            while hub is None or (sub := hub.join(position)) is None:
                page, scanned = await store.read_feed(position, limit=_FEED_PAGE)
                out = _feed_wire(frames_of(page, scanned, position), wanted, position)
                if out:
                    quiet_since = time.monotonic()
                    yield out
                if scanned != position:
                    position = scanned
                    continue  # more may be waiting: no sleep
                if await request.is_disconnected():
                    return
                if time.monotonic() - quiet_since > _KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield b": keep-alive\n\n"
                await asyncio.sleep(_POLL_S)
            sub.close = request.scope.get("extensions", {}).get(ABORT_EXTENSION)
            while True:
                if sub.cut:
                    # Fell too far behind (or the server stops): what it missed stays
                    # in the store, for a reconnect with Last-Event-ID.
                    yield _CUT_NOTE
                    return
                if sub.queue:
                    batch = sub.take(_FEED_PAGE)
                    out = _feed_wire(batch, wanted, position)
                    position = batch[-1].position
                    if out:
                        quiet_since = time.monotonic()
                        yield out
                    continue
                if await request.is_disconnected():
                    return
                if time.monotonic() - quiet_since > _KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield b": keep-alive\n\n"  # a proxy keeps the connection; a gone client shows
                sub.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.wake.wait(), _KEEPALIVE_S)
        finally:
            if sub is not None and hub is not None:
                hub.leave(sub)

    # --- workflows ------------------------------------------------------------
    @app.post("/workflows", tags=["workflows"], status_code=201, dependencies=[admin])
    async def register(definition: dict[str, Any]) -> JSONResponse:
        """Register a workflow version (checked as ``podium validate`` checks it)."""
        from podium.definition.loader import workflow_from_dict

        wf = workflow_from_dict(await _with_registered(dict(definition)), source="definition")
        record, new = await engine().store.register_workflow(wf.name, str(wf.version),
                                                              wf.to_dict())
        return JSONResponse(with_times({"name": record.name, "version": record.version,
                                        "digest": record.digest,
                                        "registered_at": record.registered_at, "new": new},
                                       ("registered_at",)),
                            status_code=201 if new else 200)

    @app.get("/workflows", tags=["workflows"], dependencies=[read])
    async def workflows() -> list[dict[str, Any]]:
        """Registered workflows by name, each name's versions newest first."""
        out: dict[str, list[dict[str, Any]]] = {}
        for r in await engine().store.registered_workflows():
            out.setdefault(r.name, []).append(with_times(
                {"version": r.version, "digest": r.digest, "registered_at": r.registered_at},
                ("registered_at",)))
        return [{"name": n, "versions": v} for n, v in out.items()]

    @app.get("/workflows/{name}", tags=["workflows"], dependencies=[read])
    async def workflow(name: str, version: str | None = None,
                       format: Literal["json", "mermaid"] = "json") -> Response:
        """One registered version (default: the newest), or its graph as Mermaid."""
        found = await engine().store.registered_workflow(name, version)
        if found is None:
            raise ApiError(404, "workflow_not_found", f"no registered workflow '{name}'"
                           + ("" if version is None else f" version {version}"))
        if format == "mermaid":
            from podium.definition.loader import workflow_from_dict
            from podium.definition.plan import compile_plan, mermaid

            plan = compile_plan(workflow_from_dict(found.definition))
            return PlainTextResponse(mermaid(plan))
        return JSONResponse(with_times({"name": found.name, "version": found.version,
                                        "digest": found.digest,
                                        "registered_at": found.registered_at,
                                        "definition": found.definition}, ("registered_at",)))

    # --- agents, alerts, failures ---------------------------------------------
    @app.get("/agents", tags=["fleet"], dependencies=[read])
    async def agents() -> dict[str, Any]:
        """The fleet as this server sees it: health, in flight, breakers, regions."""
        report: dict[str, Any] = engine().registry.report()
        return report

    @app.post("/agents", tags=["fleet"], status_code=201)
    async def join(body: AgentJoin, principal: Principal | None = agent) -> JSONResponse:
        """An HTTP agent joins every process that executes runs on this database; it
        stays while its heartbeats come (``ttl_s``)."""
        from podium.agents.config import build_joined_agent

        joined = server.runtime.joined
        if joined is None:
            raise ApiError(409, "config_error", "this server does not take agents that join")
        if body.id not in joined.ids and engine().registry.get(body.id) is not None:
            raise ApiError(409, "config_error", f"agent id {body.id!r} is one of this"
                           " server's own agents (fix: give the joining agent another id)")
        spec = body.model_dump(exclude={"ttl_s"}, exclude_none=True)
        if not spec.get("labels"):
            spec.pop("labels", None)
        try:  # refused now (422), not by every process that reads it later
            probe = build_joined_agent({k: v for k, v in spec.items() if k != "token"})
        except ConfigError as exc:
            raise ApiError(422, "input_error", exc.message) from None
        await probe.aclose()
        limits = guard.config.join_limits
        try:
            row, created = await server.runtime.store.join_agent(
                body.id, spec, _token_id(principal), body.ttl_s, limits)
        except TooManyAgents as exc:
            # 409, not 429: nothing here passes with time alone (no rate is exceeded);
            # the fleet is full until an agent leaves or expires, or the limit is
            # raised, and podium agent serve --register stops on a 409 saying why.
            flag = "--max-joined-agents" if exc.per_token else "--max-joined-agents-total"
            whose = "this token's" if exc.per_token else "all tokens'"
            raise ApiError(409, "too_many_agents", f"agent {body.id!r} not joined:"
                           f" {whose} live joined agents are at the limit of {exc.limit}"
                           f" ({flag}) (fix: DELETE /agents/{{id}} one that left, or wait"
                           f" for its ttl_s to pass; or raise podium serve's {flag})"
                           ) from None
        await joined.round()  # in this server's registry at once
        return JSONResponse(
            with_times({"id": row.id, "created": created, "registered_at": row.registered_at,
                        "expires_at": row.expires_at, "heartbeat_s": body.ttl_s / 3},
                       ("registered_at", "expires_at")),
            status_code=201 if created else 200)

    @app.post("/agents/{agent_id}/heartbeat", tags=["fleet"])
    async def heartbeat(agent_id: str, ttl_s: float = Query(30.0, ge=1, le=3600),
                        principal: Principal | None = agent) -> dict[str, Any]:
        """Keep a joined agent in the fleet for ``ttl_s`` more seconds."""
        expires = await server.runtime.store.agent_heartbeat(
            _agent_id(agent_id), _token_id(principal), ttl_s)
        if expires is None:
            raise ApiError(404, "not_found", f"agent {agent_id!r} is not joined (it expired,"
                           " left, or another token registered it) (fix: POST /agents again)")
        return with_times({"id": agent_id, "expires_at": expires}, ("expires_at",))

    @app.delete("/agents/{agent_id}", tags=["fleet"], status_code=204)
    async def leave(agent_id: str, principal: Principal | None = agent) -> Response:
        """A joined agent leaves (its own token, or an admin's)."""
        from podium.auth import Scope

        whose = None if principal is None or principal.scope == Scope.ADMIN else \
            principal.token_id
        if not await server.runtime.store.leave_agent(_agent_id(agent_id), whose):
            raise ApiError(404, "not_found", f"agent {agent_id!r} is not joined (or another"
                           " token registered it)")
        if server.runtime.joined is not None:
            await server.runtime.joined.round()
        return Response(status_code=204)

    @app.get("/alerts", tags=["alerts"], dependencies=[read])
    async def alerts(status: Literal["firing", "resolved"] | None = None,
                     limit: int = Query(100, ge=1, le=MAX_PAGE)) -> list[dict[str, Any]]:
        return [alert_doc(a) for a in await engine().store.list_alerts(status=status,
                                                                       limit=limit)]

    @app.post("/alerts/{key}/ack", tags=["alerts"])
    async def ack(key: str, body: AckBody | None = None,
                  who: Principal | None = write) -> dict[str, Any]:
        """Acknowledge a firing alert: its escalation stops."""
        by = (body.by if body is not None and body.by else None) or (
            who.name if who is not None else "api")
        if not await engine().store.ack_alert(key, by, time.time()):
            raise ApiError(404, "alert_not_found", f"no firing alert '{key}' (see GET"
                           " /alerts?status=firing)")
        return {"key": key, "acked_by": by}

    @app.get("/failures", tags=["alerts"], dependencies=[read])
    async def failures(since_s: float = Query(3600.0, gt=0, le=366 * 86400.0),
                       by: Literal["agent", "step", "type", "workflow"] = "type",
                       ) -> dict[str, Any]:
        """Success rates and the most frequent errors (``podium failures``)."""
        from podium.observe.failures import summarize

        outcomes = await engine().store.attempt_outcomes(time.time() - since_s)
        report: dict[str, Any] = summarize(outcomes, by)
        report["since_s"] = since_s
        return report

    from podium.server.dashboard import add_dashboard

    add_dashboard(app, server, guard)
    return app


def _id(run_id: str) -> str:
    if not 0 < len(run_id) <= 256 or not run_id.isprintable():
        raise ApiError(400, "usage", "a run id is 1 to 256 printable characters")
    return run_id


def _token_id(principal: Principal | None) -> str:
    """Whose registration: the token's id; on a server open without tokens, "local"."""
    return principal.token_id if principal is not None else "local"


def _agent_id(agent_id: str) -> str:
    if not 0 < len(agent_id) <= 128 or not agent_id.isprintable():
        raise ApiError(400, "usage", "an agent id is 1 to 128 printable characters")
    return agent_id


def _run_frame(n: int, event: Any) -> bytes:
    """An event of ``GET /runs/{id}/events``: its number in the run as ``id``."""
    data = json.dumps(event_doc(event), default=str, separators=(",", ":"))
    return f"id: {n}\nevent: {event.type}\ndata: {data}\n\n".encode()


def _feed_wire(frames: list[Any], wanted: frozenset[str] | None, after: Any) -> bytes:
    """What a stream of ``GET /events`` sends for ``frames`` (after ``after``): the events
    of the types it wants; when it wants none of them, still the place to go on from, so
    a client that reconnects does not read them all again."""
    out = [f.wire for f in frames
           if f.type is not None and (wanted is None or f.type in wanted)]
    if not out and frames and frames[-1].position != after:
        return f"id: {feed_text(frames[-1].position)}\n\n".encode()
    return b"".join(out)


def _feed_id(text: str, what: str) -> Any:
    """An event id of ``GET /events``: ``<commit>-<number>-<run id>``."""
    from podium.store.base import FeedPosition

    tx, _, rest = text.partition("-")
    seq, _, run_id = rest.partition("-")
    if (tx.isascii() and tx.isdigit() and seq.isascii() and seq.isdigit() and run_id
            and len(tx) <= 19 and len(seq) <= 18 and len(run_id) <= 256
            and run_id.isprintable() and int(tx) < 1 << 63 and int(seq) < 1 << 63):
        return FeedPosition(int(tx), run_id, int(seq))
    raise ApiError(400, "usage", f"{what}: not an event id this stream sent (fix: pass the"
                   " id of the last event received, or 0 for the start of the feed)")


def _cursor(text: str) -> tuple[float, str]:
    at, sep, rid = text.partition("|")
    try:
        if not sep or not rid:
            raise ValueError(text)
        return float(at), rid
    except ValueError:
        raise ApiError(400, "usage", "cursor: not one this API gave (fix: pass next_cursor"
                       " as it came)") from None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _input_with_defaults(wf: Workflow, value: Any) -> Any:
    from podium.definition.loader import apply_input_defaults

    return apply_input_defaults(wf, {} if value is None else value)


def local_client(request: Any) -> bool:
    """A client on this machine, talking to us directly (no proxy relaying someone else)."""
    import ipaddress

    client = request.scope.get("client")
    if not client:
        return False
    try:
        loopback = ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False
    relayed = any(name in (b"forwarded", b"x-forwarded-for", b"x-real-ip")
                  for name, _ in request.scope["headers"])
    return loopback and not relayed
