"""The store contract: what every backend does, checked the same way on each.

Only the protocols are used (``RunStore``, ``AlertStore``): batches go in through
``write_batch`` exactly as the engine's journal cuts them, and everything comes
back through the reading verbs.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from podium.errors import RunNotFound, StoreError
from podium.events import (
    ErrorInfo,
    RunFinished,
    RunStarted,
    RunTraced,
    StepAttemptFailed,
    StepStarted,
    StepSucceeded,
)
from podium.state import AlertRecord
from podium.store.base import Batch, RunRow, StepRow, Store

DEF = {"name": "w", "steps": [{"id": "a", "agent": "x"}]}


def new_run(run_id: str, *, created: float = 1.0, owner: str | None = "me",
            lease: float | None = 100.0, status: str = "running") -> RunRow:
    return RunRow(run_id, status, "null", None, created, None, "execute", "w", 1, DEF,
                  orjson.dumps({"in": run_id}).decode(), created, owner, lease,
                  {"agents_file": None})


def step_row(run_id: str, step_id: str, status: str, attempts: int = 1, *,
             output: object = None, error: ErrorInfo | None = None,
             completed: int | None = None, comp_status: str | None = None) -> StepRow:
    out = None if output is None else orjson.dumps(output).decode()
    err = None if error is None else orjson.dumps(error.to_dict()).decode()
    return StepRow(run_id, step_id, status, attempts, "agent-1", out, err, 10.0,
                   11.0 if status != "running" else None, None, False, completed, comp_status,
                   0, None)


def batch(new: list[RunRow] = (), events: list = (), runs: list[RunRow] = (),  # type: ignore[assignment]
          steps: list[StepRow] = (), seq_from: dict[str, int] | None = None,  # type: ignore[assignment]
          finished: list[str] = ()) -> Batch:  # type: ignore[assignment]
    """A batch as the journal cuts one: event numbers follow on per run."""
    seqs = dict(seq_from or {})
    numbers = []
    for e in events:
        seqs[e.run_id] = seqs.get(e.run_id, 0) + 1
        numbers.append(seqs[e.run_id])
    last = {rid: seqs[rid] for rid in {e.run_id for e in events}}
    return Batch(list(new), list(events), numbers, list(runs), list(steps), last,
                 list(finished))


def started(run_id: str, ts: float = 2.0) -> RunStarted:
    return RunStarted(run_id=run_id, ts=ts, workflow="w", version=1)


async def test_a_new_run_with_its_events_and_rows_reads_back(store: Store) -> None:
    ev = [started("r1"), StepStarted(run_id="r1", ts=3.0, step_id="a", attempt=1,
                                     agent_id="agent-1")]
    b = batch([new_run("r1")], ev, steps=[step_row("r1", "a", "running")])
    await store.write_batch(b)
    assert await store.batch_committed(b)
    assert await store.last_seq("r1") == 2
    run = await store.get_run("r1")
    assert (run.run_id, run.workflow, run.version, run.status, run.input) == (
        "r1", "w", 1, "running", {"in": "r1"})
    assert (run.owner, run.lease_expires_at, run.epoch, run.recoveries) == ("me", 100.0, 0, 0)
    assert run.definition == DEF
    assert run.agents_source == {"agents_file": None}
    a = run.steps["a"]
    assert (a.status, a.attempts, a.agent_id, a.output, a.started_at) == (
        "running", 1, "agent-1", None, 10.0)
    assert [e.type for e in await store.get_events("r1")] == ["run_started", "step_started"]


async def test_a_runs_trace_context_is_the_first_one_its_run_events_recorded(
        store: Store) -> None:
    """What a resuming process parents its spans to: none for an untraced run; then the
    first recorded context, whichever run-level event carried it (``RunTraced`` for a run
    started with none), and never a step's data that merely mentions the word."""
    first = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    later = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
    mention = StepSucceeded(run_id="t1", ts=3.0, step_id="a", attempt=1, agent_id="x",
                            output={"traceparent": later}, duration_s=0.1,
                            output_json=orjson.dumps({"traceparent": later}).decode())
    await store.write_batch(batch([new_run("t1")], [started("t1"), mention]))
    assert await store.trace_context("t1") is None
    assert await store.trace_context("nobody") is None
    await store.write_batch(batch(events=[
        RunTraced(run_id="t1", ts=4.0, traceparent=first),
        RunStarted(run_id="t1", ts=5.0, workflow="w", version=1, resumed=True,
                   traceparent=later)], seq_from={"t1": 2}))
    assert await store.trace_context("t1") == first
    await store.write_batch(batch([new_run("t2")], [RunStarted(
        run_id="t2", ts=2.0, workflow="w", version=1, traceparent=later)]))
    assert await store.trace_context("t2") == later


async def test_rows_follow_batches_and_a_stored_output_is_never_erased(store: Store) -> None:
    await store.write_batch(batch([new_run("r2")], [started("r2")],
                                  steps=[step_row("r2", "a", "running")]))
    ok = StepSucceeded(run_id="r2", ts=4.0, step_id="a", attempt=1, agent_id="agent-1",
                       output={"x": [1, 2]}, duration_s=0.5, output_json='{"x":[1,2]}')
    await store.write_batch(batch(events=[ok], steps=[step_row(
        "r2", "a", "succeeded", output={"x": [1, 2]}, completed=1)], seq_from={"r2": 1}))
    # A later change of that row (its compensation) carries no output: it is kept.
    await store.write_batch(batch(events=[], steps=[step_row(
        "r2", "a", "compensated", completed=1, comp_status="succeeded")], seq_from={"r2": 2}))
    a = (await store.get_run("r2")).steps["a"]
    assert (a.status, a.output, a.compensation_status, a.completed_seq) == (
        "compensated", {"x": [1, 2]}, "succeeded", 1)
    events = await store.get_events("r2")
    assert [e.type for e in events] == ["run_started", "step_succeeded"]
    assert events[1].output is None or events[1].output == {"x": [1, 2]}


async def test_a_run_row_update_and_errors_read_back(store: Store) -> None:
    await store.write_batch(batch([new_run("r3")], [started("r3")]))
    err = ErrorInfo("agent_error", "boom", False, "agent-1", "Traceback ...")
    fail = StepAttemptFailed(run_id="r3", ts=5.0, step_id="a", attempt=1, agent_id="agent-1",
                             error=err, duration_s=0.1)
    end = RunFinished(run_id="r3", ts=6.0, workflow="w", status="failed", output=None,
                      error=err, duration_s=4.0)
    row = RunRow("r3", "failed", "null", orjson.dumps(err.to_dict()).decode(), 2.0, 6.0,
                 "execute")
    await store.write_batch(batch(events=[fail, end], runs=[row],
                                  steps=[step_row("r3", "a", "failed", error=err)],
                                  seq_from={"r3": 1}, finished=["r3"]))
    run = await store.get_run("r3")
    assert (run.status, run.finished_at, run.error) == ("failed", 6.0, err)
    assert run.steps["a"].error == err
    assert [type(e).__name__ for e in await store.get_events("r3")] == [
        "RunStarted", "StepAttemptFailed", "RunFinished"]
    assert (await store.get_events("r3"))[1].error == err  # type: ignore[attr-defined]


async def test_listing_filters_orders_and_limits_and_ids_resolve_by_prefix(store: Store) -> None:
    for i, status in enumerate(["running", "succeeded", "failed", "running"]):
        await store.write_batch(batch([new_run(f"zz{i}x", created=float(i), status=status)],
                                      [started(f"zz{i}x")]))
    assert [r.run_id for r in await store.list_runs()] == ["zz3x", "zz2x", "zz1x", "zz0x"]
    assert [r.run_id for r in await store.list_runs(status="running")] == ["zz3x", "zz0x"]
    assert [r.run_id for r in await store.list_runs(limit=2)] == ["zz3x", "zz2x"]
    assert await store.list_runs(workflow="other") == []
    # Pages: each starts after the last run of the one before, ties broken by id.
    await store.write_batch(batch([new_run("zz2y", created=2.0)], [started("zz2y")]))
    first = await store.list_runs(limit=2)
    assert [r.run_id for r in first] == ["zz3x", "zz2y"]
    cursor = (first[-1].created_at, first[-1].run_id)
    assert [r.run_id for r in await store.list_runs(limit=2, before=cursor)] == ["zz2x", "zz1x"]
    assert [r.run_id for r in await store.list_runs(before=(1.0, "zz1x"))] == ["zz0x"]
    assert [r.run_id for r in await store.list_runs(status="running", before=cursor)] == [
        "zz0x"]
    assert (await store.get_run("zz2x")).run_id == "zz2x"
    with pytest.raises(RunNotFound, match="ambiguous"):
        await store.get_run("zz")
    with pytest.raises(RunNotFound):
        await store.get_run("nope")


async def test_a_claim_is_a_compare_and_swap_exactly_one_of_two_wins(store: Store) -> None:
    now = await store.now()
    await store.write_batch(batch([new_run("c1", owner="dead", lease=now - 5)], [started("c1")]))
    seen_a, seen_b = await store.get_run("c1"), await store.get_run("c1")
    won = [await store.claim_run(seen_a, "a", lease_s=50.0, recoveries=1),
           await store.claim_run(seen_b, "b", lease_s=50.0, recoveries=1)]
    assert won == [True, False]
    stored = await store.get_run("c1")
    assert (stored.owner, stored.epoch, stored.recoveries) == ("a", 1, 1)
    # The lease and the takeover's time are the store's clock's.
    assert stored.recovered_at is not None
    assert now <= stored.recovered_at <= now + 5
    assert stored.lease_expires_at == pytest.approx(stored.recovered_at + 50.0)
    assert (seen_a.owner, seen_a.epoch, seen_a.lease_expires_at) == (
        "a", 1, stored.lease_expires_at)  # the winner's record follows
    await store.release_run("c1", "someone-else")
    assert (await store.get_run("c1")).owner == "a"
    await store.release_run("c1", "a")
    assert (await store.get_run("c1")).owner is None


async def test_a_claim_takes_only_a_free_run(store: Store) -> None:
    """Free: no owner, an expired lease (store's clock), or an owner the caller knows
    is dead; a live lease is never taken, and a cancel request survives the claim."""
    now = await store.now()
    await store.write_batch(batch([new_run("l1", owner="alive", lease=now + 60),
                                   new_run("l2", owner=None, lease=None)],
                                  [started("l1"), started("l2")]))
    assert await store.request_cancel("l1")
    live = await store.get_run("l1")
    assert not await store.claim_run(live, "b", lease_s=10.0, recoveries=1)
    assert (await store.get_run("l1")).owner == "alive"
    assert await store.claim_run(live, "b", lease_s=10.0, recoveries=1, owner_dead=True)
    assert live.cancel_requested  # kept: a cancel asked while the owner died still holds
    assert (await store.get_run("l1")).cancel_requested
    assert await store.claim_run(await store.get_run("l2"), "b", lease_s=10.0, recoveries=0)
    run = await store.get_run("l2")
    assert (run.owner, run.epoch, run.recoveries, run.recovered_at) == ("b", 1, 0, None)


async def test_renewing_leases_names_the_runs_no_longer_held(store: Store) -> None:
    now = await store.now()
    await store.write_batch(batch([new_run("n1", owner="a", lease=now + 1),
                                   new_run("n2", owner="a", lease=now + 1)],
                                  [started("n1"), started("n2")]))
    assert await store.claim_run(await store.get_run("n2"), "b", lease_s=30.0, recoveries=1,
                                 owner_dead=True)
    assert await store.renew_leases("a", ["n1", "n2", "gone"], 30.0) == {"n2", "gone"}
    n1 = await store.get_run("n1")
    assert n1.lease_expires_at is not None
    assert n1.lease_expires_at >= now + 29
    assert await store.renew_leases("a", [], 30.0) == set()


@pytest.mark.parametrize("fence", [True, False])
async def test_a_batch_is_fenced_off_only_the_runs_its_writer_lost(
        store: Store, fence: bool) -> None:
    """A writer whose run was taken over writes nothing more of it, and the rest of its
    batch lands: never a whole batch lost for one run, never a duplicate success."""
    now = await store.now()
    await store.write_batch(batch([new_run("f1", owner="a", lease=now + 60),
                                   new_run("f2", owner="a", lease=now + 60)],
                                  [started("f1"), started("f2")]))
    taken = await store.get_run("f1")
    assert await store.claim_run(taken, "b", lease_s=60.0, recoveries=1, owner_dead=True)
    ok = StepSucceeded(run_id="f1", ts=3.0, step_id="a", attempt=1, agent_id="x", output=1,
                       duration_s=0.1, output_json="1")
    ok2 = StepSucceeded(run_id="f2", ts=3.0, step_id="a", attempt=1, agent_id="x", output=2,
                        duration_s=0.1, output_json="2")
    zombie = batch(events=[ok, ok2], seq_from={"f1": 1, "f2": 1},
                   steps=[step_row("f1", "a", "succeeded", output=1, completed=1),
                          step_row("f2", "a", "succeeded", output=2, completed=1)])
    zombie.owner, zombie.epochs, zombie.fence = "a", {"f1": 0, "f2": 0}, True
    assert await store.write_batch(zombie) == {"f1"}
    assert await store.last_seq("f1") == 1  # nothing of the zombie's
    assert (await store.get_run("f1")).steps == {}
    assert await store.last_seq("f2") == 2
    assert (await store.get_run("f2")).steps["a"].output == 2
    # The new owner writes at its epoch.
    mine = batch(events=[ok], seq_from={"f1": 1},
                 steps=[step_row("f1", "a", "succeeded", output=1, completed=1)])
    mine.owner, mine.epochs, mine.fence = "b", {"f1": 1}, fence
    assert await store.write_batch(mine) == set()
    assert (await store.get_run("f1")).steps["a"].output == 1



@pytest.mark.parametrize("owner", ["a", None])
async def test_a_new_run_whose_id_is_taken_is_left_out_and_the_rest_lands(
        store: Store, owner: str | None) -> None:
    """Two processes start a run of one id (one idempotency key sent to two servers):
    the second's batch writes nothing of its run, names it among the lost, and lands
    whole for every other run in it (a submit that shared the batch is not failed)."""
    now = await store.now()
    await store.write_batch(batch([new_run("i1", owner="first", lease=now + 60)],
                                  [started("i1")]))
    ok = StepSucceeded(run_id="i1", ts=3.0, step_id="a", attempt=1, agent_id="x",
                       output=9, duration_s=0.1, output_json="9")
    second = batch([new_run("i1", owner=owner, lease=now + 60),
                    new_run("i2", owner=owner, lease=now + 60)],
                   [started("i1", ts=5.0), ok, started("i2")],
                   steps=[step_row("i1", "a", "succeeded", output=9, completed=2)])
    second.owner = owner
    assert await store.write_batch(second) == {"i1"}
    first = await store.get_run("i1")
    assert (first.owner, first.steps) == ("first", {})  # nothing of the second's
    assert await store.last_seq("i1") == 1
    assert [e.ts for e in await store.get_events("i1")] == [2.0]
    assert await store.last_seq("i2") == 1  # the other run of the batch landed
    assert (await store.get_run("i2")).owner == owner


async def test_cancel_requests_are_kept_until_the_run_ends(store: Store) -> None:
    await store.write_batch(batch([new_run("k1"), new_run("k2")], [started("k1"), started("k2")]))
    assert await store.request_cancel("k1")
    assert await store.cancel_requests(["k1", "k2", "nope"]) == {"k1"}
    assert await store.cancel_requests([]) == set()
    end = RunFinished(run_id="k1", ts=9.0, workflow="w", status="cancelled", output=None,
                      error=None, duration_s=1.0)
    await store.write_batch(batch(events=[end], runs=[RunRow(
        "k1", "cancelled", "null", None, 2.0, 9.0, "execute")], seq_from={"k1": 1},
        finished=["k1"]))
    assert await store.cancel_requests(["k1"]) == set()
    assert not await store.request_cancel("k1")  # finished: nothing to cancel


async def test_a_failed_batch_leaves_nothing_behind(store: Store) -> None:
    await store.write_batch(batch([new_run("f1")], [started("f1")]))
    again = StepStarted(run_id="f1", ts=3.0, step_id="a", attempt=1, agent_id="agent-1")
    bad = batch([new_run("f2")], [started("f2"), again],
                steps=[step_row("f1", "a", "running")])
    bad.seqs[1] = 1  # f1's event number 1 again: a clash
    with pytest.raises((StoreError, AssertionError)):
        await store.write_batch(bad)
    with pytest.raises(RunNotFound):
        await store.get_run("f2")  # the new run of the failed batch is not there either
    assert await store.last_seq("f1") == 1
    assert (await store.get_run("f1")).steps == {}


async def test_batch_committed_tells_a_landed_batch_from_one_that_never_was(
        store: Store) -> None:
    first = batch([new_run("b1")], [started("b1")])
    await store.write_batch(first)
    later = batch(events=[StepStarted(run_id="b1", ts=3.0, step_id="a", attempt=1,
                                      agent_id="x")], seq_from={"b1": 1})
    assert await store.batch_committed(first)
    assert not await store.batch_committed(later)
    assert await store.last_seq("nobody") == 0


async def test_workflows_are_saved_idempotently(store: Store) -> None:
    await store.save_workflow("w", 1, DEF)
    await store.save_workflow("w", 1, DEF)
    await store.save_workflow("w", "1", {**DEF, "description": "v1 as a string"})


async def test_alerts_upsert_list_ack_and_history(store: Store) -> None:
    a = AlertRecord("k", "rule", "sla", "warning", "firing", "too slow", fired_at=10.0,
                    labels={"workflow": "w"}, workflow="w", level=0, last_notified_at=10.0)
    await store.save_alert(a, "fired")
    assert [x.key for x in await store.list_alerts()] == ["k"]
    assert await store.ack_alert("k", "ann", 11.0)
    assert not await store.ack_alert("k", "bob", 12.0)  # acknowledged already
    got = await store.get_alert("k")
    assert got is not None
    assert (got.acked_by, got.acked_at, got.labels) == ("ann", 11.0, {"workflow": "w"})
    # The firing process saves the alert again without knowing of the ack: it is kept.
    await store.save_alert(a, "escalated", "level 1", ts=13.0)
    kept = await store.get_alert("k")
    assert kept is not None
    assert kept.acked_by == "ann"
    assert [h["what"] for h in await store.alert_history("k")] == ["fired", "acked", "escalated"]
    assert await store.list_alerts(status="resolved") == []
    assert await store.get_alert("nope") is None


async def test_attempt_outcomes_are_the_successes_and_failed_attempts_since(
        store: Store) -> None:
    err = ErrorInfo("timeout", "slow", None, "agent-1")
    ev = [started("o1", 1.0),
          StepAttemptFailed(run_id="o1", ts=2.0, step_id="a", attempt=1, agent_id="agent-1",
                            error=err, duration_s=1.0),
          StepSucceeded(run_id="o1", ts=3.0, step_id="a", attempt=2, agent_id="agent-1",
                        output=1, duration_s=0.1, output_json="1")]
    await store.write_batch(batch([new_run("o1")], ev))
    got = await store.attempt_outcomes(1.5)
    assert [(o.ok, o.attempt, o.error_type, o.step_id, o.workflow) for o in got] == [
        (False, 1, "timeout", "a", "w"), (True, 2, None, "a", "w")]
    assert await store.attempt_outcomes(2.5) == got[1:]


async def test_reads_meanwhile_see_only_whole_batches(store: Store) -> None:
    """A reader between two writes sees one batch or the next, never half of one."""
    await store.write_batch(batch([new_run("h1")], [started("h1")]))

    async def reader() -> list[int]:
        seen = []
        for _ in range(50):
            seen.append(len(await store.get_events("h1")))
            await asyncio.sleep(0)
        return seen

    async def writer() -> None:
        seq = 1
        for i in range(20):
            ev = [StepStarted(run_id="h1", ts=3.0, step_id=f"s{i}", attempt=1, agent_id="x"),
                  StepStarted(run_id="h1", ts=3.0, step_id=f"t{i}", attempt=1, agent_id="x")]
            await store.write_batch(batch(events=ev, seq_from={"h1": seq}))
            seq += 2
            await asyncio.sleep(0)

    seen, _ = await asyncio.gather(reader(), writer())
    assert all(n % 2 == 1 for n in seen), seen  # 1 + 2k: whole batches only


async def test_schedules_add_list_pause_delete_and_each_slot_once(store: Store) -> None:
    from podium.errors import ConfigError
    from podium.store.base import ScheduleRecord, SlotRecord

    nightly = ScheduleRecord(id="nightly", workflow="w", definition={"name": "w"},
                             input={"k": 1}, cron="0 2 * * *", tz="Europe/Paris",
                             overlap="queue", catch_up=3, created_at=1.0, next_at=100.0,
                             agents_source={"agents_file": "a.yaml"}, queue="q")
    await store.add_schedule(nightly)
    with pytest.raises(ConfigError, match="exists already"):
        await store.add_schedule(nightly)
    await store.add_schedule(ScheduleRecord(id="every", workflow="w", definition={},
                                            input=None, every_s=60.0, next_at=50.0))
    assert [s.id for s in await store.list_schedules()] == ["every", "nightly"]
    assert await store.get_schedule("nightly") == nightly
    with pytest.raises(ConfigError, match=r"no schedule 'nope'.*every, nightly"):
        await store.get_schedule("nope")

    assert await store.set_schedule_paused("nightly", True)
    assert (await store.get_schedule("nightly")).paused
    assert await store.set_schedule_paused("nightly", False, next_at=200.0)
    got = await store.get_schedule("nightly")
    assert (got.paused, got.next_at) == (False, 200.0)
    assert not await store.set_schedule_paused("nope", True)

    # A slot is recorded once, and moves the schedule on; a second firer gets False.
    first = SlotRecord(200.0, "fired", "nightly-200", 201.0)
    assert await store.record_slot("nightly", first, next_at=300.0)
    assert not await store.record_slot("nightly", SlotRecord(200.0, "fired", "x", 202.0),
                                       next_at=300.0)
    assert (await store.get_schedule("nightly")).next_at == 300.0
    assert await store.record_slot("nightly", SlotRecord(300.0, "skipped", None, 301.0),
                                   next_at=400.0)
    # The run of the last fired slot is kept, whatever slots came after it.
    assert (await store.get_schedule("nightly")).last_run_id == "nightly-200"
    assert await store.schedule_slots("nightly") == [
        SlotRecord(300.0, "skipped", None, 301.0), first]
    # A late record of an older slot never moves the schedule back.
    assert await store.record_slot("nightly", SlotRecord(150.0, "missed", None, 302.0),
                                   next_at=200.0)
    assert (await store.get_schedule("nightly")).next_at == 400.0

    assert await store.delete_schedule("nightly")
    assert not await store.delete_schedule("nightly")
    assert await store.schedule_slots("nightly") == []
    assert [s.id for s in await store.list_schedules()] == ["every"]


async def test_signals_once_wakes_due_and_a_waiting_run_woken_once(store: Store) -> None:
    await store.write_batch(batch(new=[new_run("w1", status="waiting"),
                                       new_run("r1", status="running")]))
    assert await store.send_signal("w1", "approve:pay", {"approved": True}, 5.0)
    assert not await store.send_signal("w1", "approve:pay", {"approved": False}, 6.0)
    got = await store.get_signal("w1", "approve:pay")
    assert got is not None
    assert (got.data, got.at) == ({"approved": True}, 5.0)
    assert await store.get_signal("w1", "other") is None

    await store.set_wake("w1", 100.0)
    await store.set_wake("r1", 50.0)
    assert await store.wakes_due(40.0) == []
    assert await store.wakes_due(120.0) == ["r1", "w1"]
    await store.set_wake("r1", None)
    assert await store.wakes_due(120.0) == ["w1"]

    assert not await store.wake_run("r1")  # not waiting: untouched
    assert (await store.get_run("r1")).status == "running"
    assert await store.wake_run("w1")
    woken = await store.get_run("w1")
    assert (woken.status, woken.owner, woken.lease_expires_at) == ("pending", None, None)
    assert await store.wakes_due(120.0) == []
    assert not await store.wake_run("w1")  # once
