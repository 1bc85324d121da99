"""Durations as people write them: ``250ms``, ``1.5s``, ``5m``, ``2h``, ``1d`` or seconds."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = ["Duration", "format_duration", "parse_duration"]

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
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s".replace(".00s", "s")
    if seconds < 3600:
        return f"{seconds / 60:.1f}m".replace(".0m", "m")
    return f"{seconds / 3600:.1f}h".replace(".0h", "h")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda s: s, return_type=float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$"},
            ],
            "description": "Seconds, or a number with a unit: 250ms, 1.5s, 5m, 2h, 1d",
        }
    ),
]
