"""WATCH: consumers of the event stream — metrics, failure tracking, alerts.

Nothing here imports the engine: an engine's bus is subscribed to these, by
the CLI, the server, or a library user (``attach``).
"""

from __future__ import annotations

from pathlib import Path

from podium.definition.alerts import AlertsFile

__all__ = ["find_alerts_file", "load_alerts_file"]


def find_alerts_file(explicit: str | Path | None, *, cwd: Path | None = None) -> Path | None:
    """``--alerts``, else ``$PODIUM_ALERTS``, else ``podium-alerts.yaml`` here, else none."""
    from podium.definition.loader import find_settings_file

    return find_settings_file(explicit, "PODIUM_ALERTS", "podium-alerts.yaml", cwd=cwd)


def load_alerts_file(path: Path) -> AlertsFile:
    from podium.definition.loader import load_model_file

    return load_model_file(path, AlertsFile, kind="alerts", option="--alerts")
