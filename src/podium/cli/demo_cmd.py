"""``podium demo``: the bundled pipeline, on a fleet that misbehaves, narrated as it goes.

Two runs, both on Podium's real machinery (``podium.demo`` explains the fleet):
the sales pipeline, which ends succeeded after a retried collector, an agent that
dies and fails over to another region, a circuit that opens and closes again, an
SLA alert that fires and resolves, a map and a ``when:``; then a publishing run
(with a sub-workflow) whose last step is refused, so the steps before it are
compensated, newest first. What the viewer
saw is then summed up from the events themselves, never from a script: on a
machine where something went differently, the summary says so.

``--crash`` runs the pipeline only and SIGKILLs this process once the steps
before ``report`` have committed, after printing the ``podium resume`` command
that finishes it. ``--ui`` serves the API and dashboard on 127.0.0.1 meanwhile
and prints a one-time login link (see ``podium.server.session``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from podium.cli.common import EXIT_FAILED, EXIT_OK, Interrupt, fail, run_async
from podium.definition.models import Workflow
from podium.events import (
    AlertFired,
    AlertResolved,
    CircuitStateChanged,
    CompensationSucceeded,
    Event,
    RunStarted,
    StepRetryScheduled,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from podium.state import RunStatus

__all__ = ["CRASH_BEFORE", "run_demo"]

# The step whose start kills ``--crash``: collect, process and validate have committed
# by then (a step's output is committed before any dependent starts); report,
# forecast and notify are left for ``podium resume``.
CRASH_BEFORE = "report"
UI_TOKEN_S = 3600.0  # the dashboard's token (and so its session) ends within the hour
UI_WAIT_S = 30.0  # how long --ui waits for the browser before the runs start anyway


@dataclass
class _Relay:
    """The runtime's one observer: hands events to the current run's progress view,
    keeps them for the summary, and kills the process at the ``--crash`` point."""

    target: Callable[[Event], None] | None = None
    events: list[Event] = field(default_factory=list)
    crash: Callable[[Event], None] | None = None

    def __call__(self, e: Event) -> None:
        self.events.append(e)
        if self.target is not None:
            self.target(e)
        if self.crash is not None:
            self.crash(e)


@dataclass
class _Demo:
    report: Path
    db: str | None
    as_json: bool
    main: Workflow
    publish: Workflow
    registry: Any
    relay: _Relay = field(default_factory=_Relay)
    interrupt: Interrupt = field(default_factory=Interrupt)
    stop_also: Callable[[], None] | None = None  # --ui: Ctrl-C also stops the server

    def say(self, text: str = "") -> None:
        if not self.as_json:
            print(text, flush=True)


def _load() -> tuple[Workflow, Workflow]:
    import podium.demo as demo
    from podium.definition.loader import load_workflow

    return load_workflow(demo.WORKFLOW_PATH), load_workflow(demo.PUBLISH_PATH)


def _retry_policies(workflow: Workflow) -> dict[str, Any]:
    from podium.definition.plan import compile_plan

    return {n.id: n.retry[0] for n in compile_plan(workflow).nodes if n.retry}


async def _one(d: _Demo, engine: Any, workflow: Workflow, inputs: dict[str, Any],
               source: Path, run_id: str | None = None) -> tuple[Any, list[str]]:
    """Run ``workflow`` with a progress view of its own; return the run and its failures."""
    import podium.demo as demo

    progress = None
    if not d.as_json:
        from podium.cli.progress import make_progress
        from podium.clock import SystemClock

        progress = make_progress([s.id for s in workflow.steps], SystemClock(),
                                 retry=_retry_policies(workflow))
        progress.state.regions.update(
            {a.id: a.region for a in d.registry.agents if getattr(a, "region", None)})
        d.relay.target = progress
    try:
        handle = await engine.start(workflow, inputs, run_id=run_id, source=str(source),
                                    agents_source={"registry": demo.REGISTRY_REF})

        def stop() -> None:
            handle.cancel("interrupted (Ctrl-C)")
            if d.stop_also is not None:
                d.stop_also()

        d.interrupt.on(stop)
        run = await handle.result()
    finally:
        d.relay.target = None
        if progress is not None:
            progress.close()
    return run, (progress.state.failures if progress is not None else [])


async def _both(d: _Demo, engine: Any) -> tuple[Any, list[str], Any]:
    """The pipeline, then (when it succeeded) the publishing run that is rolled back."""
    import podium.demo as demo

    d.say(f"1/2 {d.main.name}: collect → process + validate (in parallel) → report →"
          " forecast → notify → deliver (one per recipient), flag_issues or all_clear"
          " (whichever the data calls for), on an in-process fleet in eu-west and us-east"
          " that misbehaves on purpose.\n")
    main, failures = await _one(d, engine, d.main, demo.default_input(str(d.report)),
                                demo.WORKFLOW_PATH)
    if main.status != RunStatus.SUCCEEDED:
        return main, failures, None
    if not d.as_json:
        from podium.cli.app import _print_summary

        _print_summary(main, failures)
    d.say(f"\n2/2 {d.publish.name} (sequential): stage → announce (a sub-workflow) → publish;"
          " the warehouse refuses the last step, so what the first two did is compensated,"
          " newest first.\n")
    published, _ = await _one(d, engine, d.publish, demo.publish_input(str(d.report)),
                              demo.PUBLISH_PATH)
    d.say(f"\nrun {published.run_id} {published.status}"
          + (f": {published.error.type}: {published.error.message}" if published.error else ""))
    return main, failures, published


def _summary(events: list[Event], main: Any, published: Any) -> list[str]:
    """What the two runs showed, read from their events; a claim their events do not
    bear out is said to be missing, not made."""
    mine = {main.run_id} | ({published.run_id} if published is not None else set())
    # Fleet events have no run; a child run's id is its parent's, a dot, its step.
    own = [e for e in events if not e.run_id or e.run_id.split(".")[0] in mine]
    out: list[str] = []
    started = {e.step_id: e.ts for e in own if isinstance(e, StepStarted)
               and e.run_id == main.run_id and e.attempt == 1}
    done = {e.step_id: e.ts for e in own if isinstance(e, StepSucceeded)
            and e.run_id == main.run_id}
    if {"process", "validate"} <= started.keys() and started["validate"] < done.get(
            "process", float("inf")) and started["process"] < done.get("validate", float("inf")):
        out.append("parallel branches: process and validate ran at the same time")
    waits = [e for e in own if isinstance(e, StepRetryScheduled) and e.step_id == "collect"]
    if waits:
        shown = ", ".join(f"{e.delay_s * 1000:.0f} ms" for e in waits)
        out.append(f"retries: the flaky collector was retried after {shown} (exponential"
                   " backoff, each wait drawn at random below its ceiling: full jitter)")
    moved = []
    last: dict[str, str] = {}
    for e in own:
        if isinstance(e, StepStarted) and e.run_id == main.run_id:
            before = last.get(e.step_id)
            if before is not None and before != e.agent_id:
                moved.append(f"{e.step_id} ({before} → {e.agent_id})")
            last[e.step_id] = e.agent_id
    if moved:
        out.append("failover: eu-worker died mid-call; its work moved to us-worker in"
                   f" us-east: {', '.join(moved)}")
    circuits: dict[str, list[str]] = {}
    for e in own:
        if isinstance(e, CircuitStateChanged):
            circuits.setdefault(e.agent_id, []).append(e.new)
    for agent_id, states in circuits.items():
        closed = "closed again on a trial call" if states[-1] == "closed" else "still open"
        out.append(f"circuit breaker of {agent_id}: closed → {' → '.join(states)} ({closed})")
    fired = [e for e in own if isinstance(e, AlertFired)]
    resolved = [e for e in own if isinstance(e, AlertResolved)]
    if fired:
        out.append(f"alerts: {fired[0].rule} fired ({fired[0].summary})"
                   + (" and resolved when the run ended" if resolved else ""))
    items = [e.step_id for e in own if isinstance(e, StepSucceeded) and e.run_id == main.run_id
             and e.step_id.startswith("deliver[")]
    if items:
        out.append(f"map: deliver ran once per recipient ({len(items)} items, each committed"
                   " on its own)")
    skipped = [e for e in own if isinstance(e, StepSkipped) and e.run_id == main.run_id
               and e.condition]
    ran = [s for s in ("flag_issues", "all_clear") if s in done]
    if skipped and ran:
        out.append(f"routing: {', '.join(ran)} ran, {', '.join(e.step_id for e in skipped)}"
                   " was skipped (its `when:` was false)")
    children = sorted({e.run_id for e in own if isinstance(e, RunStarted) and "." in e.run_id})
    if children:
        out.append(f"sub-workflow: announce ran as a child run of its own ({children[0]}),"
                   " and was rolled back with its parent")
    comp = [e.step_id for e in own if isinstance(e, CompensationSucceeded)
            and published is not None and e.run_id == published.run_id]
    if comp:
        out.append(f"rollback: the failed publication's finished steps were compensated in"
                   f" reverse order: {' then '.join(comp)}")
    out.append("checkpoints: every step's result was committed before the next step"
               " started; `podium demo --crash` kills itself halfway, and `podium resume`"
               " finishes the run without redoing a step")
    wanted = {"parallel", "retries", "failover", "circuit", "alerts", "map", "routing",
              "sub-workflow", "rollback"}
    missing = wanted - {line.split(":")[0].split(" ")[0] for line in out}
    if missing:
        out.append("not seen this time (a very slow or busy machine?):"
                   f" {', '.join(sorted(missing))}")
    return out


# What the end of the demo quotes from the metrics (the names /metrics serves).
_METRICS = ("podium_step_attempts_total", "podium_step_retries_total",
            "podium_sla_violations_total", "podium_runs_total")


def metric_totals(metrics: Any) -> dict[str, float]:
    """The sums of a few counters over their labels, read from the Prometheus registry."""
    totals = dict.fromkeys(_METRICS, 0.0)
    for family in metrics.exposed.collect():
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


def _quiet_alert_log() -> None:
    # The alert manager's default receiver logs each alert as a warning; the progress
    # lines already say it, in place, and a log line would tear the live table.
    logging.getLogger("podium.alerts").setLevel(logging.ERROR)


def _db_option(db: str | None) -> str:
    return f" --db {db}" if db else ""


def run_demo(report: Path | None, db: str | None, as_json: bool, crash: bool, ui: bool,
             port: int | None) -> None:
    """``podium demo``'s body: checks the flags, then one of the three ways to run."""
    import podium.demo as demo

    if crash and ui:
        fail("--crash and --ui go separately (fix: podium demo --crash, then podium resume)")
    if as_json and (crash or ui):
        fail("--json prints the pipeline's run document; it does not go with --crash or --ui")
    if port is not None and not ui:
        fail("--port goes with --ui (fix: podium demo --ui --port N)")
    if port is not None:
        from podium.httpd import check_port

        check_port(port, "--port")
    main, publish = _load()
    d = _Demo(report=(report or Path(demo.DEFAULT_REPORT_NAME)).resolve(), db=db,
              as_json=as_json, main=main, publish=publish, registry=demo.registry())
    _quiet_alert_log()
    if crash:
        _crash(d)
    elif ui:
        _ui(d, port)
    else:
        _plain(d)


def _runtime_config(d: _Demo, **more: Any) -> Any:
    import podium.demo as demo
    from podium.runtime import RuntimeConfig

    return RuntimeConfig(db=d.db, registry=d.registry,
                         agents_source=(("registry", demo.REGISTRY_REF),),
                         workflows=(d.main, d.publish), alert_tick_s=0.1,
                         observers=(d.relay,), **more)


def _plain(d: _Demo) -> None:
    from podium.runtime import Runtime
    from podium.tuning import tune_gc

    totals: dict[str, float] = {}

    async def go() -> tuple[Any, list[str], Any]:
        tune_gc()
        async with Runtime(_runtime_config(d, metrics=True)) as runtime:
            d.registry.start_monitor()
            done = await _both(d, runtime.engine)
            totals.update(metric_totals(runtime.metrics))
            return done

    main, failures, published = run_async(go, on_interrupt=d.interrupt,
                                           json_stdout=d.as_json)
    _finish(d, main, failures, published, totals)


def _finish(d: _Demo, main: Any, failures: list[str], published: Any,
            totals: dict[str, float]) -> None:
    from podium.cli.app import _finish as finish_run

    if d.as_json or main.status != RunStatus.SUCCEEDED:
        finish_run(main, failures, d.as_json)  # exits: 0 succeeded, 1 failed
    print("\nWhat you just saw:")
    for line in _summary(d.relay.events, main, published):
        print(f"  - {line}")
    if totals:
        print("  - metrics (Prometheus, as `podium serve` and `--metrics-port` expose them): "
              + ", ".join(f"{k} {v:g}" for k, v in totals.items()))
    print(f"\nSee them again: podium status {main.run_id} · podium status"
          f" {published.run_id} · podium alerts{_db_option(d.db)}")
    ok = published.status == RunStatus.ROLLED_BACK
    if not ok:
        print(f"\nthe publishing run ended {published.status}, not rolled_back as designed")
    print(f"\nThe report is at {d.report}", flush=True)
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


def _crash(d: _Demo) -> None:
    import podium.demo as demo
    from podium.engine.engine import new_run_id
    from podium.runtime import Runtime
    from podium.store.factory import default_db_url

    url = default_db_url(d.db)
    if url.startswith("memory:"):
        fail("--crash needs a database that outlives this process (fix: --db"
             " sqlite:///demo.db, or leave --db out for .podium/podium.db)")
    run_id = new_run_id()
    resume = f"podium resume {run_id}{_db_option(d.db)}"

    def kill(e: Event) -> None:
        if isinstance(e, StepStarted) and e.run_id == run_id and e.step_id == CRASH_BEFORE:
            target = d.relay.target
            if target is not None and hasattr(target, "close"):
                target.close()  # give the terminal back before dying
            committed = [x.step_id for x in d.relay.events
                         if isinstance(x, StepSucceeded) and x.run_id == run_id]
            print(f"\n✝ {', '.join(committed)} committed; killing this process now"
                  f" (SIGKILL, pid {os.getpid()}), in the middle of the run.\nFinish it,"
                  f" without redoing a step:\n\n    {resume}\n", flush=True)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    d.relay.crash = kill

    async def go() -> Any:
        async with Runtime(_runtime_config(d)) as runtime:
            d.registry.start_monitor()
            d.say(f"{d.main.name}, run {run_id}: this process kills itself with SIGKILL"
                  f" when '{CRASH_BEFORE}' starts. To finish it afterwards:\n\n"
                  f"    {resume}\n")
            return await _one(d, runtime.engine, d.main, demo.default_input(str(d.report)),
                              demo.WORKFLOW_PATH, run_id=run_id)

    run, failures = run_async(go, on_interrupt=d.interrupt)
    # Only when the run ended before the kill (it failed early): say so, as podium run would.
    from podium.cli.app import _finish as finish_run

    finish_run(run, failures, False)


def _ui(d: _Demo, port: int | None) -> None:
    from podium.httpd import (
        AllowedHosts,
        BodyLimit,
        HostGuard,
        HttpLimits,
        bind,
        check_log_level,
        url_of,
        uvicorn_config,
    )
    from podium.server.app import ServerConfig, _too_large, check_database, create_app

    check_log_level("warning")  # also: is uvicorn installed
    check_database(d.db)
    import uvicorn

    import podium.demo as demo

    app = create_app(ServerConfig(db=d.db, registry=d.registry,
                                  agents_source=(("registry", demo.REGISTRY_REF),),
                                  project_work=False))
    sock = bind("127.0.0.1", port or 0)
    limits = HttpLimits()
    guarded = HostGuard(BodyLimit(app, limits.max_body_bytes, shape=_too_large),
                        AllowedHosts("127.0.0.1", sock, ()))
    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Ctrl-C is run_async's: its first stops the server (and a run in flight),
            # its second aborts. uvicorn's own capture would re-raise the signal after
            # a graceful stop, and that would abort the shutdown it just made.
            yield

    # Access logs off: the login link's code would be in them (it is single-use, but
    # a log is no place for it).
    server = Server(uvicorn_config(guarded, limits, log_level="warning", lifespan="on"))
    server.config.access_log = False

    def stop_serving() -> None:
        server.should_exit = True

    d.stop_also = stop_serving
    token_id: list[str] = []

    async def go() -> tuple[Any, list[str], Any]:
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]),
                                                         name="podium:demo-ui")
        while not server.started:
            if serving.done():
                await serving  # it failed to start: its error is this command's
                fail("the dashboard server stopped before it started", 3, kind="server")
            await asyncio.sleep(0.02)
        podium = app.state.podium
        _quiet_alert_log()  # again: uvicorn's start configured the loggers anew
        podium.engine.bus.subscribe(d.relay)
        for wf in (d.main, d.publish):
            podium.alerts.watch_workflow(wf)
        link, code = await _login_link(podium, url_of(sock), token_id)
        d.interrupt.on(stop_serving)
        print(f"Open the dashboard (a one-time link: it logs one browser in, once):\n\n"
              f"    {link}\n\nThe demo starts when it is opened, or in"
              f" {UI_WAIT_S:g} s; Ctrl-C stops the server.\n", flush=True)
        until = time.monotonic() + UI_WAIT_S
        # Polled, not an event: the code is redeemed by a request, in the app, and
        # Ctrl-C sets a flag of uvicorn's; a tenth of a second is soon enough for both.
        while (podium.logins.outstanding(code)  # noqa: ASYNC110 - see above
               and time.monotonic() < until and not server.should_exit):
            await asyncio.sleep(0.1)
        main, failures, published = await _both(d, podium.engine)
        if main.status == RunStatus.SUCCEEDED and published is not None:
            print("\nWhat you just saw:")
            for line in _summary(d.relay.events, main, published):
                print(f"  - {line}")
        print(f"\nThe runs stay on the dashboard at {url_of(sock)}/ until Ctrl-C.",
              flush=True)
        d.interrupt.on(stop_serving)
        await serving
        return main, failures, published

    try:
        main, _failures, _published = run_async(go, on_interrupt=d.interrupt)
    finally:
        sock.close()
        if token_id:
            _revoke(d.db, token_id[0])
    raise typer.Exit(EXIT_OK if main.status == RunStatus.SUCCEEDED else EXIT_FAILED)


async def _login_link(podium: Any, base: str, token_id: list[str]) -> tuple[str, str]:
    """A token for this demo (its secret stays in this process) and a one-time link to it.

    The token makes the server ask every other client for one: while none exists a
    loopback server is open to every program on this machine, and the link is then
    not needed (the dashboard just opens).
    """
    from podium.auth import Principal, Scope, create_token

    now = time.time()
    _token, record = await create_token(podium.runtime.store, Scope.WRITE, "podium demo --ui",
                                        UI_TOKEN_S, now)
    token_id.append(record.id)
    podium.auth.forget()  # "no token exists" may be cached: it is stale now
    principal = Principal(token_id=record.id, name=record.name, scope=record.scope)
    code = podium.logins.issue(principal, record.expires_at)
    return f"{base}/session/link?code={code}", code


def _revoke(db: str | None, token_id: str) -> None:
    """The demo's token ends with it, so a later ``podium serve`` is as open as before."""
    from podium.store.factory import default_db_url, open_store

    async def revoke() -> None:
        store = open_store(default_db_url(db))
        await store.open()
        try:
            await store.revoke_token(token_id, time.time())
        finally:
            await store.close()

    asyncio.run(revoke())
