"""``podium agent ...``: commands about agents themselves.

``podium agent serve MODULE:FUNC`` turns any Python function into an HTTP
agent, so a step can run in another process, container or machine without
the function knowing about HTTP.
"""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from podium.agents.serve import JoinSettings

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
    register: Annotated[
        str | None,
        typer.Option("--register", metavar="URL",
                     help="Join the fleet of the podium serve at URL (POST /agents), send"
                     " heartbeats, leave at the end."),
    ] = None,
    register_token_env: Annotated[
        str | None,
        typer.Option("--register-token-env", metavar="NAME",
                     help="With --register: the variable holding an agent-scope token."),
    ] = None,
    ttl: Annotated[
        str,
        typer.Option("--ttl", metavar="DURATION",
                     help="With --register: how long the fleet keeps it without a heartbeat."),
    ] = "30s",
    agent_id: Annotated[
        str | None,
        typer.Option("--id", metavar="ID",
                     help="With --register: its agent id (default CAPABILITY-HOST-PORT)."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", metavar="URL",
                     help="With --register: the URL the engine calls it at (default: the"
                     " bound address)."),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option("--region", metavar="NAME", help="With --register: its region."),
    ] = None,
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
        from podium.tuning import tune_gc

        tune_gc()  # a server process: it serves this function for as long as it lives
        serve(target, capability=capability, host=host, port=port,
              max_concurrency=max_concurrency, health=health, log_level=log_level,
              token_env=token_env, allowed_hosts=allowed_hosts or (),
              limits=HttpLimits(max_body_bytes=max_body_bytes), join=_join_settings())

    def _join_settings() -> "JoinSettings | None":
        from podium.agents.joining import check_register_url
        from podium.agents.serve import JoinSettings
        from podium.cli.common import token_from_env
        from podium.definition.durations import parse_duration

        given = {"--register-token-env": register_token_env, "--id": agent_id,
                 "--public-url": public_url, "--region": region}
        if register is None:
            stray = [flag for flag, value in given.items() if value is not None]
            if stray or ttl != "30s":
                fail(f"{(stray or ['--ttl'])[0]} goes with --register (fix: add --register"
                     " URL, or leave it out)")
            return None
        try:
            ttl_s = parse_duration(ttl)
        except Exception:  # noqa: BLE001 - any unreadable duration is the same usage error
            ttl_s = -1.0
        if not 1.0 <= ttl_s <= 3600.0:
            fail(f"--ttl {ttl!r}: a duration from 1s to 1h (fix: e.g. --ttl 30s)")
        return JoinSettings(server=check_register_url(register),
                            token=token_from_env(register_token_env), ttl_s=ttl_s,
                            agent_id=agent_id, public_url=public_url, region=region)

    guarded(body)
