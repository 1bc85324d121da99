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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.errors import ConfigError, PodiumError
from podium.httpd import HttpLimits

if TYPE_CHECKING:
    from podium.agents.registry import AgentRegistry
    from podium.auth import Authenticator
    from podium.server.feed_hub import FeedHub

__all__ = ["PodiumServer", "ServerConfig", "check_database", "create_app", "is_loopback", "serve"]

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
    agents_source: tuple[tuple[str, Any], ...] = ()  # where that registry came from
    # The API is open while no usable token exists only on a loopback bind, or when told.
    open_without_tokens: bool = True
    local_only: bool = True  # open only to clients on this machine (not --insecure-no-auth)
    # The project's work, as podium serve does it: take over the runs dead processes
    # left, fire due schedules, take up agents that joined through the API. Not for a
    # server whose registry is not the project's (podium demo --ui): it would drive
    # them with the wrong agents, and mix strangers into its own fleet.
    project_work: bool = True
    # Live agents joined through the API (POST /agents): per token, and for the whole
    # database (None: JoinLimits' defaults, 64 and 256).
    max_joined_agents: int | None = None
    max_joined_agents_total: int | None = None


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
        self.auth: Authenticator | None = None
        self.feed_hub: FeedHub | None = None  # GET /events' one reader of the feed
        from podium.server.session import OneTimeLogins

        self.logins = OneTimeLogins()  # codes for tokens this process holds (demo --ui)

    async def start(self) -> None:
        from podium.agents.config import find_agents_file
        from podium.runtime import Runtime, RuntimeConfig

        self.runtime = await Runtime(RuntimeConfig(
            db=self.config.db, registry=self.config.registry,
            agents_source=self.config.agents_source,
            agents_file=None if self.config.registry is not None else
            find_agents_file(self.config.agents_file),
            alerts_file=self.config.alerts_file, metrics=True, alerts=True,
            schedules=self.config.project_work,
            joined_agents_s=2.0 if self.config.project_work else None)).open()
        self.engine, self.metrics = self.runtime.engine, self.runtime.metrics
        self.alerts = self.runtime.alerts
        from podium.auth import Authenticator

        self.auth = Authenticator(self.runtime.store, self.engine.clock,
                                  cache_s=token_cache_s())
        self.engine.registry.start_monitor()
        from podium.server.feed_hub import FeedHub

        self.feed_hub = FeedHub(self.runtime.store, self.engine.bus.subscribe)
        self.feed_hub.start()
        from podium.store.base import WorkerStore

        store = self.runtime.store
        if not self.config.project_work:
            return
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
        if self.feed_hub is not None:
            await self.feed_hub.stop()
            self.feed_hub = None
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
    """The API (``podium.server.api``) over a ``PodiumServer`` started by its lifespan."""
    try:
        from podium.server.api import ApiConfig, build_api
    except ImportError as exc:
        raise ConfigError(f"podium serve needs the server extra ({exc}) (fix: pip install"
                          " 'podium[server]')") from None
    from importlib.metadata import PackageNotFoundError, version

    config = config or ServerConfig()
    server = PodiumServer(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    try:
        own = version("podium")
    except PackageNotFoundError:
        own = ""
    from podium.store.base import JoinLimits

    limits = {k: v for k, v in (("per_token", config.max_joined_agents),
                                ("total", config.max_joined_agents_total)) if v is not None}
    try:
        join_limits = JoinLimits(**limits)
    except ValueError:
        raise ConfigError("--max-joined-agents and --max-joined-agents-total are at least 1"
                          " (fix: a number of agents, e.g. 64)") from None
    app = build_api(server, ApiConfig(open_without_tokens=config.open_without_tokens,
                                      local_only=config.local_only,
                                      join_limits=join_limits),
                    version=own, lifespan=lifespan)

    app.state.podium = server
    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServerConfig | None = None,
    *,
    allowed_hosts: Iterable[str] = (),
    limits: HttpLimits | None = None,
    log_level: str = "info",
    insecure_no_auth: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM. The address is checked and bound before the engine starts.

    With no usable API token in the database, only a loopback address may be bound
    (anyone on this machine may then use the API, which the log says), unless
    ``insecure_no_auth``.
    """
    from podium.httpd import (
        AllowedHosts,
        BodyLimit,
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
    bare = check_host(host)
    check_log_level(log_level)  # also: is uvicorn installed
    allowed_hosts = check_allowed_hosts(allowed_hosts)
    import uvicorn

    from podium.tuning import tune_gc

    config = config or ServerConfig()
    if config.registry is None:
        # Built before anything listens: a broken agents file is a clear error (exit 2),
        # not a traceback from inside the server's start-up.
        from podium.agents.config import build_registry, find_agents_file

        registry, _file, source = build_registry(find_agents_file(config.agents_file))
        config = replace(config, registry=registry, agents_source=tuple(source.items()))
    loopback = is_loopback(bare)
    tokens = _usable_tokens(config.db)
    if not tokens and not loopback and not insecure_no_auth:
        raise ConfigError(
            f"--host {host}: no API token exists, so any program that reaches this address"
            " could start and cancel runs (fix: podium token create --scope admin, then"
            " serve again; or --insecure-no-auth behind something that authenticates)")
    if not tokens:
        log.warning("there is no API token, so the API is open to %s (fix: podium token"
                    " create --scope admin; from then on every request needs a token)",
                    "every program on this machine" if loopback else "anyone who reaches it")
    config = replace(config, open_without_tokens=loopback or insecure_no_auth,
                     local_only=not insecure_no_auth)
    app = create_app(config)
    sock = bind(host, port)
    try:
        limits = limits or HttpLimits()
        guarded = HostGuard(BodyLimit(app, limits.max_body_bytes, shape=_too_large),
                            AllowedHosts(host, sock, allowed_hosts))
        server = uvicorn.Server(uvicorn_config(guarded, limits,
                                               log_level=log_level, lifespan="on"))
        log.info("podium serve on %s (API docs at /docs, /metrics, /healthz)", url_of(sock))
        tune_gc()  # a server process: loaded once, then runs workflows for as long as it lives
        server.run(sockets=[sock])
    finally:
        sock.close()


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: whatever it resolves to, it is not this machine's loopback


def _usable_tokens(db: str | None) -> int:
    """How many API tokens the database holds that a request could use (0: none)."""

    import time

    from podium.store.factory import default_db_url, open_store

    async def count() -> int:
        store = open_store(default_db_url(db))
        await store.open()
        try:
            return await store.count_usable_tokens(time.time())
        finally:
            await store.close()

    return asyncio.run(count())


def _too_large(message: str) -> bytes:
    import json

    return json.dumps({"error": {"type": "payload_too_large", "message": message,
                                 "exit_code": 2}}).encode()


def check_database(db: str | None) -> None:
    """Open the database and close it: one that cannot be used is a ``StoreError`` (exit 3)
    before a server binds its address, not a traceback from its start-up."""
    from podium.store.factory import default_db_url, open_store

    async def probe() -> None:
        store = open_store(default_db_url(db))
        await store.open()
        await store.close()

    asyncio.run(probe())


def token_cache_s() -> float:
    """How long a verified API token is trusted before the database is read again (so
    how late a revocation by another process is honoured): ``$PODIUM_TOKEN_CACHE`` (a
    duration, 0s to 1h), else 30 s."""
    import os

    from podium.auth import CACHE_S

    raw = os.environ.get("PODIUM_TOKEN_CACHE")
    if not raw:
        return CACHE_S
    from podium.definition.durations import parse_duration

    try:
        seconds = parse_duration(raw)
    except (PodiumError, ValueError, TypeError) as exc:
        raise ConfigError(f"PODIUM_TOKEN_CACHE={raw!r}: not a duration ({exc}) (fix: e.g."
                          " PODIUM_TOKEN_CACHE=30s)") from None
    if not 0 <= seconds <= 3600:
        raise ConfigError(f"PODIUM_TOKEN_CACHE={raw!r}: from 0s to 1h (fix: e.g. 30s)")
    return seconds
