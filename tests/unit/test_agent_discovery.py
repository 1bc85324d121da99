"""Where agents come from: entry points, @agent, the agents file, and run-time changes."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from podium import AgentRegistry, PythonAgent, agent
from podium.agents.config import build_registry
from podium.agents.python import _DECORATED
from podium.events import AgentRegistered, AgentUnregistered, Event


def _install_distribution(root: Path, module: str, entry: str) -> None:
    """A real (unpacked) distribution on sys.path, the way pip leaves one."""
    (root / f"{module}.py").write_text(textwrap.dedent("""\
        from podium import agent

        async def translate(task):
            return {"translated": task.input}

        @agent("summarise", id="plugin-summariser")
        async def summarise(task):
            return "short"
        """))
    info = root / "podium_plugin_demo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: podium-plugin-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[podium.agents]\n{entry}\n")


def test_installed_packages_register_agents_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "podium_plugin_demo_agents"
    _install_distribution(
        tmp_path, module,
        f"translation = {module}:translate\nsummary = {module}:summarise")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry, _cfg, source = build_registry(None, decorated_too=False)
        # A plain function is registered under the entry point's name as its capability;
        # an @agent function keeps its own id and capabilities.
        assert registry.knows("translation")
        assert registry.knows("summarise")
        assert registry.get("plugin-summariser") is not None
        assert source["entry_points"] is True
        without, _cfg, _src = build_registry(None, entry_points_too=False, decorated_too=False)
        assert not without.knows("translation")
    finally:
        sys.modules.pop(module, None)
        _DECORATED.pop("plugin-summariser", None)  # process-wide: leave none behind


def test_agent_decorated_functions_are_found_and_stay_callable() -> None:
    @agent("decorated-capability", id="decorated-one", max_concurrency=3)
    async def work(task: Any) -> Any:
        return "done"

    registry, _cfg, _src = build_registry(None, entry_points_too=False)
    found = registry.get("decorated-one")
    assert found is not None
    assert found.capabilities == frozenset({"decorated-capability"})
    assert found.max_concurrency == 3
    assert work.__podium_agent__ is found  # type: ignore[attr-defined]
    _DECORATED.pop("decorated-one", None)


async def test_agents_register_and_unregister_at_run_time_with_events() -> None:
    async def work(task: Any) -> Any:
        return None

    events: list[Event] = []
    registry = AgentRegistry()
    registry.attach(events.append)
    registry.register(PythonAgent(work, id="late", capabilities=["job"]))
    assert registry.knows("job")
    lease = await registry.acquire("job")
    assert lease.agent.id == "late"
    lease.release()
    assert registry.unregister("late") is not None
    assert not registry.knows("job")
    assert [type(e) for e in events] == [AgentRegistered, AgentUnregistered]
    registered = events[0]
    assert isinstance(registered, AgentRegistered)
    assert registered.capabilities == ("job",)
    assert registered.transport == "python"


def test_an_a2a_agent_takes_the_files_token_and_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``token_env`` and ``timeout`` mean for an A2A agent what they mean for an HTTP one
    (they were once dropped: an A2A server that authenticates could not be called)."""
    pytest.importorskip("a2a.client", reason="the a2a extra is not installed")
    monkeypatch.setenv("REMOTE_TOKEN", "tok-a2a-123")
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n  - {id: far, a2a: 'http://127.0.0.1:9', capabilities: [x],"
                    " token_env: REMOTE_TOKEN, timeout: 7s}\n")
    registry, _file, _source = build_registry(path, entry_points_too=False, decorated_too=False)
    far: Any = registry.get("far")
    assert far._headers["Authorization"] == "Bearer tok-a2a-123"
    assert far._request_timeout_s == 7.0
