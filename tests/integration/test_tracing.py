"""OpenTelemetry traces: one trace per run, a span per attempt under the run's span,
retries as events, the W3C ``traceparent`` carried to a real HTTP agent, and a run's
parent taken from its submitter or from the caller's current span. With the SDK's
in-memory exporter; and end to end, ``podium run`` exporting OTLP over HTTP to a
collector on 127.0.0.1 when the ``OTEL_*`` variables say so.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from podium import Engine, Task
from podium.agents.base import set_trace_headers, trace_headers
from podium.agents.http import HttpAgent
from podium.agents.python import PythonAgent
from podium.agents.registry import AgentRegistry
from podium.definition.loader import workflow_from_dict
from podium.engine import EngineConfig
from podium.errors import Unavailable
from podium.observe.tracing import Tracing, current_traceparent
from tests.integration.podium_proc import Sandbox


@pytest.fixture
def traced() -> Iterator[tuple[Tracing, InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider.get_tracer("test"))
    set_trace_headers(lambda t: tracing.headers_for(t.run_id, t.step_id, t.attempt))
    try:
        yield tracing, exporter, provider
    finally:
        set_trace_headers(None)


class _Seen(BaseHTTPRequestHandler):
    """An HTTP agent (the protocol: POST /invoke) answering with the traceparent it got."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        body = json.dumps({"output": {"traceparent": self.headers.get("traceparent")}})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_agent_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Seen)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name),
                  key=lambda s: s.attributes.get("podium.attempt", 0) if s.attributes else 0)


async def test_a_run_is_one_trace_with_an_attempt_span_each_and_retries_as_events(
        traced: tuple[Tracing, InMemorySpanExporter, TracerProvider],
        http_agent_url: str) -> None:
    tracing, exporter, _provider = traced
    calls = {"n": 0}

    async def flaky(task: Task) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Unavailable("not yet")
        return {"ok": True}

    registry = AgentRegistry()
    registry.register(PythonAgent(flaky, id="flaky", capabilities=["flaky"]))
    registry.register(HttpAgent(http_agent_url, id="remote", capabilities=["remote"]))
    wf = workflow_from_dict({"name": "traced", "version": 2, "steps": [
        {"id": "a", "agent": "flaky",
         "retry": {"max_attempts": 3, "initial_delay": "10ms", "jitter": "none"}},
        {"id": "b", "agent": "remote", "depends_on": ["a"]}]})
    try:
        async with Engine(EngineConfig(registry=registry, observers=(tracing,))) as engine:
            run = await engine.run(wf, {})
    finally:
        await registry.aclose()
    assert run.status == "succeeded", run.error
    spans = exporter.get_finished_spans()
    (root,) = by_name(spans, "run traced")
    attempts = by_name(spans, "step a")
    (remote,) = by_name(spans, "step b")
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}  # one trace
    assert root.parent is None
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id
               for s in [*attempts, remote])
    assert [s.attributes["podium.attempt"] for s in attempts] == [1, 2]
    assert attempts[0].status.status_code == StatusCode.ERROR
    assert attempts[0].attributes["podium.error_type"] == "unavailable"
    assert attempts[1].attributes["podium.outcome"] == "succeeded"
    assert root.attributes["podium.workflow"] == "traced"
    assert root.attributes["podium.workflow.version"] == "2"
    assert root.attributes["podium.outcome"] == "succeeded"
    (retry,) = [e for e in root.events if e.name == "retry"]
    assert retry.attributes["podium.step"] == "a"
    assert retry.attributes["podium.attempt"] == 2
    # The HTTP agent got the attempt's own context: the trace, and b's span as parent.
    got = run.steps["b"].output["traceparent"]
    version, trace_id, parent_id, flags = got.split("-")
    assert (version, trace_id, parent_id) == (
        "00", f"{remote.context.trace_id:032x}", f"{remote.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


async def test_a_runs_parent_is_its_submitters_or_the_callers_current_span(
        traced: tuple[Tracing, InMemorySpanExporter, TracerProvider]) -> None:
    tracing, exporter, provider = traced
    registry = AgentRegistry()
    registry.register(PythonAgent(lambda t: 1, id="one", capabilities=["one"]))
    wf = workflow_from_dict({"name": "child", "steps": [{"id": "a", "agent": "one"}]})
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with Engine(EngineConfig(registry=registry, observers=(tracing,),
                                   traceparent=current_traceparent)) as engine:
        await engine.run(wf, {}, traceparent=given)
        with provider.get_tracer("caller").start_as_current_span("job") as job:
            await engine.run(wf, {})
    runs = by_name(exporter.get_finished_spans(), "run child")
    assert runs[0].context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert runs[0].parent is not None
    assert runs[0].parent.span_id == 0xB7AD6B7169203331
    assert runs[1].context.trace_id == job.get_span_context().trace_id
    assert runs[1].parent is not None
    assert runs[1].parent.span_id == job.get_span_context().span_id


async def test_untraced_runs_make_no_span_and_no_header() -> None:
    set_trace_headers(None)
    registry = AgentRegistry()
    registry.register(PythonAgent(lambda t: 1, id="one", capabilities=["one"]))
    wf = workflow_from_dict({"name": "plain", "steps": [{"id": "a", "agent": "one"}]})
    async with Engine(EngineConfig(registry=registry)) as engine:
        run = await engine.run(wf, {})
    assert run.status == "succeeded"
    assert trace_headers(Task(run.run_id, "a", 1, "k", "one", None)) is None
    events = [e.to_dict() for e in await engine.store.get_events(run.run_id)]
    assert "traceparent" not in events[0]  # untraced runs read as they always did


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_podium_run_exports_otlp_when_the_otel_variables_say_so(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT",
                           f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "podium-test")
        wf = sandbox.workflow("two", {"name": "two", "steps": [
            {"id": "a", "agent": "record"}, {"id": "b", "agent": "record",
                                            "depends_on": ["a"]}]})
        out = sandbox.podium("run", str(wf), "--json", agents=True)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] == "succeeded"  # stdout stays one document
    finally:
        server.shutdown()
        server.server_close()
    names = []
    services = set()
    for body in _Collector.bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            services |= {a.value.string_value for a in rs.resource.attributes
                         if a.key == "service.name"}
            names += [s.name for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == ["run two", "step a", "step b"]
    assert services == {"podium-test"}

