"""Pick a store from a URL: ``memory://``, ``sqlite:///path`` (default), ``postgresql://``."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from podium.errors import ConfigError
from podium.store.base import Store
from podium.store.memory import MemoryStore

__all__ = ["DEFAULT_DB_URL", "default_db_url", "find_db_dir", "open_store"]

DEFAULT_DB_URL = "sqlite:///.podium/podium.db"


def default_db_url(explicit: str | None = None, *, cwd: Path | None = None) -> str:
    """``--db``, else ``$PODIUM_DB``, else the project's database (see ``find_db_dir``)."""
    url = explicit or os.environ.get("PODIUM_DB")
    if url:
        return url
    return "sqlite:///" + quote(str(find_db_dir(cwd) / "podium.db"))


def find_db_dir(cwd: Path | None = None) -> Path:
    """The nearest ``.podium/`` folder here or in a parent, as git finds ``.git``; else
    ``./.podium`` (made when the database is first opened).

    So ``podium status RUN`` from a project's root finds a run made in its ``examples/``.
    """
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".podium").is_dir():
            return folder / ".podium"
    return here / ".podium"


def open_store(url: str, *, readonly: bool = False) -> Store:
    """The store a URL names; the caller awaits ``open()`` (and ``close()`` after).

    A database file has one store per process: asking again for a file this process
    has open returns that store (opening it once more counts one more user).
    ``readonly`` stores never write, never take the write lock and never migrate.
    """
    if url in ("memory://", "memory:"):
        return MemoryStore()
    if url.startswith("sqlite://"):
        from podium.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, readonly=readonly)
    if url.startswith(("postgresql://", "postgres://")):
        from podium.store.postgres import PostgresStore

        return PostgresStore.from_url(url, readonly=readonly)
    if "://" not in url and (url.endswith((".db", ".sqlite", ".sqlite3")) or Path(url).suffix):
        from podium.store.sqlite import SQLiteStore, checked_db_path

        return SQLiteStore.shared(checked_db_path(url, url), readonly=readonly)
    from podium.redact import mask_url

    raise ConfigError(
        f"unsupported database URL {mask_url(url)!r} (fix: use sqlite:///path/to/podium.db,"
        " postgresql://user@host/db or memory://)"
    )
