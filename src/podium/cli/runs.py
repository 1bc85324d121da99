"""Commands over stored runs: runs, status, resume, cancel, rollback."""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

import datetime as dt
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import AgentsOpt, DbOpt, JsonOpt, _finish, app
from podium.cli.common import (
    EXIT_OK,
    Interrupt,
    check_limit,
    dump_json,
    fail,
    guarded,
    in_workflow_order,
    run_async,
)
from podium.state import LIVE_RUN_STATUSES, RunStatus


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


async def _runtime(
    db: str | None, agents: Path | None = None, source: dict[str, Any] | None = None,
    *, readonly: bool = False, observers: tuple[Any, ...] = (),
) -> Any:
    """An opened runtime: with no agents to read runs, with a run's own agents (as it
    stored where they came from; ``--agents`` wins) to drive it.

    The store is this process's one store of the file: a second runtime here (one per
    resumed run, with that run's agents) shares it rather than opening the file again.
    """
    from podium.agents.registry import AgentRegistry
    from podium.runtime import Runtime, RuntimeConfig, agents_of_run, registry_of_run

    if agents is None and source is None:
        config = RuntimeConfig(db=db, readonly=readonly, registry=AgentRegistry(),
                               alerts=False, observers=observers)
    elif (registry := registry_of_run(source, agents)) is not None:
        config = RuntimeConfig(db=db, readonly=readonly, registry=registry,
                               agents_source=tuple((source or {}).items()), alerts=False,
                               observers=observers)
    else:
        path, entry_points = agents_of_run(source, agents)
        config = RuntimeConfig(db=db, readonly=readonly, agents_file=path,
                               entry_points=entry_points, alerts=False, observers=observers)
    return await Runtime(config).open()


async def _run_rows(engine: Any, status: str | None, workflow: str | None,
                    limit: int) -> list[dict[str, Any]]:
    """The runs as ``podium runs --json`` lists them (before the times are formatted)."""
    runs = await engine.store.list_runs(status=status, workflow=workflow, limit=limit)
    out = []
    now = await engine.store.now()
    missing: dict[str, list[str]] = {}
    from podium.store.base import WorkerStore

    if isinstance(engine.store, WorkerStore) and any(
            r.status == RunStatus.PENDING for r in runs):
        # Shared by workers: a run no live worker can execute says what it lacks.
        missing = await engine.store.missing_capabilities(60.0)
    for r in runs:
        stale = r.status in LIVE_RUN_STATUSES and engine.owner_is_dead(r, now)
        out.append({
            "run_id": r.run_id, "parent": r.parent, "workflow": r.workflow,
            "version": r.version,
            "status": r.status,
            "resumable": stale or r.status in (RunStatus.FAILED, RunStatus.CANCELLED),
            "stale": stale, "created_at": r.created_at, "started_at": r.started_at,
            "finished_at": r.finished_at, "duration_s": r.duration_s,
            "error": None if r.error is None else r.error.public(),
        })
        if r.status == RunStatus.WAITING:  # what it waits for, and how to go on
            from podium.cli.app import waiting_lines

            out[-1]["waits_for"] = waiting_lines(await engine.store.get_run(r.run_id))
        if r.run_id in missing:
            out[-1]["waiting_for"] = missing[r.run_id]
    return out


def _print_runs(rows: list[dict[str, Any]]) -> None:
    from podium.definition.durations import format_duration

    if not rows:
        print("no runs")
        return
    w = max(16, *(len(r["run_id"]) for r in rows))  # child runs: PARENT.STEP[i]
    print(f"{'RUN':<{w}} {'WORKFLOW':<22} {'VER':<5} {'STATUS':<22} {'CREATED':<19}"
          " DURATION")
    for r in rows:
        st = r["status"] + (" (resumable)" if r.get("stale") else "")
        if r.get("waiting_for"):
            st = f"{r['status']} (no worker has {', '.join(r['waiting_for'])})"
        if r.get("waits_for"):
            st = f"waiting: {'; '.join(r['waits_for'])}"
        dur = "-" if r["duration_s"] is None else format_duration(r["duration_s"])
        created = r["created_at"]
        if isinstance(created, str):  # (from a server: ISO 8601 already)
            created = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        print(f"{r['run_id']:<{w}} {r['workflow'][:22]:<22} {r['version']!s:<5} {st:<22} "
              f"{_when(created):<19} {dur}")


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from podium.docs import with_times

    return [with_times(dict(r), ("created_at", "started_at", "finished_at")) for r in rows]


@app.command("runs")
def runs_cmd(
    status: Annotated[
        str | None, typer.Option("--status", metavar="STATUS", help="Only runs with this status.")
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", metavar="NAME", help="Only this workflow.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N",
                          help="At most this many, newest first (up to 100000).")
    ] = 20,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Then print each change of a run as it is"
                           " committed, until Ctrl-C (--json: one object per line).")
    ] = False,
    server: Annotated[
        str | None, typer.Option("--server", metavar="URL",
                                 help="With --watch: a podium serve's event stream (else the"
                                 " database is read).")
    ] = None,
    token_env: Annotated[
        str | None, typer.Option("--token-env", metavar="NAME",
                                 help="With --server: the variable holding an API token.")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first; runs left behind by a dead process show as resumable."""

    async def go() -> list[dict[str, Any]]:
        rt = await _runtime(db, readonly=True)
        try:
            return await _run_rows(rt.engine, status, workflow, limit)
        finally:
            await rt.close()

    def show(rows: list[dict[str, Any]]) -> None:
        if not as_json:
            _print_runs(rows)
            return
        if not watch:
            dump_json(_json_rows(rows))
            return
        import json

        for row in _json_rows(rows):  # --watch --json: one object per line throughout
            print(json.dumps(row, default=str, separators=(",", ":")), flush=True)

    def body() -> None:
        from podium.state import RUN_STATUSES

        check_limit(limit)
        if status is not None and status not in RUN_STATUSES:
            fail(f"--status {status!r} is not a run status (fix: use one of "
                 f"{', '.join(RUN_STATUSES)})")
        if not watch and (server is not None or token_env is not None):
            fail("--server and --token-env go with --watch (fix: add --watch)")
        if server is None and token_env is not None:
            fail("--token-env goes with --server (fix: add --server URL, or leave it out)")
        if watch:
            from podium.cli.common import token_from_env
            from podium.cli.watch import watch_runs

            watch_runs(lambda rt: _run_rows(rt.engine, status, workflow, limit), db=db,
                       server=server, token=token_from_env(token_env), status=status,
                       workflow=workflow, as_json=as_json, show_list=show)
            raise typer.Exit(EXIT_OK)
        show(run_async(go))

    guarded(body, as_json=as_json and not watch)


# What --verbose shows where a traceback would be, so its absence is not a mystery.
_NO_TRACEBACK = (
    "  (no traceback recorded: '{}' errors come from Podium or from the agent's answer,"
    " not from an exception raised in this process)"
)


def _detail(event: dict[str, Any], t0: float) -> str:
    """An event's fields for people: errors as type: message, durations rounded, due times
    as offsets from the run's creation like the timeline's own column."""
    from podium.definition.durations import format_duration

    parts = []
    for key, value in event.items():
        if value in (None, ""):
            continue
        if key == "error" and isinstance(value, dict):
            value = f"{value.get('type')}: {value.get('message')}"
        elif key.endswith("_s") and isinstance(value, int | float):
            key, value = key[:-2], format_duration(value)
        elif key == "at" and isinstance(value, int | float):
            value = "+" + format_duration(value - t0)
        parts.append(f"{key}={value}")
    return " ".join(parts)


@app.command()
def status(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN", help="Run id (a unique prefix is enough).")
    ],
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Tracebacks and timeline details.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print its events as they come, until it"
                           " ends or waits (exit code as podium run's).")
    ] = False,
    server: Annotated[
        str | None, typer.Option("--server", metavar="URL",
                                 help="With --follow: a podium serve's event stream (else the"
                                 " database is read).")
    ] = None,
    token_env: Annotated[
        str | None, typer.Option("--token-env", metavar="NAME",
                                 help="With --server: the variable holding an API token.")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: per step status, attempts, agent, duration, error; and its timeline."""
    if follow:
        from podium.cli.follow import follow_run

        guarded(lambda: follow_run(run_id, db=db, server=server, token_env=token_env,
                                   as_json=as_json, verbose=verbose), as_json=as_json)
        return
    if server is not None or token_env is not None:
        guarded(lambda: fail("--server and --token-env go with --follow (fix: add --follow)"),
                as_json=as_json)

    async def go() -> tuple[Any, Any]:
        # The store alone, read-only: showing a run needs no engine, agents nor workflow
        # models (their imports were most of this command's start-up).
        from podium.store.factory import default_db_url, open_store

        store = open_store(default_db_url(db), readonly=True)
        await store.open()
        try:
            run = await store.get_run(run_id)
            events = await store.get_events(run.run_id)
            return run, events
        finally:
            await store.close()

    def body() -> None:
        from podium.definition.durations import format_duration

        run, events = run_async(go)
        in_workflow_order(run)
        if as_json:
            from podium.docs import event_doc, run_doc

            doc = run_doc(run, verbose=verbose)
            doc["owner"], doc["recoveries"], doc["queue"] = run.owner, run.recoveries, run.queue
            doc["timeline"] = [event_doc(e, verbose=verbose) for e in events]
            dump_json(doc)
            return
        out = sys.stdout
        print(f"run {run.run_id}: {run.workflow} v{run.version} — {run.status}", file=out)
        print(f"created {_when(run.created_at)}, started {_when(run.started_at)}, finished "
              f"{_when(run.finished_at)}", file=out)
        if run.error is not None:
            print(f"error: {run.error.type}: {run.error.message}", file=out)
            step_errors = [s.error for s in run.steps.values() if s.error]
            if verbose and run.error.traceback not in {e.traceback for e in step_errors}:
                print(run.error.traceback or _NO_TRACEBACK.format(run.error.type), file=out)
        print(f"\n{'STEP':<24} {'STATUS':<12} {'ATTEMPTS':<8} {'AGENT':<22} {'DURATION':<10} ERROR",
              file=out)
        for sid, s in run.steps.items():
            dur = "-"
            if s.started_at is not None and s.finished_at is not None:
                dur = format_duration(s.finished_at - s.started_at)
            e = f"{s.error.type}: {s.error.message}" if s.error else ""
            if s.compensation_status:
                e += f" [compensation {s.compensation_status}]"
            print(f"{sid[:24]:<24} {s.status:<12} {s.attempts:<8} {(s.agent_id or '-')[:22]:<22} "
                  f"{dur:<10} {e[:80]}", file=out)
            if verbose and s.error:
                print(s.error.traceback or _NO_TRACEBACK.format(s.error.type), file=out)
        print("\ntimeline:", file=out)
        t0 = run.created_at
        for e in events:
            d = e.to_dict()
            what = d.pop("type")
            for k in ("run_id", "ts", "output"):
                d.pop(k, None)
            print(f"  +{format_duration(e.ts - t0):>9} {what:<28} {_detail(d, t0)[:100]}",
                  file=out)

    guarded(body, as_json=as_json)


@dataclass
class _Driven:
    """One run ``resume`` or ``rollback`` drove: its record now, and how it went here."""

    run: Any
    took_s: float | None = None  # this execution only, not the time since the run was made
    nothing_to_compensate: str | None = None  # why a rollback left the run as it was


def _drive(db: str | None, agents: Path | None, run_id: str | None, all_stale: bool,
           as_json: bool, verb: str) -> None:
    from podium.errors import NothingToCompensate, RunHeld

    skipped: list[str] = []
    interrupt = Interrupt()

    async def go() -> list[_Driven]:
        rt = await _runtime(db)
        engine = rt.engine
        try:
            if all_stale:
                ids = [r.run_id for r in await engine.stale_runs()]
            elif run_id is not None:
                ids = [(await engine.store.get_run(run_id)).run_id]
            else:
                fail("give a RUN id, or --all")
            results = []
            for rid in ids:
                run = await engine.store.get_run(rid)
                if verb == "rollback":
                    try:  # asked first: such a rollback needs no agents and writes nothing
                        engine.check_compensable(run)
                    except NothingToCompensate as exc:
                        results.append(_Driven(run, nothing_to_compensate=exc.message))
                        continue
                watch: tuple[Any, ...] = ()
                if not as_json:
                    from podium.cli.progress import PlainProgress

                    watch = (PlainProgress(),)
                worker_rt = await _runtime(db, agents, run.agents_source, observers=watch)
                worker = worker_rt.engine
                try:
                    t0 = worker.clock.monotonic()
                    try:
                        handle = await (
                            worker.resume(rid, stale_only=all_stale) if verb == "resume"
                            else worker.rollback(rid)
                        )
                    except RunHeld as exc:
                        if not all_stale:
                            raise
                        # Another live process took it (or finished it) since the list was
                        # made: not ours to drive, and not a failure of this command.
                        skipped.append(f"skipped: {exc.message}")
                        print(skipped[-1], file=sys.stderr if as_json else sys.stdout)
                        continue
                    interrupt.on(partial(handle.cancel, "interrupted (Ctrl-C)"))
                    done = await handle.result()
                    results.append(_Driven(done, took_s=worker.clock.monotonic() - t0))
                    if all_stale and not as_json:
                        print(f"run {rid} {done.status}", flush=True)
                finally:
                    await worker_rt.close()
            return results
        finally:
            await rt.close()

    def body() -> None:
        from podium.docs import run_doc
        from podium.tuning import tune_gc

        tune_gc()  # from here on this process only drives runs
        results = run_async(go, on_interrupt=interrupt, json_stdout=as_json)
        if all_stale:
            if as_json:
                dump_json([run_doc(r.run) for r in results])
            elif not results and not skipped:
                print("no resumable runs")
            ok = all(r.run.status in (RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK) for r in results)
            raise typer.Exit(EXIT_OK if ok else 1)
        driven = results[0]
        run = driven.run
        if verb == "rollback":
            nothing = driven.nothing_to_compensate
            if as_json:
                doc = run_doc(in_workflow_order(run))
                doc["nothing_to_compensate"] = nothing is not None
                if nothing is not None:
                    doc["message"] = nothing
                dump_json(doc)
            elif nothing is not None:
                print(nothing)
            else:
                rolled = run.status == RunStatus.ROLLED_BACK
                why = run.error.message if run.error and not rolled else None
                print(f"run {run.run_id} {run.status}" + (f": {why}" if why else ""))
            ok = nothing is not None or run.status == RunStatus.ROLLED_BACK
            raise typer.Exit(EXIT_OK if ok else 1)
        _finish(run, [], as_json, took_s=driven.took_s)

    guarded(body, as_json=as_json)


@app.command()
def resume(
    run_id: Annotated[
        str | None,
        typer.Argument(metavar="RUN", help="Run id, a unique prefix is enough (or --all)."),
    ] = None,
    all_stale: Annotated[
        bool, typer.Option("--all", help="Resume every run a dead process left.")
    ] = False,
    agents: AgentsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue a run from its checkpoints (a failed or cancelled run is redriven)."""
    _drive(db, agents, run_id, all_stale, as_json, "resume")


@app.command()
def rollback(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN", help="Run id (a unique prefix is enough).")
    ],
    agents: AgentsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Undo a finished run: run each succeeded step's compensate, newest first."""
    _drive(db, agents, run_id, False, as_json, "rollback")


@app.command()
def cancel(
    run_id: Annotated[
        str, typer.Argument(metavar="RUN", help="Run id (a unique prefix is enough).")
    ],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a run, also one executing in another process (it stops within a second)."""

    async def go() -> tuple[bool, Any]:
        rt = await _runtime(db)
        try:
            run = await rt.store.get_run(run_id)
            if run.status in LIVE_RUN_STATUSES and rt.engine.owner_is_dead(
                    run, await rt.store.now()):
                # Nobody is executing it: cancel here with its own agents (none are called).
                await rt.close()
                rt = await _runtime(db, None, run.agents_source)
            ok = await rt.engine.cancel(run.run_id)
            return ok, await rt.store.get_run(run.run_id)
        finally:
            await rt.close()

    def body() -> None:
        ok, run = run_async(go)
        if as_json:
            dump_json({"run_id": run.run_id, "cancel_requested": ok, "status": run.status})
        elif ok:
            print(f"cancel requested for run {run.run_id}")
        else:
            print(f"run {run.run_id} is already {run.status}; nothing to cancel")
        raise typer.Exit(EXIT_OK)

    guarded(body, as_json=as_json)
