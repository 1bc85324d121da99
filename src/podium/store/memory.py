"""The in-memory store: the real interface with nothing persisted.

Used when no database is wanted (tests, benchmarks of the bare engine) and as
the reference the durable stores are checked against (``tests/contract``). It
keeps what batches give it, as values: rows as they were cut, outputs as the
JSON text they arrived in (decoded only when a run is read back).
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

import orjson

from podium.errors import ConfigError, RunNotFound, StoreError
from podium.events import (
    ErrorInfo,
    Event,
    RunStarted,
    RunSubmitted,
    RunTraced,
    StepAttemptFailed,
    StepSucceeded,
)
from podium.state import (
    TERMINAL_RUN_STATUSES,
    AlertRecord,
    AttemptOutcome,
    RunRecord,
    RunStatus,
    StepRecord,
)
from podium.store.base import (
    NO_RUNS,
    PRUNE_BATCH_RUNS,
    Batch,
    FeedPosition,
    JoinedAgent,
    JoinLimits,
    RegisteredWorkflow,
    ScheduleRecord,
    Signal,
    SlotRecord,
    StepRow,
    TokenRecord,
    WorkflowVersion,
    prune_statuses,
)
from podium.store.registry import (
    agent_taken,
    prepare_registration,
    too_many_agents,
    version_taken,
)

__all__ = ["MemoryStore"]


def _error(text: str | None) -> ErrorInfo | None:
    return None if text is None else ErrorInfo.from_dict(orjson.loads(text))


class MemoryStore:
    url = "memory://"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # The store's clock, on which leases are measured (``RunStore.now``).
        self._clock = clock
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[Event]] = {}
        # Definitions as JSON text, as a database keeps them: a snapshot the caller's
        # dict cannot change, ten times cheaper than a deep copy (3 ms of a 1,000-step
        # workflow's first run).
        self._workflows: dict[tuple[str, str], bytes] = {}
        self._alerts: dict[str, AlertRecord] = {}
        self._alert_history: list[dict[str, Any]] = []
        # Step rows as the last batch left them, outputs as JSON text (run -> step -> row).
        self._steps: dict[str, dict[str, StepRow]] = {}
        self._schedules: dict[str, ScheduleRecord] = {}
        self._signals: dict[tuple[str, str], Signal] = {}
        self._wakes: dict[str, float] = {}
        self._slots: dict[str, dict[float, SlotRecord]] = {}
        self._registered: dict[tuple[str, str], RegisteredWorkflow] = {}
        self._tokens: dict[str, tuple[TokenRecord, bytes, bytes]] = {}
        # Every committed event with its feed position, in commit order (``read_feed``).
        self._feed: list[tuple[int, str, int, Event]] = []
        self._batches = 0
        # Agents that joined through the API: id -> (row, the token that registered it).
        self._joined: dict[str, tuple[JoinedAgent, str]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def save_workflow(
        self, name: str, version: int | str, definition: dict[str, Any]
    ) -> None:
        self._workflows[(name, str(version))] = orjson.dumps(definition)

    async def now(self) -> float:
        return self._clock()

    async def write_batch(self, batch: Batch) -> frozenset[str]:
        return self.write_batch_now(batch)

    def write_batch_now(self, batch: Batch) -> frozenset[str]:
        """All of the batch or nothing: checked whole before anything is changed.

        Ownership is checked on every batch (dictionary lookups: nothing to save)."""
        lost = NO_RUNS
        runs = self._runs
        if batch.owner is not None and batch.epochs:
            lost = frozenset(
                rid for rid, epoch in batch.epochs.items()
                if (r := runs.get(rid)) is not None and (r.owner, r.epoch) != (batch.owner, epoch))
        taken = [r.run_id for r in batch.new_runs if r.run_id in runs]
        if taken:
            lost = lost.union(taken)
        if lost:
            batch = batch.without(lost)
        self._apply(batch)
        return lost

    def _apply(self, batch: Batch) -> None:
        counts: dict[str, int] = {}
        for r in batch.new_runs:
            if r.run_id in self._runs:
                raise StoreError(f"run {r.run_id} exists already")
            counts[r.run_id] = 0
        for e, seq in zip(batch.source, batch.seqs, strict=True):
            rid = e.run_id
            n = counts.get(rid)
            if n is None:
                if rid not in self._events:
                    raise StoreError(f"events of an unknown run {rid}")
                n = len(self._events[rid])
            if seq != n + 1:
                raise StoreError(f"event {seq} of run {rid} after {n}: a gap or twice")
            counts[rid] = seq
        for r in batch.new_runs:
            self._runs[r.run_id] = RunRecord(
                run_id=r.run_id, workflow=r.workflow, version=r.version,
                definition=r.definition, input=orjson.loads(r.input_json), status=r.status,
                output=orjson.loads(r.output_json), error=_error(r.error_json),
                created_at=r.created_at,
                started_at=r.started_at, finished_at=r.finished_at, owner=r.owner,
                lease_expires_at=r.lease_expires_at, agents_source=dict(r.agents_source or {}),
                phase=r.phase, queue=r.queue)
            self._events[r.run_id] = []
            self._steps[r.run_id] = {}
        for e in batch.source:
            self._events[e.run_id].append(e)
        if batch.source:
            self._batches += 1
            tx = self._batches
            self._feed += sorted(
                ((tx, e.run_id, seq, e) for e, seq in zip(batch.source, batch.seqs, strict=True)),
                key=lambda row: row[1:3])
        finished = set(batch.finished)
        for r in batch.runs:
            run = self._runs[r.run_id]
            run.status, run.output = r.status, orjson.loads(r.output_json)
            run.error = _error(r.error_json)
            run.started_at, run.finished_at, run.phase = r.started_at, r.finished_at, r.phase
            if r.run_id in finished:
                run.cancel_requested = False
        for s in batch.steps:
            rows = self._steps[s.run_id]
            old = rows.get(s.step_id)
            if s.output_json is None and old is not None and old.output_json is not None:
                s = s._replace(output_json=old.output_json)
            rows[s.step_id] = s

    async def prune_runs(self, finished_before: float, *,
                         statuses: Collection[str] | None = None,
                         workflow: str | None = None, dry_run: bool = False,
                         batch_runs: int = PRUNE_BATCH_RUNS) -> int:
        """One pass (nothing else runs between two statements of a coroutine here), so
        ``batch_runs`` bounds nothing; the feed loses the entries of the runs that went."""
        picked = set(prune_statuses(statuses))
        runs = self._runs
        now = self._clock()

        def free(r: RunRecord) -> bool:  # ended, and held by no process (as claim_run says)
            return r.status in TERMINAL_RUN_STATUSES and (
                r.owner is None or r.lease_expires_at is None or r.lease_expires_at < now)

        going: list[str] = []
        for rid, r in runs.items():
            if ("." in rid or r.status not in picked or r.finished_at is None
                    or r.finished_at >= finished_before or not free(r)
                    or (workflow is not None and r.workflow != workflow)):
                continue
            tree = [rid, *(k for k in runs if k.startswith(rid + "."))]
            if all(free(runs[k]) for k in tree):
                going += tree
        if dry_run or not going:
            return len(going)
        gone = set(going)
        for rid in going:
            del runs[rid]
            self._events.pop(rid, None)
            self._steps.pop(rid, None)
            self._wakes.pop(rid, None)
        self._signals = {k: v for k, v in self._signals.items() if k[0] not in gone}
        self._feed = [row for row in self._feed if row[1] not in gone]
        return len(going)

    async def read_feed(self, after: FeedPosition, *, limit: int = 500
                        ) -> tuple[list[tuple[FeedPosition, Event]], FeedPosition]:
        key = (after.tx, after.run_id, after.seq)
        start = bisect.bisect_right(self._feed, key, key=lambda row: row[:3])
        page = [(FeedPosition(tx, rid, seq), e)
                for tx, rid, seq, e in self._feed[start:start + max(limit, 0)]]
        return page, page[-1][0] if page else after

    async def feed_head(self) -> FeedPosition:
        if not self._feed:
            return FeedPosition()
        tx, rid, seq, _ = self._feed[-1]
        return FeedPosition(tx, rid, seq)

    async def join_agent(self, agent_id: str, spec: dict[str, Any], token_id: str,
                         ttl_s: float, limits: JoinLimits | None = None
                         ) -> tuple[JoinedAgent, bool]:
        limits = limits or JoinLimits()
        now = self._clock()
        # Expired rows go (as the SQL stores delete them); no await from here to the
        # write, so the count below is the one the insert lands on.
        for gone in [k for k, (r, _) in self._joined.items() if r.expires_at <= now]:
            del self._joined[gone]
        before = self._joined.get(agent_id)
        if before is not None and before[1] != token_id:
            raise agent_taken(agent_id)
        kept = before is not None
        if not kept:
            mine = sum(1 for _, t in self._joined.values() if t == token_id)
            if mine >= limits.per_token or len(self._joined) >= limits.total:
                raise too_many_agents(limits, mine, len(self._joined))
        row = JoinedAgent(agent_id, copy.deepcopy(spec),
                          before[0].registered_at if before is not None and kept else now,
                          now + ttl_s)
        self._joined[agent_id] = (row, token_id)
        return row, not kept

    async def agent_heartbeat(self, agent_id: str, token_id: str, ttl_s: float
                              ) -> float | None:
        now = self._clock()
        found = self._joined.get(agent_id)
        if found is None or found[1] != token_id or found[0].expires_at <= now:
            return None
        self._joined[agent_id] = (dataclasses.replace(found[0], expires_at=now + ttl_s),
                                  token_id)
        return now + ttl_s

    async def leave_agent(self, agent_id: str, token_id: str | None) -> bool:
        found = self._joined.get(agent_id)
        if found is None or (token_id is not None and found[1] != token_id):
            return False
        del self._joined[agent_id]
        return True

    async def joined_agents(self) -> list[JoinedAgent]:
        now = self._clock()
        return [row for row, _ in sorted(self._joined.values(), key=lambda r: r[0].id)
                if row.expires_at > now]

    async def batch_committed(self, batch: Batch) -> bool:
        return all(len(self._events.get(rid, ())) >= seq for rid, seq in batch.last_seq.items())

    async def last_seq(self, run_id: str) -> int:
        return len(self._events.get(run_id, ()))

    def _find(self, run_id: str) -> RunRecord:
        run = self._runs.get(run_id)
        if run is not None:
            return run
        matches = [r for k, r in self._runs.items() if k.startswith(run_id)
                   and ("." not in k or "." in run_id)]  # child runs: only when asked
        if len(matches) == 1:
            return matches[0]
        raise RunNotFound(
            f"no run '{run_id}'" if not matches else f"'{run_id}' is ambiguous", run_id=run_id
        )

    async def get_run(self, run_id: str) -> RunRecord:
        run = copy.deepcopy(self._find(run_id))
        for sid, r in self._steps.get(run.run_id, {}).items():
            run.steps[sid] = StepRecord(
                sid, r.status, r.attempts, r.agent_id,
                None if r.output_json is None else orjson.loads(r.output_json),
                _error(r.error_json), r.started_at, r.finished_at, r.next_retry_at, r.optional,
                r.completed_seq, r.compensation_status, r.compensation_attempts,
                _error(r.compensation_error_json))
        run.completions = max((s.completed_seq or 0 for s in run.steps.values()), default=0)
        return run

    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[RunRecord]:
        runs = [
            r
            for r in self._runs.values()
            if (status is None or r.status == status)
            and (workflow is None or r.workflow == workflow)
            and (before is None or (r.created_at, r.run_id) < before)
        ]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        out = []
        for r in runs[:limit]:
            c = copy.copy(r)
            c.steps = {}
            out.append(c)
        return out

    async def get_events(self, run_id: str) -> Sequence[Event]:
        return list(self._events.get(self._find(run_id).run_id, []))

    async def trace_context(self, run_id: str) -> str | None:
        for e in self._events.get(run_id, ()):
            if isinstance(e, RunSubmitted | RunStarted | RunTraced) and e.traceparent:
                return e.traceparent
        return None

    async def request_cancel(self, run_id: str) -> bool:
        run = self._find(run_id)
        if run.status in TERMINAL_RUN_STATUSES:
            return False
        run.cancel_requested = True
        return True

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        return {r for r in run_ids if r in self._runs and self._runs[r].cancel_requested}

    async def claim_run(self, run: RunRecord, owner: str, *, lease_s: float,
                        recoveries: int, owner_dead: bool = False) -> bool:
        stored = self._find(run.run_id)
        now = self._clock()
        free = (stored.owner is None or stored.owner == owner or owner_dead
                or stored.lease_expires_at is None or stored.lease_expires_at < now)
        if stored.epoch != run.epoch or not free:
            return False
        if recoveries > stored.recoveries:
            stored.recovered_at = run.recovered_at = now
        stored.epoch = run.epoch = run.epoch + 1
        stored.owner = run.owner = owner
        stored.lease_expires_at = run.lease_expires_at = now + lease_s
        stored.recoveries = run.recoveries = recoveries
        run.cancel_requested = stored.cancel_requested
        return True

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        run = self._runs.get(run_id)
        if run is not None and (force or run.owner == owner):
            run.owner = None

    async def renew_leases(self, owner: str, run_ids: Collection[str],
                           lease_s: float) -> set[str]:
        until = self._clock() + lease_s
        lost = set()
        for r in run_ids:
            run = self._runs.get(r)
            if run is not None and run.owner == owner:
                run.lease_expires_at = until
            else:
                lost.add(r)
        return lost

    async def save_alert(
        self, alert: AlertRecord, what: str, detail: str = "", ts: float | None = None
    ) -> None:
        kept = copy.deepcopy(alert)
        old = self._alerts.get(alert.key)
        if old is not None and old.fired_at == alert.fired_at and kept.acked_at is None:
            # An ack made elsewhere (podium alerts ack) of this same firing is kept.
            kept.acked_at, kept.acked_by = old.acked_at, old.acked_by
        self._alerts[alert.key] = kept
        when = ts if ts is not None else (alert.last_notified_at or alert.fired_at)
        self._alert_history.append({"key": alert.key, "ts": when, "what": what, "detail": detail})

    async def list_alerts(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[AlertRecord]:
        alerts = [
            copy.deepcopy(a) for a in self._alerts.values() if status is None or a.status == status
        ]
        alerts.sort(key=lambda a: a.fired_at, reverse=True)
        return alerts[:limit]

    async def get_alert(self, key: str) -> AlertRecord | None:
        a = self._alerts.get(key)
        return copy.deepcopy(a) if a else None

    async def ack_alert(self, key: str, by: str, now: float) -> bool:
        a = self._alerts.get(key)
        if a is None or a.status != "firing" or a.acked_at is not None:
            return False
        a.acked_at, a.acked_by = now, by
        self._alert_history.append({"key": key, "ts": now, "what": "acked", "detail": by})
        return True

    async def alert_history(self, key: str) -> list[dict[str, Any]]:
        return [dict(h) for h in self._alert_history if h["key"] == key]

    async def attempt_outcomes(self, since: float) -> list[AttemptOutcome]:
        out = []
        for run_id, events in self._events.items():
            workflow = self._runs[run_id].workflow
            for e in events:
                if e.ts < since:
                    continue
                if isinstance(e, StepSucceeded):
                    out.append(
                        AttemptOutcome(
                            e.ts, run_id, workflow, e.step_id, e.agent_id, e.attempt, True
                        )
                    )
                elif isinstance(e, StepAttemptFailed):
                    out.append(
                        AttemptOutcome(
                            e.ts,
                            run_id,
                            workflow,
                            e.step_id,
                            e.agent_id,
                            e.attempt,
                            False,
                            e.error.type,
                            e.error.message,
                        )
                    )
        out.sort(key=lambda o: o.ts)
        return out

    # --- the workflow registry ----------------------------------------------
    async def register_workflow(self, name: str, version: int | str,
                                definition: dict[str, Any]) -> tuple[RegisteredWorkflow, bool]:
        reg = prepare_registration(name, version, definition)
        had = self._registered.get((name, reg.version))
        if had is not None:
            if had.digest != reg.digest:
                raise version_taken(name, reg.version)
            return copy.deepcopy(had), False
        new = RegisteredWorkflow(name, reg.version, reg.digest, self._clock(),
                                 orjson.loads(reg.text))
        self._registered[(name, reg.version)] = new
        return copy.deepcopy(new), True

    async def registered_workflow(self, name: str,
                                  version: int | str | None = None) -> RegisteredWorkflow | None:
        if version is not None:
            found = self._registered.get((name, str(version)))
        else:
            # As the databases order: newest registration first, then the greater version.
            mine = [w for (n, _), w in self._registered.items() if n == name]
            found = max(mine, key=lambda w: (w.registered_at, w.version), default=None)
        return None if found is None else copy.deepcopy(found)

    async def registered_workflows(self) -> list[WorkflowVersion]:
        rows = sorted(self._registered.values(), key=lambda w: (w.registered_at, w.version),
                      reverse=True)
        rows.sort(key=lambda w: w.name)  # stable: each name's newest first
        return [WorkflowVersion(w.name, w.version, w.digest, w.registered_at) for w in rows]

    # --- schedules ----------------------------------------------------------
    async def add_schedule(self, schedule: ScheduleRecord) -> None:
        if schedule.id in self._schedules:
            raise ConfigError(f"a schedule '{schedule.id}' exists already (fix: --name another,"
                              " or `podium schedule delete` it)")
        self._schedules[schedule.id] = copy.deepcopy(schedule)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [copy.deepcopy(s) for _, s in sorted(self._schedules.items())]

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        found = self._schedules.get(schedule_id)
        if found is None:
            raise ConfigError(f"no schedule '{schedule_id}' (fix: one of: "
                              f"{', '.join(sorted(self._schedules)) or 'none yet'}; see"
                              " `podium schedule list`)")
        return copy.deepcopy(found)

    async def set_schedule_paused(self, schedule_id: str, paused: bool,
                                  next_at: float | None = None) -> bool:
        found = self._schedules.get(schedule_id)
        if found is None:
            return False
        found.paused = paused
        if next_at is not None:
            found.next_at = next_at
        return True

    async def delete_schedule(self, schedule_id: str) -> bool:
        self._slots.pop(schedule_id, None)
        return self._schedules.pop(schedule_id, None) is not None

    async def record_slot(self, schedule_id: str, slot: SlotRecord, next_at: float) -> bool:
        slots = self._slots.setdefault(schedule_id, {})
        if slot.slot in slots:
            return False
        slots[slot.slot] = slot
        found = self._schedules.get(schedule_id)
        if found is not None:
            found.next_at = max(found.next_at, next_at)
            found.last_run_id = slot.run_id or found.last_run_id
        return True

    async def schedule_slots(self, schedule_id: str, limit: int = 20) -> list[SlotRecord]:
        slots = self._slots.get(schedule_id, {})
        return [slots[k] for k in sorted(slots, reverse=True)[:limit]]

    # --- waits --------------------------------------------------------------
    async def send_signal(self, run_id: str, name: str, data: Any, at: float) -> bool:
        if (run_id, name) in self._signals:
            return False
        self._signals[(run_id, name)] = Signal(name, copy.deepcopy(data), at)
        return True

    async def get_signal(self, run_id: str, name: str) -> Signal | None:
        found = self._signals.get((run_id, name))
        return None if found is None else Signal(found.name, copy.deepcopy(found.data),
                                                 found.at)

    async def set_wake(self, run_id: str, wake_at: float | None) -> None:
        if wake_at is None:
            self._wakes.pop(run_id, None)
        else:
            self._wakes[run_id] = wake_at

    async def wake_run(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.status != RunStatus.WAITING:
            return False
        run.status, run.owner, run.lease_expires_at = RunStatus.PENDING, None, None
        self._wakes.pop(run_id, None)
        return True

    async def wakes_due(self, now: float, limit: int = 100) -> list[str]:
        return [r for r, at in sorted(self._wakes.items(), key=lambda x: x[1])
                if at <= now][:limit]

    # --- API tokens ---------------------------------------------------------------------
    async def add_token(self, record: TokenRecord, salt: bytes, hash: bytes) -> None:
        if record.id in self._tokens:
            raise ConfigError(f"a token with id '{record.id}' exists already (fix: create"
                              " another)")
        self._tokens[record.id] = (record, bytes(salt), bytes(hash))

    async def token_secret(self, token_id: str) -> tuple[TokenRecord, bytes, bytes] | None:
        return self._tokens.get(token_id)

    async def list_tokens(self) -> list[TokenRecord]:
        return sorted((t[0] for t in self._tokens.values()),
                      key=lambda r: (r.created_at, r.id))

    async def revoke_token(self, token_id: str, at: float) -> bool:
        found = self._tokens.get(token_id)
        if found is None or found[0].revoked_at is not None:
            return False
        self._tokens[token_id] = (dataclasses.replace(found[0], revoked_at=at), *found[1:])
        return True

    async def count_usable_tokens(self, now: float) -> int:
        return sum(1 for r, _, _ in self._tokens.values() if r.revoked_at is None
                   and (r.expires_at is None or r.expires_at > now))

    async def touch_token(self, token_id: str, at: float) -> None:
        found = self._tokens.get(token_id)
        if found is not None and (found[0].last_used_at is None
                                  or found[0].last_used_at < at):
            self._tokens[token_id] = (dataclasses.replace(found[0], last_used_at=at),
                                      *found[1:])
