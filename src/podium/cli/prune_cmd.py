"""``podium prune``: retention, deleting runs that ended long ago."""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

import datetime as dt
from typing import Annotated, Any

import typer

from podium.cli.app import DbOpt, JsonOpt, app
from podium.cli.common import dump_json, fail, guarded, plural, run_async
from podium.state import TERMINAL_RUN_STATUSES

_ENDED = ", ".join(sorted(TERMINAL_RUN_STATUSES))


def _statuses(given: list[str] | None) -> list[str] | None:
    """``--status`` as given (repeated, or comma-separated), each an ended status."""
    if not given:
        return None
    out = sorted({s.strip() for value in given for s in value.split(",") if s.strip()})
    wrong = [s for s in out if s not in TERMINAL_RUN_STATUSES]
    if wrong or not out:
        fail(f"--status {','.join(wrong) or '(empty)'}: only ended runs are pruned"
             f" (fix: one or more of {_ENDED})")
    return out


@app.command()
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", metavar="DURATION",
                          help="Delete runs that ended more than this long ago (e.g. 30d, 12h;"
                               " 0 for every ended run).")
    ],
    status: Annotated[
        list[str] | None, typer.Option("--status", metavar="STATUS",
                                       help=f"Only runs that ended so (repeatable): {_ENDED}.")
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", metavar="NAME", help="Only this workflow.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the runs that would go; delete nothing.")
    ] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete runs that ended before a time, with their steps, events and child runs.

    Runs that are pending, running, waiting, or held by a process are never touched,
    nor a run whose child run still lives. Deletes 1,000 runs per transaction, so
    runs executing on the same database wait for one batch at most.
    """

    def body() -> None:
        from podium.definition.durations import parse_duration

        try:
            age_s = parse_duration(older_than)
        except ValueError as exc:
            fail(f"--older-than {older_than!r}: {exc} (fix: e.g. --older-than 30d)")
        statuses = _statuses(status)

        async def go() -> tuple[int, float]:
            from podium.store.factory import default_db_url, open_store

            store = open_store(default_db_url(db), readonly=dry_run)
            await store.open()
            try:
                before = await store.now() - age_s
                n = await store.prune_runs(before, statuses=statuses, workflow=workflow,
                                           dry_run=dry_run)
            finally:
                await store.close()
            return n, before

        n, before = run_async(go)
        if as_json:
            from podium.docs import rfc3339

            doc: dict[str, Any] = {
                "runs": n, "dry_run": dry_run, "older_than": older_than,
                "finished_before": rfc3339(before),
                "statuses": statuses or sorted(TERMINAL_RUN_STATUSES), "workflow": workflow}
            dump_json(doc)
            return
        when = dt.datetime.fromtimestamp(before).strftime("%Y-%m-%d %H:%M:%S")
        what = plural(n, "run") + (f" of {workflow}" if workflow else "")
        verb = "would delete" if dry_run else "deleted"
        print(f"{verb} {what} that ended before {when}"
              + (f" ({', '.join(statuses)})" if statuses else "")
              + (", child runs counted" if n else ""))

    guarded(body, as_json=as_json)
