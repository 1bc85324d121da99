"""``podium agent ...``: commands about agents themselves.

``podium agent serve MODULE:FUNC`` turns any Python function into an HTTP
agent, so a step can run in another process, container or machine without
the function knowing about HTTP.
"""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

from typing import Annotated

import typer

from podium.cli.common import fail, guarded

# The documented default, without importing the server module at start-up.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

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
    # Ports and sizes are checked by Podium, not typer: its messages do not name the value.
    port: Annotated[
        int, typer.Option("--port", "-p", metavar="PORT", help="Port to listen on (1-65535).")
    ],
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="HOST", help="Interface to bind (0.0.0.0 exposes it to the network)."
        ),
    ] = "127.0.0.1",
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", metavar="NAME",
                     help="Environment variable holding the bearer token callers must send."),
    ] = None,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", metavar="NAME",
                     help="Another name callers may use in Host (repeatable; * for any)."),
    ] = None,
    max_body_bytes: Annotated[
        int,
        typer.Option("--max-body-bytes", metavar="N",
                     help="Largest request body; a larger one is answered 413."),
    ] = DEFAULT_MAX_BODY_BYTES,
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

    Runs until Ctrl-C or SIGTERM, then finishes the calls in flight. Without
    --token-env anyone who can reach the port may call the function.
    """

    def body() -> None:
        from podium.agents.serve import serve
        from podium.httpd import HttpLimits, check_port

        check_port(port)
        if max_body_bytes < 1:
            fail(f"--max-body-bytes {max_body_bytes} is too small (fix: give a number of"
                 f" bytes >= 1; the default is {DEFAULT_MAX_BODY_BYTES})")
        serve(target, capability=capability, host=host, port=port,
              max_concurrency=max_concurrency, health=health, log_level=log_level,
              token_env=token_env, allowed_hosts=allowed_hosts or (),
              limits=HttpLimits(max_body_bytes=max_body_bytes))

    guarded(body)
