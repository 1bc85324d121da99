"""The alert manager, driven exactly: a fake clock, real events, real in-memory receivers.

Every rule kind is shown to fire once, stay deduplicated while its condition
holds (no second notification), and resolve with a resolve notification when
the condition clears. Escalation, repeat and acknowledgement are checked at
the exact times the policy names. Receivers here are small recording
receivers (they implement ``send`` like the log or webhook receivers do), fed
by the real ``Dispatcher``; the alert records and their history are read back
from a real store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from podium import FakeClock
from podium.definition import workflow_from_dict
from podium.definition.alerts import AlertsFile
from podium.events import (
    AgentHealthChanged,
    AgentRegistered,
    AlertEscalated,
    AlertFired,
    AlertResolved,
    ErrorInfo,
    Event,
    RunFinished,
    RunStarted,
    StepAttemptFailed,
    StepStarted,
    StepSucceeded,
)
from podium.observe.alerts import AlertManager
from podium.observe.receivers import Dispatcher, Notification
from podium.runtime import StoreLedger
from podium.store import MemoryStore
from podium.store.base import Store

MINUTE = 60.0
HOUR = 3600.0


class Recorder:
    """A receiver that keeps what it was sent (the in-memory twin of a webhook)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.notes: list[Notification] = []

    async def send(self, note: Notification) -> None:
        self.notes.append(note)

    async def aclose(self) -> None:
        return None

    def seen(self) -> list[tuple[str, str, str, int]]:
        """(status, key, severity, level) of every delivery, in order."""
        return [(n.status, n.alert.key, n.severity, n.level) for n in self.notes]


# Receivers named in policies must be declared; the dispatcher below replaces them.
RECEIVER_SPECS = [{"name": "oncall", "type": "log"}, {"name": "pager", "type": "log"}]

THREE_LEVELS = {
    "levels": [
        {"after": 0, "severity": "warning", "receivers": ["log"]},
        {"after": "15m", "severity": "critical", "receivers": ["oncall"]},
        {"after": "1h", "severity": "page", "receivers": ["pager"]},
    ],
}


@dataclass
class Harness:
    """An alert manager with its clock, store, receivers and the events it emitted."""

    manager: AlertManager
    clock: FakeClock
    store: Store
    receivers: dict[str, Recorder]
    emitted: list[Event] = field(default_factory=list)
    run_id: str = "run-1"
    workflow: str = "etl"

    @property
    def log(self) -> Recorder:
        return self.receivers["log"]

    def feed(self, event_type: type[Event], **fields: Any) -> None:
        """Deliver one real event to the manager, stamped with the fake clock's time."""
        fields.setdefault("ts", self.clock.now())
        if "run_id" not in fields and event_type not in (AgentRegistered, AgentHealthChanged):
            fields["run_id"] = self.run_id
        self.manager(event_type(**fields))

    def start_run(self, run_id: str | None = None, workflow: str | None = None) -> None:
        self.feed(RunStarted, run_id=run_id or self.run_id, workflow=workflow or self.workflow,
                  version=1)

    def finish_run(self, status: str = "succeeded", run_id: str | None = None) -> None:
        self.feed(RunFinished, run_id=run_id or self.run_id, workflow=self.workflow,
                  status=status, duration_s=1.0)

    def succeed(self, step: str = "load", agent: str = "loader", attempt: int = 1) -> None:
        self.feed(StepSucceeded, step_id=step, attempt=attempt, agent_id=agent, output=None,
                  duration_s=0.01)

    def fail(self, step: str = "load", agent: str = "loader", attempt: int = 1,
             error_type: str = "agent_error") -> None:
        self.feed(StepAttemptFailed, step_id=step, attempt=attempt, agent_id=agent,
                  error=ErrorInfo(error_type, "boom"), duration_s=0.01)

    def health(self, agent: str, new: str, old: str = "healthy") -> None:
        self.feed(AgentHealthChanged, agent_id=agent, old=old, new=new)

    async def after(self, seconds: float) -> None:
        """Let time pass, evaluate it, and wait until every notification was delivered."""
        self.clock.advance(seconds)
        await self.manager.tick()
        await self.manager.dispatcher.drain()

    async def settle(self) -> None:
        await self.manager.flush()
        await self.manager.dispatcher.drain()

    def events(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.emitted if isinstance(e, kind)]


def _config(rules: list[dict[str, Any]], **extra: Any) -> AlertsFile:
    return AlertsFile.model_validate({"rules": rules, "receivers": RECEIVER_SPECS, **extra})


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    managers: list[AlertManager] = []
    stores: list[Store] = []

    async def build(rules: list[dict[str, Any]], *, store: str = "memory",
                    **extra: Any) -> Harness:
        clock = FakeClock()
        st: Store
        if store == "sqlite":
            from podium.store.sqlite import SQLiteStore

            st = SQLiteStore(tmp_path / f"alerts-{len(stores)}.db")
        else:
            st = MemoryStore()
        await st.open()
        stores.append(st)
        receivers = {n: Recorder(n) for n in ("log", "oncall", "pager")}
        dispatcher = Dispatcher(dict(receivers), clock=clock)
        h = Harness(AlertManager(_config(rules, **extra), StoreLedger(st), clock=clock,
                                 dispatcher=dispatcher), clock, st, receivers)
        h.manager._emit = h.emitted.append
        h.manager.start()
        managers.append(h.manager)
        return h

    yield build
    for m in managers:
        await m.aclose()
    for s in stores:
        await s.close()


# --- sla ----------------------------------------------------------------------


async def test_run_sla_fires_while_the_run_is_still_running_once_and_resolves_when_it_ends(
    make: Any,
) -> None:
    h = await make([{"name": "etl-slow", "kind": "sla", "after": "10m"}])
    h.start_run()
    await h.after(9 * MINUTE)
    assert h.log.notes == []
    await h.after(61)  # 10m01s: past the SLA and the run has not finished
    key = "etl-slow:run-1"
    assert h.log.seen() == [("firing", key, "warning", 0)]
    alert = h.log.notes[0].alert
    assert alert.run_id == "run-1"
    assert alert.workflow == "etl"
    assert alert.labels == {"workflow": "etl"}
    assert "past its SLA of 10m" in alert.summary
    assert [e.key for e in h.events(AlertFired)] == [key]

    await h.after(5 * MINUTE)  # still running: deduplicated, no second notification
    assert len(h.log.notes) == 1
    assert len(h.events(AlertFired)) == 1

    h.finish_run()
    await h.settle()
    assert h.log.seen()[-1] == ("resolved", key, "warning", 0)
    assert key not in h.manager.active
    stored = await h.store.get_alert(key)
    assert stored is not None
    assert stored.status == "resolved"
    assert stored.resolved_at == h.clock.now()
    assert [e.key for e in h.events(AlertResolved)] == [key]


async def test_a_run_that_finishes_within_its_sla_never_alerts(make: Any) -> None:
    h = await make([{"name": "etl-slow", "kind": "sla", "after": "10m"}])
    h.start_run()
    await h.after(9 * MINUTE)
    h.finish_run()
    await h.after(HOUR)
    assert h.log.notes == []
    assert await h.store.list_alerts() == []


async def test_a_run_that_overran_between_two_ticks_still_records_the_violation(
    make: Any,
) -> None:
    h = await make([{"name": "etl-slow", "kind": "sla", "after": "10m"}])
    h.start_run()
    h.clock.advance(11 * MINUTE)  # no tick in between
    h.finish_run()
    await h.settle()
    assert h.log.seen() == [("firing", "etl-slow:run-1", "warning", 0),
                            ("resolved", "etl-slow:run-1", "warning", 0)]
    assert [a.status for a in await h.store.list_alerts()] == ["resolved"]


async def test_step_sla_fires_for_that_step_only_and_resolves_when_the_step_ends(
    make: Any,
) -> None:
    h = await make([{"name": "load-slow", "kind": "sla", "step": "load", "after": "30s"}])
    h.start_run()
    h.feed(StepStarted, step_id="extract", attempt=1, agent_id="x")
    h.feed(StepStarted, step_id="load", attempt=1, agent_id="loader")
    await h.after(29)
    assert h.log.notes == []
    await h.after(2)
    key = "load-slow:run-1/load"
    assert h.log.seen() == [("firing", key, "warning", 0)]
    assert h.log.notes[0].alert.labels == {"workflow": "etl", "step": "load"}
    await h.after(60)
    assert len(h.log.notes) == 1  # deduplicated; "extract" (also running) has no rule

    h.succeed(step="load")
    await h.settle()
    assert h.log.seen()[-1] == ("resolved", key, "warning", 0)
    assert h.manager.active == {}


async def test_workflow_sla_key_creates_an_implicit_rule_for_that_workflow_only(
    make: Any,
) -> None:
    h = await make([])
    wf = workflow_from_dict({"name": "etl", "sla": "10m",
                             "steps": [{"id": "load", "agent": "loader"}]})
    h.manager.watch_workflow(wf)
    h.start_run("run-1", "etl")
    h.start_run("run-2", "other")  # another workflow: no SLA of its own
    await h.after(10 * MINUTE + 1)
    assert h.log.seen() == [("firing", "etl-sla:run-1", "warning", 0)]
    await h.after(MINUTE)
    assert len(h.log.notes) == 1
    h.finish_run(run_id="run-1")
    await h.settle()
    assert h.log.seen()[-1] == ("resolved", "etl-sla:run-1", "warning", 0)


# --- error_rate ---------------------------------------------------------------

RATE = {"name": "loader-errors", "kind": "error_rate", "scope": "agent", "threshold": 0.5,
        "min_calls": 4, "window": "1m"}


async def test_error_rate_waits_for_min_calls_then_fires_once_and_dedupes(make: Any) -> None:
    h = await make([RATE])
    h.start_run()
    for attempt in (1, 2, 3):
        h.fail(attempt=attempt)
    await h.settle()
    assert h.log.notes == []  # 3/3 failed, but only 3 calls: below min_calls
    h.fail(attempt=4)
    await h.settle()
    key = "loader-errors:agent=loader"
    assert h.log.seen() == [("firing", key, "warning", 0)]
    assert h.log.notes[0].alert.labels == {"agent": "loader"}
    assert "error rate 100% over 4 calls" in h.log.notes[0].alert.summary
    h.fail(attempt=5)
    h.succeed(agent="loader")  # 5/6 still above the threshold
    await h.after(10)
    assert len(h.log.notes) == 1

    # Other agents are other subjects: one failure each, nothing fires for them.
    h.fail(agent="other")
    await h.settle()
    assert len(h.log.notes) == 1


async def test_error_rate_counts_only_the_window_and_resolves_as_failures_age_out(
    make: Any,
) -> None:
    h = await make([RATE])
    h.start_run()
    for attempt in (1, 2, 3):
        h.fail(attempt=attempt)
    await h.after(61)  # those three left the 1m window
    h.fail(attempt=4)
    await h.settle()
    assert h.log.notes == []  # 1 call in the window < min_calls

    for attempt in (5, 6, 7):
        h.fail(attempt=attempt)
    await h.settle()
    key = "loader-errors:agent=loader"
    assert h.log.seen() == [("firing", key, "warning", 0)]

    await h.after(30)
    assert len(h.log.notes) == 1  # still inside the window: still firing
    await h.after(31)  # every failure is now older than the window: time alone resolves it
    assert h.log.seen()[-1] == ("resolved", key, "warning", 0)
    assert h.manager.active == {}
    assert [a.status for a in await h.store.list_alerts()] == ["resolved"]


async def test_error_rate_resolves_when_successes_bring_the_rate_to_the_threshold(
    make: Any,
) -> None:
    h = await make([RATE])
    h.start_run()
    for attempt in range(1, 5):
        h.fail(attempt=attempt)
    await h.settle()
    assert len(h.log.notes) == 1
    for _ in range(3):
        h.succeed()
    await h.settle()
    assert len(h.log.notes) == 1  # 4/7 = 57% > 50%
    h.succeed()
    await h.settle()  # 4/8 = 50%: not above the threshold
    assert h.log.seen()[-1][0] == "resolved"


# --- consecutive_failures -------------------------------------------------------


async def test_consecutive_failures_reset_on_success_fire_at_count_and_resolve_on_success(
    make: Any,
) -> None:
    h = await make([{"name": "load-streak", "kind": "consecutive_failures", "scope": "step",
                     "count": 3}])
    h.start_run()
    h.fail()
    h.fail()
    h.succeed()  # the streak starts again
    h.fail()
    h.fail()
    await h.settle()
    assert h.log.notes == []
    h.fail()
    await h.settle()
    key = "load-streak:step=etl/load"
    assert h.log.seen() == [("firing", key, "warning", 0)]
    assert "3 consecutive failures" in h.log.notes[0].alert.summary
    h.fail()
    h.fail()
    await h.after(MINUTE)
    assert len(h.log.notes) == 1
    h.fail(step="extract")  # another step: its own streak of one
    await h.settle()
    assert len(h.log.notes) == 1
    h.succeed()
    await h.settle()
    assert h.log.seen()[-1] == ("resolved", key, "warning", 0)
    history = [x["what"] for x in await h.store.alert_history(key)]
    assert history == ["fired", "notified", "resolved"]


async def test_cancelled_attempts_do_not_count_as_failures(make: Any) -> None:
    h = await make([{"name": "streak", "kind": "consecutive_failures", "count": 2}])
    h.start_run()
    h.fail(error_type="cancelled")
    h.fail(error_type="cancelled")
    await h.settle()
    assert h.log.notes == []


# --- agent health -----------------------------------------------------------------


async def test_agent_unhealthy_fires_only_after_the_delay_and_resolves_on_recovery(
    make: Any,
) -> None:
    h = await make([{"name": "agent-down", "kind": "agent_unhealthy", "after": "2m"}])
    h.feed(AgentRegistered, agent_id="a1", capabilities=("summarize",), transport="http")
    h.health("a1", "unhealthy")
    await h.after(MINUTE)
    h.health("a1", "healthy", old="unhealthy")  # a blip shorter than 2m: never alerts
    await h.after(5 * MINUTE)
    assert h.log.notes == []

    h.health("a1", "unhealthy")
    await h.after(MINUTE + 59)
    assert h.log.notes == []
    await h.after(1)
    key = "agent-down:agent=a1"
    assert h.log.seen() == [("firing", key, "warning", 0)]
    assert h.log.notes[0].alert.labels == {"agent": "a1"}
    await h.after(10 * MINUTE)
    assert len(h.log.notes) == 1
    h.health("a1", "degraded", old="unhealthy")
    await h.settle()
    assert h.log.seen()[-1] == ("resolved", key, "warning", 0)


async def test_no_healthy_agents_fires_when_every_agent_of_a_capability_is_unhealthy(
    make: Any,
) -> None:
    h = await make([{"name": "no-summarizer", "kind": "no_healthy_agents", "after": "30s"}])
    h.feed(AgentRegistered, agent_id="a1", capabilities=("summarize",), transport="http")
    h.feed(AgentRegistered, agent_id="a2", capabilities=("summarize", "translate"),
           transport="http")
    h.feed(AgentRegistered, agent_id="t1", capabilities=("translate",), transport="http")
    h.health("a1", "unhealthy")
    await h.after(MINUTE)
    assert h.log.notes == []  # a2 still serves summarize
    h.health("a2", "unhealthy")
    await h.after(29)
    assert h.log.notes == []
    await h.after(1)
    key = "no-summarizer:capability=summarize"
    assert h.log.seen() == [("firing", key, "warning", 0)]  # translate still has t1
    assert h.log.notes[0].alert.labels == {"capability": "summarize"}
    await h.after(MINUTE)
    assert len(h.log.notes) == 1
    h.health("a1", "healthy", old="unhealthy")
    await h.settle()
    assert h.log.seen()[-1] == ("resolved", key, "warning", 0)
    assert h.manager.active == {}


# --- escalation, repeat, ack --------------------------------------------------------

STREAK_1 = {"name": "load-failing", "kind": "consecutive_failures", "count": 1,
            "escalation": "oncall"}
KEY_1 = "load-failing:workflow=etl"


async def test_escalation_climbs_three_levels_at_the_times_the_policy_names(
    make: Any,
) -> None:
    h = await make([STREAK_1], escalation={"oncall": THREE_LEVELS})
    h.start_run()
    t0 = h.clock.now()
    h.fail()
    await h.settle()
    assert h.log.seen() == [("firing", KEY_1, "warning", 0)]
    await h.after(15 * MINUTE - 1)
    assert h.receivers["oncall"].notes == []
    await h.after(1)
    assert h.receivers["oncall"].seen() == [("firing", KEY_1, "critical", 1)]
    await h.after(45 * MINUTE - 1)
    assert h.receivers["pager"].notes == []
    await h.after(1)
    assert h.receivers["pager"].seen() == [("firing", KEY_1, "page", 2)]
    await h.after(5 * HOUR)  # no level beyond the third, no repeat set: silence
    assert [len(r.notes) for r in h.receivers.values()] == [1, 1, 1]

    assert [(e.level, e.severity, e.receivers) for e in h.events(AlertEscalated)] == [
        (0, "warning", ("log",)), (1, "critical", ("oncall",)), (2, "page", ("pager",))]
    stored = await h.store.get_alert(KEY_1)
    assert stored is not None
    assert (stored.status, stored.level, stored.severity) == ("firing", 2, "page")
    assert stored.last_notified_at == t0 + HOUR
    history = await h.store.alert_history(KEY_1)
    assert [x["what"] for x in history] == ["fired", "notified", "escalated", "escalated"]
    assert history[2]["detail"] == "level 1: critical -> oncall"

    h.succeed()  # resolves: everyone who was told hears it is over
    await h.settle()
    for name in ("log", "oncall", "pager"):
        assert h.receivers[name].notes[-1].status == "resolved"


async def test_a_late_tick_notifies_every_level_that_came_due(make: Any) -> None:
    h = await make([STREAK_1], escalation={"oncall": THREE_LEVELS})
    h.start_run()
    h.fail()
    await h.after(2 * HOUR)
    assert [len(h.receivers[n].notes) for n in ("log", "oncall", "pager")] == [1, 1, 1]
    assert h.manager.active[KEY_1].level == 2


async def test_repeat_resends_the_current_level_every_interval(make: Any) -> None:
    policy = {"levels": [{"after": 0, "severity": "critical", "receivers": ["oncall"]}],
              "repeat": "10m"}
    h = await make([STREAK_1], escalation={"oncall": policy})
    h.start_run()
    h.fail()
    await h.settle()
    oncall = h.receivers["oncall"]
    assert len(oncall.notes) == 1
    await h.after(10 * MINUTE - 1)
    assert len(oncall.notes) == 1
    await h.after(1)
    assert len(oncall.notes) == 2
    await h.after(5 * MINUTE)
    assert len(oncall.notes) == 2
    await h.after(5 * MINUTE)
    assert len(oncall.notes) == 3
    assert {n.status for n in oncall.notes} == {"firing"}
    assert [x["what"] for x in await h.store.alert_history(KEY_1)] == [
        "fired", "notified", "repeated", "repeated"]

    assert h.manager.ack(KEY_1, "alice", h.clock.now())
    await h.after(HOUR)
    assert len(oncall.notes) == 3  # acknowledged: no more repeats


async def test_ack_through_the_manager_stops_escalation_but_not_resolution(make: Any) -> None:
    h = await make([STREAK_1], escalation={"oncall": THREE_LEVELS})
    h.start_run()
    h.fail()
    await h.after(5 * MINUTE)
    assert h.manager.ack(KEY_1, "alice", h.clock.now())
    assert not h.manager.ack(KEY_1, "bob", h.clock.now())  # already acknowledged
    assert not h.manager.ack("no-such:alert", "bob", h.clock.now())
    await h.after(2 * HOUR)
    assert h.receivers["oncall"].notes == []
    assert h.receivers["pager"].notes == []
    stored = await h.store.get_alert(KEY_1)
    assert stored is not None
    assert (stored.acked_by, stored.acked_at, stored.level) == ("alice",
                                                                stored.fired_at + 5 * MINUTE, 0)
    h.succeed()
    await h.settle()
    assert h.log.seen()[-1] == ("resolved", KEY_1, "warning", 0)
    assert h.receivers["oncall"].notes == []  # never told it fired, not told it resolved
    assert [x["what"] for x in await h.store.alert_history(KEY_1)] == [
        "fired", "notified", "acked", "resolved"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_ack_written_to_the_store_by_another_process_stops_escalation_on_next_tick(
    make: Any, store: str,
) -> None:
    h = await make([STREAK_1], escalation={"oncall": THREE_LEVELS}, store=store)
    h.start_run()
    h.fail()
    await h.after(10 * MINUTE)  # the tick persisted the alert
    # `podium alerts ack` in another process does exactly this on the same database:
    assert await h.store.ack_alert(KEY_1, "bob", h.clock.now())
    assert not await h.store.ack_alert(KEY_1, "carol", h.clock.now())
    await h.after(10 * MINUTE)  # 20m: would have reached level 1 without the ack
    assert h.receivers["oncall"].notes == []
    assert h.manager.active[KEY_1].acked_by == "bob"
    await h.after(2 * HOUR)
    assert h.receivers["pager"].notes == []
    stored = await h.store.get_alert(KEY_1)
    assert stored is not None
    assert (stored.status, stored.acked_by, stored.level) == ("firing", "bob", 0)
    h.succeed()
    await h.settle()
    stored = await h.store.get_alert(KEY_1)
    assert stored is not None
    assert (stored.status, stored.acked_by) == ("resolved", "bob")  # the ack is not lost
    assert [x["what"] for x in await h.store.alert_history(KEY_1)] == [
        "fired", "notified", "acked", "resolved"]


async def test_an_alert_that_fires_again_after_resolving_is_a_new_unacknowledged_alert(
    make: Any,
) -> None:
    h = await make([STREAK_1], escalation={"oncall": THREE_LEVELS}, store="sqlite")
    h.start_run()
    h.fail()
    await h.after(MINUTE)
    assert await h.store.ack_alert(KEY_1, "bob", h.clock.now())
    h.succeed()
    await h.after(MINUTE)
    h.fail()  # fires again: a fresh alert that escalates as usual
    await h.after(15 * MINUTE)
    assert h.receivers["oncall"].seen() == [("firing", KEY_1, "critical", 1)]
    stored = await h.store.get_alert(KEY_1)
    assert stored is not None
    assert (stored.status, stored.acked_at, stored.level) == ("firing", None, 1)


async def test_stored_records_list_newest_first_and_filter_by_status(make: Any) -> None:
    h = await make([{"name": "agent-down", "kind": "agent_unhealthy", "after": 0}],
                   store="sqlite")
    for agent in ("a1", "a2"):
        h.feed(AgentRegistered, agent_id=agent, capabilities=("x",), transport="http")
    h.health("a1", "unhealthy")
    await h.after(1)
    h.health("a2", "unhealthy")
    await h.after(1)
    h.health("a1", "healthy", old="unhealthy")
    await h.settle()
    alerts = await h.store.list_alerts()
    assert [(a.key, a.status) for a in alerts] == [("agent-down:agent=a2", "firing"),
                                                   ("agent-down:agent=a1", "resolved")]
    firing = await h.store.list_alerts(status="firing")
    assert [a.key for a in firing] == ["agent-down:agent=a2"]
    assert firing[0].to_dict() == h.manager.active["agent-down:agent=a2"].to_dict()


async def test_without_an_escalation_policy_the_rule_severity_is_kept(make: Any) -> None:
    h = await make([{"name": "streak", "kind": "consecutive_failures", "count": 1,
                     "severity": "critical"}])
    h.start_run()
    h.fail()
    await h.after(HOUR)
    assert h.log.seen() == [("firing", "streak:workflow=etl", "critical", 0)]
    assert [e.severity for e in h.events(AlertFired)] == ["critical"]
    stored = await h.store.get_alert("streak:workflow=etl")
    assert stored is not None
    assert stored.severity == "critical"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_alert_history_is_stamped_with_the_time_each_thing_happened(
    make: Any, store: str,
) -> None:
    h = await make([{"name": "streak", "kind": "consecutive_failures", "count": 1}],
                   store=store)
    h.start_run()
    t0 = h.clock.now()
    h.fail()
    await h.after(10 * MINUTE)
    h.manager.ack("streak:workflow=etl", "alice", h.clock.now())
    await h.after(10 * MINUTE)
    h.succeed()
    await h.settle()
    history = await h.store.alert_history("streak:workflow=etl")
    assert [(x["what"], x["ts"] - t0) for x in history] == [
        ("fired", 0), ("notified", 0), ("acked", 600), ("resolved", 1200)]


async def test_a_later_process_takes_up_a_firing_alert_and_resolves_it() -> None:
    """An alert left firing by one process (a failure streak) resolves in the next one."""
    from podium.definition.alerts import AlertsFile
    from podium.events import ErrorInfo, RunStarted, StepAttemptFailed, StepSucceeded
    from podium.observe.alerts import AlertManager
    from podium.store import MemoryStore

    store = MemoryStore()
    clock = FakeClock()
    config = AlertsFile.model_validate(
        {"rules": [{"name": "streak", "kind": "consecutive_failures", "count": 1}]})
    first = AlertManager(config, StoreLedger(store), clock=clock)
    first(RunStarted(run_id="r1", ts=clock.now(), workflow="etl", version=1))
    first(StepAttemptFailed(run_id="r1", ts=clock.now(), step_id="a", attempt=1, agent_id="x",
                            error=ErrorInfo("agent_error", "boom"), duration_s=0.1))
    await first.flush()
    assert [a.status for a in await store.list_alerts()] == ["firing"]

    second = AlertManager(config, StoreLedger(store), clock=clock)
    await second.tick()
    assert "streak:workflow=etl" in second.active
    clock.advance(60)
    second(RunStarted(run_id="r2", ts=clock.now(), workflow="etl", version=1))
    second(StepSucceeded(run_id="r2", ts=clock.now(), step_id="a", attempt=1, agent_id="x",
                         output=None, duration_s=0.1))
    await second.flush()
    stored = await store.get_alert("streak:workflow=etl")
    assert stored is not None
    assert stored.status == "resolved"
    assert stored.resolved_at == clock.now()
