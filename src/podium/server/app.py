"""``podium serve``: a long-running engine with ``/metrics`` and ``/healthz``.

On start it takes over runs that a dead process left behind (and keeps
looking for more as leases expire), exposes the engine's own Prometheus
registry, and evaluates alerts. On PostgreSQL it finds them with the workers'
own claim (``FOR UPDATE SKIP LOCKED``, only runs an owner left, never a
submitted one: those are for ``podium worker``), so no two processes take
one run and no scan reads every live run. Binds 127.0.0.1 unless told otherwise, with
the ``Host`` check, origin check and connection deadlines of ``podium.httpd``.

``/healthz`` answers liveness only (``{"status": "ok"}``): it is open, so it
says nothing about the machine. ``/healthz?verbose`` adds the database URL,
the owner (host:pid), runs and agents, for a client on this machine only
(a loopback peer, not relayed by a proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.errors import ConfigError, PodiumError
from podium.httpd import HttpLimits

if TYPE_CHECKING:
    from podium.agents.registry import AgentRegistry

__all__ = ["PodiumServer", "ServerConfig", "create_app", "serve"]

log = logging.getLogger("podium.server")


@dataclass(frozen=True)
class ServerConfig:
    db: str | None = None
    agents_file: Path | None = None
    alerts_file: Path | None = None
    scan_interval_s: float = 5.0
    # Built and checked before the address is bound (``podium a2a serve``); else from
    # the agents file when the server starts.
    registry: AgentRegistry | None = None


class PodiumServer:
    """A runtime with metrics and alerts, and the stale-run scanner, as one unit."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.runtime: Any = None
        self.engine: Any = None
        self.metrics: Any = None
        self.alerts: Any = None
        self._scanner: asyncio.Task[Any] | None = None
        self._stop_worker: asyncio.Event | None = None
        self.resumed: list[str] = []
        self._next_due: float | None = None  # a run backing off after a takeover

    async def start(self) -> None:
        from podium.agents.config import find_agents_file
        from podium.runtime import Runtime, RuntimeConfig

        self.runtime = await Runtime(RuntimeConfig(
            db=self.config.db, registry=self.config.registry,
            agents_file=None if self.config.registry is not None else
            find_agents_file(self.config.agents_file),
            alerts_file=self.config.alerts_file, metrics=True, alerts=True,
            schedules=True)).open()
        self.engine, self.metrics = self.runtime.engine, self.runtime.metrics
        self.alerts = self.runtime.alerts
        self.engine.registry.start_monitor()
        from podium.store.base import WorkerStore

        store = self.runtime.store
        if isinstance(store, WorkerStore):
            from podium.engine.worker import Worker, WorkerConfig

            worker = Worker(self.engine, store, WorkerConfig(
                takeovers_only=True, poll_s=self.config.scan_interval_s))
            self._stop_worker = asyncio.Event()
            self._scanner = asyncio.get_running_loop().create_task(
                worker.run(self._stop_worker), name="podium:takeovers")
            return
        await self.scan()
        self._scanner = asyncio.get_running_loop().create_task(self._scan_loop(),
                                                               name="podium:stale-run-scanner")

    async def scan(self) -> list[str]:
        """Resume every run whose owner is gone; return the ids taken over."""
        from podium.definition.loader import workflow_from_dict

        for run in await self.engine.stale_runs():
            with contextlib.suppress(PodiumError):  # an unusable definition is logged below
                self.alerts.watch_workflow(workflow_from_dict(run.definition))
        taken, self._next_due = await self.engine.recover_stale()
        self.resumed += taken
        return list(taken)

    async def _scan_loop(self) -> None:
        while True:
            wait = self.config.scan_interval_s
            if self._next_due is not None:  # look again when a backing-off run is due
                now = await self.engine.store.now()  # due is on the store's clock
                wait = min(wait, max(0.05, self._next_due - now))
            await asyncio.sleep(wait)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stale-run scan failed")

    async def stop(self) -> None:
        if self._stop_worker is not None and self._scanner is not None:
            self._stop_worker.set()  # hands its runs back to the workers
            with contextlib.suppress(Exception):
                await self._scanner
            self._scanner = None
        if self._scanner is not None:
            self._scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scanner
        if self.runtime is not None:
            await self.runtime.close()

    def health(self) -> dict[str, Any]:
        """The detailed view (``/healthz?verbose``, local clients only)."""
        report = self.engine.registry.report()
        return {
            "status": "ok",
            "db": self.engine.store.url,
            "owner": self.engine.owner,
            "active_runs": self.engine.active_runs,
            "resumed_runs": len(self.resumed),
            "agents": {"overall": report["overall"], **report["totals"]},
            "alerts_firing": len(self.alerts.active),
        }


def create_app(config: ServerConfig | None = None) -> Any:
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route
    except ImportError:
        raise ConfigError("podium serve needs the server extra (fix: pip install 'podium[server]')"
                          ) from None
    from podium.httpd import error_body
    from podium.observe.metrics import CONTENT_TYPE

    server = PodiumServer(config or ServerConfig())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    async def metrics(_request: Request) -> Response:
        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        if "verbose" not in request.query_params:
            return JSONResponse({"status": "ok"})
        if not _local(request):
            return Response(error_body("/healthz?verbose answers clients on this machine"
                                       " only (fix: ask /healthz for liveness)"),
                            status_code=403, media_type="application/json")
        return JSONResponse(server.health())

    app = Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)],
                    lifespan=lifespan)
    app.state.podium = server
    return app


def _local(request: Any) -> bool:
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


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServerConfig | None = None,
    *,
    allowed_hosts: Iterable[str] = (),
    limits: HttpLimits | None = None,
    log_level: str = "info",
) -> None:
    """Serve until SIGINT/SIGTERM. The address is checked and bound before the engine starts."""
    from podium.httpd import (
        AllowedHosts,
        HostGuard,
        bind,
        check_allowed_hosts,
        check_host,
        check_log_level,
        check_port,
        url_of,
        uvicorn_config,
    )

    check_port(port)
    check_host(host)
    check_log_level(log_level)  # also: is uvicorn installed
    allowed_hosts = check_allowed_hosts(allowed_hosts)
    import uvicorn

    from podium.tuning import tune_gc

    app = create_app(config)
    sock = bind(host, port)
    try:
        guarded = HostGuard(app, AllowedHosts(host, sock, allowed_hosts))
        server = uvicorn.Server(uvicorn_config(guarded, limits or HttpLimits(),
                                               log_level=log_level, lifespan="on"))
        log.info("podium serve on %s (/metrics, /healthz)", url_of(sock))
        tune_gc()  # a server process: loaded once, then runs workflows for as long as it lives
        server.run(sockets=[sock])
    finally:
        sock.close()
