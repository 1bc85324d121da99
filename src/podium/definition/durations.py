"""Durations as people write them: ``250ms``, ``1.5s``, ``5m``, ``2h``, ``1d``, ``1m30s``
or seconds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

__all__ = [
    "DURATION_PATTERN",
    "MAX_DURATION_S",
    "Duration",
    "PositiveDuration",
    "format_duration",
    "parse_duration",
]

# Ten years: beyond any run, and far below where timers overflow (a thread's wait
# fails past threading.TIMEOUT_MAX, 9.2e9 s); more is a typo or an attack, not a setting.
MAX_DURATION_S = 3650 * 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUM = r"(?:\d+(?:\.\d+)?|\.\d+)"
# Parts in falling order, each unit at most once ("1h30m", "2m5.5s"): "30s1m" is more
# likely a slip than a duration. Written so that both Python and the ECMA-262 regexes
# of JSON Schema editors read it alike (the workflow schema carries it).
DURATION_PATTERN = (
    rf"^\s*(?={_NUM})(?:{_NUM}|(?:{_NUM}\s*d)?\s*(?:{_NUM}\s*h)?\s*(?:{_NUM}\s*m)?"
    rf"\s*(?:{_NUM}\s*s)?\s*(?:{_NUM}\s*ms)?)\s*$"
)
_WHOLE = re.compile(DURATION_PATTERN)
_PART = re.compile(rf"({_NUM})\s*(ms|d|h|m|s)")
_HINT = "write e.g. 250ms, 1.5s, 5m, 1m30s, 2h"


def parse_duration(value: Any) -> float:
    """Return seconds; raise ``ValueError`` quoting the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {_HINT}")
    seconds: float | None = None
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration is 0 or more")
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    elif isinstance(value, str) and len(value) <= 200 and _WHOLE.match(value):
        parts = _PART.findall(value)
        seconds = (
            sum(float(n) * _UNITS[unit] for n, unit in parts) if parts else float(value)
        )
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration; {_HINT}")
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


def _trim(number: float, digits: int) -> str:
    text = f"{number:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_duration(seconds: float) -> str:
    """Rounded for people, in the syntax ``parse_duration`` reads back.

    ``0.17ms``, ``250ms``, ``1.5s``, ``1m30s``, ``1h30m``: two decimals below a
    second at most, a tenth of a second in minutes, whole seconds in hours.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    ms = seconds * 1000
    if round(ms, 2) < 10:
        return _trim(ms, 2) + "ms"
    if round(ms) < 1000:
        return f"{ms:.0f}ms"
    if round(seconds, 2) < 60:
        return _trim(seconds, 2) + "s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds, 1), 60)
        text = f"{minutes:.0f}m"
        return text + (_trim(rest, 1) + "s" if round(rest, 1) else "")
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h" + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")


if TYPE_CHECKING:  # what the models' fields hold; pydantic reads the real ones below
    Duration = Annotated[float, "seconds"]
    PositiveDuration = Annotated[float, "seconds, more than 0"]


def __getattr__(name: str) -> Any:
    """``Duration`` and ``PositiveDuration`` are built when first imported: they need
    pydantic, which ``format_duration``'s users (``podium status``) do not (~30 ms)."""
    if name not in ("Duration", "PositiveDuration"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = _pydantic_annotations()
    globals().update(built)
    return built[name]


def _pydantic_annotations() -> dict[str, Any]:
    from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

    description = "Seconds, or numbers with units: 250ms, 1.5s, 5m, 1m30s, 2h, 1d"

    def duration(parse: Callable[[Any], float], low: dict[str, float], more: str) -> Any:
        schema = {"anyOf": [{"type": "number", **low, "maximum": MAX_DURATION_S},
                            {"type": "string", "pattern": DURATION_PATTERN}],
                  "description": description + more}
        return Annotated[float, BeforeValidator(parse),
                         PlainSerializer(lambda s: s, return_type=float), WithJsonSchema(schema)]

    return {
        "Duration": duration(parse_duration, {"minimum": 0}, ""),
        # A timeout, an interval or a window: zero would never wait, or check in a busy loop.
        "PositiveDuration": duration(parse_positive_duration, {"exclusiveMinimum": 0},
                                     "; more than 0"),
    }
