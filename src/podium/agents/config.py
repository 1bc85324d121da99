"""The agents file and the other places agents come from.

Sources, in order: the agents file (``--agents``, else ``$PODIUM_AGENTS``,
else ``podium.yaml`` in the current folder), the ``podium.agents``
entry-point group of installed packages, and ``@agent`` functions. A run
records which file it used so ``resume`` needs no flags.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from podium.agents.base import DEFAULT_MAX_RESPONSE_BYTES, Agent
from podium.agents.breaker import BreakerConfig
from podium.agents.health import HealthConfig
from podium.agents.python import PythonAgent, decorated_agents, load_callable
from podium.agents.registry import AgentRegistry, RegistryConfig
from podium.definition.durations import Duration, PositiveDuration
from podium.errors import AgentError, ConfigError
from podium.redact import register_secret, register_sensitive_headers

__all__ = ["AgentSpec", "AgentsFile", "build_joined_agent", "build_registry", "find_agents_file",
           "load_agents_file"]

ENTRY_POINT_GROUP = "podium.agents"


def _empty_list() -> list[Any]:
    """``default_factory`` for lists: pydantic reads a factory's signature, and for the
    builtin ``list`` that means tokenizing its text signature (~3 ms at start-up)."""
    return []


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSpec(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    capabilities: list[str] = Field(default_factory=_empty_list)
    python: str | None = None
    url: str | None = None
    a2a: str | None = None
    max_concurrency: int | None = Field(None, ge=1)
    weight: float = Field(1.0, gt=0)
    region: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveDuration | None = Field(None, description="HTTP client timeout for one call")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers")
    token_env: str | None = Field(None, description="Env var holding a bearer token")
    max_response_bytes: int = Field(
        DEFAULT_MAX_RESPONSE_BYTES, ge=1, le=1 << 30,
        description="Largest answer taken (decompressed); larger fails as output_too_large")

    @model_validator(mode="after")
    def _one_transport(self) -> AgentSpec:
        given = [k for k in ("python", "url", "a2a") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of python (MODULE:FUNC), url (HTTP agent) or a2a (A2A agent)"
                + (f"; found {', '.join(given)}" if given else "")
            )
        if not self.capabilities and not self.a2a:
            raise ValueError("list the agent's capabilities (capabilities: [name, ...])")
        return self


class HealthSettings(_Model):
    interval: PositiveDuration = 10.0
    timeout: PositiveDuration = 2.0
    unhealthy_after: int = Field(3, ge=1)
    healthy_after: int = Field(2, ge=1)
    # Passive outlier detection from real calls.
    eject_after_failures: int = Field(5, ge=1)
    eject_error_rate: float = Field(0.5, gt=0, le=1)
    eject_min_calls: int = Field(10, ge=1)
    eject_window: PositiveDuration = 30.0
    ejection: Duration = 30.0

    def to_config(self) -> HealthConfig:
        return HealthConfig(
            interval_s=self.interval,
            timeout_s=self.timeout,
            unhealthy_after=self.unhealthy_after,
            healthy_after=self.healthy_after,
            eject_consecutive_failures=self.eject_after_failures,
            eject_error_rate=self.eject_error_rate,
            eject_window_s=self.eject_window,
            eject_min_calls=self.eject_min_calls,
            ejection_s=self.ejection,
        )


class BreakerSettings(_Model):
    failure_threshold: int = Field(5, ge=1)
    reset_timeout: Duration = 30.0
    half_open_max_calls: int = Field(1, ge=1)
    failure_rate: float | None = Field(0.5, gt=0, le=1)
    window: PositiveDuration = 60.0
    min_calls: int = Field(20, ge=1)
    ignore_errors: list[str] = Field(default_factory=lambda: ["invalid_input", "cancelled"])

    def to_config(self) -> BreakerConfig:
        return BreakerConfig(
            failure_threshold=self.failure_threshold,
            reset_timeout_s=self.reset_timeout,
            half_open_max_calls=self.half_open_max_calls,
            failure_rate=self.failure_rate,
            window_s=self.window,
            min_calls=self.min_calls,
            ignored_errors=frozenset(self.ignore_errors),
        )


class AgentsFile(_Model):
    region: str | None = None
    strategy: Literal["least_loaded", "round_robin", "latency"] = "least_loaded"
    acquire_timeout: Duration = 30.0
    agents: list[AgentSpec] = Field(default_factory=_empty_list)
    health: HealthSettings = Field(default_factory=HealthSettings)
    circuit_breaker: BreakerSettings = Field(default_factory=BreakerSettings)

    def registry_config(self) -> RegistryConfig:
        return RegistryConfig(
            region=self.region,
            health=self.health.to_config(),
            breaker=self.circuit_breaker.to_config(),
            acquire_timeout_s=self.acquire_timeout,
            strategy=self.strategy,
        )


def find_agents_file(explicit: str | Path | None, *, cwd: Path | None = None) -> Path | None:
    """``--agents``, else ``$PODIUM_AGENTS``, else ``podium.yaml`` here, else none."""
    from podium.definition.loader import find_settings_file

    return find_settings_file(explicit, "PODIUM_AGENTS", "podium.yaml", cwd=cwd)


def load_agents_file(path: Path) -> AgentsFile:
    from podium.definition.loader import load_model_file

    return load_model_file(path, AgentsFile, kind="agents", option="--agents")


def _headers(spec: AgentSpec, where: str) -> dict[str, str]:
    """Credentials come from the environment, never from the file (which people commit)."""
    headers = dict(spec.headers)
    register_sensitive_headers(headers)  # e.g. an X-Api-Key written in the file anyway
    if spec.token_env:
        token = os.environ.get(spec.token_env)
        if not token:
            raise ConfigError(
                f"{where}environment variable {spec.token_env} (token_env) is not"
                " set (fix: export it, or remove token_env)"
            )
        register_secret(token)  # scrubbed by value wherever an agent may echo it
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _build_agent(
    spec: AgentSpec, base_dir: Path, source: str, health_timeout_s: float = 2.0
) -> Agent:
    """One agent of the file; remote ones get the file's ``health.timeout`` as their own.

    The monitor also cuts a check at ``health.timeout``, but a transport's own,
    shorter default would fire first and call a slow-but-fine agent unhealthy.
    """
    where = f"{source}: agent '{spec.id}': "
    if spec.python:
        func = load_callable(spec.python, base_dir=base_dir, where=where)
        inner = getattr(func, "__podium_agent__", None)
        return PythonAgent(
            inner.func if isinstance(inner, PythonAgent) else func,
            id=spec.id,
            capabilities=spec.capabilities,
            max_concurrency=spec.max_concurrency,
            weight=spec.weight,
            region=spec.region,
            labels=spec.labels,
            max_response_bytes=spec.max_response_bytes,
        )
    if spec.url:
        from podium.agents.http import HttpAgent

        try:
            return HttpAgent(
                spec.url,
                id=spec.id,
                capabilities=spec.capabilities,
                max_concurrency=spec.max_concurrency,
                weight=spec.weight,
                region=spec.region,
                labels=spec.labels,
                timeout_s=spec.timeout,
                headers=_headers(spec, where),
                health_timeout_s=health_timeout_s,
                max_response_bytes=spec.max_response_bytes,
            )
        except ConfigError as exc:  # not an http(s) base URL; the message names the agent
            raise ConfigError(f"{source}: {exc.message}") from None
    if spec.a2a:
        from podium.agents.a2a import A2AAgent

        try:
            a2a_agent = A2AAgent(
                spec.a2a,
                id=spec.id,
                capabilities=spec.capabilities,
                max_concurrency=spec.max_concurrency,
                weight=spec.weight,
                region=spec.region,
                labels=spec.labels,
                health_timeout_s=health_timeout_s,
                max_response_bytes=spec.max_response_bytes,
                headers=_headers(spec, where),  # token_env: an A2A server that authenticates
                request_timeout_s=spec.timeout if spec.timeout is not None else 300.0,
            )
        except ConfigError as exc:  # a2a-sdk missing, or a bad URL
            raise ConfigError(f"{where}{exc.message}") from None
        try:
            a2a_agent.discover_sync()  # capabilities = the card's skills
        except AgentError as exc:
            if not spec.capabilities:
                raise ConfigError(
                    f"{where}cannot read the agent card at {spec.a2a}: {exc.message}"
                    " (fix: start the agent and check the URL, or list capabilities: [...]"
                    " so it can be registered while it is down)"
                ) from None
            # Registered with the listed capabilities; health checks tell when it is up.
        return a2a_agent
    raise ConfigError(f"{where}no transport given")


def build_joined_agent(spec: dict[str, Any], *, health_timeout_s: float = 2.0) -> Agent:
    """An HTTP agent that joined through the API (``POST /agents``), from its entry.

    Only ``url`` agents: a remote caller never names Python for this process to import,
    and never an environment variable whose value would be sent to its URL
    (``token_env``, ``headers``); a bearer token it wants sent comes as ``token``.
    """
    data = dict(spec)
    token = data.pop("token", None)
    bad = sorted(k for k in ("python", "a2a", "token_env", "headers") if data.get(k))
    if bad:
        raise ConfigError(f"agent {data.get('id')!r}: {', '.join(bad)} cannot be given by an"
                          " agent joining through the API (fix: an HTTP agent: url, and"
                          " token for a bearer token it wants)")
    if not data.get("url"):
        raise ConfigError(f"agent {data.get('id')!r}: url is missing (fix: the agent's"
                          " http(s) base URL)")
    try:
        parsed = AgentSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"agent {data.get('id')!r}: {_first_problem(exc)}") from None
    if token is not None:
        register_secret(str(token))
        parsed = parsed.model_copy(update={"headers": {"Authorization": f"Bearer {token}"}})
    return _build_agent(parsed, Path.cwd(), "joined", health_timeout_s)


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "entry"
    return f"{where}: {err.get('msg', 'invalid')}"


def _entry_point_agents() -> list[Agent]:
    found: list[Agent] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj: Any = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not raised
            raise ConfigError(
                f"entry point '{ep.name}' ({ep.value}) failed to load: {exc}"
            ) from None
        items = obj if isinstance(obj, list | tuple) else [obj]
        for item in items:
            inner = getattr(item, "__podium_agent__", item)
            if isinstance(inner, Agent):
                found.append(inner)
            elif callable(item):
                found.append(PythonAgent(item, id=ep.name, capabilities=[ep.name]))
    return found


def build_registry(
    agents_file: Path | None,
    *,
    entry_points_too: bool = True,
    decorated_too: bool = True,
) -> tuple[AgentRegistry, AgentsFile | None, dict[str, Any]]:
    """Load every agent source; return the registry, the file and where it all came from."""
    config: AgentsFile | None = None
    source: dict[str, Any] = {"agents_file": None, "entry_points": entry_points_too}
    if agents_file is not None:
        path = agents_file.resolve()
        config = load_agents_file(path)
        source["agents_file"] = str(path)
    registry = AgentRegistry(config=config.registry_config() if config else None)
    if config is not None and agents_file is not None:
        for spec in config.agents:
            registry.register(
                _build_agent(
                    spec, agents_file.resolve().parent, str(agents_file), config.health.timeout
                )
            )
    if entry_points_too:
        for a in _entry_point_agents():
            if registry.get(a.id) is None:
                registry.register(a)
    if decorated_too:
        for a in decorated_agents():
            if registry.get(a.id) is None:
                registry.register(a)
    return registry, config, source
