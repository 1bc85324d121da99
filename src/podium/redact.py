"""Scrub secrets out of text before it is stored, logged or sent anywhere.

Error messages are written by agents and libraries we do not control; a
connection string or an ``Authorization`` header in an exception message must
not reach the database, the logs or an alert receiver. Two nets:

- **By value**: every secret Podium itself reads (an agent's ``token_env``
  token, sensitive headers of the agents file, a webhook's ``secret_env`` key,
  a database URL's password, ``agent serve --token-env``) is registered with
  ``register_secret`` when it is read, and replaced wherever it appears, in
  whatever words it is wrapped: an agent that answers ``credential rejected:
  <token>`` leaves no token behind.
- **By pattern**, for secrets Podium never saw (an agent's own credentials in
  its traceback): deliberately broad; a false positive costs a few characters
  of a message.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from functools import cache
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = [
    "RedactingFilter",
    "has_secrets",
    "mask_url",
    "redact",
    "redact_value",
    "register_secret",
    "register_sensitive_headers",
]

_MASK = "***"
# Shorter values are not registered: replacing every "abc" in every message would
# hide more than it protects (and such a secret is no secret).
MIN_SECRET_CHARS = 4
_SENSITIVE_HEADER = re.compile(r"(?i)authorization|cookie|token|secret|api[_-]?key|password|auth")

_lock = threading.Lock()
_secrets: set[str] = set()
_by_value: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Have ``value`` (and its URL-encoded form) replaced by ``***`` from now on."""
    global _by_value
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    forms = {value, quote(value, safe=""), quote(value)}
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(f for f in forms if len(f) >= MIN_SECRET_CHARS)
        # Longest first: a secret that contains another is replaced whole.
        _by_value = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len,
                                                                      reverse=True)))


def register_sensitive_headers(headers: dict[str, str]) -> None:
    """Register the values of headers whose names say they carry a credential."""
    for name, value in headers.items():
        if _SENSITIVE_HEADER.search(name):
            register_secret(value)
            scheme, _, rest = value.partition(" ")
            if rest and scheme.lower() in ("bearer", "basic", "token"):
                register_secret(rest.strip())


def has_secrets() -> bool:
    return _by_value is not None


@cache
def _patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Compiled on first use: a run with no error never needs them."""
    return (
        # PEM private keys, whole blocks
        (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
                    re.S), _MASK),
        # Authorization: Bearer xyz (any length, also URL-encoded), Basic xyz; "basic" and
        # "token" only before something that looks like a credential (prose says them too)
        (re.compile(r"(?i)(?<![a-z])(bearer)(\s+|%20|\+)[A-Za-z0-9._~+/=%-]+"),
         r"\1\2" + _MASK),
        (re.compile(r"(?i)(?<![a-z])(basic)(\s+|%20|\+)[A-Za-z0-9._~+/=%-]{8,}"),
         r"\1\2" + _MASK),
        (re.compile(r"(?i)(?<![a-z])(token)(\s+|%20|\+)(?=\S*[0-9_./+=-])[A-Za-z0-9._~+/=%-]{8,}"),
         r"\1\2" + _MASK),
        # Cookie: ... / Set-Cookie: ... (the whole value, up to the end of the line)
        (re.compile(r"(?i)\b((?:set-)?cookie\s*[:=]\s*)[^\r\n]+"), r"\1" + _MASK),
        # key=value and "key": "value" for secret-looking keys: a quoted value is masked to
        # its closing quote (spaces and all), a bare one to the next separator; a bare
        # password may hold spaces, so after a password-like key the words after it go too
        (re.compile(
            r"""(?ix)(["']?\b[\w-]*(?:password|passwd|passphrase|pwd)[\w-]*["']?\s*[:=]\s*)
            (?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s"',;&]+(?:[ ][^\s"',;&=:]+)*)"""),
         r"\1" + _MASK),
        (re.compile(
            r"""(?ix)(["']?\b[\w-]*(?:secret|token|api[_-]?key|apikey|access[_-]?key
            |private[_-]?key|credential|auth)[\w-]*["']?\s*[:=]\s*)
            (?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s"',;&]+)"""),
         r"\1" + _MASK),
        # user:password@ and user@ (a token as the user name) in any URL
        (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@"), r"\1" + _MASK + "@"),
        # well-known token shapes
        (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), _MASK),
        (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), _MASK),
        (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), _MASK),
        (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), _MASK),
        (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), _MASK),
    )


# Words without which none of ``_patterns`` can match: each pattern's required literal
# (``gh`` and ``xox`` stand for ``gh[pousr]_`` and ``xox[abprs]-``). Compiling the
# patterns takes ~2 ms, paid by a run's first failure otherwise, and a message such as
# "503 Service Unavailable" needs none of them.
_HINTS = ("-----begin", "bearer", "basic", "token", "cookie", "pass", "pwd", "secret", "api",
          "access", "private", "credential", "auth", "://", "sk-", "gh", "xox", "akia", "eyj")


def _may_hold_secrets(text: str) -> bool:
    # On ASCII text, lower() finds what the patterns' ignore-case matching finds; other
    # text (a Kelvin sign matches "k" there) always goes through the patterns.
    if not text.isascii():
        return True
    lowered = text.lower()
    return any(word in lowered for word in _HINTS)


def redact(text: str) -> str:
    """``text`` with every known secret and anything that looks like one replaced by ``***``."""
    if not text:
        return text
    by_value = _by_value
    if by_value is not None:
        text = by_value.sub(_MASK, text)
    if not _may_hold_secrets(text):
        return text
    for pattern, repl in _patterns():
        text = pattern.sub(repl, text)
    return text


def redact_value(value: Any) -> Any:
    """``value`` (JSON data) with every known secret replaced in its strings, by value only.

    For outputs and inputs, which are data: patterns would change what merely looks
    like a secret; a value Podium was given as a secret never belongs in them.
    """
    by_value = _by_value
    if by_value is None:
        return value
    if isinstance(value, str):
        return by_value.sub(_MASK, value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    return value


def contains_secret(text: str) -> bool:
    by_value = _by_value
    return by_value is not None and by_value.search(text) is not None


def mask_url(url: str) -> str:
    """``url`` with its password (and a token given as the user name) masked, for messages.

    The password is registered as a secret too, so it is scrubbed wherever else
    it may turn up.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if colon:
        register_secret(password)
        netloc = f"{user}:{_MASK}@{host}"
    else:
        netloc = f"{_MASK}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedactingFilter(logging.Filter):
    """A handler filter that scrubs each record's final text (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def scrub_logging(handlers: Iterable[logging.Handler]) -> None:
    """Put a ``RedactingFilter`` on each handler (once)."""
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
