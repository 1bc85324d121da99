"""One trace per run across processes and over the run's life.

- a run continued after an approval, by an engine that has only the store (as
  another process would), is in the run's trace, its new span under the first;
- a run submitted with a context and redriven after a failure: both executions
  side by side under the submitter's span;
- child runs (a ``workflow:`` step, and a ``for_each`` of them) are under their
  parent step's attempt span, their steps under them: one tree;
- ``podium run`` killed with SIGKILL mid-run and ``podium resume`` in another
  process: the resumed spans are in the trace the killed one recorded;
- ``TRACEPARENT=... podium submit`` (untraced) then a traced ``podium resume``;
- PostgreSQL: a run posted to ``podium serve`` with a ``traceparent`` header and
  executed by a ``podium worker``, sub-workflow included, is in the submitter's
  trace.

In-process engines use the SDK's in-memory exporter on a real SQLite file; real
processes export OTLP over HTTP to a collector in the test.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from podium import Engine
from podium.agents.registry import AgentRegistry
from podium.definition.loader import workflow_from_dict
from podium.engine import EngineConfig
from podium.engine.owners import new_owner_id
from podium.observe.tracing import Tracing, current_traceparent, env_traceparent
from podium.store.base import Store
from podium.store.factory import open_store
from tests.conftest import registry_of
from tests.integration.podium_proc import Sandbox, wait_for

OWNER = new_owner_id()
GIVEN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
GIVEN_TRACE, GIVEN_SPAN = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331


@dataclass
class Traced:
    exporter: InMemorySpanExporter
    provider: TracerProvider

    def tracing(self) -> Tracing:
        """A tracing of its own, as each process has: it knows no span of another."""
        return Tracing(self.provider.get_tracer("test"))

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


@pytest.fixture
def traced() -> Traced:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Traced(exporter, provider)


def engine_of(tracing: Tracing, registry: AgentRegistry, store: Store) -> Engine:
    """An engine traced as the runtime wires one (``podium.runtime``); one owner for all
    (a finished run's lease outlives its engine here, in one process)."""
    return Engine(EngineConfig(registry=registry, store=store, observers=(tracing,),
                               traceparent=current_traceparent,
                               span_traceparent=tracing.traceparent_of, owner=OWNER))


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


APPROVAL = {"name": "order", "mode": "sequential", "steps": [
    {"id": "prep", "agent": "prep"},
    {"id": "ok", "approval": {"prompt": "Ship it?"}},
    {"id": "ship", "agent": "ship"}]}


async def test_a_run_continued_after_an_approval_is_one_trace_its_new_span_under_the_first(
        traced: Traced, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'podium.db'}"
    registry = registry_of(prep=lambda t: {"ok": True}, ship=lambda t: {"shipped": True})
    async with engine_of(traced.tracing(), registry, open_store(url)) as engine:
        run = await engine.run(workflow_from_dict(APPROVAL), {})
    assert run.status == "waiting"
    (first,) = traced.spans("run order")
    assert first.parent is None  # no submitter: the run's first span is the trace's root
    assert first.attributes is not None
    assert first.attributes["podium.outcome"] == "waiting"
    # Another engine and tracing: nothing of the first but what the store holds.
    async with engine_of(traced.tracing(), registry, open_store(url)) as engine:
        await engine.signal(run.run_id, "approve:ok", {"approved": True, "by": "ann"})
        done = await (await engine.resume(run.run_id)).result()
        stored = [e.type for e in await engine.store.get_events(run.run_id)]
    assert done.status == "succeeded", done.error
    assert stored.count("run_traced") == 1  # recorded once, at the first start
    (second,) = [s for s in traced.spans("run order") if s is not first]
    assert second.attributes is not None
    assert second.attributes["podium.resumed"] is True
    assert second.context.trace_id == first.context.trace_id
    assert parent_of(second) == first.context.span_id
    (ship,) = traced.spans("step ship")
    assert ship.context.trace_id == first.context.trace_id
    assert parent_of(ship) == second.context.span_id
    assert {s.context.trace_id for s in traced.spans()} == {first.context.trace_id}


async def test_a_submitted_run_redriven_elsewhere_has_both_executions_under_the_submitter(
        traced: Traced, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'podium.db'}"
    calls = {"n": 0}

    def once(task: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("not this time")
        return {"ok": True}

    registry = registry_of(once=once)
    wf = workflow_from_dict({"name": "job", "steps": [{"id": "a", "agent": "once"}]})
    async with engine_of(traced.tracing(), registry, open_store(url)) as engine:
        run = await engine.run(wf, {}, traceparent=GIVEN)
    assert run.status == "failed"
    async with engine_of(traced.tracing(), registry, open_store(url)) as engine:
        done = await (await engine.resume(run.run_id)).result()
        stored = [e.type for e in await engine.store.get_events(run.run_id)]
    assert done.status == "succeeded", done.error
    assert "run_traced" not in stored  # the submitter's context was recorded already
    runs = traced.spans("run job")
    assert len(runs) == 2
    assert {s.context.trace_id for s in traced.spans()} == {GIVEN_TRACE}
    assert [parent_of(s) for s in runs] == [GIVEN_SPAN, GIVEN_SPAN]  # side by side
    steps = traced.spans("step a")
    assert sorted(parent_of(s) or 0 for s in steps) == sorted(s.context.span_id for s in runs)


CHILD = {"name": "child", "mode": "sequential", "steps": [
    {"id": "d", "agent": "double", "input": {"n": "${{ input.n }}"}},
    {"id": "a", "agent": "add"}]}
TREE = {"name": "tree", "workflows": {"child": CHILD}, "steps": [
    {"id": "call", "workflow": "child", "input": {"n": 1}},
    {"id": "each", "workflow": "child", "for_each": "${{ input.ns }}",
     "input": {"n": "${{ item }}"}}]}


def _tree_registry() -> AgentRegistry:
    return registry_of(double=lambda t: {"n": t.input["n"] * 2},
                       add=lambda t: {"n": t.input["n"] + 1})


def check_tree(spans: list[ReadableSpan], run_id: str, children: list[str]) -> None:
    """Every child run's span under its parent step's attempt span, its steps under it,
    and all of it one trace."""
    assert len({s.context.trace_id for s in spans}) == 1, [s.name for s in spans]

    def attr(s: ReadableSpan, key: str) -> Any:
        return None if s.attributes is None else s.attributes.get(key)

    steps = {(attr(s, "podium.run_id"), attr(s, "podium.step")): s
             for s in spans if s.name.startswith("step ")}
    runs = {attr(s, "podium.run_id"): s for s in spans if s.name.startswith("run ")}
    assert sorted(runs) == sorted([run_id, *(f"{run_id}.{c}" for c in children)])
    for key in children:
        child = runs[f"{run_id}.{key}"]
        assert parent_of(child) == steps[(run_id, key)].context.span_id, key
        for step in ("d", "a"):
            assert parent_of(steps[(f"{run_id}.{key}", step)]) == child.context.span_id


async def test_child_runs_are_under_their_parent_steps_attempt_span_in_one_trace(
        traced: Traced, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'podium.db'}"
    async with engine_of(traced.tracing(), _tree_registry(), open_store(url)) as engine:
        run = await engine.run(workflow_from_dict(TREE), {"ns": [1, 2]}, traceparent=GIVEN)
    assert run.status == "succeeded", run.error
    spans = traced.spans()
    check_tree(spans, run.run_id, ["call", "each[0]", "each[1]"])
    assert spans[0].context.trace_id == GIVEN_TRACE
    (top,) = traced.spans("run tree")
    assert parent_of(top) == GIVEN_SPAN


async def test_untraced_engines_record_no_trace_context() -> None:
    async with Engine(EngineConfig(registry=_tree_registry())) as engine:
        run = await engine.run(workflow_from_dict(TREE), {"ns": [1]})
        for rid in (run.run_id, f"{run.run_id}.call", f"{run.run_id}.each[0]"):
            assert await engine.store.trace_context(rid) is None
            assert "run_traced" not in [e.type for e in await engine.store.get_events(rid)]


def test_traceparent_in_the_environment_counts_when_valid_and_a_current_span_wins(
        traced: Traced, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", GIVEN + "-x"):
        monkeypatch.setenv("TRACEPARENT", bad)
        assert env_traceparent() is None, bad
    monkeypatch.setenv("TRACEPARENT", GIVEN.upper())
    assert env_traceparent() == GIVEN
    assert current_traceparent() == GIVEN
    with traced.provider.get_tracer("caller").start_as_current_span("job") as job:
        ctx = job.get_span_context()
        assert current_traceparent() == (
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}")


# --- real processes, exporting OTLP over HTTP to this collector --------------------
@dataclass
class Span:
    name: str
    trace_id: int
    span_id: int
    parent: int | None
    attributes: dict[str, Any]


class _Collector(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Collector:
    bodies: list[bytes]

    def spans(self, name: str | None = None) -> list[Span]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        out = []
        for body in list(self.bodies):
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        attrs = {a.key: getattr(a.value, a.value.WhichOneof("value"))
                                 for a in s.attributes}
                        out.append(Span(s.name, int.from_bytes(s.trace_id),
                                        int.from_bytes(s.span_id),
                                        int.from_bytes(s.parent_span_id) or None, attrs))
        return [s for s in out if name is None or s.name == name]


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    """The processes the sandbox starts from now on export their spans here, at once."""
    bodies: list[bytes] = []
    handler = type("Handler", (_Collector,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT",
                       f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # ms: spans leave as they end
    try:
        yield Collector(bodies)
    finally:
        server.shutdown()
        server.server_close()


def test_a_run_resumed_after_sigkill_goes_on_in_the_trace_the_killed_process_recorded(
        sandbox: Sandbox, collector: Collector) -> None:
    sb = sandbox
    wf = sb.workflow("doomed", {"name": "doomed", "mode": "sequential", "steps": [
        {"id": "a", "agent": "record"},
        {"id": "nap", "agent": "record", "input": {"sleep_ms": [400, 400]}},
        {"id": "b", "agent": "suicide"}]})
    out = sb.podium("run", str(wf), agents=True)
    assert out.returncode == -signal.SIGKILL, out.stderr  # the agent killed its process
    (run_id,) = sb.run_ids()
    (traced,) = [e for e in sb.events(run_id) if e.type == "run_traced"]
    _version, trace_hex, span_hex, _flags = traced.data["traceparent"].split("-")
    trace_id, first_span = int(trace_hex, 16), int(span_hex, 16)
    # What the killed process exported before it died: its steps, under its run span.
    assert wait_for(lambda: collector.spans("step a") != [], 10)
    (a,) = collector.spans("step a")
    assert (a.trace_id, a.parent) == (trace_id, first_span)
    assert collector.spans("run doomed") == []  # open when it died: never exported
    (sb.root / "cured").touch()
    out = sb.podium("resume", run_id)
    assert out.returncode == 0, out.stderr
    (resumed,) = collector.spans("run doomed")
    assert resumed.attributes["podium.resumed"] is True
    assert (resumed.trace_id, resumed.parent) == (trace_id, first_span)
    b = collector.spans("step b")
    assert b
    assert all((s.trace_id, s.parent) == (trace_id, resumed.span_id) for s in b)


def test_traceparent_of_podium_submit_is_the_parent_of_the_process_that_runs_it(
        sandbox: Sandbox, collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox
    wf = sb.workflow("later", {"name": "later", "steps": [{"id": "a", "agent": "record"}]})
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")  # the submitter traces nothing
    monkeypatch.setenv("TRACEPARENT", GIVEN)
    out = sb.podium("submit", str(wf))
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.delenv("TRACEPARENT")
    out = sb.podium("resume", run_id, agents=True)
    assert out.returncode == 0, out.stderr
    (run,) = collector.spans("run later")
    assert (run.trace_id, run.parent) == (GIVEN_TRACE, GIVEN_SPAN)
    assert run.attributes["podium.resumed"] is False  # its first execution
    (a,) = collector.spans("step a")
    assert (a.trace_id, a.parent) == (GIVEN_TRACE, run.span_id)


@pytest.mark.postgres
def test_a_run_posted_with_a_traceparent_and_executed_by_a_worker_is_in_that_trace(
        sandbox: Sandbox, collector: Collector, pg_url: str) -> None:
    from tests.integration.test_api import start

    sb = sandbox
    child = {"name": "kid", "steps": [{"id": "k", "agent": "record"}]}
    definition = {"name": "posted", "workflows": {"kid": child}, "steps": [
        {"id": "a", "agent": "record"},
        {"id": "sub", "workflow": "kid", "depends_on": ["a"]}]}
    api = start(sb, db=pg_url)
    worker = sb.spawn("worker", "--name", "w1", agents=True, db=pg_url)
    posted = api.post("/runs", {"definition": definition}, headers={"traceparent": GIVEN})
    assert posted.status_code == 202, posted.text
    run_id = posted.json()["run_id"]
    assert api.until_status(run_id, "succeeded")["status"] == "succeeded"
    worker.send_signal(signal.SIGTERM)  # a clean stop flushes what is left to export
    assert worker.wait(30) == 0, sb.stderr_of(worker)
    spans = collector.spans()
    assert {s.trace_id for s in spans if s.attributes.get("podium.run_id", "").startswith(
        run_id)} == {GIVEN_TRACE}
    (run,) = collector.spans("run posted")
    assert run.parent == GIVEN_SPAN
    steps = {s.attributes["podium.step"]: s for s in spans
             if s.name.startswith("step ") and s.attributes["podium.run_id"] == run_id}
    assert {k: s.parent for k, s in steps.items()} == {"a": run.span_id, "sub": run.span_id}
    (kid,) = collector.spans("run kid")
    assert (kid.trace_id, kid.parent) == (GIVEN_TRACE, steps["sub"].span_id)
    (k,) = collector.spans("step k")
    assert (k.trace_id, k.parent) == (GIVEN_TRACE, kid.span_id)


@pytest.mark.postgres
def test_a_worker_taking_over_a_dead_workers_run_goes_on_in_the_submitters_trace(
        sandbox: Sandbox, collector: Collector, pg_url: str) -> None:
    from tests.integration.test_api import start

    sb = sandbox
    definition = {"name": "fatal", "mode": "sequential", "steps": [
        {"id": "a", "agent": "record"}, {"id": "b", "agent": "suicide"}]}
    api = start(sb, db=pg_url)
    first = sb.spawn("worker", "--name", "w1", "--lease", "2s", agents=True, db=pg_url)
    posted = api.post("/runs", {"definition": definition}, headers={"traceparent": GIVEN})
    assert posted.status_code == 202, posted.text
    run_id = posted.json()["run_id"]
    assert first.wait(30) == -signal.SIGKILL  # step b killed the worker executing it
    (sb.root / "cured").touch()
    second = sb.spawn("worker", "--name", "w2", "--lease", "2s", agents=True, db=pg_url)
    assert api.until_status(run_id, "succeeded")["status"] == "succeeded"
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, sb.stderr_of(second)
    runs = collector.spans("run fatal")
    assert runs  # the killed worker's run span never left it; the taker's did
    assert all((s.trace_id, s.parent) == (GIVEN_TRACE, GIVEN_SPAN) for s in runs)
    (taken,) = [s for s in runs if s.attributes["podium.resumed"]]
    b = [s for s in collector.spans("step b") if s.parent == taken.span_id]
    assert len(b) == 1
    assert b[0].trace_id == GIVEN_TRACE
