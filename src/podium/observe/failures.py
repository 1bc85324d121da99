"""Failure tracking: success rates and the most frequent errors, by what you ask.

Computed from the attempts the store already keeps (the event log), so
recording a failure costs the engine nothing extra. Messages were scrubbed of
secrets when the failure happened.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any, Literal

from podium.state import AttemptOutcome

__all__ = ["GROUPINGS", "summarize"]

Grouping = Literal["agent", "step", "type", "workflow"]
GROUPINGS: tuple[Grouping, ...] = ("agent", "step", "type", "workflow")


def _group(o: AttemptOutcome, by: Grouping) -> str:
    if by == "agent":
        return o.agent_id or "(no agent)"
    if by == "step":
        return f"{o.workflow}/{o.step_id}"
    if by == "workflow":
        return o.workflow
    return o.error_type or "-"


def summarize(outcomes: Iterable[AttemptOutcome], by: Grouping = "type",
              top: int = 5) -> dict[str, Any]:
    """Totals, per-group calls / failures / success rate, and each group's top errors."""
    calls: Counter[str] = Counter()
    fails: Counter[str] = Counter()
    errors: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    overall_errors: Counter[tuple[str, str]] = Counter()
    failures: list[dict[str, Any]] = []
    total = failed = 0
    for o in outcomes:
        total += 1
        if by == "type" and o.ok:
            continue  # a success has no error type; rates by type are shares of failures
        g = _group(o, by)
        calls[g] += 1
        if not o.ok:
            failed += 1
            fails[g] += 1
            err = (o.error_type or "agent_error", (o.message or "")[:200])
            errors[g][err] += 1
            overall_errors[err] += 1
            failures.append({"ts": o.ts, "run_id": o.run_id, "workflow": o.workflow,
                             "step": o.step_id, "agent": o.agent_id, "attempt": o.attempt,
                             "type": o.error_type, "message": o.message})
    groups = []
    for g in sorted(calls, key=lambda k: (-fails[k], k)):
        n, f = calls[g], fails[g]
        groups.append({
            by: g,
            "calls": n,
            "failures": f,
            "success_rate": None if by == "type" else round((n - f) / n, 4) if n else None,
            "top_errors": [{"type": t, "message": m, "count": c}
                           for (t, m), c in errors[g].most_common(top)],
        })
    return {
        "by": by,
        "attempts": total,
        "failures": failed,
        "success_rate": round((total - failed) / total, 4) if total else None,
        "groups": groups,
        "top_errors": [{"type": t, "message": m, "count": c}
                       for (t, m), c in overall_errors.most_common(top)],
        "recent": failures[-20:],
    }
