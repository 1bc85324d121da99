"""Podium's error tree.

One root so callers can catch everything Podium raises, and a shallow tree so
the CLI can map each branch to an exit code without guessing::

    PodiumError
    ├── DefinitionError      a workflow or agents file is invalid (exit 2)
    ├── InputError           a run's input is invalid (exit 2)
    ├── ConfigError          bad settings, unknown agent module... (exit 2)
    │   ├── RunHeld              another live process holds the run (exit 2)
    │   ├── WorkerNameTaken      a live worker already has this --name (exit 2)
    │   ├── NothingToCompensate  a rollback of a run no step of which has an undo
    │   ├── VersionTaken         a registered workflow version holds other content
    │   ├── AgentTaken           a joined agent's id is another token's, alive
    │   └── TooManyAgents        a join over the limit of live joined agents
    ├── AgentError           raised by an agent to fail an attempt with a type
    │   ├── InvalidInput         ``invalid_input`` (never retried by default)
    │   ├── Unavailable          ``unavailable``
    │   │   └── NoCapacity           ``no_capacity``: every agent stayed busy or full
    │   ├── RateLimited          ``rate_limited`` (may carry ``retry_after_s``); busy
    │   ├── AttemptTimeout       ``timeout``
    │   └── OutputTooLarge       ``output_too_large`` (an answer over the agent's limit)
    ├── RunNotFound          no such run in the store (exit 2)
    ├── RunLost              this process lost a run it executed (taken over)
    └── StoreError           the database is unreachable or not Podium's (exit 3)

This module imports nothing of Podium's, so every layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AgentError",
    "AgentTaken",
    "AttemptTimeout",
    "ConfigError",
    "DefinitionError",
    "InputError",
    "InvalidInput",
    "NoCapacity",
    "NothingToCompensate",
    "OutputTooLarge",
    "PodiumError",
    "Problem",
    "RateLimited",
    "RunHeld",
    "RunLost",
    "RunNotFound",
    "StoreError",
    "TooManyAgents",
    "Unavailable",
    "VersionTaken",
    "WorkerNameTaken",
]


class PodiumError(Exception):
    """Root of every error Podium raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        step_id: str | None = None,
        agent_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.step_id = step_id
        self.agent_id = agent_id


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file: where it is, what is wrong, how to fix it."""

    message: str
    file: str | None = None
    line: int | None = None
    step: str | None = None
    field: str | None = None
    hint: str | None = None
    # Where in the document the problem sits (keys and list indexes), so a
    # loader can attach a line number; not part of the rendered text.
    loc: tuple[str | int, ...] = ()

    def render(self) -> str:
        where = self.file or "<workflow>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.step is not None:
            parts.append(f"step '{self.step}'")
        if self.field:
            parts.append(self.field)
        text = ": ".join(parts) + ": " + self.message
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


class DefinitionError(PodiumError):
    """Every problem found in one definition, reported together."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class InputError(PodiumError):
    """The input given to a run does not fit the workflow's ``input_schema``."""


class ConfigError(PodiumError):
    """Settings or an agents file that cannot be used as given."""


class RunHeld(ConfigError):
    """Another live process holds the run: it executes it, or took it over first."""


class WorkerNameTaken(ConfigError):
    """A live worker already runs under this id (``podium worker --name``)."""


class NothingToCompensate(ConfigError):
    """A rollback was asked of a run none of whose succeeded steps has a ``compensate``.

    Nothing is written: the run keeps its status (a succeeded run stays succeeded).
    """


class VersionTaken(ConfigError):
    """A workflow version is registered already with other content: versions never
    change once registered (runs and callers rely on what a version means)."""


class AgentTaken(ConfigError):
    """An agent id another token registered is live (``POST /agents``): ids are unique
    across the fleet, and an agent is renewed or removed only by its own token."""


class TooManyAgents(ConfigError):
    """A new joined agent (``POST /agents``) would go over a limit of live ones: the
    token's own (``per_token``) or the database's (``per_token`` False). Renewing an
    agent the token holds is never refused."""

    def __init__(self, message: str, *, limit: int, per_token: bool) -> None:
        super().__init__(message)
        self.limit, self.per_token = limit, per_token


class RunExists(ConfigError):
    """A new run's id is taken: a run with that id is stored already (another process,
    or another request with the same idempotency key, started it first)."""


class RunNotFound(PodiumError):
    """No run with this id in the store."""


class RunLost(PodiumError):
    """Another process took over a run this one was executing (this one's lease lapsed:
    it was frozen, or cut off from the database): this process stopped executing it
    and wrote nothing more of it."""


class StoreError(PodiumError):
    """The store cannot be used: unreachable, locked out, newer or not Podium's."""


class AgentError(PodiumError):
    """Raise from an agent to fail an attempt with a named error type.

    Any other exception an agent raises fails the attempt as ``agent_error``.
    ``retryable=False`` stops retries whatever the policy says.

    ``busy`` says the agent is at capacity (HTTP 429, a 503 with ``Retry-After``):
    back-pressure, not a failure. The engine then tries another agent or waits
    (``retry_after_s``, jittered) within the step's acquire timeout, without
    using up an attempt or counting against the agent's breaker and health.
    """

    error_type = "agent_error"
    busy = False

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        busy: bool | None = None,
        **where: str | None,
    ) -> None:
        super().__init__(message, **where)
        if type is not None:
            self.error_type = type
        if busy is not None:
            self.busy = busy
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class InvalidInput(AgentError):
    error_type = "invalid_input"


class Unavailable(AgentError):
    error_type = "unavailable"


class NoCapacity(Unavailable):
    """Every agent that could take the call stayed busy or full for the acquire timeout."""

    error_type = "no_capacity"


class RateLimited(AgentError):
    """The agent asks to be called later: busy unless said otherwise."""

    error_type = "rate_limited"
    busy = True


class AttemptTimeout(AgentError):
    error_type = "timeout"


class OutputTooLarge(AgentError):
    """An agent's answer was larger than its ``max_response_bytes``: not retried by
    default (the same call would most likely answer the same)."""

    error_type = "output_too_large"

    def __init__(self, message: str, **kw: object) -> None:
        kw.setdefault("retryable", False)
        super().__init__(message, **kw)  # type: ignore[arg-type]
