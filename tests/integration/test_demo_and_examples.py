"""The bundled demo and the examples/ folder run end to end through the Python API.

The demo's report is checked against totals computed here, independently,
straight from the CSV; every example is run from its real files (workflow and
agents file) and checked for status, per-step status and attempts, output,
and the order of events that shows what the mode promises.
"""

from __future__ import annotations

import asyncio
import csv
import fnmatch
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import podium.demo as demo
from podium import Engine, InputError, load_workflow
from podium.agents import AgentRegistry
from podium.agents.config import build_registry
from podium.definition.plan import compile_plan
from podium.events import (
    Event,
    RunStarted,
    StepAttemptFailed,
    StepRetryScheduled,
    StepStarted,
    StepSucceeded,
)
from podium.state import RunRecord

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


async def run_workflow(
    registry: AgentRegistry, path: Path, inputs: Any = None
) -> tuple[RunRecord, list[Event]]:
    """Run one workflow file to the end; return its record and every event, in order."""
    events: list[Event] = []
    async with Engine(registry=registry) as engine:
        engine.bus.subscribe(events.append)
        run = await engine.run(load_workflow(path), inputs)
    return run, events


def index_of(events: list[Event], kind: type[Event], step: str, attempt: int = 1) -> int:
    for i, e in enumerate(events):
        if isinstance(e, kind) and getattr(e, "step_id", None) == step and (
            getattr(e, "attempt", attempt) == attempt
        ):
            return i
    raise AssertionError(f"no {kind.__name__} for step {step!r} attempt {attempt}")


def money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,.2f}"


# --- the demo ---------------------------------------------------------------


def expected_totals(path: Path) -> dict[str, Any]:
    """What the report must say, computed here with exact decimals, not with the demo's code."""
    by_region: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), 0])
    by_product: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), 0])
    units_total, revenue_total, skipped = 0, Decimal(0), []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            try:
                units, price = int(row["units"]), Decimal(row["unit_price"])
            except (ValueError, ArithmeticError):
                skipped.append(reader.line_num)
                continue
            for table, key in ((by_region, row["region"]), (by_product, row["product"])):
                table[key][0] += units
                table[key][1] += units * price
                table[key][2] += 1
            units_total += units
            revenue_total += units * price
    return {"units": units_total, "revenue": revenue_total, "skipped": skipped,
            "by_region": dict(by_region), "by_product": dict(by_product)}


async def test_demo_report_matches_totals_computed_independently_from_the_csv(
    tmp_path: Path,
) -> None:
    """The demo succeeds, writes the report where asked, and every number in it is right."""
    report_path = tmp_path / "out" / "report.md"
    run, _ = await run_workflow(demo.registry(), demo.WORKFLOW_PATH,
                                demo.default_input(str(report_path)))

    assert run.status == "succeeded", run.error
    # The fleet misbehaves on purpose, the same way each time: the collector's upstream
    # is busy twice; eu-worker dies under process and validate, retried on us-worker.
    assert {k: (s.status, s.attempts) for k, s in run.steps.items()} == {
        "collect": ("succeeded", demo.COLLECTOR_FAILURES + 1), "process": ("succeeded", 2),
        "validate": ("succeeded", 2), "report": ("succeeded", 1),
        "forecast": ("succeeded", 1), "notify": ("succeeded", 1),
        "deliver": ("succeeded", 0),  # a map: its items made the attempts
        **{f"deliver[{i}]": ("succeeded", 1) for i in range(3)},
        "flag_issues": ("succeeded", 1), "all_clear": ("skipped", 0)}
    assert (run.steps["process"].agent_id, run.steps["validate"].agent_id) == (
        "us-worker", "us-worker")
    assert run.steps["forecast"].agent_id == "eu-worker"  # back, and its circuit closed
    want = expected_totals(demo.SAMPLE_CSV)
    assert len(want["by_region"]) == 4
    assert want["skipped"] == [33]  # the row with no units

    text = report_path.read_text(encoding="utf-8")
    assert text.startswith("# Sales report")
    assert f"- Revenue: **{money(want['revenue'])}**" in text
    assert f"- Units: **{want['units']}**" in text
    assert f"Podium run: `{run.run_id}`" in text
    for name, (units, revenue, rows) in [*want["by_region"].items(),
                                         *want["by_product"].items()]:
        assert f"| {name} | {units} | {money(revenue)} | {rows} |" in text, name

    out = run.output
    assert out["report"] == str(report_path.resolve())
    assert Decimal(str(out["revenue"])) == want["revenue"].quantize(Decimal("0.01"))
    assert out["units"] == want["units"]
    assert out["regions"] == 4
    assert run.steps["report"].output["bytes"] == len(text.encode("utf-8"))
    assert out["message"] == (
        f"Report ready at {report_path.resolve()}: revenue {money(want['revenue'])}"
        " across 4 regions, 2 data issues"
    )


async def test_demo_flags_suspicious_rows_in_the_report_without_failing_the_run(
    tmp_path: Path,
) -> None:
    """The negative and the missing quantity are listed as issues; the run still succeeds."""
    report_path = tmp_path / "report.md"
    run, _ = await run_workflow(demo.registry(), demo.WORKFLOW_PATH,
                                demo.default_input(str(report_path)))

    assert run.status == "succeeded"
    checks = run.steps["validate"].output
    assert checks["count"] == run.output["issues"] == 2
    assert checks["rows_checked"] == 40
    assert [(i["line"], i["field"]) for i in checks["issues"]] == [(20, "units"), (33, "units")]
    text = report_path.read_text(encoding="utf-8")
    assert "## Data issues (2)" in text
    assert "| 20 | units | negative units (-3)" in text
    assert "| 33 | units | missing units |" in text


async def test_demo_reads_the_csv_named_by_the_source_input(tmp_path: Path) -> None:
    """`source` picks the data: totals follow that file; bad region and date are flagged."""
    source = tmp_path / "q2.csv"
    source.write_text(
        "date,region,product,units,unit_price\n"
        "2024-05-01,North,Widget,2,10.50\n"
        "2024-05-02,Atlantis,Widget,1,10.50\n"
        "02/05/2024,South,Gadget,3,4.00\n",
        encoding="utf-8",
    )
    inputs = {"source": str(source), "report_path": str(tmp_path / "q2.md")}
    run, _ = await run_workflow(demo.registry(), demo.WORKFLOW_PATH, inputs)

    assert run.status == "succeeded", run.error
    assert run.output["revenue"] == 43.5
    assert run.output["units"] == 6
    assert run.output["regions"] == 3
    issues = run.steps["validate"].output["issues"]
    assert [(i["line"], i["field"]) for i in issues] == [(3, "region"), (4, "date")]
    assert "unknown region 'Atlantis'" in (tmp_path / "q2.md").read_text(encoding="utf-8")


async def test_demo_missing_csv_fails_once_with_invalid_input_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    """A missing source file is bad input: once the busy upstream answers, it is not
    retried, it is named in the error, and nothing else runs."""
    inputs = {"source": str(tmp_path / "nope.csv"), "report_path": str(tmp_path / "r.md")}
    run, _ = await run_workflow(demo.registry(), demo.WORKFLOW_PATH, inputs)

    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "invalid_input"
    assert "nope.csv" in run.error.message
    assert (run.steps["collect"].status, run.steps["collect"].attempts) == (
        "failed", demo.COLLECTOR_FAILURES + 1)
    assert {run.steps[s].status for s in ("process", "validate", "report", "forecast",
                                          "notify", "deliver", "flag_issues",
                                          "all_clear")} == {"skipped"}
    assert not (tmp_path / "r.md").exists()


async def test_demo_requires_its_input_by_schema() -> None:
    """Without source/report_path the run is refused up front (input_schema), not half-run."""
    with pytest.raises(InputError, match="report_path"):
        await run_workflow(demo.registry(), demo.WORKFLOW_PATH, {"source": "x.csv"})


def test_demo_workflow_is_the_canonical_dependency_pipeline() -> None:
    """collect → (process ∥ validate) → report → forecast → notify → deliver (a map), and
    the two branches under validate; mode dag, every capability registered, and the
    publishing run's too."""
    wf = load_workflow(demo.WORKFLOW_PATH)
    assert wf.mode == "dag"
    plan = compile_plan(wf)
    deps = {n.id: sorted(plan.nodes[d].id for d in n.deps) for n in plan.nodes}
    assert deps == {"collect": [], "process": ["collect"], "validate": ["collect"],
                    "report": ["process", "validate"], "forecast": ["report"],
                    "notify": ["forecast"], "deliver": ["notify"],
                    "flag_issues": ["validate"], "all_clear": ["validate"]}
    assert all(n.retry and n.retry[0].max_attempts == 4 for n in plan.nodes if n.id != "notify")
    assert plan.by_id["notify"].retry[0].max_attempts == 5
    assert plan.by_id["collect"].timeout_s == 10.0
    Engine(registry=demo.registry()).check_agents(plan)  # raises if a capability is missing
    publish = load_workflow(demo.PUBLISH_PATH)
    assert publish.on_failure == "compensate"
    Engine(registry=demo.registry()).check_agents(compile_plan(publish))


def test_demo_default_input_points_at_bundled_csv_and_cwd_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """default_input() uses the bundled CSV and ./podium-demo-report.md, made absolute."""
    monkeypatch.chdir(tmp_path)
    assert demo.default_input() == {
        "source": str(demo.SAMPLE_CSV),
        "report_path": str(tmp_path.resolve() / "podium-demo-report.md"),
    }
    assert demo.default_input("sub/r.md")["report_path"] == str(tmp_path.resolve() / "sub/r.md")


def test_demo_data_files_are_shipped_as_package_data() -> None:
    """The workflow and CSV exist and match pyproject's package-data globs, so wheels carry them."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["podium"]
    pkg_root = Path(demo.__file__).resolve().parents[1]
    for f in (demo.WORKFLOW_PATH, demo.PUBLISH_PATH, demo.SAMPLE_CSV):
        assert f.is_file()
        rel = f.resolve().relative_to(pkg_root).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


# --- the examples -----------------------------------------------------------


@pytest.fixture(scope="module")
def examples_registry() -> Iterator[AgentRegistry]:
    """The registry the CLI would build from examples/podium.yaml (without entry points)."""
    registry, config, source = build_registry(
        EXAMPLES / "podium.yaml", entry_points_too=False, decorated_too=False
    )
    assert config is not None
    assert source["agents_file"] == str(EXAMPLES / "podium.yaml")
    yield registry
    # The loader put examples/ on sys.path and imported its `agents` module; tidy up.
    if str(EXAMPLES) in sys.path:
        sys.path.remove(str(EXAMPLES))
    sys.modules.pop("agents", None)


@pytest.mark.parametrize("name", ["sequential", "parallel", "dag", "flaky", "failing", "router",
                                  "map", "summarise-page", "subflow", "nightly", "approval"])
def test_every_example_validates_and_its_agents_are_registered(
    name: str, examples_registry: AgentRegistry
) -> None:
    """Each example file loads cleanly and podium.yaml provides every capability it names."""
    plan = compile_plan(load_workflow(EXAMPLES / f"{name}.yaml"))
    Engine(registry=examples_registry).check_agents(plan, source=f"{name}.yaml")


async def test_sequential_example_chains_steps_and_passes_earlier_results(
    examples_registry: AgentRegistry,
) -> None:
    """fetch → clean → summarise in order; summarise sees fetch's title and clean's text."""
    run, events = await run_workflow(examples_registry, EXAMPLES / "sequential.yaml",
                                     {"url": "https://example.com/podium"})

    assert run.status == "succeeded", run.error
    assert [(k, s.status, s.attempts) for k, s in run.steps.items()] == [
        ("fetch", "succeeded", 1), ("clean", "succeeded", 1), ("summarise", "succeeded", 1)]
    assert index_of(events, StepSucceeded, "fetch") < index_of(events, StepStarted, "clean")
    assert index_of(events, StepSucceeded, "clean") < index_of(events, StepStarted, "summarise")
    words = run.steps["clean"].output["words"]
    assert "<" not in run.steps["clean"].output["text"]
    assert "trackVisit" not in run.steps["clean"].output["text"]
    assert run.output["headline"] == f"Podium in five minutes ({words} words)"
    assert run.output["summary"].startswith("Podium runs workflows of agents. Each step")
    assert "podium" in run.output["keywords"]


async def test_router_example_takes_one_branch_or_the_other(
    examples_registry: AgentRegistry,
) -> None:
    """A known customer goes straight to a quote; with screen=true, through the screen
    first; the receipt joins whichever branch ran, and the other is skipped, saying why."""
    run, _ = await run_workflow(examples_registry, EXAMPLES / "router.yaml", {})
    assert run.status == "succeeded", run.error
    assert {k: s.status for k, s in run.steps.items()} == {
        "load": "succeeded", "screen": "skipped", "quote_screened": "skipped",
        "quote_trusted": "succeeded", "receipt": "succeeded"}
    assert run.steps["screen"].error is not None
    assert run.steps["screen"].error.type == "condition_false"
    assert run.output["quote"]["screened"] is None
    assert run.output["quote"]["trusted"]["total"] == 158.65

    run, _ = await run_workflow(examples_registry, EXAMPLES / "router.yaml", {"screen": True})
    assert run.status == "succeeded", run.error
    assert {k: s.status for k, s in run.steps.items()} == {
        "load": "succeeded", "screen": "succeeded", "quote_screened": "succeeded",
        "quote_trusted": "skipped", "receipt": "succeeded"}
    assert run.output["screened"] == {"score": 0.05, "model": "rules-v2"}
    assert run.output["receipt"]["published"] == "A-1001 = 128.98"


async def test_map_example_fetches_cleans_and_summarises_every_page(
    examples_registry: AgentRegistry,
) -> None:
    """Three maps in a row, each over the one before; results in input order, and a
    page that does not exist fails its fetch item, so the fetch step (no tolerate)."""
    run, _ = await run_workflow(examples_registry, EXAMPLES / "map.yaml", {})
    assert run.status == "succeeded", run.error
    assert [o["summary"] for o in run.output] == [
        "Podium in five minutes Podium runs workflows of agents.",
        "Retry transient errors, not bad input."]
    assert run.steps["fetch[1]"].output["url"] == "https://example.com/retries"
    urls = ["https://example.com/retries", "https://example.com/nope"]
    run, _ = await run_workflow(examples_registry, EXAMPLES / "map.yaml", {"urls": urls})
    assert run.status == "failed"
    assert run.steps["fetch"].error is not None
    message = run.steps["fetch"].error.message
    assert "1 of 2 items failed (none may): items 1; item 1: 404" in message
    assert run.steps["fetch[0]"].status == "succeeded"


async def test_subflow_example_runs_one_child_run_per_page(
    examples_registry: AgentRegistry,
) -> None:
    """summarise-page.yaml, found beside subflow.yaml, runs once per URL as a child run
    (RUN.pages[i]); the parent's step gets each child's output, in order."""
    run, events = await run_workflow(examples_registry, EXAMPLES / "subflow.yaml", {})
    assert run.status == "succeeded", run.error
    assert [p["summary"] for p in run.output["pages"]] == [
        "Podium runs workflows of agents.", "Retry transient errors, not bad input."]
    started = [e.run_id for e in events if isinstance(e, RunStarted)]
    assert started == [run.run_id, f"{run.run_id}.pages[0]", f"{run.run_id}.pages[1]"]
    assert load_workflow(EXAMPLES / "subflow.yaml").workflows["summarise-page"].mode == \
        "sequential"


async def test_nightly_example_fires_from_its_schedule(
    examples_registry: AgentRegistry,
) -> None:
    """The nightly example on a cron schedule: when its slot comes (on the store's clock),
    the scheduler starts its run, with the input the schedule keeps, once."""
    from podium.scheduler import Scheduler, next_slot, slot_run_id
    from podium.store.base import ScheduleRecord
    from podium.store.memory import MemoryStore

    now = [1_800_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    workflow = load_workflow(EXAMPLES / "nightly.yaml")
    schedule = ScheduleRecord(id="nightly", workflow=workflow.name,
                              definition=workflow.to_dict(), input={"pair": "EUR/USD"},
                              cron="0 2 * * *", tz="Europe/Lisbon", created_at=now[0])
    schedule.next_at = next_slot(schedule, now[0])
    async with Engine(registry=examples_registry, store=store) as engine:
        await store.add_schedule(schedule)
        scheduler = Scheduler(engine, store, lead=None, start_runs=True)
        await scheduler.round()
        assert scheduler.fired == []
        now[0] = schedule.next_at + 1
        await scheduler.round()
        await scheduler.round()
        assert scheduler.fired == [slot_run_id("nightly", schedule.next_at)]
        run = await engine.store.get_run(scheduler.fired[0])
        for _ in range(100):
            if run.status == "succeeded":
                break
            await asyncio.sleep(0.01)
            run = await engine.store.get_run(scheduler.fired[0])
        assert run.status == "succeeded", run.error
        assert run.output == {"published": "EUR/USD = 1.08", "channel": "#fx-rates"}


async def test_approval_example_waits_then_publishes_what_was_approved(
    examples_registry: AgentRegistry,
) -> None:
    """The run waits at the approval (nobody holds it), an approval is sent, and the
    resumed run publishes the quote; a rejection fails the step instead."""
    async with Engine(registry=examples_registry) as engine:
        run = await engine.run(load_workflow(EXAMPLES / "approval.yaml"), {})
        assert run.status == "waiting"
        assert run.steps["approve"].status == "waiting"
        await engine.signal(run.run_id, "approve:approve",
                            {"approved": True, "by": "ann", "data": {"note": "ok"}})
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "succeeded", done.error
        assert done.output == {"published": "A-1001 = 158.65", "channel": "#fx-rates"}
        run = await engine.run(load_workflow(EXAMPLES / "approval.yaml"), {})
        await engine.signal(run.run_id, "approve:approve",
                            {"approved": False, "by": "bob", "reason": "too dear"})
        done = await (await engine.resume(run.run_id)).result()
        assert done.status == "failed"
        assert done.steps["approve"].error is not None
        assert done.steps["approve"].error.message == "rejected by bob: too dear"


async def test_sequential_example_refuses_a_run_without_its_url(
    examples_registry: AgentRegistry,
) -> None:
    """The url input is required by input_schema; the error says how to pass it."""
    with pytest.raises(InputError, match=r"'url' is a required property"):
        await run_workflow(examples_registry, EXAMPLES / "sequential.yaml", {})


async def test_parallel_example_starts_every_lookup_at_once_and_collects_results(
    examples_registry: AgentRegistry,
) -> None:
    """All four lookups start before any finishes; the output gathers each one's result."""
    run, events = await run_workflow(examples_registry, EXAMPLES / "parallel.yaml")

    assert run.status == "succeeded", run.error
    steps = ["weather", "exchange-rate", "timezone", "holidays"]
    assert {k: (s.status, s.attempts) for k, s in run.steps.items()} == dict.fromkeys(
        steps, ("succeeded", 1))
    last_start = max(index_of(events, StepStarted, s) for s in steps)
    first_done = min(index_of(events, StepSucceeded, s) for s in steps)
    assert last_start < first_done
    assert run.output == {
        "city": "Lisbon",
        "forecast": "sunny, 24°C",
        "eur_usd": 1.08,
        "timezone": "Europe/Lisbon",
        "public_holidays": ["2024-06-10", "2024-06-13"],
    }


async def test_dag_example_runs_both_branches_of_the_diamond_before_the_join(
    examples_registry: AgentRegistry,
) -> None:
    """fraud (slow) and tax (fast) overlap, tax finishes first, decide waits for both."""
    run, events = await run_workflow(examples_registry, EXAMPLES / "dag.yaml")

    assert run.status == "succeeded", run.error
    assert {k: (s.status, s.attempts) for k, s in run.steps.items()} == dict.fromkeys(
        ("load", "fraud", "tax", "decide"), ("succeeded", 1))
    fraud_start, tax_start = (index_of(events, StepStarted, s) for s in ("fraud", "tax"))
    fraud_done, tax_done = (index_of(events, StepSucceeded, s) for s in ("fraud", "tax"))
    assert max(fraud_start, tax_start) < tax_done < fraud_done
    assert index_of(events, StepStarted, "decide") > fraud_done
    subtotal = Decimal("89.00") + 2 * Decimal("19.99")
    total = subtotal + (subtotal * Decimal("0.23")).quantize(Decimal("0.01"))
    assert run.output == {
        "order_id": "A-1001",
        "approved": True,
        "charge": float(total),
        "reason": "fraud score 0.05 under the limit 0.5",
    }


async def test_flaky_example_succeeds_on_the_third_attempt_after_backoff(
    examples_registry: AgentRegistry,
) -> None:
    """Two `unavailable` failures, retries after 100 ms then 200 ms, success on attempt 3."""
    run, events = await run_workflow(examples_registry, EXAMPLES / "flaky.yaml")

    assert run.status == "succeeded", run.error
    assert (run.steps["quote"].status, run.steps["quote"].attempts) == ("succeeded", 3)
    assert (run.steps["publish"].status, run.steps["publish"].attempts) == ("succeeded", 1)
    failures = [e for e in events if isinstance(e, StepAttemptFailed)]
    assert [(e.step_id, e.attempt, e.error.type) for e in failures] == [
        ("quote", 1, "unavailable"), ("quote", 2, "unavailable")]
    assert "503" in failures[0].error.message
    retries = [e for e in events if isinstance(e, StepRetryScheduled)]
    assert [e.attempt for e in retries] == [2, 3]
    assert [e.delay_s for e in retries] == pytest.approx([0.1, 0.2])
    assert run.output == {"published": "EUR/USD = 1.08", "attempts_needed": 3}
    assert run.duration_s is not None
    assert run.duration_s >= 0.3


async def test_failing_example_fails_once_with_its_error_and_skips_downstream(
    examples_registry: AgentRegistry,
) -> None:
    """invalid_input is not retried despite max_attempts 3; receipt is skipped; run failed."""
    run, events = await run_workflow(examples_registry, EXAMPLES / "failing.yaml")

    assert run.status == "failed"
    assert (run.steps["order"].status, run.steps["order"].attempts) == ("succeeded", 1)
    charge = run.steps["charge"]
    assert (charge.status, charge.attempts) == ("failed", 1)
    assert charge.error is not None
    assert charge.error.type == "invalid_input"
    assert charge.error.message == (
        "card ending 4242 expired in 2023-01; ask the customer for another card")
    assert (run.steps["receipt"].status, run.steps["receipt"].attempts) == ("skipped", 0)
    assert not any(isinstance(e, StepRetryScheduled) for e in events)
    assert run.error is not None
    assert run.error.type == "invalid_input"
    assert run.error.message == (
        "step 'charge' failed after 1 attempt: card ending 4242 expired in 2023-01;"
        " ask the customer for another card")
    assert run.output is None
