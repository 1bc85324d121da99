"""WATCH: consumers of the event stream — metrics, failure tracking, alerts.

Nothing here imports the engine: an engine's bus is subscribed to these, by
the CLI, the server, or a library user (``attach``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from podium.definition.alerts import AlertsFile
from podium.errors import DefinitionError, Problem

__all__ = ["find_alerts_file", "load_alerts_file"]


def find_alerts_file(explicit: str | Path | None, *, cwd: Path | None = None) -> Path | None:
    """``--alerts``, else ``$PODIUM_ALERTS``, else ``podium-alerts.yaml`` here, else none."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("PODIUM_ALERTS")
    if env:
        return Path(env)
    candidate = (cwd or Path.cwd()) / "podium-alerts.yaml"
    return candidate if candidate.is_file() else None


def load_alerts_file(path: Path) -> AlertsFile:
    from podium.definition.loader import parse_document

    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError([Problem(f"cannot read the alerts file: {exc.strerror or exc}",
                                       file=source, hint="check the path given to --alerts")]
                              ) from None
    data, lines = parse_document(text, source)
    try:
        return AlertsFile.model_validate(data or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = None
            for n in range(len(loc), -1, -1):
                line = lines.get(loc[:n])
                if line is not None:
                    break
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key '{loc[-1]}'"
            problems.append(Problem(msg, file=source, line=line,
                                    field=".".join(str(p) for p in loc) or None))
        raise DefinitionError(problems) from None


