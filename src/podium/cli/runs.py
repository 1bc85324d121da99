"""Commands over stored runs: runs, status, resume, cancel, rollback."""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import _INTERRUPT, AgentsOpt, DbOpt, JsonOpt, _finish, _interrupt, app
from podium.cli.common import (
    EXIT_OK,
    check_limit,
    dump_json,
    fail,
    guarded,
    in_workflow_order,
    run_async,
)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


async def _engine(
    db: str | None, agents: Path | None = None, source: dict[str, Any] | None = None
) -> Any:
    from podium.agents.config import build_registry
    from podium.agents.registry import AgentRegistry
    from podium.engine import Engine
    from podium.store.factory import default_db_url, open_store

    registry: AgentRegistry | None = None
    if agents is not None or source is not None:
        path = agents
        if path is None and source and source.get("agents_file"):
            path = Path(source["agents_file"])
        registry, _cfg, _src = build_registry(
            path, entry_points_too=bool((source or {}).get("entry_points", True))
        )
    engine = Engine(registry=registry, store=open_store(default_db_url(db)))
    await engine.open()
    return engine


@app.command("runs")
def runs_cmd(
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", help="Only this workflow.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="At most this many, newest first (up to 100000).")
    ] = 20,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first; runs left behind by a dead process show as resumable."""

    async def go() -> list[dict[str, Any]]:
        engine = await _engine(db)
        try:
            runs = await engine.store.list_runs(status=status, workflow=workflow, limit=limit)
            out = []
            for r in runs:
                stale = r.status in ("running", "pending") and engine.owner_is_dead(r)
                out.append({
                    "run_id": r.run_id, "workflow": r.workflow, "version": r.version,
                    "status": r.status, "resumable": stale or r.status in ("failed", "cancelled"),
                    "stale": stale, "created_at": r.created_at, "started_at": r.started_at,
                    "finished_at": r.finished_at, "duration_s": r.duration_s,
                    "error": None if r.error is None else r.error.public(),
                })
            return out
        finally:
            await engine.aclose()

    def body() -> None:
        from podium.store.records import RUN_STATUSES

        check_limit(limit)
        if status is not None and status not in RUN_STATUSES:
            fail(f"--status {status!r} is not a run status (fix: use one of "
                 f"{', '.join(RUN_STATUSES)})")
        rows = run_async(go)
        if as_json:
            dump_json(rows)
            return
        if not rows:
            print("no runs")
            return
        print(f"{'RUN':<16} {'WORKFLOW':<22} {'VER':<5} {'STATUS':<22} {'CREATED':<19} DURATION")
        for r in rows:
            st = r["status"] + (" (resumable)" if r["stale"] else "")
            dur = f"{r['duration_s']:.2f}s" if r["duration_s"] is not None else "-"
            print(f"{r['run_id']:<16} {r['workflow'][:22]:<22} {r['version']!s:<5} {st:<22} "
                  f"{_when(r['created_at']):<19} {dur}")

    guarded(body)


def _event_doc(event: Any, verbose: bool) -> dict[str, Any]:
    """An event of the timeline; tracebacks only with --verbose, as for the run itself."""
    doc: dict[str, Any] = {k: v for k, v in event.to_dict().items() if k != "run_id"}
    err = doc.get("error")
    if not verbose and isinstance(err, dict) and "traceback" in err:
        doc["error"] = {k: v for k, v in err.items() if k != "traceback"}
    return doc


@app.command()
def status(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Tracebacks and timeline details.")
    ] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: per step status, attempts, agent, duration, error; and its timeline."""

    async def go() -> tuple[Any, Any]:
        engine = await _engine(db)
        try:
            run = await engine.store.get_run(run_id)
            events = await engine.store.get_events(run.run_id)
            return run, events
        finally:
            await engine.aclose()

    def body() -> None:
        run, events = run_async(go)
        in_workflow_order(run)
        if as_json:
            doc = run.to_dict(verbose=verbose)
            doc["timeline"] = [_event_doc(e, verbose) for e in events]
            dump_json(doc)
            return
        out = sys.stdout
        print(f"run {run.run_id}: {run.workflow} v{run.version} — {run.status}", file=out)
        print(f"created {_when(run.created_at)}, started {_when(run.started_at)}, finished "
              f"{_when(run.finished_at)}", file=out)
        if run.error is not None:
            print(f"error: {run.error.type}: {run.error.message}", file=out)
            step_tracebacks = {s.error.traceback for s in run.steps.values() if s.error}
            if verbose and run.error.traceback and run.error.traceback not in step_tracebacks:
                print(run.error.traceback, file=out)
        print(f"\n{'STEP':<24} {'STATUS':<12} {'ATTEMPTS':<8} {'AGENT':<22} {'DURATION':<10} ERROR",
              file=out)
        for sid, s in run.steps.items():
            dur = "-"
            if s.started_at is not None and s.finished_at is not None:
                dur = f"{s.finished_at - s.started_at:.3f}s"
            e = f"{s.error.type}: {s.error.message}" if s.error else ""
            if s.compensation_status:
                e += f" [compensation {s.compensation_status}]"
            print(f"{sid[:24]:<24} {s.status:<12} {s.attempts:<8} {(s.agent_id or '-')[:22]:<22} "
                  f"{dur:<10} {e[:80]}", file=out)
            if verbose and s.error and s.error.traceback:
                print(s.error.traceback, file=out)
        print("\ntimeline:", file=out)
        t0 = run.created_at
        for e in events:
            d = e.to_dict()
            what = d.pop("type")
            for k in ("run_id", "ts", "output"):
                d.pop(k, None)
            if "error" in d and isinstance(d["error"], dict):
                d["error"] = f"{d['error']['type']}: {d['error']['message']}"
            detail = " ".join(f"{k}={v}" for k, v in d.items() if v not in (None, ""))
            print(f"  +{e.ts - t0:8.3f}s {what:<28} {detail[:100]}", file=out)

    guarded(body)


def _drive(db: str | None, agents: Path | None, run_id: str | None, all_stale: bool,
           as_json: bool, verb: str) -> None:
    async def go() -> list[Any]:
        engine = await _engine(db)
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
                worker = await _engine(db, agents, run.agents_source)
                try:
                    if not as_json:
                        from podium.cli.progress import PlainProgress

                        worker.bus.subscribe(PlainProgress())
                    handle = await (
                        worker.resume(rid) if verb == "resume" else worker.rollback(rid)
                    )
                    _INTERRUPT["cancel"] = lambda h=handle: h.cancel("interrupted (Ctrl-C)")
                    results.append(await handle.result())
                finally:
                    await worker.aclose()
            return results
        finally:
            await engine.aclose()

    def body() -> None:
        from podium.tuning import tune_gc

        tune_gc()  # from here on this process only drives runs
        results = run_async(go, on_interrupt=_interrupt, json_stdout=as_json)
        if all_stale:
            if as_json:
                dump_json([r.to_dict() for r in results])
            elif not results:
                print("no resumable runs")
            ok = all(r.status in ("succeeded", "rolled_back") for r in results)
            raise typer.Exit(EXIT_OK if ok else 1)
        run = results[0]
        if verb == "rollback":
            if as_json:
                dump_json(run.to_dict())
            else:
                why = run.error.message if run.error and run.status != "rolled_back" else None
                print(f"run {run.run_id} {run.status}" + (f": {why}" if why else ""))
            raise typer.Exit(EXIT_OK if run.status == "rolled_back" else 1)
        _finish(run, [], as_json)

    guarded(body)


@app.command()
def resume(
    run_id: Annotated[str | None, typer.Argument(help="Run id (or --all).")] = None,
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
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    agents: AgentsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Undo a finished run: run each succeeded step's compensate, newest first."""
    _drive(db, agents, run_id, False, as_json, "rollback")


@app.command()
def cancel(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a run, also one executing in another process (it stops within a second)."""

    async def go() -> tuple[bool, Any]:
        engine = await _engine(db)
        try:
            run = await engine.store.get_run(run_id)
            if run.status in ("running", "pending") and engine.owner_is_dead(run):
                # Nobody is executing it: cancel here with its own agents (none are called).
                await engine.aclose()
                engine = await _engine(db, None, run.agents_source)
            ok = await engine.cancel(run.run_id)
            return ok, await engine.store.get_run(run.run_id)
        finally:
            await engine.aclose()

    def body() -> None:
        ok, run = run_async(go)
        if as_json:
            dump_json({"run_id": run.run_id, "cancel_requested": ok, "status": run.status})
        elif ok:
            print(f"cancel requested for run {run.run_id}")
        else:
            print(f"run {run.run_id} is already {run.status}; nothing to cancel")
        raise typer.Exit(EXIT_OK)

    guarded(body)
