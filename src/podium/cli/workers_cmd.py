"""Scale-out commands: submit a run for workers, run a worker, list the workers."""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import (
    WORKFLOW_HELP,
    AgentsOpt,
    DbOpt,
    JsonOpt,
    _agents_file,
    _keep_schema_strings,
    app,
)
from podium.cli.common import (
    EXIT_OK,
    dump_json,
    err,
    fail,
    guarded,
    parse_inputs,
    run_async,
)

_QUEUE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_MAX_CONCURRENCY = 10_000

# A run's input, as `podium run` takes it (submit, schedule add).
InputPairsOpt = Annotated[
    list[str] | None,
    typer.Option("-i", "--input", metavar="KEY=VALUE",
                 help="An input value, as for `podium run`; repeat for more keys."),
]
InputFileOpt = Annotated[
    Path | None,
    typer.Option("--input-file", metavar="FILE", help="JSON or YAML object as input."),
]

QueueOpt = Annotated[
    list[str] | None,
    typer.Option("--queue", metavar="Q", help="A queue to take runs from (repeat for more;"
                 " default: default)."),
]


def _check_queue(q: str) -> str:
    if not _QUEUE.match(q):
        fail(f"--queue {q!r}: a queue name is 1-64 of a-z 0-9 _ . - starting with a letter or"
             " digit (fix: e.g. --queue reports)")
    return q


def _duration(value: str, flag: str, minimum: float) -> float:
    from podium.definition.durations import parse_duration
    from podium.errors import PodiumError

    try:
        seconds = parse_duration(value)
    except (PodiumError, ValueError, TypeError) as exc:
        fail(f"{flag} {value!r}: not a duration ({exc}) (fix: e.g. {flag} 15s)")
    if seconds < minimum:
        fail(f"{flag} {value!r}: at least {minimum:g}s (fix: e.g. {flag} {max(minimum, 15):g}s)")
    return seconds


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(metavar="FILE", help=WORKFLOW_HELP)],
    input_pairs: InputPairsOpt = None,
    input_file: InputFileOpt = None,
    queue: Annotated[
        str | None, typer.Option("--queue", metavar="Q",
                                 help="The queue it waits in (default: the workflow's queue).")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store a run for workers to execute (validated as `podium run` does); print its id."""

    def body() -> None:
        from podium.cli.workflow_ref import load_with_registry, registry_of

        if queue is not None:
            _check_queue(queue)
        workflow = load_with_registry(file, registry_of(db)).workflow
        inputs = parse_inputs(input_pairs or [], input_file)
        _keep_schema_strings(input_pairs or [], inputs, workflow.input_schema)

        async def go() -> Any:
            from podium.agents.registry import AgentRegistry
            from podium.runtime import Runtime, RuntimeConfig

            async with Runtime(RuntimeConfig(db=db, registry=AgentRegistry(),
                                             alerts=False)) as rt:
                return await rt.engine.submit(workflow, inputs, queue=queue)

        run = run_async(go, json_stdout=as_json)
        if as_json:
            dump_json({"run_id": run.run_id, "workflow": run.workflow, "version": run.version,
                       "status": run.status, "queue": run.queue})
        else:
            print(run.run_id)
            err(f"submitted run {run.run_id} ({run.workflow} v{run.version}) to queue"
                f" '{run.queue}'; a `podium worker` executes it")

    guarded(body, as_json=as_json)


@app.command()
def worker(
    db: DbOpt = None,
    agents: AgentsOpt = None,
    queues: QueueOpt = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", metavar="N", help="Runs in flight at once.")
    ] = 16,
    lease: Annotated[
        str, typer.Option("--lease", metavar="DURATION",
                          help="How long runs stay this worker's without a heartbeat (min 1s).")
    ] = "15s",
    grace: Annotated[
        str, typer.Option("--grace", metavar="DURATION",
                          help="On SIGTERM/Ctrl-C, how long attempts in flight may finish.")
    ] = "10s",
    name: Annotated[
        str | None, typer.Option("--name", metavar="ID",
                                 help="This worker's id (default host:pid:random).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", metavar="PORT",
                                 help="Serve /metrics on 127.0.0.1:PORT.")
    ] = None,
    alerts: Annotated[
        Path | None, typer.Option(
            "--alerts", metavar="FILE",
            help="Alerts file (default $PODIUM_ALERTS, ./podium-alerts.yaml); one worker"
                 " at a time evaluates the rules for the whole fleet.")
    ] = None,
) -> None:
    """Execute runs from a PostgreSQL database until SIGTERM/Ctrl-C, then hand them back."""

    def body() -> None:
        from podium.store.factory import default_db_url

        url = default_db_url(db)
        if not url.startswith(("postgresql://", "postgres://")):
            from podium.redact import mask_url

            fail(f"podium worker needs PostgreSQL, not {mask_url(url)!r} (fix: --db"
                 " postgresql://user@host/db, or PODIUM_DB)")
        if not 1 <= concurrency <= _MAX_CONCURRENCY:
            fail(f"--concurrency {concurrency}: 1 to {_MAX_CONCURRENCY} runs (fix: e.g."
                 " --concurrency 16)")
        if name is not None and not _NAME.match(name):
            fail(f"--name {name!r}: 1-128 of letters, digits and _ . : @ - (fix: e.g. --name"
                 " worker-1)")
        lease_s = _duration(lease, "--lease", 1.0)
        grace_s = _duration(grace, "--grace", 0.0)
        chosen = tuple(dict.fromkeys(_check_queue(q) for q in (queues or ["default"])))
        if metrics_port is not None:
            from podium.httpd import check_port

            check_port(metrics_port, "--metrics-port")
        agents_file = _agents_file(agents, None)
        run_async(lambda: _work(url, agents_file, chosen, concurrency, lease_s, grace_s, name,
                                metrics_port, alerts, stop, hurry),
                  on_interrupt=lambda: stop.set(), on_second=lambda: hurry.set())
        raise typer.Exit(EXIT_OK)

    import asyncio

    stop, hurry = asyncio.Event(), asyncio.Event()
    guarded(body)


async def _work(url: str, agents_file: Path | None, queues: tuple[str, ...], concurrency: int,
                lease_s: float, grace_s: float, name: str | None, metrics_port: int | None,
                alerts_file: Path | None, stop: Any, hurry: Any) -> None:
    import logging

    from podium.engine.owners import new_owner_id
    from podium.engine.worker import Worker, WorkerConfig
    from podium.errors import ConfigError
    from podium.runtime import Runtime, RuntimeConfig
    from podium.store.base import WorkerStore
    from podium.tuning import tune_gc

    tune_gc()
    logging.getLogger("podium.worker").setLevel(logging.INFO)
    logging.getLogger("podium.alerts").setLevel(logging.INFO)  # who leads, and changes
    logging.getLogger("podium.schedules").setLevel(logging.INFO)  # the slots it fires
    owner = new_owner_id(name)
    config = RuntimeConfig(db=url, agents_file=agents_file, owner=owner, lease_s=lease_s,
                           poll_interval_s=1.0, metrics_port=metrics_port,
                           metrics_labels=(("worker", owner),), alerts=True,
                           alerts_file=alerts_file, schedules=True,
                           # agents that joined through the API: every 5 s (an idle
                           # worker's statements stay under one a second)
                           joined_agents_s=5.0)
    async with Runtime(config) as rt:
        store = rt.store
        if not isinstance(store, WorkerStore):
            raise ConfigError(f"the store of {url!r} cannot share runs between workers")
        w = Worker(rt.engine, store, WorkerConfig(queues=queues, concurrency=concurrency,
                                                  grace_s=grace_s))
        err(f"worker {w.id}: taking runs of {', '.join(queues)} ({concurrency} at once);"
            " Ctrl-C or SIGTERM hands them back")
        await w.run(stop, hurry)


@app.command()
def workers(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List the workers of a shared database: id, host, pid, heartbeat age, runs held."""

    async def go() -> tuple[list[Any], float]:
        from podium.agents.registry import AgentRegistry
        from podium.errors import ConfigError
        from podium.runtime import Runtime, RuntimeConfig
        from podium.store.base import WorkerStore

        async with Runtime(RuntimeConfig(db=db, registry=AgentRegistry(), alerts=False)) as rt:
            store = rt.store
            if not isinstance(store, WorkerStore):
                raise ConfigError("this database has no workers: only PostgreSQL shares runs"
                                  " between workers (fix: --db postgresql://...)")
            return await store.list_workers(), await store.now()

    def body() -> None:
        from podium.docs import with_times

        found, now = run_async(go, json_stdout=as_json)
        docs = []
        for w in found:
            docs.append(with_times({
                "id": w.id, "host": w.host, "pid": w.pid, "started": w.started,
                "heartbeat_age_s": round(max(now - w.heartbeat, 0.0), 3),
                "lease_s": w.lease_s, "alive": now - w.heartbeat <= w.lease_s,
                "stopping": w.stopping, "concurrency": w.concurrency, "queues": list(w.queues),
                "runs_held": w.runs_held, "leads": list(w.roles)}, ("started",)))
        if as_json:
            dump_json({"workers": docs})
            return
        out = sys.stdout
        print(f"{'WORKER':<36} {'HOST':<20} {'PID':>7} {'HEARTBEAT':>10} {'RUNS':>5}  STATE",
              file=out)
        for d in docs:
            state = "stopping" if d["stopping"] else ("alive" if d["alive"] else "expired")
            if d["leads"]:
                state += f" (leads {', '.join(d['leads'])})"
            print(f"{d['id']:<36} {d['host']:<20} {d['pid']:>7} {d['heartbeat_age_s']:>9.1f}s"
                  f" {d['runs_held']:>5}  {state}", file=out)
        if not docs:
            print("(no workers)", file=out)

    guarded(body, as_json=as_json)


db_app = typer.Typer(help="The database itself: migrate it before a roll-out.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Bring the database's schema up to this Podium's (what every writer does on open).

    For operators who migrate before rolling out new workers, as a role allowed to
    create tables; a database made by a newer Podium is refused (exit 3).
    """

    async def go() -> tuple[str, int, list[int]]:
        from podium.redact import mask_url
        from podium.store.factory import default_db_url, open_store

        url = default_db_url(db)
        store = open_store(url)
        await store.open()
        await store.close()
        if url.startswith(("postgresql://", "postgres://")):
            from podium.store.postgres import SCHEMA_VERSION as PG_VERSION
            from podium.store.postgres import PostgresStore

            assert isinstance(store, PostgresStore)
            return store.url, PG_VERSION, list(store.applied)
        from podium.store.sqlite_db import SCHEMA_VERSION

        return mask_url(url), SCHEMA_VERSION, []

    def body() -> None:
        url, version, applied = run_async(go, json_stdout=as_json)
        if as_json:
            dump_json({"db": url, "schema_version": version})
            return
        done = f" (applied {', '.join(map(str, applied))})" if applied else ""
        print(f"{url}: schema {version}{done}", file=sys.stdout)

    guarded(body, as_json=as_json)
