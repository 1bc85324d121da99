"""Podium: a durable orchestration engine for multi-agent workflows."""

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
    RunNotFound,
    StoreError,
    Unavailable,
)
from podium.events import Event, EventBus
from podium.store import MemoryStore, RunRecord, StepRecord, Store

__version__ = "0.1.0"

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
