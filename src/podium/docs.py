"""The public documents: stored records in the shape ``--json`` prints and the API answers.

Timestamps are RFC 3339 UTC strings with milliseconds (``2026-12-02T04:25:12.123Z``),
as Temporal's and Prefect's APIs give them: readable, sortable as text, and the
same whatever the reader's time zone. The records keep epoch seconds; only the
named timestamp fields are turned, never a step's input or output, whose keys
are the user's.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

from podium.errors import (
    ConfigError,
    DefinitionError,
    InputError,
    PodiumError,
    Problem,
    RunNotFound,
    StoreError,
)

__all__ = ["ERROR_TYPES", "EXIT_FAILED", "EXIT_INFRA", "EXIT_OK", "EXIT_USAGE", "alert_doc",
           "error_doc", "error_type_for", "event_doc", "exit_code_for", "problem_doc", "rfc3339",
           "run_doc", "with_times"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA = 0, 1, 2, 3

# The ``type`` of ``{"error": {...}}`` (CLI --json, API answers): stable short words scripts
# may test.
ERROR_TYPES: tuple[tuple[type[PodiumError], str], ...] = (
    (DefinitionError, "definition_error"),
    (InputError, "input_error"),
    (ConfigError, "config_error"),
    (RunNotFound, "run_not_found"),
    (StoreError, "store_error"),
)

_RUN_TIMES = ("created_at", "started_at", "finished_at")
_STEP_TIMES = ("started_at", "finished_at")
_EVENT_TIMES = ("ts", "at")
_ALERT_TIMES = ("fired_at", "resolved_at", "acked_at", "last_notified_at")


def rfc3339(ts: float | None) -> str | None:
    """``2026-12-02T04:25:12.123Z`` (milliseconds, UTC); ``None`` stays ``None``."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    if not math.isfinite(ts):
        return None
    try:
        when = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):  # beyond the calendar: no time to show
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def with_times(doc: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``doc`` with each of ``keys`` it has turned into an RFC 3339 string."""
    for key in keys:
        if key in doc:
            doc[key] = rfc3339(doc[key])
    return doc


def run_doc(run: Any, *, verbose: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = with_times(run.to_dict(verbose=verbose), _RUN_TIMES)
    for step in doc["steps"].values():
        with_times(step, _STEP_TIMES)
    return doc


def event_doc(event: Any, *, verbose: bool = False) -> dict[str, Any]:
    """An event of a run's timeline; tracebacks only with --verbose, as for the run itself."""
    doc: dict[str, Any] = {k: v for k, v in event.to_dict().items() if k != "run_id"}
    err = doc.get("error")
    if not verbose and isinstance(err, dict) and "traceback" in err:
        doc["error"] = {k: v for k, v in err.items() if k != "traceback"}
    return with_times(doc, _EVENT_TIMES)


def alert_doc(alert: Any) -> dict[str, Any]:
    return with_times(alert.to_dict(), _ALERT_TIMES)


def exit_code_for(exc: PodiumError) -> int:
    if isinstance(exc, StoreError):
        return EXIT_INFRA
    if isinstance(exc, DefinitionError | InputError | ConfigError | RunNotFound):
        return EXIT_USAGE
    return EXIT_FAILED


def error_type_for(exc: PodiumError) -> str:
    for cls, name in ERROR_TYPES:
        if isinstance(exc, cls):
            return name
    return str(getattr(exc, "error_type", "error"))


def problem_doc(p: Problem) -> dict[str, Any]:
    return {"file": p.file, "line": p.line, "step": p.step, "field": p.field,
            "message": p.message, "hint": p.hint}


def error_doc(exc: PodiumError) -> dict[str, Any]:
    """``{"error": {type, message, exit_code[, problems]}}``: one shape for CLI and API."""
    doc: dict[str, Any] = {"type": error_type_for(exc), "message": exc.message,
                           "exit_code": exit_code_for(exc)}
    if isinstance(exc, DefinitionError):
        doc["problems"] = [problem_doc(p) for p in exc.problems]
    return {"error": doc}
