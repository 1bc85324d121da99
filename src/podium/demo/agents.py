"""The demo's agents: plain functions that do real work on the bundled sales data.

Each takes one ``task`` (``run_id``, ``step_id``, ``attempt``,
``idempotency_key``, ``capability``, ``input``) and returns JSON data. The
cheap ones are ``async`` (awaited on the engine's loop); the ones that touch
files are plain functions, which Podium runs in a worker thread. None of them
prints: the CLI owns the terminal.

They are also importable from an agents file, e.g.
``python: podium.demo.agents:collect``.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, TypeGuard

from podium.agents.base import Task
from podium.errors import InvalidInput

__all__ = [
    "FIELDS",
    "KNOWN_REGIONS",
    "SAMPLE_CSV",
    "announce",
    "collect",
    "deliver",
    "forecast",
    "notify",
    "process",
    "publish",
    "report",
    "retract",
    "stage",
    "unstage",
    "validate",
]

FIELDS = ("date", "region", "product", "units", "unit_price")
KNOWN_REGIONS = ("North", "South", "East", "West")
SAMPLE_CSV = Path(__file__).with_name("sales.csv")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --- helpers ----------------------------------------------------------------
def _number(text: str, kind: type[int] | type[float]) -> int | float | str | None:
    """``""`` → None, a number → the number, anything else stays text (validation flags it)."""
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        return text


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be an object, got {type(value).__name__}")
    return value


def _rows(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
        raise InvalidInput("input.rows must be a list of objects (the collect step's rows)")
    return value


def _add(table: dict[str, dict[str, Any]], key: str, units: int, revenue: float) -> None:
    entry = table.setdefault(key, {"units": 0, "revenue": 0.0, "rows": 0})
    entry["units"] += units
    entry["revenue"] += revenue
    entry["rows"] += 1


def _rounded(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Sorted by revenue, highest first, with money rounded to cents."""
    ordered = sorted(table.items(), key=lambda kv: (-kv[1]["revenue"], kv[0]))
    return {k: {**v, "revenue": round(v["revenue"], 2)} for k, v in ordered}


# --- agents -----------------------------------------------------------------
def collect(task: Task) -> dict[str, Any]:
    """data-collection: read the sales CSV named by ``input.source`` into rows.

    Numbers are parsed (``units`` as int, ``unit_price`` as float); an empty
    cell becomes null and an unparsable one stays text, so validation can say
    exactly what is wrong. Each row keeps its ``line`` in the file.
    """
    params = _mapping(task.input or {}, "input")
    source = Path(str(params.get("source") or SAMPLE_CSV)).expanduser()
    try:
        with source.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [f for f in FIELDS if f not in (reader.fieldnames or ())]
            if missing:
                raise InvalidInput(
                    f"{source}: the header lacks column(s) {', '.join(missing)}"
                    f" (expected {','.join(FIELDS)})"
                )
            rows: list[dict[str, Any]] = []
            for raw in reader:
                rows.append({
                    "line": reader.line_num,
                    "date": (raw.get("date") or "").strip(),
                    "region": (raw.get("region") or "").strip(),
                    "product": (raw.get("product") or "").strip(),
                    "units": _number(raw.get("units") or "", int),
                    "unit_price": _number(raw.get("unit_price") or "", float),
                })
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {source} (pass another with -i source=PATH)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"cannot read {source}: {exc}") from None
    return {"source": str(source.resolve()), "count": len(rows), "rows": rows}


async def process(task: Task) -> dict[str, Any]:
    """data-processing: revenue and units by region and by product, and overall.

    Every row with numeric units and price counts (a negative quantity is a
    return and lowers revenue); rows without usable numbers are skipped and
    counted, not guessed at.
    """
    rows = _rows(_mapping(task.input, "input").get("rows"))
    by_region: dict[str, dict[str, Any]] = {}
    by_product: dict[str, dict[str, Any]] = {}
    units_total = 0
    revenue_total = 0.0
    skipped: list[int] = []
    for row in rows:
        units, price = row.get("units"), row.get("unit_price")
        if not (_is_number(units) and _is_number(price)):
            skipped.append(int(row.get("line") or 0))
            continue
        revenue = round(units * price, 2)
        _add(by_region, str(row.get("region") or "(none)"), int(units), revenue)
        _add(by_product, str(row.get("product") or "(none)"), int(units), revenue)
        units_total += int(units)
        revenue_total += revenue
    return {
        "total_revenue": round(revenue_total, 2),
        "total_units": units_total,
        "rows_used": len(rows) - len(skipped),
        "rows_skipped": skipped,
        "by_region": _rounded(by_region),
        "by_product": _rounded(by_product),
    }


def _row_issues(row: Mapping[str, Any], regions: Iterable[str]) -> list[dict[str, Any]]:
    line = row.get("line")
    out: list[dict[str, Any]] = []

    def issue(fld: str, message: str) -> None:
        out.append({"line": line, "field": fld, "message": message})

    for fld in FIELDS:
        value = row.get(fld)
        if value is None or value == "":
            issue(fld, f"missing {fld}")
    units, price = row.get("units"), row.get("unit_price")
    if isinstance(units, str) and units:
        issue("units", f"units {units!r} is not a whole number")
    elif isinstance(units, int) and units < 0:
        issue("units", f"negative units ({units}): a return, or a data-entry error?")
    if isinstance(price, str) and price:
        issue("unit_price", f"unit_price {price!r} is not a number")
    elif _is_number(price) and price <= 0:
        issue("unit_price", f"unit_price must be positive (got {price})")
    region = row.get("region")
    if region and region not in regions:
        issue("region", f"unknown region {region!r}")
    when = row.get("date")
    if when:
        try:
            if not _DATE.match(str(when)):
                raise ValueError(when)
            date.fromisoformat(str(when))
        except ValueError:
            issue("date", f"date {when!r} is not YYYY-MM-DD")
    return out


async def validate(task: Task) -> dict[str, Any]:
    """data-validation: list every suspicious cell; never fails the run for bad data."""
    params = _mapping(task.input, "input")
    rows = _rows(params.get("rows"))
    regions = params.get("regions") or KNOWN_REGIONS
    issues: list[dict[str, Any]] = []
    for row in rows:
        issues.extend(_row_issues(row, regions))
    return {
        "count": len(issues),
        "rows_checked": len(rows),
        "rows_with_issues": len({i["line"] for i in issues}),
        "issues": issues,
    }


def _table(title: str, data: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [f"| {title} | Units | Revenue | Rows |", "|---|---:|---:|---:|"]
    for key, v in data.items():
        lines.append(f"| {key} | {v['units']} | {_money(v['revenue'])} | {v['rows']} |")
    return lines


def render_report(params: Mapping[str, Any]) -> str:
    """The Markdown text of the report (a pure function, so it is easy to test)."""
    totals = _mapping(params.get("totals"), "input.totals")
    checks = _mapping(params.get("validation"), "input.validation")
    issues = checks.get("issues") or []
    skipped = totals.get("rows_skipped") or []
    lines = [
        "# Sales report",
        "",
        f"Source: `{params.get('source', '?')}`  ",
        f"Podium run: `{params.get('run_id', '?')}`",
        "",
        "## Totals",
        "",
        f"- Revenue: **{_money(totals['total_revenue'])}**",
        f"- Units: **{totals['total_units']}**",
        f"- Rows used: {totals['rows_used']}"
        + (f" (skipped line(s) {', '.join(map(str, skipped))}: no usable numbers)" if skipped
           else ""),
        f"- Regions: {len(totals['by_region'])}, products: {len(totals['by_product'])}",
        "",
        "## Revenue by region",
        "",
        *_table("Region", totals["by_region"]),
        "",
        "## Revenue by product",
        "",
        *_table("Product", totals["by_product"]),
        "",
        f"## Data issues ({len(issues)})",
        "",
    ]
    if issues:
        lines += ["| Line | Field | Issue |", "|---:|---|---|"]
        lines += [f"| {i['line']} | {i['field']} | {i['message']} |" for i in issues]
    else:
        lines.append("No issues found.")
    lines.append("")
    return "\n".join(lines)


def report(task: Task) -> dict[str, Any]:
    """report-generation: write the Markdown report to ``input.path``; return where and what.

    The file is replaced atomically, so a retried attempt never leaves half a
    report behind.
    """
    params = _mapping(task.input, "input")
    path = Path(str(params.get("path") or "podium-demo-report.md")).expanduser().resolve()
    text = render_report({**params, "run_id": params.get("run_id") or task.run_id})
    data = text.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # mkstemp makes the file private; a report is an ordinary file.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except PermissionError as exc:
        raise InvalidInput(f"cannot write the report to {path}: {exc.strerror}") from None
    totals = params["totals"]
    return {
        "path": str(path),
        "bytes": len(data),
        "revenue": totals["total_revenue"],
        "units": totals["total_units"],
        "regions": len(totals["by_region"]),
        "issues": _mapping(params.get("validation"), "input.validation").get("count", 0),
    }


async def notify(task: Task) -> dict[str, Any]:
    """notification: compose the message a person would get (returned, not printed)."""
    rep = _mapping(_mapping(task.input, "input").get("report"), "input.report")
    n = rep.get("issues", 0)
    message = (
        f"Report ready at {rep['path']}: revenue {_money(rep['revenue'])}"
        f" across {rep['regions']} regions, {n} data issue{'s' if n != 1 else ''}"
    )
    return {"channel": "console", "message": message}


async def forecast(task: Task) -> dict[str, Any]:
    """forecasting: next month's revenue from the average day of the collected rows.

    Deliberately naive (a mean, not a model): the demo is about the orchestration.
    """
    rows = _rows(_mapping(task.input, "input").get("rows"))
    by_day: dict[str, float] = {}
    for row in rows:
        units, price = row.get("units"), row.get("unit_price")
        if _is_number(units) and _is_number(price) and row.get("date"):
            by_day[str(row["date"])] = by_day.get(str(row["date"]), 0.0) + units * price
    per_day = sum(by_day.values()) / len(by_day) if by_day else 0.0
    return {"days_seen": len(by_day), "revenue_per_day": round(per_day, 2),
            "next_30_days": round(per_day * 30, 2)}


async def deliver(task: Task) -> dict[str, Any]:
    """delivery: hand one message to one recipient (``input.to``); returned, not sent."""
    params = _mapping(task.input, "input")
    return {"to": str(params.get("to")), "message": str(params.get("message") or "")}


# --- the publishing run (its last step fails: the first two are compensated) ---
# The "warehouse" is a folder of the caller's choosing; every action leaves a file
# there, so what a compensation undid can be seen, not only read in the events.
def _warehouse(task: Task) -> Path:
    folder = Path(str(_mapping(task.input, "input").get("warehouse") or ".")).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stage(task: Task) -> dict[str, Any]:
    """warehouse: upload the report as a staged batch (compensated by ``unstage``)."""
    batch = f"batch-{task.run_id[:8]}"
    path = _warehouse(task) / f"{batch}.staged"
    path.write_text(str(_mapping(task.input, "input").get("report") or ""), encoding="utf-8")
    return {"batch": batch, "path": str(path)}


def unstage(task: Task) -> dict[str, Any]:
    """warehouse: compensation of ``stage``: delete the staged batch (idempotent)."""
    path = Path(str(_mapping(task.input, "input").get("path") or ""))
    existed = path.is_file()
    path.unlink(missing_ok=True)
    return {"deleted": str(path), "existed": existed}


def announce(task: Task) -> dict[str, Any]:
    """notification: post "report published" to the team's channel (compensated by ``retract``)."""
    path = _warehouse(task) / "announcements.txt"
    batch = _mapping(task.input, "input").get("batch")
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"{batch}: the sales report is published\n")
    return {"channel": str(path), "batch": batch}


def retract(task: Task) -> dict[str, Any]:
    """notification: compensation of ``announce``: post a correction under it."""
    params = _mapping(task.input, "input")
    with Path(str(params.get("channel"))).open("a", encoding="utf-8") as fh:
        fh.write(f"{params.get('batch')}: retracted, the publication was rolled back\n")
    return {"retracted": params.get("batch")}


def publish(task: Task) -> dict[str, Any]:
    """warehouse: make the staged batch live. The demo's warehouse refuses it, always:
    the schema it wants is newer than the report's, so no retry can help."""
    batch = _mapping(task.input, "input").get("batch")
    raise InvalidInput(f"the warehouse refused {batch}: it expects schema v3, the report"
                       " is v2")
