"""``on_failure: compensate`` with nothing to undo leaves the run ``failed``.

"rolled_back" says that what the run did was undone; when no succeeded step has
a ``compensate``, nothing was, and the run simply failed (as `podium rollback`
of such a run says "nothing to compensate" and leaves its status).
"""

from __future__ import annotations

from typing import Any

from tests.conftest import run_workflow


async def _ok(task: Any) -> Any:
    return "ok"


async def _undo(task: Any) -> Any:
    return "undone"


async def _boom(task: Any) -> Any:
    raise RuntimeError("boom")


async def test_no_succeeded_step_has_an_undo_so_the_run_just_fails() -> None:
    wf = {"name": "c", "mode": "sequential", "on_failure": "compensate", "steps": [
        {"id": "a", "agent": "ok"},  # succeeded, but has nothing to undo it with
        {"id": "b", "agent": "boom", "compensate": {"agent": "undo"}},  # never succeeded
    ]}
    run = await run_workflow(wf, ok=_ok, boom=_boom, undo=_undo)
    assert run.status == "failed"
    assert run.error is not None
    assert "step 'b' failed" in run.error.message
    assert run.steps["a"].compensation_status is None


async def test_a_succeeded_step_with_an_undo_is_still_rolled_back() -> None:
    wf = {"name": "c", "mode": "sequential", "on_failure": "compensate", "steps": [
        {"id": "a", "agent": "ok", "compensate": {"agent": "undo"}},
        {"id": "b", "agent": "boom"},
    ]}
    run = await run_workflow(wf, ok=_ok, boom=_boom, undo=_undo)
    assert run.status == "rolled_back"
    assert run.steps["a"].status == "compensated"
