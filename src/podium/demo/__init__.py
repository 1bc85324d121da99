"""The bundled demo that ``podium demo`` runs: a small sales pipeline on sample data.

``collect`` reads ``sales.csv``; ``process`` and ``validate`` run in parallel
on its rows; ``report`` writes a Markdown report; ``notify`` composes the
message announcing it. Use it from Python::

    import asyncio
    import podium.demo as demo
    from podium import Engine, load_workflow

    run = asyncio.run(Engine(registry=demo.registry()).run(
        load_workflow(demo.WORKFLOW_PATH), demo.default_input("report.md")))
"""

from __future__ import annotations

from pathlib import Path

from podium.agents import AgentRegistry, PythonAgent
from podium.demo import agents
from podium.demo.agents import SAMPLE_CSV

__all__ = ["DEFAULT_REPORT_NAME", "SAMPLE_CSV", "WORKFLOW_PATH", "default_input", "registry"]

WORKFLOW_PATH: Path = Path(__file__).with_name("workflow.yaml")
DEFAULT_REPORT_NAME = "podium-demo-report.md"


def registry() -> AgentRegistry:
    """A fresh registry with the five demo agents, one per capability the workflow uses."""
    return AgentRegistry([
        PythonAgent(agents.collect, id="demo-collector", capabilities=["data-collection"]),
        PythonAgent(agents.process, id="demo-processor", capabilities=["data-processing"]),
        PythonAgent(agents.validate, id="demo-validator", capabilities=["data-validation"]),
        PythonAgent(agents.report, id="demo-reporter", capabilities=["report-generation"]),
        PythonAgent(agents.notify, id="demo-notifier", capabilities=["notification"]),
    ])


def default_input(report_path: str | None = None) -> dict[str, str]:
    """The run input: the bundled CSV, and the report in ``report_path``.

    ``report_path`` defaults to ``podium-demo-report.md`` in the current folder;
    it is made absolute here so the stored run says exactly where it wrote.
    """
    path = Path(report_path) if report_path else Path(DEFAULT_REPORT_NAME)
    return {"source": str(SAMPLE_CSV), "report_path": str(path.expanduser().resolve())}
