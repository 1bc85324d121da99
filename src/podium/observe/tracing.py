"""OpenTelemetry traces of runs, made from the engine's events.

A span per run execution (``run WORKFLOW``) and, under it, a span per step
attempt (``step STEP``), with the workflow, version, step, agent, attempt,
outcome and error type as attributes; a retry is an event on the run's span
(``retry``, with the step, the next attempt and the delay). Spans carry the
events' own times, so a trace shows what the engine recorded, not when this
observer heard of it.

Like metrics, tracing only consumes events: ``Tracing`` is an event-bus
subscriber. The trace context crosses to agents as W3C ``traceparent``:
``headers_for`` gives an attempt's headers to the HTTP and A2A transports
(through ``podium.agents.base.set_trace_headers``, set by the runtime), and a
run's parent comes from ``RunStarted.traceparent`` (the API's submitter, the
span that was current where ``Engine.start`` or ``Engine.submit`` was called,
``$TRACEPARENT`` for a command, or a parent run's step for a child run).

A run is one trace over its whole life and across processes. Each execution of
it (the first; a resume; a worker taking over a dead one's run; a wake after
waiting) is a span ``run WORKFLOW`` whose parent is the run's *recorded*
context, read back from the store by whoever continues it: the submitter's
context when there was one (each execution then sits side by side under the
submitter's span, as retries of a job do), else the first execution's own span,
recorded by a ``RunTraced`` event (later executions nest under it). A parent is
preferred to span links because Jaeger and Tempo draw one tree from parents,
while a link is a jump to another trace; executions that side by side show
where the run stopped and went on, with ``podium.resumed`` on all but the
first. (A process killed outright never exports the span it had open: a later
execution nested under it shows under a missing parent, still in the trace.)

Configuration is OpenTelemetry's own: an application that set a global
``TracerProvider`` gets its spans there; from the command line, tracing is on
when ``OTEL_TRACES_EXPORTER`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (``pip install 'podium[otel]'``
for the SDK and the OTLP exporter; ``OTEL_SERVICE_NAME`` and the rest apply).
When tracing is off, no subscriber is added and no header is computed:
nothing is slower (``bench/tracing.py`` measures it).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from podium.events import (
    Event,
    RunAbandoned,
    RunFinished,
    RunStarted,
    RunWaiting,
    StepAttemptFailed,
    StepCancelled,
    StepRetryScheduled,
    StepStarted,
    StepSucceeded,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["INSTALL_HINT", "Tracing", "configure_from_env", "current_traceparent",
           "env_traceparent"]

log = logging.getLogger("podium.tracing")

INSTALL_HINT = "pip install 'podium[otel]'"
_MAX_OPEN = 100_000  # spans kept open at once (runs and attempts); beyond, the oldest end


def _ns(ts: float) -> int:
    return int(ts * 1e9)


class Tracing:
    """Turns a run's events into spans; subscribe it to the engine's bus."""

    def __init__(self, tracer: Tracer | None = None, provider: Any = None) -> None:
        from opentelemetry import trace

        self.tracer = tracer or trace.get_tracer("podium")
        self.provider = provider  # one this module set up: flushed at close
        self._runs: dict[str, Span] = {}
        self._attempts: dict[tuple[str, str, int], Span] = {}

    def __call__(self, event: Event) -> None:
        try:
            self._on(event)
        except Exception:
            log.exception("tracing: %s of run %s", event.type, event.run_id)

    def _on(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self._attempt_started(event)
        elif isinstance(event, StepSucceeded):
            self._attempt_ended(event.run_id, event.step_id, event.attempt, event.ts,
                                "succeeded", None)
        elif isinstance(event, StepAttemptFailed):
            self._attempt_ended(event.run_id, event.step_id, event.attempt, event.ts,
                                "failed", event.error.type, event.error.message)
        elif isinstance(event, StepCancelled):
            self._attempt_ended(event.run_id, event.step_id, event.attempt, event.ts,
                                "cancelled", None)
        elif isinstance(event, StepRetryScheduled):
            run = self._runs.get(event.run_id)
            if run is not None:
                run.add_event("retry", {"podium.step": event.step_id,
                                        "podium.attempt": event.attempt,
                                        "podium.delay_s": event.delay_s},
                              timestamp=_ns(event.ts))
        elif isinstance(event, RunStarted):
            self._run_started(event)
        elif isinstance(event, RunFinished):
            self._run_ended(event.run_id, event.ts, event.status,
                            event.error.type if event.error is not None else None,
                            event.error.message if event.error is not None else None)
        elif isinstance(event, RunAbandoned):
            # Another process goes on with the run (in a span of its own, same trace):
            # this execution's spans end here, or they would never be exported.
            self._run_ended(event.run_id, event.ts, "abandoned", None, None)
        elif isinstance(event, RunWaiting):
            # Nothing holds the run while it waits: this execution's span ends here; the
            # one that continues it starts another in the same trace.
            self._run_ended(event.run_id, event.ts, "waiting", None, None)

    def _run_started(self, event: RunStarted) -> None:
        from opentelemetry.trace import SpanKind

        parent = None
        if event.traceparent:
            # Stored W3C, whatever propagators this process uses for its own headers.
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            parent = TraceContextTextMapPropagator().extract(
                {"traceparent": event.traceparent})
        old = self._runs.pop(event.run_id, None)
        if old is not None:
            old.end(_ns(event.ts))
        self._trim()
        span = self.tracer.start_span(
            f"run {event.workflow}", context=parent, kind=SpanKind.INTERNAL,
            start_time=_ns(event.ts),
            attributes={"podium.run_id": event.run_id, "podium.workflow": event.workflow,
                        "podium.workflow.version": str(event.version),
                        "podium.resumed": event.resumed})
        self._runs[event.run_id] = span

    def _run_ended(self, run_id: str, ts: float, outcome: str, error_type: str | None,
                   message: str | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        for key in [k for k in self._attempts if k[0] == run_id]:
            self._attempts.pop(key).end(_ns(ts))
        span = self._runs.pop(run_id, None)
        if span is None:
            return
        span.set_attribute("podium.outcome", outcome)
        if error_type is not None:
            span.set_attribute("podium.error_type", error_type)
        if outcome in ("failed", "rollback_failed"):
            span.set_status(Status(StatusCode.ERROR, message or outcome))
        span.end(_ns(ts))

    def _attempt_started(self, event: StepStarted) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        run = self._runs.get(event.run_id)
        context = trace.set_span_in_context(run) if run is not None else None
        self._trim()
        span = self.tracer.start_span(
            f"step {event.step_id}", context=context, kind=SpanKind.CLIENT,
            start_time=_ns(event.ts),
            attributes={"podium.run_id": event.run_id, "podium.step": event.step_id,
                        "podium.attempt": event.attempt, "podium.agent": event.agent_id})
        self._attempts[(event.run_id, event.step_id, event.attempt)] = span

    def _attempt_ended(self, run_id: str, step_id: str, attempt: int, ts: float,
                       outcome: str, error_type: str | None, message: str | None = None,
                       ) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._attempts.pop((run_id, step_id, attempt), None)
        if span is None:
            return
        span.set_attribute("podium.outcome", outcome)
        if error_type is not None:
            span.set_attribute("podium.error_type", error_type)
            span.set_status(Status(StatusCode.ERROR, message or error_type))
        span.end(_ns(ts))

    def headers_for(self, run_id: str, step_id: str, attempt: int) -> dict[str, str]:
        """The W3C trace headers of an attempt in flight (none if it has no span)."""
        span = self._attempts.get((run_id, step_id, attempt))
        if span is None:
            return {}
        from opentelemetry import trace
        from opentelemetry.propagate import inject

        headers: dict[str, str] = {}
        inject(headers, context=trace.set_span_in_context(span))
        return headers

    def traceparent_of(self, run_id: str, step_id: str | None = None,
                       attempt: int = 1) -> str | None:
        """The W3C context of a span open here: the run's (``step_id`` None) or an
        attempt's; the engine stores it (``RunTraced``) or hands it to a child run."""
        span = self._runs.get(run_id) if step_id is None else self._attempts.get(
            (run_id, step_id, attempt))
        if span is None:
            return None
        ctx = span.get_span_context()
        if not ctx.is_valid:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    def _trim(self) -> None:
        """A run that never finishes here (its process lost it) must not keep its spans
        open for ever: beyond ``_MAX_OPEN``, the oldest end."""
        while len(self._attempts) > _MAX_OPEN:
            self._attempts.pop(next(iter(self._attempts))).end()
        while len(self._runs) > _MAX_OPEN:
            self._runs.pop(next(iter(self._runs))).end()

    def close(self) -> None:
        """End what is still open (the process stops), so nothing is lost at export."""
        for span in [*self._attempts.values(), *self._runs.values()]:
            span.end()
        self._attempts.clear()
        self._runs.clear()
        if self.provider is not None:
            self.provider.force_flush(timeout_millis=5000)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span current here (a library caller's), else the
    process's ``$TRACEPARENT`` (a script's span around a ``podium`` command)."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return env_traceparent()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


_W3C = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def env_traceparent() -> str | None:
    """``$TRACEPARENT`` when it is a valid W3C context: OpenTelemetry's environment
    carrier, how a caller's trace reaches a process it starts (``podium submit``)."""
    value = os.environ.get("TRACEPARENT", "").strip().lower()
    return value if _W3C.fullmatch(value) else None


def wanted_from_env() -> bool:
    """Whether the ``OTEL_*`` variables ask for traces."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def global_provider_set() -> bool:
    """Whether the application installed a real ``TracerProvider`` (not the no-op one)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def configure_from_env() -> Tracing | None:
    """``Tracing`` when the application or the ``OTEL_*`` variables ask for it, else None.

    From the variables, the SDK's provider is set up with the exporter they name
    (OTLP over HTTP by default); ``ConfigError`` with the install line when the SDK
    is missing.
    """
    # An application that installed a provider imported OpenTelemetry to do so; not
    # importing it otherwise spares every command ~0.05 s at start-up.
    if "opentelemetry.trace" in sys.modules and global_provider_set():
        return Tracing()
    if not wanted_from_env():
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        from podium.errors import ConfigError

        raise ConfigError(f"OTEL_* variables ask for traces, but the OpenTelemetry SDK is not"
                          f" installed (fix: {INSTALL_HINT}, or unset them)") from None
    exporter = _exporter(os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower())
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
        "OTEL_SERVICE_NAME", "podium")}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return Tracing(provider.get_tracer("podium"), provider)


def _exporter(name: str) -> Any:
    from podium.errors import ConfigError

    if name in ("", "otlp"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(f"OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter (fix:"
                              f" {INSTALL_HINT})") from None
        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: Podium knows otlp, console and none"
                      " (fix: one of them)")
