"""Shared helpers: small registries of in-process agents and a run shortcut."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from podium import AgentRegistry, Engine, EngineConfig, FakeClock, PythonAgent, Workflow
from podium.store import MemoryStore, RunRecord

# The throwaway PostgreSQL (fixtures pg_cluster and pg_url) for every test folder.
pytest_plugins = ["tests.pg"]


def registry_of(**agents: Callable[..., Any]) -> AgentRegistry:
    """One agent per capability, with the capability as its id."""
    return AgentRegistry(
        PythonAgent(fn, id=cap, capabilities=[cap]) for cap, fn in agents.items()
    )


async def run_workflow(
    workflow: Workflow | dict[str, Any],
    input: Any = None,
    *,
    clock: Any = None,
    seed: int = 7,
    **agents: Callable[..., Any],
) -> RunRecord:
    import random

    from podium.definition import workflow_from_dict

    wf = workflow if isinstance(workflow, Workflow) else workflow_from_dict(workflow)
    cfg = EngineConfig(registry=registry_of(**agents), store=MemoryStore(),
                       rng=random.Random(seed))
    if clock is not None:
        cfg.clock = clock
    async with Engine(cfg) as engine:
        return await engine.run(wf, input)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
