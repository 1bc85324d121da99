"""``podium agents``: the registry with live health."""

# Annotations stay evaluated (no ``from __future__ import annotations``): typer reads
# every command's signature at start-up, and string annotations cost a compile each.

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import AgentsOpt, JsonOpt, app
from podium.cli.common import EXIT_OK, dump_json, guarded, run_async

_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "unknown": "dim"}


def _table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    t = report["totals"]
    title = (
        f"agents: {t['agents']} · healthy {t['healthy']} · degraded {t['degraded']} · "
        f"unhealthy {t['unhealthy']} · unknown {t['unknown']} · overall "
        f"[{_STYLE.get(report['overall'], '')}]{report['overall']}[/]"
    )
    if report.get("region"):
        title += f" · region {report['region']}"
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in (
        "agent",
        "capabilities",
        "transport",
        "region",
        "status",
        "latency",
        "in-flight",
        "errors",
        "circuit",
        "detail",
    ):
        table.add_column(col)
    for a in report["agents"]:
        style = _STYLE.get(a["status"], "")
        cap = a["max_concurrency"]
        table.add_row(
            a["id"],
            ", ".join(a["capabilities"]),
            a["transport"],
            a["region"] or "-",
            f"[{style}]{a['status']}[/]",
            "-" if a["latency_ms"] is None else f"{a['latency_ms']:.1f}ms",
            f"{a['inflight']}/{cap if cap else '∞'}",
            f"{a['error_rate']:.0%}",
            a["circuit"],
            (a["detail"] or "")[:50],
        )
    return table


@app.command("agents")
def agents_cmd(
    agents: AgentsOpt = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep checking and redrawing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the agent registry with live health (checks every agent now)."""

    def body() -> None:
        from podium.agents.config import build_registry, find_agents_file

        path = find_agents_file(agents)
        registry, _config, _source = build_registry(Path(path) if path else None)

        async def once() -> dict[str, Any]:
            try:
                await registry.check_health()
                return registry.report()
            finally:
                await registry.aclose()

        async def live() -> None:
            from rich.live import Live

            interval = registry.config.health.interval_s or 2.0
            try:
                await registry.check_health()
                with Live(_table(registry.report()), refresh_per_second=4) as view:
                    while True:
                        await asyncio.sleep(min(interval, 2.0))
                        await registry.check_health()
                        view.update(_table(registry.report()))
            finally:
                await registry.aclose()

        if watch and not as_json:
            # Ctrl-C (or SIGTERM) ends the watch: that is its normal way out.
            with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
                run_async(live)
            raise typer.Exit(EXIT_OK)
        report = run_async(once)
        if as_json:
            dump_json(report)
        elif not report["agents"]:
            print("no agents registered (fix: --agents FILE, podium.yaml, or $PODIUM_AGENTS)")
        else:
            from rich.console import Console

            tty = sys.stdout.isatty()
            Console(file=sys.stdout, width=None if tty else 200, no_color=not tty).print(
                _table(report)
            )
        raise typer.Exit(EXIT_OK)

    guarded(body, as_json=as_json)
