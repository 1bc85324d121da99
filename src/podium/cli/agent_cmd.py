"""``podium agent ...``: commands about agents themselves.

``podium agent serve MODULE:FUNC`` turns any Python function into an HTTP
agent, so a step can run in another process, container or machine without
the function knowing about HTTP.
"""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

from typing import Annotated

import typer

from podium.cli.common import guarded

__all__ = ["agent_app"]

agent_app = typer.Typer(help="Work with agents.", no_args_is_help=True)


@agent_app.command("serve")
def serve_command(
    target: Annotated[
        str,
        typer.Argument(metavar="MODULE:FUNC", help="Function to serve, e.g. my_pkg.agents:run."),
    ],
    capability: Annotated[
        str,
        typer.Option(
            "--capability", "-c", metavar="NAME", help="The capability this agent provides."
        ),
    ],
    port: Annotated[
        int,
        typer.Option("--port", "-p", min=1, max=65535, metavar="PORT", help="Port to listen on."),
    ],
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="HOST", help="Interface to bind (0.0.0.0 exposes it to the network)."
        ),
    ] = "127.0.0.1",
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            "--max-concurrency",
            min=1,
            metavar="N",
            help="Calls in flight at once (default: no cap).",
        ),
    ] = None,
    health: Annotated[
        str | None,
        typer.Option("--health", metavar="MODULE:FUNC", help="Optional health check function."),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level", metavar="LEVEL", help="critical, error, warning, info, debug or trace."
        ),
    ] = "info",
) -> None:
    """Expose a Python function as an HTTP agent (POST /invoke, GET /health).

    Runs until Ctrl-C or SIGTERM, then finishes the calls in flight.
    """

    def body() -> None:
        from podium.agents.serve import serve

        serve(target, capability=capability, host=host, port=port,
              max_concurrency=max_concurrency, health=health, log_level=log_level)

    guarded(body)
