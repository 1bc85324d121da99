"""Retry timing: exact delays per jitter kind, caps, explicit lists, selective retry.

Expected values are computed here from the documented formulas with a second
generator seeded the same way, never by calling the code under test.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from podium.definition import RetryPolicy
from podium.engine.retry import RetryState, backoff_delay, next_delay
from podium.events import ErrorInfo

SEED = 20240611


def err(type_: str = "agent_error", **kw: Any) -> ErrorInfo:
    return ErrorInfo(type=type_, message="boom", **kw)


def delays(policy: RetryPolicy, n: int, seed: int = SEED, error_type: str = "timeout") -> list[
    float | None
]:
    """The waits next_delay gives for ``n`` consecutive failures of one step."""
    rng = random.Random(seed)
    state = RetryState()
    return [next_delay((policy,), err(error_type), state, rng) for _ in range(n)]


def exponential(initial: float, backoff: float, cap: float, n: int) -> float:
    """The documented base before jitter: initial * backoff^(n-1), capped."""
    return min(initial * backoff ** (n - 1), cap)


# --- the four jitter kinds -------------------------------------------------


def test_jitter_none_is_the_exponential_formula_capped() -> None:
    """none: initial * backoff^(n-1), capped at max_delay, no randomness used."""
    policy = RetryPolicy(max_attempts=8, initial_delay=0.5, backoff=3, max_delay=20,
                         jitter="none")
    assert delays(policy, 7) == [0.5, 1.5, 4.5, 13.5, 20.0, 20.0, 20.0]


def test_jitter_full_is_uniform_zero_to_base() -> None:
    """full: uniform(0, base) for each retry, from the same seeded generator."""
    policy = RetryPolicy(max_attempts=8, initial_delay=1, backoff=2, max_delay=10,
                         jitter="full")
    ref = random.Random(SEED)
    expected = [ref.uniform(0, exponential(1, 2, 10, n)) for n in range(1, 8)]
    assert delays(policy, 7) == expected


def test_full_is_the_default_jitter_of_the_formula() -> None:
    """Without ``jitter``, the exponential formula uses full jitter."""
    policy = RetryPolicy(max_attempts=4, initial_delay=1, backoff=2, max_delay=10)
    assert policy.effective_jitter == "full"
    ref = random.Random(SEED)
    assert delays(policy, 3) == [ref.uniform(0, exponential(1, 2, 10, n)) for n in (1, 2, 3)]


def test_jitter_equal_is_half_base_plus_uniform_half() -> None:
    """equal: base/2 + uniform(0, base/2) for each retry."""
    policy = RetryPolicy(max_attempts=8, initial_delay=2, backoff=2, max_delay=25,
                         jitter="equal")
    ref = random.Random(SEED)
    expected = []
    for n in range(1, 8):
        base = exponential(2, 2, 25, n)
        expected.append(base / 2 + ref.uniform(0, base / 2))
    assert delays(policy, 7) == expected


def test_jitter_decorrelated_grows_from_the_previous_delay() -> None:
    """decorrelated: uniform(initial, prev * 3), prev starting at initial and then
    being the previous (capped) delay."""
    policy = RetryPolicy(max_attempts=10, initial_delay=1, max_delay=60,
                         jitter="decorrelated")
    ref = random.Random(SEED)
    expected = []
    prev = 1.0
    for _ in range(9):
        prev = min(60.0, ref.uniform(1.0, prev * 3))
        expected.append(prev)
    assert delays(policy, 9) == expected


def test_cap_applies_after_jitter() -> None:
    """max_delay bounds the delay after jitter: decorrelated jitter would draw above
    the cap here (uniform(10, 30) with a cap of 12), and every delay is the cap or
    below, exactly min(cap, draw)."""
    policy = RetryPolicy(max_attempts=20, initial_delay=10, max_delay=12,
                         jitter="decorrelated")
    ref = random.Random(SEED)
    raw, expected = [], []
    prev = 10.0
    for _ in range(19):
        draw = ref.uniform(10.0, prev * 3)
        raw.append(draw)
        prev = min(12.0, draw)
        expected.append(prev)
    assert any(d > 12 for d in raw), "the case must have a draw above the cap"
    got = delays(policy, 19)
    assert got == expected
    assert 12.0 in got
    assert all(d is not None and d <= 12.0 for d in got)


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_no_jitter_kind_exceeds_max_delay(jitter: str) -> None:
    """Whatever the jitter, 500 retries with many seeds never wait above max_delay
    nor below zero."""
    policy = RetryPolicy(max_attempts=1000, initial_delay=0.1, backoff=3, max_delay=2,
                         jitter=jitter)
    for seed in range(5):
        got = delays(policy, 100, seed=seed)
        assert all(d is not None and 0 <= d <= 2 for d in got)


def test_zero_initial_delay_retries_at_once() -> None:
    """initial_delay 0 retries immediately with every jitter kind."""
    for jitter in ("none", "full", "equal", "decorrelated"):
        policy = RetryPolicy(max_attempts=4, initial_delay=0, jitter=jitter)
        assert delays(policy, 3) == [0.0, 0.0, 0.0]


# --- explicit delays -------------------------------------------------------


def test_explicit_delays_last_one_repeats() -> None:
    """``delays: [1s, 5s, 30s]`` waits exactly 1, 5, 30 and then 30 again (no jitter
    by default, not bounded by the default max_delay)."""
    policy = RetryPolicy(max_attempts=6, delays=["1s", "5s", "30s"])
    assert policy.effective_jitter == "none"
    assert delays(policy, 6) == [1.0, 5.0, 30.0, 30.0, 30.0, None]


def test_explicit_delays_with_explicit_cap() -> None:
    """An explicit max_delay caps explicit delays too."""
    policy = RetryPolicy(max_attempts=5, delays=[1, 5, 30], max_delay=10)
    assert delays(policy, 4) == [1.0, 5.0, 10.0, 10.0]


def test_explicit_delays_with_full_jitter() -> None:
    """Jitter asked for on explicit delays draws uniform(0, listed delay)."""
    policy = RetryPolicy(max_attempts=5, delays=[2, 4], jitter="full")
    ref = random.Random(SEED)
    assert delays(policy, 4) == [ref.uniform(0, d) for d in (2.0, 4.0, 4.0, 4.0)]


# --- big numbers -----------------------------------------------------------


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
def test_attempt_1000_with_backoff_10_does_not_overflow(jitter: str) -> None:
    """10^999 is beyond a float; the delay for retry 999 is still finite and capped."""
    policy = RetryPolicy(max_attempts=1000, initial_delay=1, backoff=10, max_delay=30,
                         jitter=jitter)
    rng = random.Random(SEED)
    for n in (999, 1000):
        delay = backoff_delay(policy, n, rng, previous=30.0)
        assert 0 <= delay <= 30
    if jitter == "none":
        assert backoff_delay(policy, 1000, rng) == 30.0


def test_every_retry_up_to_1000_attempts_with_backoff_100() -> None:
    """A whole 1000-attempt run with the largest backoff gives 999 capped delays."""
    policy = RetryPolicy(max_attempts=1000, initial_delay=1, backoff=100, max_delay=60,
                         jitter="none")
    got = delays(policy, 1000)
    assert got[:3] == [1.0, 60.0, 60.0]
    assert got[998] == 60.0
    assert got[999] is None


# --- how many attempts ------------------------------------------------------


def test_next_delay_stops_at_max_attempts() -> None:
    """max_attempts counts the first attempt: 3 attempts give 2 waits, then None,
    and None again if asked once more."""
    policy = RetryPolicy(max_attempts=3, initial_delay=1, jitter="none")
    assert delays(policy, 4) == [1.0, 2.0, None, None]


def test_max_attempts_one_never_retries() -> None:
    """max_attempts 1 fails on the first error."""
    assert delays(RetryPolicy(max_attempts=1), 1) == [None]


def test_no_policy_means_one_attempt() -> None:
    """A step without any retry policy is attempted once."""
    assert next_delay((), err("timeout"), RetryState(), random.Random(SEED)) is None


# --- which errors ------------------------------------------------------------


def test_no_retry_on_error_fails_at_the_first_failure() -> None:
    """An error type listed in no_retry_on is not retried, even with attempts left."""
    policy = RetryPolicy(max_attempts=5, no_retry_on=["quota_exceeded"], jitter="none")
    assert delays(policy, 1, error_type="quota_exceeded") == [None]
    assert delays(policy, 1, error_type="timeout") == [1.0]


def test_retry_on_restricts_the_types() -> None:
    """With retry_on, only the listed types are retried; others fail at once."""
    policy = RetryPolicy(max_attempts=5, retry_on=["timeout", "unavailable"], jitter="none")
    assert delays(policy, 1, error_type="timeout") == [1.0]
    assert delays(policy, 1, error_type="unavailable") == [1.0]
    assert delays(policy, 1, error_type="agent_error") == [None]
    assert delays(policy, 1, error_type="rate_limited") == [None]


def test_retry_on_may_name_invalid_input_explicitly() -> None:
    """invalid_input is only a default exclusion: naming it in retry_on retries it."""
    policy = RetryPolicy(max_attempts=2, retry_on=["invalid_input"], jitter="none")
    assert delays(policy, 1, error_type="invalid_input") == [1.0]


@pytest.mark.parametrize(
    ("error_type", "retried"),
    [
        ("invalid_input", False),
        ("cancelled", False),
        ("timeout", True),
        ("unavailable", True),
        ("rate_limited", True),
        ("agent_error", True),
        ("my_agent.custom-type", True),
    ],
)
def test_default_policy_retries_all_but_invalid_input_and_cancelled(
    error_type: str, retried: bool
) -> None:
    """A policy without retry_on retries every type except invalid_input, cancelled."""
    (delay,) = delays(RetryPolicy(jitter="none"), 1, error_type=error_type)
    assert (delay is not None) is retried


def test_first_matching_policy_decides_each_with_its_own_count() -> None:
    """In a list, the first policy whose retry_on matches decides, counting its own
    retries: rate limits get 3 retries from the first policy while other errors get
    1 from the second, interleaved."""
    policies = (
        RetryPolicy(retry_on=["rate_limited"], max_attempts=4, initial_delay=10, backoff=1,
                    max_delay=10, jitter="none"),
        RetryPolicy(max_attempts=2, initial_delay=1, jitter="none"),
    )
    state = RetryState()
    rng = random.Random(SEED)
    sequence = ["rate_limited", "agent_error", "rate_limited", "rate_limited", "rate_limited"]
    got = [next_delay(policies, err(t), state, rng) for t in sequence]
    assert got == [10.0, 1.0, 10.0, 10.0, None]
    assert state.counts == [3, 1]
    assert next_delay(policies, err("timeout"), state, rng) is None


def test_exhausted_first_match_does_not_fall_through() -> None:
    """When the matching policy is used up, a later catch-all does not grant more."""
    policies = (
        RetryPolicy(retry_on=["timeout"], max_attempts=2, jitter="none"),
        RetryPolicy(max_attempts=9, jitter="none"),
    )
    state, rng = RetryState(), random.Random(SEED)
    assert next_delay(policies, err("timeout"), state, rng) == 1.0
    assert next_delay(policies, err("timeout"), state, rng) is None


def test_unmatched_by_every_policy_fails() -> None:
    """An error no policy speaks for fails the step at once."""
    policies = (RetryPolicy(retry_on=["timeout"]), RetryPolicy(retry_on=["unavailable"]))
    assert next_delay(policies, err("agent_error"), RetryState(), random.Random(SEED)) is None


def test_non_retryable_error_is_never_retried() -> None:
    """retryable=False stops retries even when the policy names the type."""
    policy = RetryPolicy(max_attempts=5, retry_on=["agent_error"])
    error = err("agent_error", retryable=False)
    assert next_delay((policy,), error, RetryState(), random.Random(SEED)) is None


def test_retry_after_raises_the_delay_but_never_lowers_it() -> None:
    """An agent's retry_after_s (429 Retry-After) lengthens a shorter wait and leaves
    a longer one as is."""
    policy = RetryPolicy(max_attempts=5, initial_delay=2, jitter="none")
    state, rng = RetryState(), random.Random(SEED)
    assert next_delay((policy,), err("rate_limited", retry_after_s=7.5), state, rng) == 7.5
    assert next_delay((policy,), err("rate_limited", retry_after_s=1.0), state, rng) == 4.0
    assert next_delay((policy,), err("rate_limited"), state, rng) == 8.0
