"""The ``podium`` command: a thin shell over the library.

Every command turns errors into a message and an exit code (0 success,
1 the workflow failed, 2 bad usage or invalid input, 3 infrastructure), and
``--json`` prints exactly one JSON document on stdout.
"""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

import importlib
import json
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from podium.cli.agent_cmd import agent_app
from podium.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    dump_json,
    err,
    guarded,
    in_workflow_order,
    parse_inputs,
    quiet_stdout,
    run_async,
)

# The commands defined elsewhere, in the order they are listed in ``podium --help``.
COMMAND_MODULES = ("podium.cli.fleet", "podium.cli.observe_cmd", "podium.cli.runs")


class PodiumGroup(TyperGroup):
    """The ``podium`` group: the commands of this module at once, the others on demand.

    ``podium run`` finds its command here and never imports (nor has typer read)
    the other command modules; anything that looks further (``--help``, an
    unknown name, reading ``commands``) imports them all and sees every command,
    in the usual order.
    """

    _commands: MutableMapping[str, Any]

    def __init__(self, **kwargs: Any) -> None:
        self._complete = False
        super().__init__(**kwargs)

    @property
    def commands(self) -> MutableMapping[str, Any]:
        if not self._complete:
            self._complete = True
            for name in COMMAND_MODULES:
                importlib.import_module(name)  # registers its commands on ``app``
            full = typer.main.get_group(app)
            assert isinstance(full, PodiumGroup)
            self._commands = full._commands
        return self._commands

    @commands.setter
    def commands(self, value: MutableMapping[str, Any]) -> None:
        self._commands = value

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = self._commands.get(cmd_name)
        return found if found is not None else super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=PodiumGroup,
    name="podium",
    help="Podium: durable orchestration of multi-agent workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.add_typer(agent_app, name="agent")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document, no progress.")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="Database URL (default $PODIUM_DB, else sqlite:///.podium/podium.db)."
    ),
]
AgentsOpt = Annotated[
    Path | None,
    typer.Option("--agents", help="Agents file (default $PODIUM_AGENTS, else ./podium.yaml)."),
]


def _agents_file(explicit: Path | None, workflow_path: Path | None) -> Path | None:
    from podium.agents.config import find_agents_file

    found = find_agents_file(explicit)
    if found is None and workflow_path is not None:
        beside = workflow_path.resolve().parent / "podium.yaml"
        if beside.is_file():
            found = beside
    return found


def _print_summary(run: Any, failures: list[str]) -> None:
    from podium.definition.durations import format_duration

    dur = run.duration_s
    took = f" in {format_duration(dur)}" if dur is not None else ""
    out = sys.stdout
    if run.status == "succeeded":
        print(f"\nrun {run.run_id} succeeded{took}", file=out)
        text = json.dumps(run.output, indent=2, default=str)
        if len(text) > 2000:
            text = text[:2000] + "\n… (use --json for the whole output)"
        print(f"output: {text}", file=out)
    else:
        print(f"\nrun {run.run_id} {run.status}{took}", file=out)
        if failures:
            print("failed attempts:", file=out)
            for line in failures:
                print(f"  {line}", file=out)
        if run.error is not None:
            print(f"error: {run.error.type}: {run.error.message}", file=out)
    out.flush()


async def _execute(
    workflow: Any,
    inputs: dict[str, Any],
    agents_file: Path | None,
    db: str | None,
    as_json: bool,
    source: str | None,
    registry: Any = None,
    metrics_port: int | None = None,
    alerts_file: Path | None = None,
) -> Any:
    from podium.agents.config import build_registry
    from podium.cli.observability import Observability
    from podium.engine import Engine
    from podium.store.factory import default_db_url, open_store
    from podium.tuning import tune_gc

    tune_gc()  # this process is ours, and running workflows is all it does now
    agents_source: dict[str, Any] = {}
    if registry is None:
        registry, _config, agents_source = build_registry(agents_file)
    store = open_store(default_db_url(db))
    engine = Engine(registry=registry, store=store)
    progress = None
    if not as_json:
        from podium.cli.progress import make_progress

        progress = make_progress([s.id for s in workflow.steps], engine.clock)
        engine.bus.subscribe(progress)
    async with (
        engine,
        Observability(
            engine, metrics_port=metrics_port, alerts_file=alerts_file, workflows=[workflow]
        ),
    ):
        try:
            handle = await engine.start(
                workflow, inputs, agents_source=agents_source, source=source
            )
            _INTERRUPT["cancel"] = lambda: handle.cancel("interrupted (Ctrl-C)")
            run = await handle.result()
        finally:
            if progress is not None:
                progress.close()
            await registry.aclose()
    return run, (progress.state.failures if progress is not None else [])


_INTERRUPT: dict[str, Any] = {}


def _interrupt() -> None:
    cancel = _INTERRUPT.get("cancel")
    if cancel is not None:
        cancel()


def _finish(run: Any, failures: list[str], as_json: bool) -> None:
    in_workflow_order(run)
    try:
        if as_json:
            dump_json(run.to_dict())
        else:
            _print_summary(run, failures)
    except BrokenPipeError:  # `podium run ... | head`: the run's outcome still decides
        quiet_stdout()
    raise typer.Exit(EXIT_OK if run.status == "succeeded" else EXIT_FAILED)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Workflow file (YAML or JSON).")],
    input_pairs: Annotated[
        list[str] | None,
        typer.Option("-i", "--input", help="key=value (value parsed as JSON when valid)."),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="JSON or YAML object as input.")
    ] = None,
    agents: AgentsOpt = None,
    db: DbOpt = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve /metrics on 127.0.0.1:N meanwhile.")
    ] = None,
    alerts: Annotated[
        Path | None,
        typer.Option(
            "--alerts", help="Alerts file (default $PODIUM_ALERTS, ./podium-alerts.yaml)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a workflow and wait for it; exit 0 succeeded, 1 failed."""

    def body() -> None:
        from podium.definition.loader import load_workflow

        workflow = load_workflow(file)
        inputs = parse_inputs(input_pairs or [], input_file)
        agents_file = _agents_file(agents, file)
        result, failures = run_async(
            lambda: _execute(
                workflow,
                inputs,
                agents_file,
                db,
                as_json,
                str(file),
                metrics_port=metrics_port,
                alerts_file=alerts,
            ),
            on_interrupt=_interrupt,
            json_stdout=as_json,
        )
        _finish(result, failures, as_json)

    guarded(body)


@app.command()
def demo(
    report: Annotated[
        Path | None, typer.Option("--report", help="Where to write the Markdown report.")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the bundled example pipeline end to end.

    collect → process + validate → report → notify, on sample sales data.
    """

    def body() -> None:
        import podium.demo as demo_pkg
        from podium.definition.loader import load_workflow

        workflow = load_workflow(demo_pkg.WORKFLOW_PATH)
        report_path = str((report or Path("podium-demo-report.md")).resolve())
        inputs = demo_pkg.default_input(report_path)
        registry = demo_pkg.registry()
        if not as_json:
            print(
                f"Podium demo: {workflow.name} ({len(workflow.steps)} steps, mode {workflow.mode})"
            )
        result, failures = run_async(
            lambda: _execute(
                workflow, inputs, None, db, as_json, str(demo_pkg.WORKFLOW_PATH), registry=registry
            ),
            on_interrupt=_interrupt,
            json_stdout=as_json,
        )
        if not as_json and result.status == "succeeded":
            _print_summary(result, failures)
            print(f"\nThe report is at {report_path}")
            raise typer.Exit(EXIT_OK)
        _finish(result, failures, as_json)

    guarded(body)


def _is_agents_file(path: Path) -> bool:
    """An agents file (``agents:`` and no ``steps:``) is checked as one, not as a workflow."""
    from podium.definition.documents import parse_document, read_text
    from podium.errors import DefinitionError

    try:
        data, _ = parse_document(read_text(path), str(path))
    except DefinitionError:
        return False
    return isinstance(data, dict) and "agents" in data and "steps" not in data


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Workflow files to check.")],
    as_json: JsonOpt = False,
) -> None:
    """Check workflow files; exit 0 if all are valid, 2 listing every problem otherwise."""

    def body() -> None:
        from podium.definition.loader import load_workflow
        from podium.errors import DefinitionError

        results: dict[str, Any] = {}
        bad = 0
        for f in files:
            try:
                if _is_agents_file(f):
                    from podium.agents.config import load_agents_file

                    cfg = load_agents_file(f)
                    results[str(f)] = {
                        "valid": True,
                        "kind": "agents",
                        "agents": len(cfg.agents),
                        "problems": [],
                    }
                    if not as_json:
                        print(f"{f}: ok (agents file, {len(cfg.agents)} agents)")
                    continue
                wf = load_workflow(f)
                results[str(f)] = {
                    "valid": True,
                    "kind": "workflow",
                    "workflow": wf.name,
                    "version": wf.version,
                    "steps": len(wf.steps),
                    "problems": [],
                }
                if not as_json:
                    print(f"{f}: ok ({wf.name} v{wf.version}, {len(wf.steps)} steps, {wf.mode})")
            except DefinitionError as exc:
                bad += 1
                results[str(f)] = {
                    "valid": False,
                    "problems": [
                        {
                            "file": p.file,
                            "line": p.line,
                            "step": p.step,
                            "field": p.field,
                            "message": p.message,
                            "hint": p.hint,
                        }
                        for p in exc.problems
                    ],
                }
                if not as_json:
                    err(f"{f}: {len(exc.problems)} problem(s):")
                    for p in exc.problems:
                        err(f"  {p.render()}")
        if as_json:
            dump_json(results)
        raise typer.Exit(EXIT_USAGE if bad else EXIT_OK)

    guarded(body)


@app.command()
def graph(file: Annotated[Path, typer.Argument(help="Workflow file.")]) -> None:
    """Print the plan as a Mermaid flowchart."""

    def body() -> None:
        from podium.definition.loader import load_workflow
        from podium.definition.plan import compile_plan, mermaid

        sys.stdout.write(mermaid(compile_plan(load_workflow(file))))

    guarded(body)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the workflow file (for editor autocompletion)."""

    def body() -> None:
        from podium.definition.models import Workflow

        doc = Workflow.model_json_schema(mode="validation")
        doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **doc,
            "title": "Podium workflow",
        }
        dump_json(doc)

    guarded(body)
