"""What one run's execution may use of the engine that runs it, and nothing more.

A ``RunExecution`` used to hold the engine itself and read its private state;
now it gets this small frozen context: the clock its timers go through, the
registry its attempts acquire agents from, the journal that makes its events
durable, the random source of its jitter, the bus its events go out on, and how
many runs the engine executes (a run alone commits on the spot).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from podium.agents.registry import AgentRegistry
from podium.clock import Clock
from podium.definition.models import Workflow
from podium.engine.journal import Journal
from podium.events import Event
from podium.state import RunRecord

__all__ = ["Children", "RunContext", "Waits"]


class Children(Protocol):
    """The child runs of a run's ``workflow:`` steps, executed by the same engine."""

    async def run(self, child_id: str, workflow: Workflow, value: Any,
                  agents_source: dict[str, Any], redrive: bool) -> RunRecord:
        """The child run ``child_id`` to its end: started if new, waited for if going,
        resumed if its process died (redriven too if failed, with ``redrive``), read
        back if it ended before."""
        ...

    def cancel(self, child_id: str, reason: str) -> None:
        """Ask the child run to stop (its parent stopped)."""
        ...

    async def stop(self, child_id: str, reason: str) -> None:
        """As ``cancel``, waiting until the request is stored (a parent ended by a
        process that exits right after); nothing if there is no such child."""
        ...

    async def rollback(self, child_id: str) -> RunRecord | None:
        """Roll the child run back; None if it had nothing to undo (or never ran)."""
        ...


class Waits(Protocol):
    """What a run whose steps wait (approvals, signals, durable timers) needs."""

    async def signal(self, run_id: str, name: str) -> tuple[bool, Any]:
        """(sent, its data): a signal delivered to the run, by name."""
        ...

    async def child_ended(self, parent_id: str) -> None:
        """A child run ended: its parent, if it waits for it, may go on."""
        ...

    async def suspended(self, run_id: str, wake_at: float | None,
                        signals: list[str]) -> None:
        """The run committed ``waiting``: let it go (no process holds it), keep its
        timer, and wake it at once if one of ``signals`` came meanwhile."""
        ...


@dataclass(frozen=True, slots=True)
class RunContext:
    clock: Clock
    registry: AgentRegistry
    journal: Journal
    rng: random.Random
    publish: Callable[[Event], None]
    runs_active: Callable[[], int]
    children: Children | None = None
    waits: Waits | None = None
    # What only this process hears, never stored (``RunAbandoned``).
    publish_local: Callable[[Event], None] | None = None
