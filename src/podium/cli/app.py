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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperArgument, TyperGroup

from podium.cli.agent_cmd import agent_app
from podium.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Interrupt,
    dump_json,
    err,
    guarded,
    in_workflow_order,
    parse_inputs,
    plural,
    quiet_stdout,
    run_async,
)
from podium.state import RunStatus

# click's UsageError, reached through the one click class typer exports: typer 0.12 uses
# click itself, newer typers carry their own copy, and either raises its own class.
UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)

# The commands defined elsewhere, in the order they are listed in ``podium --help``.
COMMAND_MODULES = ("podium.cli.fleet", "podium.cli.observe_cmd", "podium.cli.runs",
                   "podium.cli.prune_cmd", "podium.cli.workers_cmd", "podium.cli.schedule_cmd",
                   "podium.cli.wait_cmd", "podium.cli.workflow_cmd", "podium.cli.a2a_cmd",
                   "podium.cli.token_cmd")
# Where the commands people run most often are defined: ``podium status RUN`` imports
# that module alone, not every other command's (the workflow models, the server...).
COMMAND_HOMES = dict.fromkeys(("runs", "status", "resume", "rollback", "cancel"), "podium.cli.runs")


class _PlainArgument(TyperArgument):
    """An argument shown as people write it: ``FILE``, ``[RUN]``, ``FILE...``.

    typer prints ``{file}`` in the usage line and ``file <path>`` in the list;
    the metavar alone says what to type.
    """

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        return [name if self.required else f"[{name}]"]

    def get_help_record(self, ctx: Any) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        return self.metavar or (self.name or "").upper(), record[1]


try:  # typer >= 0.20 coerces each value through a pydantic TypeAdapter it builds
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
except ImportError:  # older typers use click's types: nothing to defer
    RuntimeParam = None  # type: ignore[assignment,misc]

if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _DeferredParam(RuntimeParam):
        """typer's coercion of one parameter, built only for a value that needs it.

        typer builds a pydantic TypeAdapter for every parameter of the command run,
        given or not: ``podium status RUN`` imported pydantic for that alone (~40 ms)
        and ``podium run`` built nine adapters for options left out. A missing value
        never reaches ``_coerce_value`` (``RuntimeParam.coerce`` answers it), and a
        text for a plain ``str`` is returned as is, as typer's adapter returns it; any
        other value goes through typer's own coercion, built then.
        """

        descriptor: Any

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if (type(value) is str and self.annotation is str
                    and self.parameter_info.parser is None and _utf8(value)):
                return value
            real = build_runtime_param(self.descriptor)
            param._runtime_param = real  # the next value goes straight to it
            return real._coerce_value(value, param=param, ctx=ctx)


def _utf8(text: str) -> bool:
    """pydantic refuses a str it cannot encode (argv's undecodable bytes): leave it that."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _defer_coercion(param: Any) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if (RuntimeParam is not None and isinstance(descriptor, TypeDescriptor)
            and getattr(param, "_runtime_param", False) is None):
        param._runtime_param = _DeferredParam(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation,
            descriptor=descriptor)


def _deferring_help(command: Any) -> None:
    """``command``'s ``--help`` option, made when its context is, defers its coercion too."""
    made = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            _defer_coercion(option)
        return option

    command.get_help_option = get_help_option


def _plain_arguments(command: Any) -> Any:
    """Show ``command``'s arguments (and its subcommands') as ``_PlainArgument`` does,
    and defer their coercion (``_DeferredParam``)."""
    if "get_help_option" not in vars(command):
        _deferring_help(command)
    for param in getattr(command, "params", ()):
        _defer_coercion(param)
        if type(param) is TyperArgument:
            param.__class__ = _PlainArgument  # same fields, two display methods differ
    if not isinstance(command, PodiumGroup):  # a sub-group: its commands are all built
        for sub in getattr(command, "commands", {}).values():
            _plain_arguments(sub)
    return command


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
        for param in self.params:
            _defer_coercion(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _defer_coercion(option)
        return option

    @property
    def commands(self) -> MutableMapping[str, Any]:
        if not self._complete:
            self._complete = True
            for name in COMMAND_MODULES:
                importlib.import_module(name)  # registers its commands on ``app``
            full = typer.main.get_group(app)
            assert isinstance(full, PodiumGroup)
            self._commands = full._commands
            for command in self._commands.values():
                _plain_arguments(command)
        return self._commands

    @commands.setter
    def commands(self, value: MutableMapping[str, Any]) -> None:
        self._commands = value

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = self._commands.get(cmd_name)
        home = COMMAND_HOMES.get(cmd_name)
        if found is None and home is not None and not self._complete:
            importlib.import_module(home)  # registers its commands on ``app``
            built = typer.main.get_group(app)
            assert isinstance(built, PodiumGroup)
            found = built._commands.get(cmd_name)
        if found is None:
            found = super().get_command(ctx, cmd_name)
        return None if found is None else _plain_arguments(found)

    # A usage error (unknown option, missing argument, bad value) is found by click before
    # any command runs; with --json given it still owes stdout its one document.
    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        own = args[: args.index("--")] if "--" in args else args
        self._json_requested = "--json" in own
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            self._usage_error(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            self._usage_error(exc)
            raise

    def _usage_error(self, exc: Any) -> None:
        if getattr(self, "_json_requested", False):
            ctx = exc.ctx
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            dump_json({"error": {"type": "usage", "message": exc.format_message() + hint,
                                 "exit_code": exc.exit_code}})


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


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("podium")
        except PackageNotFoundError:  # run from a source tree without installing it
            from podium import __version__ as number
        print(f"podium {number}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _podium(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Podium: durable orchestration of multi-agent workflows."""

WORKFLOW_HELP = ("Workflow file (YAML or JSON), or a Python workflow: MODULE:ATTR or"
                 " FILE.py[:ATTR] (a podium.Flow or podium.Workflow).")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document, no progress.")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database URL (default $PODIUM_DB, else the nearest .podium/podium.db here or"
        " in a parent folder, else ./.podium/podium.db).",
    ),
]
AgentsOpt = Annotated[
    Path | None,
    typer.Option(
        "--agents",
        metavar="FILE",
        help="Agents file (default $PODIUM_AGENTS, else ./podium.yaml, else podium.yaml"
        " beside the workflow).",
    ),
]


def _agents_file(explicit: Path | None, workflow_path: Path | None) -> Path | None:
    from podium.agents.config import find_agents_file

    found = find_agents_file(explicit)
    if found is None and workflow_path is not None:
        beside = workflow_path.resolve().parent / "podium.yaml"
        if beside.is_file():
            found = beside
    return found


def _print_summary(run: Any, failures: list[str], took_s: float | None = None) -> None:
    """The outcome for people; ``took_s`` is this execution's time (a resume's own)."""
    from podium.definition.durations import format_duration

    dur = run.duration_s if took_s is None else took_s
    took = f" in {format_duration(dur)}" if dur is not None else ""
    if took_s is not None:
        took += " (this resume)"
    out = sys.stdout
    if run.status == RunStatus.WAITING:
        print(f"\nrun {run.run_id} is waiting; no process holds it", file=out)
        for line in waiting_lines(run):
            print(f"  {line}", file=out)
        out.flush()
        return
    if run.status == RunStatus.SUCCEEDED:
        print(f"\nrun {run.run_id} succeeded{took}", file=out)
        # As typed, not escaped (21°C, not 21\u00b0C): this is for people, --json is for tools.
        text = json.dumps(run.output, indent=2, default=str, ensure_ascii=False)
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
    interrupt: Interrupt,
    registry: Any = None,
    metrics_port: int | None = None,
    alerts_file: Path | None = None,
) -> Any:
    from podium.runtime import Runtime, RuntimeConfig
    from podium.tuning import tune_gc

    tune_gc()  # this process is ours, and running workflows is all it does now
    progress = None
    if not as_json:
        from podium.cli.progress import make_progress
        from podium.clock import SystemClock
        from podium.definition.plan import compile_plan

        retry = {n.id: n.retry[0] for n in compile_plan(workflow).nodes if n.retry}
        progress = make_progress([s.id for s in workflow.steps], SystemClock(), retry=retry)
    runtime = Runtime(RuntimeConfig(
        db=db, agents_file=agents_file, registry=registry, alerts_file=alerts_file,
        workflows=(workflow,), metrics_port=metrics_port,
        observers=() if progress is None else (progress,)))
    async with runtime:
        try:
            handle = await runtime.engine.start(
                workflow, inputs, agents_source=runtime.agents_source, source=source)
            interrupt.on(lambda: handle.cancel("interrupted (Ctrl-C)"))
            run = await handle.result()
        finally:
            if progress is not None:
                progress.close()
    return run, (progress.state.failures if progress is not None else [])


def _finish(run: Any, failures: list[str], as_json: bool, took_s: float | None = None) -> None:
    in_workflow_order(run)
    try:
        if as_json:
            from podium.docs import run_doc

            dump_json(run_doc(run))
        else:
            _print_summary(run, failures, took_s)
    except BrokenPipeError:  # `podium run ... | head`: the run's outcome still decides
        quiet_stdout()
    raise typer.Exit(EXIT_OK if run.status in (RunStatus.SUCCEEDED, RunStatus.WAITING)
                     else EXIT_FAILED)


def waiting_lines(run: Any) -> list[str]:
    """What a waiting run waits for, and the command that continues it."""
    from datetime import UTC, datetime

    from podium.definition.loader import workflow_from_dict
    from podium.definition.plan import compile_plan

    plan = compile_plan(workflow_from_dict(run.definition))
    out = []
    for node in plan.nodes:
        rec = run.steps.get(node.id)
        if rec is None or rec.status != "waiting":
            continue
        if node.wait is None:  # a sub-workflow whose child run waits
            out.append(f"{node.id}: its child run {run.run_id}.{node.id} waits (see"
                       " `podium runs --status waiting`)")
            continue
        until = ""
        if rec.next_retry_at is not None:
            at = datetime.fromtimestamp(rec.next_retry_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            until = f" until {at}"
        if node.wait.kind == "approval":
            out.append(f"{node.id}: an approval{until and ' (' + until.strip() + ')'}:"
                       f" podium approve {run.run_id} {node.id} [--reject --reason TEXT]")
        elif node.wait.kind == "signal":
            out.append(f"{node.id}: signal '{node.wait.signal}'"
                       f"{until and ' (' + until.strip() + ')'}:"
                       f" podium signal {run.run_id} {node.wait.signal} --data JSON")
        else:
            out.append(f"{node.id}: a timer{until}: `podium serve` (or a worker) goes on"
                       f" then, or `podium resume {run.run_id}` after it")
    return out


_NOT_TEXT = {"number", "integer", "boolean", "object", "array"}


def _keep_schema_strings(pairs: list[str], inputs: dict[str, Any], schema: Any) -> None:
    """``-i ver=1.10`` is the text "1.10" when ``input_schema`` says ``ver`` is a string.

    ``-i`` reads a value as JSON when it can (``-i n=5`` is the number 5); a key whose
    schema type is ``string`` means the text as typed, or the string JSON spells
    (``-i s='"x"'``), or null where the schema allows it. The last ``-i`` of a key wins.
    """
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        prop = props.get(key)
        named = prop.get("type") if isinstance(prop, dict) else None
        kinds = {k for k in (named if isinstance(named, list) else [named]) if isinstance(k, str)}
        if not sep or "string" not in kinds or kinds & _NOT_TEXT:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if not (isinstance(value, str) or (value is None and "null" in kinds)):
            value = raw
        inputs[key] = value


@app.command()
def run(
    file: Annotated[Path, typer.Argument(metavar="FILE", help=WORKFLOW_HELP)],
    input_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "-i",
            "--input",
            metavar="KEY=VALUE",
            help="An input value, parsed as JSON when valid JSON (-i n=5 is a number),"
            " kept as text otherwise or when input_schema says the key is a string;"
            " repeat for more keys.",
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input-file", metavar="FILE", help="JSON or YAML object as input."),
    ] = None,
    agents: AgentsOpt = None,
    db: DbOpt = None,
    metrics_port: Annotated[
        int | None, typer.Option(
            "--metrics-port", metavar="PORT", help="Serve /metrics on 127.0.0.1:PORT meanwhile."
        )
    ] = None,
    alerts: Annotated[
        Path | None,
        typer.Option(
            "--alerts",
            metavar="FILE",
            help="Alerts file (default $PODIUM_ALERTS, ./podium-alerts.yaml).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a workflow and wait for it; exit 0 succeeded, 1 failed."""

    def body() -> None:
        from podium.cli.workflow_ref import load_with_registry, registry_of
        from podium.errors import DefinitionError

        if metrics_port is not None:
            from podium.httpd import check_port

            check_port(metrics_port, "--metrics-port")
        loaded = load_with_registry(file, registry_of(db))
        workflow = loaded.workflow
        inputs = parse_inputs(input_pairs or [], input_file)
        _keep_schema_strings(input_pairs or [], inputs, workflow.input_schema)
        agents_file = _agents_file(agents, loaded.path)
        interrupt = Interrupt()
        try:
            result, failures = run_async(
                lambda: _execute(
                    workflow,
                    inputs,
                    agents_file,
                    db,
                    as_json,
                    str(loaded.path or file),
                    interrupt,
                    metrics_port=metrics_port,
                    alerts_file=alerts,
                ),
                on_interrupt=interrupt,
                json_stdout=as_json,
            )
        except DefinitionError as exc:  # a step's agent nobody provides: say on which line
            raise DefinitionError(loaded.locate(exc.problems)) from None
        _finish(result, failures, as_json)

    guarded(body, as_json=as_json)


@app.command()
def demo(
    report: Annotated[
        Path | None,
        typer.Option("--report", metavar="FILE", help="Where to write the Markdown report."),
    ] = None,
    crash: Annotated[
        bool, typer.Option("--crash", help="Kill this process (SIGKILL) halfway through the"
                           " pipeline, after printing the `podium resume` that finishes it.")
    ] = False,
    ui: Annotated[
        bool, typer.Option("--ui", help="Watch it in the dashboard: serve it on 127.0.0.1"
                           " and print a one-time login link; Ctrl-C stops the server.")
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", metavar="N",
                                 help="With --ui: the port (default: a free one).")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the bundled example: a sales pipeline on a fleet that misbehaves, live.

    collect → process + validate → report → forecast → notify: retries with backoff
    and jitter, an agent dying and failing over to another region, a circuit opening
    and closing, an SLA alert; then a publication that fails and is rolled back.
    """

    def body() -> None:
        from podium.cli.demo_cmd import run_demo

        run_demo(report, db, as_json, crash, ui, port)

    guarded(body, as_json=as_json)


def _is_agents_file(path: Path) -> bool:
    """An agents file (``agents:`` and no ``steps:``) is checked as one, not as a workflow."""
    from podium.definition.documents import parse_document, read_text
    from podium.errors import DefinitionError

    try:
        data, _ = parse_document(read_text(path), str(path))
    except DefinitionError:
        return False
    return isinstance(data, dict) and "agents" in data and "steps" not in data


def with_lines(problems: list[Any], path: Path) -> list[Any]:
    """Problems found after loading (an unknown capability) get the line of their field.

    The engine knows the step and the field (``agent``, ``compensate.agent``), not
    the file; reading the file again costs a parse, and only when something is wrong.
    """
    import dataclasses

    from podium.definition.loader import parse_document
    from podium.errors import DefinitionError

    try:
        data, lines = parse_document(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, DefinitionError):
        return problems
    steps = data.get("steps") if isinstance(data, dict) else None
    index = {s.get("id"): i for i, s in enumerate(steps or []) if isinstance(s, dict)}
    out = []
    for p in problems:
        if p.line is None and p.step in index and p.file in (None, str(path)):
            loc: tuple[str | int, ...] = ("steps", index[p.step], *(p.field or "").split("."))
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines),
                        None)
            p = dataclasses.replace(p, file=str(path), line=line, loc=loc)
        out.append(p)
    return out


class _AgentChecker:
    """Checks a workflow's agents against each agents file, built once as ``run`` builds it
    (the file, then the podium.agents entry points and @agent functions)."""

    def __init__(self) -> None:
        self._built: dict[Path, Any] = {}  # agents file -> registry, or the problems found

    def problems(self, loaded: Any, agents_file: Path) -> list[Any]:
        from podium.errors import DefinitionError

        found = self._registry(agents_file.resolve())
        if isinstance(found, list):
            return found
        from podium.engine import Engine

        engine = Engine(registry=found)
        try:
            engine.check_agents(engine.plan(loaded.workflow), str(loaded.path))
        except DefinitionError as exc:
            return list(loaded.locate(exc.problems))
        return []

    def _registry(self, agents_file: Path) -> Any:
        if agents_file not in self._built:
            from podium.agents.config import build_registry
            from podium.errors import ConfigError, DefinitionError, Problem

            try:
                self._built[agents_file] = build_registry(agents_file)[0]
            except DefinitionError as exc:
                self._built[agents_file] = exc.problems
            except ConfigError as exc:
                self._built[agents_file] = [Problem(exc.message, file=str(agents_file))]
        return self._built[agents_file]

    def close(self) -> None:
        registries = [r for r in self._built.values() if not isinstance(r, list)]
        if registries:

            async def close_all() -> None:
                for registry in registries:
                    await registry.aclose()

            run_async(close_all)


NOT_CHECKED = ("capabilities not checked: no agents file found (fix: --agents FILE,"
               " $PODIUM_AGENTS, or podium.yaml here or beside the workflow)")


@app.command()
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE...", help="Workflow (or agents) files to check, or"
                       " Python workflows: MODULE:ATTR or FILE.py[:ATTR]."),
    ],
    agents: AgentsOpt = None,
    db: Annotated[
        str | None,
        typer.Option("--db", metavar="URL", help="Where sub-workflows that no file defines are"
                     " registered (default $PODIUM_DB, else the project's .podium/podium.db"
                     " if there is one; never created)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check workflow files; exit 0 if all are valid, 2 listing every problem otherwise.

    Each step's agent (capability or @agent-id, and its compensate's) must be provided
    by the agents that `podium run` would load; without an agents file that is not checked.
    A sub-workflow no file defines is looked for in the database's registered workflows.
    """

    def body() -> None:
        from podium.cli.common import Failure, problem_doc
        from podium.cli.workflow_ref import is_python_ref, load_with_registry, registry_of
        from podium.errors import DefinitionError

        resolver = registry_of(db, only_if_exists=True)
        results: dict[str, Any] = {}
        bad = 0
        unchecked: list[str] = []
        checker = _AgentChecker()
        try:
            for f in files:
                try:
                    if not is_python_ref(str(f)) and _is_agents_file(f):
                        from podium.agents.config import load_agents_file

                        cfg = load_agents_file(f)
                        results[str(f)] = {
                            "valid": True,
                            "kind": "agents",
                            "agents": len(cfg.agents),
                            "problems": [],
                        }
                        if not as_json:
                            print(f"{f}: ok (agents file, {plural(len(cfg.agents), 'agent')})")
                        continue
                    loaded = load_with_registry(f, resolver)
                    wf = loaded.workflow
                    agents_file = _agents_file(agents, loaded.path)
                    doc = {
                        "valid": True,
                        "kind": "workflow",
                        "workflow": wf.name,
                        "version": wf.version,
                        "steps": len(wf.steps),
                        "agents_file": None if agents_file is None else str(agents_file),
                        "capabilities_checked": agents_file is not None,
                        "problems": [],
                    }
                    if agents_file is None:
                        doc["note"] = NOT_CHECKED
                        unchecked.append(str(f))
                    else:
                        problems = checker.problems(loaded, agents_file)
                        if problems:
                            raise DefinitionError(problems)
                    results[str(f)] = doc
                    if not as_json:
                        print(f"{f}: ok ({wf.name} v{wf.version},"
                              f" {plural(len(wf.steps), 'step')}, {wf.mode})")
                except Failure as exc:  # a Python reference that names no workflow
                    bad += 1
                    results[str(f)] = {"valid": False, "problems": [
                        {"file": str(f), "line": None, "step": None, "field": None,
                         "message": exc.message, "hint": None}]}
                    if not as_json:
                        err(f"error: {exc.message}")
                except DefinitionError as exc:
                    bad += 1
                    results[str(f)] = {
                        "valid": False,
                        "problems": [problem_doc(p) for p in exc.problems],
                    }
                    if not as_json:
                        err(f"{f}: {plural(len(exc.problems), 'problem')}:")
                        for p in exc.problems:
                            err(f"  {p.render()}")
        finally:
            checker.close()
        if as_json:
            dump_json(results)
        elif unchecked:
            err(f"note: {', '.join(unchecked)}: {NOT_CHECKED}")
        raise typer.Exit(EXIT_USAGE if bad else EXIT_OK)

    guarded(body, as_json=as_json)


@app.command()
def graph(file: Annotated[Path, typer.Argument(metavar="FILE", help=WORKFLOW_HELP)]) -> None:
    """Print the plan as a Mermaid flowchart."""

    def body() -> None:
        from podium.cli.workflow_ref import load_workflow_ref
        from podium.definition.plan import compile_plan, mermaid

        sys.stdout.write(mermaid(compile_plan(load_workflow_ref(file).workflow)))

    guarded(body)


@app.command()
def export(
    ref: Annotated[Path, typer.Argument(metavar="MODULE:ATTR", help=WORKFLOW_HELP)],
    fmt: Annotated[
        str, typer.Option("--format", metavar="yaml|json", help="What to print (default yaml).")
    ] = "yaml",
) -> None:
    """Print the workflow file a Python workflow stands for (validated first).

    `podium validate` of what it prints gives the same definition.
    """

    def body() -> None:
        from podium.cli.common import fail
        from podium.cli.workflow_ref import load_workflow_ref
        from podium.definition.builder import export_text

        if fmt not in ("yaml", "json"):
            fail(f"--format {fmt!r}: write --format yaml or --format json")
        text = export_text(load_workflow_ref(ref).workflow, "json" if fmt == "json" else "yaml")
        sys.stdout.write(text)

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
