"""What an agent is to the engine: something that takes a task and returns JSON.

Transports (in-process Python, HTTP, A2A) all implement ``Agent``; the engine
never knows which one it is calling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Agent",
    "AgentBase",
    "HealthLevel",
    "HealthReport",
    "Task",
    "set_trace_headers",
    "trace_headers",
]

# The largest answer (decompressed, or an output encoded as JSON) taken from an agent;
# a larger one fails the attempt as ``output_too_large`` (agents file: max_response_bytes).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024

HealthLevel = Literal["healthy", "degraded", "unhealthy", "unknown"]

# The trace headers (W3C ``traceparent``) of an attempt, for the transports that send
# them (HTTP, A2A): set by whoever traces (the runtime, from ``podium.observe.tracing``);
# None while nobody does, so an untraced call computes nothing.
_trace_headers: Callable[[Task], dict[str, str]] | None = None


def set_trace_headers(fn: Callable[[Task], dict[str, str]] | None) -> None:
    global _trace_headers
    _trace_headers = fn


def trace_headers(task: Task) -> dict[str, str] | None:
    """The attempt's trace headers, or None when nothing traces (the common case)."""
    fn = _trace_headers
    return None if fn is None else fn(task)


class Task(msgspec.Struct, frozen=True, gc=False):
    """One attempt of one step, as the agent sees it.

    ``idempotency_key`` is the same for every attempt of one step of one run
    (and across a resume), so an agent can drop a duplicate delivery.

    A frozen ``msgspec.Struct`` (like events): one is made per attempt, in ~0.06 µs
    where a frozen dataclass took ~0.6 µs. Not tracked by the garbage collector:
    a task refers to its input, and nothing refers back to a task.
    """

    run_id: str
    step_id: str
    attempt: int
    idempotency_key: str
    capability: str
    input: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "step_id": self.step_id,
            "attempt": self.attempt,
            "idempotency_key": self.idempotency_key,
            "capability": self.capability,
            "input": self.input,
        }


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: HealthLevel
    load: float | None = None
    detail: str | None = None


@runtime_checkable
class Agent(Protocol):
    """The seam every transport implements."""

    @property
    def id(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    @property
    def max_concurrency(self) -> int | None: ...

    async def invoke(self, task: Task) -> Any:
        """Run the task; return its output or raise (``AgentError`` to name a type)."""
        ...

    async def health(self) -> HealthReport: ...

    async def aclose(self) -> None: ...


class AgentBase:
    """What every transport shares: who the agent is, what it does, where it runs.

    Subclasses add how to call it (``invoke``, ``health``, ``aclose``).
    """

    transport = "unknown"

    def __init__(
        self,
        *,
        id: str,
        capabilities: Iterable[str] = (),
        max_concurrency: int | None = None,
        weight: float = 1.0,
        region: str | None = None,
        labels: dict[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            from podium.errors import ConfigError

            raise ConfigError(f"agent '{id}': max_concurrency must be at least 1")
        if max_response_bytes < 1:
            from podium.errors import ConfigError

            raise ConfigError(f"agent '{id}': max_response_bytes must be at least 1")
        self.max_response_bytes = max_response_bytes
        self._id = id
        self._capabilities = frozenset(capabilities)
        self._max_concurrency = max_concurrency
        self.weight = weight
        self.region = region
        self.labels = dict(labels or {})

    @property
    def id(self) -> str:
        return self._id

    @property
    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    @property
    def max_concurrency(self) -> int | None:
        return self._max_concurrency
