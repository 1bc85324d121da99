"""``podium serve``: a long-running engine with ``/metrics`` and ``/healthz``.

On start it takes over runs that a dead process left behind (and keeps
looking for more as leases expire), exposes the engine's own Prometheus
registry, and evaluates alerts. Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.errors import ConfigError, PodiumError

__all__ = ["ServerConfig", "create_app", "serve"]

log = logging.getLogger("podium.server")


@dataclass(frozen=True)
class ServerConfig:
    db: str | None = None
    agents_file: Path | None = None
    alerts_file: Path | None = None
    scan_interval_s: float = 5.0


class PodiumServer:
    """The engine, its metrics and alerts, and the stale-run scanner, as one unit."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine: Any = None
        self.metrics: Any = None
        self.alerts: Any = None
        self._scanner: asyncio.Task[None] | None = None
        self.resumed: list[str] = []
        self._next_due: float | None = None  # a run backing off after a takeover

    async def start(self) -> None:
        from podium.agents.config import build_registry, find_agents_file
        from podium.engine import Engine
        from podium.observe import find_alerts_file, load_alerts_file
        from podium.observe.alerts import AlertManager
        from podium.observe.metrics import EngineMetrics
        from podium.store.factory import default_db_url, open_store

        agents_path = find_agents_file(self.config.agents_file)
        registry, _cfg, _src = build_registry(agents_path)
        engine = self.engine = Engine(registry=registry,
                                      store=open_store(default_db_url(self.config.db)))
        self.metrics = EngineMetrics(agents=lambda: engine.registry.agents)
        engine.bus.subscribe(self.metrics)
        alerts_path = find_alerts_file(self.config.alerts_file)
        self.alerts = AlertManager(load_alerts_file(alerts_path) if alerts_path else None,
                                   engine.store, clock=engine.clock, emit=engine.bus.emit,
                                   owner=engine.owner)
        engine.bus.subscribe(self.alerts)
        registry.attach(engine.bus.emit, engine.clock)
        await engine.open()
        registry.start_monitor()
        self.alerts.start()
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
                wait = min(wait, max(0.05, self._next_due - self.engine.clock.now()))
            await asyncio.sleep(wait)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stale-run scan failed")

    async def stop(self) -> None:
        if self._scanner is not None:
            self._scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scanner
        if self.alerts is not None:
            await self.alerts.aclose()
        if self.engine is not None:
            await self.engine.aclose()
            await self.engine.registry.aclose()

    def health(self) -> dict[str, Any]:
        report = self.engine.registry.report()
        return {
            "status": "ok",
            "db": self.engine.store.url,
            "owner": self.engine.owner,
            "active_runs": len(self.engine._active),
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

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse(server.health())

    app = Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)],
                    lifespan=lifespan)
    app.state.podium = server
    return app


def serve(host: str = "127.0.0.1", port: int = 8080, config: ServerConfig | None = None) -> None:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("podium serve needs the server extra (fix: pip install 'podium[server]')"
                          ) from None
    from podium.tuning import tune_gc

    tune_gc()  # a server process: loaded once, then runs workflows for as long as it lives
    uvicorn.run(create_app(config), host=host, port=port, log_level="info", lifespan="on")
