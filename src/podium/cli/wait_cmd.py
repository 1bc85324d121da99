"""``podium approve`` and ``podium signal``: what a waiting run waits for, delivered once."""

# Annotations stay evaluated (no ``from __future__ import annotations``), as in the
# other command modules: typer reads every command's signature at start-up.

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import AgentsOpt, DbOpt, JsonOpt, app
from podium.cli.common import err, fail, guarded, parse_inputs, run_async

_MAX_DATA = 1 << 20  # --data: a signal's data is stored with the run

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="The run (a unique prefix will do).")]
WaitOpt = Annotated[
    bool, typer.Option("--wait", help="Continue the run in this process, to its end or its"
                       " next wait (else `podium serve`, a worker or `podium resume` does).")]


@app.command()
def approve(
    run_id: RunArg,
    step: Annotated[str, typer.Argument(metavar="STEP", help="The approval step.")],
    input_pairs: Annotated[
        list[str] | None,
        typer.Option("-i", "--input", metavar="KEY=VALUE",
                     help="Data for the run (the step's output `data`); repeat for more."),
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Reject: the step fails.")] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", metavar="TEXT", help="Why (kept with the run).")
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", metavar="NAME", help="Who (default: $USER).")
    ] = None,
    wait: WaitOpt = False,
    agents: AgentsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve (or --reject) a run's approval step; once."""

    def body() -> None:
        from podium.definition.plan import approval_signal

        if reason is not None and len(reason) > 4096:
            fail("--reason: over 4,096 characters (fix: say it shorter)")
        data = parse_inputs(input_pairs or [], None)
        who = by or os.environ.get("USER") or "unknown"
        payload = {"approved": not reject, "by": who, "data": data,
                   **({"reason": reason} if reason else {})}
        _deliver(run_id, approval_signal(step), payload, wait=wait, agents=agents, db=db,
                 as_json=as_json, what=f"step {step} " + ("rejected" if reject else "approved"))

    guarded(body, as_json=as_json)


@app.command()
def signal(
    run_id: RunArg,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The signal a step waits for.")],
    data: Annotated[
        str | None, typer.Option("--data", metavar="JSON",
                                 help="The signal's data (the waiting step's output).")
    ] = None,
    wait: WaitOpt = False,
    agents: AgentsOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a signal to a run that waits for it; once."""

    def body() -> None:
        value: Any = None
        if data is not None:
            if len(data) > _MAX_DATA:
                fail(f"--data: over {_MAX_DATA:,} characters (fix: send a reference to the"
                     " data instead)")
            try:
                value = json.loads(data)
            except json.JSONDecodeError as exc:
                fail(f"--data: not JSON ({exc.msg} at character {exc.pos}) (fix: e.g."
                     " --data '{\"ok\": true}')")
        _deliver(run_id, name, value, wait=wait, agents=agents, db=db, as_json=as_json,
                 what=f"signal '{name}' sent")

    guarded(body, as_json=as_json)


def _deliver(run_id: str, name: str, data: Any, *, wait: bool, agents: Path | None,
             db: str | None, as_json: bool, what: str) -> None:
    from podium.cli.app import _finish

    async def go() -> tuple[Any, bool, Any]:
        from podium.agents.registry import AgentRegistry
        from podium.runtime import Runtime, RuntimeConfig

        config = RuntimeConfig(db=db, alerts=False, agents_file=agents) if wait else \
            RuntimeConfig(db=db, alerts=False, registry=AgentRegistry())
        async with Runtime(config) as rt:
            run, woken = await rt.engine.signal(run_id, name, data)
            if not wait:
                return run, woken, None
            handle = await rt.engine.resume(run.run_id)
            return run, woken, await handle.result()

    run, woken, ended = run_async(go, json_stdout=as_json)
    if ended is not None:
        _finish(ended, [], as_json)
    if as_json:
        from podium.cli.common import dump_json

        dump_json({"run_id": run.run_id, "signal": name, "delivered": True, "woken": woken})
        return
    if woken:
        err(f"run {run.run_id}: {what}; it goes on in `podium serve` or a worker, or here"
            f" with `podium resume {run.run_id}`")
    else:
        err(f"run {run.run_id}: {what}; the run takes it when it reaches the step")
    sys.stdout.flush()
