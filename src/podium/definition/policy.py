"""The leaves of the workflow models: the base model, shared patterns, the retry policy.

``models`` builds workflows from these and checks them with ``validate``, which
needs the retry policy too (to merge a step's with the defaults): both import it
from here, so neither imports the other back.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from podium.definition.durations import Duration

__all__ = [
    "AGENT_REF_PATTERN",
    "BUILTIN_ERROR_TYPES",
    "ERROR_TYPE_PATTERN",
    "STEP_ID_PATTERN",
    "Jitter",
    "RetryPolicy",
    "empty_list",
]

BUILTIN_ERROR_TYPES = (
    "timeout",
    "unavailable",
    "rate_limited",
    "agent_error",
    "invalid_input",
    "cancelled",
    "no_capacity",
    "worker_lost",
)
ERROR_TYPE_PATTERN = r"^[a-z][a-z0-9_.-]*$"
AGENT_REF_PATTERN = r"^@?[A-Za-z0-9][A-Za-z0-9_.:-]*$"
STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"

Jitter = Literal["none", "full", "equal", "decorrelated"]


def empty_list() -> list[Any]:
    """``default_factory`` for lists: pydantic reads a factory's signature, and for the
    builtin ``list`` that means tokenizing its text signature (~3 ms at start-up)."""
    return []


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(Model):
    """How often and how patiently to retry one step.

    ``retry_on`` absent means every error type except ``invalid_input`` and
    ``cancelled``. ``max_delay`` caps the delay *after* jitter. ``delays``
    lists explicit waits instead of the exponential formula (its last entry
    repeats). Jitter defaults to ``full`` for the formula and ``none`` for an
    explicit list.
    """

    max_attempts: int = Field(3, ge=1, le=1000, description="Attempts in all, the first included")
    initial_delay: Duration = Field(1.0, description="Wait before the second attempt")
    backoff: float = Field(2.0, ge=1.0, le=100.0, description="Multiplier per attempt")
    max_delay: Duration = Field(30.0, description="Upper bound of any wait, jitter included")
    jitter: Jitter | None = Field(None, description="none | full | equal | decorrelated")
    delays: list[Duration] | None = Field(None, min_length=1, description="Explicit waits")
    retry_on: list[str] | None = Field(None, description="Error types this policy retries")
    no_retry_on: list[str] = Field(
        default_factory=empty_list, description="Error types never retried")

    @field_validator("retry_on", "no_retry_on")
    @classmethod
    def _error_types(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if not re.match(ERROR_TYPE_PATTERN, name):
                raise ValueError(
                    f"{name!r} is not an error type; use one of {', '.join(BUILTIN_ERROR_TYPES)}"
                    " or an agent's own lowercase type"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RetryPolicy:
        if self.max_delay < self.initial_delay and self.delays is None:
            raise ValueError(
                f"max_delay ({self.max_delay}s) is below initial_delay ({self.initial_delay}s)"
            )
        return self

    @property
    def effective_jitter(self) -> Jitter:
        if self.jitter is not None:
            return self.jitter
        return "none" if self.delays is not None else "full"

    def matches(self, error_type: str) -> bool:
        """Whether this policy speaks for ``error_type`` at all."""
        if error_type in self.no_retry_on:
            return False
        if self.retry_on is None:
            return error_type not in ("invalid_input", "cancelled")
        return error_type in self.retry_on
