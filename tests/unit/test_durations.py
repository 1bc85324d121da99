"""``parse_duration``: the duration syntax of workflow files, and its errors."""

from __future__ import annotations

import math

import pytest

from podium.definition import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("30", 30.0),
        ("0.5", 0.5),
        (".5m", 30.0),
        (" 10s ", 10.0),
        ("0", 0.0),
    ],
)
def test_units_convert_to_seconds(text: str, seconds: float) -> None:
    """Each unit (ms, s, m, h, d, or none = seconds) converts to the right seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("number", "seconds"), [(0, 0.0), (7, 7.0), (2.5, 2.5)])
def test_plain_numbers_are_seconds_as_float(number: float, seconds: float) -> None:
    """A YAML number is already seconds; the result is always a float."""
    result = parse_duration(number)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        (-1, "-1"),
        (-0.5, "-0.5"),
        ("-5s", "'-5s'"),
        (True, "True"),
        (False, "False"),
        ("5 minutes", "'5 minutes'"),
        ("", "''"),
        ("5x", "'5x'"),
        ("s", "'s'"),
        ("1.2.3s", "'1.2.3s'"),
        (None, "None"),
        ([5], "[5]"),
    ],
)
def test_invalid_durations_raise_quoting_the_value(value: object, quoted: str) -> None:
    """Negative numbers, booleans, words and empty strings are rejected, and the
    error quotes exactly what was written so the user can find it."""
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(value)
    assert quoted in str(info.value)


def test_negative_number_says_why() -> None:
    """A negative number is named as such, not as an unknown format."""
    with pytest.raises(ValueError, match=r"-3 is negative"):
        parse_duration(-3)


@pytest.mark.parametrize("value", [math.nan, math.inf, 10**400, "9" * 400 + "s"])
def test_non_finite_durations_are_rejected(value: object) -> None:
    """NaN (YAML ``.nan``), infinity and numbers too big for a float are not
    durations: a NaN timeout would never expire."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)
