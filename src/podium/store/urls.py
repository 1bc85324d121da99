"""A database URL as messages show it: password masked, length bounded.

Every store names its URL in its errors; a URL can carry a password (masked, and
registered with the scrubber by ``mask_url``) and can be as long as a mistyped
``--db`` or ``$PODIUM_DB`` makes it (shown by its ends, with its length).
"""

from __future__ import annotations

from podium.errors import ConfigError
from podium.redact import mask_url

__all__ = ["bad_db", "shown"]


def shown(url: str) -> str:
    masked = mask_url(url)
    if len(masked) <= 100:
        return masked
    return f"{masked[:50]}…{masked[-40:]} ({len(masked):,} characters)"


def bad_db(url: str, why: str, fix: str) -> ConfigError:
    """The error for a ``--db`` that names no usable database (exit 2)."""
    return ConfigError(f"database {shown(url)!r} (--db or $PODIUM_DB): {why} (fix: {fix})")
