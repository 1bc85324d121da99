"""The bundled demo that ``podium demo`` runs: a sales pipeline on a fleet that misbehaves.

``collect`` reads ``sales.csv``; ``process`` and ``validate`` run in parallel
on its rows; ``report`` writes a Markdown report; ``forecast`` projects next
month; ``notify`` composes the message announcing it and ``deliver`` (a map)
hands it to each recipient; ``flag_issues`` or ``all_clear`` runs, as the
validation's count decides (``when:``). A second, short, sequential workflow
(``publish.yaml``, one step of it a sub-workflow) then tries to publish the
report and fails on its last step, so the steps before it are compensated.

The fleet is in-process (nothing to install or start), but what goes wrong in
it is real, happens the same way every time, and is handled by Podium's own
machinery, not scripted output:

- ``demo-collector`` fails its first ``COLLECTOR_FAILURES`` calls (a busy API):
  the retry policy waits with backoff and full jitter;
- ``eu-worker`` (the engine's own region) dies ``EU_DIES_AFTER_S`` into its first
  call, taking every call it holds with it, and stays down ``EU_DOWN_S``; its
  circuit breaker opens, health checks mark it unhealthy, and the retries fail
  over to ``us-worker`` in another region (slower: ``US_LATENCY_S`` per call);
- once it is back, health checks see it, its breaker lets one trial call through
  (the ``forecast`` step) and closes again.

The run's SLA (``sla:`` in ``workflow.yaml``) is shorter than all this takes, so
the SLA alert fires during the run and resolves when it ends. Use it from
Python::

    import asyncio
    import podium.demo as demo
    from podium import Engine, load_workflow

    run = asyncio.run(Engine(registry=demo.registry()).run(
        load_workflow(demo.WORKFLOW_PATH), demo.default_input("report.md")))
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from podium.agents import AgentRegistry, HealthReport, PythonAgent, Task
from podium.agents.breaker import BreakerConfig
from podium.agents.health import HealthConfig
from podium.agents.registry import RegistryConfig
from podium.demo import agents
from podium.demo.agents import SAMPLE_CSV
from podium.errors import AgentError, InvalidInput, Unavailable

__all__ = [
    "COLLECTOR_FAILURES",
    "DEFAULT_REPORT_NAME",
    "PUBLISH_PATH",
    "REGISTRY_REF",
    "SAMPLE_CSV",
    "UPSTREAM_BUSY",
    "WORKFLOW_PATH",
    "default_input",
    "publish_input",
    "registry",
]

WORKFLOW_PATH: Path = Path(__file__).with_name("workflow.yaml")
PUBLISH_PATH: Path = Path(__file__).with_name("publish.yaml")
DEFAULT_REPORT_NAME = "podium-demo-report.md"
# Stored with every demo run as where its agents come from, so ``podium resume``
# builds the same fleet in another process (see ``podium.runtime``).
REGISTRY_REF = "podium.demo:registry"

HOME_REGION = "eu-west"
COLLECTOR_FAILURES = 2
UPSTREAM_BUSY = "upstream_unavailable"
# eu-worker's calls take EU_WORK_S and it dies EU_DIES_AFTER_S into its first one: a
# call made at the same time (validate beside process) is in its hands by then even
# on a busy machine, so both are lost with it, and its breaker sees two failures.
EU_WORK_S = 0.3
EU_DIES_AFTER_S = 0.1
EU_DOWN_S = 0.5
# Longer than EU_DOWN_S plus a health check and the breaker's reset timeout, so the
# step after the failed-over ones finds eu-worker back and half-open: the circuit
# closes on that step's trial call, whatever the machine's speed (a slower machine
# only stretches the failed-over calls further).
US_LATENCY_S = 1.2
LOCAL_WORK_S = 0.05

Handler = Callable[[Task], Any]


async def _call(handler: Handler, task: Task) -> Any:
    result = handler(task)
    if inspect.isawaitable(result):
        return await result
    return result


class FlakyCollector:
    """Fails its first ``failures`` calls because the sales API behind it is busy, then works.

    Its error type, ``upstream_unavailable``, is the registry's breaker's to ignore
    (``ignored_errors`` in ``registry()``): the collector itself is fine, so calls to it
    must go on; only the retry policy's backoff spaces them out.
    """

    def __init__(self, failures: int = COLLECTOR_FAILURES) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, task: Task) -> Any:
        self.calls += 1
        await asyncio.sleep(LOCAL_WORK_S)
        if self.calls <= self.failures:
            raise AgentError(f"the sales API answered 503, busy (call {self.calls})",
                             type=UPSTREAM_BUSY)
        return await asyncio.to_thread(agents.collect, task)


class Worker:
    """A regional worker serving several capabilities; it may die once, then restart.

    ``dies_after_s`` into its first call it dies: that call and every other it holds
    fail (``unavailable``: the connection was reset), calls that come while it is down
    are refused, and its health check says unhealthy, until ``down_s`` later when it
    is back (as a supervisor would restart it). ``latency_s`` is the network's share
    of each call (a far region costs more).
    """

    def __init__(self, name: str, handlers: Mapping[str, Handler], *, latency_s: float,
                 dies_after_s: float | None = None, down_s: float = EU_DOWN_S) -> None:
        self.name = name
        self.handlers = dict(handlers)
        self.latency_s = latency_s
        self.dies_after_s = dies_after_s
        self.down_s = down_s
        self.died_at: float | None = None
        self.calls = 0

    def down(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.died_at is not None and self.died_at <= now < self.died_at + self.down_s

    async def __call__(self, task: Task) -> Any:
        self.calls += 1
        if self.down():
            raise Unavailable(f"{self.name}: connection refused (the process is down)")
        if self.dies_after_s is not None and self.died_at is None:
            self.died_at = time.monotonic() + self.dies_after_s
        await asyncio.sleep(self.latency_s)
        if self.down():
            raise Unavailable(f"{self.name}: connection reset (the process died mid-call)")
        handler = self.handlers.get(task.capability)
        if handler is None:
            raise InvalidInput(f"{self.name} has no capability {task.capability!r}")
        return await _call(handler, task)

    def health(self) -> HealthReport:
        if self.down():
            return HealthReport("unhealthy", detail=f"{self.name} is not answering")
        return HealthReport("healthy")


class ByCapability:
    """One agent serving several capabilities: the task's capability picks the function."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = dict(handlers)

    async def __call__(self, task: Task) -> Any:
        handler = self.handlers.get(task.capability)
        if handler is None:
            raise InvalidInput(f"no capability {task.capability!r} here")
        return await _call(handler, task)


class ByAction:
    """One agent for a do/undo pair: ``input.action`` picks the function."""

    def __init__(self, actions: Mapping[str, Handler]) -> None:
        self.actions = dict(actions)

    async def __call__(self, task: Task) -> Any:
        params = task.input if isinstance(task.input, Mapping) else {}
        handler = self.actions.get(str(params.get("action")))
        if handler is None:
            raise InvalidInput(f"input.action must be one of {', '.join(self.actions)}")
        await asyncio.sleep(LOCAL_WORK_S)
        return await asyncio.to_thread(handler, task)  # they write files


def registry() -> AgentRegistry:
    """A fresh fleet in two regions; each call starts the misbehaviour anew.

    Health checks every 100 ms (one bad check is enough), a breaker that opens after
    2 failures in a row and tries again after 0.5 s: tight, so that all of it fits in
    a few seconds; an agents file would say the same with ``health:`` and
    ``circuit_breaker:`` (``ignore_errors``: a busy upstream is not the agent's fault).
    """
    work = {"data-processing": agents.process, "data-validation": agents.validate,
            "forecasting": agents.forecast}
    eu = Worker("eu-worker", work, latency_s=EU_WORK_S, dies_after_s=EU_DIES_AFTER_S)
    us = Worker("us-worker", work, latency_s=US_LATENCY_S)
    config = RegistryConfig(
        region=HOME_REGION,
        health=HealthConfig(interval_s=0.1, timeout_s=0.5, unhealthy_after=1,
                            healthy_after=1),
        breaker=BreakerConfig(failure_threshold=2, reset_timeout_s=0.5, failure_rate=None,
                              ignored_errors=frozenset({"invalid_input", "cancelled",
                                                        UPSTREAM_BUSY})),
        acquire_timeout_s=10.0,
    )
    return AgentRegistry([
        PythonAgent(FlakyCollector(), id="demo-collector", capabilities=["data-collection"],
                    region=HOME_REGION),
        PythonAgent(eu, id="eu-worker", capabilities=sorted(work), region=HOME_REGION,
                    health=eu.health),
        PythonAgent(us, id="us-worker", capabilities=sorted(work), region="us-east",
                    health=us.health),
        PythonAgent(agents.report, id="demo-reporter", capabilities=["report-generation"],
                    region=HOME_REGION),
        PythonAgent(ByCapability({"notification": agents.notify, "delivery": agents.deliver}),
                    id="demo-notifier", capabilities=["delivery", "notification"],
                    region=HOME_REGION),
        PythonAgent(ByAction({"stage": agents.stage, "unstage": agents.unstage,
                              "publish": agents.publish}),
                    id="demo-warehouse", capabilities=["warehouse"], region=HOME_REGION),
        PythonAgent(ByAction({"announce": agents.announce, "retract": agents.retract}),
                    id="demo-announcer", capabilities=["announcement"], region=HOME_REGION),
    ], config)


def default_input(report_path: str | None = None) -> dict[str, str]:
    """The run input: the bundled CSV, and the report in ``report_path``.

    ``report_path`` defaults to ``podium-demo-report.md`` in the current folder;
    it is made absolute here so the stored run says exactly where it wrote.
    """
    path = Path(report_path) if report_path else Path(DEFAULT_REPORT_NAME)
    return {"source": str(SAMPLE_CSV), "report_path": str(path.expanduser().resolve())}


def publish_input(report_path: str, warehouse: str | None = None) -> dict[str, str]:
    """The publishing run's input: the report, and the folder standing for the warehouse
    (``.podium/demo-warehouse`` beside the report unless given)."""
    report = Path(report_path).expanduser().resolve()
    folder = Path(warehouse) if warehouse else report.parent / ".podium" / "demo-warehouse"
    return {"report": str(report), "warehouse": str(folder.expanduser().resolve())}
