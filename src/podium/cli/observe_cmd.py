"""``podium failures`` and ``podium alerts``: what went wrong, and who was told."""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

import datetime as dt
import getpass
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import DbOpt, JsonOpt, app
from podium.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    check_limit,
    dump_json,
    fail,
    guarded,
    plural,
    run_async,
)


async def _store(db: str | None, *, readonly: bool = True) -> Any:
    from podium.store.factory import default_db_url, open_store

    store = open_store(default_db_url(db), readonly=readonly)
    await store.open()
    return store


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def failures(
    since: Annotated[
        str, typer.Option("--since", metavar="DURATION", help="How far back (e.g. 15m, 1h, 7d).")
    ] = "1h",
    by: Annotated[
        str, typer.Option("--by", metavar="GROUP", help="Group by agent, step, type or workflow.")
    ] = "type",
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Failures over a time window: success rates and the most frequent errors."""

    def body() -> None:
        import time

        from podium.definition.durations import parse_duration
        from podium.observe.failures import GROUPINGS, summarize

        if by not in GROUPINGS:
            fail(f"--by {by!r}: use one of {', '.join(GROUPINGS)}")
        try:
            window = parse_duration(since)
        except ValueError as exc:
            fail(f"--since: {exc}")

        async def go() -> dict[str, Any]:
            store = await _store(db)
            try:
                outcomes = await store.attempt_outcomes(time.time() - window)
            finally:
                await store.close()
            return summarize(outcomes, by)

        report = run_async(go)
        report["since"] = since
        if as_json:
            from podium.docs import with_times

            report["recent"] = [with_times(r, ("ts",)) for r in report["recent"]]
            dump_json(report)
            return
        rate = report["success_rate"]
        print(f"last {since}: {plural(report['attempts'], 'attempt')}, {report['failures']} failed"
              + (f", success rate {rate:.1%}" if rate is not None else ""))
        if not report["groups"]:
            return
        print(f"\n{by.upper():<32} {'CALLS':>6} {'FAILED':>7} {'SUCCESS':>8}  TOP ERROR")
        for g in report["groups"]:
            top = g["top_errors"][0] if g["top_errors"] else None
            sr = "-" if g["success_rate"] is None else f"{g['success_rate']:.1%}"
            err = f"{top['type']}: {top['message'][:60]} (x{top['count']})" if top else ""
            print(f"{str(g[by])[:32]:<32} {g['calls']:>6} {g['failures']:>7} {sr:>8}  {err}")

    guarded(body, as_json=as_json)


alerts_app = typer.Typer(help="Alerts: list them, or acknowledge one to stop its escalation.",
                         invoke_without_command=True, no_args_is_help=False)
app.add_typer(alerts_app, name="alerts")


@alerts_app.callback()
def alerts_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", metavar="STATUS", help="firing or resolved.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="At most this many (up to 100000).")
    ] = 50,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List alerts, newest first (firing ones show their escalation level)."""
    if ctx.invoked_subcommand is not None:
        return

    def body() -> None:
        check_limit(limit)

        async def go() -> list[Any]:
            store = await _store(db)
            try:
                return list(await store.list_alerts(status=status, limit=limit))
            finally:
                await store.close()

        alerts = run_async(go)
        if as_json:
            from podium.docs import alert_doc

            dump_json([alert_doc(a) for a in alerts])
            return
        if not alerts:
            print("no alerts")
            return
        print(f"{'STATUS':<9} {'SEVERITY':<9} {'LVL':>3} {'FIRED':<19} {'ACKED':<5} KEY / SUMMARY")
        for a in alerts:
            print(f"{a.status:<9} {a.severity:<9} {a.level:>3} {_when(a.fired_at):<19} "
                  f"{'yes' if a.acked_at else '-':<5} {a.key}\n{'':>49}{a.summary}")

    guarded(body, as_json=as_json)


@alerts_app.command("ack")
def alerts_ack(
    key: Annotated[
        str, typer.Argument(metavar="KEY", help="The alert's key (see `podium alerts`).")
    ],
    by: Annotated[
        str | None,
        typer.Option("--by", metavar="NAME", help="Who acknowledges (default: your user name)."),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge a firing alert: its escalation stops (it still resolves as usual)."""

    def body() -> None:
        import time

        who = by or getpass.getuser()

        async def go() -> tuple[bool, Any]:
            store = await _store(db, readonly=False)
            try:
                ok = await store.ack_alert(key, who, time.time())
                return ok, await store.get_alert(key)
            finally:
                await store.close()

        ok, alert = run_async(go)
        if alert is None:
            fail(f"no alert with key {key!r} (fix: see `podium alerts`)", EXIT_USAGE,
                 kind="alert_not_found")
        if as_json:
            from podium.docs import alert_doc

            dump_json({"key": key, "acked": ok, "alert": alert_doc(alert)})
        elif ok:
            print(f"acknowledged {key}")
        else:
            print(f"{key} is {alert.status}" + (" and already acknowledged"
                                                  if alert.acked_at else "") + "; nothing to do")
        raise typer.Exit(EXIT_OK)

    guarded(body, as_json=as_json)


@app.command("serve")
def serve_cmd(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address to bind.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="Port to listen on (1-65535).")
    ] = 8080,
    allowed_hosts: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", metavar="NAME",
                     help="Another name clients may use in Host (repeatable; * for any)."),
    ] = None,
    agents: Annotated[
        Path | None,
        typer.Option(
            "--agents", metavar="FILE", help="Agents file (default $PODIUM_AGENTS, ./podium.yaml)."
        ),
    ] = None,
    alerts: Annotated[
        Path | None,
        typer.Option("--alerts", metavar="FILE", help="Alerts file (default $PODIUM_ALERTS)."),
    ] = None,
    db: DbOpt = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth",
                           help="Serve beyond this machine with no API token (behind a proxy"
                           " that authenticates).")
    ] = False,
    max_joined_agents: Annotated[
        int | None,
        typer.Option("--max-joined-agents", min=1, metavar="N",
                     help="Live agents one token may join (POST /agents); more is refused"
                     " with 409 (default 64)."),
    ] = None,
    max_joined_agents_total: Annotated[
        int | None,
        typer.Option("--max-joined-agents-total", min=1, metavar="N",
                     help="Live joined agents of all tokens together, admin ones included"
                     " (default 256)."),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", metavar="LEVEL",
                          help="critical, error, warning, info, debug or trace.")
    ] = "info",
) -> None:
    """Run the engine as a server: the HTTP API (docs at /docs), /metrics, /healthz;
    resumes runs a dead process left."""

    def body() -> None:
        from podium.server.app import ServerConfig, serve

        serve(host, port, ServerConfig(db=db, agents_file=agents, alerts_file=alerts,
                                       max_joined_agents=max_joined_agents,
                                       max_joined_agents_total=max_joined_agents_total),
              allowed_hosts=allowed_hosts or (), log_level=log_level,
              insecure_no_auth=insecure_no_auth)

    guarded(body)
