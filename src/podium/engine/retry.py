"""Retry timing: pure functions of the policy, the retry number and a random source.

``max_delay`` caps the delay *after* jitter (the cap is a promise to the
user, so no jitter kind may exceed it). ``retry`` may be a list of policies:
the first whose ``retry_on`` matches the error decides, and each keeps its own
count, as Amazon States Language retriers do.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from podium.definition.models import RetryPolicy
from podium.events import ErrorInfo

__all__ = ["RetryState", "backoff_delay", "next_delay"]


def backoff_delay(
    policy: RetryPolicy, retry_number: int, rng: random.Random, previous: float | None = None
) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = the second attempt)."""
    cap = policy.max_delay
    if policy.delays is not None:
        base = policy.delays[min(retry_number, len(policy.delays)) - 1]
        floor = base
        if "max_delay" not in policy.model_fields_set:
            cap = math.inf  # an explicit list is its own bound unless one is given
    else:
        floor = policy.initial_delay
        exponent = retry_number - 1
        if policy.initial_delay <= 0:
            base = 0.0
        elif policy.backoff > 1 and exponent * math.log(policy.backoff) > math.log(
            max(cap, 1e-9) / policy.initial_delay
        ):
            base = cap  # beyond the cap anyway; avoids float overflow for big n
        else:
            base = policy.initial_delay * policy.backoff**exponent
    base = min(base, cap)
    jitter = policy.effective_jitter
    if jitter == "none":
        delay = base
    elif jitter == "full":
        delay = rng.uniform(0.0, base)
    elif jitter == "equal":
        delay = base / 2 + rng.uniform(0.0, base / 2)
    else:  # decorrelated: grows from the previous delay, never below the floor
        prev = previous if previous is not None else floor
        delay = rng.uniform(floor, max(floor, prev * 3))
    return min(max(delay, 0.0), cap)


@dataclass(slots=True)
class RetryState:
    """Per-step memory of retries: how many each policy granted, and its last wait."""

    counts: list[int] = field(default_factory=list)
    # Each policy's own last delay: decorrelated jitter grows from its own waits.
    previous: dict[int, float] = field(default_factory=dict)


def next_delay(
    policies: tuple[RetryPolicy, ...],
    error: ErrorInfo,
    state: RetryState,
    rng: random.Random,
) -> float | None:
    """The wait before the next attempt, or None when the step must fail now."""
    if error.retryable is False:
        return None
    if any(error.type in p.no_retry_on for p in policies):
        return None  # "never retried" holds for the whole list, not one policy
    for i, policy in enumerate(policies):
        if not policy.matches(error.type):
            continue
        if len(state.counts) < len(policies):
            state.counts.extend([0] * (len(policies) - len(state.counts)))
        if state.counts[i] + 1 >= policy.max_attempts:
            return None
        state.counts[i] += 1
        delay = backoff_delay(policy, state.counts[i], rng, state.previous.get(i))
        state.previous[i] = delay
        if error.retry_after_s is not None:
            # The agent said when it can take the call again (429 Retry-After);
            # calling sooner only earns another 429, so this may exceed max_delay.
            delay = max(delay, error.retry_after_s)
        return delay
    return None
