"""Circuit breaker state sequences, exactly, under a fake clock."""

from __future__ import annotations

from podium import FakeClock
from podium.agents.breaker import BreakerConfig, CircuitBreaker


def make(**kw: object) -> tuple[CircuitBreaker, FakeClock, list[tuple[str, str]]]:
    clock = FakeClock()
    changes: list[tuple[str, str]] = []
    cfg = BreakerConfig(**{"failure_threshold": 3, "reset_timeout_s": 10.0,
                           "failure_rate": None, **kw})  # type: ignore[arg-type]
    return CircuitBreaker(cfg, clock, lambda a, b: changes.append((a, b))), clock, changes


def test_consecutive_failures_open_then_half_open_after_reset_then_close_on_success() -> None:
    b, clock, changes = make()
    for _ in range(2):
        assert b.try_acquire()
        b.record(False, "agent_error")
    assert b.state == "closed"
    assert b.try_acquire()
    b.record(False, "agent_error")
    assert b.state == "open"
    assert not b.try_acquire()
    clock.advance(9.99)
    assert not b.try_acquire(), "still open before reset_timeout"
    clock.advance(0.01)
    assert b.try_acquire(), "half-open admits one trial"
    assert b.state == "half_open"
    assert not b.try_acquire(), "only half_open_max_calls trials at once"
    b.record(True)
    assert b.state == "closed"
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_trial_reopens_for_another_full_reset_timeout() -> None:
    b, clock, changes = make()
    for _ in range(3):
        b.try_acquire()
        b.record(False, "timeout")
    clock.advance(10)
    assert b.try_acquire()
    b.record(False, "timeout")
    assert b.state == "open"
    clock.advance(5)
    assert not b.would_admit()
    clock.advance(5)
    assert b.would_admit()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                       ("open", "half_open")]


def test_a_success_resets_the_consecutive_count() -> None:
    b, _clock, _ = make()
    for ok in (False, False, True, False, False):
        b.try_acquire()
        b.record(ok, None if ok else "agent_error")
    assert b.state == "closed"


def test_invalid_input_does_not_count_by_default_but_can_be_made_to() -> None:
    b, _clock, _ = make()
    for _ in range(10):
        b.try_acquire()
        b.record(False, "invalid_input")
    assert b.state == "closed"
    b2, _clock2, _ = make(ignored_errors=frozenset())
    for _ in range(3):
        b2.try_acquire()
        b2.record(False, "invalid_input")
    assert b2.state == "open"


def test_failure_rate_over_the_window_opens_with_a_minimum_number_of_calls() -> None:
    b, _clock, _ = make(failure_threshold=100, failure_rate=0.5, window_s=60.0, min_calls=10)
    # 9 calls, 6 failures (alternating so never 100 in a row): not enough calls yet.
    pattern = [False, True, False, False, True, False, True, False, False]
    for ok in pattern:
        b.try_acquire()
        b.record(ok, None if ok else "agent_error")
    assert b.state == "closed"
    b.try_acquire()
    b.record(False, "agent_error")  # 10 calls, 7 failures = 70% > 50%
    assert b.state == "open"


def test_old_calls_leave_the_rate_window() -> None:
    b, clock, _ = make(failure_threshold=100, failure_rate=0.5, window_s=60.0, min_calls=4)
    for _ in range(3):
        b.try_acquire()
        b.record(False, "agent_error")
    clock.advance(61)
    for ok in (True, True, True, False):
        b.try_acquire()
        b.record(ok, None if ok else "agent_error")
    assert b.state == "closed"  # 1 failure in 4 within the window


def test_half_open_admits_the_configured_number_of_trials() -> None:
    b, clock, _ = make(half_open_max_calls=2)
    for _ in range(3):
        b.try_acquire()
        b.record(False, "agent_error")
    clock.advance(10)
    assert b.try_acquire()
    assert b.try_acquire()
    assert not b.try_acquire()
    b.cancel_trial()
    assert b.try_acquire(), "a trial given back frees its slot"


def test_a_call_from_before_the_circuit_opened_does_not_decide_the_trial() -> None:
    """Only the half-open trial closes or reopens the circuit, not a late straggler."""
    b, clock, _ = make()
    assert b.try_acquire()  # a slow call admitted while closed
    for _ in range(3):
        b.try_acquire()
        b.record(False, "agent_error", trial=False)
    clock.advance(10)
    assert b.try_acquire()  # the trial
    assert b.state == "half_open"
    b.record(True, trial=False)  # the straggler succeeds: still half-open
    assert b.state == "half_open"
    assert not b.try_acquire(), "the trial slot is still taken by the real trial"
    b.record(False, "agent_error", trial=True)
    assert b.state == "open"
