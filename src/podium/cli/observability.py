"""Metrics and alerts around one CLI engine, for as long as it runs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from podium.errors import ConfigError

log = logging.getLogger("podium.cli")


class Observability:
    """Subscribes metrics and an alert manager to an engine; serves /metrics if asked."""

    def __init__(
        self,
        engine: Any,
        *,
        metrics_port: int | None = None,
        alerts_file: Path | None = None,
        workflows: Iterable[Any] = (),
    ) -> None:
        self.engine = engine
        self.metrics_port = metrics_port
        self.alerts_file = alerts_file
        self.workflows = list(workflows)
        self.metrics: Any = None
        self.alerts: Any = None
        self._server: Any = None

    async def __aenter__(self) -> Observability:
        from podium.observe import find_alerts_file, load_alerts_file

        path = find_alerts_file(self.alerts_file)
        config = load_alerts_file(path) if path is not None else None
        engine = self.engine
        if self.metrics_port is not None:
            from prometheus_client import start_http_server

            from podium.observe.metrics import EngineMetrics

            self.metrics = EngineMetrics(agents=lambda: engine.registry.agents)
            engine.bus.subscribe(self.metrics)
            engine.registry.attach(engine.bus.emit, engine.clock)  # announce the fleet
            try:
                self._server, _thread = start_http_server(
                    self.metrics_port, addr="127.0.0.1", registry=self.metrics.registry)
            except OSError as exc:
                raise ConfigError(
                    f"--metrics-port {self.metrics_port}: cannot listen on 127.0.0.1:"
                    f"{self.metrics_port}: {exc.strerror or exc} (fix: choose another port,"
                    " or stop what is using it)"
                ) from None
        if config is None and not any(wf.alerts or wf.sla is not None for wf in self.workflows):
            # No rule anywhere: an alert manager could neither fire nor take up an alert
            # (it restores only alerts of rules it knows), so none is started.
            return self
        from podium.observe.alerts import AlertManager

        self.alerts = AlertManager(config, engine.store, clock=engine.clock,
                                   emit=engine.bus.emit, owner=engine.owner)
        for wf in self.workflows:
            self.alerts.watch_workflow(wf)
        engine.bus.subscribe(self.alerts)
        self.alerts.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.alerts is not None:
            await self.alerts.tick()
            await self.alerts.aclose()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
