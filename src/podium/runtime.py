"""One place that assembles a runtime: store, agents, engine, metrics and alerts.

``podium run``, ``resume``, ``cancel``, ``rollback``, ``podium serve`` and the
library all build the same thing from one typed, frozen ``RuntimeConfig``:
the store the URL names, the registry (given, or built from an agents file and
the entry points), the engine over them, and, when asked for, Prometheus
metrics and an alert manager. Observers are subscribed before the registry is
attached, so they hear of every agent without announcing the fleet twice.

On a database many processes share (PostgreSQL), the rules are evaluated by one
of them at a time, on every process's committed events (``alert_leader``).

The alert manager persists through a small ``AlertLedger``, never the store
itself (observe only consumes events); ``StoreLedger`` is that ledger over a
store, made here where both are known.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.agents.registry import AgentRegistry
from podium.clock import Clock, SystemClock
from podium.definition.models import Workflow
from podium.engine import Engine, EngineConfig
from podium.errors import ConfigError, PodiumError
from podium.events import Event
from podium.state import LIVE_RUN_STATUSES, AlertRecord, RunStatus, StepStatus
from podium.store.base import Store, WorkerStore
from podium.store.factory import default_db_url, open_store

if TYPE_CHECKING:
    from podium.alert_leader import AlertLeader
    from podium.joined import JoinedAgents
    from podium.observe.alerts import AlertManager
    from podium.observe.metrics import EngineMetrics
    from podium.observe.tracing import Tracing
    from podium.scheduler import Scheduler

__all__ = ["Runtime", "RuntimeConfig", "StoreLedger", "agents_of_run", "lease_of",
           "registry_of_run"]

log = logging.getLogger("podium.runtime")


def agents_of_run(source: dict[str, Any] | None, agents: Path | None = None
                  ) -> tuple[Path | None, bool]:
    """The agents file and entry-point setting a stored run came with (``--agents`` wins)."""
    path = agents
    if path is None and source and source.get("agents_file"):
        path = Path(source["agents_file"])
    return path, bool((source or {}).get("entry_points", True))


def registry_of_run(source: dict[str, Any] | None, agents: Path | None = None
                    ) -> AgentRegistry | None:
    """The registry a run's stored ``registry`` factory (``MODULE:FUNC``) builds, or None.

    A registry given whole (``podium demo``'s fleet) is in no agents file, so a run
    it started keeps the import path of the function that made it; ``resume``,
    ``cancel`` and ``rollback`` in another process call it to get the same agents.
    ``--agents`` wins, as it does over a stored agents file.
    """
    ref = (source or {}).get("registry")
    if agents is not None or not isinstance(ref, str) or not ref:
        return None
    from podium.agents.python import load_callable

    made = load_callable(ref, where="the run's stored registry: ")()
    if not isinstance(made, AgentRegistry):
        raise ConfigError(f"the run's stored registry {ref!r} made a {type(made).__name__},"
                          " not an AgentRegistry (fix: resume with --agents FILE)")
    return made


@dataclass(frozen=True)
class RuntimeConfig:
    db: str | None = None  # --db; else $PODIUM_DB, else the project's .podium/
    readonly: bool = False  # a reader: no writes, no migration, no file made
    agents_file: Path | None = None
    registry: AgentRegistry | None = None  # given whole (the demo); else built
    # Where a registry given whole came from (kept with the runs it starts, for resumes).
    agents_source: tuple[tuple[str, Any], ...] = ()
    entry_points: bool = True
    alerts_file: Path | None = None
    workflows: tuple[Workflow, ...] = ()  # their own alert rules are watched
    metrics: bool = False  # keep Prometheus metrics (serve, --metrics-port)
    metrics_port: int | None = None  # and serve them on 127.0.0.1:N
    metrics_labels: tuple[tuple[str, str], ...] = ()  # on every sample (a worker's id)
    # True: always an alert manager; None: only when some rule exists (a run with no
    # rule anywhere could neither fire nor take up an alert).
    alerts: bool | None = None
    alert_tick_s: float = 1.0  # how often time-based rules (an SLA) are looked at
    observers: tuple[Callable[[Event], None], ...] = ()  # progress views and the like
    clock: Clock = field(default_factory=SystemClock)
    owner: str | None = None  # the engine's owner id (a worker's --name); else made up
    lease_s: float | None = None  # None: $PODIUM_LEASE (a duration, at least 1s), else 15s
    poll_interval_s: float = 0.5  # cancel requests from other processes, at most this late
    schedules: bool = False  # fire due schedules (podium serve, podium worker)
    # Use the agents that joined through the API (podium serve, podium worker): read
    # every this many seconds; None: not at all.
    joined_agents_s: float | None = None


def lease_of(config: RuntimeConfig) -> float:
    """The lease runs are held for: the config's, else ``$PODIUM_LEASE``, else 15 s.

    Shorter: a dead process's runs are taken over sooner, at the cost of a renewal
    every third of it; longer: a process may be frozen longer without losing them.
    """
    if config.lease_s is not None:
        return config.lease_s
    raw = os.environ.get("PODIUM_LEASE")
    if not raw:
        return 15.0
    from podium.definition.durations import parse_duration

    try:
        seconds = parse_duration(raw)
    except (PodiumError, ValueError, TypeError) as exc:
        raise ConfigError(f"PODIUM_LEASE={raw!r}: not a duration ({exc}) (fix: e.g."
                          " PODIUM_LEASE=15s)") from None
    if seconds < 1.0:
        raise ConfigError(f"PODIUM_LEASE={raw!r}: at least 1s (fix: e.g. PODIUM_LEASE=15s)")
    return seconds


class StoreLedger:
    """What the alert manager keeps in the store, through the store's own verbs."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def firing(self) -> list[AlertRecord]:
        return await self._store.list_alerts(status="firing", limit=10_000)

    async def run_is_live(self, run_id: str) -> bool:
        try:
            return (await self._store.get_run(run_id)).status in LIVE_RUN_STATUSES
        except Exception:  # noqa: BLE001 - a vanished run ends its SLA alert too
            return False

    async def record(self, alert: AlertRecord, what: str, detail: str, ts: float) -> None:
        await self._store.save_alert(alert, what, detail, ts=ts)

    async def waiting(self) -> list[tuple[str, str, str, float]]:
        out = []
        for listed in await self._store.list_runs(status=RunStatus.WAITING, limit=1000):
            run = await self._store.get_run(listed.run_id)
            out += [(run.run_id, run.workflow, sid, rec.started_at or run.created_at)
                    for sid, rec in run.steps.items() if rec.status == StepStatus.WAITING]
        return out


class Runtime:
    """An engine with everything around it, opened and closed as one."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.agents_source: dict[str, Any] = dict(config.agents_source)
        registry = config.registry
        if registry is None:
            from podium.agents.config import build_registry

            registry, _file, self.agents_source = build_registry(
                config.agents_file, entry_points_too=config.entry_points)
        self.registry = registry
        self.store: Store = open_store(default_db_url(config.db), readonly=config.readonly)
        self.metrics: EngineMetrics | None = None
        self.alerts: AlertManager | None = None
        self._http: Any = None
        observers = list(config.observers)
        if config.metrics or config.metrics_port is not None:
            from podium.observe.metrics import EngineMetrics

            self.metrics = EngineMetrics(agents=lambda: registry.agents,
                                         labels=dict(config.metrics_labels))
            observers.append(self.metrics)
        # Traces when the application or the OTEL_* variables ask for them; else nothing
        # is subscribed and no header computed.
        from podium.observe.tracing import configure_from_env

        self.tracing: Tracing | None = configure_from_env()
        if self.tracing is not None:
            observers.append(self.tracing)
        self.alerts = self._alert_manager()
        self.alert_leader: AlertLeader | None = None
        if self.alerts is not None:
            if isinstance(self.store, WorkerStore):
                # A shared database: one process evaluates the rules for all of them.
                from podium.alert_leader import AlertLeader

                self.alert_leader = AlertLeader(self.store, self.store, self.alerts,
                                                holder="")
                observers.append(self.alert_leader.local)
            else:
                observers.append(self.alerts)
        engine_config = EngineConfig(store=self.store, registry=registry, clock=config.clock,
                                     observers=tuple(observers), lease_s=lease_of(config),
                                     poll_interval_s=config.poll_interval_s)
        if self.tracing is not None:
            from podium.observe.tracing import current_traceparent

            engine_config.traceparent = current_traceparent
            engine_config.span_traceparent = self.tracing.traceparent_of
        else:
            from podium.observe.tracing import env_traceparent

            # Not traced here, but a caller's trace given ($TRACEPARENT, e.g. around
            # `podium submit`): stored with the run for the processes that trace it.
            given = env_traceparent()
            if given is not None:
                engine_config.traceparent = lambda: given
        if config.owner is not None:
            engine_config.owner = config.owner
        self.engine = Engine(engine_config)
        self.joined: JoinedAgents | None = None
        if config.joined_agents_s is not None and not config.readonly:
            from podium.joined import JoinedAgents

            self.joined = JoinedAgents(self.store, registry, interval_s=config.joined_agents_s)
        self.scheduler: Scheduler | None = None
        if config.schedules and not config.readonly:
            from podium.scheduler import Scheduler

            shared = self.store if isinstance(self.store, WorkerStore) else None
            # On a shared database one process fires (the others would race for the
            # same slots) and the workers execute; alone, this process does both.
            self.scheduler = Scheduler(self.engine, self.store, lead=shared,
                                       start_runs=shared is None)

    def _alert_manager(self) -> AlertManager | None:
        from podium.observe import find_alerts_file, load_alerts_file

        cfg = self.config
        path = find_alerts_file(cfg.alerts_file)
        rules = load_alerts_file(path) if path is not None else None
        wanted = cfg.alerts if cfg.alerts is not None else (
            rules is not None or any(wf.alerts or wf.sla is not None for wf in cfg.workflows))
        if not wanted:
            return None
        from podium.observe.alerts import AlertManager

        manager = AlertManager(rules, StoreLedger(self.store), clock=cfg.clock,
                               emit=lambda e: self.engine.bus.emit(e), tick_s=cfg.alert_tick_s)
        for wf in cfg.workflows:
            manager.watch_workflow(wf)
        return manager

    async def __aenter__(self) -> Runtime:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> Runtime:
        if self.tracing is not None:
            from podium.agents.base import set_trace_headers

            tracing = self.tracing
            set_trace_headers(lambda t: tracing.headers_for(t.run_id, t.step_id, t.attempt))
        await self.engine.open()
        try:
            if self.config.metrics_port is not None and self.metrics is not None:
                self._serve_metrics(self.config.metrics_port)
            if self.alerts is not None:
                self.alerts.owner = self.engine.owner
                if self.alert_leader is not None:
                    self.alert_leader.holder = self.engine.owner
                    self.alerts.start(ticking=False)
                    self.alert_leader.start()
                else:
                    self.alerts.start()
            if self.joined is not None:
                await self.joined.round()  # there before the first run is taken
                self.joined.start()
            if self.scheduler is not None:
                self.scheduler.start()
        except BaseException:
            await self.engine.aclose()
            raise
        return self

    def _serve_metrics(self, port: int) -> None:
        from prometheus_client import start_http_server

        assert self.metrics is not None
        try:
            self._http, _thread = start_http_server(port, addr="127.0.0.1",
                                                    registry=self.metrics.exposed)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}:"
                f" {exc.strerror or exc} (fix: choose another port, or stop what is using it)"
            ) from None

    async def close(self) -> None:
        try:
            if self.joined is not None:
                await self.joined.aclose()
            if self.scheduler is not None:
                await self.scheduler.aclose()
            if self.alert_leader is not None:
                await self.alert_leader.aclose()
            elif self.alerts is not None:
                await self.alerts.tick()
            if self.alerts is not None:
                await self.alerts.aclose()
        finally:
            if self._http is not None:
                self._http.shutdown()
                self._http.server_close()
            try:
                await self.engine.aclose()
            finally:
                await self.registry.aclose()
                if self.tracing is not None:
                    from podium.agents.base import set_trace_headers

                    set_trace_headers(None)
                    self.tracing.close()
