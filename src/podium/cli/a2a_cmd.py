"""``podium a2a serve``: publish a workflow as an A2A agent."""

# Annotations stay evaluated (no ``from __future__ import annotations``), as in the
# other command modules: typer reads every command's signature at start-up.

from pathlib import Path
from typing import Annotated

import typer

from podium.cli.app import AgentsOpt, DbOpt, _agents_file, app
from podium.cli.common import fail, guarded

a2a_app = typer.Typer(help="Workflows as A2A agents (a2a-sdk, protocol 1.0).",
                      no_args_is_help=True)
app.add_typer(a2a_app, name="a2a")


@a2a_app.command("serve")
def serve_cmd(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="Workflow file (YAML or JSON), or a Python workflow: MODULE:ATTR"
        " or FILE.py[:ATTR].")],
    port: Annotated[int, typer.Option("--port", "-p", metavar="PORT",
                                      help="Port to listen on (1-65535; 0: any free one).")],
    host: Annotated[str, typer.Option(
        "--host", metavar="HOST", help="Interface to bind (0.0.0.0 exposes it to the network)."
    )] = "127.0.0.1",
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", metavar="NAME",
                     help="Environment variable holding the bearer token callers must send."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", metavar="URL",
                     help="The URL the agent card announces (default: the bound address)."),
    ] = None,
    skill: Annotated[
        str | None, typer.Option("--skill", metavar="ID",
                                 help="The card's skill id (default: the workflow's name).")
    ] = None,
    answer_within: Annotated[
        str, typer.Option("--answer-within", metavar="DURATION",
                          help="A blocking send waits this long for the run to end (or wait for"
                          " someone), then answers with the task working.")
    ] = "30s",
    tasks_held: Annotated[
        int, typer.Option("--tasks-held", metavar="N",
                          help="Tasks kept in memory with their messages (1-1000000); older"
                          " ones are read back from their runs, without their messages.")
    ] = 10_000,  # server.a2a.TASKS_HELD (not imported here: the SDK loads slowly)
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", metavar="NAME",
                     help="Another name callers may use in Host (repeatable; * for any)."),
    ] = None,
    agents: AgentsOpt = None,
    alerts: Annotated[
        Path | None,
        typer.Option("--alerts", metavar="FILE", help="Alerts file (default $PODIUM_ALERTS)."),
    ] = None,
    db: DbOpt = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth",
                           help="Serve beyond this machine without --token-env (behind a proxy"
                           " that authenticates).")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", metavar="LEVEL",
                          help="critical, error, warning, info, debug or trace.")
    ] = "info",
) -> None:
    """Serve a workflow as an A2A agent: each task a run, its state the run's.

    The card is at /.well-known/agent-card.json, JSON-RPC at /. A run waiting for an
    approval or a signal is an input-required task; cancelling a task cancels its run.
    Runs until Ctrl-C or SIGTERM; runs it leaves are resumed by the next server.
    """

    def body() -> None:
        try:
            from podium.server.a2a import A2AConfig, serve
        except ImportError as exc:
            fail(f"podium a2a serve needs a2a-sdk's server and Starlette ({exc}) (fix: pip"
                 " install 'podium[a2a,server]')")
        from podium.agents.config import build_registry
        from podium.agents.serve import token_from
        from podium.cli.workflow_ref import load_with_registry, registry_of
        from podium.definition.durations import parse_duration
        from podium.definition.plan import compile_plan
        from podium.engine import check_agents
        from podium.errors import PodiumError
        from podium.httpd import check_port

        check_port(port, allow_zero=True)
        try:
            within = parse_duration(answer_within)
        except (PodiumError, ValueError, TypeError) as exc:
            fail(f"--answer-within {answer_within}: not a duration ({exc}) (fix: e.g. 30s, 0s)")
        if not 0 <= within <= 3600:
            fail(f"--answer-within {answer_within}: from 0s to 1h (fix: e.g. 30s; 0s answers"
                 " at once)")
        if not 1 <= tasks_held <= 1_000_000:
            fail(f"--tasks-held {tasks_held}: from 1 to 1000000 (fix: e.g. 10000, the"
                 " default)")
        if skill is not None and not skill.strip():
            fail("--skill: empty (fix: give an id, or leave it out for the workflow's name)")
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            fail(f"--public-url {public_url}: not an http(s) URL (fix: e.g."
                 " --public-url https://agents.example.com/report)")
        loaded = load_with_registry(file, registry_of(db))  # sub-workflows: also registered
        workflow = loaded.workflow
        registry, _cfg, source = build_registry(_agents_file(agents, loaded.path))
        # Every step's agent is known before anything listens, as `podium run` checks.
        check_agents(registry, compile_plan(workflow), str(file))
        serve(A2AConfig(workflow=workflow, source=str(file), registry=registry,
                        agents_source=source, db=db, alerts_file=alerts,
                        token=token_from(token_env), skill=skill, public_url=public_url,
                        answer_within_s=within, tasks_held=tasks_held),
              host, port, allowed_hosts=allowed_hosts or (), log_level=log_level,
              insecure_no_auth=insecure_no_auth)

    guarded(body)
