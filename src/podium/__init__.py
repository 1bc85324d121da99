"""Podium: a durable orchestration engine for multi-agent workflows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from podium.lazy import lazy_exports

if TYPE_CHECKING:
    from podium.agents import Agent, AgentRegistry, PythonAgent, Task, agent
    from podium.clock import Clock, FakeClock, SystemClock
    from podium.definition import (
        Compensation,
        Defaults,
        Flow,
        RetryPolicy,
        Step,
        StepHandle,
        Workflow,
        define,
        load_workflow,
        workflow_from_dict,
    )
    from podium.engine import Engine, EngineConfig, RunHandle
    from podium.errors import (
        AgentError,
        AttemptTimeout,
        ConfigError,
        DefinitionError,
        InputError,
        InvalidInput,
        PodiumError,
        RateLimited,
        RunExists,
        RunNotFound,
        StoreError,
        Unavailable,
    )
    from podium.events import Event, EventBus
    from podium.store import MemoryStore, RunRecord, StepRecord, Store

__version__ = "0.1.0"

# Each name is imported from its module when first asked for (PEP 562): the CLI's
# commands (``podium status``, ``runs``...) import only what they use, not the
# engine, the agents and the workflow models (~0.1 s of every start).
_EXPORTS: dict[str, str] = {
    "Agent": "podium.agents",
    "AgentError": "podium.errors",
    "AgentRegistry": "podium.agents",
    "AttemptTimeout": "podium.errors",
    "Clock": "podium.clock",
    "Compensation": "podium.definition",
    "ConfigError": "podium.errors",
    "Defaults": "podium.definition",
    "DefinitionError": "podium.errors",
    "Engine": "podium.engine",
    "EngineConfig": "podium.engine",
    "Event": "podium.events",
    "EventBus": "podium.events",
    "FakeClock": "podium.clock",
    "Flow": "podium.definition",
    "InputError": "podium.errors",
    "InvalidInput": "podium.errors",
    "MemoryStore": "podium.store",
    "PodiumError": "podium.errors",
    "PythonAgent": "podium.agents",
    "RateLimited": "podium.errors",
    "RetryPolicy": "podium.definition",
    "RunHandle": "podium.engine",
    "RunExists": "podium.errors",
    "RunNotFound": "podium.errors",
    "RunRecord": "podium.store",
    "Step": "podium.definition",
    "StepHandle": "podium.definition",
    "StepRecord": "podium.store",
    "Store": "podium.store",
    "StoreError": "podium.errors",
    "SystemClock": "podium.clock",
    "Task": "podium.agents",
    "Unavailable": "podium.errors",
    "Workflow": "podium.definition",
    "agent": "podium.agents",
    "define": "podium.definition",
    "load_workflow": "podium.definition",
    "workflow_from_dict": "podium.definition",
}



__all__ = [
    "Agent",
    "AgentError",
    "AgentRegistry",
    "AttemptTimeout",
    "Clock",
    "Compensation",
    "ConfigError",
    "Defaults",
    "DefinitionError",
    "Engine",
    "EngineConfig",
    "Event",
    "EventBus",
    "FakeClock",
    "Flow",
    "InputError",
    "InvalidInput",
    "MemoryStore",
    "PodiumError",
    "PythonAgent",
    "RateLimited",
    "RetryPolicy",
    "RunExists",
    "RunHandle",
    "RunNotFound",
    "RunRecord",
    "Step",
    "StepHandle",
    "StepRecord",
    "Store",
    "StoreError",
    "SystemClock",
    "Task",
    "Unavailable",
    "Workflow",
    "__version__",
    "agent",
    "define",
    "load_workflow",
    "workflow_from_dict",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
