"""Crash recovery, proven with SIGKILL against the real CLI and the real database file.

A run of the real ``podium`` command is killed (SIGKILL: no cleanup, no last
flush) at many random instants — during start-up, while steps are in flight,
just after a step finished (around its commit), while a retry wait is
pending — and then resumed with ``podium resume`` (by id or ``--all``), which
is itself killed again and again, until a last resume runs to the end.

After every kill the test reads, straight from the file, which steps had
committed success; agents log every call (fsynced) before doing anything.
That is enough to check the durability rules of DESIGN.md:

* the run ends ``succeeded`` and every step's success is recorded exactly once
  (step row ``succeeded``; exactly one ``step_succeeded`` event per step; the
  event log has no hole or duplicate; completion numbers are 1..N);
* no step whose success was committed before a kill was ever called again;
* the idempotency key of a step is the same across attempts and resumes;
* a retry wait pending at the kill is resumed (the next attempt number
  follows on), not started over.

The random seed is printed; set ``PODIUM_CRASH_SEED`` to replay one.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.podium_proc import Sandbox, chain, wait_for

SEED = int(os.environ.get("PODIUM_CRASH_SEED") or random.randrange(1_000_000))
RETRY_DELAY_S = 0.5


@dataclass
class Kill:
    """What the file held right after one SIGKILL."""

    how: str
    n_lines: int  # agent calls logged before the kill
    committed: frozenset[str]  # steps whose success was committed before the kill
    retry_attempt: int | None = None  # the failed attempt whose retry wait the kill landed in


@dataclass
class RetryTarget:
    """A flaky step (fails its first ``fail_attempts`` attempts) whose waits we aim kills at."""

    step: str
    deps: tuple[str, ...]
    fail_attempts: int
    wanted: int


def crash_and_resume(
    sb: Sandbox,
    wf: Path,
    rng: random.Random,
    *,
    kills_wanted: int,
    retry: RetryTarget,
    first_kill: str = "random",
) -> tuple[str, list[Kill]]:
    """Start the run, then kill / resume it ``kills_wanted`` times; return the run id and kills."""
    run_id: str | None = None
    kills: list[Kill] = []
    retry_kills = 0
    by_id = True
    # Kill at least ``kills_wanted`` times, and on until one kill landed in a retry wait.
    while len(kills) < kills_wanted or (retry_kills == 0 and len(kills) < kills_wanted + 10):
        before = sb.steps(run_id) if run_id else {}
        size0 = sb.log.stat().st_size if sb.log.exists() else 0
        if run_id is None:
            proc = sb.spawn("run", str(wf), "--json", agents=True)
        else:
            # Alternate the two ways to resume; neither needs --agents (the run remembers).
            by_id = not by_id
            proc = sb.spawn("resume", *((run_id,) if by_id else ("--all",)), "--json")

        def progressed(proc: Any = proc, size0: int = size0) -> bool:
            return proc.poll() is not None or (sb.log.exists() and sb.log.stat().st_size > size0)

        row = before.get(retry.step)
        prev = row["attempts"] if row else 0
        retry_due = (
            run_id is not None and retry_kills < retry.wanted
            and all(before.get(d, {}).get("status") == "succeeded" for d in retry.deps)
            and (row is None or row["status"] != "succeeded") and prev < retry.fail_attempts
        )
        roll = rng.random()
        if run_id is None and first_kill == "partial":
            # Kill once some, not all, fan-out branches have committed.
            how = "partial"

            def some_done(proc: Any = proc) -> bool:
                ids = sb.run_ids()
                return proc.poll() is not None or (
                    bool(ids) and len(sb.succeeded_steps(ids[0])) >= 2)

            assert wait_for(some_done, 30, 0.01)
        elif retry_due:
            # Kill inside the retry wait: once the failed attempt and its retry are committed.
            how = "retry_wait"

            def retry_pending(proc: Any = proc, prev: int = prev, rid: str = run_id or ""
                              ) -> bool:
                r = sb.steps(rid).get(retry.step)
                return proc.poll() is not None or (
                    r is not None and r["next_retry_at"] is not None and r["attempts"] > prev)

            assert wait_for(retry_pending, 30, 0.01), "the retry was never scheduled"
            # The step has a failing attempt ahead and its retry waits 0.5 s: a run that
            # ends now went through a wait without ever committing the pending retry.
            assert proc.poll() is None, (
                f"{retry.step}'s retry wait was not committed; {SEED=}; {sb.stderr_of(proc)}")
            time.sleep(rng.uniform(0, RETRY_DELAY_S / 2))
        elif run_id is not None and roll < 0.2:
            how = "startup"  # during imports, store open, claim/adopt, or the first call
            # (a resume reaches its first call in ~0.5 s here; waiting up to 1 s let a
            # nearly finished fan-out end before it had been killed often enough)
            time.sleep(rng.uniform(0.05, 0.6))
        else:
            assert wait_for(progressed, 30), f"no progress; stderr: {sb.stderr_of(proc)}"
            if roll < 0.55:
                how = "commit"  # a call just started: kill around its end and its commit
                time.sleep(rng.uniform(0, 0.04))
            else:
                how = "random"
                time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is not None:
            assert proc.returncode == 0, sb.stderr_of(proc)
            break  # the run got to its end before the kill
        sb.kill(proc)
        if run_id is None:
            ids = sb.run_ids()
            if not ids:
                kills.append(Kill(how, len(sb.executions()), frozenset()))
                continue
            run_id = ids[0]
        committed = sb.succeeded_steps(run_id)
        if kills:
            assert kills[-1].committed <= committed, "a committed success was lost"
        lines = sb.executions()
        # Whatever aimed it, a kill may have landed in a retry wait: the failed attempt and
        # its retry committed, the next attempt not called yet.
        row = sb.steps(run_id).get(retry.step)
        attempt = None
        if row is not None and row["status"] == "running" and row["next_retry_at"] is not None:
            attempt = row["attempts"]
            if any(x.step_id == retry.step and x.attempt > attempt for x in lines):
                attempt = None  # the next attempt started; its StepStarted was not committed
        if how == "retry_wait" and attempt is None:
            how = "retry_wait_missed"  # a very slow machine: it got past the wait first
        if attempt is not None:
            retry_kills += 1
        kills.append(Kill(how, len(lines), committed, attempt))
        if sb.run_row(run_id)["status"] == "succeeded":
            break  # killed after the run's end was committed
    assert run_id is not None
    return run_id, kills


def finish(sb: Sandbox, run_id: str) -> dict[str, Any] | None:
    """Resume to the end (unless a process already got there); the CLI's JSON, if it ran."""
    if sb.run_row(run_id)["status"] == "succeeded":
        again = sb.podium("resume", run_id)
        assert again.returncode == 2, again.stderr
        assert "already succeeded" in again.stderr
        return None
    done = sb.podium("resume", run_id, "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def check_exactly_once(sb: Sandbox, run_id: str, step_ids: list[str], kills: list[Kill],
                       retry: RetryTarget, note: str) -> None:
    """Every durability promise, from the file and the execution log."""
    run = sb.run_row(run_id)
    assert run["status"] == "succeeded", note
    steps = sb.steps(run_id)
    assert sorted(steps) == sorted(step_ids), note
    assert {k: s["status"] for k, s in steps.items()} == dict.fromkeys(step_ids, "succeeded"), note

    events = sb.events(run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), f"event log holes; {note}"
    succeeded = [e for e in events if e.type == "step_succeeded"]
    assert Counter(e.data["step_id"] for e in succeeded) == Counter(step_ids), note
    finished = [e for e in events if e.type == "run_finished"]
    assert [e.data["status"] for e in finished] == ["succeeded"], note
    assert events[-1].type == "run_finished", note
    for e in succeeded:
        row = steps[e.data["step_id"]]
        # The row and the event tell the same story: the attempt that succeeded and its output.
        assert row["attempts"] == e.data["attempt"], note
        assert row["output"]["step"] == e.data["step_id"], note
        assert row["output"]["attempt"] == e.data["attempt"], note
    assert sorted(s["completed_seq"] for s in steps.values()) == list(range(1, len(step_ids) + 1))

    lines = sb.executions()
    assert {x.run_id for x in lines} == {run_id}, note
    assert {x.step_id for x in lines} == set(step_ids), note
    for x in lines:
        assert x.key == f"{run_id}/{x.step_id}", f"idempotency key changed: {x}; {note}"
    for i, k in enumerate(kills):
        again = [x for x in lines[k.n_lines:] if x.step_id in k.committed]
        assert not again, f"kill #{i} ({k.how}): committed steps ran again: {again}; {note}"

    # The retry waits a kill landed in were resumed: the next attempt follows on.
    hit = [k for k in kills if k.retry_attempt is not None]
    assert hit, f"no kill landed inside a retry wait; {note}"
    for k in hit:
        assert k.retry_attempt is not None
        nxt = next(x for x in lines[k.n_lines:] if x.step_id == retry.step)
        assert nxt.attempt == k.retry_attempt + 1, f"retry started over: {nxt}; {note}"
    assert steps[retry.step]["attempts"] > retry.fail_attempts, note


@pytest.mark.timeout(240)
def test_sigkill_a_30_step_chain_again_and_again(sandbox: Sandbox) -> None:
    rng = random.Random(SEED)
    note = f"PODIUM_CRASH_SEED={SEED}"
    print(note)
    doc = chain(30, sleep_ms=(20, 50))
    doc["steps"][6] = {
        # Four failing attempts: four retry waits for kills to land in, even on a slow day.
        "id": "s06", "agent": "flaky", "input": {"sleep_ms": [1, 5], "fail_attempts": 4},
        "retry": {"max_attempts": 6, "initial_delay": RETRY_DELAY_S, "backoff": 1.0,
                  "jitter": "none"},
    }
    wf = sandbox.workflow("chain", doc)
    retry = RetryTarget("s06", ("s05",), fail_attempts=4, wanted=2)
    run_id, kills = crash_and_resume(sandbox, wf, rng, kills_wanted=12, retry=retry)
    doc_out = finish(sandbox, run_id)
    print(f"{len(kills)} kills:", [k.how for k in kills])
    assert len(kills) >= 8, f"the run ended too soon to be killed often enough; {note}"
    ids = [f"s{i:02d}" for i in range(30)]
    check_exactly_once(sandbox, run_id, ids, kills, retry, note)
    # Only the chain is exact here: no other step's commit can carry an attempt's start.
    assert sandbox.steps(run_id)["s06"]["attempts"] == retry.fail_attempts + 1
    if doc_out is not None:
        assert doc_out["status"] == "succeeded"
        assert doc_out["output"]["step"] == "s29"
        assert set(doc_out["steps"]) == set(ids)


@pytest.mark.timeout(240)
def test_sigkill_a_fan_out_again_and_again(sandbox: Sandbox) -> None:
    rng = random.Random(SEED + 1)
    note = f"PODIUM_CRASH_SEED={SEED}"
    print(note)
    branches = [f"b{i:02d}" for i in range(40)]
    steps: list[dict[str, Any]] = [{"id": "root", "agent": "record",
                                    "input": {"sleep_ms": [5, 20]}}]
    for i, b in enumerate(branches):
        # Quick, medium and slow branches, so a kill finds some done and some in flight.
        lo, hi = ((10, 60), (50, 250), (250, 450))[i % 3]
        steps.append({"id": b, "agent": "record", "depends_on": ["root"],
                      "input": {"sleep_ms": [lo, hi]}})
    steps[8] = {"id": "b07", "agent": "flaky", "depends_on": ["root"],
                "input": {"sleep_ms": [1, 5], "fail_attempts": 4},
                "retry": {"max_attempts": 6, "initial_delay": RETRY_DELAY_S, "backoff": 1.0,
                          "jitter": "none"}}
    steps.append({"id": "join", "agent": "record", "depends_on": branches,
                  "input": {"sleep_ms": [5, 20]}})
    wf = sandbox.workflow("fanout", {"name": "fanout", "mode": "dag", "steps": steps,
                                     "output": "${{ steps.join.output }}"})
    retry = RetryTarget("b07", ("root",), fail_attempts=4, wanted=1)
    run_id, kills = crash_and_resume(sandbox, wf, rng, kills_wanted=12, retry=retry,
                                     first_kill="partial")
    finish(sandbox, run_id)
    print(f"{len(kills)} kills:", [k.how for k in kills])
    assert len(kills) >= 6, f"the run ended too soon to be killed often enough; {note}"
    ids = ["root", *branches, "join"]
    check_exactly_once(sandbox, run_id, ids, kills, retry, note)

    # A resume after some branches had finished ran only the unfinished ones.
    lines = sandbox.executions()
    partial = [k for k in kills if "root" in k.committed
               and 0 < len(k.committed & set(branches)) < len(branches)]
    assert partial, f"no kill left the fan-out half done; {note}"
    for k in partial:
        unfinished = set(branches) - k.committed
        ran_after = {x.step_id for x in lines[k.n_lines:]}
        assert ran_after & set(branches) == unfinished, note
        assert "root" not in ran_after, note


def test_killed_run_is_listed_stale_and_resumable(sandbox: Sandbox) -> None:
    wf = sandbox.workflow("stale", {"name": "stale", "mode": "sequential", "steps": [
        {"id": "a", "agent": "record"},
        {"id": "hang", "agent": "hang-once", "input": {"hang_s": 60}},
    ]})
    proc = sandbox.spawn("run", str(wf), "--json", agents=True)
    assert wait_for(lambda: any(x.step_id == "hang" for x in sandbox.executions()), 30)

    def listed() -> dict[str, Any]:
        out = sandbox.podium("runs", "--json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert len(rows) == 1
        row: dict[str, Any] = rows[0]
        return row

    live = listed()  # its owner is alive: neither stale nor resumable
    assert (live["status"], live["stale"], live["resumable"]) == ("running", False, False)
    sandbox.kill(proc)
    dead = listed()
    assert dead["run_id"] == live["run_id"]
    assert (dead["status"], dead["stale"], dead["resumable"]) == ("running", True, True)
    text = sandbox.podium("runs")
    assert text.returncode == 0
    assert "(resumable)" in text.stdout

    done = sandbox.podium("resume", "--all", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in json.loads(done.stdout)] == ["succeeded"]
    after = listed()
    assert (after["status"], after["stale"], after["resumable"]) == ("succeeded", False, False)


def test_resume_uses_the_definition_the_run_started_with(sandbox: Sandbox) -> None:
    original = {
        "name": "edit-me", "version": 1, "mode": "sequential",
        "steps": [
            {"id": "first", "agent": "record", "input": {"value": "old"}},
            {"id": "wait", "agent": "hang-once", "input": {"hang_s": 60}},
            {"id": "last", "agent": "record",
             "input": {"value": "old", "seen": "${{ steps.first.output.input.value }}"}},
        ],
        "output": "${{ steps.last.output.input }}",
    }
    wf = sandbox.workflow("edit-me", original)
    proc = sandbox.spawn("run", str(wf), "--json", agents=True)
    assert wait_for(lambda: any(x.step_id == "wait" for x in sandbox.executions()), 30)
    sandbox.kill(proc)
    (run_id,) = sandbox.run_ids()

    # Edit the file on disk: other inputs, a new step, an agent that would fail.
    edited = yaml.safe_load(wf.read_text())
    edited["steps"][0]["input"]["value"] = "new"
    edited["steps"][2] = {"id": "last", "agent": "always-fail", "input": {"value": "new"}}
    edited["steps"].append({"id": "extra", "agent": "record"})
    wf.write_text(yaml.safe_dump(edited))

    done = sandbox.podium("resume", run_id, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "succeeded"
    assert doc["output"] == {"value": "old", "seen": "old"}
    assert set(doc["steps"]) == {"first", "wait", "last"}
    calls = [(x.step_id, x.capability, x.input) for x in sandbox.executions()]
    assert calls == [
        ("first", "record", {"value": "old"}),
        ("wait", "hang-once", {"hang_s": 60}),
        ("wait", "hang-once", {"hang_s": 60}),  # in flight at the kill: at least once
        ("last", "record", {"value": "old", "seen": "old"}),
    ]
    stored = json.loads(sandbox.run_row(run_id)["definition"])
    assert [s["id"] for s in stored["steps"]] == ["first", "wait", "last"]
    assert stored["steps"][0]["input"] == {"value": "old"}


def test_independent_steps_are_checkpointed_while_others_run(sandbox: Sandbox) -> None:
    """Steps without dependents (parallel mode) are committed too, not only at the run's end."""
    quick = [f"q{i}" for i in range(8)]
    slow = [f"h{i}" for i in range(3)]
    wf = sandbox.workflow("par", {"name": "par", "mode": "parallel", "steps": [
        *({"id": q, "agent": "record", "input": {"sleep_ms": [5, 50]}} for q in quick),
        *({"id": h, "agent": "hang-once", "input": {"hang_s": 60}} for h in slow),
    ]})
    proc = sandbox.spawn("run", str(wf), "--json", agents=True)
    assert wait_for(lambda: len(sandbox.executions()) == len(quick) + len(slow), 30)

    def quick_committed() -> bool:
        ids = sandbox.run_ids()
        return bool(ids) and set(quick) <= sandbox.succeeded_steps(ids[0])

    # Finished while the others still run: committed within a moment, not at the run's end.
    assert wait_for(quick_committed, 10, 0.02), sandbox.steps(sandbox.run_ids()[0])
    sandbox.kill(proc)
    (run_id,) = sandbox.run_ids()
    n = len(sandbox.executions())

    done = sandbox.podium("resume", run_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert sorted(x.step_id for x in sandbox.executions()[n:]) == slow
    events = sandbox.events(run_id)
    assert Counter(e.data["step_id"] for e in events if e.type == "step_succeeded") == (
        dict.fromkeys(quick + slow, 1))
