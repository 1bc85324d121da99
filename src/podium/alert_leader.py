"""Alert rules evaluated once for a whole fleet, by whichever process leads "alerts".

Many processes execute the runs of one PostgreSQL database (``podium worker``,
``podium run``, ``podium serve``). If each evaluated the rules on its own events,
a fleet-wide error rate would be a per-process one, a streak of failures spread
over three workers would never count to three, and an SLA alert would fire once
per process that watched the run. So one process at a time evaluates them: the
holder of the store's ``alerts`` role (an advisory lock), reading the feed of every
process's committed events in commit order. Every other process keeps its alert
manager only for what it sees itself, the health of the agents it probes (health
is not shared between workers), and evaluates nothing.

When the leader dies, its session ends and its lock is freed; within
``retry_s`` another process takes the role and carries on from the position the
last leader saved once it had evaluated what it read and stored the alerts that
came of it. Events a death cut short between the two are evaluated again rather
than lost: alerts are deduplicated by key (one fires once), a window of an error
rate may count those events twice. Notifications are at least once: one sent but
not yet recorded as sent when its leader died is sent again by the next. A leader
frozen past the server's idle limit for its session (``SIGSTOP``) loses the role
the same way, and on waking its next read fails and it steps down.

What a new leader cannot read back is what its predecessor only held in memory:
error-rate windows and failure streaks start afresh; firing alerts (with their
acknowledgements), running runs and running steps are read from the store, so
SLAs keep counting from the real start.
"""

from __future__ import annotations

import contextlib
import logging

from podium.definition.loader import workflow_from_dict
from podium.errors import PodiumError, StoreError
from podium.events import (
    AgentHealthChanged,
    AgentRegistered,
    AgentUnregistered,
    Event,
    RunStarted,
)
from podium.observe.alerts import AlertManager
from podium.rounds import Rounds
from podium.state import RunStatus, StepStatus
from podium.store.base import FEED_POSITION_STALE_S, FeedPosition, RunStore, WorkerStore

__all__ = ["ROLE", "AlertLeader"]

log = logging.getLogger("podium.alerts")

ROLE = "alerts"
_AGENT_EVENTS = (AgentRegistered, AgentUnregistered, AgentHealthChanged)
# Runs going when a leader takes over whose running steps it reads back (only when a
# rule watches single steps): one read each, so bounded.
_MAX_STEP_READS = 1000


class AlertLeader(Rounds):
    """Competes for the ``alerts`` role; while it holds it, evaluates the fleet's events.

    ``retry_s``: how often a process that does not lead tries to (the longest a fleet
    goes without a leader after one dies). ``read_s``: how often a leader reads the
    feed while events come; ``idle_read_max_s``: the longest it waits while none do
    (each idle read doubles the wait). ``stale_s``: a saved position older than this
    (the fleet was down, or nobody led) is not replayed: old events would fire alerts
    about the past; the new leader starts from now.
    """

    _what = "alert evaluation"
    _log = log

    def __init__(self, store: WorkerStore, runs: RunStore, manager: AlertManager, *,
                 holder: str, retry_s: float = 10.0, read_s: float = 1.0,
                 idle_read_max_s: float = 10.0, stale_s: float = FEED_POSITION_STALE_S,
                 page: int = 1000) -> None:
        self.store = store
        self.runs = runs
        self.manager = manager
        self.holder = holder
        self.retry_s = retry_s
        self.read_s = read_s
        self.idle_read_max_s = idle_read_max_s
        self.stale_s = stale_s
        self.page = page
        self.leading = False
        self._position = FeedPosition()
        self._wait = read_s
        self._versions: dict[str, int | str] = {}  # workflow -> version whose rules are on

    # --- the local bus --------------------------------------------------------
    def local(self, event: Event) -> None:
        """This process's own events: only its agents' health counts here (run and step
        events reach the leader through the feed, from every process alike)."""
        if isinstance(event, _AGENT_EVENTS):
            self.manager(event)

    # --- rounds ---------------------------------------------------------------
    async def round(self) -> float:
        """Lead if possible, then read and evaluate; the seconds to wait until the next."""
        if not self.leading:
            try:
                if not await self.store.lead(ROLE):
                    return self.retry_s
                await self._take_over()
            except (StoreError, PodiumError) as exc:
                self._troubled(f"{self.holder}: cannot lead alert evaluation: {exc}")
                return self.retry_s
        try:
            read = await self._read()
        except StoreError as exc:
            self._step_down(f"lost the lead of alert evaluation: {exc}")
            return self.retry_s
        self._trouble = None
        await self.manager.tick()
        if read:
            # What was read is evaluated and its alerts stored: say so now, not with the
            # next read, so a successor replays only what a death cut short.
            try:
                await self.store.feed(ROLE, self._position, holder=self.holder, limit=0)
            except StoreError as exc:
                self._step_down(f"lost the lead of alert evaluation: {exc}")
                return self.retry_s
        self._wait = self.read_s if read else min(self._wait * 2, self.idle_read_max_s)
        return self._wait

    async def _take_over(self) -> None:
        self.manager.reset()
        self._versions.clear()
        saved = await self.store.feed_position(ROLE)
        if saved is not None and saved[1] <= self.stale_s:
            self._position, since = saved[0], "where the last leader stopped"
        else:
            self._position = await self.store.feed_head()
            since = "now" if saved is None else "now (the last position is stale)"
        going = await self.runs.list_runs(status=RunStatus.RUNNING, limit=10_000)
        for run in going:
            self._watch(run.workflow, run.version, run.definition, run.run_id)
            self.manager.track_run(run.run_id, run.workflow, run.started_at or run.created_at)
        if self.manager.wants_steps():
            for run in going[:_MAX_STEP_READS]:
                with contextlib.suppress(PodiumError):
                    full = await self.runs.get_run(run.run_id)
                    for step_id, step in full.steps.items():
                        if step.status == StepStatus.RUNNING and step.started_at is not None:
                            self.manager.track_step(run.run_id, step_id, step.started_at)
        # Before any event is evaluated: one that fired an alert the last leader kept
        # (read again, as its last round is) finds that alert firing, not a new one.
        await self.manager.restore()
        self.leading, self._wait = True, self.read_s
        log.info("%s: evaluating the fleet's alert rules, from %s (%d runs going)",
                 self.holder, since, len(going))

    async def _read(self) -> int:
        """Every event committed since the last read, a few pages at most per round."""
        total = 0
        for _ in range(10):
            events, position = await self.store.feed(ROLE, self._position, holder=self.holder,
                                                      limit=self.page)
            for event in events:
                if isinstance(event, RunStarted) and \
                        self._versions.get(event.workflow) != event.version:
                    await self._watch_run(event)
            for event in events:
                if not isinstance(event, _AGENT_EVENTS):  # each process judges its own
                    self.manager(event)
            self._position = position
            total += len(events)
            if len(events) < self.page:
                break
        return total

    async def _watch_run(self, event: RunStarted) -> None:
        try:
            run = await self.runs.get_run(event.run_id)
        except PodiumError as exc:
            log.warning("run %s: its workflow's alert rules are unknown here: %s",
                        event.run_id, exc)
            self._versions[event.workflow] = event.version
            return
        self._watch(run.workflow, run.version, run.definition, run.run_id)

    def _watch(self, workflow: str, version: int | str, definition: dict[str, object],
               run_id: str) -> None:
        """The rules a workflow carries (``alerts:``, ``sla:``), from its stored definition."""
        if self._versions.get(workflow) == version:
            return
        self._versions[workflow] = version
        try:
            self.manager.watch_workflow(workflow_from_dict(
                definition, source=f"run {run_id} (stored definition)"))
        except PodiumError as exc:
            log.warning("workflow %s: its alert rules cannot be read: %s", workflow, exc)

    def _step_down(self, why: str) -> None:
        if self.leading:
            log.warning("%s: %s", self.holder, why)
        self.leading = False
        self.manager.reset()


    # --- lifecycle ------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop; a leader first evaluates what was committed until now (its process's
        last runs, often) and saves its position, so its successor starts after it."""
        await self.stop()
        if self.leading:
            try:
                await self._read()
                await self.manager.tick()
                await self.store.feed(ROLE, self._position, holder=self.holder, limit=0)
            except StoreError as exc:
                log.warning("%s: last alert evaluation failed: %s", self.holder, exc)
