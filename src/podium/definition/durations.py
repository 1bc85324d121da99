"""Durations as people write them: ``250ms``, ``1.5s``, ``5m``, ``2h``, ``1d`` or seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = ["MAX_DURATION_S", "Duration", "PositiveDuration", "format_duration", "parse_duration"]

# Ten years: beyond any run, and far below where timers overflow (a thread's wait
# fails past threading.TIMEOUT_MAX, 9.2e9 s); more is a typo or an attack, not a setting.
MAX_DURATION_S = 3650 * 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """Return seconds; raise ``ValueError`` quoting the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. 250ms, 1.5s, 5m, 2h")
    seconds: float | None = None
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration is 0 or more")
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration; write e.g. 250ms, 1.5s, 5m, 2h")
    if not math.isfinite(seconds):
        # YAML reads `.nan` and `.inf` as floats and huge digit strings overflow to
        # inf: a NaN timeout never expires, and "no limit" means leaving the key out.
        raise ValueError(f"{value!r} is not a duration; write a finite number of seconds")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is too long a duration: at most 3650d (ten years)")
    return seconds


def parse_positive_duration(value: Any) -> float:
    """A duration where zero makes no sense (an interval, a timeout, a window)."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{value!r}: this duration must be greater than 0")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s".replace(".00s", "s")
    if seconds < 3600:
        return f"{seconds / 60:.1f}m".replace(".0m", "m")
    return f"{seconds / 3600:.1f}h".replace(".0h", "h")


_PATTERN_SCHEMA = {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$"}
_DESCRIPTION = "Seconds, or a number with a unit: 250ms, 1.5s, 5m, 2h, 1d"

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda s: s, return_type=float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
                _PATTERN_SCHEMA,
            ],
            "description": _DESCRIPTION,
        }
    ),
]

# A timeout, an interval or a window: zero would never wait, or check in a busy loop.
PositiveDuration = Annotated[
    float,
    BeforeValidator(parse_positive_duration),
    PlainSerializer(lambda s: s, return_type=float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_S},
                _PATTERN_SCHEMA,
            ],
            "description": _DESCRIPTION + "; more than 0",
        }
    ),
]
