"""``podium schedule``: run a workflow on a cron or an interval, fired by the server."""

# Annotations stay evaluated (no ``from __future__ import annotations``), as in the
# other command modules: typer reads every command's signature at start-up.

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import AgentsOpt, DbOpt, JsonOpt, _keep_schema_strings, app
from podium.cli.common import dump_json, err, fail, guarded, parse_inputs, run_async
from podium.cli.workers_cmd import InputFileOpt, InputPairsOpt

schedule_app = typer.Typer(
    help="Run a workflow on a schedule (fired by `podium serve`, or one `podium worker`).",
    no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_OVERLAP = ("skip", "queue", "allow")
_MAX_CATCH_UP = 1000
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The schedule's id (see list).")]


@schedule_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="Workflow file (YAML or JSON), or a Python workflow: MODULE:ATTR"
        " or FILE.py[:ATTR].")],
    cron: Annotated[
        str | None, typer.Option("--cron", metavar="EXPR",
                                 help="Five cron fields, e.g. '0 2 * * *' (in --tz).")
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", metavar="DURATION",
                                 help="Or an interval, e.g. 15m (at least 1s).")
    ] = None,
    tz: Annotated[str, typer.Option("--tz", metavar="ZONE",
                                    help="The cron's time zone (IANA name).")] = "UTC",
    input_pairs: InputPairsOpt = None,
    input_file: InputFileOpt = None,
    overlap: Annotated[
        str, typer.Option("--overlap", metavar="POLICY",
                          help="A slot while the last run still goes: skip, queue or allow.")
    ] = "skip",
    catch_up: Annotated[
        int, typer.Option("--catch-up", metavar="N",
                          help="Slots missed while nothing fired that still run (the latest N).")
    ] = 1,
    name: Annotated[
        str | None, typer.Option("--name", metavar="ID",
                                 help="Its id (default: the workflow's name).")
    ] = None,
    agents: AgentsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a schedule: the workflow (validated now) fires at every slot, once."""

    def body() -> None:
        from podium.cli.workflow_ref import load_with_registry, registry_of
        from podium.definition.durations import parse_duration
        from podium.errors import PodiumError
        from podium.scheduler import check_cron, zone

        if (cron is None) == (every is None):
            fail("give one of --cron EXPR or --every DURATION (fix: e.g. --cron '0 2 * * *'"
                 " or --every 15m)")
        every_s = None
        if every is not None:
            try:
                every_s = parse_duration(every)
            except (PodiumError, ValueError, TypeError) as exc:
                fail(f"--every {every!r}: not a duration ({exc}) (fix: e.g. --every 15m)")
            if every_s < 1.0:
                fail(f"--every {every!r}: at least 1s (fix: e.g. --every 15m)")
        zone(tz)
        if cron is not None:
            check_cron(cron, tz)
        if overlap not in _OVERLAP:
            fail(f"--overlap {overlap!r}: one of {', '.join(_OVERLAP)} (fix: e.g. --overlap"
                 " skip)")
        if not 0 <= catch_up <= _MAX_CATCH_UP:
            fail(f"--catch-up {catch_up}: 0 to {_MAX_CATCH_UP} (fix: e.g. --catch-up 1)")
        loaded = load_with_registry(file, registry_of(db))
        workflow = loaded.workflow
        ident = name or workflow.name
        if not _ID.match(ident):
            fail(f"--name {ident!r}: 1-64 of a-z 0-9 _ - starting with a letter or digit"
                 " (fix: e.g. --name nightly-report)")
        inputs = parse_inputs(input_pairs or [], input_file)
        _keep_schema_strings(input_pairs or [], inputs, workflow.input_schema)

        async def go() -> Any:
            from podium.agents.config import find_agents_file
            from podium.agents.registry import AgentRegistry
            from podium.definition.loader import apply_input_defaults, check_input
            from podium.runtime import Runtime, RuntimeConfig
            from podium.scheduler import next_slot
            from podium.store.base import ScheduleRecord

            value = apply_input_defaults(workflow, inputs)
            check_input(workflow, value)  # a bad input fails now, not at 2 am
            found = find_agents_file(agents, cwd=(loaded.path or file).resolve().parent)
            async with Runtime(RuntimeConfig(db=db, registry=AgentRegistry(),
                                             alerts=False)) as rt:
                now = await rt.store.now()
                record = ScheduleRecord(
                    id=ident, workflow=workflow.name, definition=workflow.to_dict(),
                    input=value, cron=cron, every_s=every_s, tz=tz, overlap=overlap,
                    catch_up=catch_up, created_at=now, queue=workflow.queue,
                    agents_source={"agents_file": str(found)} if found else {})
                record.next_at = next_slot(record, now)
                await rt.store.add_schedule(record)
                return record

        record = run_async(go, json_stdout=as_json)
        from podium.scheduler import describe

        if as_json:
            dump_json(describe(record))
        else:
            print(record.id)
            err(f"schedule {record.id}: {workflow.name} {_rule(record)}, next at"
                f" {_at(record.next_at, record.tz)}; fired by `podium serve` (or one"
                " `podium worker` on PostgreSQL)")

    guarded(body, as_json=as_json)


@schedule_app.command("list")
def list_(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """The schedules: rule, next slot, paused, and what their last slots did."""

    async def go() -> list[tuple[Any, list[Any]]]:
        from podium.runtime import Runtime, RuntimeConfig

        async with Runtime(RuntimeConfig(db=db, readonly=True, alerts=False,
                                         registry=_empty())) as rt:
            return [(s, await rt.store.schedule_slots(s.id, limit=5))
                    for s in await rt.store.list_schedules()]

    def body() -> None:
        from podium.scheduler import describe

        found = run_async(go, json_stdout=as_json)
        if as_json:
            dump_json([{**describe(s), "last_slots": [
                {"slot": x.slot, "status": x.status, "run_id": x.run_id} for x in slots]}
                for s, slots in found])
            return
        if not found:
            print("no schedules (add one: podium schedule add FILE --cron '0 2 * * *')")
            return
        print(f"{'SCHEDULE':<24} {'WORKFLOW':<22} {'RULE':<28} {'NEXT':<25} LAST")
        for s, slots in found:
            nxt = "paused" if s.paused else _at(s.next_at, s.tz)
            last = f"{slots[0].status} {slots[0].run_id or ''}".strip() if slots else "-"
            print(f"{s.id:<24} {s.workflow[:22]:<22} {_rule(s)[:28]:<28} {nxt:<25} {last}",
                  file=sys.stdout)

    guarded(body, as_json=as_json)


@schedule_app.command("pause")
def pause(schedule_id: IdArg, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Stop firing it (slots while paused are not caught up on resume)."""
    _set(schedule_id, paused=True, db=db, as_json=as_json)


@schedule_app.command("resume")
def resume(schedule_id: IdArg, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Fire it again, from its next slot after now."""
    _set(schedule_id, paused=False, db=db, as_json=as_json)


@schedule_app.command("delete")
def delete(schedule_id: IdArg, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Remove it (its runs stay)."""

    async def go() -> bool:
        from podium.runtime import Runtime, RuntimeConfig

        async with Runtime(RuntimeConfig(db=db, alerts=False, registry=_empty())) as rt:
            await rt.store.get_schedule(schedule_id)  # unknown: the known ones, exit 2
            return await rt.store.delete_schedule(schedule_id)

    def body() -> None:
        run_async(go, json_stdout=as_json)
        if as_json:
            dump_json({"id": schedule_id, "deleted": True})
        else:
            err(f"schedule {schedule_id} deleted")

    guarded(body, as_json=as_json)


def _set(schedule_id: str, *, paused: bool, db: str | None, as_json: bool) -> None:
    async def go() -> Any:
        from podium.runtime import Runtime, RuntimeConfig
        from podium.scheduler import next_slot

        async with Runtime(RuntimeConfig(db=db, alerts=False, registry=_empty())) as rt:
            s = await rt.store.get_schedule(schedule_id)
            nxt = None if paused else next_slot(s, await rt.store.now())
            await rt.store.set_schedule_paused(schedule_id, paused, nxt)
            return await rt.store.get_schedule(schedule_id)

    def body() -> None:
        from podium.scheduler import describe

        s = run_async(go, json_stdout=as_json)
        if as_json:
            dump_json(describe(s))
        else:
            err(f"schedule {s.id} " + ("paused" if paused
                                       else f"resumed; next at {_at(s.next_at, s.tz)}"))

    guarded(body, as_json=as_json)


def _empty() -> Any:
    from podium.agents.registry import AgentRegistry

    return AgentRegistry()


def _rule(s: Any) -> str:
    from podium.definition.durations import format_duration

    if s.cron is not None:
        return f"cron '{s.cron}' {s.tz}"
    return f"every {format_duration(s.every_s)}"


def _at(ts: float, tz: str) -> str:
    from datetime import UTC, datetime

    from podium.scheduler import zone

    return datetime.fromtimestamp(ts, UTC).astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M %Z")
