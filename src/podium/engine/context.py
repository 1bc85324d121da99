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

from podium.agents.registry import AgentRegistry
from podium.clock import Clock
from podium.engine.journal import Journal
from podium.events import Event

__all__ = ["RunContext"]


@dataclass(frozen=True, slots=True)
class RunContext:
    clock: Clock
    registry: AgentRegistry
    journal: Journal
    rng: random.Random
    publish: Callable[[Event], None]
    runs_active: Callable[[], int]
