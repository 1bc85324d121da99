"""Named SQL, one file per dialect: ``store/sql/<dialect>/queries.sql``.

A store's domain verbs call statements by name; what differs between SQLite
and PostgreSQL lives in those files, never in f-strings above ``store/``. A
query starts at a ``-- name: NAME`` line; the comments under it travel with it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["queries"]


@cache
def queries(dialect: str) -> dict[str, str]:
    """Every named statement of ``dialect``, comments and the final ``;`` removed."""
    text = (resources.files("podium.store") / "sql" / dialect / "queries.sql").read_text(
        encoding="utf-8")
    out: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: "]:
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            if name is not None:
                sql = "\n".join(lines).strip().rstrip(";").strip()
                if name in out or not sql:
                    raise ValueError(f"queries.sql ({dialect}): {name!r} is empty or repeated")
                out[name] = sql
            name, lines = stripped.removeprefix("-- name:").strip() or None, []
        elif not stripped.startswith("--"):
            lines.append(line)
    return out
