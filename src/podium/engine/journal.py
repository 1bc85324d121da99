"""The engine's journal: every event on its way to the store, and what is durable yet.

The durability rule is the engine's to keep, whatever the store's latency:
a step's success is committed before any dependent starts. So the engine
numbers every event it appends (its *position*) and asks the journal to make
everything up to a position durable (``commit_through``), or only soon
(``soon``). The journal cuts what is pending into one ``Batch`` (group
commit: every step finishing in the same loop turn shares it), takes the
rows those events changed as values at that instant, and hands the batch to
the store. At most one batch is on the wire at a time; the next forms
meanwhile, and an event appended while a commit is in flight is known to be
durable only once *its* batch has committed (``durable``), never sooner.

A commit whose outcome the store could not know (``CommitUnknown``: the
connection dropped during COMMIT) is read back from the store before anything
is written again: a landed batch is never written twice, a lost one is
written again. A batch that failed stays pending, whole, for the next try,
and those waiting for it get the error.

A store that commits locally (``SyncRunStore``) is written on the spot when
nothing else could share the batch (``commit_now``): a chain's step needs no
extra loop turn to become durable.

Fencing: each batch names its writer and the epoch at which it holds each run;
the store drops the part of any run it no longer holds and says so, and the
journal forgets that run and tells the engine (``on_lost``), which stops its
execution. Batches cut after the engine's leases may have lapsed (``leases_good_until``
passed without a renewal) ask the store to check even where it otherwise
trusts the leases (``Batch.fence``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import orjson

from podium.errors import PodiumError
from podium.events import ErrorInfo, Event, StepSucceeded
from podium.state import TERMINAL_RUN_STATUSES, RunRecord
from podium.store.base import (
    Batch,
    CommitUnknown,
    RunRow,
    RunStore,
    StepRow,
    SyncRunStore,
)

__all__ = ["Journal"]

log = logging.getLogger("podium.engine")

# A batch cut off (its outcome unknown: a network store lost its connection) is read
# back, and written again if it never landed, with a growing wait, for as long as the
# store stays away and a run of the batch is still this journal's: a database restart
# is waited out, not turned into failed runs. A process that cannot reach its store
# for two thirds of its lease stops its runs (the supervisor's self-fencing), and then
# nobody waits for the batch any more. _RETRY_FOR_S is only the backstop.
_PROBE_WAIT_S = 0.05
_NO_CUT: dict[str, _Tracked] = {}  # (never written to: replaced by the next cut)
_RETRY_MAX_WAIT_S = 1.0
_RETRY_FOR_S = 300.0


@dataclass(slots=True)
class _Tracked:
    """A run this journal writes: the engine's live record and its last committed seq."""

    record: RunRecord
    seq: int
    new: bool  # its row is inserted by the next batch
    # While a batch is cut: the step ids its events touch (rows to snapshot), each with
    # the output JSON of its success in the batch (None: the row keeps the stored one).
    # Empty between cuts: a batch that did not land is cut again from its events.
    touched: dict[str, str | None] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # a new run's: what executing it takes (RunRow.needs)


class Journal:
    def __init__(self, store: RunStore, owner: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.owner = owner
        self._monotonic = monotonic
        # Until then (monotonic), every lease this engine holds was renewed or taken
        # recently enough that nobody can have taken a run over: past it, batches are
        # fenced by the store (``Batch.fence``).
        self.leases_good_until = -math.inf
        # Told of each run the store fenced a batch off from (another process holds it).
        self.on_lost: Callable[[str], None] | None = None
        # Told of a new run the store refused because its id was taken (another
        # process started a run with that id first); None: told as ``on_lost``.
        self.on_taken: Callable[[str], None] | None = None
        # Told when an agent is about to be called past ``leases_good_until``.
        self.on_lapse: Callable[[], None] | None = None
        # (Not isinstance(): a runtime-checkable protocol's check costs ~16 µs.)
        self._sync = cast(SyncRunStore, store) if callable(
            getattr(store, "write_batch_now", None)) else None
        # Positions: every event appended has one (``position`` is the last); all up to
        # ``durable`` are committed. Events before ``_pending`` were cut into batches.
        self._cut_so_far = 0
        self.durable = 0
        self._pending: list[Event] = []
        self._tracked: dict[str, _Tracked] = {}
        # The batch cut last, until it committed: its runs' tracking as it was then, so
        # that its commit touches only runs still tracked so (not forgotten meanwhile).
        self._cut_runs: dict[str, _Tracked] = {}
        # The batch on the wire (an async store's), and who waits for what.
        self._writing: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._scheduled = False

    # --- runs ---------------------------------------------------------------
    def track(self, run: RunRecord, *, new: bool, seq: int = 0,
              needs: tuple[str, ...] = ()) -> None:
        """Write ``run``'s events from now on: a new run (its row goes in the next batch)
        or one taken over, whose last committed event is ``seq``."""
        self._tracked[run.run_id] = _Tracked(run, seq, new, needs=needs)

    def forget(self, run_id: str) -> None:
        """Write nothing more of ``run_id``: its pending events go now, so that none of
        them is taken for the run's if this journal tracks it anew (claimed again)."""
        if self._tracked.pop(run_id, None) is None:
            return
        pending = self._pending
        kept = [e for e in pending if e.run_id != run_id]
        if len(kept) != len(pending):
            # Counted as cut, so the position of every event still pending stays
            # where it was or grows: nobody waiting for one is released early.
            self._cut_so_far += len(pending) - len(kept)
            self._pending = kept

    def tracks(self, run_id: str) -> bool:
        """Whether this journal writes ``run_id``'s events (a new run whose id turned out
        taken, or a run fenced off, is no longer tracked once its batch committed)."""
        return run_id in self._tracked

    def leases_hold(self) -> bool:
        """Whether this engine may still act for its runs: its leases were renewed less
        than two thirds of a lease ago. Asked before every agent call: a process that
        wakes from a freeze (or regains its store) must not call an agent for a run
        another process may have taken over and finished meanwhile, and the
        supervisor's next look may come after the woken loop has started steps.
        When they may have lapsed, ``on_lapse`` stops every run here first."""
        if self._monotonic() <= self.leases_good_until:
            return True
        if self.on_lapse is not None:
            self.on_lapse()
        return False

    def _lost(self, lost: frozenset[str], taken: frozenset[str]) -> None:
        """The store fenced these runs off the batch just committed, or refused them as
        new runs whose id was ``taken``: stop them, unless this journal forgot a run
        meanwhile (and perhaps tracks it anew, claimed again: that execution holds the
        run at a newer epoch and must go on)."""
        cut = self._cut_runs
        for rid in lost:
            if self._tracked.get(rid) is not cut.get(rid):
                continue
            del self._tracked[rid]
            if rid in taken:
                log.info("run %s: a run with this id was stored first (another process"
                         " started it); this one is not started", rid)
                if self.on_taken is not None:
                    self.on_taken(rid)
                    continue
            else:
                log.warning("run %s: another process holds it now; this one stops"
                            " executing it and writes nothing more of it", rid)
            if self.on_lost is not None:
                self.on_lost(rid)

    # --- events -------------------------------------------------------------
    def append(self, event: Event) -> None:
        """Buffer an event (one of a run this journal does not write is dropped at the cut:
        the fleet's events, a cancel asked of another process's run)."""
        self._pending.append(event)

    @property
    def position(self) -> int:
        """The position of the last event appended."""
        return self._cut_so_far + len(self._pending)

    # --- commits ------------------------------------------------------------
    def commit_now(self) -> bool:
        """Commit everything appended, on the spot, if the store can and nothing else is
        forming or in flight; False otherwise (then ``await commit_through``)."""
        store = self._sync
        if store is None or self._scheduled or self._writing is not None:
            return False
        if self._pending:
            batch, upto = self._cut()
            try:
                lost = store.write_batch_now(batch)
            except BaseException:
                self._uncut(batch, upto)
                raise
            self._committed(batch, upto, lost)
        return True

    async def commit_through(self, position: int) -> None:
        """Return once every event up to ``position`` is durable; raise if its batch failed.

        Joins the batch forming in this loop turn (group commit), or the next one if a
        batch is on the wire.
        """
        if position <= self.durable:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, fut))
        self._schedule()
        # One future per waiter: a cancelled waiter cancels only its own wait, never
        # the commit everyone else waits for.
        await fut

    def soon(self) -> None:
        """Have what is pending committed within a loop turn, without waiting for it."""
        if self._pending:
            self._schedule()

    async def close(self) -> None:
        """Commit what is pending and wait for the batch on the wire, if any."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        if self._pending:
            await self.commit_through(self.position)

    # --- batches ------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._scheduled and self._writing is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Cut and write what is pending (after every callback already due this turn)."""
        self._scheduled = False
        if self._writing is not None:
            return  # its end pumps again
        if not self._pending:
            # Nothing forming, nothing on the wire: every position so far is committed
            # or was dropped (a forgotten run's events), and nobody need wait for it.
            self.durable = self._cut_so_far
            self._release(None)
            return
        if self._sync is not None:
            try:
                self.commit_now()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiters
                if not self._waiters:
                    # Nobody waits (soon()): the batch stays pending and the next commit,
                    # which somebody will wait for, tries again.
                    log.warning("commit failed, will retry: %s", exc)
                self._release(exc)
                return
            self._release(None)
            return
        try:
            batch, upto = self._cut()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiters, as above
            self._release(exc)
            return
        self._writing = asyncio.get_running_loop().create_task(
            self._write_async(batch, upto), name="podium:journal-commit")

    async def _write_async(self, batch: Batch, upto: int) -> None:
        error: BaseException | None = None
        lost: frozenset[str] = frozenset()
        try:
            deadline = self._monotonic() + _RETRY_FOR_S
            wait = _PROBE_WAIT_S
            while True:
                try:
                    lost = await self.store.write_batch(batch)
                    break
                except CommitUnknown as exc:
                    if await self._landed(batch, deadline):
                        break
                    if not self._keep_trying(deadline):
                        raise
                    # Known not to have landed: the same batch again, after a breath.
                    log.warning("commit cut off and not landed; writing it again: %s", exc)
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, _RETRY_MAX_WAIT_S)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiters below
            self._uncut(batch, upto)
            error = exc
            if not self._waiters:
                log.warning("commit failed, will retry: %s", exc)
        else:
            self._committed(batch, upto, lost)
        finally:
            self._writing = None
        self._release(error)
        if isinstance(error, asyncio.CancelledError):
            raise error

    def _keep_trying(self, deadline: float) -> bool:
        """Whether a cut-off batch is still worth writing: a run of it is still this
        journal's (not stopped by self-fencing meanwhile), and the backstop is not up."""
        if self._monotonic() > deadline:
            return False
        tracked = self._tracked
        return any(tracked.get(rid) is t for rid, t in self._cut_runs.items())

    async def _landed(self, batch: Batch, deadline: float) -> bool:
        """Whether a cut-off batch committed, asked of the store until it can tell."""
        wait = _PROBE_WAIT_S
        while True:
            try:
                return await self.store.batch_committed(batch)
            except PodiumError:
                if not self._keep_trying(deadline):
                    raise
                await asyncio.sleep(wait)
                wait = min(wait * 2, _RETRY_MAX_WAIT_S)

    def _release(self, error: BaseException | None) -> None:
        """Wake every waiter whose position is durable now; fail the others if ``error``."""
        if not self._waiters:
            return
        durable = self.durable
        keep = []
        for position, fut in self._waiters:
            if fut.done():
                continue
            if position <= durable:
                fut.set_result(None)
            elif error is not None:
                fut.set_exception(error)
            else:
                keep.append((position, fut))
        self._waiters = keep
        if keep:
            self._schedule()

    def _cut(self) -> tuple[Batch, int]:
        """Take everything pending as one batch, with the rows it leaves, as values now.

        The engine moves its records with ``apply_event`` before it appends each
        event, so a record as it stands now is every pending event applied: the
        snapshot matches the events, and no event is applied twice.

        One pass over the events (touched steps, their outputs; numbers), then one
        over the batch's runs (rows). This runs for every step of a chain, so a batch
        of one run (a chain, a run alone in its engine) numbers its events in one go.
        """
        pending = self._pending
        try:
            return self._cut_pending(pending)
        except BaseException as exc:
            # Nothing taken: the events stay pending and no step row is forgotten
            # (touched steps are cleared only once cut whole).
            self._pending = pending + self._pending
            self._cut_so_far -= len(pending)
            if not isinstance(exc, Exception):
                raise
            # A run whose rows cannot be stored (a value that will not encode) must not
            # hold up every other run: it is stopped here and its events dropped; the
            # others are cut again without it.
            bad = self._runs_that_cannot_be_cut(pending)
            if not bad:
                raise
            for rid in bad:
                log.error("run %s: its state cannot be stored (%s: %s); this process stops"
                          " executing it (its last stored state stays resumable)", rid,
                          type(exc).__name__, exc)
                self.forget(rid)
                if self.on_lost is not None:
                    self.on_lost(rid)
            if not self._pending:
                raise
            return self._cut()

    def _runs_that_cannot_be_cut(self, pending: list[Event]) -> list[str]:
        """The runs among ``pending`` whose events cannot be cut on their own (tried one
        run at a time, the journal's state put back after each try)."""
        bad = []
        so_far, cut_runs, rest = self._cut_so_far, self._cut_runs, self._pending
        for rid in dict.fromkeys(e.run_id for e in pending):
            t = self._tracked.get(rid)
            if t is None:
                continue
            touched = dict(t.touched)
            try:
                self._cut_pending([e for e in pending if e.run_id == rid])
            except Exception:  # noqa: BLE001 - the question is only whether it fails
                bad.append(rid)
            finally:
                t.touched = touched
                self._cut_so_far, self._cut_runs, self._pending = so_far, cut_runs, rest
        return bad

    def _cut_pending(self, events: list[Event]) -> tuple[Batch, int]:
        self._pending = []
        upto = self._cut_so_far = self._cut_so_far + len(events)
        tracked = self._tracked
        run_level: set[str] | None = None
        # A batch of one run's events only, if it is one: numbered on from its last.
        numbered = False
        rid = events[0].run_id
        t = tracked.get(rid)
        if t is not None:
            touched = t.touched
            for e in events:
                if e.run_id != rid:
                    break
                step_id = getattr(e, "step_id", None)
                if step_id is None:
                    run_level = {rid}
                elif type(e) is StepSucceeded:
                    touched[step_id] = e.output_json
                elif step_id not in touched:
                    touched[step_id] = None
            else:
                first = t.seq + 1
                seqs = list(range(first, first + len(events)))
                last_seq = {rid: seqs[-1]}
                cut_runs = {rid: t}
                numbered = True
        if not numbered:
            # Runs interleaved, or events of runs this journal does not write.
            seqs, last_seq, cut_runs, run_level, events = self._number(events)
        new_runs: list[RunRow] = []
        runs: list[RunRow] = []
        steps: list[StepRow] = []
        add_step = steps.append
        finished: list[str] = []
        epochs: dict[str, int] = {}
        make = tuple.__new__  # a StepRow from its tuple, without NamedTuple's Python __new__
        cleared: list[_Tracked] = []
        for rid, t in cut_runs.items():
            record = t.record
            if t.new:
                new_runs.append(_run_row(record, new=True, needs=t.needs))
                if record.status in TERMINAL_RUN_STATUSES:
                    finished.append(rid)
            else:
                epochs[rid] = record.epoch
                if run_level is not None and rid in run_level:
                    runs.append(_run_row(record, new=False))
                    if record.status in TERMINAL_RUN_STATUSES:
                        finished.append(rid)
            touched = t.touched
            if touched:
                cleared.append(t)
                record_steps = record.steps
                for sid, output in touched.items():
                    st = record_steps[sid]
                    err, cerr = st.error, st.compensation_error
                    add_step(make(StepRow, (
                        rid, sid, st.status, st.attempts, st.agent_id, output,
                        None if err is None else _error_json(err), st.started_at,
                        st.finished_at, st.next_retry_at, st.optional, st.completed_seq,
                        st.compensation_status, st.compensation_attempts,
                        None if cerr is None else _error_json(cerr))))
        for t in cleared:
            t.touched = {}
        self._cut_runs = cut_runs
        # Not Batch(...): its generated __init__ tests each of 7 defaults per call.
        batch = _new_batch(Batch)
        batch.new_runs, batch.source, batch.seqs, batch.runs, batch.steps = (
            new_runs, events, seqs, runs, steps)
        batch.last_seq, batch.finished, batch.owner, batch.epochs = (
            last_seq, finished, self.owner, epochs)
        batch.fence = self._monotonic() > self.leases_good_until
        return batch, upto

    def _number(self, events: list[Event]) -> tuple[
            list[int], dict[str, int], dict[str, _Tracked], set[str] | None, list[Event]]:
        """Number the events of a batch of several runs, and note the steps they touch:
        (numbers, each run's last, the runs in order of first event, the runs with
        run-level events, the events kept: none of a run this journal does not write)."""
        tracked = self._tracked
        seqs: list[int] = []
        add_seq = seqs.append
        last_seq: dict[str, int] = {}
        cut_runs: dict[str, _Tracked] = {}
        run_level: set[str] | None = None
        dropped = False
        last: str | None = None  # (fleet events have run id "")
        t: _Tracked | None = None
        touched: dict[str, str | None] = {}
        seq = 0
        for e in events:
            rid = e.run_id
            if rid != last:  # a batch is mostly runs of events of one run
                if t is not None:
                    last_seq[t.record.run_id] = seq
                last = rid
                t = tracked.get(rid)
                if t is None:
                    dropped = True
                    continue  # not a run this journal writes
                seq = last_seq.get(rid, t.seq)
                cut_runs[rid] = t
                touched = t.touched
            elif t is None:
                continue  # dropped already
            seq += 1
            add_seq(seq)
            step_id = getattr(e, "step_id", None)
            if step_id is None:
                if run_level is None:
                    run_level = set()
                run_level.add(rid)
            elif type(e) is StepSucceeded:
                touched[step_id] = e.output_json
            elif step_id not in touched:
                touched[step_id] = None
        if t is not None:
            last_seq[t.record.run_id] = seq
        taken = [e for e in events if e.run_id in tracked] if dropped else events
        return seqs, last_seq, cut_runs, run_level, taken

    def _uncut(self, batch: Batch, _upto: int) -> None:
        """A batch that did not land: its events are pending again, before any newer
        (the next cut finds the steps they touched in them again).

        (Events of runs this journal does not write were dropped at the cut; the
        positions they had stay counted, as positions only ever grow.)"""
        tracked = self._tracked
        cut = self._cut_runs
        current = {rid for rid, t in cut.items() if tracked.get(rid) is t}
        # Events of runs forgotten while the batch was on the wire are dropped (if the
        # run is tracked anew, they belong to an execution that was stopped).
        source = batch.source
        if len(current) != len(cut):
            source = [e for e in source if e.run_id in current]
        self._pending[:0] = source
        self._cut_so_far -= len(source)  # so ``position`` stays where it was (or grows)

    def _committed(self, batch: Batch, upto: int, lost: frozenset[str]) -> None:
        """The batch landed (but for the runs in ``lost``, fenced off): move on."""
        tracked = self._tracked
        last_seq = batch.last_seq
        # New runs among the lost: their ids were taken (before ``new`` is cleared below).
        taken = frozenset(rid for rid in lost if (t := self._cut_runs.get(rid)) is not None
                          and t.new) if lost else lost
        for rid, t in self._cut_runs.items():
            if tracked.get(rid) is not t:
                continue  # forgotten while the batch was on the wire (or tracked anew)
            t.seq = last_seq[rid]
            t.new = False
        for rid in batch.finished:
            done = tracked.get(rid)
            if done is not None and done.record.status in TERMINAL_RUN_STATUSES and (
                    not self._pending or not any(e.run_id == rid for e in self._pending)
            ) and (not lost or rid not in lost):  # (a store's subclass may say None)
                del tracked[rid]  # ended: nothing more of it to write
        self.durable = upto
        if lost:
            self._lost(lost, taken)
        # Done with: holding on to it would keep the records of runs ended since alive.
        self._cut_runs = _NO_CUT


def _error_json(err: ErrorInfo) -> str:
    return orjson.dumps(err.to_dict()).decode()


_new_batch = object.__new__  # (a Batch whose fields are set one by one, see _cut)
_NOT_NEW = RunRow("", "", "", None, None, None, "")[7:]  # defaults: columns only a new run sets


def _run_row(r: RunRecord, *, new: bool, needs: tuple[str, ...] = ()) -> RunRow:
    output = "null" if r.output is None else orjson.dumps(r.output).decode()
    error = None if r.error is None else _error_json(r.error)
    if not new:
        return tuple.__new__(RunRow, (r.run_id, r.status, output, error, r.started_at,
                                      r.finished_at, r.phase, *_NOT_NEW))
    return tuple.__new__(RunRow, (r.run_id, r.status, output, error, r.started_at,
                                  r.finished_at, r.phase, r.workflow, r.version, r.definition,
                                  orjson.dumps(r.input).decode(), r.created_at, r.owner,
                                  r.lease_expires_at, r.agents_source, r.queue, needs))
