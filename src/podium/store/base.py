"""The Store protocol: Podium's memory, in domain verbs.

The engine subscribes its store to the event stream: ``append`` buffers an
event (cheap, synchronous, in emission order) and ``flush`` commits everything
buffered in one transaction. Many steps finishing in the same loop turn share
one flush (group commit), and the engine awaits ``flush`` before it starts any
dependent of a succeeded step, which is the durability rule.

Runs carry an ``owner`` and a ``lease_expires_at`` from the start so that
several processes (and later several hosts on PostgreSQL) can share a
database and take over runs whose owner died.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol, runtime_checkable

from podium.events import Event
from podium.state import AlertRecord, AttemptOutcome, RunRecord

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    url: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save_workflow(
        self, name: str, version: int | str, definition: dict[str, Any]
    ) -> None:
        """Keep a definition by name and version (idempotent for the same content)."""
        ...

    async def create_run(self, run: RunRecord) -> None:
        """Persist a new run (definition snapshot, input, owner, lease) at once."""
        ...

    def append(self, event: Event) -> None:
        """Buffer one event; it is durable after the next ``flush``."""
        ...

    def flush_now(self) -> bool:
        """Commit everything buffered now, synchronously, unless a batch is already
        forming (then return False and let the caller await ``flush``)."""
        ...

    async def flush(self) -> None:
        """Commit every buffered event (and the state it implies) in one transaction."""
        ...

    def flush_soon(self) -> None:
        """Have what is buffered committed shortly, without waiting for it."""
        ...

    @property
    def commits(self) -> int:
        """How many transactions of events this store object has committed."""
        ...

    def pending_commit(self) -> int:
        """The value ``commits`` reaches once an event appended now is durable."""
        ...

    async def get_run(self, run_id: str) -> RunRecord:
        """The run with its steps; ``run_id`` may be a unique prefix. Raises ``RunNotFound``."""
        ...

    async def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Newest first, without steps."""
        ...

    async def get_events(self, run_id: str) -> Sequence[Event]: ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask whoever runs ``run_id`` to cancel it; False if it is already finished."""
        ...

    async def cancel_requests(self, run_ids: Collection[str]) -> set[str]:
        """Which of these runs someone asked to cancel."""
        ...

    async def claim_run(self, run: RunRecord, owner: str, until: float, *,
                        recoveries: int, now: float) -> bool:
        """Take the run for ``owner`` if nobody claimed nor renewed it since ``run`` was read.

        A compare-and-swap on the run's epoch, owner and lease as ``run`` holds them:
        of two processes that both found its owner dead, exactly one wins. On success
        the epoch goes up by one, ``recoveries`` is stored (with ``now`` as the time of
        the takeover when it grew) and ``run`` is updated to match.
        """
        ...

    async def adopt(self, run: RunRecord) -> None:
        """Start writing the events of an existing run (a resume or rollback) from here."""
        ...

    async def release_run(self, run_id: str, owner: str, *, force: bool = False) -> None:
        """Give up ownership of a run (``force``: whoever holds it)."""
        ...

    async def renew_leases(self, owner: str, run_ids: Collection[str], until: float) -> None: ...

    # --- alerts and failure tracking ----------------------------------------
    async def save_alert(
        self, alert: AlertRecord, what: str, detail: str = "", ts: float | None = None
    ) -> None:
        """Upsert an alert and add ``what`` (fired, escalated, resolved...) to its history."""
        ...

    async def list_alerts(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[AlertRecord]: ...

    async def get_alert(self, key: str) -> AlertRecord | None: ...

    async def ack_alert(self, key: str, by: str, now: float) -> bool:
        """Acknowledge a firing alert (stops its escalation); False if none is firing."""
        ...

    async def alert_history(self, key: str) -> list[dict[str, Any]]: ...

    async def attempt_outcomes(self, since: float) -> list[AttemptOutcome]:
        """Every attempt that finished at or after ``since`` (epoch seconds)."""
        ...
