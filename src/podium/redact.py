"""Scrub secrets out of text before it is stored, logged or sent anywhere.

Error messages are written by agents and libraries we do not control; a
connection string or an ``Authorization`` header in an exception message must
not reach the database, the logs or an alert receiver. The patterns are
deliberately broad: a false positive costs a few characters of a message.
"""

from __future__ import annotations

import re
from functools import cache

__all__ = ["redact"]

_MASK = "***"


@cache
def _patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Compiled on first use: a run with no error never needs them."""
    return (
        # Authorization: Bearer xyz / Basic xyz
        (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + _MASK),
        # key=value and "key": "value" for secret-looking keys
        (re.compile(
            r"""(?ix)(["']?\b[\w-]*(?:password|passwd|secret|token|api[_-]?key|apikey|access[_-]?key
            |private[_-]?key|credential|auth)[\w-]*["']?\s*[:=]\s*)(["']?)[^\s"',;&]+"""),
         r"\1\2" + _MASK),
        # user:password@ in URLs
        (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1" + _MASK + "@"),
        # well-known token shapes
        (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), _MASK),
        (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), _MASK),
        (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), _MASK),
        (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), _MASK),
        (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), _MASK),
    )


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``."""
    if not text:
        return text
    for pattern, repl in _patterns():
        text = pattern.sub(repl, text)
    return text
