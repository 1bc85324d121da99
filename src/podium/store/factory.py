"""Pick a store from a URL: ``memory://``, ``sqlite:///path`` (default), later ``postgresql://``."""

from __future__ import annotations

import os
from pathlib import Path

from podium.errors import ConfigError
from podium.store.base import Store
from podium.store.memory import MemoryStore

__all__ = ["DEFAULT_DB_URL", "default_db_url", "open_store"]

DEFAULT_DB_URL = "sqlite:///.podium/podium.db"


def default_db_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("PODIUM_DB") or DEFAULT_DB_URL


def open_store(url: str) -> Store:
    """Make (not yet open) the store a URL names; the caller awaits ``open()``."""
    if url in ("memory://", "memory:"):
        return MemoryStore()
    if url.startswith("sqlite://"):
        from podium.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if "://" not in url and (url.endswith((".db", ".sqlite", ".sqlite3")) or Path(url).suffix):
        from podium.store.sqlite import SQLiteStore, checked_db_path

        return SQLiteStore(checked_db_path(url, url))
    raise ConfigError(
        f"unsupported database URL {url!r} (fix: use sqlite:///path/to/podium.db or memory://)"
    )
